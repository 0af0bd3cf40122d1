"""Golden vectors for the pxar codec, derived by hand from proxmox/pxar's format definitions.

Expected bytes here are assembled with ``struct`` from the layout rules of src/format/mod.rs
and src/encoder/mod.rs, never by calling Cairn's encoder, so encoder and test can disagree.
"""

import hashlib
import io
import struct

import pytest
from siphash24 import siphash24

from cairn.errors import FormatError
from cairn.format.pxar import (
    S_IFDIR,
    S_IFLNK,
    S_IFREG,
    Accessor,
    Decoder,
    Encoder,
    EntryKind,
    Metadata,
    hash_filename,
)
from cairn.format.pxar import (
    constants as c,
)
from cairn.format.pxar.goodbye import bst_find, bst_permutation

# (constant name, hashed string) exactly as listed in pxar's examples/mk-format-hashes.rs.
FORMAT_HASH_STRINGS = [
    ("PXAR_FORMAT_VERSION", "__PROXMOX_FORMAT_VERSION__"),
    ("PXAR_ENTRY", "__PROXMOX_FORMAT_ENTRY_V2__"),
    ("PXAR_ENTRY_V1", "__PROXMOX_FORMAT_ENTRY__"),
    ("PXAR_PRELUDE", "__PROXMOX_FORMAT_PRELUDE__"),
    ("PXAR_FILENAME", "__PROXMOX_FORMAT_FILENAME__"),
    ("PXAR_SYMLINK", "__PROXMOX_FORMAT_SYMLINK__"),
    ("PXAR_DEVICE", "__PROXMOX_FORMAT_DEVICE__"),
    ("PXAR_XATTR", "__PROXMOX_FORMAT_XATTR__"),
    ("PXAR_ACL_USER", "__PROXMOX_FORMAT_ACL_USER__"),
    ("PXAR_ACL_GROUP", "__PROXMOX_FORMAT_ACL_GROUP__"),
    ("PXAR_ACL_GROUP_OBJ", "__PROXMOX_FORMAT_ACL_GROUP_OBJ__"),
    ("PXAR_ACL_DEFAULT", "__PROXMOX_FORMAT_ACL_DEFAULT__"),
    ("PXAR_ACL_DEFAULT_USER", "__PROXMOX_FORMAT_ACL_DEFAULT_USER__"),
    ("PXAR_ACL_DEFAULT_GROUP", "__PROXMOX_FORMAT_ACL_DEFAULT_GROUP__"),
    ("PXAR_FCAPS", "__PROXMOX_FORMAT_FCAPS__"),
    ("PXAR_QUOTA_PROJID", "__PROXMOX_FORMAT_QUOTA_PROJID__"),
    ("PXAR_HARDLINK", "__PROXMOX_FORMAT_HARDLINK__"),
    ("PXAR_PAYLOAD", "__PROXMOX_FORMAT_PXAR_PAYLOAD__"),
    ("PXAR_PAYLOAD_REF", "__PROXMOX_FORMAT_PXAR_PAYLOAD_REF__"),
    ("PXAR_GOODBYE", "__PROXMOX_FORMAT_GOODBYE__"),
    ("PXAR_GOODBYE_TAIL_MARKER", "__PROXMOX_FORMAT_PXAR_GOODBYE_TAIL_MARKER__"),
    ("PXAR_PAYLOAD_START_MARKER", "__PROXMOX_FORMAT_PXAR_PAYLOAD_START_MARKER__"),
    ("PXAR_PAYLOAD_TAIL_MARKER", "__PROXMOX_FORMAT_PXAR_PAYLOAD_TAIL_MARKER__"),
]


def sip(data: bytes) -> int:
    """Test-local SipHash-2-4 with the key derived from sha1 (not the module's constants)."""
    digest = hashlib.sha1(b"PROXMOX ARCHIVE FORMAT").digest()
    k0 = int.from_bytes(digest[0:8], "big")
    k1 = int.from_bytes(digest[8:16], "big")
    key = struct.pack("<QQ", k0, k1)
    return int.from_bytes(siphash24(data, key=key).digest(), "little")


