"""PBS key files: the JSON that holds an encryption key, optionally locked by a passphrase.

Layout (PBS ``pbs-key-config``, serialized by serde_json in struct field order)::

    {"kdf":<kdf>,"created":"<rfc3339>","modified":"<rfc3339>","data":"<base64>",
     "fingerprint":"<32 hex pairs joined by ':'>","hint":"<text>"}

- ``kdf`` is ``null`` for a plain key, else serde's externally tagged enum:
  ``{"Scrypt":{"n":65536,"r":8,"p":1,"salt":"<base64>"}}`` or
  ``{"PBKDF2":{"iter":65535,"salt":"<base64>"}}``. New keys get a 32-byte random salt.
- ``data`` is the raw 32-byte key for ``kdf: null``; otherwise ``iv(16) | tag(16) |
  ciphertext(32)`` of AES-256-GCM (no associated data) under the key the KDF derives.
- ``created``/``modified`` are epoch seconds written as RFC 3339 with a numeric offset and no
  fractional seconds (PBS writes local time; Cairn writes UTC as ``+00:00``, which PBS reads
  alike). ``fingerprint`` and ``hint`` are left out when absent.

The paper key is the pretty-printed JSON between ``-----BEGIN PROXMOX BACKUP KEY-----`` and
``-----END PROXMOX BACKUP KEY-----`` lines, followed by a QR code of the same lines
(PBS ``pbs-datastore/src/paperkey.rs``).
"""

from __future__ import annotations

import base64
import binascii
import calendar
import hashlib
import html
import io
import json
import os
import re
import time
import unicodedata
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cairn.errors import CryptError, FormatError, IntegrityError, UsageError
from cairn.format import kdf_memo
from cairn.format.crypt import (
    IV_SIZE,
    KEY_SIZE,
    TAG_SIZE,
    CryptConfig,
    format_fingerprint,
    parse_fingerprint,
)

if TYPE_CHECKING:
    import segno

KdfName = Literal["none", "scrypt", "pbkdf2"]

#: PBS refuses to unlock a key with a shorter passphrase, so Cairn refuses to set one.
MIN_PASSPHRASE_LEN = 5
#: PBS's PASSWORD_HINT_SCHEMA: one line of 1 to 64 characters.
MAX_HINT_LEN = 64
_SALT_SIZE = 32
_U64_MAX = 2**64 - 1

PAPERKEY_BEGIN = "-----BEGIN PROXMOX BACKUP KEY-----"
PAPERKEY_END = "-----END PROXMOX BACKUP KEY-----"

_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:(Z)|([+-])(\d{2}):(\d{2}))", re.ASCII
)


@dataclass(frozen=True)
class ScryptParams:
    """scrypt parameters; the defaults are what PBS uses for new keys (64 MiB of memory)."""

    salt: bytes
    n: int = 65536
    r: int = 8
    p: int = 1

    def derive(self, passphrase: bytes) -> bytes:
        """The 32-byte AES key that locks the key file."""
        try:
            return kdf_memo.scrypt(passphrase, self.salt, self.n, self.r, self.p, KEY_SIZE)
        except (ValueError, OverflowError) as err:
            raise FormatError(f"key file has unusable scrypt parameters: {err}") from None


@dataclass(frozen=True)
class Pbkdf2Params:
    """PBKDF2-HMAC-SHA256 parameters; the default count is what PBS uses for new keys."""

    salt: bytes
    iterations: int = 65535

    def derive(self, passphrase: bytes) -> bytes:
        """The 32-byte AES key that locks the key file."""
        try:
            return hashlib.pbkdf2_hmac("sha256", passphrase, self.salt, self.iterations, KEY_SIZE)
        except (ValueError, OverflowError) as err:
            raise FormatError(f"key file has unusable PBKDF2 parameters: {err}") from None


KdfParams = ScryptParams | Pbkdf2Params


