"""The store on disk follows PBS's layout (chunk_store.rs, datastore.rs, backup_info.rs)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.datastore.writer import BackupWriter
from cairn.errors import LockError, NotFoundError, StoreError, UsageError
from cairn.format.blob import decode_blob, encode_blob


def test_init_creates_65536_prefix_dirs_and_lock(store_path: Path):
    names = sorted(os.listdir(store_path / ".chunks"))
    assert len(names) == 65536
    assert names[0] == "0000" and names[-1] == "ffff" and "beef" in names
    assert (store_path / ".lock").is_file()


def test_init_refuses_non_empty_dir(tmp_path: Path):
    (tmp_path / "x").write_text("hi")
    with pytest.raises(StoreError, match="not an empty directory"):
        Datastore.create(tmp_path)


def test_open_refuses_non_store(tmp_path: Path):
    with pytest.raises(StoreError, match="not a datastore"):
        Datastore.open(tmp_path)
    with pytest.raises(StoreError, match="cairn init"):
        Datastore.open(tmp_path / "missing")


def test_chunk_path_and_insert_is_noop_when_present(store: Datastore):
    digest = bytes.fromhex("ab" * 32)
    raw = encode_blob(b"payload")
    assert store.chunks.insert(digest, raw) is True
    path = store.base / ".chunks" / "abab" / ("ab" * 32)
    assert path.read_bytes() == raw
    mtime = path.stat().st_mtime_ns
    assert store.chunks.insert(digest, raw) is False
    assert path.stat().st_mtime_ns == mtime
    assert [p for p in os.listdir(path.parent)] == ["ab" * 32]  # no temp file left behind


def test_insert_replaces_truncated_chunk(store: Datastore):
    digest = bytes(32)
    store.chunks.path(digest).write_bytes(b"")
    raw = encode_blob(b"x" * 10)
    assert store.chunks.insert(digest, raw) is True
    assert decode_blob(store.chunks.read(digest)) == b"x" * 10


def test_corrupt_chunk_renamed_with_next_free_counter(store: Datastore):
    digest = bytes([1]) * 32
    for expected in ("0", "1"):
        store.chunks.insert(digest, encode_blob(b"a"))
        moved = store.chunks.rename_corrupt(digest)
        assert moved.name == f"{digest.hex()}.{expected}.bad"
    assert not store.chunks.exists(digest)


def write_snapshot(store: Datastore, ns: Namespace, group: GroupName, t: int) -> SnapshotName:
    with BackupWriter(store, ns, group, t) as writer:
        writer.add_blob("test.conf.blob", encode_blob(b"cfg"))
        writer.finish()
    return writer.name


def test_snapshot_layout_names_and_owner(fresh_store: Datastore):
    store = fresh_store
    store.create_namespace(Namespace.parse("a"))
    store.create_namespace(Namespace.parse("a/b"))
    ns = Namespace.parse("a/b")
    name = write_snapshot(store, ns, GroupName("vm", "100"), 1795312800)
    snap_dir = store.base / "ns" / "a" / "ns" / "b" / "vm" / "100" / "2026-11-22T02:00:00Z"
    assert str(name) == "vm/100/2026-11-22T02:00:00Z"
    assert sorted(os.listdir(snap_dir)) == ["index.json.blob", "test.conf.blob"]
    assert (snap_dir.parent / "owner").read_text() == "root@pam\n"
    assert store.list_groups(ns) == [GroupName("vm", "100")]
    assert [str(n) for n in store.list_namespaces()] == ["", "a", "a/b"]


def test_backup_into_missing_namespace_is_refused(store: Datastore):
    with pytest.raises(NotFoundError, match="namespace create"):
        write_snapshot(store, Namespace.parse("nope"), GroupName("vm", "1"), 1)


def test_snapshot_without_manifest_is_incomplete(store: Datastore):
    group = GroupName("ct", "101")
    write_snapshot(store, Namespace(), group, 1000)
    (store.group_path(Namespace(), group) / "1970-01-01T00:20:00Z").mkdir()
    infos = store.list_snapshots(Namespace(), group)
    assert [i.complete for i in infos] == [True, False]
    with pytest.raises(NotFoundError, match="incomplete"):
        store.complete_snapshot(Namespace(), infos[1].name)


def test_failed_backup_leaves_nothing(store: Datastore):
    group = GroupName("vm", "7")
    with pytest.raises(RuntimeError):
        with BackupWriter(store, Namespace(), group, 5000) as writer:
            writer.add_blob("a.conf.blob", encode_blob(b"x"))
            raise RuntimeError("source failed")
    assert not store.group_path(Namespace(), group).exists()  # a group it created goes too
    write_snapshot(store, Namespace(), group, 4000)
    with pytest.raises(RuntimeError):
        with BackupWriter(store, Namespace(), group, 5000):
            raise RuntimeError("source failed")
    assert [i.name.backup_time for i in store.list_snapshots(Namespace(), group)] == [4000]


def test_backup_time_must_increase_and_group_lock(store: Datastore):
    group = GroupName("vm", "8")
    write_snapshot(store, Namespace(), group, 5000)
    with pytest.raises(UsageError, match="not newer"):
        write_snapshot(store, Namespace(), group, 5000)
    with store.lock_group(Namespace(), group):
        with pytest.raises(LockError, match="locked"):
            store.lock_group(Namespace(), group)


def test_forget_respects_protection_and_readers(store: Datastore):
    group = GroupName("host", "pve")
    name = write_snapshot(store, Namespace(), group, 100)
    store.set_protected(Namespace(), name, True)
    assert (store.snapshot_path(Namespace(), name) / ".protected").exists()
    with pytest.raises(UsageError, match="protected"):
        store.forget_snapshot(Namespace(), name)
    store.set_protected(Namespace(), name, False)
    with store.lock_snapshot(Namespace(), name, exclusive=False):
        with pytest.raises(LockError):
            store.forget_snapshot(Namespace(), name)
    store.forget_snapshot(Namespace(), name)
    assert store.list_snapshots(Namespace(), group) == []


@pytest.mark.parametrize("text", ["vm", "vm/", "xx/1", "vm/a b", "vm/1/2025-13-01", "vm/1/2025-01-01T00:00:00"])
def test_bad_names_are_usage_errors(text):
    from cairn.datastore.names import parse_group_or_snapshot

    with pytest.raises(UsageError):
        parse_group_or_snapshot(text)


def test_namespace_limits():
    with pytest.raises(UsageError, match="deeper"):
        Namespace.parse("/".join("abcdefgh"))
    with pytest.raises(UsageError):
        Namespace.parse("a/../b")
    assert str(Namespace.parse("/a/b/")) == "a/b"