def test_hash_key_is_sha1_of_format_name():
    digest = hashlib.sha1(b"PROXMOX ARCHIVE FORMAT").hexdigest()
    assert c.HASH_KEY_1 == int(digest[0:16], 16)
    assert c.HASH_KEY_2 == int(digest[16:32], 16)


@pytest.mark.parametrize(("name", "text"), FORMAT_HASH_STRINGS)
def test_item_types_are_hashes_of_their_strings(name, text):
    assert getattr(c, name) == sip(text.encode())
    assert hash_filename(text.encode()) == sip(text.encode())


def test_item_type_values_from_pxar_source():
    # Spot checks against the literal values in src/format/mod.rs.
    assert c.PXAR_ENTRY == 0xD5956474E588ACEF
    assert c.PXAR_GOODBYE_TAIL_MARKER == 0xEF5EED5B753E1555
    assert c.PXAR_PAYLOAD_REF == 0x419D3D6BC4BA977E


def test_mode_bits_are_linux_values():
    assert (c.S_IFMT, c.S_IFSOCK, c.S_IFLNK, c.S_IFREG) == (
        0o170000,
        0o140000,
        0o120000,
        0o100000,
    )
    assert (c.S_IFBLK, c.S_IFDIR, c.S_IFCHR, c.S_IFIFO) == (
        0o060000,
        0o040000,
        0o020000,
        0o010000,
    )
    assert (c.S_ISUID, c.S_ISGID, c.S_ISVTX) == (0o4000, 0o2000, 0o1000)


@pytest.mark.parametrize(
    "name", [b"", b"a", b"file.txt", b"\xff\x00binary", b"x" * 4096]
)
def test_hash_filename_matches_reference(name):
    assert hash_filename(name) == sip(name)


# --- binary tree array ---------------------------------------------------------------------

# The expectations hard-coded in pxar's binary_tree_array.rs test.
RUST_BST = {
    1: [0],
    2: [1, 0],
    3: [1, 0, 2],
    4: [2, 1, 3, 0],
    5: [3, 1, 4, 0, 2],
    6: [3, 1, 5, 0, 2, 4],
    7: [3, 1, 5, 0, 2, 4, 6],
    8: [4, 2, 6, 1, 3, 5, 7, 0],
    9: [5, 3, 7, 1, 4, 6, 8, 0, 2],
    10: [6, 3, 8, 1, 5, 7, 9, 0, 2, 4],
    11: [7, 3, 9, 1, 5, 8, 10, 0, 2, 4, 6],
    12: [7, 3, 10, 1, 5, 9, 11, 0, 2, 4, 6, 8],
    13: [7, 3, 11, 1, 5, 9, 12, 0, 2, 4, 6, 8, 10],
    14: [7, 3, 11, 1, 5, 9, 13, 0, 2, 4, 6, 8, 10, 12],
    15: [7, 3, 11, 1, 5, 9, 13, 0, 2, 4, 6, 8, 10, 12, 14],
    16: [8, 4, 12, 2, 6, 10, 14, 1, 3, 5, 7, 9, 11, 13, 15, 0],
    17: [9, 5, 13, 3, 7, 11, 15, 1, 4, 6, 8, 10, 12, 14, 16, 0, 2],
}


def inorder_ranks(n: int) -> list[int]:
    """Independent construction: a heap-shaped tree of n slots whose in-order walk is sorted.

    A BST stored with children at 2i+1/2i+2 that fills slots 0..n-1 has exactly this shape,
    so numbering its slots in in-order sequence gives the permutation.
    """
    out = [0] * n
    rank = 0
    stack: list[int] = []
    slot = 0
    while stack or slot < n:
        while slot < n:
            stack.append(slot)
            slot = 2 * slot + 1
        slot = stack.pop()
        out[slot] = rank
        rank += 1
        slot = 2 * slot + 2
    return out


@pytest.mark.parametrize("n", sorted(RUST_BST))
def test_bst_permutation_matches_pxar_test_table(n):
    assert bst_permutation(n) == RUST_BST[n]


@pytest.mark.parametrize("n", range(0, 31))
def test_bst_permutation_matches_independent_construction(n):
    assert bst_permutation(n) == inorder_ranks(n)


