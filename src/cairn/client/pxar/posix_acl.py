"""POSIX ACLs between Linux's ``system.posix_acl_*`` xattrs and pxar's ACL items.

The kernel keeps an ACL as ``u32 version (2)`` followed by ``u16 tag, u16 permissions,
u32 id`` records. pxar does not store that blob: like PBS, it keeps the named user and group
entries as ACL items, the owning group's permissions only when a mask exists (the mask then
lives in the mode's group bits), and a directory's default ACL as one ACL_DEFAULT item plus
its named entries.
"""

from __future__ import annotations

import struct

from cairn.errors import FormatError
from cairn.format.pxar import ACL_NO_MASK, Acl, AclDefault, AclGroup, AclUser

ACCESS_XATTR = "system.posix_acl_access"
DEFAULT_XATTR = "system.posix_acl_default"

_VERSION = 2
_HEAD = struct.Struct("<I")
_ENTRY = struct.Struct("<HHI")
_UNDEFINED_ID = 0xFFFFFFFF

_USER_OBJ = 0x01
_USER = 0x02
_GROUP_OBJ = 0x04
_GROUP = 0x08
_MASK = 0x10
_OTHER = 0x20


def _entries(blob: bytes) -> list[tuple[int, int, int]]:
    if len(blob) < _HEAD.size or (len(blob) - _HEAD.size) % _ENTRY.size:
        raise FormatError(f"POSIX ACL of {len(blob)} bytes is malformed")
    (version,) = _HEAD.unpack_from(blob)
    if version != _VERSION:
        raise FormatError(f"POSIX ACL version {version} is not supported")
    return [
        _ENTRY.unpack_from(blob, offset)
        for offset in range(_HEAD.size, len(blob), _ENTRY.size)
    ]


def read_access(acl: Acl, blob: bytes) -> None:
    """Fill ``acl``'s access part from a ``system.posix_acl_access`` value."""
    users, groups = [], []
    group_obj = mask = None
    for tag, perm, ident in _entries(blob):
        if tag == _USER:
            users.append(AclUser(ident, perm))
        elif tag == _GROUP:
            groups.append(AclGroup(ident, perm))
        elif tag == _GROUP_OBJ:
            group_obj = perm
        elif tag == _MASK:
            mask = perm
    acl.users = sorted(users, key=lambda u: u.uid)
    acl.groups = sorted(groups, key=lambda g: g.gid)
    acl.group_obj = group_obj if mask is not None else None


def read_default(acl: Acl, blob: bytes) -> None:
    """Fill ``acl``'s default part from a ``system.posix_acl_default`` value."""
    users, groups = [], []
    base = {_USER_OBJ: ACL_NO_MASK, _GROUP_OBJ: ACL_NO_MASK, _OTHER: ACL_NO_MASK, _MASK: ACL_NO_MASK}
    seen = False
    for tag, perm, ident in _entries(blob):
        if tag == _USER:
            users.append(AclUser(ident, perm))
        elif tag == _GROUP:
            groups.append(AclGroup(ident, perm))
        elif tag in base:
            base[tag] = perm
            seen = True
    acl.default_users = sorted(users, key=lambda u: u.uid)
    acl.default_groups = sorted(groups, key=lambda g: g.gid)
    acl.default = (
        AclDefault(base[_USER_OBJ], base[_GROUP_OBJ], base[_OTHER], base[_MASK]) if seen else None
    )


def has_access_entries(acl: Acl) -> bool:
    return bool(acl.users or acl.groups or acl.group_obj is not None)


def access_blob(acl: Acl, mode: int) -> bytes:
    """The ``system.posix_acl_access`` value for ``acl`` on a file with ``mode``."""
    group_bits = (mode >> 3) & 7
    records = [(_USER_OBJ, (mode >> 6) & 7, _UNDEFINED_ID)]
    records += [(_USER, u.permissions, u.uid) for u in sorted(acl.users, key=lambda u: u.uid)]
    if acl.group_obj is not None:
        records.append((_GROUP_OBJ, acl.group_obj, _UNDEFINED_ID))
    else:
        records.append((_GROUP_OBJ, group_bits, _UNDEFINED_ID))
    records += [(_GROUP, g.permissions, g.gid) for g in sorted(acl.groups, key=lambda g: g.gid)]
    if acl.group_obj is not None or acl.users or acl.groups:
        records.append((_MASK, group_bits, _UNDEFINED_ID))
    records.append((_OTHER, mode & 7, _UNDEFINED_ID))
    return _pack(records)


def default_blob(acl: Acl) -> bytes | None:
    """The ``system.posix_acl_default`` value, or None if ``acl`` has no default ACL."""
    default = acl.default
    if default is None:
        return None
    records = [(_USER_OBJ, default.user_obj_permissions, _UNDEFINED_ID)]
    records += [(_USER, u.permissions, u.uid) for u in sorted(acl.default_users, key=lambda u: u.uid)]
    records.append((_GROUP_OBJ, default.group_obj_permissions, _UNDEFINED_ID))
    records += [(_GROUP, g.permissions, g.gid) for g in sorted(acl.default_groups, key=lambda g: g.gid)]
    if default.mask_permissions != ACL_NO_MASK:
        records.append((_MASK, default.mask_permissions, _UNDEFINED_ID))
    records.append((_OTHER, default.other_permissions, _UNDEFINED_ID))
    return _pack(records)


def _pack(records: list[tuple[int, int, int]]) -> bytes:
    parts = [_HEAD.pack(_VERSION)]
    for tag, perm, ident in records:
        if not 0 <= perm <= 7 or not 0 <= ident <= _UNDEFINED_ID:
            raise FormatError(f"ACL entry with permissions {perm} or id {ident} is out of range")
        parts.append(_ENTRY.pack(tag, perm, ident))
    return b"".join(parts)
