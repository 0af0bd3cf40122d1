"""FUSE mounts of snapshots, excludes (--exclude, .pxarexclude) and --include-dev."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import MIB, run_cairn

T0 = 1795312800
TIME = "2026-11-22T02:00:00Z"


def fuse_unavailable() -> str | None:
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse on this machine"
    try:
        import pyfuse3  # noqa: F401
    except ImportError:
        return "pyfuse3 is not installed (pip install 'cairn-backup[mount]')"
    if os.geteuid() != 0 and not Path("/usr/bin/fusermount3").exists():
        return "no fusermount3 for unprivileged mounts"
    return None


needs_fuse = pytest.mark.skipif(fuse_unavailable() is not None, reason=str(fuse_unavailable()))


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("src") / "tree"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hosts").write_text("127.0.0.1 localhost\n")
    (root / "big.bin").write_bytes(os.urandom(3 * MIB))
    (root / "link").symlink_to("etc/hosts")
    os.link(root / "etc" / "hosts", root / "hosts-again")
    os.setxattr(root / "etc" / "hosts", "user.note", b"xattr via fuse")
    return root


def backup(store_path, *args, backup_id, t=T0, **kw):
    return run_cairn("backup", *args, "--repository", str(store_path), "--backup-id", backup_id,
                     "--backup-time", str(t), **kw)


def start_mount(store_path, snapshot: str, archive: str, mountpoint: Path) -> subprocess.Popen:
    mountpoint.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "PBS_"))}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cairn", "mount", snapshot, archive, str(mountpoint), "--repository", str(store_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    deadline = time.monotonic() + 30
    while not os.path.ismount(mountpoint):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"mount did not appear: {proc.communicate()[1].decode()}")
        time.sleep(0.05)
    return proc


@needs_fuse
def test_mounted_pxar_archive_is_browsable_and_unmounts_with_cairn_unmount(store_path, tree, tmp_path):
    backup(store_path, f"root.pxar:{tree}", backup_id="mnt")
    mnt = tmp_path / "mnt"
    proc = start_mount(store_path, f"host/mnt/{TIME}", "root.pxar", mnt)
    try:
        assert sorted(os.listdir(mnt)) == ["big.bin", "etc", "hosts-again", "link"]
        assert (mnt / "etc" / "hosts").read_text() == "127.0.0.1 localhost\n"
        assert (mnt / "big.bin").read_bytes() == (tree / "big.bin").read_bytes()
        assert os.readlink(mnt / "link") == "etc/hosts"
        assert os.getxattr(mnt / "etc" / "hosts", "user.note") == b"xattr via fuse"
        assert os.stat(mnt / "hosts-again").st_ino == os.stat(mnt / "etc" / "hosts").st_ino
        assert os.stat(mnt / "etc" / "hosts").st_mtime_ns == os.stat(tree / "etc" / "hosts").st_mtime_ns
        with pytest.raises(OSError):
            (mnt / "new").write_text("read-only")
        run_cairn("unmount", str(mnt))
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    assert not os.path.ismount(mnt)


@needs_fuse
def test_mounted_image_can_be_read_and_ctrl_c_unmounts(store_path, tmp_path):
    image = tmp_path / "disk.raw"
    image.write_bytes(os.urandom(5 * MIB + 123))
    backup(store_path, f"disk.img:{image}", backup_id="mntimg")
    mnt = tmp_path / "mnt"
    proc = start_mount(store_path, f"host/mntimg/{TIME}", "disk.img", mnt)
    try:
        assert os.listdir(mnt) == ["disk.img"]
        assert (mnt / "disk.img").read_bytes() == image.read_bytes()
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
    assert not os.path.ismount(mnt)


def test_unmount_of_something_not_mounted_is_one_line_error(tmp_path):
    result = run_cairn("unmount", str(tmp_path), check=False)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "not mounted" in result.stderr


def catalog_paths(store_path, snapshot: str) -> list[str]:
    out = run_cairn("catalog", "dump", snapshot, "--repository", str(store_path)).out.splitlines()
    return [line.split('"')[1].removeprefix("./root.pxar.didx") for line in out[1:]]


def test_excludes_from_command_line_and_pxarexclude_files(store_path, tmp_path):
    src = tmp_path / "ex"
    for path in ("keep.txt", "a.tmp", "sub/b.tmp", "sub/build/out.o", "sub/keep/x.log", "sub/y.log",
                 "other/build/z"):
        (src / path).parent.mkdir(parents=True, exist_ok=True)
        (src / path).write_text(path)
    (src / "sub" / ".pxarexclude").write_text("/build\n*.log\n!/keep/x.log\n")
    backup(store_path, f"root.pxar:{src}", "--exclude", "*.tmp", backup_id="ex")
    paths = catalog_paths(store_path, f"host/ex/{TIME}")
    assert paths == [
        "/.pxarexclude-cli", "/keep.txt", "/other", "/other/build", "/other/build/z", "/sub",
        "/sub/.pxarexclude", "/sub/keep", "/sub/keep/x.log",
    ]
    restored = tmp_path / "restored"
    run_cairn("restore", f"host/ex/{TIME}", "root.pxar", str(restored), "--repository", str(store_path),
              "--pattern", "/.pxarexclude-cli")
    assert (restored / ".pxarexclude-cli").read_text() == "*.tmp\n"


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a tmpfs needs root")
def test_other_file_systems_are_archived_empty_unless_included(store_path, tmp_path):
    src = tmp_path / "fs"
    inner = src / "mnt"
    inner.mkdir(parents=True)
    (src / "top").write_text("top")
    if subprocess.run(["mount", "-t", "tmpfs", "cairn-test", str(inner)], capture_output=True, check=False).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        (inner / "inside").write_text("on another file system")
        result = backup(store_path, f"root.pxar:{src}", backup_id="dev")
        assert "mount point" in result.stderr and "--include-dev" in result.stderr
        assert catalog_paths(store_path, f"host/dev/{TIME}") == ["/mnt", "/top"]
        backup(store_path, f"root.pxar:{src}", "--include-dev", str(inner), backup_id="dev", t=T0 + 60)
        assert catalog_paths(store_path, "host/dev/2026-11-22T02:01:00Z") == ["/mnt", "/mnt/inside", "/top"]
    finally:
        subprocess.run(["umount", str(inner)], check=False)
