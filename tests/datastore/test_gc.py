"""Garbage collection: mark and sweep with PBS's grace period, writers, atime check, locks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from store_helpers import DAY, age, age_all_chunks, blocks, chunk_names, write_snapshot

from cairn.datastore import gc
from cairn.datastore.datastore import Datastore
from cairn.datastore.gc import (
    GRACE_SECONDS,
    garbage_collect,
    last_gc_status,
    live_writer_starts,
)
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.datastore.verify import verify
from cairn.errors import LockError, StoreError

T0 = 1795312800
ROOT = Namespace()


def test_gc_removes_exactly_the_unreferenced_chunks_past_grace(fresh_store: Datastore):
    store = fresh_store
    shared = blocks(1, 3)
    kept = write_snapshot(store, "vm/1", T0, shared + blocks(2, 4))
    gone = write_snapshot(store, "vm/1", T0 + 60, shared + blocks(3, 5))
    store.forget_snapshot(ROOT, SnapshotName(GroupName.parse("vm/1"), T0 + 60))
    age_all_chunks(store, 3 * DAY)
    only_gone = {d.hex() for d in gone} - {d.hex() for d in kept}
    assert len(only_gone) == 5

    dry = garbage_collect(store, dry_run=True)
    assert chunk_names(store) >= only_gone  # a dry run removes nothing ...
    assert all(os.stat(c.path).st_atime < time.time() - 2 * DAY for c in store.chunks.iter_files())  # ... nor touches

    result = garbage_collect(store)
    assert chunk_names(store) == {d.hex() for d in kept}
    status = result.status
    assert (status.removed_chunks, status.disk_chunks, status.pending_chunks) == (5, 7, 0)
    assert (dry.status.removed_chunks, dry.status.disk_chunks, dry.status.removed_bytes) == (
        status.removed_chunks, status.disk_chunks, status.removed_bytes)
    assert status.index_file_count == 1 and status.index_data_bytes == 7 * 64 * 1024
    assert status.dedup_factor == pytest.approx(status.index_data_bytes / status.disk_bytes)
    saved = json.loads(store.gc_status_path().read_text())
    assert set(saved) == {"upid", "index-file-count", "index-data-bytes", "disk-bytes", "disk-chunks",
                          "removed-bytes", "removed-chunks", "pending-bytes", "pending-chunks",
                          "removed-bad", "still-bad"}
    assert saved["removed-chunks"] == 5 and saved["upid"].startswith("UPID:")
    assert last_gc_status(store) == status
    assert verify(store).ok


def test_unreferenced_chunks_within_grace_are_pending(store: Datastore):
    write_snapshot(store, "vm/2", T0, blocks(10, 2))
    gone = write_snapshot(store, "vm/2", T0 + 1, blocks(11, 4))
    store.forget_snapshot(ROOT, SnapshotName(GroupName.parse("vm/2"), T0 + 1))
    paths = [store.chunks.path(d) for d in gone]
    age(paths[0], GRACE_SECONDS - 120)  # just inside the grace period
    age(paths[1], GRACE_SECONDS + 120)  # just outside
    result = garbage_collect(store)
    assert not paths[1].exists()
    assert all(p.exists() for p in (paths[0], paths[2], paths[3]))
    assert result.status.removed_chunks >= 1 and result.status.pending_chunks >= 3


def test_oldest_live_writer_moves_the_cutoff_and_dead_markers_are_ignored(store: Datastore):
    gone = write_snapshot(store, "vm/3", T0, blocks(20, 2))
    store.forget_snapshot(ROOT, SnapshotName(GroupName.parse("vm/3"), T0))
    age(store.chunks.path(gone[0]), 3 * DAY)
    age(store.chunks.path(gone[1]), 3 * DAY)
    markers = store.writer_markers_dir()
    markers.mkdir(exist_ok=True)
    dead = subprocess.Popen(["true"])
    dead.wait()
    (markers / f"{dead.pid}-{T0}-dead0000").write_text(f"{time.time() - 10 * DAY}\n")
    live = subprocess.Popen(["sleep", "60"])
    try:
        (markers / f"{live.pid}-{T0}-live0000").write_text(f"{time.time() - 3 * DAY}\n")
        assert len(live_writer_starts(store)) == 1
        result = garbage_collect(store)
        # the live writer started 3 days ago: chunks it may have reused since stay
        assert result.oldest_writer == pytest.approx(time.time() - 3 * DAY, abs=60)
        assert all(store.chunks.path(d).exists() for d in gone)
        assert not (markers / f"{dead.pid}-{T0}-dead0000").exists()  # stale marker cleaned up
    finally:
        live.kill()
        live.wait()
    result = garbage_collect(store)  # the writer is gone: now they go
    assert result.oldest_writer is None
    assert not any(store.chunks.path(d).exists() for d in gone)


def test_gc_refuses_a_filesystem_without_atime_updates(store: Datastore, monkeypatch):
    # A mock, because no file system on this machine ignores utimensat: the touch the mark
    # phase uses is made a no-op, as on a file system that drops explicit atime updates.
    gone = write_snapshot(store, "vm/4", T0, blocks(30, 2))
    store.forget_snapshot(ROOT, SnapshotName(GroupName.parse("vm/4"), T0))
    for digest in gone:
        age(store.chunks.path(digest), 3 * DAY)
    monkeypatch.setattr(gc, "touch_atime", lambda path: True)
    with pytest.raises(StoreError, match="does not update file access times"):
        garbage_collect(store)
    assert all(store.chunks.path(d).exists() for d in gone)
    assert not store.chunk_probe_path().exists()
    assert store.chunks.path(gone[0]).stat().st_atime < time.time() - 2 * DAY


def test_two_collections_do_not_run_at_once(store: Datastore):
    with store.lock_gc(), pytest.raises(LockError, match="already running"):
        garbage_collect(store)


def test_damaged_indexes_marked_or_skipped_loudly(store: Datastore):
    csum_bad = write_snapshot(store, "vm/5", T0, blocks(40, 3))
    broken = write_snapshot(store, "ct/6", T0, blocks(41, 3))
    snap5 = store.snapshot_path(ROOT, SnapshotName(GroupName.parse("vm/5"), T0)) / "disk.img.fidx"
    raw = bytearray(snap5.read_bytes())
    raw[40] ^= 0xFF  # inside the header checksum: entries still readable
    snap5.write_bytes(bytes(raw))
    snap6 = store.snapshot_path(ROOT, SnapshotName(GroupName.parse("ct/6"), T0)) / "disk.img.fidx"
    snap6.write_bytes(snap6.read_bytes()[:-7])  # truncated: entries cannot be trusted
    for digest in csum_bad + broken:
        age(store.chunks.path(digest), 3 * DAY)
    warnings: list[str] = []
    result = garbage_collect(store, log=warnings.append)
    assert all(store.chunks.path(d).exists() for d in csum_bad)
    assert result.skipped_indexes == [str(snap6)]
    assert any("WARNING: skipping unreadable index" in w and str(snap6) in w for w in warnings)
    assert any("fails its checksum" in w for w in warnings)
    assert not any(store.chunks.path(d).exists() for d in broken)
    store.remove_group(ROOT, GroupName.parse("ct/6"))


def test_missing_chunk_keeps_its_bad_copies_and_is_reported(store: Datastore):
    digests = write_snapshot(store, "vm/7", T0, blocks(50, 2))
    bad = store.chunks.rename_corrupt(digests[0])
    assert bad is not None and bad.name.endswith(".0.bad")
    orphan_bad = store.chunks.path(bytes.fromhex("ee" * 32)).with_name("ee" * 32 + ".0.bad")
    orphan_bad.write_bytes(b"junk")
    age(bad, 3 * DAY)
    age(orphan_bad, 3 * DAY)
    warnings: list[str] = []
    result = garbage_collect(store, log=warnings.append)
    assert result.missing_chunks == 1
    assert any(digests[0].hex() in w and "missing" in w for w in warnings)
    assert bad.exists()  # the index still needs that chunk: keep the evidence
    assert not orphan_bad.exists()
    assert (result.status.removed_bad, result.status.still_bad) == (1, 1)


def test_stale_temp_files_go_and_an_interrupted_sweep_is_undone(store: Datastore):
    digests = write_snapshot(store, "vm/8", T0, blocks(60, 2))
    chunk = store.chunks.path(digests[0])
    stale_tmp = chunk.with_name(chunk.name + ".tmp_deadbeef")
    fresh_tmp = chunk.with_name(chunk.name + ".tmp_cafebabe")
    stale_tmp.write_bytes(b"half")
    fresh_tmp.write_bytes(b"half")
    age(stale_tmp, 3 * DAY)
    aside = chunk.with_name(chunk.name + ".gc_99999")  # a killed GC's rename, not yet undone
    os.rename(chunk, aside)
    result = garbage_collect(store)
    assert chunk.exists() and not aside.exists()
    assert not stale_tmp.exists() and fresh_tmp.exists()
    assert result.removed_temp_files == 1
    assert verify(store, group=GroupName.parse("vm/8")).ok


def test_sweep_puts_back_a_chunk_touched_while_it_decided(store: Datastore):
    digest = write_snapshot(store, "vm/9", T0, blocks(70, 1))[0]
    path = store.chunks.path(digest)
    age(path, 3 * DAY)
    cutoff_ns = int((time.time() - DAY) * 1e9)
    store.chunks.touch(digest)  # a backup reused it after the sweep read its atime
    assert gc._remove_if_untouched(path, cutoff_ns) is False
    assert path.exists() and not list(path.parent.glob("*.gc_*"))
    age(path, 3 * DAY)
    assert gc._remove_if_untouched(path, cutoff_ns) is True
    assert not path.exists()


BACKUP_SCRIPT = r"""
import sys
from cairn.client.backup import BackupJob, run_backup
from cairn.client.spec import parse_backup_spec
from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace
store = Datastore.open(sys.argv[1], for_write=True)
run_backup(store, [parse_backup_spec("disk.img:-")], BackupJob(Namespace(), GroupName("vm", "live"), int(sys.argv[2])))
print("done", flush=True)
"""


def test_gc_during_a_long_backup_loses_nothing_it_needs(store: Datastore, tmp_path: Path):
    """A real backup process reuses chunks of a pruned snapshot; GC runs while it writes.

    The backup's marker claims it started 3 days ago and the chunks it already reused are
    aged to 2 days: the position of a backup that has been running for days. Without the
    writer cutoff, GC would sweep those chunks (no finished index mentions them).
    """
    from cairn.client.chunks import ChunkCodec
    from cairn.format.index import FixedIndex

    mib = 1024 * 1024
    data = b"".join(os.urandom(mib) + bytes(3 * mib) for _ in range(6))  # six 4 MiB chunks
    garbage = write_snapshot(store, "ct/garbage", T0, blocks(80, 3))
    store.forget_snapshot(ROOT, SnapshotName(GroupName.parse("ct/garbage"), T0))
    codec = ChunkCodec()
    reused = [codec.store(store.chunks, data[i:i + 4 * mib]).digest for i in range(0, len(data), 4 * mib)]
    for digest in reused + garbage:
        age(store.chunks.path(digest), 3 * DAY)

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-c", BACKUP_SCRIPT, str(store.base), str(T0)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(data[: 3 * 4 * mib])
        proc.stdin.flush()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:  # wait until the backup reused the first chunks
            if os.stat(store.chunks.path(reused[1])).st_atime > time.time() - DAY:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the backup never touched the chunks it reuses")
        markers = list(store.writer_markers_dir().iterdir())
        assert len(markers) == 1
        markers[0].write_text(f"{time.time() - 3 * DAY}\n")
        os.utime(markers[0], (time.time() - 3 * DAY, time.time() - 3 * DAY))
        for digest in reused:
            age(store.chunks.path(digest), 2 * DAY)
        for digest in garbage:
            age(store.chunks.path(digest), 6 * DAY)  # older than the writer's cutoff

        result = garbage_collect(store)
        assert result.oldest_writer is not None
        assert all(store.chunks.path(d).exists() for d in reused)
        assert not any(store.chunks.path(d).exists() for d in garbage)  # real garbage still goes

        proc.stdin.write(data[3 * 4 * mib:])
        proc.stdin.close()
        err = proc.stderr.read()
        assert proc.wait(timeout=120) == 0, err.decode()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
    name = SnapshotName(GroupName("vm", "live"), T0)
    report = verify(store, snapshot=name)
    assert report.ok, report.to_json()
    index = FixedIndex(store.archive_path(ROOT, name, "disk.img.fidx").read_bytes())
    assert b"".join(codec.load(store.chunks, d) for d in index.digests()) == data
