"""A fresh file system for the repositories and restores of one bench run.

Why: creating files right after deleting many is slow on ext4 *without* a journal (this
project's VMs): ext4 then avoids reusing an inode freed in the last minute (six minutes while
its inode-table block is dirty) and scans every such inode, one buffer lookup each, before it
gives up and takes one anyway. A restore of 12,000 files that runs just after the previous
run's repositories and restores were deleted spent 20 % of its CPU time in that scan, and
whichever tool ran first paid it. On a fresh ext4 made for the run (with a journal, the
default and what a Proxmox host has) every tool starts from the same clean state.

The file system lives in a sparse image file in the work directory on a loop device. Making
it needs root, ``mkfs.ext4`` and ``mount``; when any of that is missing or fails, the bench
runs in the work directory itself and says so in the table's notes.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

MIN_IMAGE_BYTES = 4 << 30


def image_bytes(size_mb: int) -> int:
    """Room for four repositories and four restores of the data set, with headroom (sparse)."""
    return max(MIN_IMAGE_BYTES, 10 * size_mb * (1 << 20))


def unavailable() -> str | None:
    """Why a fresh file system cannot be made here, or None."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("mkfs.ext4", "mount", "umount"):
        if not shutil.which(tool):
            return f"{tool} is missing"
    return None


def _run(*cmd: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise OSError(f"{' '.join(cmd[:2])} failed: {detail[-1] if detail else f'exit {proc.returncode}'}")


def _unmount(mountpoint: Path) -> None:
    if os.path.ismount(mountpoint):
        _run("umount", str(mountpoint))


@contextmanager
def fresh_filesystem(work: Path, size_mb: int, *, keep: bool = False) -> Iterator[Path]:
    """Mount a newly made ext4 at ``work/scratch`` for the duration; raise OSError if it can't be.

    The image is removed afterwards unless ``keep`` (then it stays mounted for inspection).
    A mount left behind by an interrupted run is taken down first.
    """
    reason = unavailable()
    if reason:
        raise OSError(reason)
    mountpoint, image = work / "scratch", work / "scratch.img"
    _unmount(mountpoint)
    image.unlink(missing_ok=True)
    with open(image, "wb") as f:
        f.truncate(image_bytes(size_mb))
    try:
        # Inode tables and journal written now, not by a kernel thread during the measurements.
        _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
        mountpoint.mkdir(exist_ok=True)
        _run("mount", "-o", "loop", str(image), str(mountpoint))
    except OSError:
        image.unlink(missing_ok=True)
        raise
    try:
        yield mountpoint
    finally:
        if not keep:
            try:
                _unmount(mountpoint)
            except OSError as err:
                print(f"bench: warning: {err}; unmount {mountpoint} by hand", file=sys.stderr)
            image.unlink(missing_ok=True)
