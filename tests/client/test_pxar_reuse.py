"""The payload reuser's handling of the many files it holds open."""

from __future__ import annotations

import fcntl
import os

from cairn.client.pxar.reuse import _reserve_fds


def test_reserving_fds_never_touches_an_open_one(tmp_path):
    """The table is grown by opening one fd at the top of the range, never by replacing one."""
    held = os.open(tmp_path, os.O_RDONLY)
    top = fcntl.fcntl(held, fcntl.F_DUPFD, 300)  # an fd already open where the reserve would go
    try:
        _reserve_fds(held, top + 1)
        assert os.path.samestat(os.fstat(top), os.fstat(held))
        _reserve_fds(held, 1 << 62)  # beyond any limit: clamped, still harmless
        assert os.path.samestat(os.fstat(top), os.fstat(held))
        before = set(os.listdir("/proc/self/fd"))
        _reserve_fds(held, 2000)
        assert set(os.listdir("/proc/self/fd")) == before  # nothing left open
    finally:
        os.close(top)
        os.close(held)