@dataclass(frozen=True)
class KeyConfig:
    """One key file. ``data`` is the raw key when ``kdf`` is None, else the sealed key."""

    kdf: KdfParams | None
    created: int
    modified: int
    data: bytes
    fingerprint: bytes | None = None
    hint: str | None = None

    @property
    def needs_passphrase(self) -> bool:
        """Whether :meth:`decrypt` needs a passphrase."""
        return self.kdf is not None

    @property
    def kdf_name(self) -> KdfName:
        """The KDF as PBS names it in ``key show`` and on the command line."""
        if isinstance(self.kdf, ScryptParams):
            return "scrypt"
        if isinstance(self.kdf, Pbkdf2Params):
            return "pbkdf2"
        return "none"

    def to_json(self, *, pretty: bool = False) -> str:
        """Serialize as PBS does: compact for key files, ``pretty`` for paper keys."""
        obj: dict[str, Any] = {
            "kdf": _kdf_to_json(self.kdf),
            "created": _epoch_to_rfc3339(self.created),
            "modified": _epoch_to_rfc3339(self.modified),
            "data": _b64(self.data),
        }
        if self.fingerprint is not None:
            obj["fingerprint"] = format_fingerprint(self.fingerprint)
        if self.hint is not None:
            obj["hint"] = self.hint
        if pretty:
            return json.dumps(obj, indent=2, ensure_ascii=False)
        return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyConfig:
        """Parse a key file, accepting exactly what PBS's serde schema accepts.

        Unknown fields are ignored (as serde does); everything else malformed is a FormatError.
        """
        try:
            obj = json.loads(text)
        except (ValueError, RecursionError) as err:
            raise FormatError(f"key file is not valid JSON: {err}") from None
        if not isinstance(obj, dict):
            raise FormatError("key file is not a JSON object")
        fingerprint = obj.get("fingerprint")
        hint = obj.get("hint")
        if hint is not None and not isinstance(hint, str):
            raise FormatError("key file field 'hint' is not a string")
        return cls(
            kdf=_kdf_from_json(obj.get("kdf")),
            created=_rfc3339_to_epoch(_required_str(obj, "created")),
            modified=_rfc3339_to_epoch(_required_str(obj, "modified")),
            data=_unb64(_required_str(obj, "data"), "data"),
            fingerprint=None if fingerprint is None else _fingerprint_field(fingerprint),
            hint=hint,
        )

    def decrypt(self, passphrase: bytes | None = None) -> tuple[bytes, int, bytes]:
        """Unlock the key; returns ``(key, created, fingerprint)``.

        The fingerprint is always recomputed from the key; a stored one that disagrees means
        the file was altered or mixed up, and is refused rather than trusted.
        """
        if self.kdf is None:
            key = self.data
        else:
            key = self._unseal(self.kdf, passphrase)
        if len(key) != KEY_SIZE:
            raise FormatError(f"key file holds a {len(key)}-byte key, expected {KEY_SIZE}")
        fingerprint = CryptConfig(key).fingerprint()
        if self.fingerprint is not None and self.fingerprint != fingerprint:
            raise IntegrityError(
                f"key file says fingerprint {format_fingerprint(self.fingerprint)}, "
                f"but the key in it has fingerprint {format_fingerprint(fingerprint)}"
            )
        return key, self.created, fingerprint

    def _unseal(self, kdf: KdfParams, passphrase: bytes | None) -> bytes:
        if passphrase is None:
            raise CryptError("this key is protected by a passphrase, and none was given")
        if len(passphrase) < MIN_PASSPHRASE_LEN:
            raise CryptError(f"passphrase is too short (at least {MIN_PASSPHRASE_LEN} bytes)")
        if len(self.data) < IV_SIZE + TAG_SIZE:
            raise FormatError("key file data is too short to hold an encrypted key")
        iv, tag = self.data[:IV_SIZE], self.data[IV_SIZE : IV_SIZE + TAG_SIZE]
        ciphertext = self.data[IV_SIZE + TAG_SIZE :]
        try:
            return AESGCM(kdf.derive(passphrase)).decrypt(iv, ciphertext + tag, None)
        except InvalidTag:
            reminder = f" (password hint: {self.hint})" if self.hint is not None else ""
            raise CryptError(f"wrong passphrase: unable to decrypt key{reminder}") from None


