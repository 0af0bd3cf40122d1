"""The ``cairn`` entry point: start the key's scrypt, then load the command line.

A backup or restore with an encrypted key waits for one scrypt run (0.16 s) before it can
store or read a chunk. Importing the command line and the command takes about 50 ms, so
that run is started first, from a look at the raw arguments: when they name a key file
(``--keyfile``) and the passphrase is in the environment, the key file's scrypt parameters
are read and the derivation begins on a thread (see ``cairn.format.kdf_memo``). The real
argument parsing and key handling happen afterwards as always and take the result over if
its inputs are the same; anything unexpected here just means it is computed then instead.
"""

from __future__ import annotations

import binascii
import json
import os
import sys

from cairn.client import allocator
from cairn.format import kdf_memo

#: Commands that always unlock the key they are given.
_UNLOCKING_COMMANDS = ("backup", "restore")
_PASSPHRASE_ENV = ("CAIRN_ENCRYPTION_PASSWORD", "PBS_ENCRYPTION_PASSWORD")  # as cairn.client.keys
_MAX_KEY_FILE = 64 * 1024


def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg[len(name) + 1 :]
    return None


def start_key_derivation(args: list[str]) -> bool:
    """Start deriving the key file's lock key if ``args`` will surely need it; True if started."""
    command = next((arg for arg in args if not arg.startswith("-")), None)
    if command not in _UNLOCKING_COMMANDS or "--passphrase-fd" in args or "--keyfd" in args:
        return False
    keyfile = _option(args, "--keyfile")
    passphrase = next((os.environ[name] for name in _PASSPHRASE_ENV if name in os.environ), None)
    if keyfile is None or passphrase is None:
        return False
    try:
        with open(keyfile, "rb") as f:
            params = json.loads(f.read(_MAX_KEY_FILE))["kdf"]["Scrypt"]
        salt = binascii.a2b_base64(params["salt"], strict_mode=True)  # (base64 imports re: slow)
        n, r, p = (params[k] for k in ("n", "r", "p"))
        if not all(type(v) is int and v > 0 for v in (n, r, p)):
            return False
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        return False  # the command itself will say what is wrong, if anything
    kdf_memo.start_scrypt(passphrase.encode(), salt, n, r, p, 32)  # an AES-256 key (crypt.KEY_SIZE)
    return True


def entry() -> None:
    allocator.tune()  # before the first extra thread (see allocator)
    start_key_derivation(sys.argv[1:])
    from cairn.cli.main import main

    sys.exit(main())
