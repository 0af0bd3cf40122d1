"""Where keys and passphrases come from, and which crypt mode a backup uses.

Follows proxmox-backup-client: ``--keyfile PATH`` or ``--keyfd FD`` (the key file's content
through an open descriptor) name the key; without either, a default key in the user's config
directory is used if it exists, so backups are encrypted unless ``--crypt-mode none`` is
given. Passphrases come from ``--passphrase-fd FD``, ``$CAIRN_ENCRYPTION_PASSWORD`` (then
``$PBS_ENCRYPTION_PASSWORD``), or a prompt on a terminal, in that order.
"""

from __future__ import annotations

import getpass
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from cairn.background import Background
from cairn.datastore.fsutil import replace_file
from cairn.errors import CryptError, FormatError, UsageError
from cairn.format.crypt import CryptConfig
from cairn.format.keyfile import KeyConfig, create_key_config

DEFAULT_KEY_NAME = "encryption-key.json"
DEFAULT_MASTER_PUBKEY_NAME = "master-public.pem"
PASSPHRASE_ENV = ("CAIRN_ENCRYPTION_PASSWORD", "PBS_ENCRYPTION_PASSWORD")
NEW_PASSPHRASE_ENV = ("CAIRN_NEW_ENCRYPTION_PASSWORD",)
CRYPT_MODES = ("none", "encrypt", "sign-only")


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "cairn"


def default_key_path() -> Path:
    return config_dir() / DEFAULT_KEY_NAME


def default_master_pubkey_path() -> Path:
    return config_dir() / DEFAULT_MASTER_PUBKEY_NAME


def _read_fd(fd: int, what: str) -> bytes:
    try:
        with os.fdopen(os.dup(fd), "rb") as f:
            return f.read()
    except OSError as err:
        raise UsageError(f"cannot read {what} from file descriptor {fd}: {err.strerror}") from None


def _given_passphrase(fd: int | None, env: tuple[str, ...]) -> bytes | None:
    """The passphrase from the descriptor or the environment, if one was given there."""
    if fd is not None:
        return _read_fd(fd, "passphrase").rstrip(b"\r\n")
    for name in env:
        value = os.environ.get(name)
        if value is not None:
            return value.encode()
    return None


def read_passphrase(
    prompt: str, fd: int | None = None, env: tuple[str, ...] = PASSPHRASE_ENV, confirm: bool = False
) -> bytes:
    """A passphrase from a descriptor, the environment, or (on a terminal) a prompt."""
    given = _given_passphrase(fd, env)
    if given is not None:
        return given
    if not sys.stdin.isatty():
        raise CryptError(f"a passphrase is needed: set {env[0]} or use --passphrase-fd (no terminal to ask on)")
    first = getpass.getpass(prompt).encode()
    if confirm and getpass.getpass("Verify passphrase: ").encode() != first:
        raise CryptError("passphrases do not match")
    return first


def read_key_config(path: Path) -> KeyConfig:
    try:
        return KeyConfig.from_json(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"key file {path} does not exist") from None
    except PermissionError:
        raise UsageError(f"cannot read key file {path}: permission denied") from None
    except FormatError as err:
        raise CryptError(f"{path} is not a valid key file: {err}") from None


def write_key_config(path: Path, config: KeyConfig, overwrite: bool = False) -> None:
    if path.exists() and not overwrite:
        raise UsageError(f"{path} already exists; refusing to overwrite a key")
    path.parent.mkdir(parents=True, exist_ok=True)
    replace_file(path, config.to_json().encode() + b"\n", mode=0o600)


@dataclass
class KeySource:
    """A key not yet unlocked: unlocking may prompt, so it happens only when needed."""

    config: KeyConfig
    origin: str
    passphrase_fd: int | None = None
    # The key being unlocked by unlock_in_background (its error waits for unlock()).
    _unlocking: Background | None = field(default=None, init=False, repr=False)

    def unlock_in_background(self) -> None:
        """Start unlocking on a thread when the passphrase is given (descriptor or environment).

        Deriving the key with PBS's scrypt parameters takes ~0.15 s, and hashlib releases the
        GIL meanwhile, so a command that calls this first gets its imports and the opening of
        the store for free. Any failure (a wrong passphrase, an unreadable descriptor) is left
        for :meth:`unlock` to raise, so it surfaces exactly where it did before, and a command
        that ends up not needing the key never reports it. A passphrase still to be typed is
        asked for by :meth:`unlock`, not here, so the prompt comes no earlier than it did.
        """
        if self._unlocking is not None or not self.config.needs_passphrase:
            return
        try:
            passphrase = _given_passphrase(self.passphrase_fd, PASSPHRASE_ENV)
        except UsageError:  # unlock() reads the descriptor again and reports it
            return
        if passphrase is not None:
            config = self.config
            self._unlocking = Background("cairn-unlock", lambda: config.decrypt(passphrase))
            self._unlocking.start()

    @property
    def unlocking(self) -> bool:
        """True while (or after) :meth:`unlock_in_background` derives the key on its thread."""
        return self._unlocking is not None

    @property
    def deriving(self) -> bool:
        """True while :meth:`unlock_in_background`'s thread is still deriving the key."""
        return self._unlocking is not None and self._unlocking.is_alive()

    def unlock(self) -> CryptConfig:
        """The unlocked key, waiting for :meth:`unlock_in_background` if it was started."""
        if self._unlocking is not None:
            return CryptConfig(self._unlocking.result()[0])
        passphrase = None
        if self.config.needs_passphrase:
            passphrase = read_passphrase(f"Encryption key password ({self.origin}): ", self.passphrase_fd)
        key, _, _ = self.config.decrypt(passphrase)
        return CryptConfig(key)