def create_key_config(
    key: bytes,
    passphrase: bytes | None,
    kdf: KdfName | KdfParams = "scrypt",
    hint: str | None = None,
    *,
    now: int | None = None,
    created: int | None = None,
) -> KeyConfig:
    """Write ``key`` into a new key file, sealed under ``passphrase`` unless ``kdf`` is "none".

    ``kdf`` is a name (PBS's parameters and a fresh salt) or explicit parameters. ``now``
    (default: the clock) stamps ``modified``, and ``created`` unless an older ``created`` is
    kept, as PBS does when it re-locks or re-imports a key.
    """
    if len(key) != KEY_SIZE:
        raise FormatError(f"an encryption key has {KEY_SIZE} bytes, got {len(key)}")
    stamp = int(time.time()) if now is None else now
    fingerprint = CryptConfig(key).fingerprint()
    params = _kdf_params(kdf)
    if params is None:
        if passphrase is not None:
            raise UsageError("a passphrase needs kdf 'scrypt' or 'pbkdf2', not 'none'")
        if hint is not None:
            raise UsageError("a password hint is not allowed for kdf 'none'")
        data = bytes(key)
    else:
        if passphrase is None:
            raise UsageError("a key protected by scrypt or pbkdf2 needs a passphrase")
        if len(passphrase) < MIN_PASSPHRASE_LEN:
            raise UsageError(f"passphrase is too short (at least {MIN_PASSPHRASE_LEN} bytes)")
        if hint is not None:
            _check_hint(hint)
        iv = os.urandom(IV_SIZE)
        sealed = AESGCM(params.derive(passphrase)).encrypt(iv, bytes(key), None)
        data = iv + sealed[-TAG_SIZE:] + sealed[:-TAG_SIZE]
    return KeyConfig(
        kdf=params,
        created=stamp if created is None else created,
        modified=stamp,
        data=data,
        fingerprint=fingerprint,
        hint=hint,
    )


def change_passphrase(
    config: KeyConfig,
    old_passphrase: bytes | None,
    new_passphrase: bytes | None,
    kdf: KdfName | KdfParams = "scrypt",
    hint: str | None = None,
    *,
    now: int | None = None,
) -> KeyConfig:
    """Re-lock a key under a new passphrase (or none), keeping its creation time."""
    key, created, _ = config.decrypt(old_passphrase)
    return create_key_config(key, new_passphrase, kdf, hint, now=now, created=created)


def paperkey_text(source: KeyConfig | str, subject: str | None = None) -> str:
    """The text page ``proxmox-backup-client key paperkey --output-format text`` prints.

    ``source`` is a key config, or the text of a key file or of a PEM private (master) key.
    A key file becomes its pretty JSON between the BEGIN/END lines plus one QR code; a master
    key is printed as numbered lines in blocks of five, each with its QR code and a page break.
    The QR codes use the same settings as PBS (level M, no margin, dark modules as '█' and
    half blocks) but another encoder, so they may differ bit for bit while scanning the same.
    """
    lines, is_master = _paperkey_lines(source)
    out = io.StringIO()
    if subject is not None:
        out.write(f"Subject: {subject}\n\n")
    if is_master:
        for start in range(0, len(lines), 5):
            block = lines[start : start + 5]
            for number, line in enumerate(block, start):
                out.write(f"{number:2}: {line}\n")
            out.write(_qr_text(block) + "\n")
            out.write("\f\n")
        return out.getvalue()
    out.write(PAPERKEY_BEGIN + "\n")
    for line in lines:
        out.write(line + "\n")
    out.write(PAPERKEY_END + "\n")
    out.write(_qr_text(lines) + "\n")
    return out.getvalue()


def paperkey_html(source: KeyConfig | str, subject: str | None = None) -> str:
    """The printable HTML page PBS's paperkey makes by default, with SVG QR codes.

    Same content as :func:`paperkey_text`; unlike PBS, text is HTML-escaped so a hint or
    subject containing '<' or '&' cannot break the page.
    """
    lines, is_master = _paperkey_lines(source)
    out = io.StringIO()
    out.write(
        "<!DOCTYPE html>\n"
        '<html lang="en">\n'
        "<head>\n"
        '<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1.0">\n'
        "<title>Proxmox Backup Paperkey</title>\n"
        '<style type="text/css">\n'
        "  p {\n"
        "    font-size: 12pt;\n"
        "    font-family: monospace;\n"
        "    white-space: pre-wrap;\n"
        "    line-break: anywhere;\n"
        "  }\n"
        "</style>\n"
        "</head>\n"
        "<body>\n"
    )
    if subject is not None:
        out.write(f"<p>Subject: {html.escape(subject, quote=False)}</p>\n")
    if is_master:
        for start in range(0, len(lines), 20):
            block = lines[start : start + 20]
            out.write('<div style="page-break-inside: avoid;page-break-after: always">\n<p>\n')
            for number, line in enumerate(block, start):
                out.write(f"{number:02}: {html.escape(line, quote=False)}\n")
            out.write("</p>\n" + _qr_img(block) + "</div>\n")
    else:
        out.write('<div style="page-break-inside: avoid">\n<p>\n' + PAPERKEY_BEGIN + "\n")
        for line in lines:
            out.write(html.escape(line, quote=False) + "\n")
        out.write(PAPERKEY_END + "\n</p>\n" + _qr_img(lines) + "</div>\n")
    out.write("</body>\n</html>\n")
    return out.getvalue()


