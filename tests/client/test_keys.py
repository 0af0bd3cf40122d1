"""KeySource: a key unlocked on a thread while the command starts, errors raised where they were."""

from __future__ import annotations

import dataclasses
import io
import os
import threading

import pytest

from cairn.client.keys import KeySource, backup_crypto, backup_key
from cairn.errors import CryptError, UsageError
from cairn.format.keyfile import KeyConfig, Pbkdf2Params, create_key_config

PASS = b"correct horse"
KEY = bytes(range(32))


@pytest.fixture
def config() -> KeyConfig:
    return create_key_config(KEY, PASS, Pbkdf2Params(salt=b"s" * 32, iterations=1000))


@pytest.fixture(autouse=True)
def no_passphrase_in_env(monkeypatch):
    for name in ("CAIRN_ENCRYPTION_PASSWORD", "PBS_ENCRYPTION_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("sys.stdin", io.StringIO())  # no terminal: a needed prompt is an error


@dataclasses.dataclass(frozen=True)
class GatedKdf:
    """The key file's real KDF, held back until the test opens the gate."""

    inner: Pbkdf2Params
    entered: threading.Event
    gate: threading.Event

    def derive(self, passphrase: bytes) -> bytes:
        self.entered.set()
        assert self.gate.wait(60), "the test never opened the gate"
        return self.inner.derive(passphrase)


def test_background_unlock_returns_before_the_kdf_finishes(config, monkeypatch):
    monkeypatch.setenv("CAIRN_ENCRYPTION_PASSWORD", PASS.decode())
    kdf = GatedKdf(config.kdf, threading.Event(), threading.Event())
    source = KeySource(dataclasses.replace(config, kdf=kdf), "test")
    source.unlock_in_background()  # would hang here if it derived the key itself
    assert kdf.entered.wait(60)
    kdf.gate.set()
    assert source.unlock().key == KEY


def test_wrong_passphrase_is_raised_by_unlock_not_before(config, monkeypatch):
    monkeypatch.setenv("CAIRN_ENCRYPTION_PASSWORD", "not the passphrase")
    source = KeySource(config, "test")
    source.unlock_in_background()
    with pytest.raises(CryptError, match="wrong passphrase"):
        source.unlock()


def test_a_passphrase_still_to_be_given_is_read_by_unlock(config, monkeypatch):
    source = KeySource(config, "test")
    source.unlock_in_background()  # nothing given yet: no thread, no error, no prompt
    with pytest.raises(CryptError, match="a passphrase is needed"):
        source.unlock()
    monkeypatch.setenv("CAIRN_ENCRYPTION_PASSWORD", PASS.decode())
    assert source.unlock().key == KEY


def test_passphrase_descriptor_is_read_once_when_unlocking_starts(config):
    read_end, write_end = os.pipe()
    os.write(write_end, PASS + b"\n")
    os.close(write_end)
    try:
        source = KeySource(config, "test", passphrase_fd=read_end)
        source.unlock_in_background()
        source.unlock_in_background()  # a second call neither reads the descriptor nor restarts
        assert source.unlock().key == KEY
        assert source.unlock().key == KEY
    finally:
        os.close(read_end)


def test_plain_key_unlocks_without_passphrase():
    source = KeySource(create_key_config(KEY, None, "none"), "test")
    source.unlock_in_background()
    assert source.unlock().key == KEY


def test_backup_key_rules(tmp_path, config, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))  # no default key
    path = tmp_path / "key.json"
    path.write_text(config.to_json())
    with pytest.raises(UsageError, match="mutually exclusive"):
        backup_key("none", str(path), None, None)
    with pytest.raises(UsageError, match="needs --keyfile"):
        backup_key("encrypt", None, None, None)
    assert backup_key(None, None, None, None) is None
    assert backup_crypto(None, None, None).mode == "none"
    monkeypatch.setenv("CAIRN_ENCRYPTION_PASSWORD", PASS.decode())
    crypto = backup_crypto("sign-only", backup_key("sign-only", str(path), None, None), None)
    assert (crypto.mode, crypto.cipher.key, crypto.master_key_payload) == ("sign-only", KEY, None)


def test_unreadable_passphrase_descriptor_is_reported_by_unlock(config):
    source = KeySource(config, "test", passphrase_fd=987654)  # no such descriptor
    source.unlock_in_background()
    with pytest.raises(UsageError, match="cannot read passphrase from file descriptor"):
        source.unlock()