def find_key(keyfile: str | None, keyfd: int | None, passphrase_fd: int | None = None, use_default: bool = True) -> KeySource | None:
    if keyfile is not None and keyfd is not None:
        raise UsageError("--keyfile and --keyfd are mutually exclusive")
    if keyfile is not None:
        return KeySource(read_key_config(Path(keyfile)), keyfile, passphrase_fd)
    if keyfd is not None:
        try:
            config = KeyConfig.from_json(_read_fd(keyfd, "key"))
        except FormatError as err:
            raise CryptError(f"data on --keyfd {keyfd} is not a valid key file: {err}") from None
        return KeySource(config, f"fd {keyfd}", passphrase_fd)
    if use_default and default_key_path().exists():
        return KeySource(read_key_config(default_key_path()), "default key", passphrase_fd)
    return None


class DeferredCipher:
    """The key of a :class:`KeySource` still unlocking on its thread, usable as the
    :class:`CryptConfig` it becomes.

    A backup hands this to its chunk workers and starts walking and cutting at once; the
    first chunk digest waits for the unlock (~0.15 s of scrypt on the other core), and a
    wrong passphrase is raised there, failing the backup before anything is kept.
    """

    def __init__(self, source: KeySource) -> None:
        self._source = source
        self._lock = threading.Lock()
        self._cipher: CryptConfig | None = None

    def resolve(self) -> CryptConfig:
        cipher = self._cipher
        if cipher is None:
            with self._lock:
                if self._cipher is None:
                    self._cipher = self._source.unlock()
                cipher = self._cipher
        return cipher

    @property
    def ready(self) -> bool:
        """False while the key is still being derived on its thread (using it would wait)."""
        return self._cipher is not None or not self._source.deriving

    def __getattr__(self, name: str):
        return getattr(self.resolve(), name)


@dataclass
class BackupCrypto:
    mode: str  # none | encrypt | sign-only
    cipher: CryptConfig | DeferredCipher | None
    master_key_payload: bytes | None  # the key, RSA-encrypted for the master key


def backup_key(
    crypt_mode: str | None, keyfile: str | None, keyfd: int | None, master_pubkey_file: str | None,
    passphrase_fd: int | None = None,
) -> KeySource | None:
    """The key a backup uses under PBS's rules for explicit and default keys (None: no key).

    Its unlock is already started in the background (see :meth:`KeySource.unlock_in_background`);
    :func:`backup_crypto` waits for it.
    """
    if crypt_mode == "none":
        if keyfile is not None or keyfd is not None:
            raise UsageError("--keyfile/--keyfd and --crypt-mode=none are mutually exclusive")
        return None
    source = find_key(keyfile, keyfd, passphrase_fd)
    if source is None:
        if crypt_mode is not None:
            raise UsageError(f"--crypt-mode {crypt_mode} needs --keyfile (and no default key exists)")
        if master_pubkey_file is not None:
            raise UsageError("--master-pubkey-file needs an encryption key (--keyfile)")
        return None
    source.unlock_in_background()
    return source


def backup_crypto(
    crypt_mode: str | None, source: KeySource | None, master_pubkey_file: str | None
) -> BackupCrypto:
    """How a backup is protected: the unlocked key of :func:`backup_key` and its master-key copy."""
    if source is None:
        return BackupCrypto("none", None, None)
    master_path = Path(master_pubkey_file) if master_pubkey_file else default_master_pubkey_path()
    wants_master = master_pubkey_file is not None or master_path.exists()
    if source.unlocking and not wants_master:
        return BackupCrypto(crypt_mode or "encrypt", DeferredCipher(source), None)
    cipher = source.unlock()
    payload = None
    if wants_master:
        from cairn.format.rsa_key import rsa_encrypt_key_config  # RSA costs imports; few backups need it

        try:
            master = master_path.read_bytes()
        except OSError as err:
            raise UsageError(f"cannot read master public key {master_path}: {err.strerror}") from None
        # PBS stores a passphrase-less copy of the key, keeping its creation time.
        plain = create_key_config(cipher.key, None, "none", created=source.config.created)
        payload = rsa_encrypt_key_config(master, plain)
    return BackupCrypto(crypt_mode or "encrypt", cipher, payload)
