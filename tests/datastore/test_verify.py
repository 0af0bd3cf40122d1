"""Verify finds a flipped byte in any chunk, index, blob or manifest, and repair works."""

from __future__ import annotations

import struct
import zlib

import pytest
from store_helpers import DAY, blocks, write_snapshot

from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.datastore.upid import upid_starttime
from cairn.datastore.verify import verify
from cairn.format.blob import encode_blob
from cairn.format.crypt import CryptConfig

T0 = 1795312800
ROOT = Namespace()


def snap(group: str, t: int = T0) -> SnapshotName:
    return SnapshotName(GroupName.parse(group), t)


def flip(path, offset: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def state_of(store: Datastore, name: SnapshotName) -> dict:
    return store.complete_snapshot(ROOT, name).manifest.unprotected.get("verify_state")


def test_clean_snapshot_verifies_and_records_pbs_verify_state(store: Datastore):
    write_snapshot(store, "vm/clean", T0, blocks(1, 4))
    report = verify(store, snapshot=snap("vm/clean"), now=T0 + 100)
    assert report.ok and report.count("ok") == 1 and report.chunks_verified == 4
    state = state_of(store, snap("vm/clean"))
    assert state["state"] == "ok" and upid_starttime(state["upid"]) == T0 + 100
    assert store.verify_status_path().exists()


def test_shared_chunks_are_checked_once_per_run(store: Datastore):
    data = blocks(2, 5)
    write_snapshot(store, "vm/shared", T0, data)
    write_snapshot(store, "vm/shared", T0 + 60, data + blocks(3, 1))
    report = verify(store, group=GroupName.parse("vm/shared"))
    assert report.count("ok") == 2 and report.chunks_verified == 6


@pytest.mark.parametrize("where", ["crc", "payload-with-good-crc", "truncated"])
def test_corrupt_chunk_is_found_renamed_and_repaired_by_the_next_backup(store: Datastore, where: str):
    group = f"vm/chunk-{where}"
    data = blocks(10 + len(where), 3)
    digests = write_snapshot(store, group, T0, data)
    path = store.chunks.path(digests[1])
    raw = bytearray(path.read_bytes())
    if where == "crc":
        raw[-1] ^= 0x40
    elif where == "payload-with-good-crc":
        # a chunk whose CRC was recomputed over changed content: only the digest catches it
        bad_payload = encode_blob(data[1][:-1] + b"X", compress=False)
        raw = bytearray(bad_payload)
    else:
        raw = raw[: len(raw) // 2]
    path.write_bytes(bytes(raw))
    if where == "payload-with-good-crc":
        assert struct.unpack_from("<I", raw, 8)[0] == zlib.crc32(raw[12:])

    report = verify(store, group=GroupName.parse(group))
    assert not report.ok and report.chunks_corrupt == 1
    assert state_of(store, snap(group))["state"] == "failed"
    assert not path.exists() and path.with_name(path.name + ".0.bad").exists()
    assert len(report.failed[0].errors) == 1
    assert report.failed[0].errors[0].startswith(f"disk.img.fidx: chunk {digests[1].hex()}: ")

    # the next backup of the same data writes the chunk again, and everything verifies
    write_snapshot(store, group, T0 + 60, data)
    assert path.exists()
    report = verify(store, group=GroupName.parse(group))
    assert report.ok and report.count("ok") == 2


def test_second_corruption_gets_the_next_free_bad_name(store: Datastore):
    digests = write_snapshot(store, "vm/twice", T0, blocks(20, 1))
    path = store.chunks.path(digests[0])
    for expected in (".0.bad", ".1.bad"):
        flip(path, 20)
        assert not verify(store, snapshot=snap("vm/twice")).ok
        assert path.with_name(path.name + expected).exists()
        store.chunks.insert(digests[0], encode_blob(blocks(20, 1)[0]))


@pytest.mark.parametrize("offset, reason", [
    (4096 + 5, "does not match the manifest"),   # an entry (digest) of the index
    (40, "does not match its header"),           # the header's checksum
    (64, "wrong length"),                        # the header's size field
    (200, "reserved header bytes"),              # the reserved, zero part of the header
])
def test_flipped_byte_in_an_index_is_found(store: Datastore, offset: int, reason: str):
    group = f"vm/index-{offset}"
    write_snapshot(store, group, T0, blocks(30 + offset, 2))
    index = store.archive_path(ROOT, snap(group), "disk.img.fidx")
    flip(index, offset)
    report = verify(store, snapshot=snap(group))
    assert not report.ok
    assert reason in report.failed[0].errors[0] and report.failed[0].errors[0].startswith("disk.img.fidx: ")
    assert state_of(store, snap(group))["state"] == "failed"


def test_flipped_byte_in_a_blob_is_found(store: Datastore):
    write_snapshot(store, "vm/blob", T0, blocks(40, 1))
    flip(store.archive_path(ROOT, snap("vm/blob"), "vm.conf.blob"), 30)
    report = verify(store, snapshot=snap("vm/blob"))
    assert report.failed[0].errors == ["vm.conf.blob: checksum does not match the manifest"]


def test_flipped_byte_in_a_manifest_is_found(store: Datastore):
    write_snapshot(store, "vm/manifest", T0, blocks(41, 1))
    manifest = store.snapshot_path(ROOT, snap("vm/manifest")) / "index.json.blob"
    flip(manifest, len(manifest.read_bytes()) - 3)
    report = verify(store, group=GroupName.parse("vm/manifest"))
    assert not report.ok and "manifest" in report.failed[0].errors[0]
    assert store.snapshot(ROOT, snap("vm/manifest")).finished  # still a finished snapshot for prune


def test_missing_chunk_fails(store: Datastore):
    digests = write_snapshot(store, "vm/missing", T0, blocks(42, 2))
    store.chunks.path(digests[0]).unlink()
    report = verify(store, snapshot=snap("vm/missing"))
    assert not report.ok and report.chunks_corrupt == 1


def test_ignore_verified_and_outdated_after(store: Datastore):
    write_snapshot(store, "vm/again", T0, blocks(43, 1))
    verify(store, snapshot=snap("vm/again"), now=T0 + 10)
    skipped = verify(store, snapshot=snap("vm/again"), ignore_verified=True, now=T0 + 5 * DAY)
    assert skipped.snapshots[0].state == "skipped" and skipped.snapshots[0].reason == "verified before"
    not_yet = verify(store, snapshot=snap("vm/again"), ignore_verified=True, outdated_after=5, now=T0 + 5 * DAY + 20)
    assert not_yet.snapshots[0].state == "skipped"
    outdated = verify(store, snapshot=snap("vm/again"), ignore_verified=True, outdated_after=5, now=T0 + 6 * DAY + 20)
    assert outdated.snapshots[0].state == "ok"


def test_locked_and_incomplete_snapshots_are_skipped_not_failed(store: Datastore):
    write_snapshot(store, "vm/busy", T0, blocks(44, 1))
    store.snapshot_path(ROOT, snap("vm/busy", T0 + 60)).mkdir()  # an interrupted backup
    with store.lock_snapshot(ROOT, snap("vm/busy"), exclusive=True):
        report = verify(store, group=GroupName.parse("vm/busy"))
    assert report.ok
    assert [(s.state, s.reason.split(" ")[0]) for s in report.snapshots] == [("skipped", "incomplete"), ("skipped", "locked")]


def test_encrypted_chunks_crc_only_without_key_full_check_with_key(store: Datastore):
    key = CryptConfig(bytes(range(32)))
    data = blocks(45, 2)
    digests = write_snapshot(store, "vm/crypt", T0, data, cipher=key)
    assert verify(store, snapshot=snap("vm/crypt")).ok
    assert verify(store, snapshot=snap("vm/crypt"), cipher=key).ok
    # a chunk re-encrypted from other content, with a valid CRC: only the key can tell
    path = store.chunks.path(digests[0])
    path.write_bytes(encode_blob(data[0][:-1] + b"Y", key))
    assert verify(store, snapshot=snap("vm/crypt")).ok
    report = verify(store, snapshot=snap("vm/crypt"), cipher=key)
    assert not report.ok and report.chunks_corrupt == 1
    # a tampered signed part of the manifest is found with the key
    def tamper(unprotected: dict) -> None:
        unprotected["verify_state"] = None

    store.update_manifest_unprotected(ROOT, snap("vm/crypt"), tamper)  # unsigned part: fine
    manifest = store.complete_snapshot(ROOT, snap("vm/crypt")).manifest
    manifest.files[0].size += 1
    from cairn.datastore.fsutil import replace_file

    replace_file(store.snapshot_path(ROOT, snap("vm/crypt")) / "index.json.blob", encode_blob(manifest.to_bytes()))
    report = verify(store, snapshot=snap("vm/crypt"), cipher=key)
    assert any("signature" in e for e in report.failed[0].errors)


def test_store_wide_verify_covers_namespaces(store: Datastore):
    store.create_namespace(Namespace.parse("site"))
    write_snapshot(store, "ct/deep", T0, blocks(46, 1), ns=Namespace.parse("site"))
    report = verify(store, ns=Namespace.parse("site"))
    assert [(str(s.ns), str(s.name.group)) for s in report.snapshots] == [("site", "ct/deep")]
    assert report.ok
