"""Byte layout of single pxar items: building them and checking/parsing them.

Every item is ``htype u64 | full_size u64 | content`` where ``full_size`` counts the
16-byte header too. Builders validate what the caller passes (a value that does not fit
would make an archive no reader accepts); parsers treat their input as hostile and raise
``FormatError`` with the item's offset.
"""

import struct

from cairn.errors import FormatError

from .constants import (
    FORMAT_VERSION_1,
    FORMAT_VERSION_2,
    HEADER_SIZE,
    ITEM_NAMES,
    MAX_FILENAME_LEN,
    MAX_PATH_LEN,
    MAX_PRELUDE_LEN,
    MAX_XATTR_LEN,
    PXAR_ACL_DEFAULT,
    PXAR_ACL_DEFAULT_GROUP,
    PXAR_ACL_DEFAULT_USER,
    PXAR_ACL_GROUP,
    PXAR_ACL_GROUP_OBJ,
    PXAR_ACL_USER,
    PXAR_DEVICE,
    PXAR_ENTRY,
    PXAR_ENTRY_V1,
    PXAR_FCAPS,
    PXAR_FILENAME,
    PXAR_FORMAT_VERSION,
    PXAR_HARDLINK,
    PXAR_PAYLOAD_REF,
    PXAR_PRELUDE,
    PXAR_QUOTA_PROJID,
    PXAR_SYMLINK,
    PXAR_XATTR,
    S_IFMT,
    STAT_SIZE,
    STAT_V1_SIZE,
)
from .metadata import Acl, AclDefault, AclGroup, AclUser, Metadata

HEADER = struct.Struct("<QQ")
_STAT = struct.Struct("<QQIIqII")
_ENTRY_ITEM = struct.Struct("<QQQQIIqII")  # ENTRY header and stat in one pack
_ENTRY_MODE = struct.Struct("<QQQ")  # ENTRY header and mode
_ENTRY_FULL_SIZE = HEADER_SIZE + STAT_SIZE
_PAYLOAD_REF_ITEM = struct.Struct("<QQQQ")
_STAT_V1 = struct.Struct("<QQIIQ")
_U64 = struct.Struct("<Q")
_PAIR = struct.Struct("<QQ")
_QUAD = struct.Struct("<QQQQ")
_NANOS = 1_000_000_000

# Items after ENTRY that describe the entry further; an entry has any number of them.
ATTRIBUTE_ITEMS = frozenset(
    {
        PXAR_XATTR,
        PXAR_ACL_USER,
        PXAR_ACL_GROUP,
        PXAR_ACL_GROUP_OBJ,
        PXAR_ACL_DEFAULT,
        PXAR_ACL_DEFAULT_USER,
        PXAR_ACL_DEFAULT_GROUP,
        PXAR_FCAPS,
        PXAR_QUOTA_PROJID,
    }
)

# Largest content each item type may claim. Exact-size items are checked exactly when
# parsed; PAYLOAD and GOODBYE are streamed, never held whole, so they have no cap here.
MAX_CONTENT: dict[int, int] = {
    PXAR_FORMAT_VERSION: 8,
    PXAR_PRELUDE: MAX_PRELUDE_LEN,
    PXAR_ENTRY: STAT_SIZE,
    PXAR_ENTRY_V1: STAT_V1_SIZE,
    PXAR_FILENAME: MAX_FILENAME_LEN + 1,
    PXAR_SYMLINK: MAX_PATH_LEN + 1,
    PXAR_HARDLINK: MAX_PATH_LEN + 1 + 8,
    PXAR_DEVICE: 16,
    PXAR_XATTR: MAX_XATTR_LEN,
    PXAR_FCAPS: MAX_XATTR_LEN,
    PXAR_ACL_USER: 16,
    PXAR_ACL_DEFAULT_USER: 16,
    PXAR_ACL_GROUP: 16,
    PXAR_ACL_DEFAULT_GROUP: 16,
    PXAR_ACL_GROUP_OBJ: 8,
    PXAR_ACL_DEFAULT: 32,
    PXAR_QUOTA_PROJID: 8,
    PXAR_PAYLOAD_REF: 16,
}


def fail(at: int, htype: int | None, problem: str) -> FormatError:
    """A FormatError naming the archive position and item so a bad archive can be examined."""
    if htype is None:
        where = "item"
    elif htype in ITEM_NAMES:
        where = f"{ITEM_NAMES[htype]} item"
    else:
        where = f"item of type {htype:#018x}"
    return FormatError(f"pxar: {where} at offset {at}: {problem}")


