"""--change-detection-mode: split archives, and unchanged files reused without being read."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cairn
from pxar_tree_helpers import snapshot_tree

from cairn.client.backup import BackupJob, run_backup
from cairn.client.chunks import ChunkCodec
from cairn.client.pxar.create import TreeOptions
from cairn.client.pxar.reader import ChunkReader, StreamReader
from cairn.client.spec import parse_backup_spec
from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.format.pxar import Decoder, EntryKind

T0 = 1795312800  # 2026-11-22T02:00:00Z
MTIME_NS = 1_700_000_000_000_000_000


def make_source(root: Path, seed: int = 5) -> None:
    """Small and medium files in a few directories, with fixed mtimes; no hardlinks."""
    rng = random.Random(seed)
    for i in range(60):
        directory = root / ("", "docs", "docs/deep", "media")[i % 4]
        directory.mkdir(parents=True, exist_ok=True)
        size = rng.choice((0, 100, 5000, 80_000, 400_000, 1_500_000))
        (directory / f"file-{i:03d}").write_bytes(rng.randbytes(size))
    (root / "big.bin").write_bytes(rng.randbytes(9_000_000))
    os.symlink("big.bin", root / "link")
    for path in sorted(root.rglob("*"), reverse=True):
        os.utime(path, ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)


def file_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


class ReadCounter:
    """Counts bytes read with os.pread from files under one directory."""

    def __init__(self, monkeypatch, root: Path) -> None:
        self.root = str(root.resolve())
        self.bytes = 0
        original = os.pread

        def pread(fd, size, offset):
            data = original(fd, size, offset)
            if os.readlink(f"/proc/self/fd/{fd}").startswith(self.root):
                self.bytes += len(data)
            return data

        monkeypatch.setattr(os, "pread", pread)


def backup(store_path: Path, source: Path, mode: str, backup_id: str, time: int, *extra: str):
    return run_cairn("backup", f"root.pxar:{source}", "--repository", str(store_path), "--backup-id", backup_id,
                     "--backup-time", str(time), "--change-detection-mode", mode, *extra)


def backup_in_process(store_path: Path, source: Path, mode: str, backup_id: str, time: int):
    job = BackupJob(Namespace(), GroupName("host", backup_id), time)
    job.tree_options = TreeOptions(change_detection_mode=mode)
    return run_backup(Datastore.open(store_path), [parse_backup_spec(f"root.pxar:{source}")], job)


def restore(store_path: Path, snapshot: str, target: Path, *extra: str):
    return run_cairn("restore", snapshot, "root.pxar", str(target), "--repository", str(store_path), *extra)


def snapshot_name(backup_id: str, time: int) -> str:
    return str(SnapshotName(GroupName("host", backup_id), time))


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cdm") / "src"
    make_source(root)
    return root


@pytest.fixture(scope="module")
def reference(store_path, source) -> str:
    """A first metadata-mode backup: no previous snapshot, so every file is read."""
    result = backup(store_path, source, "metadata", "meta", T0)
    assert "no previous snapshot" in result.stderr
    return snapshot_name("meta", T0)


def test_split_archive_names_and_no_catalog(store_path, reference):
    snap_dir = store_path / "host" / "meta" / "2026-11-22T02:00:00Z"
    assert sorted(os.listdir(snap_dir)) == ["index.json.blob", "root.mpxar.didx", "root.ppxar.didx"]


def test_unchanged_rebackup_reads_no_file_content(store_path, source, reference, monkeypatch, tmp_path):
    counter = ReadCounter(monkeypatch, source)
    result = backup_in_process(store_path, source, "metadata", "meta", T0 + 10)
    assert counter.bytes == 0
    assert result.trees is not None
    stats, reuse = result.trees.stats[0], result.trees.reuse_stats[0]
    assert stats.content_bytes_read == 0
    assert reuse.files_reused == 61 and reuse.files_reencoded == 0
    # Only the metadata archive and the two payload markers (16 bytes each) are new chunks.
    assert result.bytes_new < 100_000
    out = tmp_path / "out"
    restore(store_path, snapshot_name("meta", T0 + 10), out)
    assert snapshot_tree(out) == snapshot_tree(source)


def test_changed_file_is_read_again_and_mixed_tree_restores_identically(
    store_path, source, reference, monkeypatch, tmp_path
):
    changed_source = tmp_path / "src"
    run_cairn_copy(source, changed_source)
    victim = changed_source / "docs" / "file-001"
    victim.write_bytes(b"new contents " * 1000)
    backup(store_path, changed_source, "metadata", "mixed", T0)  # reference for this copy
    victim.write_bytes(b"changed again " * 2000)
    (changed_source / "media" / "new-file").write_bytes(os.urandom(300_000))
    (changed_source / "docs" / "deep" / "file-002").unlink()
    counter = ReadCounter(monkeypatch, changed_source)
    result = backup_in_process(store_path, changed_source, "metadata", "mixed", T0 + 10)
    assert result.trees is not None
    reuse = result.trees.reuse_stats[0]
    assert reuse.files_reused > 0
    assert 0 < counter.bytes < file_bytes(changed_source)
    assert counter.bytes >= victim.stat().st_size
    out = tmp_path / "out"
    restore(store_path, snapshot_name("mixed", T0 + 10), out)
    assert snapshot_tree(out) == snapshot_tree(changed_source)
    assert (out / "docs" / "file-001").read_bytes() == victim.read_bytes()


def test_file_whose_xattr_or_mode_alone_changed_is_read_again(store_path, source, monkeypatch, tmp_path):
    """PBS compares the whole metadata: same mtime and size are not enough."""
    changed_source = tmp_path / "src"
    run_cairn_copy(source, changed_source)
    backup(store_path, changed_source, "metadata", "attrs", T0)
    files = sorted(p for p in changed_source.rglob("file-*") if p.stat().st_size > 0)
    tagged, chmodded = files[0], files[1]
    os.setxattr(tagged, "user.note", b"added later")
    os.chmod(chmodded, 0o600)
    assert (tagged.stat().st_mtime_ns, chmodded.stat().st_mtime_ns) == (MTIME_NS, MTIME_NS)
    counter = ReadCounter(monkeypatch, changed_source)
    result = backup_in_process(store_path, changed_source, "metadata", "attrs", T0 + 10)
    assert result.trees is not None
    reuse = result.trees.reuse_stats[0]
    assert reuse.files_reused + reuse.files_reencoded == 59
    assert counter.bytes >= tagged.stat().st_size + chmodded.stat().st_size
    out = tmp_path / "out"
    restore(store_path, snapshot_name("attrs", T0 + 10), out)
    assert snapshot_tree(out) == snapshot_tree(changed_source)
    assert os.getxattr(out / tagged.relative_to(changed_source), "user.note") == b"added later"


def run_cairn_copy(source: Path, target: Path) -> None:
    """Copy a tree keeping mtimes (cp -a)."""
    import shutil

    shutil.copytree(source, target, symlinks=True)
    for path in sorted(target.rglob("*"), reverse=True):
        os.utime(path, ns=(MTIME_NS, MTIME_NS), follow_symlinks=False)
    os.utime(target, ns=(MTIME_NS, MTIME_NS))


def test_legacy_data_and_metadata_restore_identically(store_path, source, reference, tmp_path):
    backup(store_path, source, "legacy", "legacy", T0)
    backup(store_path, source, "data", "data", T0)
    trees = []
    for backup_id, time in (("legacy", T0), ("data", T0), ("meta", T0), ("meta", T0 + 10)):
        out = tmp_path / f"{backup_id}-{time}"
        if not (store_path / "host" / backup_id / SnapshotName(GroupName("host", backup_id), time).time_string).exists():
            backup(store_path, source, "metadata", backup_id, time)
        restore(store_path, snapshot_name(backup_id, time), out)
        trees.append(snapshot_tree(out))
    assert all(tree == snapshot_tree(source) for tree in trees)
    legacy_dir = store_path / "host" / "legacy" / "2026-11-22T02:00:00Z"
    assert sorted(os.listdir(legacy_dir)) == ["catalog.pcat1.didx", "index.json.blob", "root.pxar.didx"]


def test_split_archives_decode_with_the_codec(store_path, source, reference):
    meta_time = T0 + 10 if (store_path / "host" / "meta" / "2026-11-22T02:00:10Z").exists() else T0
    store = Datastore.open(store_path)
    name = SnapshotName(GroupName("host", "meta"), meta_time)
    codec = ChunkCodec()
    meta = ChunkReader(store.chunks, store.open_index(Namespace(), name, "root.mpxar.didx"), codec)
    payload = ChunkReader(store.chunks, store.open_index(Namespace(), name, "root.ppxar.didx"), codec)
    decoder = Decoder(StreamReader(meta.stream()).read, StreamReader(payload.stream()).read)
    files = 0
    for entry in decoder:
        if entry.kind is EntryKind.FILE:
            assert entry.payload_offset is not None
            data = b"".join(decoder.iter_content())
            assert data == (source / entry.path.decode().lstrip("/")).read_bytes(), entry.path
            files += 1
    assert decoder.format_version == 2
    assert files == 61


def test_excludes_go_into_the_prelude(store_path, source):
    backup(store_path, source, "data", "excl", T0, "--exclude", "media")
    store = Datastore.open(store_path)
    name = SnapshotName(GroupName("host", "excl"), T0)
    meta = ChunkReader(store.chunks, store.open_index(Namespace(), name, "root.mpxar.didx"), ChunkCodec())
    decoder = Decoder(StreamReader(meta.stream()).read)
    names = [entry.path for entry in decoder]
    assert json.loads(decoder.prelude) == {"exclude-patterns": "media\n"}
    assert b"/.pxarexclude-cli" not in names and not any(n.startswith(b"/media") for n in names)


def test_previous_legacy_snapshot_is_no_reference(store_path, source, tmp_path):
    backup(store_path, source, "legacy", "switch", T0)
    result = backup(store_path, source, "metadata", "switch", T0 + 10)
    assert "has no root.mpxar.didx: every file is read" in result.stderr
    out = tmp_path / "out"
    restore(store_path, snapshot_name("switch", T0 + 10), out)
    assert snapshot_tree(out) == snapshot_tree(source)


def test_split_archive_to_stdout_is_refused(store_path, reference):
    result = run_cairn("restore", reference, "root.pxar", "-", "--repository", str(store_path), check=False)
    assert_one_line_error(result, "split archive")


def test_unknown_mode_is_a_usage_error(store_path, source):
    result = run_cairn("backup", f"root.pxar:{source}", "--repository", str(store_path),
                       "--change-detection-mode", "fast", check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr


def test_snapshot_that_failed_verification_is_no_reference(store_path, source, monkeypatch):
    backup(store_path, source, "metadata", "failedref", T0)
    store = Datastore.open(store_path)
    name = SnapshotName(GroupName("host", "failedref"), T0)
    store.update_manifest_unprotected(Namespace(), name, lambda u: u.update(verify_state={"state": "failed", "upid": "x"}))
    counter = ReadCounter(monkeypatch, source)
    result = backup_in_process(store_path, source, "metadata", "failedref", T0 + 10)
    assert counter.bytes == file_bytes(source)  # every file read again, none trusted from the bad snapshot
    assert result.trees.stats[0].content_bytes_read == file_bytes(source)
    assert all(r.files_reused == 0 for r in result.trees.reuse_stats)
