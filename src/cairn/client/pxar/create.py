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
import json
import os
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cairn.errors import FormatError, SourceError
from cairn.format.catalog import CatalogWriter
from cairn.format.pxar import (
    S_IFREG,
    Accessor,
    Directory,
    Encoder,
    Listing,
    Metadata,
)
from cairn.format.pxar.encoder import WriteFn
from cairn.format.pxar.items import encode_metadata, encode_stat

from . import posix_acl
from .exclude import MatchEntry, MatchType, match, parse_pattern, parse_pxarexclude
from .reuse import PayloadReuser
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
    change_detection_mode: str = "legacy"  # legacy | data | metadata, as PBS


@dataclass
class TreeStats:
    entries: int = 0
    file_bytes: int = 0
    unreadable: int = 0
    vanished: int = 0
    changed: int = 0
    content_bytes_read: int = 0  # file contents actually read from disk


@dataclass
class _Dir:
    """A directory being archived: its fd, its entries still to add, its exclude level.

    Entries carry their file type (``S_IFMT`` bits) as the directory listing tells it, or
    None for the command line's excludes (``.pxarexclude-cli``).
    """

    fd: int
    path: bytes  # relative to the root, b"" for the root itself
    entries: list[tuple[bytes, int | None]]
    pattern_count: int
    pos: int = 0
    previous: Listing | None = None  # the same directory in the reference archive


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
        *,
        payload_write: WriteFn | None = None,
        reuser: PayloadReuser | None = None,
        previous: Accessor | None = None,
        suggest_boundary: Callable[[int], None] | None = None,
    ) -> None:
        """``payload_write`` makes a split (v2) archive; ``reuser`` and ``previous``
        (metadata mode) let unchanged files reuse the reference archive's payload chunks."""
        self._root = root
        self._payload_write = payload_write
        self._reuser = reuser
        self._previous = previous
        self._suggest_boundary = suggest_boundary  # tells the payload chunker where files start
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
            root.previous = _listing(self._previous.open_root) if self._previous is not None else None
            stack.append(root)
            root_fd = -1
            self._encoder = Encoder(self._write, metadata, payload_write=self._payload_write, prelude=self._prelude())
            if self._reuser is not None:
                self._reuser.encoder = self._encoder
            self._walk(stack)
            if self._reuser is not None:
                self._reuser.finish()
            self._encoder.finish()
        finally:
            if self._reuser is not None:
                self._reuser.close()
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
                    self._emit(self._end_directory)
                continue
            name, file_type = frame.entries[frame.pos]
            frame.pos += 1
            if file_type is None:
                self._add_cli_excludes()
                continue
            child = self._add_entry(frame, name, file_type)
            if child is not None:
                stack.append(child)

    def _open_listing(self, fd: int, path: bytes, is_root: bool = False) -> _Dir:
        """Read the directory's .pxarexclude, then list and filter its entries.

        The listing's file types spare an lstat per file and directory: each is opened and
        fstat-ed when added anyway. Only other kinds of entries are stat-ed here.
        """
        pattern_count = len(self._patterns)
        self._read_pxarexclude(fd, path)
        patterns = self._patterns
        entries: list[tuple[bytes, int | None]] = []
        with os.scandir(fd) as listing:
            for child in listing:
                name = os.fsencode(child.name)
                if is_root and name == PXAREXCLUDE_CLI:
                    continue
                try:
                    if child.is_file(follow_symlinks=False):
                        file_type = stat.S_IFREG
                    elif child.is_dir(follow_symlinks=False):
                        file_type = stat.S_IFDIR
                    else:
                        file_type = stat.S_IFMT(child.stat(follow_symlinks=False).st_mode)
                except FileNotFoundError:
                    continue
                if patterns:
                    child_path = b"/" + path + b"/" + name if path else b"/" + name
                    if match(patterns, child_path, file_type) is MatchType.EXCLUDE:
                        continue
                entries.append((name, file_type))
        if is_root and self._cli_patterns and self._payload_write is None:
            # Split archives keep the excludes in their prelude instead, as PBS does.
            entries.append((PXAREXCLUDE_CLI, None))
        entries.sort()  # by name: names are unique
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

    def _cli_exclude_lines(self) -> bytes:
        return b"".join(entry.as_line() + b"\n" for entry in self._cli_patterns)

    def _prelude(self) -> bytes | None:
        """PBS's client prelude of a split archive: the command line's excludes as JSON."""
        if self._payload_write is None or not self._cli_patterns:
            return None
        text = self._cli_exclude_lines().decode("utf-8", "surrogateescape")
        return json.dumps({"exclude-patterns": text}, separators=(",", ":")).encode()

    def _add_cli_excludes(self) -> None:
        """PBS records the command line's excludes as a file in the archive root."""
        content = self._cli_exclude_lines()
        assert self._encoder is not None
        self._encoder.add_file(PXAREXCLUDE_CLI, Metadata(mode=S_IFREG | 0o600), len(content), content)
        if self._catalog is not None:
            self._catalog.add_file(PXAREXCLUDE_CLI, len(content), 0)

    # --- one entry ------------------------------------------------------------------------

    def _add_entry(self, parent: _Dir, name: bytes, file_type: int) -> _Dir | None:
        path = parent.path + b"/" + name if parent.path else name
        try:
            if file_type == stat.S_IFREG:
                self._add_file(parent, name, path)
            elif file_type == stat.S_IFDIR:
                return self._add_directory(parent, name, path)
            elif file_type == stat.S_IFLNK:
                self._add_symlink(parent.fd, name, path)
            elif file_type in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO):
                self._add_special(parent.fd, name, path)
            # Sockets belong to running services and are not archived.
        except FormatError as err:
            self._unreadable(path, str(err).removeprefix("pxar: "))
        return None

    def _add_file(self, parent: _Dir, name: bytes, path: bytes) -> None:
        fd = self._open(parent.fd, name, path, os.O_RDONLY)
        if fd is None:
            return
        held = False
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._changed(path)
                return
            stats = self.stats
            stats.entries += 1
            if st.st_nlink > 1 and (st.st_dev, st.st_ino) in self._links:
                target, offset = self._links[(st.st_dev, st.st_ino)]
                self._emit(lambda: self._write_hardlink(name, target, offset))
                return
            xattrs = self._xattr_names(fd)
            stats.file_bytes += st.st_size
            reuser = self._reuser
            if reuser is not None:
                if reuser.full:
                    reuser.flush(keep_last_chunk=True)
                # Files with several names are always read, so the first name is written
                # (and its offset known) before any later name links to it.
                span = None
                if st.st_nlink == 1 and parent.previous is not None:
                    if xattrs:
                        items = encode_metadata(self._metadata(st, fd, xattrs))
                    else:
                        items = encode_stat(st.st_mode, 0, st.st_uid, st.st_gid, st.st_mtime_ns)
                    span = reuser.reusable_range(parent.previous, name, items, st.st_size)
                if span is not None:
                    reuser.add_file(span, _HeldFile(self, fd, name, path, st, items))
                    held = True
                    return
                reuser.flush()
            if xattrs:
                self._write_file(fd, name, path, st, self._metadata(st, fd, xattrs))
            else:  # most files: the stat fields are all there is, encoded without a Metadata
                self._write_file(fd, name, path, st, encode_stat(st.st_mode, 0, st.st_uid, st.st_gid, st.st_mtime_ns))
        finally:
            if not held:
                os.close(fd)

    def _write_file(
        self, fd: int, name: bytes, path: bytes, st: os.stat_result, metadata: Metadata | bytes
    ) -> None:
        """Read the file and add it with its contents (``metadata`` as the encoder takes it)."""
        encoder = self._encoder
        assert encoder is not None
        size = st.st_size
        if self._suggest_boundary is not None:
            self._suggest_boundary(encoder.payload_position)
        content = self._small_content(fd, st) if size <= _READ_BLOCK else None
        if content is None:
            content = self._content(fd, st, path)
        reported = self.stats.changed
        offset = encoder.add_file(name, metadata, size, content)
        if self._catalog is not None:
            self._catalog.add_file(name, size, st.st_mtime_ns // _NANOS)
        if st.st_nlink > 1:
            self._links[(st.st_dev, st.st_ino)] = (path, offset)
        after = os.fstat(fd)
        if self.stats.changed == reported and (after.st_mtime_ns, after.st_ctime_ns, after.st_size) != (
            st.st_mtime_ns, st.st_ctime_ns, size
        ):
            self._changed(path)  # unless reading it found that already

    def _write_reused(self, name: bytes, items: bytes, st: os.stat_result, payload_offset: int) -> None:
        """Add an unchanged file (its metadata encoded) whose payload the reuser injects at
        ``payload_offset``."""
        assert self._encoder is not None
        self._encoder.add_payload_ref(name, items, st.st_size, payload_offset)
        if self._catalog is not None:
            self._catalog.add_file(name, st.st_size, st.st_mtime_ns // _NANOS)

    def _write_hardlink(self, name: bytes, target: bytes, offset: int) -> None:
        assert self._encoder is not None
        self._encoder.add_hardlink(name, target, offset)
        if self._catalog is not None:
            self._catalog.add_hardlink(name)

    def _emit(self, write: Callable[[], object]) -> None:
        """Write an entry now, or queue it behind held-back reusable files (metadata mode)."""
        if self._reuser is not None and self._reuser.holding:
            self._reuser.hold(write)
        else:
            write()

    def _end_directory(self) -> None:
        assert self._encoder is not None
        self._encoder.finish_directory()
        if self._catalog is not None:
            self._catalog.end_directory()

    def _small_content(self, fd: int, st: os.stat_result) -> bytes | None:
        """A file of up to one block read whole, or None if it must take ``_content``'s path
        (a sparse file, a read error or a short read, which that path reports)."""
        if _sparse(st):
            return None
        try:
            data = os.pread(fd, st.st_size, 0)
        except OSError:
            return None
        if len(data) != st.st_size:
            return None
        self.stats.content_bytes_read += len(data)
        return data

    def _content(self, fd: int, st: os.stat_result, path: bytes) -> Iterator[bytes | memoryview]:
        """Exactly ``st_size`` bytes of the file; holes of a sparse file are not read."""
        size = st.st_size
        pos = 0
        sparse = _sparse(st)
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
            self.stats.content_bytes_read += len(block)
            yield block

    def _add_directory(self, parent: _Dir, name: bytes, path: bytes) -> _Dir | None:
        fd = self._open(parent.fd, name, path, os.O_RDONLY | os.O_DIRECTORY)
        if fd is None:
            return None
        try:
            st = os.fstat(fd)
            metadata = self._metadata(st, fd)
            self._emit(lambda: self._start_directory(name, metadata))
        except BaseException:
            os.close(fd)
            raise
        self.stats.entries += 1
        if st.st_dev not in self._devices:
            os.close(fd)
            self._warn(f"{self._display(path)} is a mount point; archived empty (use --include-dev to cross)")
            return _Dir(-1, path, [], len(self._patterns))
        try:
            frame = self._open_listing(fd, path)
        except OSError as err:
            self._unreadable(path, err.strerror or str(err))
            return _Dir(fd, path, [], len(self._patterns))
        frame.previous = self._previous_directory(parent.previous, name)
        return frame

    def _start_directory(self, name: bytes, metadata: Metadata) -> None:
        assert self._encoder is not None
        self._encoder.create_directory(name, metadata)
        if self._catalog is not None:
            self._catalog.start_directory(name)

    def _previous_directory(self, previous: Listing | None, name: bytes) -> Listing | None:
        """The subdirectory ``name`` of ``previous`` in the reference archive, if any."""
        if previous is None:
            return None
        return _listing(lambda: previous.open_directory(name))

    def _add_symlink(self, dir_fd: int, name: bytes, path: bytes) -> None:
        try:
            st = os.lstat(name, dir_fd=dir_fd)
            if not stat.S_ISLNK(st.st_mode):
                self._changed(path)
                return
            target = os.readlink(name, dir_fd=dir_fd)
        except FileNotFoundError:
            self._vanished(path)
            return
        except OSError as err:
            self._unreadable(path, err.strerror or str(err))
            return
        metadata = self._metadata(st, None)
        self._emit(lambda: self._write_symlink(name, metadata, target))
        self.stats.entries += 1

    def _write_symlink(self, name: bytes, metadata: Metadata, target: bytes) -> None:
        assert self._encoder is not None
        self._encoder.add_symlink(name, metadata, target)
        if self._catalog is not None:
            self._catalog.add_symlink(name)

    def _add_special(self, dir_fd: int, name: bytes, path: bytes) -> None:
        fd = self._open(dir_fd, name, path, os.O_PATH)
        if fd is None:
            return
        try:
            st = os.fstat(fd)
            metadata = self._metadata(st, f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        if not (stat.S_ISFIFO(st.st_mode) or stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)):
            self._changed(path)
            return
        self._emit(lambda: self._write_special(name, metadata, st))
        self.stats.entries += 1

    def _write_special(self, name: bytes, metadata: Metadata, st: os.stat_result) -> None:
        encoder = self._encoder
        assert encoder is not None
        catalog = self._catalog
        if stat.S_ISFIFO(st.st_mode):
            encoder.add_fifo(name, metadata)
            if catalog is not None:
                catalog.add_fifo(name)
        else:
            encoder.add_device(name, metadata, os.major(st.st_rdev), os.minor(st.st_rdev))
            if catalog is not None:
                if stat.S_ISBLK(st.st_mode):
                    catalog.add_block_device(name)
                else:
                    catalog.add_char_device(name)

    # --- metadata -------------------------------------------------------------------------

    def _metadata(
        self, st: os.stat_result, handle: int | str | None, xattrs: list[str] | None = None
    ) -> Metadata:
        """Stat fields plus xattrs, ACLs and capabilities read through ``handle``.

        ``handle`` is an open fd, a ``/proc/self/fd`` path for files opened with O_PATH, or
        None for symlinks (whose xattrs PBS does not archive either). ``xattrs`` are the
        names ``_xattr_names`` listed already, if it was called.
        """
        metadata = Metadata(
            mode=st.st_mode, uid=st.st_uid, gid=st.st_gid, mtime_ns=st.st_mtime_ns
        )
        if handle is None:
            return metadata
        for name in self._xattr_names(handle) if xattrs is None else xattrs:
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

    def _xattr_names(self, handle: int | str) -> list[str]:
        """The names of the file's extended attributes (none where it has no support)."""
        try:
            return os.listxattr(handle)
        except OSError as err:
            if err.errno not in (errno.ENOTSUP, errno.EBADF, errno.ENODATA):
                self._warn(f"cannot list extended attributes: {err.strerror}")
            return []

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


class _HeldFile:
    """An unchanged file the reuser holds back (``reuse.HeldFile``), in one small object.

    It keeps the file's metadata encoded (bytes): thousands of held ``Metadata`` objects,
    each with its ACL lists, would be walked by every garbage collection meanwhile.
    """

    __slots__ = ("_archiver", "_items", "_name", "_path", "_st", "fd")

    def __init__(
        self, archiver: Archiver, fd: int, name: bytes, path: bytes, st: os.stat_result, items: bytes
    ) -> None:
        self._archiver = archiver
        self.fd = fd
        self._name = name
        self._path = path
        self._st = st
        self._items = items

    def reuse(self, payload_offset: int) -> None:
        self._archiver._write_reused(self._name, self._items, self._st, payload_offset)

    def reencode(self) -> None:
        archiver = self._archiver
        metadata = archiver._metadata(self._st, self.fd)  # read again: only items were kept
        archiver._write_file(self.fd, self._name, self._path, self._st, metadata)


def _listing(open_directory: Callable[[], Directory | None]) -> Listing | None:
    """A reference directory's listing; a damaged one just means no reference here."""
    try:
        directory = open_directory()
        return directory.listing() if directory is not None else None
    except FormatError:
        return None


def _getxattr(handle: int | str, name: str) -> bytes | None:
    try:
        return os.getxattr(handle, name)
    except OSError:
        return None  # removed since it was listed, or not readable: leave it out


def _sparse(st: os.stat_result) -> bool:
    """True if the file has holes (fewer blocks allocated than its size needs)."""
    return st.st_blocks * 512 < st.st_size


def _zeros(size: int) -> Iterator[memoryview]:
    while size > 0:
        take = min(size, len(_ZEROS))
        yield _ZEROS[:take]
        size -= take