def check_header(htype: int, full_size: int, at: int, remaining: int | None) -> int:
    """Validate a header's size claim and return the content size.

    ``remaining`` is how many bytes the surrounding range still holds from the header on,
    or None for a stream whose length is unknown (reads then fail at the real end).
    """
    if htype not in ITEM_NAMES:
        raise fail(at, htype, "no such item type exists")
    if full_size < HEADER_SIZE:
        raise fail(at, htype, f"size {full_size} is smaller than the item header")
    content = full_size - HEADER_SIZE
    limit = MAX_CONTENT.get(htype)
    if limit is not None and content > limit:
        raise fail(at, htype, f"content size {content} exceeds the limit of {limit}")
    if remaining is not None and full_size > remaining:
        raise fail(
            at,
            htype,
            f"size {full_size} runs past the end of its range ({remaining} left)",
        )
    return content


def header(htype: int, content_size: int) -> bytes:
    """The 16-byte header for an item with ``content_size`` bytes of content."""
    return HEADER.pack(htype, content_size + HEADER_SIZE)


def _item(htype: int, content: bytes) -> bytes:
    limit = MAX_CONTENT.get(htype)
    if limit is not None and len(content) > limit:
        raise FormatError(
            f"pxar: {ITEM_NAMES[htype]} content of {len(content)} bytes exceeds the limit of {limit}"
        )
    return header(htype, len(content)) + content


def _u64(value: int, what: str) -> int:
    if not 0 <= value < 1 << 64:
        raise FormatError(
            f"pxar: {what} {value} does not fit in an unsigned 64-bit field"
        )
    return value


def check_name(name: bytes) -> None:
    """Reject names pxar forbids; they would escape or break the directory they sit in."""
    if not name:
        raise FormatError("pxar: empty file name")
    if b"/" in name or b"\0" in name:
        raise FormatError(f"pxar: file name {name!r} contains '/' or NUL")
    if name in (b".", b".."):
        raise FormatError(f"pxar: file name {name!r} is not allowed")
    if len(name) > MAX_FILENAME_LEN:
        raise FormatError(f"pxar: file name longer than {MAX_FILENAME_LEN} bytes")


def _check_path(path: bytes, what: str) -> None:
    if b"\0" in path:
        raise FormatError(f"pxar: {what} {path!r} contains NUL")
    if len(path) > MAX_PATH_LEN:
        raise FormatError(f"pxar: {what} longer than {MAX_PATH_LEN} bytes")


# --- builders -------------------------------------------------------------------------------


def encode_format_version(version: int) -> bytes:
    """FORMAT_VERSION item; pxar writes it only for version 2 archives."""
    return _item(PXAR_FORMAT_VERSION, _U64.pack(version))


def encode_prelude(data: bytes) -> bytes:
    """PRELUDE item: an opaque blob right after FORMAT_VERSION (version 2 only)."""
    return _item(PXAR_PRELUDE, bytes(data))


def encode_filename(name: bytes) -> bytes:
    """FILENAME item: the name plus a terminating NUL."""
    check_name(name)
    return HEADER.pack(PXAR_FILENAME, len(name) + HEADER_SIZE + 1) + name + b"\0"


def encode_symlink(target: bytes) -> bytes:
    """SYMLINK item: the target plus a terminating NUL."""
    _check_path(target, "symlink target")
    return _item(PXAR_SYMLINK, target + b"\0")


def encode_hardlink(distance: int, target: bytes) -> bytes:
    """HARDLINK item: distance back to the target's FILENAME, then its path plus NUL."""
    _check_path(target, "hardlink target")
    return _item(PXAR_HARDLINK, _U64.pack(distance) + target + b"\0")


def encode_device(major: int, minor: int) -> bytes:
    """DEVICE item: major and minor number."""
    return _item(
        PXAR_DEVICE,
        _PAIR.pack(_u64(major, "device major"), _u64(minor, "device minor")),
    )


def encode_payload_ref(offset: int, size: int) -> bytes:
    """PAYLOAD_REF item: where a file's PAYLOAD header sits in the payload stream, and size."""
    return _PAYLOAD_REF_ITEM.pack(PXAR_PAYLOAD_REF, HEADER_SIZE + 16, offset, size)


def encode_stat(mode: int, flags: int, uid: int, gid: int, mtime_ns: int) -> bytes:
    """The ENTRY item alone: ``encode_metadata`` of metadata without attributes, for
    callers that need no ``Metadata`` object (one costs several times more than this)."""
    secs, nanos = divmod(mtime_ns, _NANOS)
    try:
        return _ENTRY_ITEM.pack(
            PXAR_ENTRY, _ENTRY_FULL_SIZE, mode, flags, uid, gid, secs, nanos, 0
        )
    except struct.error as exc:
        raise FormatError(f"pxar: metadata value out of range ({exc})") from None


