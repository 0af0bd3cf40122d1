"""flock(2)-based locks on store directories, as PBS takes them.

PBS locks a group directory exclusively while a backup writes into it, locks a snapshot
directory shared while it is read and exclusively while it is removed. Locks are tied to an
open file descriptor, so a killed process releases them at once.
"""

from __future__ import annotations

import fcntl
import os
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from cairn.errors import LockError


class DirLock:
    """A held flock on a directory or file; release with :meth:`release` or ``with``."""

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_path(
    path: Path, exclusive: bool, what: str, timeout: float = 0.0, directory: bool = True
) -> DirLock:
    """Lock ``path``; wait up to ``timeout`` seconds, then fail with a clear LockError."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if directory else os.O_CREAT)
    try:
        fd = os.open(path, flags, 0o644)
    except FileNotFoundError:
        raise LockError(f"cannot lock {what}: it does not exist") from None
    operation = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, operation)
            return DirLock(fd)
        except BlockingIOError:
            if time.monotonic() >= deadline:
                os.close(fd)
                raise LockError(f"{what} is locked by another operation; try again later") from None
            time.sleep(0.05)


@contextmanager
def locked(path: Path, exclusive: bool, what: str, timeout: float = 0.0) -> Iterator[DirLock]:
    lock = lock_path(path, exclusive, what, timeout)
    try:
        yield lock
    finally:
        lock.release()
