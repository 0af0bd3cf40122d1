"""prune, garbage-collect, verify, status, maintenance, protection and notes through the CLI."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from conftest import assert_one_line_error, run_cairn

from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.datastore.writer import BackupWriter
from cairn.format.blob import encode_blob

DAY = 86400
T0 = 1795312800  # 2026-11-22T02:00:00Z
UTC = {"TZ": "UTC"}


def cairn(store_path: Path, *args: str, **kw):
    env = {**UTC, **kw.pop("env", {})}
    return run_cairn(*args, "--repository", str(store_path), env=env, **kw)


def add_snapshot(store_path: Path, group: str, t: int, payload: bytes = b"", ns: str = "") -> None:
    """A complete snapshot holding one config blob, written in-process (fast)."""
    store = Datastore.open(store_path)
    with BackupWriter(store, Namespace.parse(ns), GroupName.parse(group), t) as writer:
        writer.add_blob("vm.conf.blob", encode_blob(payload or f"{group} {t}".encode()))
        writer.finish()


def snapshot_times(store_path: Path, group: str, ns: str = "") -> list[int]:
    extra = ("--ns", ns) if ns else ()
    rows = json.loads(cairn(store_path, "snapshot", "list", group, "--output-format", "json", *extra).out)
    return [r["backup-time"] for r in rows]


# -- prune ----------------------------------------------------------------------------------

def test_prune_dry_run_json_text_protected_then_real(store_path: Path):
    times = [T0 + i * DAY for i in range(6)]
    for t in times:
        add_snapshot(store_path, "vm/prune", t)
    protected = "vm/prune/" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(times[1]))
    cairn(store_path, "snapshot", "protected", "update", protected, "true")
    assert cairn(store_path, "snapshot", "protected", "show", protected).out.strip() == "true"

    rows = json.loads(cairn(store_path, "prune", "vm/prune", "--keep-last", "2", "--dry-run",
                            "--output-format", "json").out)
    assert rows == [
        {"backup-type": "vm", "backup-id": "prune", "backup-time": t, "keep": keep, "protected": t == times[1]}
        for t, keep in zip(times, [False, True, False, False, True, True])
    ]
    text = cairn(store_path, "prune", "vm/prune", "--keep-last", "2", "--dry-run").out
    assert "would remove" in text and "keep-last #1" in text and "protected" in text
    assert snapshot_times(store_path, "vm/prune") == times  # a dry run removes nothing

    result = cairn(store_path, "prune", "vm/prune", "--keep-last", "2")
    assert "removed 3 snapshots" in result.stderr
    assert snapshot_times(store_path, "vm/prune") == [times[1], times[4], times[5]]
    r = cairn(store_path, "snapshot", "forget", protected, check=False)
    assert_one_line_error(r, "protected")


def test_prune_daily_rule_and_reasons(store_path: Path):
    # three snapshots a day for three days: keep-daily 2 keeps the newest of the last two days
    times = [T0 + d * DAY + h * 3600 for d in range(3) for h in (0, 6, 12)]
    for t in times:
        add_snapshot(store_path, "ct/daily", t)
    rows = json.loads(cairn(store_path, "prune", "ct/daily", "--keep-daily", "2", "--dry-run",
                            "--output-format", "json").out)
    assert [r["backup-time"] for r in rows if r["keep"]] == [times[5], times[8]]


def test_prune_namespace_recursive_and_max_depth(store_path: Path):
    cairn(store_path, "namespace", "create", "site")
    cairn(store_path, "namespace", "create", "site/deep")
    for ns in ("site", "site/deep"):
        for i in range(3):
            add_snapshot(store_path, "host/h", T0 + i * 60, ns=ns)
    shallow = json.loads(cairn(store_path, "prune", "--ns", "site", "--recursive", "--max-depth", "0",
                               "--keep-last", "1", "--dry-run", "--output-format", "json").out)
    assert {r["ns"] for r in shallow} == {"site"} and len(shallow) == 3
    cairn(store_path, "prune", "--ns", "site", "--recursive", "--keep-last", "1")
    assert snapshot_times(store_path, "host/h", ns="site") == [T0 + 120]
    assert snapshot_times(store_path, "host/h", ns="site/deep") == [T0 + 120]


def test_prune_usage_errors(store_path: Path):
    r = cairn(store_path, "prune", "--keep-last", "1", check=False)
    assert_one_line_error(r, "--recursive")
    assert r.returncode == 2
    assert_one_line_error(cairn(store_path, "prune", "vm/nope", "--keep-last", "1", check=False), "does not exist")
    assert_one_line_error(cairn(store_path, "prune", "vm/x", "--keep-last", "0", check=False), "0")


def test_prune_simulator(store_path: Path):
    rows = json.loads(cairn(store_path, "prune", "--simulate", "2024-01-01T21:00..2024-03-31/1d",
                            "--keep-daily", "7", "--keep-weekly", "4", "--keep-monthly", "3",
                            "--output-format", "json").out)
    assert len(rows) == 91
    kept = [r for r in rows if r["keep"]]
    assert [r["rule"] for r in kept].count("keep-daily") == 7
    assert [r["rule"] for r in kept].count("keep-weekly") == 4
    assert len(kept) == 7 + 4 + 2  # January's last day is the third monthly period
    times = "\n".join(str(T0 + i * 3600) for i in range(10)).encode()
    out = run_cairn("prune", "--simulate-times", "-", "--keep-last", "3", "--output-format", "json",
                    input=times, env=UTC).out
    assert [r["keep"] for r in json.loads(out)] == [False] * 7 + [True] * 3


# -- verify, repair, garbage collection, status ----------------------------------------------

def test_verify_fails_on_a_bad_chunk_and_a_new_backup_repairs_it(store_path: Path, tmp_path: Path):
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(300_000))
    args = ("--backup-type", "vm", "--backup-id", "repair", "--crypt-mode", "none")
    cairn(store_path, "backup", f"disk.img:{image}", *args, "--backup-time", str(T0), env={"HOME": str(tmp_path)})
    from cairn.format.index import FixedIndex

    snap_dir = store_path / "vm" / "repair" / "2026-11-22T02:00:00Z"
    digest = FixedIndex((snap_dir / "disk.img.fidx").read_bytes()).digest(0).hex()
    chunk = store_path / ".chunks" / digest[:4] / digest
    raw = bytearray(chunk.read_bytes())
    raw[len(raw) // 2] ^= 0x10
    chunk.write_bytes(bytes(raw))

    r = cairn(store_path, "verify", "vm/repair", check=False)
    assert_one_line_error(r, "verification failed", "vm/repair/2026-11-22T02:00:00Z")
    assert "failed" in r.out
    assert chunk.with_name(digest + ".0.bad").exists() and not chunk.exists()
    rows = json.loads(cairn(store_path, "snapshot", "list", "vm/repair", "--output-format", "json").out)
    assert rows[0]["verification"]["state"] == "failed" and rows[0]["verification"]["upid"].startswith("UPID:")

    cairn(store_path, "backup", f"disk.img:{image}", *args, "--backup-time", str(T0 + 60), env={"HOME": str(tmp_path)})
    assert chunk.exists()
    report = json.loads(cairn(store_path, "verify", "vm/repair", "--output-format", "json").out)
    assert report["state"] == "ok" and report["snapshots-ok"] == 2
    rows = json.loads(cairn(store_path, "snapshot", "list", "vm/repair", "--output-format", "json").out)
    assert [r["verification"]["state"] for r in rows] == ["ok", "ok"]


def test_gc_and_status(fresh_store: Datastore, tmp_path: Path):
    path = fresh_store.base
    add_snapshot(path, "vm/gc", T0, payload=b"keep " * 1000)
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(200_000))
    cairn(path, "backup", f"disk.img:{image}", "--backup-type", "vm", "--backup-id", "gone",
          "--crypt-mode", "none", "--backup-time", str(T0), env={"HOME": str(tmp_path)})
    cairn(path, "snapshot", "forget", "vm/gone/2026-11-22T02:00:00Z")
    for prefix in os.scandir(path / ".chunks"):
        for entry in os.scandir(prefix.path):
            st = entry.stat()
            os.utime(entry.path, (time.time() - 2 * DAY, st.st_mtime))

    dry = json.loads(cairn(path, "garbage-collect", "--dry-run", "--output-format", "json").out)
    assert dry["removed-chunks"] == 1 and dry["dry-run"] is True
    done = json.loads(cairn(path, "garbage-collect", "--output-format", "json").out)
    assert done["removed-chunks"] == 1 and done["disk-chunks"] == 0 and done["removed-bytes"] > 200_000
    assert json.loads((path / ".gc-status").read_text())["removed-chunks"] == 1

    cairn(path, "verify")
    status = json.loads(cairn(path, "status", "--output-format", "json").out)
    assert status["total"] > 0 and 0 < status["avail"] <= status["total"] and status["used"] > 0
    assert status["counts"]["vm"] == {"groups": 2, "snapshots": 1}  # forget leaves the group, as PBS
    assert status["chunks"]["count"] == 0
    assert status["gc-status"]["removed-chunks"] == 1
    assert status["last-verify"]["state"] == "ok" and status["last-verify"]["snapshots-ok"] == 1
    text = cairn(path, "status").out
    assert "last GC" in text and "1 chunks removed" in text and "last verify" in text


# -- protection, notes, locks, maintenance ---------------------------------------------------

def test_snapshot_and_group_notes(store_path: Path):
    add_snapshot(store_path, "ct/notes", T0)
    snap = "ct/notes/2026-11-22T02:00:00Z"
    cairn(store_path, "snapshot", "notes", "update", snap, "first line\nsecond line\n")
    assert cairn(store_path, "snapshot", "notes", "show", snap).out == "first line\nsecond line\n"
    rows = json.loads(cairn(store_path, "snapshot", "list", "ct/notes", "--output-format", "json").out)
    assert rows[0]["comment"] == "first line"
    manifest = Datastore.open(store_path).complete_snapshot(Namespace(), SnapshotName.parse(snap)).manifest
    assert manifest.unprotected["notes"] == "first line\nsecond line\n"
    run_cairn("group", "notes", "update", "ct/notes", "--repository", str(store_path), input=b"group text\n")
    assert (store_path / "ct" / "notes" / "notes").read_text() == "group text\n"
    assert cairn(store_path, "group", "notes", "show", "ct/notes").out == "group text\n"
    assert_one_line_error(cairn(store_path, "group", "notes", "show", "ct/none", check=False), "does not exist")


def test_snapshot_in_use_is_not_removed_by_prune(store_path: Path):
    for i in range(2):
        add_snapshot(store_path, "vm/inuse", T0 + i)
    store = Datastore.open(store_path)
    with store.lock_snapshot(Namespace(), SnapshotName(GroupName.parse("vm/inuse"), T0), exclusive=False):
        r = cairn(store_path, "prune", "vm/inuse", "--keep-last", "1", check=False)
    assert_one_line_error(r, "kept", "in use")
    assert snapshot_times(store_path, "vm/inuse") == [T0, T0 + 1]


def test_second_gc_is_refused_while_one_runs(store_path: Path):
    with Datastore.open(store_path).lock_gc():
        r = cairn(store_path, "garbage-collect", check=False)
    assert_one_line_error(r, "already running")


def test_maintenance_modes(fresh_store: Datastore, tmp_path: Path):
    path = fresh_store.base
    add_snapshot(path, "vm/m", T0)
    conf = tmp_path / "a.conf"
    conf.write_text("x\n")
    backup = ("backup", f"a.conf:{conf}", "--backup-type", "vm", "--backup-id", "m", "--crypt-mode", "none")

    cairn(path, "maintenance", "set", "read-only")
    assert cairn(path, "maintenance", "show").out.strip() == "read-only"
    for args in (backup + ("--backup-time", str(T0 + 60)),
                 ("prune", "vm/m", "--keep-last", "1"),
                 ("garbage-collect",),
                 ("verify",),
                 ("snapshot", "protected", "update", "vm/m/2026-11-22T02:00:00Z", "true"),
                 ("snapshot", "notes", "update", "vm/m/2026-11-22T02:00:00Z", "n"),
                 ("snapshot", "forget", "vm/m/2026-11-22T02:00:00Z")):
        assert_one_line_error(cairn(path, *args, check=False, env={"HOME": str(tmp_path)}), "'read-only'")
    cairn(path, "status")
    cairn(path, "prune", "vm/m", "--keep-last", "1", "--dry-run")
    cairn(path, "garbage-collect", "--dry-run")

    cairn(path, "maintenance", "set", "offline")
    for args in (("status",), ("snapshot", "list"), ("prune", "vm/m", "--keep-last", "1", "--dry-run")):
        assert_one_line_error(cairn(path, *args, check=False), "'offline'")
    cairn(path, "maintenance", "set", "none")
    assert cairn(path, "maintenance", "show").out.strip() == "none"
    cairn(path, *backup, "--backup-time", str(T0 + 60), env={"HOME": str(tmp_path)})


@pytest.mark.parametrize("args, fragment", [
    (("verify", "--outdated-after", "3"), "--ignore-verified"),
    (("snapshot", "protected", "update", "vm/x/2026-11-22T02:00:00Z", "maybe"), "maybe"),
    (("maintenance", "set", "sleepy"), "sleepy"),
])
def test_usage_errors_are_one_line(store_path: Path, args, fragment):
    assert_one_line_error(cairn(store_path, *args, check=False), fragment)
