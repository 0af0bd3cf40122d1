"""The benchmark script still works: a tiny run of bench/run.py with Cairn alone.

Benchmarks are not tests, so nothing here looks at a duration; it checks that the script
makes its data, runs every step, prints its table and verified the restore bit for bit.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RUN = REPO / "bench" / "run.py"
MKDATA = REPO.parent / "shared" / "bench" / "mkdata.py"


@pytest.mark.skipif(not MKDATA.is_file(), reason=f"{MKDATA} not found (shared/ beside the clone)")
def test_bench_smoke_runs_cairn_and_checks_the_restore(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(RUN), "--smoke", "--tools", "cairn", "--work", str(tmp_path)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stdout.splitlines()
    header = next(line for line in lines if line.startswith("| tool |"))
    for column in ("first backup", "unchanged re-backup", "full restore", "store size", "peak RSS", "restore check"):
        assert column in header
    row = next(line for line in lines if line.startswith("| cairn |"))
    assert row.rstrip().endswith("| bit-identical |")

    report = json.loads((tmp_path / "results.json").read_text())
    result = report["results"]["cairn"]
    assert result["bit_identical"] is True and result["differences"] == []
    for key in ("first_backup", "rebackup", "restore", "store_bytes", "peak_rss"):
        assert result[key] > 0
    assert report["repeat"] == 1 and len(result["runs"]) == 1  # --smoke runs each tool once
    assert result["runs"][0]["first_backup"] == result["first_backup"]
    # the restore was compared against the data set mkdata.py made
    assert (tmp_path / "data-24" / "images" / "vm-100-disk-0.raw").is_file()
    # repositories and restores went to a fresh file system, or the table says why not; either
    # way it is gone afterwards
    fresh = any("fresh ext4" in note for note in report["notes"])
    fallback = any("no fresh file system" in note for note in report["notes"])
    assert fresh != fallback, report["notes"]
    can_mount = os.geteuid() == 0 and all(shutil.which(t) for t in ("mkfs.ext4", "losetup", "mount", "umount"))
    assert can_mount or fallback
    if can_mount and os.path.exists("/dev/loop-control"):  # this project's machines
        assert fresh, report["notes"]
    assert not os.path.ismount(tmp_path / "scratch")
    assert not (tmp_path / "scratch.img").exists()


def test_bench_refuses_unknown_tools(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN), "--tools", "cairn,tar", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "unknown tools ['tar']" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_bench_refuses_zero_repeats(tmp_path):
    proc = subprocess.run([sys.executable, str(RUN), "--repeat", "0", "--work", str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert "--repeat must be at least 1" in proc.stderr


def test_without_root_there_is_no_scratch_file_system_and_nothing_is_left(tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO / "bench"))
    try:
        import scratch
    finally:
        sys.path.remove(str(REPO / "bench"))
    monkeypatch.setattr(scratch.os, "geteuid", lambda: 1000)
    with pytest.raises(OSError, match="not root"):
        with scratch.fresh_filesystem(tmp_path, 24):
            pass
    assert list(tmp_path.iterdir()) == []