def test_bst_permutation_large_sizes_are_permutations():
    for n in (63, 64, 65, 1000, 4097):
        perm = bst_permutation(n)
        assert perm == inorder_ranks(n)


def test_bst_find_with_duplicates_like_pxar_doc_example():
    values = [0, 1, 2, 2, 2, 3, 4, 5, 6, 6, 7, 8, 8, 8]
    tree = [values[src] for src in bst_permutation(len(values))]
    assert tree == [5, 2, 8, 1, 3, 6, 8, 0, 2, 2, 4, 6, 7, 8]
    assert sorted(bst_find(len(tree), tree.__getitem__, 8)) == [2, 6, 13]
    assert sorted(bst_find(len(tree), tree.__getitem__, 2)) == [1, 8, 9]
    assert list(bst_find(len(tree), tree.__getitem__, 9)) == []
    for value in set(values):
        found = sorted(bst_find(len(tree), tree.__getitem__, value))
        assert found == [i for i, v in enumerate(tree) if v == value]


# --- a tiny archive, byte for byte -----------------------------------------------------------

MAY_1_2015_1530 = 1430487000


def hdr(htype: int, content_len: int) -> bytes:
    return struct.pack("<QQ", htype, content_len + 16)


def stat(mode: int, uid: int, gid: int, secs: int, nanos: int) -> bytes:
    # Stat: mode u64, flags u64, uid u32, gid u32, StatxTimestamp { secs i64, nanos u32, pad u32 }
    return hdr(c.PXAR_ENTRY, 40) + struct.pack(
        "<QQIIqII", mode, 0, uid, gid, secs, nanos, 0
    )


def goodbye(
    items: list[tuple[bytes, int, int]], goodbye_at: int, dir_start: int
) -> bytes:
    """items: (name, absolute FILENAME offset, size). Sorted by hash, then BST order."""
    ranked = sorted((sip(name), off, size) for name, off, size in items)
    full = 16 + 24 * (len(items) + 1)
    out = hdr(c.PXAR_GOODBYE, full - 16)
    for rank in inorder_ranks(len(ranked)):  # slot by slot: which rank sits there
        h, off, size = ranked[rank]
        out += struct.pack("<QQQ", h, goodbye_at - off, size)
    return out + struct.pack(
        "<QQQ", c.PXAR_GOODBYE_TAIL_MARKER, goodbye_at - dir_start, full
    )


ROOT_MD = Metadata(
    mode=S_IFDIR | 0o755, uid=1000, gid=1000, mtime_ns=MAY_1_2015_1530 * 10**9 + 10**6
)
FILE_MD = Metadata(
    mode=S_IFREG | 0o644, uid=1000, gid=1000, mtime_ns=MAY_1_2015_1530 * 10**9
)
LINK_MD = Metadata(mode=S_IFLNK | 0o777, uid=0, gid=0, mtime_ns=0)
SUB_MD = Metadata(
    mode=S_IFDIR | 0o700, uid=1, gid=2, mtime_ns=-1
)  # one ns before the epoch
CONTENT = b"This is a small text file.\n"


def expected_tiny_archive() -> bytes:
    out = stat(S_IFDIR | 0o755, 1000, 1000, MAY_1_2015_1530, 1_000_000)
    assert len(out) == 56
    file_at = len(out)  # 56
    out += hdr(c.PXAR_FILENAME, 9) + b"file.txt\0"
    out += stat(S_IFREG | 0o644, 1000, 1000, MAY_1_2015_1530, 0)
    out += hdr(c.PXAR_PAYLOAD, len(CONTENT)) + CONTENT
    file_size = len(out) - file_at
    link_at = len(out)
    out += hdr(c.PXAR_FILENAME, 5) + b"link\0"
    out += stat(S_IFLNK | 0o777, 0, 0, 0, 0)
    out += hdr(c.PXAR_SYMLINK, 9) + b"file.txt\0"
    link_size = len(out) - link_at
    sub_at = len(out)
    out += hdr(c.PXAR_FILENAME, 4) + b"sub\0"
    sub_entry = len(out)
    out += stat(
        S_IFDIR | 0o700, 1, 2, -1, 999_999_999
    )  # -1 ns = secs -1 + 999999999 ns
    out += goodbye([], len(out), sub_entry)
    sub_size = len(out) - sub_at
    items = [
        (b"file.txt", file_at, file_size),
        (b"link", link_at, link_size),
        (b"sub", sub_at, sub_size),
    ]
    out += goodbye(items, len(out), 0)
    return out