def encode_metadata(md: Metadata) -> bytes:
    """ENTRY and attribute items in pxar's order: stat, xattrs, ACLs, fcaps, quota."""
    entry = encode_stat(md.mode, md.flags, md.uid, md.gid, md.mtime_ns)
    acl = md.acl
    if not (
        md.xattrs
        or acl.users
        or acl.groups
        or acl.group_obj is not None
        or acl.default is not None
        or acl.default_users
        or acl.default_groups
        or md.fcaps is not None
        or md.quota_project_id is not None
    ):
        return entry  # most files: the stat alone, without building a list of parts
    parts = [entry]
    for name, value in md.xattrs:
        if b"\0" in name:
            raise FormatError(f"pxar: xattr name {name!r} contains NUL")
        parts.append(_item(PXAR_XATTR, bytes(name) + b"\0" + bytes(value)))
    parts.extend(_encode_acl(md.acl))
    if md.fcaps is not None:
        parts.append(_item(PXAR_FCAPS, bytes(md.fcaps)))
    if md.quota_project_id is not None:
        projid = _u64(md.quota_project_id, "quota project id")
        parts.append(_item(PXAR_QUOTA_PROJID, _U64.pack(projid)))
    return b"".join(parts)


def _encode_acl(acl: Acl) -> list[bytes]:
    parts = []
    for user in acl.users:
        parts.append(_item(PXAR_ACL_USER, _acl_pair(user.uid, user.permissions)))
    for group in acl.groups:
        parts.append(_item(PXAR_ACL_GROUP, _acl_pair(group.gid, group.permissions)))
    if acl.group_obj is not None:
        parts.append(
            _item(PXAR_ACL_GROUP_OBJ, _U64.pack(_u64(acl.group_obj, "ACL permission")))
        )
    if acl.default is not None:
        d = acl.default
        values = (
            d.user_obj_permissions,
            d.group_obj_permissions,
            d.other_permissions,
            d.mask_permissions,
        )
        parts.append(
            _item(
                PXAR_ACL_DEFAULT,
                _QUAD.pack(*(_u64(v, "ACL permission") for v in values)),
            )
        )
    for user in acl.default_users:
        parts.append(
            _item(PXAR_ACL_DEFAULT_USER, _acl_pair(user.uid, user.permissions))
        )
    for group in acl.default_groups:
        parts.append(
            _item(PXAR_ACL_DEFAULT_GROUP, _acl_pair(group.gid, group.permissions))
        )
    return parts


def _acl_pair(ident: int, permissions: int) -> bytes:
    return _PAIR.pack(_u64(ident, "ACL id"), _u64(permissions, "ACL permission"))


def encoded_file_type(items: bytes) -> int:
    """The ``S_IFMT`` bits of metadata encoded by ``encode_metadata``, after checking that
    ``items`` are an ENTRY and attribute items laid end to end: bytes of that shape keep an
    archive decodable (that they hold what the caller claims is the caller's word)."""
    end = len(items)
    if end < _ENTRY_FULL_SIZE:
        raise FormatError("pxar: encoded metadata is too short for an ENTRY item")
    htype, full_size, mode = _ENTRY_MODE.unpack_from(items)
    if htype != PXAR_ENTRY or full_size != _ENTRY_FULL_SIZE:
        raise FormatError("pxar: encoded metadata does not start with an ENTRY item")
    pos = _ENTRY_FULL_SIZE
    while pos < end:
        if end - pos < HEADER_SIZE:
            raise FormatError("pxar: encoded metadata ends inside an item header")
        htype, full_size = HEADER.unpack_from(items, pos)
        if htype not in ATTRIBUTE_ITEMS:
            raise fail(pos, htype, "is not an attribute item")
        check_header(htype, full_size, pos, end - pos)
        pos += full_size
    return mode & S_IFMT


# --- parsers --------------------------------------------------------------------------------


def _exact(content: bytes, size: int, at: int, htype: int) -> None:
    if len(content) != size:
        raise fail(at, htype, f"content size {len(content)}, expected {size}")


def parse_format_version(content: bytes, at: int) -> int:
    _exact(content, 8, at, PXAR_FORMAT_VERSION)
    (version,) = _U64.unpack(content)
    if version not in (FORMAT_VERSION_1, FORMAT_VERSION_2):
        raise fail(at, PXAR_FORMAT_VERSION, f"unknown format version {version}")
    return version


