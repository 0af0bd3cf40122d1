"""Crash-safe file writing: temporary name in the same directory, flush, rename.

A reader never sees a half-written file. ``durable=True`` also fsyncs the file and its
directory, so the rename survives a power loss; chunk writes skip that and rely on one
``syncfs`` of the store before a snapshot's manifest is written (PBS's "filesystem" level).
"""

from __future__ import annotations

import ctypes
import os
import secrets
from pathlib import Path

# The C library is already loaded into Python; ctypes.util.find_library would run
# `ldconfig -p` in a subprocess at every start just to find its name.
_libc = ctypes.CDLL(None, use_errno=True)


def temp_name(path: Path) -> Path:
    return path.with_name(f"{path.name}.tmp_{secrets.token_hex(4)}")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: Path, data: bytes | memoryview, durable: bool = True, mode: int = 0o644) -> None:
    """Atomically give ``path`` the content ``data``."""
    tmp = temp_name(path)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        view = memoryview(data)
        while view:
            written = os.write(fd, view)
            view = view[written:]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
    os.close(fd)
    try:
        os.rename(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if durable:
        fsync_dir(path.parent)


def syncfs(path: Path) -> None:
    """Flush every dirty page of the file system holding ``path`` (Linux syncfs(2))."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc.syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


_SYNC_FILE_RANGE_WRITE = 2  # <linux/fs.h>: start writeback of dirty pages, do not wait


def start_writeback(fd: int) -> None:
    """Start writing ``fd``'s dirty pages to disk now, without waiting for them.

    Chunks are not fsynced one by one; a backup ends with one ``syncfs`` instead. Starting
    each chunk's writeback as soon as it is written spreads that I/O over the backup, so
    the final ``syncfs`` finds little left to wait for. Durability is unchanged: only the
    ``syncfs`` promises anything. Failures are ignored for the same reason.
    """
    _libc.sync_file_range(fd, ctypes.c_int64(0), ctypes.c_int64(0), _SYNC_FILE_RANGE_WRITE)