def parse_paperkey(text: str) -> KeyConfig:
    """Read a key back from a paper key's text (or from plain key file JSON).

    Like PBS's key import, the JSON is whatever stands between the BEGIN and END lines, so
    surrounding text, the QR code and re-typed whitespace do not matter.
    """
    begin = text.find(PAPERKEY_BEGIN)
    if begin < 0:
        if text.lstrip().startswith("{"):
            return KeyConfig.from_json(text)
        raise FormatError(f"no '{PAPERKEY_BEGIN}' line found: not a paper key")
    body_start = begin + len(PAPERKEY_BEGIN)
    end = text.find(PAPERKEY_END, body_start)
    if end < 0:
        raise FormatError(f"paper key has no '{PAPERKEY_END}' line after its start")
    return KeyConfig.from_json(text[body_start:end])


def _paperkey_lines(source: KeyConfig | str) -> tuple[list[str], bool]:
    """The lines to print and whether they are a master key, checked as PBS checks them."""
    if isinstance(source, KeyConfig):
        return source.to_json(pretty=True).splitlines(), False
    if source.startswith(
        ("-----BEGIN ENCRYPTED PRIVATE KEY-----\n", "-----BEGIN RSA PRIVATE KEY-----\n")
    ):
        trimmed = source.rstrip()
        if not trimmed.endswith(
            ("\n-----END ENCRYPTED PRIVATE KEY-----", "\n-----END RSA PRIVATE KEY-----")
        ):
            raise FormatError("unexpected private key format: no matching END line")
        lines = [line.rstrip() for line in trimmed.splitlines() if line.strip()]
        if len(lines) < 20:
            raise FormatError("unexpected private key format: too short for an RSA key")
        return lines, True
    try:
        config = KeyConfig.from_json(source)
    except FormatError as err:
        raise FormatError(f"neither a PEM private key nor a PBS key file ({err})") from None
    return config.to_json(pretty=True).splitlines(), False


def _qr_code(lines: list[str]) -> segno.QRCode:
    # Imported here, not at the top: segno pulls in urllib, http.client and ssl, which only
    # the paper key needs, while every command that unlocks a key imports this module.
    import segno

    # PBS pipes the lines joined by '\n' into `qrencode -lm`: error level M, never raised.
    return segno.make("\n".join(lines).encode(), error="m", boost_error=False, micro=False)


def _qr_text(lines: list[str]) -> str:
    """The QR code as `qrencode -t utf8i -m0`: two module rows per text line."""
    matrix = _qr_code(lines).matrix
    glyphs = {(True, True): "█", (True, False): "▀", (False, True): "▄", (False, False): " "}
    rows = []
    for y in range(0, len(matrix), 2):
        upper = matrix[y]
        lower = matrix[y + 1] if y + 1 < len(matrix) else bytes(len(upper))
        rows.append("".join(glyphs[bool(a), bool(b)] for a, b in zip(upper, lower, strict=True)))
    return "\n".join(rows) + "\n"


def _qr_img(lines: list[str]) -> str:
    svg = io.BytesIO()
    _qr_code(lines).save(svg, kind="svg", border=0, scale=1, omitsize=True)
    data = base64.b64encode(svg.getvalue()).decode().rstrip("=")
    return (
        '<center>\n<img\nwidth="500pt" height="500pt"\n'
        f'src="data:image/svg+xml;base64,{data}"/>\n</center>\n'
    )


def _kdf_params(kdf: KdfName | KdfParams) -> KdfParams | None:
    if isinstance(kdf, (ScryptParams, Pbkdf2Params)):
        return kdf
    if kdf == "scrypt":
        return ScryptParams(salt=os.urandom(_SALT_SIZE))
    if kdf == "pbkdf2":
        return Pbkdf2Params(salt=os.urandom(_SALT_SIZE))
    if kdf == "none":
        return None
    raise UsageError(f"unknown kdf {kdf!r} (expected none, scrypt or pbkdf2)")