def parse_stat(htype: int, content: bytes, at: int) -> Metadata:
    """ENTRY (current layout) or ENTRY_V1 (mtime as plain nanoseconds) into bare Metadata."""
    if htype == PXAR_ENTRY_V1:
        _exact(content, STAT_V1_SIZE, at, htype)
        mode, flags, uid, gid, mtime_ns = _STAT_V1.unpack(content)
        return Metadata(mode=mode, flags=flags, uid=uid, gid=gid, mtime_ns=mtime_ns)
    _exact(content, STAT_SIZE, at, htype)
    mode, flags, uid, gid, secs, nanos, _pad = _STAT.unpack(content)
    if nanos >= _NANOS:
        raise fail(at, htype, f"mtime nanoseconds {nanos} out of range")
    return Metadata(
        mode=mode, flags=flags, uid=uid, gid=gid, mtime_ns=secs * _NANOS + nanos
    )


def parse_filename(content: bytes, at: int) -> bytes:
    if not content.endswith(b"\0"):
        raise fail(at, PXAR_FILENAME, "name is not NUL-terminated")
    name = content[:-1]
    try:
        check_name(name)
    except FormatError as exc:
        raise fail(at, PXAR_FILENAME, str(exc).removeprefix("pxar: ")) from None
    return name


def parse_symlink(content: bytes, at: int) -> bytes:
    if not content.endswith(b"\0"):
        raise fail(at, PXAR_SYMLINK, "target is not NUL-terminated")
    return content[:-1]


def parse_hardlink(content: bytes, at: int) -> tuple[int, bytes]:
    """Return (distance back to the target's FILENAME, target path)."""
    if len(content) <= 8 or not content.endswith(b"\0"):
        raise fail(at, PXAR_HARDLINK, "too small or target not NUL-terminated")
    (distance,) = _U64.unpack_from(content)
    return distance, content[8:-1]


def parse_xattr(content: bytes, at: int) -> tuple[bytes, bytes]:
    name, sep, value = content.partition(b"\0")
    if not sep:
        raise fail(at, PXAR_XATTR, "missing NUL between name and value")
    return name, value


def parse_pair(htype: int, content: bytes, at: int) -> tuple[int, int]:
    """Two u64: DEVICE, PAYLOAD_REF and the per-id ACL items."""
    _exact(content, 16, at, htype)
    return _PAIR.unpack(content)


def parse_u64(htype: int, content: bytes, at: int) -> int:
    """One u64: ACL_GROUP_OBJ and QUOTA_PROJID."""
    _exact(content, 8, at, htype)
    return _U64.unpack(content)[0]


def parse_acl_default(content: bytes, at: int) -> AclDefault:
    _exact(content, 32, at, PXAR_ACL_DEFAULT)
    return AclDefault(*_QUAD.unpack(content))


def apply_attribute(md: Metadata, htype: int, content: bytes, at: int) -> None:
    """Add one attribute item (XATTR, ACL_*, FCAPS, QUOTA_PROJID) to ``md``.

    Single-valued attributes must not repeat: a second one means a corrupt or forged entry.
    """
    if htype == PXAR_XATTR:
        md.xattrs.append(parse_xattr(content, at))
    elif htype == PXAR_ACL_USER:
        md.acl.users.append(AclUser(*parse_pair(htype, content, at)))
    elif htype == PXAR_ACL_GROUP:
        md.acl.groups.append(AclGroup(*parse_pair(htype, content, at)))
    elif htype == PXAR_ACL_DEFAULT_USER:
        md.acl.default_users.append(AclUser(*parse_pair(htype, content, at)))
    elif htype == PXAR_ACL_DEFAULT_GROUP:
        md.acl.default_groups.append(AclGroup(*parse_pair(htype, content, at)))
    elif htype == PXAR_ACL_GROUP_OBJ:
        _once(md.acl.group_obj, at, htype)
        md.acl.group_obj = parse_u64(htype, content, at)
    elif htype == PXAR_ACL_DEFAULT:
        _once(md.acl.default, at, htype)
        md.acl.default = parse_acl_default(content, at)
    elif htype == PXAR_FCAPS:
        _once(md.fcaps, at, htype)
        md.fcaps = content
    elif htype == PXAR_QUOTA_PROJID:
        _once(md.quota_project_id, at, htype)
        md.quota_project_id = parse_u64(htype, content, at)
    else:
        raise fail(at, htype, "is not an attribute item")


def _once(existing: object, at: int, htype: int) -> None:
    if existing is not None:
        raise fail(at, htype, "appears twice in one entry")
