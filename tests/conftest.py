"""Shared fixtures: real datastores in temporary directories and the real CLI in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from cairn.datastore.datastore import Datastore

MIB = 1024 * 1024


def pytest_addoption(parser):
    parser.addoption("--run-slow", action="store_true", help="run the long crash and soak tests")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--run-slow"):
        return
    skip = pytest.mark.skip(reason="slow test: run with --run-slow (make test-slow)")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@dataclass
class CliResult:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def out(self) -> str:
        return self.stdout.decode()


def run_cairn(*args: str, input: bytes | None = None, env: dict | None = None, check: bool = True) -> CliResult:
    """Run the real ``cairn`` command line in a subprocess."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "PBS_"))}
    full_env.update(env or {})
    proc = subprocess.run(
        [sys.executable, "-m", "cairn", *args], input=input, capture_output=True, env=full_env, timeout=300
    )
    result = CliResult(proc.returncode, proc.stdout, proc.stderr.decode())
    if check and proc.returncode != 0:
        raise AssertionError(f"cairn {' '.join(args)} failed ({proc.returncode}): {result.stderr}")
    return result


def assert_one_line_error(result: CliResult, *fragments: str) -> None:
    assert result.returncode != 0, "expected a failure"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one stderr line, got: {result.stderr!r}"
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"


# Creating a store makes 65536 directories (about a second of system time), so tests share
# one store per module unless they need a pristine one (``fresh_store``).
@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("store") / "store"
    Datastore.create(path)
    return path


@pytest.fixture(scope="module")
def store(store_path: Path) -> Datastore:
    return Datastore.open(store_path)


@pytest.fixture
def fresh_store(tmp_path: Path) -> Datastore:
    return Datastore.create(tmp_path / "fresh-store")


#: The passphrase of the CLI tests' keys (given through the environment).
PASSPHRASE = "correct horse"


@pytest.fixture(scope="module")
def key_env(tmp_path_factory) -> dict:
    """A config home of its own and the key passphrase, for ``run_cairn(..., env=)``."""
    home = tmp_path_factory.mktemp("home")
    return {"XDG_CONFIG_HOME": str(home / "config"), "CAIRN_ENCRYPTION_PASSWORD": PASSPHRASE}


@pytest.fixture(scope="module")
def keyfile(tmp_path_factory, key_env) -> Path:
    """A key file made by ``cairn key create`` (PBKDF2: quick to unlock)."""
    path = tmp_path_factory.mktemp("keys") / "key.json"
    run_cairn("key", "create", str(path), "--kdf", "pbkdf2", env=key_env)
    return path


class GatedKey:
    """A key whose background unlock waits until ``open()``: what a backup sees during the
    fraction of a second scrypt takes, made as long as a test needs. ``open(fail=True)``
    makes the unlock fail as a wrong passphrase does."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, key: bytes) -> None:
        import dataclasses
        import threading

        from cairn.client.keys import DeferredCipher, KeySource
        from cairn.errors import CryptError
        from cairn.format.keyfile import Pbkdf2Params, create_key_config

        self.key = key
        self.gate = threading.Event()
        self._fail = False
        gate, outer = self.gate, self

        @dataclasses.dataclass(frozen=True)
        class GatedKdf:
            inner: Pbkdf2Params

            def derive(self, passphrase: bytes) -> bytes:
                assert gate.wait(60)
                if outer._fail:
                    raise CryptError("unable to decrypt key (wrong passphrase?)")
                return self.inner.derive(passphrase)

        monkeypatch.setenv("CAIRN_ENCRYPTION_PASSWORD", "gated-pw")
        config = create_key_config(key, b"gated-pw", Pbkdf2Params(salt=b"s" * 32, iterations=1000))
        self.source = KeySource(dataclasses.replace(config, kdf=GatedKdf(config.kdf)), "test")
        self.source.unlock_in_background()
        self.cipher = DeferredCipher(self.source)

    def open(self, fail: bool = False) -> None:
        self._fail = fail
        self.gate.set()


def make_image(path: Path, size_mib: int = 96, tail: int = 12345, seed: int = 7) -> bytes:
    """A disk-like image: zero runs, repeated blocks, random data and an odd tail."""
    import random

    rng = random.Random(seed)
    repeated = rng.randbytes(4 * MIB)
    with open(path, "wb") as f:
        for block in range(size_mib // 4):
            kind = block % 4
            if kind == 0:
                f.seek(4 * MIB, 1)
            elif kind == 1:
                f.write(repeated)
            elif kind == 2:
                f.write(rng.randbytes(MIB) + bytes(3 * MIB))  # partly zero: not a hole chunk
            else:
                f.write(rng.randbytes(4 * MIB))
        f.write(rng.randbytes(tail))
        f.truncate()
    return path.read_bytes()


def chunk_files(store_path: Path) -> dict[str, int]:
    """Every file under .chunks with its mtime: what a backup wrote."""
    found = {}
    for prefix in os.scandir(store_path / ".chunks"):
        for entry in os.scandir(prefix.path):
            found[entry.path] = entry.stat().st_mtime_ns
    return found


def taken(chunker, chunks) -> list[bytes]:
    """Copy a StreamChunker's chunks out and give their memory back, as the sink does once
    they are stored."""
    out = []
    for chunk in chunks:
        out.append(bytes(chunk))
        chunker.release(chunk)
    return out
