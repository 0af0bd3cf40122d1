"""Read-only FUSE mounts of snapshot archives (pyfuse3 on Debian's libfuse3).

A pxar archive mounts as its directory tree: every lookup goes through the archive's
goodbye tables and every read fetches only the chunks it needs, so browsing a large backup
costs what is looked at. An image (``.fidx``) or a blob mounts as a directory holding that
one file, so a disk image can be loop-mounted from there (``mount -o loop,ro``).

The mount runs in the foreground until Ctrl-C (SIGINT), SIGTERM, or ``cairn unmount``;
each way unmounts cleanly.
"""

from __future__ import annotations

import errno
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable

from cairn.client.pxar import posix_acl
from cairn.client.pxar.create import FCAPS_XATTR
from cairn.errors import CairnError, UsageError
from cairn.format.pxar import Accessor, Directory, Entry, EntryKind

try:
    import pyfuse3
    import trio
except ImportError:  # the optional "mount" extra is not installed
    pyfuse3 = None
    trio = None

ReadAt = Callable[[int, int], bytes]
_TIMEOUT = 300.0  # archives never change: let the kernel cache names and attributes


def require_fuse() -> None:
    """Fail with one clear line if this machine cannot mount."""
    if pyfuse3 is None:
        raise UsageError(
            "mounting needs pyfuse3: install libfuse3-dev and pkg-config, then "
            "pip install 'cairn-backup[mount]'"
        )
    if not os.path.exists("/dev/fuse"):
        raise UsageError("mounting needs /dev/fuse (load the fuse module, or run where FUSE is available)")


def _fuse_errors(method):
    """Turn archive and OS errors inside a FUSE handler into errno replies."""

    async def wrapper(self, *args):
        try:
            return await method(self, *args)
        except pyfuse3.FUSEError:
            raise
        except CairnError as err:
            print(f"cairn: warning: mount: {err}", file=sys.stderr, flush=True)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except OSError as err:
            raise pyfuse3.FUSEError(err.errno or errno.EIO) from None

    wrapper.__name__ = method.__name__
    return wrapper


def _base_attributes(inode: int, mode: int, size: int, uid: int = 0, gid: int = 0, mtime_ns: int = 0):
    attr = pyfuse3.EntryAttributes()
    attr.st_ino = inode
    attr.st_mode = mode
    attr.st_nlink = 2 if stat.S_ISDIR(mode) else 1
    attr.st_uid = uid
    attr.st_gid = gid
    attr.st_size = size
    attr.st_blksize = 4096
    attr.st_blocks = (size + 511) // 512
    attr.st_mtime_ns = attr.st_ctime_ns = attr.st_atime_ns = mtime_ns
    attr.entry_timeout = attr.attr_timeout = _TIMEOUT
    return attr


class _ReadOnly(pyfuse3.Operations if pyfuse3 is not None else object):
    """Refusals shared by both file systems (the default handlers already reply ENOSYS)."""

    async def statfs(self, ctx):
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_namemax = 255
        return data

    @staticmethod
    def _read_only_handle(inode: int, flags: int, is_file: bool = True):
        """The reply to an open of ``inode``: refused for writing or if not a file, cached."""
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
            raise pyfuse3.FUSEError(errno.EROFS)
        if not is_file:
            raise pyfuse3.FUSEError(errno.EINVAL)
        info = pyfuse3.FileInfo(fh=inode)
        info.keep_cache = True
        return info


class PxarFileSystem(_ReadOnly):
    """A pxar archive's tree. Inodes are the archive offsets of the entries' names."""

    def __init__(self, accessor: Accessor) -> None:
        super().__init__()
        self._accessor = accessor
        root = accessor.open_root()
        self._entries: dict[int, Entry] = {pyfuse3.ROOT_INODE: root.entry()}
        self._directories: dict[int, Directory] = {pyfuse3.ROOT_INODE: root}
        self._listings: dict[int, list[Entry]] = {}
        self._next_handle = 1

    def _inode(self, entry: Entry) -> tuple[int, Entry]:
        if entry.kind is EntryKind.HARDLINK:
            entry = self._accessor.follow_hardlink(entry)
        if entry.file_offset is None:
            return pyfuse3.ROOT_INODE, entry
        inode = entry.file_offset + pyfuse3.ROOT_INODE + 1
        self._entries.setdefault(inode, entry)
        return inode, entry

    def _entry(self, inode: int) -> Entry:
        entry = self._entries.get(inode)
        if entry is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return entry

    def _directory(self, inode: int) -> Directory:
        directory = self._directories.get(inode)
        if directory is None:
            entry = self._entry(inode)
            if entry.kind is not EntryKind.DIRECTORY:
                raise pyfuse3.FUSEError(errno.ENOTDIR)
            directory = self._directories[inode] = self._accessor.open_directory(entry)
        return directory

    def _attributes(self, inode: int, entry: Entry):
        md = entry.metadata
        assert md is not None
        if entry.kind is EntryKind.FILE:
            size = entry.size
        elif entry.kind is EntryKind.SYMLINK:
            size = len(entry.link_target or b"")
        else:
            size = 0
        attr = _base_attributes(inode, md.mode, size, md.uid, md.gid, md.mtime_ns)
        if entry.device is not None:
            attr.st_rdev = os.makedev(*entry.device)
        return attr

    @_fuse_errors
    async def getattr(self, inode, ctx=None):
        return self._attributes(inode, self._entry(inode))

    @_fuse_errors
    async def lookup(self, parent_inode, name, ctx=None):
        if name == b".":
            return await self.getattr(parent_inode)
        found = self._directory(parent_inode).lookup(name)
        if found is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        inode, entry = self._inode(found)
        return self._attributes(inode, entry)

    @_fuse_errors
    async def opendir(self, inode, ctx):
        listing = list(self._directory(inode).entries())
        handle = self._next_handle
        self._next_handle += 1
        self._listings[handle] = listing
        return handle

    @_fuse_errors
    async def readdir(self, handle, start_id, token):
        listing = self._listings.get(handle, [])
        for position in range(start_id, len(listing)):
            inode, entry = self._inode(listing[position])
            if not pyfuse3.readdir_reply(token, listing[position].name, self._attributes(inode, entry), position + 1):
                break

    async def releasedir(self, handle):
        self._listings.pop(handle, None)

    @_fuse_errors
    async def open(self, inode, flags, ctx):
        return self._read_only_handle(inode, flags, self._entry(inode).kind is EntryKind.FILE)

    @_fuse_errors
    async def read(self, handle, offset, size):
        return self._accessor.open_file(self._entry(handle)).read_at(offset, size)

    @_fuse_errors
    async def readlink(self, inode, ctx):
        entry = self._entry(inode)
        if entry.kind is not EntryKind.SYMLINK:
            raise pyfuse3.FUSEError(errno.EINVAL)
        return entry.link_target or b""

    def _xattrs(self, entry: Entry) -> dict[bytes, bytes]:
        md = entry.metadata
        assert md is not None
        values = {name: value for name, value in md.xattrs}
        if md.fcaps is not None:
            values[FCAPS_XATTR.encode()] = md.fcaps
        if posix_acl.has_access_entries(md.acl):
            values[posix_acl.ACCESS_XATTR.encode()] = posix_acl.access_blob(md.acl, md.mode)
        default = posix_acl.default_blob(md.acl)
        if default is not None:
            values[posix_acl.DEFAULT_XATTR.encode()] = default
        return values

    @_fuse_errors
    async def listxattr(self, inode, ctx):
        return list(self._xattrs(self._entry(inode)))

    @_fuse_errors
    async def getxattr(self, inode, name, ctx):
        value = self._xattrs(self._entry(inode)).get(name)
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value


