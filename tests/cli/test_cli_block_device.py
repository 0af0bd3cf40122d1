"""Images from and to real block devices (loop devices; skipped where none can be made)."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from conftest import MIB, run_cairn


@pytest.fixture
def loop_device(tmp_path):
    if os.geteuid() != 0 or not shutil.which("losetup"):
        pytest.skip("needs root and losetup to create a loop device")
    backing = tmp_path / "backing.img"
    backing.write_bytes(os.urandom(6 * MIB) + bytes(6 * MIB) + os.urandom(MIB))
    proc = subprocess.run(["losetup", "-f", "--show", str(backing)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot create a loop device here: {proc.stderr.strip()}")
    device = proc.stdout.strip()
    yield device, backing
    subprocess.run(["losetup", "-d", device], check=False)


def test_block_device_backup_and_restore(store_path, loop_device):
    device, backing = loop_device
    original = backing.read_bytes()
    run_cairn("backup", f"disk.img:{device}", "--repository", str(store_path), "--backup-type", "vm",
              "--backup-id", "blk", "--backup-time", "1000")
    # scribble over the device, then restore onto it: holes must be written as zeros there
    with open(device, "r+b") as dev:
        dev.write(b"\xff" * len(original))
    run_cairn("restore", "vm/blk/1970-01-01T00:16:40Z", "disk.img", device, "--repository", str(store_path))
    with open(device, "rb") as dev:
        assert dev.read() == original
