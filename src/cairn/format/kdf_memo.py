"""scrypt derivations that can be started before they are asked for.

Unlocking a key file costs one scrypt run (0.16 s with PBS's parameters), and a backup or
restore can do nothing with its chunks until it is done. The command line knows which key
file and passphrase it will use long before its code is imported, so it starts the
derivation right away (see ``cairn.cli.launch``); when the key file is then unlocked,
:func:`scrypt` hands over that result instead of deriving again.

A result is handed over only for exactly the same inputs, so this can never change what a
derivation returns, only when it is computed. Each started derivation is handed over once
and then forgotten. This module imports nothing heavy, so that it can run first.
"""

from __future__ import annotations

import hashlib
import threading

from cairn.background import Background

#: The memory cap PBS hands OpenSSL's scrypt (1025 MiB); it also bounds hostile parameters.
SCRYPT_MAXMEM = 1025 * 1024 * 1024

_Inputs = tuple[bytes, bytes, int, int, int, int]  # passphrase, salt, n, r, p, dklen
_started: dict[_Inputs, Background] = {}
_lock = threading.Lock()


def _derive(inputs: _Inputs) -> bytes:
    passphrase, salt, n, r, p, dklen = inputs
    return hashlib.scrypt(passphrase, salt=salt, n=n, r=r, p=p, maxmem=SCRYPT_MAXMEM, dklen=dklen)


def start_scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> None:
    """Begin deriving on a thread of its own (once per set of inputs)."""
    inputs = (passphrase, salt, n, r, p, dklen)
    with _lock:
        if inputs in _started:
            return
        derivation = _started[inputs] = Background("cairn-kdf", lambda: _derive(inputs))
    derivation.start()


def scrypt(passphrase: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    """``hashlib.scrypt`` with the key-file memory cap, taking over a started derivation."""
    inputs = (passphrase, salt, n, r, p, dklen)
    with _lock:
        derivation = _started.pop(inputs, None)
    if derivation is None:
        return _derive(inputs)
    return derivation.result()