def encode_tiny(**kwargs) -> bytes:
    out = bytearray()
    enc = Encoder(out.extend, ROOT_MD, **kwargs)
    enc.add_file(b"file.txt", FILE_MD, len(CONTENT), CONTENT)
    enc.add_symlink(b"link", LINK_MD, b"file.txt")
    enc.create_directory(b"sub", SUB_MD)
    enc.finish_directory()
    enc.finish()
    return bytes(out)


def test_tiny_archive_bytes():
    expected = expected_tiny_archive()
    assert len(expected) == 56 + 124 + 102 + 116 + 112
    assert encode_tiny() == expected


def test_tiny_archive_goodbye_tail():
    data = expected_tiny_archive()
    marker, back, size = struct.unpack_from("<QQQ", data, len(data) - 24)
    assert marker == c.PXAR_GOODBYE_TAIL_MARKER
    assert size == 16 + 4 * 24
    assert back == len(data) - size  # the root's tail leads back to offset 0


def test_tiny_archive_decodes():
    dec = Decoder(io.BytesIO(expected_tiny_archive()).read)
    seen = []
    for entry in dec:
        seen.append((entry.path, entry.kind, entry.metadata))
        if entry.kind is EntryKind.FILE:
            assert dec.read_content() == CONTENT
    assert seen == [
        (b"/", EntryKind.DIRECTORY, ROOT_MD),
        (b"/file.txt", EntryKind.FILE, FILE_MD),
        (b"/link", EntryKind.SYMLINK, LINK_MD),
        (b"/sub", EntryKind.DIRECTORY, SUB_MD),
    ]


def test_tiny_archive_random_access():
    data = expected_tiny_archive()
    acc = Accessor(lambda off, size: data[off : off + size], len(data))
    entry = acc.lookup(b"/file.txt")
    assert entry is not None and entry.file_offset == 56 and entry.size == len(CONTENT)
    assert acc.open_file(entry).read_at(8, 5) == CONTENT[8:13]
    assert acc.lookup(b"link").link_target == b"file.txt"
    assert len(acc.open_directory(acc.lookup(b"sub"))) == 0
    assert acc.lookup(b"missing") is None


def test_split_archive_bytes():
    """Version 2 layout: FORMAT_VERSION, PRELUDE, PAYLOAD_REF; contents in the payload stream."""
    meta, payload = bytearray(), bytearray()
    enc = Encoder(meta.extend, ROOT_MD, payload_write=payload.extend, prelude=b"hello")
    enc.add_file(b"file.txt", FILE_MD, len(CONTENT), CONTENT)
    enc.finish()

    exp_payload = hdr(c.PXAR_PAYLOAD_START_MARKER, 0)
    ref_offset = len(exp_payload)
    exp_payload += hdr(c.PXAR_PAYLOAD, len(CONTENT)) + CONTENT
    exp_payload += hdr(c.PXAR_PAYLOAD_TAIL_MARKER, 0)
    assert bytes(payload) == exp_payload

    exp = hdr(c.PXAR_FORMAT_VERSION, 8) + struct.pack("<Q", 2)
    exp += hdr(c.PXAR_PRELUDE, 5) + b"hello"
    exp += stat(S_IFDIR | 0o755, 1000, 1000, MAY_1_2015_1530, 1_000_000)
    file_at = len(exp)
    exp += hdr(c.PXAR_FILENAME, 9) + b"file.txt\0"
    exp += stat(S_IFREG | 0o644, 1000, 1000, MAY_1_2015_1530, 0)
    exp += hdr(c.PXAR_PAYLOAD_REF, 16) + struct.pack("<QQ", ref_offset, len(CONTENT))
    # pxar's create_file counts the content in the goodbye size even in split mode.
    file_size = len(exp) - file_at + len(CONTENT)
    # The root's tail counts back to offset 0 (the FORMAT_VERSION item), not to its ENTRY.
    exp += goodbye([(b"file.txt", file_at, file_size)], len(exp), 0)
    assert bytes(meta) == exp

    dec = Decoder(io.BytesIO(exp).read, io.BytesIO(exp_payload).read)
    entries = list(_with_content(dec))
    assert dec.format_version == 2 and dec.prelude == b"hello"
    assert entries[1][0].payload_offset == ref_offset and entries[1][1] == CONTENT

    acc = Accessor(
        lambda o, n: exp[o : o + n],
        len(exp),
        payload_read_at=lambda o, n: exp_payload[o : o + n],
        payload_size=len(exp_payload),
    )
    assert acc.format_version == 2 and acc.prelude() == b"hello"
    assert acc.open_root().entry().metadata == ROOT_MD
    assert acc.open_file(acc.lookup(b"file.txt")).read_at(0, 100) == CONTENT


