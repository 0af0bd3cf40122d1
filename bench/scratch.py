"""A fresh file system for the repositories and restores of one bench run.

Why: creating files right after deleting many is slow on ext4 *without* a journal (this
project's VMs): ext4 then avoids reusing an inode freed in the last minute (six minutes while
its inode-table block is dirty) and scans every such inode, one buffer lookup each, before it
gives up and takes one anyway. A restore of 12,000 files that runs just after the previous
run's repositories and restores were deleted spent 20 % of its CPU time in that scan, and
whichever tool ran first paid it. On a fresh ext4 made for the run (with a journal, the
default and what a Proxmox host has) every tool starts from the same clean state.

The file system lives in a sparse image file in the work directory on a loop device with
direct I/O, so its writes reach the disk as a real device's would: a buffered loop device
would keep them dirty in the image file's page cache until the first flush, and the flush
(any fsync or syncfs) would then write back everything at once. Making it needs root,
``mkfs.ext4``, ``losetup`` and ``mount``; when any of that is missing or fails, the bench
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
    for tool in ("mkfs.ext4", "losetup", "mount", "umount"):
        if not shutil.which(tool):
            return f"{tool} is missing"
    return None


def _run(*cmd: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise OSError(f"{' '.join(cmd[:2])} failed: {detail[-1] if detail else f'exit {proc.returncode}'}")
    return proc.stdout.strip()


def _loop_devices(image: Path) -> list[str]:
    """The loop devices backed by ``image`` (a run that was killed may have left one)."""
    try:
        out = _run("losetup", "--associated", str(image), "--noheadings", "--output", "NAME")
    except OSError:
        return []
    return out.split()


def _take_down(mountpoint: Path, image: Path) -> None:
    if os.path.ismount(mountpoint):
        _run("umount", str(mountpoint))
    for device in _loop_devices(image):
        _run("losetup", "--detach", device)
    image.unlink(missing_ok=True)


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
    _take_down(mountpoint, image)
    with open(image, "wb") as f:
        f.truncate(image_bytes(size_mb))
    try:
        # Inode tables and journal written now, not by a kernel thread during the measurements.
        _run("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", str(image))
        device = _run("losetup", "--find", "--show", "--direct-io=on", str(image))
        mountpoint.mkdir(exist_ok=True)
        _run("mount", device, str(mountpoint))
    except OSError:
        _take_down(mountpoint, image)
        raise
    try:
        yield mountpoint
    finally:
        if not keep:
            try:
                _take_down(mountpoint, image)
            except OSError as err:
                print(f"bench: warning: {err}; take down {mountpoint} and {image} by hand", file=sys.stderr)
