"""Selective restore cost, hostile archives, and restores as a normal user."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import MIB, run_cairn

from cairn.client.backup import BackupJob, run_backup
from cairn.client.chunks import ChunkCodec
from cairn.client.pxar.index_sink import IndexSink
from cairn.client.restore import restore_archive
from cairn.client.spec import parse_backup_spec
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.datastore.writer import BackupWriter
from cairn.format.pxar import S_IFDIR, S_IFLNK, S_IFREG, Encoder, Metadata
from cairn.format.pxar.constants import PXAR_FILENAME
from cairn.format.pxar.items import header

T0 = 1795312800
ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")


def store_archive(store, backup_id: str, data: bytes) -> str:
    """Put raw pxar bytes into a real snapshot as root.pxar.didx (no catalog)."""
    with BackupWriter(store, Namespace(), GroupName("host", backup_id), T0) as writer:
        sink = IndexSink(writer, "root.pxar.didx", ChunkCodec())
        sink.write(data)
        sink.close("none")
        writer.finish()
    return f"host/{backup_id}/2026-11-22T02:00:00Z"


def encode(build) -> bytes:
    out = bytearray()
    enc = Encoder(out.extend, Metadata(mode=S_IFDIR | 0o755))
    build(enc)
    enc.finish()
    return bytes(out)


def rename_entry(data: bytes, old: bytes, new: bytes) -> bytes:
    """Rewrite one FILENAME item in place (same length), as a hostile archive would."""
    item = header(PXAR_FILENAME, len(old) + 1) + old + b"\0"
    assert data.count(item) == 1 and len(old) == len(new)
    return data.replace(item, header(PXAR_FILENAME, len(new) + 1) + new + b"\0")


def files_under(root: Path) -> list[str]:
    return sorted(os.path.relpath(os.path.join(d, n), root) for d, dirs, files in os.walk(root) for n in dirs + files)


# --- one file out of a large archive --------------------------------------------------------


def test_one_file_pattern_restore_reads_few_chunks(store, tmp_path):
    src = tmp_path / "big"
    noise = random.Random(20261122)  # fixed, so the chunk count below is too
    for d in range(4):
        (src / f"dir{d}").mkdir(parents=True)
        for f in range(5):
            (src / f"dir{d}" / f"blob{f}.bin").write_bytes(noise.randbytes(2 * MIB + f))
    (src / "dir2" / "wanted.conf").write_bytes(b"the one small file\n")
    spec = parse_backup_spec(f"root.pxar:{src}")
    run_backup(store, [spec], BackupJob(Namespace(), GroupName("host", "big"), T0))
    name = SnapshotName(GroupName("host", "big"), T0)
    assert len(store.open_index(Namespace(), name, "root.pxar.didx")) >= 8  # 40 MiB: about ten chunks

    target = tmp_path / "out"
    result = restore_archive(store, Namespace(), name, "root.pxar", str(target), patterns=["/dir2/wanted.conf"])
    assert files_under(target) == ["dir2", "dir2/wanted.conf"]
    assert (target / "dir2" / "wanted.conf").read_bytes() == b"the one small file\n"
    # The archive's first chunk (format check), the root's goodbye table (last chunk), dir2's
    # goodbye table and the file's own chunk: at most four of the ten or so.
    assert result.chunk_reads <= 4, result.chunk_reads

    # A pattern matching anywhere (through the catalog) costs the same.
    target2 = tmp_path / "out2"
    result = restore_archive(store, Namespace(), name, "root.pxar", str(target2), patterns=["*.conf"])
    assert files_under(target2) == ["dir2", "dir2/wanted.conf"]
    assert result.chunk_reads <= 4, result.chunk_reads


# --- hostile archives -------------------------------------------------------------------------


@pytest.fixture
def outside(tmp_path) -> Path:
    victim = tmp_path / "outside"
    victim.mkdir()
    (victim / "secret").write_bytes(b"keep me")
    return victim


def snapshot_of(path: Path) -> dict:
    return {p: (os.lstat(path / p).st_mode, os.lstat(path / p).st_nlink) for p in files_under(path)}


def test_dotdot_name_is_refused_and_nothing_escapes(store, tmp_path, outside):
    data = encode(lambda enc: enc.add_file(b"xx", Metadata(mode=S_IFREG | 0o644), 4, b"evil"))
    snap = store_archive(store, "dotdot", rename_entry(data, b"xx", b".."))
    before = snapshot_of(tmp_path)
    result = run_cairn("restore", snap, "root.pxar", str(tmp_path / "target"), "--repository", str(store.base),
                       check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "not allowed" in result.stderr
    after = {p: v for p, v in snapshot_of(tmp_path).items() if not p.startswith("target")}
    assert after == before


@pytest.mark.parametrize("overwrite", [False, True])
def test_symlink_then_directory_of_the_same_name_never_writes_through_the_link(store, tmp_path, outside, overwrite):
    def build(enc):
        enc.add_symlink(b"a", Metadata(mode=S_IFLNK | 0o777), os.fsencode(outside))
        with enc.directory(b"b", Metadata(mode=S_IFDIR | 0o755)):
            enc.add_file(b"secret", Metadata(mode=S_IFREG | 0o644), 5, b"owned")

    snap = store_archive(store, f"symdir{int(overwrite)}", rename_entry(encode(build), b"b", b"a"))
    target = tmp_path / "target"
    extra = ["--overwrite"] if overwrite else []
    result = run_cairn("restore", snap, "root.pxar", str(target), "--repository", str(store.base), *extra,
                       check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert (outside / "secret").read_bytes() == b"keep me"
    assert files_under(outside) == ["secret"]


def test_hardlinks_to_files_outside_the_restore_are_refused(store, tmp_path, outside):
    def build(enc):
        offset = enc.add_file(b"a", Metadata(mode=S_IFREG | 0o644), 1, b"a")
        enc.add_hardlink(b"b", b"../outside/secret", offset)
        enc.add_hardlink(b"c", os.fsencode(outside / "secret"), offset)
        enc.add_hardlink(b"d", b"a", offset)

    snap = store_archive(store, "hardlinks", encode(build))
    target = tmp_path / "target"
    result = run_cairn("restore", snap, "root.pxar", str(target), "--repository", str(store.base), check=False)
    assert result.returncode == 1
    assert result.stderr.count(": not restored: hardlink target") == 2
    assert "2 entries were not restored" in result.stderr
    assert os.stat(outside / "secret").st_nlink == 1
    assert files_under(target) == ["a", "d"] and os.stat(target / "d").st_ino == os.stat(target / "a").st_ino


def test_existing_symlink_in_target_is_not_followed(store, tmp_path, outside):
    def build(enc):
        with enc.directory(b"etc", Metadata(mode=S_IFDIR | 0o755)):
            enc.add_file(b"secret", Metadata(mode=S_IFREG | 0o644), 5, b"owned")

    snap = store_archive(store, "presymlink", encode(build))
    target = tmp_path / "target"
    target.mkdir()
    (target / "etc").symlink_to(outside)
    result = run_cairn("restore", snap, "root.pxar", str(target), "--repository", str(store.base), check=False)
    assert result.returncode != 0 and "--overwrite" in result.stderr
    assert (outside / "secret").read_bytes() == b"keep me"


# --- as a normal user -------------------------------------------------------------------------


def as_nobody(*args: str, input: bytes | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "PBS_"))}
    env["HOME"] = "/nonexistent"
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m", "cairn", *args],
        capture_output=True, env=env, input=input, timeout=300, check=False,
    )


@pytest.fixture
def shared_tmp():
    """A directory other users can reach (pytest's own temporary directories are 0700)."""
    path = Path(tempfile.mkdtemp(prefix="cairn-user-test-"))
    os.chmod(path, 0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


@ROOT
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv to drop privileges")
def test_normal_user_backup_reports_unreadable_and_restore_goes_on(store, shared_tmp):
    tmp_path = shared_tmp
    for parent in store.base.parents:  # let the normal user reach the module's store
        os.chmod(parent, os.stat(parent).st_mode | 0o001)
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "readable").write_bytes(b"fine")
    (src / "private").write_bytes(b"root only")
    os.chmod(src / "private", 0o600)
    (src / "closed").mkdir()
    os.chmod(src / "closed", 0o700)
    os.mknod(src / "sub" / "dev", 0o600 | 0o020000, os.makedev(1, 3))
    (src / "sub" / "theirs").write_bytes(b"owned by 1234")
    os.chown(src / "sub" / "theirs", 1234, 1234)
    subprocess.run(["chown", "-R", "65534:65534", str(store.base)], check=True)

    base = ["--repository", str(store.base), "--backup-id", "user"]
    result = as_nobody("backup", f"root.pxar:{src}", *base, "--backup-time", str(T0))
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert f"cannot read {src}/private" in stderr and f"cannot read {src}/closed" in stderr
    failed = as_nobody("backup", f"root.pxar:{src}", *base, "--backup-time", str(T0 + 1), "--fail-on-unreadable")
    assert failed.returncode != 0 and "--fail-on-unreadable" in failed.stderr.decode()
    assert not (store.base / "host" / "user" / "2026-11-22T02:00:01Z").exists()

    # Restore (as the normal user) a tree made by root: owners and devices cannot be set.
    run_cairn("backup", f"root.pxar:{src}", *base, "--backup-time", str(T0 + 2))
    subprocess.run(["chown", "-R", "65534:65534", str(store.base)], check=True)
    target = tmp_path / "restored"
    target.mkdir()
    os.chown(target, 65534, 65534)
    result = as_nobody("restore", "host/user/2026-11-22T02:00:02Z", "root.pxar", str(target),
                       "--repository", str(store.base))
    stderr = result.stderr.decode()
    assert result.returncode == 0, stderr
    assert "ownership could not be restored" in stderr and "device nodes could not be restored" in stderr
    assert (target / "sub" / "theirs").read_bytes() == b"owned by 1234"
    assert (target / "private").read_bytes() == b"root only"
    assert not (target / "sub" / "dev").exists()
