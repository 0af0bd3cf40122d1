"""Directory trees end to end through the real command line: backup, restore, catalog."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest
from conftest import assert_one_line_error, chunk_files, run_cairn
from pxar_tree_helpers import (
    DEPTH,
    LONG_NAME,
    MIB,
    NON_UTF8_NAME,
    UNICODE_NAME,
    have_setfacl,
    make_tree,
    snapshot_tree,
)

from cairn.client.pxar.create import Archiver, TreeOptions

T0 = 1795312800  # 2026-11-22T02:00:00Z
SNAP = "host/tree/2026-11-22T02:00:00Z"

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="the full-metadata tree needs root (mknod, chown)")


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src") / "tree"
    make_tree(root)
    return root


@pytest.fixture(scope="module")
def backed_up(store_path, tree) -> str:
    result = run_cairn("backup", f"root.pxar:{tree}", "--repository", str(store_path),
                       "--backup-id", "tree", "--backup-time", str(T0))
    assert result.out.strip() == SNAP
    assert "warning" not in result.stderr, result.stderr
    return SNAP


def restore(store_path, *args, check=True):
    return run_cairn("restore", *args, "--repository", str(store_path), check=check)


def test_round_trip_keeps_every_kind_of_entry_and_its_metadata(store_path, tree, backed_up, tmp_path):
    snap_dir = store_path / "host" / "tree" / "2026-11-22T02:00:00Z"
    assert sorted(os.listdir(snap_dir)) == ["catalog.pcat1.didx", "index.json.blob", "root.pxar.didx"]
    target = tmp_path / "out"
    restore(store_path, backed_up, "root.pxar", str(target))

    before, after = snapshot_tree(tree), snapshot_tree(target)
    assert before.keys() == after.keys()
    for path in before:
        assert after[path] == before[path], path
    # The checks above are only as good as the tree: make sure it holds what it should.
    kinds = {stat.S_IFMT(info["mode"]) for key, info in before.items() if isinstance(info, dict)}
    assert kinds == {stat.S_IFDIR, stat.S_IFREG, stat.S_IFLNK, stat.S_IFCHR, stat.S_IFBLK, stat.S_IFIFO}
    assert [b"hardlink-outside-links", b"links/first", b"links/second"] in before[b"<hardlink groups>"]
    assert before[b"capable"]["xattrs"]["security.capability"]
    assert before[b"setuid"]["mode"] & stat.S_ISUID and before[b"sticky"]["mode"] & stat.S_ISVTX
    assert before[b"owned-link"]["uid"] == 4321
    assert NON_UTF8_NAME in before and LONG_NAME in before and UNICODE_NAME + b"/inner" in before
    assert sum(1 for path in before if path.startswith(b"deep/")) == DEPTH + 1
    if have_setfacl():
        assert "system.posix_acl_access" in before[b"acl-file"]["xattrs"]
        assert "system.posix_acl_default" in before[b"acl-dir"]["xattrs"]
    assert not (target / "socket").exists()
    # The 64 MiB sparse file comes back sparse.
    sparse = os.stat(target / "sparse.img")
    assert sparse.st_size == 64 * MIB and sparse.st_blocks * 512 < 2 * MIB


def test_raw_archive_on_stdout_is_the_archive_the_encoder_writes(store_path, tree, backed_up):
    raw = restore(store_path, backed_up, "root.pxar", "-").stdout
    expected = io.BytesIO()
    Archiver(str(tree), expected.write, None, TreeOptions(), warn=lambda message: None).run()
    assert raw == expected.getvalue()


def test_unchanged_rebackup_writes_no_chunk_file(store_path, tree, backed_up):
    before = chunk_files(store_path)
    result = run_cairn("backup", f"root.pxar:{tree}", "--repository", str(store_path),
                       "--backup-id", "tree", "--backup-time", str(T0 + 3600))
    assert chunk_files(store_path) == before
    assert " 0 new chunks" in result.stderr


def test_pattern_restore_takes_matching_paths_and_their_directories(store_path, backed_up, tmp_path):
    target = tmp_path / "part"
    restore(store_path, backed_up, "root.pxar", str(target), "--pattern", "bottom", "--pattern", "/links/second")
    found = sorted(os.path.relpath(os.path.join(d, f), target) for d, _, files in os.walk(target) for f in files)
    deep = "/".join(["deep"] + [f"level-{i:02d}" for i in range(DEPTH)])
    assert found == [f"{deep}/bottom", "links/second"]
    assert (target / "links" / "second").stat().st_size == 10000


def test_restore_refuses_to_overwrite_unless_asked(store_path, backed_up, tmp_path):
    target = tmp_path / "again"
    restore(store_path, backed_up, "root.pxar", str(target), "--pattern", "/plain.txt")
    (target / "plain.txt").write_bytes(b"changed")
    result = restore(store_path, backed_up, "root.pxar", str(target), "--pattern", "/plain.txt", check=False)
    assert result.returncode != 0 and "--overwrite" in result.stderr
    assert (target / "plain.txt").read_bytes() == b"changed"
    restore(store_path, backed_up, "root.pxar", str(target), "--pattern", "/plain.txt", "--overwrite")
    assert (target / "plain.txt").read_bytes() == b"hello pxar\n" * 100


def test_catalog_dump_lists_every_path_with_type_size_and_mtime(store_path, tree, backed_up):
    lines = run_cairn("catalog", "dump", backed_up, "--repository", str(store_path)).out.splitlines()
    assert lines[0] == 'd "./root.pxar.didx"'
    assert 'f "./root.pxar.didx/plain.txt" 1100 2020-09-13T12:26:40Z' in lines
    assert 'l "./root.pxar.didx/dangling"' in lines
    assert 'h "./root.pxar.didx/links/second"' in lines
    assert 'c "./root.pxar.didx/char-dev"' in lines and 'b "./root.pxar.didx/block-dev"' in lines
    assert 'p "./root.pxar.didx/fifo"' in lines
    assert any(line.startswith('f "./root.pxar.didx/latin1-\\xE9t\\xE9-\\xFF"') for line in lines)
    # One line per archived entry (the root directory has its own line, the socket none).
    assert len(lines) == len(snapshot_tree(tree)) - 1


def test_catalog_shell_browses_finds_and_restores_selected(store_path, backed_up, tmp_path):
    target = tmp_path / "selected"
    script = "\n".join([
        "pwd", "ls", "cd links", "pwd", "ls", "cd /", "find *.txt --select", "select /links/first",
        "list-selected", f"restore-selected {target}", "exit",
    ]) + "\n"
    result = run_cairn("catalog", "shell", backed_up, "root.pxar", "--repository", str(store_path),
                       input=script.encode())
    out = result.out.splitlines()
    assert out[0] == "/"
    assert "plain.txt" in out and "links/" in out
    assert "/links" in out and "first" in out and "second" in out
    assert "/plain.txt" in out
    restored = sorted(os.path.relpath(os.path.join(d, f), target) for d, _, files in os.walk(target) for f in files)
    assert restored == ["links/first", "plain.txt"]


def test_catalog_shell_reports_bad_commands_and_goes_on(store_path, backed_up):
    result = run_cairn("catalog", "shell", backed_up, "--repository", str(store_path),
                       input=b"frobnicate\ncd /nope\nls /links\n")
    assert "unknown command" in result.stderr and "no such" in result.stderr
    assert "first" in result.out.split()


def test_bad_tree_source_is_one_line_error(store_path, tmp_path):
    result = run_cairn("backup", f"root.pxar:{tmp_path / 'missing'}", "--repository", str(store_path),
                       "--backup-id", "bad", check=False)
    assert_one_line_error(result, "missing", "no such directory")
    file = tmp_path / "file"
    file.write_bytes(b"x")
    result = run_cairn("backup", f"root.pxar:{file}", "--repository", str(store_path),
                       "--backup-id", "bad", check=False)
    assert_one_line_error(result, "not a directory")
    assert not (store_path / "host" / "bad").exists()