def _with_content(dec):
    for entry in dec:
        yield (
            entry,
            (dec.read_content(1 << 20) if entry.kind is EntryKind.FILE else None),
        )


def test_metadata_item_order_and_layout():
    """ENTRY, XATTRs, ACL users, groups, group_obj, default, default users/groups, FCAPS, QUOTA."""
    from cairn.format.pxar import Acl, AclDefault, AclGroup, AclUser
    from cairn.format.pxar.items import encode_metadata

    md = Metadata(
        mode=S_IFREG | 0o640,
        flags=7,
        uid=3,
        gid=4,
        mtime_ns=5 * 10**9 + 6,
        xattrs=[(b"user.b", b"2"), (b"user.a", b"")],
        fcaps=b"\x01\x02",
        acl=Acl(
            users=[AclUser(10, 7)],
            groups=[AclGroup(20, 5)],
            group_obj=4,
            default=AclDefault(7, 5, 0, c.ACL_NO_MASK),
            default_users=[AclUser(11, 6)],
            default_groups=[AclGroup(21, 1)],
        ),
        quota_project_id=99,
    )
    expected = hdr(c.PXAR_ENTRY, 40) + struct.pack(
        "<QQIIqII", S_IFREG | 0o640, 7, 3, 4, 5, 6, 0
    )
    expected += hdr(c.PXAR_XATTR, 8) + b"user.b\x002"
    expected += hdr(c.PXAR_XATTR, 7) + b"user.a\x00"
    expected += hdr(c.PXAR_ACL_USER, 16) + struct.pack("<QQ", 10, 7)
    expected += hdr(c.PXAR_ACL_GROUP, 16) + struct.pack("<QQ", 20, 5)
    expected += hdr(c.PXAR_ACL_GROUP_OBJ, 8) + struct.pack("<Q", 4)
    expected += hdr(c.PXAR_ACL_DEFAULT, 32) + struct.pack("<QQQQ", 7, 5, 0, 2**64 - 1)
    expected += hdr(c.PXAR_ACL_DEFAULT_USER, 16) + struct.pack("<QQ", 11, 6)
    expected += hdr(c.PXAR_ACL_DEFAULT_GROUP, 16) + struct.pack("<QQ", 21, 1)
    expected += hdr(c.PXAR_FCAPS, 2) + b"\x01\x02"
    expected += hdr(c.PXAR_QUOTA_PROJID, 8) + struct.pack("<Q", 99)
    assert encode_metadata(md) == expected


