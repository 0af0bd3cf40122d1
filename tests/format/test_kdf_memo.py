"""kdf_memo: a derivation started early is handed over only for the very same inputs."""

from __future__ import annotations

import hashlib

import pytest

from cairn.format import kdf_memo
from cairn.format.keyfile import ScryptParams

REAL_SCRYPT = hashlib.scrypt  # the tests count calls by patching hashlib.scrypt itself
SALT = bytes(range(32))
SMALL = dict(n=1024, r=8, p=1)  # quick, yet a real scrypt


@pytest.fixture
def calls(monkeypatch) -> list[tuple]:
    made: list[tuple] = []
    def counting(password, **kwargs):
        made.append((password, kwargs["salt"], kwargs["n"]))
        return REAL_SCRYPT(password, **kwargs)

    monkeypatch.setattr(kdf_memo.hashlib, "scrypt", counting)
    return made


def test_a_started_derivation_is_handed_over_once(calls):
    expected = REAL_SCRYPT(b"pass phrase", salt=SALT, maxmem=kdf_memo.SCRYPT_MAXMEM, dklen=32, **SMALL)
    kdf_memo.start_scrypt(b"pass phrase", SALT, SMALL["n"], SMALL["r"], SMALL["p"], 32)
    kdf_memo.start_scrypt(b"pass phrase", SALT, SMALL["n"], SMALL["r"], SMALL["p"], 32)  # no second run
    params = ScryptParams(salt=SALT, **SMALL)
    assert params.derive(b"pass phrase") == expected
    assert len(calls) == 1
    assert params.derive(b"pass phrase") == expected  # handed over already: derived again
    assert len(calls) == 2


@pytest.mark.parametrize("other", [dict(passphrase=b"other phrase"), dict(salt=bytes(32)), dict(n=2048)])
def test_different_inputs_never_take_a_started_result(calls, other):
    kdf_memo.start_scrypt(b"pass phrase", SALT, SMALL["n"], SMALL["r"], SMALL["p"], 32)
    inputs = {"passphrase": b"pass phrase", "salt": SALT, **SMALL} | other
    got = ScryptParams(salt=inputs["salt"], n=inputs["n"], r=8, p=1).derive(inputs["passphrase"])
    assert got == REAL_SCRYPT(inputs["passphrase"], salt=inputs["salt"], n=inputs["n"], r=8, p=1,
                                 maxmem=kdf_memo.SCRYPT_MAXMEM, dklen=32)
    assert kdf_memo.scrypt(b"pass phrase", SALT, SMALL["n"], SMALL["r"], SMALL["p"], 32)  # clean up
    assert len(calls) == 2


def test_an_error_of_a_started_derivation_is_raised_to_the_caller():
    kdf_memo.start_scrypt(b"pass phrase", SALT, 1000, 8, 1, 32)  # n must be a power of 2
    with pytest.raises(ValueError):
        kdf_memo.scrypt(b"pass phrase", SALT, 1000, 8, 1, 32)
