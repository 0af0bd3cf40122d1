"""The payload reuser's handling of the many files it holds open."""

from __future__ import annotations

import fcntl
import os

from cairn.client.pxar.util import grow_fd_table


def test_reserving_fds_never_touches_an_open_one(tmp_path):
    """The table is grown by opening one fd at the top of the range, never by replacing one."""
    held = os.open(tmp_path, os.O_RDONLY)
    top = fcntl.fcntl(held, fcntl.F_DUPFD, 300)  # an fd already open where the reserve would go
    try:
        grow_fd_table(top + 1, held)
        assert os.path.samestat(os.fstat(top), os.fstat(held))
        grow_fd_table(1 << 62, held)  # beyond any limit: clamped, still harmless
        assert os.path.samestat(os.fstat(top), os.fstat(held))
        before = set(os.listdir("/proc/self/fd"))
        grow_fd_table(2000, held)
        assert set(os.listdir("/proc/self/fd")) == before  # nothing left open
    finally:
        os.close(top)
        os.close(held)