def _check_hint(hint: str) -> None:
    if not 1 <= len(hint) <= MAX_HINT_LEN:
        raise UsageError(f"password hint must be 1 to {MAX_HINT_LEN} characters long")
    if any(unicodedata.category(c) == "Cc" for c in hint):
        raise UsageError("password hint must be a single line without control characters")


def _kdf_to_json(kdf: KdfParams | None) -> dict[str, Any] | None:
    if isinstance(kdf, ScryptParams):
        return {"Scrypt": {"n": kdf.n, "r": kdf.r, "p": kdf.p, "salt": _b64(kdf.salt)}}
    if isinstance(kdf, Pbkdf2Params):
        return {"PBKDF2": {"iter": kdf.iterations, "salt": _b64(kdf.salt)}}
    return None


def _kdf_from_json(value: Any) -> KdfParams | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) != 1:
        raise FormatError(
            'key file field \'kdf\' must be null or one of {"Scrypt": …}, {"PBKDF2": …}'
        )
    ((variant, params),) = value.items()
    if not isinstance(params, dict):
        raise FormatError(f"key file kdf {variant!r} has no parameter object")
    if variant == "Scrypt":
        return ScryptParams(
            salt=_unb64(_required_str(params, "salt"), "salt"),
            n=_required_u64(params, "n"),
            r=_required_u64(params, "r"),
            p=_required_u64(params, "p"),
        )
    if variant == "PBKDF2":
        return Pbkdf2Params(
            salt=_unb64(_required_str(params, "salt"), "salt"),
            iterations=_required_u64(params, "iter"),
        )
    raise FormatError(f"key file has unknown kdf {variant!r} (expected Scrypt or PBKDF2)")


def _required_str(obj: dict[str, Any], name: str) -> str:
    value = obj.get(name)
    if not isinstance(value, str):
        raise FormatError(f"key file field {name!r} is missing or not a string")
    return value


def _required_u64(obj: dict[str, Any], name: str) -> int:
    value = obj.get(name)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
        raise FormatError(f"key file kdf parameter {name!r} is missing or not an unsigned integer")
    return value


def _fingerprint_field(value: Any) -> bytes:
    if not isinstance(value, str):
        raise FormatError("key file field 'fingerprint' is not a string")
    return parse_fingerprint(value)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _unb64(text: str, name: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise FormatError(f"key file field {name!r} is not valid base64") from None


def _epoch_to_rfc3339(epoch: int) -> str:
    """UTC in the shape proxmox-time writes (numeric offset, whole seconds)."""
    try:
        tm = time.gmtime(epoch)
    except (OverflowError, OSError, ValueError):
        raise FormatError(f"timestamp {epoch} is out of range") from None
    if not 1 <= tm.tm_year <= 9999:
        raise FormatError(f"timestamp {epoch} is outside the years 0001-9999")
    return (
        f"{tm.tm_year:04}-{tm.tm_mon:02}-{tm.tm_mday:02}"
        f"T{tm.tm_hour:02}:{tm.tm_min:02}:{tm.tm_sec:02}+00:00"
    )


def _rfc3339_to_epoch(text: str) -> int:
    """Parse as proxmox-time's parse_rfc3339: 'Z' or '±hh:mm', no fractional seconds.

    Day overflow (e.g. Feb 30) rolls over into the next month, as libc's timegm does there.
    """
    match = _RFC3339.fullmatch(text)
    if match is None:
        raise FormatError(f"not an RFC 3339 timestamp: {text!r}")
    year, month, day, hour, minute, second = (int(g) for g in match.group(1, 2, 3, 4, 5, 6))
    if not (1 <= month <= 12 and 1 <= day <= 31 and hour <= 23 and minute <= 59 and second <= 60):
        raise FormatError(f"timestamp has a field out of range: {text!r}")
    offset = 0
    if match.group(7) is None:
        tz_hour, tz_min = int(match.group(9)), int(match.group(10))
        if tz_hour > 23 or tz_min > 59:
            raise FormatError(f"timestamp has an invalid UTC offset: {text!r}")
        offset = (tz_hour * 3600 + tz_min * 60) * (1 if match.group(8) == "+" else -1)
    try:
        return calendar.timegm((year, month, day, hour, minute, second)) - offset
    except ValueError:
        raise FormatError(f"timestamp is out of range: {text!r}") from None
