"""The snapshot manifest, ``index.json.blob``.

A manifest lists every archive of a snapshot with its size, checksum and crypt mode. Its
JSON has PBS's shape and key order; the signed part (everything but ``unprotected`` and
``signature``) is authenticated with the key's HMAC over canonical JSON (sorted keys, no
whitespace), so that verification state and notes can change without re-signing.
"""

from __future__ import annotations

import hmac
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from cairn.errors import CryptError, FormatError, IntegrityError

MANIFEST_BLOB_NAME = "index.json.blob"
CLIENT_LOG_BLOB_NAME = "client.log.blob"
ENCRYPTED_KEY_BLOB_NAME = "rsa-encrypted.key.blob"
CATALOG_NAME = "catalog.pcat1.didx"

CRYPT_MODES = ("none", "encrypt", "sign-only")
BACKUP_TYPES = ("vm", "ct", "host")


class Signer(Protocol):
    def compute_auth_tag(self, data: bytes) -> bytes: ...

    def fingerprint_str(self) -> str: ...


def archive_kind(filename: str) -> str:
    """'fidx', 'didx' or 'blob', from an archive's file name (as PBS's ArchiveType)."""
    for kind in ("fidx", "didx", "blob"):
        if filename.endswith("." + kind):
            return kind
    raise FormatError(f"unknown archive type: {filename!r}")


@dataclass
class FileInfo:
    filename: str
    size: int
    csum: bytes
    crypt_mode: str = "none"

    def to_json(self) -> dict[str, Any]:
        return {
            "filename": self.filename,
            "crypt-mode": self.crypt_mode,
            "size": self.size,
            "csum": self.csum.hex(),
        }


@dataclass
class Manifest:
    backup_type: str
    backup_id: str
    backup_time: int
    files: list[FileInfo] = field(default_factory=list)
    unprotected: dict[str, Any] = field(default_factory=dict)
    signature: str | None = None

    def add_file(self, filename: str, size: int, csum: bytes, crypt_mode: str = "none") -> None:
        archive_kind(filename)
        if crypt_mode not in CRYPT_MODES:
            raise FormatError(f"unknown crypt mode {crypt_mode!r}")
        if any(f.filename == filename for f in self.files):
            raise FormatError(f"archive {filename!r} is already in the manifest")
        self.files.append(FileInfo(filename, size, csum, crypt_mode))

    def lookup(self, filename: str) -> FileInfo:
        for info in self.files:
            if info.filename == filename:
                return info
        raise KeyError(filename)

    def _signed_value(self) -> dict[str, Any]:
        return {
            "backup-type": self.backup_type,
            "backup-id": self.backup_id,
            "backup-time": self.backup_time,
            "files": [f.to_json() for f in self.files],
        }

    def to_json_value(self) -> dict[str, Any]:
        value = self._signed_value()
        value["unprotected"] = self.unprotected
        value["signature"] = self.signature
        return value

    def compute_signature(self, signer: Signer) -> str:
        return signer.compute_auth_tag(canonical_json(self._signed_value())).hex()

    def sign(self, signer: Signer) -> None:
        """Sign the manifest and record the key's fingerprint, as PBS does."""
        self.signature = self.compute_signature(signer)
        self.unprotected["key-fingerprint"] = signer.fingerprint_str()

    @property
    def key_fingerprint(self) -> str | None:
        return self.unprotected.get("key-fingerprint")

    def check_key(self, signer: Signer | None) -> None:
        """Refuse a missing or wrong key before any data is read, naming the fingerprints."""
        self.check_fingerprint(None if signer is None else signer.fingerprint_str())

    def check_fingerprint(self, fingerprint: str | None) -> None:
        """:meth:`check_key` for a key known only by its fingerprint (a locked key file)."""
        expected = self.key_fingerprint
        if expected is None:
            return
        if fingerprint is None:
            raise CryptError(f"missing key - snapshot was created with key {expected}")
        if fingerprint != expected:
            raise CryptError(
                f"wrong key - snapshot's key {expected} does not match provided key {fingerprint}"
            )

    def verify_signature(self, signer: Signer) -> None:
        if self.signature is None:
            return
        if not hmac.compare_digest(self.compute_signature(signer), self.signature):
            raise IntegrityError("manifest signature is invalid (tampered or wrong key)")

    def to_bytes(self) -> bytes:
        """Pretty JSON with two-space indent, as serde_json's pretty printer writes it."""
        return json.dumps(self.to_json_value(), indent=2, ensure_ascii=False).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Manifest:
        try:
            value = json.loads(data)
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise FormatError(f"manifest is not valid JSON ({err})") from None
        try:
            files = [
                FileInfo(
                    filename=str(f["filename"]),
                    size=int(f["size"]),
                    csum=bytes.fromhex(f["csum"]),
                    crypt_mode=f.get("crypt-mode", "none"),
                )
                for f in value["files"]
            ]
            manifest = cls(
                backup_type=str(value["backup-type"]),
                backup_id=str(value["backup-id"]),
                backup_time=int(value["backup-time"]),
                files=files,
                unprotected=dict(value.get("unprotected") or {}),
                signature=value.get("signature"),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise FormatError(f"manifest is malformed ({err!r})") from None
        for info in files:
            if len(info.csum) != 32 or info.crypt_mode not in CRYPT_MODES:
                raise FormatError(f"manifest entry for {info.filename!r} is malformed")
        return manifest


def canonical_json(value: Any) -> bytes:
    """Sorted keys and no whitespace: the byte form PBS signs."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
