"""Walking a directory tree into a pxar archive and a catalog, as PBS's client does.

Every file is opened relative to its parent's directory fd with ``O_NOFOLLOW``, so a tree
that changes under the walk cannot lead it elsewhere; children are added in byte order of
their names (the encoder's rule). What is recorded per file follows PBS: the stat fields,
``user.*``/``trusted.*`` xattrs (and ``security.NTACL``), POSIX ACLs as pxar ACL items,
file capabilities as an FCAPS item, device numbers, symlink targets, and a hardlink entry
for every further name of an inode already archived. Sockets are left out. Mount points
are archived as empty directories unless their device was asked for (``--include-dev``).

Per-file trouble never stops the walk: a file that vanishes, changes while it is read or
cannot be read is reported in one line and the walk goes on (a file that shrank is padded
with zeros, one that grew is cut at its old size, as PBS does). Only the root itself must be
readable.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cairn.errors import FormatError, SourceError
from cairn.format.catalog import CatalogWriter
from cairn.format.pxar import S_IFREG, Encoder, Metadata

from . import posix_acl
from .exclude import MatchEntry, MatchType, match, parse_pattern, parse_pxarexclude
from .util import raise_fd_limit, show

PXAREXCLUDE = ".pxarexclude"
PXAREXCLUDE_CLI = b".pxarexclude-cli"
FCAPS_XATTR = "security.capability"

_READ_BLOCK = 4 << 20
_ZEROS = memoryview(bytes(1 << 20))
_PXAREXCLUDE_LIMIT = 1 << 20
_NANOS = 1_000_000_000
_OPEN_COMMON = os.O_CLOEXEC | os.O_NOCTTY | os.O_NOFOLLOW


@dataclass
class TreeOptions:
    """What the user chose for a tree backup."""

    exclude: list[str] = field(default_factory=list)  # --exclude patterns, in order
    include_dev: list[str] = field(default_factory=list)  # paths whose devices are crossed into
    fail_on_unreadable: bool = False


@dataclass
class TreeStats:
    entries: int = 0
    file_bytes: int = 0
    unreadable: int = 0
    vanished: int = 0
    changed: int = 0


@dataclass
class _Dir:
    """A directory being archived: its fd, its entries still to add, its exclude level."""

    fd: int
    path: bytes  # relative to the root, b"" for the root itself
    entries: list[tuple[bytes, os.stat_result | None]]
    pattern_count: int
    pos: int = 0


def is_valid_xattr(name: str) -> bool:
    """The xattrs PBS archives as XATTR items (capabilities and ACLs have their own)."""
    return name.startswith(("user.", "trusted.")) or name == "security.NTACL"


def check_root(path: str) -> str:
    """Fail early, before a snapshot exists, if ``path`` cannot be archived."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise SourceError(f"cannot read {path}: no such directory") from None
    except NotADirectoryError:
        raise SourceError(f"cannot read {path}: not a directory (pxar archives are made of directories)") from None
    except OSError as err:
        raise SourceError(f"cannot read {path}: {err.strerror}") from None
    os.close(fd)
    return path


