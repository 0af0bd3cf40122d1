"""Small helpers shared by the tree backup, restore and mount code."""

from __future__ import annotations

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