def test_device_hardlink_fifo_socket_layout():
    from cairn.format.pxar import S_IFBLK, S_IFIFO, S_IFSOCK

    out = bytearray()
    root = Metadata(mode=S_IFDIR | 0o755)
    enc = Encoder(out.extend, root)
    target = enc.add_file(b"a", Metadata(mode=S_IFREG), 0, b"")
    enc.add_device(b"b", Metadata(mode=S_IFBLK | 0o600), 8, 1)
    enc.add_fifo(b"c", Metadata(mode=S_IFIFO))
    link_at = enc.position
    enc.add_hardlink(b"d", b"/a", target)
    enc.add_socket(b"e", Metadata(mode=S_IFSOCK))
    enc.finish()

    empty = lambda mode: stat(mode, 0, 0, 0, 0)  # noqa: E731
    exp = empty(S_IFDIR | 0o755)
    assert target == len(exp)
    exp += hdr(c.PXAR_FILENAME, 2) + b"a\0" + empty(S_IFREG) + hdr(c.PXAR_PAYLOAD, 0)
    exp += hdr(c.PXAR_FILENAME, 2) + b"b\0" + empty(S_IFBLK | 0o600)
    exp += hdr(c.PXAR_DEVICE, 16) + struct.pack("<QQ", 8, 1)
    exp += hdr(c.PXAR_FILENAME, 2) + b"c\0" + empty(S_IFIFO)
    assert link_at == len(exp)
    # HARDLINK: no ENTRY; distance from this FILENAME back to the target's FILENAME, path, NUL.
    exp += hdr(c.PXAR_FILENAME, 2) + b"d\0"
    exp += hdr(c.PXAR_HARDLINK, 8 + 3) + struct.pack("<Q", link_at - target) + b"/a\0"
    exp += hdr(c.PXAR_FILENAME, 2) + b"e\0" + empty(S_IFSOCK)
    assert bytes(out[: len(exp)]) == exp

    acc = Accessor(lambda o, n: bytes(out[o : o + n]), len(out))
    link = acc.lookup(b"d")
    assert link.kind is EntryKind.HARDLINK and link.link_offset == target
    assert acc.follow_hardlink(link).file_offset == target
    assert acc.lookup(b"b").device == (8, 1)
    assert acc.lookup(b"c").kind is EntryKind.FIFO
    assert acc.lookup(b"e").kind is EntryKind.SOCKET


def test_entry_v1_archive_decodes():
    """Old archives use ENTRY_V1, whose mtime is a plain u64 of nanoseconds (pxar tests/compat.rs)."""
    v1 = lambda mode: (
        hdr(c.PXAR_ENTRY_V1, 32)
        + struct.pack(  # noqa: E731
            "<QQIIQ", mode, 0, 1000, 1000, MAY_1_2015_1530 * 10**9
        )
    )
    data = v1(S_IFDIR | 0o755)
    file_at = len(data)
    data += hdr(c.PXAR_FILENAME, 9) + b"file.txt\0" + v1(S_IFREG | 0o644)
    data += hdr(c.PXAR_PAYLOAD, len(CONTENT)) + CONTENT
    data += goodbye([(b"file.txt", file_at, len(data) - file_at)], len(data), 0)
    dec = Decoder(io.BytesIO(data).read)
    root, (file, content) = next(dec), next(_with_content(dec))
    assert root.metadata == Metadata(
        mode=S_IFDIR | 0o755, uid=1000, gid=1000, mtime_ns=MAY_1_2015_1530 * 10**9
    )
    assert file.name == b"file.txt" and content == CONTENT
    assert list(dec) == []
    acc = Accessor(lambda o, n: data[o : o + n], len(data))
    assert acc.open_file(acc.lookup(b"file.txt")).read_at(0, 1000) == CONTENT


def test_negative_mtime_split_like_statx():
    """pxar stores times before 1970 as secs rounded down plus positive nanos."""
    from cairn.format.pxar.items import encode_metadata, parse_stat

    ns = -305112600 * 10**9 - 1_000_000  # 1960-05-01 15:30 minus 1 ms, from pxar's test
    raw = encode_metadata(Metadata(mode=S_IFREG, mtime_ns=ns))
    secs, nanos = struct.unpack_from("<qI", raw, 16 + 24)
    assert (secs, nanos) == (-305112600 - 1, 999_000_000)
    assert parse_stat(c.PXAR_ENTRY, raw[16:56], 0).mtime_ns == ns


def test_unknown_format_version_rejected():
    data = (
        hdr(c.PXAR_FORMAT_VERSION, 8) + struct.pack("<Q", 3) + expected_tiny_archive()
    )
    with pytest.raises(FormatError, match="version 3"):
        list(Decoder(io.BytesIO(data).read))
    with pytest.raises(FormatError, match="version 3"):
        Accessor(lambda o, n: data[o : o + n], len(data))
