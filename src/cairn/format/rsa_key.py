"""The master key: an RSA key pair that lets an administrator recover any backup's key.

With a master public key configured, PBS's client writes into every encrypted snapshot a
blob ``rsa-encrypted.key.blob`` (unencrypted, uncompressed DataBlob). Its payload, which is
what this module produces and reads, is the compact JSON of a key file *without* a
passphrase (``kdf: null``, the raw key in ``data``, ``created`` kept from the original key
file) encrypted with RSA PKCS#1 v1.5 padding; the result is exactly as long as the modulus
(512 bytes for PBS's 4096-bit keys). See PBS ``pbs-key-config`` (rsa_encrypt_key_config) and
``proxmox-backup-client`` (backup, ``key create-master-key``, ``key import-with-master-key``).

``key create-master-key`` writes ``master-public.pem`` (SubjectPublicKeyInfo PEM) and
``master-private.pem`` (PKCS#8 PEM encrypted with AES-256-CBC via PBES2; OpenSSL 3 picks
PBKDF2-HMAC-SHA256 for it, which is what ``cryptography`` writes too).
"""

from __future__ import annotations

from dataclasses import dataclass

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from cairn.errors import CryptError, FormatError, UsageError
from cairn.format.keyfile import MIN_PASSPHRASE_LEN, KeyConfig, create_key_config

#: PBS generates 4096-bit master keys with OpenSSL's default public exponent.
MASTER_KEY_BITS = 4096
PUBLIC_EXPONENT = 65537


@dataclass(frozen=True)
class MasterKeyPair:
    """PEM texts as PBS writes them to master-private.pem and master-public.pem."""

    private_pem: bytes
    public_pem: bytes


def generate_master_key(passphrase: bytes, bits: int = MASTER_KEY_BITS) -> MasterKeyPair:
    """A new RSA key pair, its private half locked by ``passphrase``.

    ``bits`` exists so tests can use small, fast keys; keep PBS's 4096 for real keys.
    """
    if len(passphrase) < MIN_PASSPHRASE_LEN:
        raise UsageError(
            f"master key passphrase is too short (at least {MIN_PASSPHRASE_LEN} bytes)"
        )
    private = rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=bits)
    return MasterKeyPair(
        private_pem=private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(passphrase),
        ),
        public_pem=private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )


def load_master_public_key(public_pem: bytes) -> rsa.RSAPublicKey:
    """Read a master public key, refusing anything but RSA."""
    try:
        key = serialization.load_pem_public_key(public_pem)
    except (ValueError, UnsupportedAlgorithm) as err:
        raise FormatError(f"unable to decode PEM public key: {err}") from None
    if not isinstance(key, rsa.RSAPublicKey):
        raise FormatError("master public key is not an RSA key")
    return key


def rsa_encrypt_key_config(public_pem: bytes, key_config: KeyConfig) -> bytes:
    """The payload of ``rsa-encrypted.key.blob`` for ``key_config``.

    PBS passes a passphrase-less copy of the backup key (see :func:`master_key_config`).
    """
    key = load_master_public_key(public_pem)
    plaintext = key_config.to_json().encode()
    limit = key.key_size // 8 - 11  # PKCS#1 v1.5 needs 11 bytes of padding
    if len(plaintext) > limit:
        raise CryptError(
            f"key file JSON ({len(plaintext)} bytes) is too long for a "
            f"{key.key_size}-bit master key"
        )
    return key.encrypt(plaintext, padding.PKCS1v15())


def rsa_decrypt_key_config(private_pem: bytes, passphrase: bytes | None, data: bytes) -> KeyConfig:
    """Recover the key config from ``rsa-encrypted.key.blob``'s payload with the private key.

    Accepts the PKCS#8 PEM PBS writes and the older ``RSA PRIVATE KEY`` PEM, as OpenSSL does.
    Unlock the result with :meth:`KeyConfig.decrypt` (no passphrase for PBS's own blobs).
    """
    key = _load_private_key(private_pem, passphrase)
    if not isinstance(key, rsa.RSAPrivateKey):
        raise CryptError("master private key is not an RSA key")
    if len(data) != key.key_size // 8:
        raise CryptError(
            f"encrypted key is {len(data)} bytes, a {key.key_size}-bit master key expects "
            f"{key.key_size // 8} (wrong master key?)"
        )
    try:
        plaintext = key.decrypt(data, padding.PKCS1v15())
    except ValueError:
        raise CryptError("failed to decrypt key config with RSA (wrong master key?)") from None
    try:
        return KeyConfig.from_json(plaintext)
    except FormatError:
        # OpenSSL's implicit rejection turns a wrong key into random bytes, not an error.
        raise CryptError(
            "RSA-decrypted data is not a key config (wrong master key or corrupt blob)"
        ) from None


def master_key_config(
    key_config: KeyConfig, passphrase: bytes | None, now: int | None = None
) -> KeyConfig:
    """The passphrase-less copy of a backup key that PBS RSA-encrypts into each snapshot.

    It carries the original ``created``; ``modified`` is now, as in PBS.
    """
    key, created, _ = key_config.decrypt(passphrase)
    return create_key_config(key, None, "none", now=now, created=created)


def _load_private_key(private_pem: bytes, passphrase: bytes | None) -> object:
    """Load a PEM private key; like OpenSSL, ignore a passphrase the key does not need."""
    try:
        return serialization.load_pem_private_key(private_pem, password=passphrase or None)
    except TypeError:
        if not passphrase:
            raise CryptError("master private key is encrypted; a passphrase is needed") from None
        try:
            return serialization.load_pem_private_key(private_pem, password=None)
        except (TypeError, ValueError, UnsupportedAlgorithm):
            pass
    except (ValueError, UnsupportedAlgorithm):
        pass
    raise CryptError(
        "failed to read PEM private key (wrong master key passphrase or not a PEM key)"
    )