class Archiver:
    """Writes the tree at ``root`` through ``write`` and, if given, into ``catalog``."""

    def __init__(
        self,
        root: str,
        write: Callable[[bytes | bytearray | memoryview], object],
        catalog: CatalogWriter | None,
        options: TreeOptions,
        warn: Callable[[str], None],
    ) -> None:
        self._root = root
        self._write = write
        self._catalog = catalog
        self._warn = warn
        self.stats = TreeStats()
        self._cli_patterns = [parse_pattern(p, MatchType.EXCLUDE) for p in options.exclude]
        self._patterns: list[MatchEntry] = list(self._cli_patterns)
        self._devices: set[int] = set()
        for path in options.include_dev:
            try:
                self._devices.add(os.stat(path).st_dev)
            except OSError as err:
                raise SourceError(f"--include-dev {path}: {err.strerror}") from None
        self._links: dict[tuple[int, int], tuple[bytes, int]] = {}
        self._encoder: Encoder | None = None

    # --- the walk -------------------------------------------------------------------------

    def run(self) -> TreeStats:
        raise_fd_limit()
        try:
            root_fd = os.open(self._root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise SourceError(f"cannot read {self._root}: {err.strerror}") from None
        stack: list[_Dir] = []
        try:
            st = os.fstat(root_fd)
            self._devices.add(st.st_dev)
            metadata = self._metadata(st, root_fd)
            try:
                root = self._open_listing(root_fd, b"", is_root=True)
            except OSError as err:
                raise SourceError(f"cannot read {self._root}: {err.strerror}") from None
            stack.append(root)
            root_fd = -1
            self._encoder = Encoder(self._write, metadata)
            self._walk(stack)
            self._encoder.finish()
        finally:
            if root_fd >= 0:
                os.close(root_fd)
            for frame in stack:
                if frame.fd >= 0:
                    os.close(frame.fd)
        return self.stats

    def _walk(self, stack: list[_Dir]) -> None:
        encoder = self._encoder
        assert encoder is not None
        while stack:
            frame = stack[-1]
            if frame.pos == len(frame.entries):
                stack.pop()
                if frame.fd >= 0:
                    os.close(frame.fd)
                del self._patterns[frame.pattern_count :]
                if stack:
                    encoder.finish_directory()
                    if self._catalog is not None:
                        self._catalog.end_directory()
                continue
            name, st = frame.entries[frame.pos]
            frame.pos += 1
            if st is None:
                self._add_cli_excludes()
                continue
            child = self._add_entry(frame, name, st)
            if child is not None:
                stack.append(child)

    def _open_listing(self, fd: int, path: bytes, is_root: bool = False) -> _Dir:
        """Read the directory's .pxarexclude, then list and filter its entries."""
        pattern_count = len(self._patterns)
        self._read_pxarexclude(fd, path)
        entries: list[tuple[bytes, os.stat_result | None]] = []
        for text in os.listdir(fd):
            name = os.fsencode(text)
            if is_root and name == PXAREXCLUDE_CLI:
                continue
            child_path = path + b"/" + name if path else name
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                continue
            if match(self._patterns, b"/" + child_path, st.st_mode) is MatchType.EXCLUDE:
                continue
            entries.append((name, st))
        if is_root and self._cli_patterns:
            entries.append((PXAREXCLUDE_CLI, None))
        entries.sort(key=lambda item: item[0])
        return _Dir(fd, path, entries, pattern_count)

    def _read_pxarexclude(self, fd: int, path: bytes) -> None:
        try:
            efd = os.open(PXAREXCLUDE, os.O_RDONLY | _OPEN_COMMON, dir_fd=fd)
        except OSError:
            return
        try:
            content = os.read(efd, _PXAREXCLUDE_LIMIT)
        except OSError as err:
            self._warn(f"ignoring {self._display(path)}/.pxarexclude: {err.strerror}")
            return
        finally:
            os.close(efd)
        self._patterns.extend(parse_pxarexclude(content, b"/" + path, self._warn))

    def _add_cli_excludes(self) -> None:
        """PBS records the command line's excludes as a file in the archive root."""
        content = b"".join(entry.as_line() + b"\n" for entry in self._cli_patterns)
        assert self._encoder is not None
        self._encoder.add_file(PXAREXCLUDE_CLI, Metadata(mode=S_IFREG | 0o600), len(content), content)
        if self._catalog is not None:
            self._catalog.add_file(PXAREXCLUDE_CLI, len(content), 0)

    # --- one entry ------------------------------------------------------------------------

    def _add_entry(self, parent: _Dir, name: bytes, st: os.stat_result) -> _Dir | None:
        path = parent.path + b"/" + name if parent.path else name
        mode = st.st_mode
        try:
            if stat.S_ISREG(mode):
                self._add_file(parent.fd, name, path)
            elif stat.S_ISDIR(mode):
                return self._add_directory(parent.fd, name, path)
            elif stat.S_ISLNK(mode):
                self._add_symlink(parent.fd, name, path, st)
            elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode) or stat.S_ISFIFO(mode):
                self._add_special(parent.fd, name, path, st)
            # Sockets belong to running services and are not archived.
        except FormatError as err:
            self._unreadable(path, str(err).removeprefix("pxar: "))
        return None

    def _add_file(self, dir_fd: int, name: bytes, path: bytes) -> None:
        fd = self._open(dir_fd, name, path, os.O_RDONLY)
        if fd is None:
            return
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._changed(path)
                return
            encoder = self._encoder
            assert encoder is not None
            key = (st.st_dev, st.st_ino)
            if st.st_nlink > 1 and key in self._links:
                target, offset = self._links[key]
                encoder.add_hardlink(name, target, offset)
                if self._catalog is not None:
                    self._catalog.add_hardlink(name)
                self.stats.entries += 1
                return
            metadata = self._metadata(st, fd)
            size = st.st_size
            offset = encoder.add_file(name, metadata, size, self._content(fd, st, path))
            if self._catalog is not None:
                self._catalog.add_file(name, size, st.st_mtime_ns // _NANOS)
            if st.st_nlink > 1:
                self._links[key] = (path, offset)
            self.stats.entries += 1
            self.stats.file_bytes += size
            after = os.fstat(fd)
            if (after.st_mtime_ns, after.st_ctime_ns, after.st_size) != (st.st_mtime_ns, st.st_ctime_ns, size):
                self._changed(path)
        finally:
            os.close(fd)

    def _content(self, fd: int, st: os.stat_result, path: bytes) -> Iterator[bytes | memoryview]:
        """Exactly ``st_size`` bytes of the file; holes of a sparse file are not read."""
        size = st.st_size
        pos = 0
        sparse = st.st_blocks * 512 < size
        while pos < size:
            end = size
            if sparse:
                try:
                    data = os.lseek(fd, pos, os.SEEK_DATA)
                except OSError:
                    data = size  # ENXIO: only a hole is left
                if data > pos:
                    yield from _zeros(min(data, size) - pos)
                    pos = min(data, size)
                    continue
                try:
                    end = min(os.lseek(fd, pos, os.SEEK_HOLE), size)
                except OSError:
                    end = size
                if end <= pos:
                    end = size
            try:
                block = os.pread(fd, min(_READ_BLOCK, end - pos), pos)
            except OSError as err:
                self._unreadable(path, f"{err.strerror} after {pos} bytes; the rest is stored as zeros")
                yield from _zeros(size - pos)
                return
            if not block:
                self._warn(f"{self._display(path)} shrank while being read; padded with zeros")
                self.stats.changed += 1
                yield from _zeros(size - pos)
                return
            pos += len(block)
            yield block

    def _add_directory(self, dir_fd: int, name: bytes, path: bytes) -> _Dir | None:
        fd = self._open(dir_fd, name, path, os.O_RDONLY | os.O_DIRECTORY)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            metadata = self._metadata(st, fd)
            encoder = self._encoder
            assert encoder is not None
            encoder.create_directory(name, metadata)
        except BaseException:
            os.close(fd)
            raise
        if self._catalog is not None:
            self._catalog.start_directory(name)
        self.stats.entries += 1
        if st.st_dev not in self._devices:
            os.close(fd)
            self._warn(f"{self._display(path)} is a mount point; archived empty (use --include-dev to cross)")
            return _Dir(-1, path, [], len(self._patterns))
        try:
            return self._open_listing(fd, path)
        except OSError as err:
            self._unreadable(path, err.strerror or str(err))
            return _Dir(fd, path, [], len(self._patterns))

    def _add_symlink(self, dir_fd: int, name: bytes, path: bytes, st: os.stat_result) -> None:
        try:
            target = os.readlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            self._vanished(path)
            return
        except OSError as err:
            self._unreadable(path, err.strerror or str(err))
            return
        assert self._encoder is not None
        self._encoder.add_symlink(name, self._metadata(st, None), target)
        if self._catalog is not None:
            self._catalog.add_symlink(name)
        self.stats.entries += 1

    def _add_special(self, dir_fd: int, name: bytes, path: bytes, st: os.stat_result) -> None:
        fd = self._open(dir_fd, name, path, os.O_PATH)
        if fd is None:
            return
        try:
            st = os.fstat(fd)
            metadata = self._metadata(st, f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        encoder = self._encoder
        assert encoder is not None
        catalog = self._catalog
        if stat.S_ISFIFO(st.st_mode):
            encoder.add_fifo(name, metadata)
            if catalog is not None:
                catalog.add_fifo(name)
        elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            encoder.add_device(name, metadata, os.major(st.st_rdev), os.minor(st.st_rdev))
            if catalog is not None:
                if stat.S_ISBLK(st.st_mode):
                    catalog.add_block_device(name)
                else:
                    catalog.add_char_device(name)
        else:
            self._changed(path)
            return
        self.stats.entries += 1

    # --- metadata -------------------------------------------------------------------------

    def _metadata(self, st: os.stat_result, handle: int | str | None) -> Metadata:
        """Stat fields plus xattrs, ACLs and capabilities read through ``handle``.

        ``handle`` is an open fd, a ``/proc/self/fd`` path for files opened with O_PATH, or
        None for symlinks (whose xattrs PBS does not archive either).
        """
        metadata = Metadata(
            mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns
        )
        if handle is None:
            return metadata
        try:
            names = os.listxattr(handle)
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EBADF, errno.ENODATA):
                self._warn(f"cannot list extended attributes: {err.strerror}")
            return metadata
        for name in names:
            if name == FCAPS_XATTR:
                metadata.fcaps = _getxattr(handle, name)
            elif name == posix_acl.ACCESS_XATTR:
                value = _getxattr(handle, name)
                if value is not None:
                    posix_acl.read_access(metadata.acl, value)
            elif name == posix_acl.DEFAULT_XATTR and stat.S_ISDIR(st.st_mode):
                value = _getxattr(handle, name)
                if value is not None:
                    posix_acl.read_default(metadata.acl, value)
            elif is_valid_xattr(name):
                value = _getxattr(handle, name)
                if value is not None:
                    metadata.xattrs.append((name.encode("utf-8", "surrogateescape"), value))
        return metadata

    # --- opening and reporting ------------------------------------------------------------

    def _open(self, dir_fd: int, name: bytes, path: bytes, flags: int) -> int | None:
        """Open a directory entry; None (after reporting) if it vanished or is unreadable."""
        flags |= _OPEN_COMMON
        try:
            return os.open(name, flags | os.O_NOATIME, dir_fd=dir_fd)
        except PermissionError:
            # O_NOATIME is refused on files we do not own; try again without it.
            try:
                return os.open(name, flags, dir_fd=dir_fd)
            except FileNotFoundError:
                self._vanished(path)
            except OSError as err:
                self._unreadable(path, err.strerror or str(err))
        except FileNotFoundError:
            self._vanished(path)
        except OSError as err:
            self._unreadable(path, err.strerror or str(err))
        return None

    def _display(self, path: bytes) -> str:
        return show(os.path.join(os.fsencode(self._root), path))

    def _unreadable(self, path: bytes, reason: str) -> None:
        self.stats.unreadable += 1
        self._warn(f"cannot read {self._display(path)}: {reason}")

    def _vanished(self, path: bytes) -> None:
        self.stats.vanished += 1
        self._warn(f"{self._display(path)} vanished while the backup ran; skipped")

    def _changed(self, path: bytes) -> None:
        self.stats.changed += 1
        self._warn(f"{self._display(path)} changed while being read; its copy may be inconsistent")


def _getxattr(handle: int | str, name: str) -> bytes | None:
    try:
        return os.getxattr(handle, name)
    except OSError:
        return None  # removed since it was listed, or not readable: leave it out


def _zeros(size: int) -> Iterator[memoryview]:
    while size > 0:
        take = min(size, len(_ZEROS))
        yield _ZEROS[:take]
        size -= take