class SingleFileSystem(_ReadOnly):
    """A directory holding one read-only file (an image or a blob)."""

    def __init__(self, name: bytes, size: int, read_at: ReadAt, mtime_ns: int) -> None:
        super().__init__()
        self._name = name
        self._size = size
        self._read_at = read_at
        self._mtime_ns = mtime_ns
        self._inode = pyfuse3.ROOT_INODE + 1

    def _attributes(self, inode: int):
        if inode == pyfuse3.ROOT_INODE:
            return _base_attributes(inode, stat.S_IFDIR | 0o555, 0, mtime_ns=self._mtime_ns)
        if inode == self._inode:
            return _base_attributes(inode, stat.S_IFREG | 0o444, self._size, mtime_ns=self._mtime_ns)
        raise pyfuse3.FUSEError(errno.ENOENT)

    async def getattr(self, inode, ctx=None):
        return self._attributes(inode)

    async def lookup(self, parent_inode, name, ctx=None):
        if parent_inode != pyfuse3.ROOT_INODE or name != self._name:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attributes(self._inode)

    async def opendir(self, inode, ctx):
        if inode != pyfuse3.ROOT_INODE:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return inode

    async def readdir(self, handle, start_id, token):
        if start_id == 0:
            pyfuse3.readdir_reply(token, self._name, self._attributes(self._inode), 1)

    async def open(self, inode, flags, ctx):
        if inode != self._inode:
            raise pyfuse3.FUSEError(errno.EISDIR)
        return self._read_only_handle(inode, flags)

    @_fuse_errors
    async def read(self, handle, offset, size):
        return self._read_at(offset, size)


def serve(operations, mountpoint: str, fsname: str, announce: Callable[[str], None]) -> None:
    """Mount ``operations`` at ``mountpoint`` and serve until unmounted or signalled."""
    require_fuse()
    if not os.path.isdir(mountpoint):
        raise UsageError(f"mount point {mountpoint} is not a directory")
    if os.path.ismount(mountpoint):
        raise UsageError(f"{mountpoint} is already a mount point")
    options = set(pyfuse3.default_options) | {f"fsname={fsname}", "ro", "subtype=cairn"}
    if os.geteuid() == 0:
        options.add("allow_other")
    try:
        pyfuse3.init(operations, mountpoint, options)
    except RuntimeError as err:
        raise UsageError(f"cannot mount at {mountpoint}: {err}") from None
    announce(f"mounted {fsname} at {mountpoint} (leave with Ctrl-C or 'cairn unmount {mountpoint}')")
    unmounted_by_us = True
    try:
        unmounted_by_us = trio.run(_main_until_signal)
    finally:
        pyfuse3.close(unmount=unmounted_by_us)


async def _main_until_signal() -> bool:
    """Run the FUSE loop; True if a signal ended it (we unmount), False if it was unmounted."""
    signalled = False
    async with trio.open_nursery() as nursery:

        async def fuse_loop() -> None:
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

        nursery.start_soon(fuse_loop)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM, signal.SIGHUP) as signals:
            async for _ in signals:
                signalled = True
                nursery.cancel_scope.cancel()
                break
    return signalled


def unmount(mountpoint: str) -> None:
    """Unmount a Cairn mount (any FUSE mount the caller may unmount)."""
    if not os.path.ismount(mountpoint):
        raise UsageError(f"{mountpoint} is not mounted")
    tool = shutil.which("fusermount3") or shutil.which("fusermount")
    command = [tool, "-u", mountpoint] if tool else ["umount", mountpoint]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["unmount failed"])[-1]
        raise CairnError(f"cannot unmount {mountpoint}: {reason}")
