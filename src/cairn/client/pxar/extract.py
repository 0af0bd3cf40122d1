"""Writing archive entries into a target directory, safely and with their metadata.

The archive is hostile until proven otherwise, so nothing it says can move a write outside
the target:

- every entry is created relative to an fd of its parent directory, and directories are
  opened with ``O_NOFOLLOW``: a symlink in the archive (or already in the target) is never
  followed, so a "symlink, then a file below the same name" trick fails instead of escaping;
- names come checked from the decoder (no ``/``, NUL, ``.`` or ``..``) and are checked again;
- a hardlink is made only to a file this restore created, found again by walking the
  target from its root without following symlinks and confirmed by inode number;
- nothing existing is replaced unless ``overwrite`` is set, and a directory never is.

Metadata is applied in PBS's order: ownership first (``chown`` clears set-id bits and file
capabilities), then xattrs, capabilities and ACLs, then the mode and last the times; a
directory gets its metadata when its last child is done, so its mtime survives. Whatever
the process may not set (ownership, devices, ``trusted.*`` xattrs as a normal user) is
counted and reported once per kind; the restore goes on.
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from cairn.errors import FormatError, UsageError
from cairn.format.pxar import Metadata

from . import posix_acl
from .create import FCAPS_XATTR
from .util import show

_SPARSE_BLOCK = 64 * 1024
_ZERO_BLOCK = bytes(_SPARSE_BLOCK)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FAILED: Any = object()  # what _create returns when nothing was made
_PATH_DIR_FLAGS = os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class Problems:
    """What a restore could not do: entries left out, and metadata it could not set."""

    warn: Callable[[str], None]
    skipped: int = 0
    metadata: dict[str, list] = field(default_factory=dict)  # kind -> [count, first path, reason]

    def skip(self, path: bytes, reason: str) -> None:
        self.skipped += 1
        self.warn(f"{show(path)}: not restored: {reason}")

    def metadata_failed(self, kind: str, path: bytes, err: OSError | str) -> None:
        reason = err if isinstance(err, str) else (err.strerror or str(err))
        record = self.metadata.setdefault(kind, [0, path, reason])
        record[0] += 1

    def report(self) -> None:
        """One line per kind of metadata that could not be restored."""
        for kind, (count, path, reason) in sorted(self.metadata.items()):
            example = f" (first: {show(path)}: {reason})"
            self.warn(f"{kind} could not be restored for {count} entr{'y' if count == 1 else 'ies'}{example}")


@dataclass
class _Frame:
    """A directory of the archive on the way down: created on first use, finished on leave."""

    name: bytes
    metadata: Metadata | None
    path: bytes
    fd: int | None = None
    skip: bool = False


class Extractor:
    """Recreates entries below ``target`` (an existing directory)."""

    def __init__(self, target: str, overwrite: bool, problems: Problems) -> None:
        self._overwrite = overwrite
        self.problems = problems
        try:
            root_fd = os.open(target, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise UsageError(f"cannot restore to {target}: {err.strerror}") from None
        self._stack = [_Frame(b"", None, b"/", root_fd)]
        # archive path of each file made -> (where it was made, st_dev, st_ino)
        self._files: dict[bytes, tuple[bytes, int, int]] = {}
        self.files = 0
        self.bytes = 0

    # --- directories ----------------------------------------------------------------------

    @property
    def depth(self) -> int:
        return len(self._stack) - 1

    def enter_directory(self, name: bytes, metadata: Metadata, path: bytes, create: bool = True) -> None:
        """Go into directory ``name``; it is created now, or with its first extracted child."""
        parent = self._stack[-1]
        self._stack.append(_Frame(name, metadata, path, skip=parent.skip))
        if create:
            self._materialize()

    def leave_directory(self) -> None:
        """Finish the innermost directory: its metadata is applied now that it is complete."""
        frame = self._stack.pop()
        if frame.fd is None:
            return
        try:
            if frame.metadata is not None:
                self._apply(frame.metadata, frame.path, fd=frame.fd)
        finally:
            os.close(frame.fd)

    def finish(self, root_metadata: Metadata | None) -> None:
        """Close what is still open; apply the archive root's metadata to the target if given."""
        while len(self._stack) > 1:
            self.leave_directory()
        root = self._stack[0]
        try:
            if root_metadata is not None and root.fd is not None:
                self._apply(root_metadata, b"/", fd=root.fd)
        finally:
            if root.fd is not None:
                os.close(root.fd)
                root.fd = None

    def close(self) -> None:
        """Release every fd after a failure (no metadata is applied)."""
        for frame in self._stack:
            if frame.fd is not None:
                os.close(frame.fd)
                frame.fd = None

    def _materialize(self) -> int | None:
        """The fd of the current directory, creating pending directories on the way."""
        for i, frame in enumerate(self._stack):
            if frame.fd is not None:
                continue
            if frame.skip:
                return None
            parent_fd = self._stack[i - 1].fd
            assert parent_fd is not None
            fd = self._make_directory(parent_fd, frame.name, frame.path)
            if fd is None:
                for below in self._stack[i:]:
                    below.skip = True
                return None
            frame.fd = fd
        return self._stack[-1].fd

    def _make_directory(self, parent_fd: int, name: bytes, path: bytes) -> int | None:
        _check_name(name)
        try:
            os.mkdir(name, 0o700, dir_fd=parent_fd)
        except FileExistsError:
            pass
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as err:
            if err.errno not in (errno.ELOOP, errno.ENOTDIR):
                self.problems.skip(path, err.strerror or str(err))
                return None
        # Something other than a directory is in the way (perhaps a symlink): never follow it.
        if not self._overwrite:
            self.problems.skip(path, "a non-directory with this name exists (use --overwrite to replace it)")
            return None
        try:
            os.unlink(name, dir_fd=parent_fd)
            os.mkdir(name, 0o700, dir_fd=parent_fd)
            return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
        except OSError as err:
            self.problems.skip(path, err.strerror or str(err))
            return None

    # --- entries --------------------------------------------------------------------------

    def extract_file(self, name: bytes, metadata: Metadata, size: int, contents: Iterable[bytes], path: bytes) -> None:
        """A regular file: its contents (zero runs become holes), then its metadata."""
        parent = self._parent(name)
        if parent is None:
            return
        fd = self._create(parent, name, path, lambda: os.open(name, _FILE_FLAGS, 0o600, dir_fd=parent))
        if fd is _FAILED:
            return
        try:
            written = _write_sparse(fd, contents)
            if written != size:
                raise UsageError(f"{show(path)}: archive gave {written} bytes for a {size}-byte file")
            st = os.fstat(fd)
            if st.st_size != size:  # it ends in a hole
                os.ftruncate(fd, size)
            key = path.strip(b"/")
            self._files[key] = (key, st.st_dev, st.st_ino)
            self._apply(metadata, path, fd=fd, owner=(st.st_uid, st.st_gid))
        finally:
            os.close(fd)
        self.files += 1
        self.bytes += size

    def extract_symlink(self, name: bytes, metadata: Metadata, target: bytes, path: bytes) -> None:
        parent = self._parent(name)
        if parent is None:
            return
        if self._create(parent, name, path, lambda: os.symlink(target, name, dir_fd=parent)) is not _FAILED:
            self._apply(metadata, path, parent=parent, name=name, symlink=True)
            self.files += 1

    def extract_special(self, name: bytes, metadata: Metadata, path: bytes, device: tuple[int, int] | None = None) -> None:
        """Device nodes, fifos and sockets (made with mknod, never opened for I/O)."""
        parent = self._parent(name)
        if parent is None:
            return
        file_type = stat.S_IFMT(metadata.mode)
        if file_type not in (stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO, stat.S_IFSOCK):
            self.problems.skip(path, f"unexpected file type {file_type:#o} for a special file")
            return
        rdev = os.makedev(*device) if device is not None else 0
        is_device = file_type in (stat.S_IFCHR, stat.S_IFBLK)

        def make() -> None:
            try:
                os.mknod(name, file_type | 0o600, rdev, dir_fd=parent)
            except PermissionError as err:
                if is_device:
                    raise _NotPermitted(err) from None
                raise

        try:
            if self._create(parent, name, path, make) is _FAILED:
                return
        except _NotPermitted as denied:
            # Only root may make device nodes: a normal user's restore goes on without them.
            self.problems.metadata_failed("device nodes", path, denied.args[0])
            return
        fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        try:
            self._apply(metadata, path, parent=parent, name=name, proc=f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        self.files += 1

    def has_file(self, archive_path: bytes) -> bool:
        """Was the file at ``archive_path`` created by this restore (a hardlink may use it)?"""
        return archive_path.strip(b"/") in self._files

    def alias(self, made_path: bytes, archive_path: bytes) -> None:
        """Let hardlinks to ``archive_path`` link to the file made at ``made_path``."""
        record = self._files.get(made_path.strip(b"/"))
        if record is not None:
            self._files.setdefault(archive_path.strip(b"/"), record)

    def extract_hardlink(self, name: bytes, target_path: bytes, path: bytes) -> None:
        """Another name for a file this restore created; anything else is refused."""
        key = target_path.strip(b"/")
        record = self._files.get(key)
        if record is None:
            self.problems.skip(path, f"hardlink target {show(target_path)} is not a file this restore made")
            return
        parent = self._parent(name)
        if parent is None:
            return
        location, *identity = record
        *dirs, last = location.split(b"/")
        fds = []
        try:
            fd = self._stack[0].fd
            for component in dirs:
                _check_name(component)
                fd = os.open(component, _PATH_DIR_FLAGS, dir_fd=fd)
                fds.append(fd)
            st = os.stat(last, dir_fd=fd, follow_symlinks=False)
            if [st.st_dev, st.st_ino] != identity:
                self.problems.skip(path, f"hardlink target {show(target_path)} was replaced meanwhile")
                return
            src = fd
            self._create(
                parent, name, path,
                lambda: os.link(last, name, src_dir_fd=src, dst_dir_fd=parent, follow_symlinks=False),
            )
        except OSError as err:
            self.problems.skip(path, f"hardlink target {show(target_path)}: {err.strerror}")
        finally:
            for fd in fds:
                os.close(fd)

    def skip_current(self) -> bool:
        """True inside a directory that could not be created (its entries are left out)."""
        return self._stack[-1].skip

    def _parent(self, name: bytes) -> int | None:
        _check_name(name)
        fd = self._stack[-1].fd
        return fd if fd is not None else self._materialize()

    def _create(self, parent: int, name: bytes, path: bytes, make: Callable[[], Any]) -> Any:
        """Run ``make``; on EEXIST replace a non-directory if allowed. ``_FAILED`` if not made."""
        try:
            return make()
        except FileExistsError:
            pass
        except OSError as err:
            self.problems.skip(path, err.strerror or str(err))
            return _FAILED
        if not self._overwrite:
            self.problems.skip(path, "it exists (use --overwrite to replace it)")
            return _FAILED
        try:
            if stat.S_ISDIR(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode):
                self.problems.skip(path, "a directory with this name exists")
                return _FAILED
            os.unlink(name, dir_fd=parent)
            return make()
        except OSError as err:
            self.problems.skip(path, err.strerror or str(err))
            return _FAILED

    # --- metadata -------------------------------------------------------------------------

    def _apply(
        self,
        metadata: Metadata,
        path: bytes,
        *,
        fd: int | None = None,
        parent: int | None = None,
        name: bytes | None = None,
        proc: str | None = None,
        symlink: bool = False,
        owner: tuple[int, int] | None = None,
    ) -> None:
        """Ownership, xattrs, capabilities, ACLs, mode, then mtime, through ``fd`` or by name.

        ``owner`` is the (uid, gid) of a file this restore has just made. When it already is
        the archive's, chown is skipped: it would change nothing, as such a file has no
        set-id bits or capabilities yet for chown to clear.
        """
        problems = self.problems
        handle: int | str | None = fd if fd is not None else proc

        if owner != (metadata.uid, metadata.gid):
            try:
                if fd is not None:
                    os.fchown(fd, metadata.uid, metadata.gid)
                else:
                    os.chown(name, metadata.uid, metadata.gid, dir_fd=parent, follow_symlinks=False)
            except OSError as err:
                problems.metadata_failed("ownership", path, err)

        if handle is not None and not symlink:
            for xname, value in metadata.xattrs:
                try:
                    os.setxattr(handle, os.fsdecode(xname), value)
                except OSError as err:
                    problems.metadata_failed("extended attributes", path, err)
            if metadata.fcaps is not None:
                try:
                    os.setxattr(handle, FCAPS_XATTR, metadata.fcaps)
                except OSError as err:
                    problems.metadata_failed("file capabilities", path, err)
            self._apply_acl(metadata, path, handle)
            try:
                if fd is not None:
                    os.fchmod(fd, stat.S_IMODE(metadata.mode))
                else:
                    os.chmod(handle, stat.S_IMODE(metadata.mode))
            except OSError as err:
                problems.metadata_failed("permissions", path, err)

        times = (time.time_ns(), metadata.mtime_ns)
        try:
            if fd is not None:
                os.utime(fd, ns=times)
            else:
                os.utime(name, ns=times, dir_fd=parent, follow_symlinks=False)
        except OSError as err:
            problems.metadata_failed("modification times", path, err)

    def _apply_acl(self, metadata: Metadata, path: bytes, handle: int | str) -> None:
        acl = metadata.acl
        try:
            if posix_acl.has_access_entries(acl):
                os.setxattr(handle, posix_acl.ACCESS_XATTR, posix_acl.access_blob(acl, metadata.mode))
            default = posix_acl.default_blob(acl)
            if default is not None and stat.S_ISDIR(metadata.mode):
                os.setxattr(handle, posix_acl.DEFAULT_XATTR, default)
        except OSError as err:
            self.problems.metadata_failed("ACLs", path, err)
        except FormatError as err:  # an ACL from the archive that no kernel accepts
            self.problems.metadata_failed("ACLs", path, str(err))


class _NotPermitted(Exception):
    """mknod of a device was refused: expected without root, reported as a limitation."""


def _check_name(name: bytes) -> None:
    if not name or b"/" in name or b"\0" in name or name in (b".", b".."):
        raise UsageError(f"archive holds an invalid file name {name!r}; refusing to restore it")


def _write_sparse(fd: int, contents: Iterable[bytes]) -> int:
    """Write ``contents`` at increasing offsets, skipping all-zero blocks (left as holes).

    The blocks between two zero blocks go out in one ``pwrite``.
    """
    pos = 0
    for piece in contents:
        view = memoryview(piece)
        run = 0  # start of the data not yet written
        for start in range(0, len(view), _SPARSE_BLOCK):
            # A nonzero first byte settles most blocks; startswith compares the rest with
            # memcmp and takes the view as it is (no copy).
            if view[start] == 0 and _ZERO_BLOCK.startswith(view[start : start + _SPARSE_BLOCK]):
                if run < start:
                    _pwrite_all(fd, view[run:start], pos + run)
                run = start + _SPARSE_BLOCK
        if run < len(view):
            _pwrite_all(fd, view[run:], pos + run)
        pos += len(view)
    return pos


def _pwrite_all(fd: int, data: memoryview, offset: int) -> None:
    while data:
        written = os.pwrite(fd, data, offset)
        data = data[written:]
        offset += written
