"""Task ids in PBS's UPID form, so verify states and GC results read as PBS's do.

``UPID:<node>:<pid>:<pstart>:<task id>:<start time>:<type>:<worker id>:<user>:`` with the
numbers in upper-case hex (8 digits); PBS's verify filter reads the start time back out of
the UPID stored in a manifest, so ``--outdated-after`` works on stores either tool wrote.
"""

from __future__ import annotations

import itertools
import os
import socket
import time

from cairn.errors import FormatError

_task_counter = itertools.count()


def _process_start() -> int:
    """Start time of this process in clock ticks since boot (field 22 of /proc/self/stat)."""
    try:
        with open("/proc/self/stat") as f:
            stat = f.read()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def escape_worker_id(text: str) -> str:
    """systemd unit-name escaping, as PBS applies to worker ids: '/' becomes '-'."""
    out = []
    for i, char in enumerate(text):
        if char == "/":
            out.append("-")
        elif char.isascii() and (char.isalnum() or char == "_" or (char == "." and i > 0)):
            out.append(char)
        else:
            out.extend(f"\\x{byte:02x}" for byte in char.encode())
    return "".join(out)


def make_upid(worker_type: str, worker_id: str, start: float | None = None, user: str = "root@pam") -> str:
    starttime = int(time.time() if start is None else start)
    node = socket.gethostname().split(".")[0] or "localhost"
    return (
        f"UPID:{node}:{os.getpid():08X}:{_process_start():08X}:{next(_task_counter):08X}:"
        f"{starttime:08X}:{worker_type}:{escape_worker_id(worker_id)}:{user}:"
    )


def upid_starttime(upid: str) -> int:
    """The task's start time (epoch) recorded in a UPID."""
    parts = upid.split(":")
    if len(parts) < 9 or parts[0] != "UPID":
        raise FormatError(f"not a UPID: {upid!r}")
    try:
        return int(parts[5], 16)
    except ValueError:
        raise FormatError(f"UPID has a malformed start time: {upid!r}") from None
