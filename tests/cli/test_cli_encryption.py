"""Client-side encryption end to end: PBS key files, crypt modes, wrong keys, master key recovery."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from conftest import MIB, assert_one_line_error, run_cairn
from conftest import PASSPHRASE as PASS

from cairn.format import blob as blobfmt
from cairn.format.index import FixedIndex

T0 = 1795312800
MARKER = b"CAIRN-PLAINTEXT-MARKER-4711"


@pytest.fixture(scope="module")
def env(key_env) -> dict:
    """This module's name for conftest's ``key_env`` (which ``keyfile`` is made with)."""
    return key_env


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("src")
    image = d / "disk.raw"
    image.write_bytes(os.urandom(MIB) + MARKER * 200_000 + bytes(4 * MIB))
    conf = d / "vm.conf"
    conf.write_bytes(b"name: secret-vm\n" + MARKER + b"\n")
    return image, conf


def backup(store_path, env, *extra, backup_id, t=T0, check=True, specs=None):
    return run_cairn("backup", *(specs or []), "--repository", str(store_path), "--backup-type", "vm",
                     "--backup-id", backup_id, "--backup-time", str(t), *extra, env=env, check=check)


def snap(backup_id: str, t: int = T0) -> str:
    return f"vm/{backup_id}/2026-11-22T02:00:00Z" if t == T0 else f"vm/{backup_id}/{t}"


def all_store_bytes(store_path: Path):
    for root, _, files in os.walk(store_path):
        for name in files:
            yield Path(root, name).read_bytes()


def test_key_file_follows_pbs_schema(keyfile):
    value = json.loads(keyfile.read_text())
    assert list(value) == ["kdf", "created", "modified", "data", "fingerprint"]
    assert set(value["kdf"]) == {"PBKDF2"} and value["kdf"]["PBKDF2"]["iter"] == 65535
    assert len(value["fingerprint"].split(":")) == 32
    assert oct(keyfile.stat().st_mode & 0o777) == "0o600"


def test_no_plaintext_in_store_and_round_trip(store_path, env, keyfile, source, tmp_path):
    image, conf = source
    backup(store_path, env, "--keyfile", str(keyfile), backup_id="enc",
           specs=[f"disk.img:{image}", f"vm.conf:{conf}"])
    for data in all_store_bytes(store_path):
        assert MARKER not in data
        assert b"secret-vm" not in data
    snap_dir = store_path / "vm/enc/2026-11-22T02:00:00Z"
    manifest = json.loads(blobfmt.decode_blob((snap_dir / "index.json.blob").read_bytes()))
    assert {f["crypt-mode"] for f in manifest["files"]} == {"encrypt"}
    assert len(manifest["signature"]) == 64
    assert manifest["unprotected"]["key-fingerprint"] == json.loads(keyfile.read_text())["fingerprint"]
    out = tmp_path / "out.raw"
    run_cairn("restore", snap("enc"), "disk.img", str(out), "--keyfile", str(keyfile), "--repository", str(store_path), env=env)
    assert out.read_bytes() == image.read_bytes()
    conf_out = run_cairn("restore", snap("enc"), "vm.conf", "-", "--keyfile", str(keyfile), "--repository", str(store_path), env=env)
    assert conf_out.stdout == conf.read_bytes()


def test_wrong_key_missing_key_wrong_passphrase(store_path, env, keyfile, source, tmp_path):
    image, _ = source
    backup(store_path, env, "--keyfile", str(keyfile), backup_id="keys", specs=[f"disk.img:{image}"])
    other = tmp_path / "other.json"
    run_cairn("key", "create", str(other), "--kdf", "none", env=env)
    target = tmp_path / "out.raw"
    base = ("restore", snap("keys"), "disk.img", str(target), "--repository", str(store_path))
    r = run_cairn(*base, "--keyfile", str(other), env=env, check=False)
    assert_one_line_error(r, "wrong key", json.loads(keyfile.read_text())["fingerprint"])
    r = run_cairn(*base, env=env, check=False)
    assert_one_line_error(r, "missing key")
    r = run_cairn(*base, "--keyfile", str(keyfile), env={**env, "CAIRN_ENCRYPTION_PASSWORD": "not the one"}, check=False)
    assert_one_line_error(r, "wrong passphrase")
    r = run_cairn(*base, "--keyfile", str(keyfile), env={"XDG_CONFIG_HOME": env["XDG_CONFIG_HOME"]}, check=False)
    assert_one_line_error(r, "passphrase is needed")
    assert not target.exists()
    r = run_cairn("backup", f"d.img:{image}", "--keyfile", str(keyfile), "--repository", str(store_path),
                  "--backup-id", "wrongpass", env={**env, "CAIRN_ENCRYPTION_PASSWORD": "nope!"}, check=False)
    assert_one_line_error(r, "wrong passphrase")
    assert not (store_path / "host" / "wrongpass").exists()


def first_chunk(store_path: Path, snapshot_dir: str, archive: str = "disk.img.fidx") -> Path:
    index = FixedIndex((store_path / snapshot_dir / archive).read_bytes())
    digest = index.digest(0).hex()
    return store_path / ".chunks" / digest[:4] / digest


def test_tampering_is_detected(store_path, env, keyfile, source, tmp_path):
    image, _ = source
    backup(store_path, env, "--keyfile", str(keyfile), backup_id="tamper", specs=[f"disk.img:{image}"])
    sdir = "vm/tamper/2026-11-22T02:00:00Z"
    restore = ("restore", snap("tamper"), "disk.img", "-", "--keyfile", str(keyfile), "--repository", str(store_path))

    # a chunk byte, with the CRC fixed up so only the authentication tag can notice
    chunk = first_chunk(store_path, sdir)
    original = chunk.read_bytes()
    raw = bytearray(original)
    raw[60] ^= 1
    raw[8:12] = zlib.crc32(raw[44:]).to_bytes(4, "little")
    chunk.write_bytes(bytes(raw))
    assert_one_line_error(run_cairn(*restore, env=env, check=False), "authentic")
    chunk.write_bytes(original)

    # an index byte
    index = store_path / sdir / "disk.img.fidx"
    good_index = index.read_bytes()
    bad = bytearray(good_index)
    bad[4096 + 5] ^= 1
    index.write_bytes(bytes(bad))
    assert run_cairn(*restore, env=env, check=False).returncode != 0
    index.write_bytes(good_index)

    # the signed part of the manifest, re-encoded as a valid blob
    manifest_path = store_path / sdir / "index.json.blob"
    good_manifest = manifest_path.read_bytes()
    value = json.loads(blobfmt.decode_blob(good_manifest))
    value["files"][0]["size"] += 1
    manifest_path.write_bytes(blobfmt.encode_blob(json.dumps(value).encode()))
    assert_one_line_error(run_cairn(*restore, env=env, check=False), "signature")
    manifest_path.write_bytes(good_manifest)
    assert run_cairn(*restore, env=env).stdout == image.read_bytes()


def test_default_key_encrypts_unless_crypt_mode_none(tmp_path, source, store_path):
    image, _ = source
    env = {"XDG_CONFIG_HOME": str(tmp_path / "cfg"), "CAIRN_ENCRYPTION_PASSWORD": PASS}
    run_cairn("key", "create", "--kdf", "pbkdf2", env=env)
    assert (tmp_path / "cfg" / "cairn" / "encryption-key.json").exists()
    backup(store_path, env, backup_id="default", specs=[f"disk.img:{image}"])
    backup(store_path, env, "--crypt-mode", "none", backup_id="default", t=T0 + 60, specs=[f"disk.img:{image}"])
    listing = json.loads(run_cairn("snapshot", "list", "vm/default", "--repository", str(store_path),
                                   "--output-format", "json", env=env).out)
    assert [row["files"][0]["crypt-mode"] for row in listing] == ["encrypt", "none"]
    r = backup(store_path, env, "--crypt-mode", "none", "--keyfile", "x", backup_id="default", t=T0 + 120,
               specs=[f"disk.img:{image}"], check=False)
    assert_one_line_error(r, "mutually exclusive")


def test_sign_only_keeps_chunks_plain_and_signs(store_path, env, keyfile, source):
    image, _ = source
    backup(store_path, env, "--keyfile", str(keyfile), "--crypt-mode", "sign-only", backup_id="signed", specs=[f"disk.img:{image}"])
    sdir = "vm/signed/2026-11-22T02:00:00Z"
    assert first_chunk(store_path, sdir).read_bytes()[:8] in (blobfmt.UNCOMPRESSED_BLOB_MAGIC, blobfmt.COMPRESSED_BLOB_MAGIC)
    manifest = json.loads(blobfmt.decode_blob((store_path / sdir / "index.json.blob").read_bytes()))
    assert manifest["files"][0]["crypt-mode"] == "sign-only" and manifest["signature"]
    out = run_cairn("restore", snap("signed"), "disk.img", "-", "--keyfile", str(keyfile), "--repository", str(store_path), env=env)
    assert out.stdout == image.read_bytes()


def test_dedup_only_within_one_key(store_path, env, keyfile, source, tmp_path):
    image, _ = source
    other = tmp_path / "k2.json"
    run_cairn("key", "create", str(other), "--kdf", "none", env=env)
    backup(store_path, env, "--keyfile", str(keyfile), backup_id="dd1", specs=[f"disk.img:{image}"])
    r = backup(store_path, env, "--keyfile", str(other), backup_id="dd2", specs=[f"disk.img:{image}"])
    assert "0 reused" in r.stderr
    r = backup(store_path, env, "--keyfile", str(keyfile), backup_id="dd3", specs=[f"disk.img:{image}"])
    assert " 0 new chunks" in r.stderr


def test_keyfd_passes_the_key_file(store_path, env, keyfile, source):
    image, _ = source
    fd = os.open(keyfile, os.O_RDONLY)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "cairn", "backup", f"disk.img:{image}", "--keyfd", str(fd), "--repository",
             str(store_path), "--backup-id", "fd", "--backup-time", str(T0)],
            pass_fds=(fd,), capture_output=True, env={**os.environ, **env},
        )
    finally:
        os.close(fd)
    assert proc.returncode == 0, proc.stderr
    manifest = json.loads(blobfmt.decode_blob((store_path / "host/fd/2026-11-22T02:00:00Z/index.json.blob").read_bytes()))
    assert manifest["files"][0]["crypt-mode"] == "encrypt"


def test_master_key_recovers_deleted_key(store_path, env, source, tmp_path):
    image, _ = source
    menv = {**env, "CAIRN_MASTER_KEY_PASSWORD": "master secret", "CAIRN_NEW_ENCRYPTION_PASSWORD": "recovered pw"}
    run_cairn("key", "create-master-key", "--output-dir", str(tmp_path), env=menv)
    lost = tmp_path / "lost.json"
    run_cairn("key", "create", str(lost), "--kdf", "pbkdf2", env=menv)
    backup(store_path, menv, "--keyfile", str(lost), "--master-pubkey-file", str(tmp_path / "master-public.pem"),
           backup_id="master", specs=[f"disk.img:{image}"])
    assert (store_path / "vm/master/2026-11-22T02:00:00Z/rsa-encrypted.key.blob").exists()
    lost.unlink()
    recovered = tmp_path / "recovered.json"
    run_cairn("key", "restore-from-master", snap("master"), str(recovered), "--master-keyfile",
              str(tmp_path / "master-private.pem"), "--repository", str(store_path), env=menv)
    out = run_cairn("restore", snap("master"), "disk.img", "-", "--keyfile", str(recovered), "--repository",
                    str(store_path), env={**env, "CAIRN_ENCRYPTION_PASSWORD": "recovered pw"})
    assert out.stdout == image.read_bytes()


def test_paperkey_round_trip_and_show(env, keyfile, tmp_path):
    paper = run_cairn("key", "paperkey", str(keyfile), env=env).out
    assert paper.startswith("-----BEGIN PROXMOX BACKUP KEY-----")
    (tmp_path / "paper.txt").write_text(paper)
    run_cairn("key", "import", str(tmp_path / "paper.txt"), str(tmp_path / "imported.json"), env=env)
    shown = [json.loads(run_cairn("key", "show", str(p), "--output-format", "json", env=env).out)
             for p in (keyfile, tmp_path / "imported.json")]
    assert shown[0]["fingerprint"] == shown[1]["fingerprint"] and shown[0]["kdf"] == "pbkdf2"
    html = run_cairn("key", "paperkey", str(keyfile), "--output-format", "html", env=env).out
    assert "<html" in html.lower()
