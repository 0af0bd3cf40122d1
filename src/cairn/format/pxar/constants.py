"""Fixed numbers of the pxar archive format (as defined by proxmox/pxar ``src/format``).

Item types are SipHash-2-4 digests of ``__PROXMOX_FORMAT_*__`` strings under the key below;
the tests recompute them from those strings, so a typo here cannot go unnoticed.
All integers in an archive are little endian.
"""

from typing import Final

# SipHash-2-4 key (k0, k1): the first 32 hex digits of sha1("PROXMOX ARCHIVE FORMAT").
HASH_KEY_1: Final = 0x83AC3F1CFBB450DB
HASH_KEY_2: Final = 0xAA4F1B6879369FBD

# Item header types.
PXAR_FORMAT_VERSION: Final = 0x730F6C75DF16A40D
PXAR_ENTRY: Final = 0xD5956474E588ACEF
PXAR_ENTRY_V1: Final = 0x11DA850A1C1CCEFF
PXAR_PRELUDE: Final = 0xE309D79D9F7B771B
PXAR_FILENAME: Final = 0x16701121063917B3
PXAR_SYMLINK: Final = 0x27F971E7DBF5DC5F
PXAR_DEVICE: Final = 0x9FC9E906586D5CE9
PXAR_XATTR: Final = 0x0DAB0229B57DCD03
PXAR_ACL_USER: Final = 0x2CE8540A457D55B8
PXAR_ACL_GROUP: Final = 0x136E3ECEB04C03AB
PXAR_ACL_GROUP_OBJ: Final = 0x10868031E9582876
PXAR_ACL_DEFAULT: Final = 0xBBBB13415A6896F5
PXAR_ACL_DEFAULT_USER: Final = 0xC89357B40532CD1F
PXAR_ACL_DEFAULT_GROUP: Final = 0xF90A8A5816038FFE
PXAR_FCAPS: Final = 0x2DA9DD9DB5F7FB67
PXAR_QUOTA_PROJID: Final = 0xE07540E82F7D1CBB
PXAR_HARDLINK: Final = 0x51269C8422BD7275
PXAR_PAYLOAD: Final = 0x28147A1B0B7C1A25
PXAR_PAYLOAD_REF: Final = 0x419D3D6BC4BA977E
PXAR_GOODBYE: Final = 0x2FEC4FA642D5731D
PXAR_GOODBYE_TAIL_MARKER: Final = 0xEF5EED5B753E1555
PXAR_PAYLOAD_START_MARKER: Final = 0x834C68C2194A4ED2
PXAR_PAYLOAD_TAIL_MARKER: Final = 0x6C72B78B984C81B5

ITEM_NAMES: Final[dict[int, str]] = {
    PXAR_FORMAT_VERSION: "FORMAT_VERSION",
    PXAR_ENTRY: "ENTRY",
    PXAR_ENTRY_V1: "ENTRY_V1",
    PXAR_PRELUDE: "PRELUDE",
    PXAR_FILENAME: "FILENAME",
    PXAR_SYMLINK: "SYMLINK",
    PXAR_DEVICE: "DEVICE",
    PXAR_XATTR: "XATTR",
    PXAR_ACL_USER: "ACL_USER",
    PXAR_ACL_GROUP: "ACL_GROUP",
    PXAR_ACL_GROUP_OBJ: "ACL_GROUP_OBJ",
    PXAR_ACL_DEFAULT: "ACL_DEFAULT",
    PXAR_ACL_DEFAULT_USER: "ACL_DEFAULT_USER",
    PXAR_ACL_DEFAULT_GROUP: "ACL_DEFAULT_GROUP",
    PXAR_FCAPS: "FCAPS",
    PXAR_QUOTA_PROJID: "QUOTA_PROJID",
    PXAR_HARDLINK: "HARDLINK",
    PXAR_PAYLOAD: "PAYLOAD",
    PXAR_PAYLOAD_REF: "PAYLOAD_REF",
    PXAR_GOODBYE: "GOODBYE",
    PXAR_PAYLOAD_START_MARKER: "PAYLOAD_START_MARKER",
    PXAR_PAYLOAD_TAIL_MARKER: "PAYLOAD_TAIL_MARKER",
}

# File type and special bits of ``Metadata.mode``; pxar fixes the Linux values.
S_IFMT: Final = 0o170000
S_IFSOCK: Final = 0o140000
S_IFLNK: Final = 0o120000
S_IFREG: Final = 0o100000
S_IFBLK: Final = 0o060000
S_IFDIR: Final = 0o040000
S_IFCHR: Final = 0o020000
S_IFIFO: Final = 0o010000
S_ISUID: Final = 0o004000
S_ISGID: Final = 0o002000
S_ISVTX: Final = 0o001000

# ACL permission bits; NO_MASK marks "no mask entry" in ACL_DEFAULT.
ACL_READ: Final = 4
ACL_WRITE: Final = 2
ACL_EXECUTE: Final = 1
ACL_NO_MASK: Final = 0xFFFF_FFFF_FFFF_FFFF

# Fixed sizes in bytes.
# Header: htype u64 + full size u64 (the size includes the header).
HEADER_SIZE: Final = 16
# Goodbye record: hash u64 + offset u64 + size u64.
GOODBYE_ITEM_SIZE: Final = 24
# ENTRY: mode u64, flags u64, uid u32, gid u32, mtime (i64 secs, u32 nanos, u32 padding).
STAT_SIZE: Final = 40
# ENTRY_V1: mode u64, flags u64, uid u32, gid u32, mtime u64 nanoseconds.
STAT_V1_SIZE: Final = 32

# Limits from pxar's util.rs; header sizes above them are rejected as hostile.
MAX_PATH_LEN: Final = 4 * 1024
MAX_FILENAME_LEN: Final = MAX_PATH_LEN
MAX_XATTR_LEN: Final = 255 + 64 * 1024
# pxar leaves the prelude unbounded; a decoder that holds it in memory needs some bound.
MAX_PRELUDE_LEN: Final = 16 * 1024 * 1024

FORMAT_VERSION_1: Final = 1
FORMAT_VERSION_2: Final = 2
