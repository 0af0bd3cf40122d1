"""Small helpers shared by the tree backup, restore and mount code."""

from __future__ import annotations

import fcntl
import os
import resource
import sys


def show(path: bytes | str) -> str:
    """A printable form of a path whose bytes may not be UTF-8."""
    if isinstance(path, str):
        path = path.encode("utf-8", "surrogateescape")
    return path.decode("utf-8", "backslashreplace")


def stderr_warning(message: str) -> None:
    """The default way a per-file problem is reported: one line on stderr."""
    print(f"cairn: warning: {message}", file=sys.stderr, flush=True)


def raise_fd_limit() -> None:
    """Allow as many open files as the hard limit: a deep tree keeps one fd per level."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 20, hard))
        except (ValueError, OSError):
            pass


# fds open besides the held files of a metadata-mode backup (directories, sinks, the store)
FD_HEADROOM = 256


def max_held_files() -> int:
    """How many unchanged files may wait with an open fd (metadata mode): half the fd limit,
    as PBS."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return max(64, min(soft // 2, 1 << 16))


def grow_fd_table(count: int, fd: int | None = None) -> None:
    """Grow this process's fd table to ``count`` entries in one step.

    The kernel doubles the table as higher fds are opened, and in a process with threads
    each doubling waits for an RCU grace period, several milliseconds: holding ten thousand
    files open stalled a metadata-mode walk eight times, ~80 ms in all. Opening one fd at
    the top of the range (never replacing an open one) grows it once, and before the first
    thread starts that costs no wait at all. ``fd`` is any open fd to duplicate.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY:
        count = min(count, soft)
    own = fd is None
    try:
        if own:
            fd = os.open("/", os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        os.close(fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, max(0, count - 1)))
    except OSError:
        pass  # no fd that high is free or allowed: the table grows as it always did
    finally:
        if own and fd is not None:
            os.close(fd)


def prepare_metadata_mode() -> None:
    """Raise the fd limit and grow the fd table for a metadata-mode backup's held files.

    Call it while the process has one thread (the command line does, before it starts
    unlocking the key).
    """
    raise_fd_limit()
    grow_fd_table(max_held_files() + FD_HEADROOM)
