"""Tests for the catalog codec: golden bytes from catalog.rs, round trips, hostile input."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cairn.errors import FormatError, NotFoundError
from cairn.format.catalog import (
    CATALOG_MAGIC_1_0,
    CatalogItem,
    CatalogReader,
    CatalogWriter,
    DirEntry,
    EntryType,
    decode_i64,
    decode_u64,
    encode_i64,
    encode_u64,
)

MAGIC = bytes([145, 253, 96, 249, 196, 103, 88, 213])  # PROXMOX_CATALOG_FILE_MAGIC_1_0


def write_catalog(build) -> bytes:
    out = bytearray()
    writer = CatalogWriter(out.extend)
    build(writer)
    writer.finish()
    return bytes(out)


# -- golden values ------------------------------------------------------------------------


def test_magic_is_pbs_constant() -> None:
    assert CATALOG_MAGIC_1_0 == MAGIC


U64_GOLDEN = [
    (0, "00"),
    (1, "01"),
    (127, "7f"),
    (128, "8001"),
    (300, "ac02"),
    (16383, "ff7f"),
    (16384, "808001"),
    (2**63 - 1, "ff" * 8 + "7f"),
    (2**64 - 1, "ff" * 9 + "01"),
]

# Negative values: magnitude in 7-bit groups, high bit set on every group (the last too),
# then a 0x00 terminator (catalog_encode_i64).
I64_GOLDEN = [
    (0, "00"),
    (127, "7f"),
    (128, "8001"),
    (2**63 - 1, "ff" * 8 + "7f"),
    (-1, "8100"),
    (-2, "8200"),
    (-127, "ff00"),
    (-128, "808100"),
    (-300, "ac8200"),
    (-(2**63), "80" * 9 + "8100"),
]


@pytest.mark.parametrize(("value", "hexbytes"), U64_GOLDEN)
def test_u64_golden(value: int, hexbytes: str) -> None:
    encoded = bytes.fromhex(hexbytes)
    assert encode_u64(value) == encoded
    assert decode_u64(encoded + b"\xaa", 0) == (value, len(encoded))


@pytest.mark.parametrize(("value", "hexbytes"), I64_GOLDEN)
def test_i64_golden(value: int, hexbytes: str) -> None:
    encoded = bytes.fromhex(hexbytes)
    assert encode_i64(value) == encoded
    assert decode_i64(b"\xaa" + encoded, 1) == (value, 1 + len(encoded))


def test_i64_decoder_reads_u64_encoding_and_negative_zero() -> None:
    for value in (0, 126, 2**20 - 1, 2**63 - 1):
        assert decode_i64(encode_u64(value))[0] == value
    assert decode_i64(b"\x80\x00") == (0, 2)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x80",
        b"\xff\xff",
        b"\x80" * 10,  # no end marker within 10 bytes
        b"\xff" * 9 + b"\x02",  # 2**64: more than 64 bits
    ],
)
def test_u64_rejects_malformed(data: bytes) -> None:
    with pytest.raises(FormatError):
        decode_u64(data)


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x81",
        b"\x80" * 11,  # no end marker within 11 bytes
        b"\xff" * 9 + b"\x01",  # 2**64 - 1 does not fit an i64
        b"\x80" * 9 + b"\x82\x00",  # -(2**64) does not fit either
    ],
)
def test_i64_rejects_malformed(data: bytes) -> None:
    with pytest.raises(FormatError):
        decode_i64(data)


@pytest.mark.parametrize("value", [-1, 2**64])
def test_u64_encode_range(value: int) -> None:
    with pytest.raises(FormatError):
        encode_u64(value)


@pytest.mark.parametrize("value", [-(2**63) - 1, 2**63])
def test_i64_encode_range(value: int) -> None:
    with pytest.raises(FormatError):
        encode_i64(value)


@given(st.integers(0, 2**64 - 1))
def test_u64_round_trip(value: int) -> None:
    assert decode_u64(encode_u64(value)) == (value, len(encode_u64(value)))


@given(st.one_of(st.integers(0, 2**64 - 1),
                 st.sampled_from([0x7F, 0x80, 0x3FFF, 0x4000, 0x1FFFFF, 0x200000, 0xFFFFFFF,
                                  0x10000000, 0x7FFFFFFFF, 0x800000000, 2**64 - 1])))
def test_u64_fast_paths_agree_with_the_plain_encoding(value: int) -> None:
    """The spelled-out lengths (small sizes, mtimes) give what the general loop gives."""
    assert encode_u64(value) == varint(value)


@given(st.integers(-(2**63), 2**63 - 1))
def test_i64_round_trip(value: int) -> None:
    assert decode_i64(encode_i64(value)) == (value, len(encode_i64(value)))


# -- golden catalog -----------------------------------------------------------------------

# Tree: /a/x (file, 5 bytes, mtime 1), /a/l (symlink), /f (file, 300 bytes, mtime -2).
# Laid out by hand from catalog.rs: magic, then the block of "a" (closed first), then the
# root block, then the root block's offset as a u64 LE. A block is varint(table length)
# followed by varint(entry count) and the entries; a directory entry stores the distance
# from the start of the block it sits in back to the child's block.
GOLDEN = (
    MAGIC  # offset 0..8
    + bytes.fromhex(
        "09"  # offset 8: block of "a", table of 9 bytes
        "02"  # two entries
        "66 01 78 05 01"  # 'f', name length 1, "x", size 5, mtime 1
        "6c 01 6c"  # 'l', name length 1, "l"
    )
    + bytes.fromhex(
        "0c"  # offset 18: root block, table of 12 bytes
        "02"  # two entries
        "64 01 61 0a"  # 'd', name length 1, "a", distance 18 - 8 = 10
        "66 01 66 ac02 8200"  # 'f', "f", size 300, mtime -2
    )
    + bytes.fromhex("1200000000000000")  # root block at offset 18
)


def build_golden(writer: CatalogWriter) -> None:
    writer.start_directory(b"a")
    writer.add_file(b"x", 5, 1)
    writer.add_symlink(b"l")
    writer.end_directory()
    writer.add_file(b"f", 300, -2)


def test_writer_produces_golden_bytes() -> None:
    assert write_catalog(build_golden) == GOLDEN


def test_reader_parses_golden_bytes() -> None:
    reader = CatalogReader.from_bytes(GOLDEN)
    root = reader.root()
    assert root == DirEntry(b"", EntryType.DIRECTORY, start=18)
    assert reader.read_dir(root) == [
        DirEntry(b"a", EntryType.DIRECTORY, start=8),
        DirEntry(b"f", EntryType.FILE, size=300, mtime=-2),
    ]
    assert list(reader.dump()) == [
        CatalogItem(b"/a", EntryType.DIRECTORY, None, None),
        CatalogItem(b"/a/x", EntryType.FILE, 5, 1),
        CatalogItem(b"/a/l", EntryType.SYMLINK, None, None),
        CatalogItem(b"/f", EntryType.FILE, 300, -2),
    ]
    assert reader.lookup_recursive(b"/a/x") == DirEntry(b"x", EntryType.FILE, size=5, mtime=1)
    assert reader.lookup_recursive(b"a/l").kind == "l"
    assert reader.lookup_recursive(b"/") == root
    assert reader.lookup(root, b"nope") is None


def test_every_entry_type_letter() -> None:
    def build(w: CatalogWriter) -> None:
        w.add_hardlink(b"h")
        w.add_block_device(b"b")
        w.add_char_device(b"c")
        w.add_fifo(b"p")
        w.add_socket(b"s")
        w.add_symlink(b"l")

    data = write_catalog(build)
    table = bytes.fromhex("06 68 01 68 62 01 62 63 01 63 70 01 70 73 01 73 6c 01 6c")
    assert data == MAGIC + bytes([len(table)]) + table + struct.pack("<Q", 8)
    kinds = [item.kind for item in CatalogReader.from_bytes(data).walk()]
    assert "".join(kinds) == "hbcpsl"


def test_empty_catalog() -> None:
    data = write_catalog(lambda w: None)
    assert data == MAGIC + b"\x01\x00" + struct.pack("<Q", 8)
    assert list(CatalogReader.from_bytes(data).walk()) == []


# -- writer behaviour ---------------------------------------------------------------------


def test_writer_streams_each_directory_when_it_ends() -> None:
    chunks: list[bytes] = []
    writer = CatalogWriter(chunks.append)
    writer.start_directory(b"archive.pxar.didx")
    writer.start_directory(b"sub")
    writer.add_file(b"f", 1, 2)
    assert b"".join(chunks) == MAGIC  # nothing closed yet
    writer.end_directory()
    assert len(b"".join(chunks)) > len(MAGIC)  # "sub" is on its way out
    writer.end_directory()
    writer.finish()
    reader = CatalogReader.from_bytes(b"".join(chunks))
    assert [i.path for i in reader.walk()] == [
        b"/archive.pxar.didx",
        b"/archive.pxar.didx/sub",
        b"/archive.pxar.didx/sub/f",
    ]


def test_writer_rejects_misuse() -> None:
    writer = CatalogWriter(lambda b: None)
    with pytest.raises(FormatError):
        writer.end_directory()
    writer.start_directory(b"d")
    with pytest.raises(FormatError):
        writer.finish()
    writer.end_directory()
    writer.finish()
    with pytest.raises(FormatError):
        writer.add_file(b"late", 0, 0)
    with pytest.raises(FormatError):
        writer.finish()


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"a\0b", b"x" * 4096])
def test_writer_rejects_names_no_file_can_have(name: bytes) -> None:
    writer = CatalogWriter(lambda b: None)
    with pytest.raises(FormatError):
        writer.add_symlink(name)
    with pytest.raises(FormatError):
        writer.start_directory(name)


def test_longest_name_round_trips() -> None:
    name = b"n" * 4095
    data = write_catalog(lambda w: w.add_file(name, 0, 0))
    assert [i.path for i in CatalogReader.from_bytes(data).walk()] == [b"/" + name]


@pytest.mark.parametrize(("size", "mtime"), [(-1, 0), (2**64, 0), (0, 2**63), (0, -(2**63) - 1)])
def test_writer_rejects_out_of_range_numbers(size: int, mtime: int) -> None:
    writer = CatalogWriter(lambda b: None)
    with pytest.raises(FormatError):
        writer.add_file(b"f", size, mtime)


# -- reader API ---------------------------------------------------------------------------


def build_tree(w: CatalogWriter) -> None:
    w.start_directory(b"root.pxar.didx")
    w.start_directory(b"etc")
    w.add_file(b"hosts", 10, 100)
    w.start_directory(b"ssh")
    w.add_file(b"sshd_config", 20, 200)
    w.end_directory()
    w.add_file(b"b.txt", 1, 1)
    w.start_directory(b"x")
    w.start_directory(b"y")
    w.add_file(b"b.txt", 2, 2)
    w.end_directory()
    w.end_directory()
    w.end_directory()
    w.start_directory(b"home")
    w.add_file(b"a.txt", 3, 3)
    w.add_symlink(b"link")
    w.end_directory()
    w.end_directory()
    w.start_directory(b"other.pxar.didx")
    w.add_file(b"a.txt", 4, 4)
    w.end_directory()


TREE = write_catalog(build_tree)


def found(pattern: bytes, directory: bytes | None = None) -> list[bytes]:
    reader = CatalogReader.from_bytes(TREE)
    start = reader.lookup_recursive(directory) if directory is not None else None
    return [item.path for item in reader.find(pattern, start)]


def test_find_unanchored_matches_at_any_depth() -> None:
    assert found(b"*.txt") == [
        b"/root.pxar.didx/etc/b.txt",
        b"/root.pxar.didx/etc/x/y/b.txt",
        b"/root.pxar.didx/home/a.txt",
        b"/other.pxar.didx/a.txt",
    ]
    assert found(b"host?") == [b"/root.pxar.didx/etc/hosts"]
    assert found(b"[ab].txt") == found(b"*.txt")
    assert found(b"[!a].txt") == [b"/root.pxar.didx/etc/b.txt", b"/root.pxar.didx/etc/x/y/b.txt"]


def test_find_star_stays_in_one_component_and_double_star_crosses() -> None:
    assert found(b"/root.pxar.didx/etc/*") == [
        b"/root.pxar.didx/etc/hosts",
        b"/root.pxar.didx/etc/ssh",
        b"/root.pxar.didx/etc/b.txt",
        b"/root.pxar.didx/etc/x",
    ]
    assert found(b"etc/**/*.txt") == [
        b"/root.pxar.didx/etc/b.txt",
        b"/root.pxar.didx/etc/x/y/b.txt",
    ]
    assert found(b"/root.pxar.didx/**config") == [b"/root.pxar.didx/etc/ssh/sshd_config"]


def test_find_anchored_trailing_slash_and_scope() -> None:
    assert found(b"/a.txt") == []
    assert found(b"/a.txt", b"/other.pxar.didx") == [b"/a.txt"]
    assert found(b"y/") == [b"/root.pxar.didx/etc/x/y"]
    assert found(b"\\*.txt") == []
    assert found(b"[") == []


def test_lookup_recursive_errors() -> None:
    reader = CatalogReader.from_bytes(TREE)
    with pytest.raises(NotFoundError):
        reader.lookup_recursive(b"/root.pxar.didx/etc/missing")
    with pytest.raises(NotFoundError):
        reader.lookup_recursive(b"/root.pxar.didx/etc/hosts/below-a-file")
    assert reader.lookup_recursive(b"//root.pxar.didx//etc/").name == b"etc"
    with pytest.raises(FormatError):
        reader.read_dir(reader.lookup_recursive(b"/root.pxar.didx/etc/hosts"))


def test_reader_reads_only_what_it_needs() -> None:
    reads: list[tuple[int, int]] = []

    def read_at(offset: int, length: int) -> bytes:
        reads.append((offset, length))
        return TREE[offset : offset + length]

    reader = CatalogReader(read_at, len(TREE))
    reader.lookup_recursive(b"/other.pxar.didx/a.txt")
    assert all(0 <= off and off + n <= len(TREE) for off, n in reads)


def test_deep_tree_needs_no_recursion() -> None:
    depth = 3000  # well past Python's default recursion limit

    def build(w: CatalogWriter) -> None:
        for _ in range(depth):
            w.start_directory(b"d")
        w.add_file(b"leaf", 1, -1)
        for _ in range(depth):
            w.end_directory()

    items = list(CatalogReader.from_bytes(write_catalog(build)).walk())
    assert len(items) == depth + 1
    assert items[-1] == CatalogItem(b"/d" * depth + b"/leaf", EntryType.FILE, 1, -1)


# -- round trip on random trees -----------------------------------------------------------

names = (
    st.binary(min_size=1, max_size=12)
    .map(lambda b: b.replace(b"/", b"_").replace(b"\0", b"_"))
    .filter(lambda b: b not in (b".", b".."))
)
file_nodes = st.tuples(
    names, st.just("f"), st.integers(0, 2**64 - 1), st.integers(-(2**63), 2**63 - 1)
)
special_nodes = st.tuples(names, st.sampled_from("lhbcps"))
trees = st.recursive(
    st.one_of(file_nodes, special_nodes),
    lambda children: st.tuples(
        names, st.just("d"), st.lists(children, max_size=5, unique_by=lambda n: n[0])
    ),
    max_leaves=40,
)
forests = st.lists(trees, max_size=6, unique_by=lambda n: n[0])

ADDERS = {
    "l": CatalogWriter.add_symlink,
    "h": CatalogWriter.add_hardlink,
    "b": CatalogWriter.add_block_device,
    "c": CatalogWriter.add_char_device,
    "p": CatalogWriter.add_fifo,
    "s": CatalogWriter.add_socket,
}


def emit(writer: CatalogWriter, nodes: list, prefix: bytes, expected: list[CatalogItem]) -> None:
    for node in nodes:
        name, kind = node[0], node[1]
        path = prefix + b"/" + name
        if kind == "d":
            expected.append(CatalogItem(path, EntryType.DIRECTORY, None, None))
            writer.start_directory(name)
            emit(writer, node[2], path, expected)
            writer.end_directory()
        elif kind == "f":
            expected.append(CatalogItem(path, EntryType.FILE, node[2], node[3]))
            writer.add_file(name, node[2], node[3])
        else:
            expected.append(CatalogItem(path, EntryType(kind), None, None))
            ADDERS[kind](writer, name)


@settings(max_examples=150, deadline=None)
@given(forests)
def test_round_trip_random_trees(forest: list) -> None:
    expected: list[CatalogItem] = []
    data = write_catalog(lambda w: emit(w, forest, b"", expected))
    reader = CatalogReader.from_bytes(data)
    assert list(reader.walk()) == expected
    for item in expected:
        entry = reader.lookup_recursive(item.path)
        assert (entry.kind, entry.size, entry.mtime) == (item.kind, item.size, item.mtime)
    assert [i.path for i in reader.find(b"/**")] == [i.path for i in expected]


# -- hostile input ------------------------------------------------------------------------


def varint(value: int) -> bytes:
    """A second, test-only varint encoder for laying out hostile catalogs by hand."""
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def block(entries: list[bytes]) -> bytes:
    table = varint(len(entries)) + b"".join(entries)
    return varint(len(table)) + table


def dir_entry(name: bytes, distance: int) -> bytes:
    return b"d" + varint(len(name)) + name + varint(distance)


def catalog(body: bytes, root: int) -> bytes:
    return MAGIC + body + struct.pack("<Q", root)


def exercise(data: bytes) -> None:
    """Use every reader entry point; anything but success or FormatError is a bug."""
    try:
        reader = CatalogReader.from_bytes(data)
        items = list(reader.walk())
        for item in items[:20]:
            entry = reader.lookup_recursive(item.path)
            if entry.is_directory:
                reader.read_dir(entry)
        list(reader.find(b"*a*"))
    except FormatError:
        pass


def test_shared_subtrees_cannot_blow_up_a_walk() -> None:
    # Each level holds two entries that both point at the level below: 2**40 paths if
    # followed blindly. The walk must notice the second reference and stop.
    body = bytearray(block([]))
    below = len(MAGIC)
    for _ in range(40):
        here = len(MAGIC) + len(body)
        body += block([dir_entry(b"x", here - below), dir_entry(b"y", here - below)])
        below = here
    reader = CatalogReader.from_bytes(catalog(bytes(body), below))
    with pytest.raises(FormatError, match="overlaps"):
        list(reader.walk())
    assert len(reader.read_dir(reader.root())) == 2  # random access still answers


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "too short"),
        (MAGIC, "too short"),
        (b"\0" * 8 + catalog(block([]), 8)[8:], "wrong magic"),
        (catalog(block([]), 7), "root pointer 7"),  # inside the magic
        (catalog(block([]), 9), "root pointer 9"),  # past the last block
        (catalog(block([]), 2**64 - 1), "root pointer"),
        (catalog(block([b"l\x01a"]) + b"\x00", 8)[:-8] + b"\x00" * 8, "root pointer 0"),
        (catalog(b"\x00\x00", 8), "empty directory block"),
        (catalog(b"\x7f\x00", 8), "runs past"),  # table longer than the file
        (catalog(b"\xff" * 9 + b"\x01", 8), "runs past"),  # absurd table length
        (catalog(varint(2**40) + b"\x00", 8), "runs past"),
        (catalog(b"\x80" * 12, 8), "no end marker"),
        (catalog(block([dir_entry(b"me", 0)]), 8), "bad offset 8"),  # points at itself
        (catalog(block([dir_entry(b"up", 2**40)]), 8), "bad offset"),  # before the file
        (catalog(block([]) + block([dir_entry(b"o", 1)]), 10), "bad offset 9"),  # mid-block
        # a child block whose length reaches into the block that names it
        (catalog(b"\x03\x00" + block([dir_entry(b"o", 2)]), 10), "runs past"),
        (catalog(varint(11) + varint(2**60) + b"l\x01a", 8), "claims"),  # absurd count
        (catalog(block([b"z\x01a"]), 8), "entry type"),
        (catalog(block([b"l\x00", b"f\x01a\x00\x00"]), 8), "1 to 4095"),  # empty name
        (catalog(block([b"l\x02.."]), 8), "invalid entry name"),
        (catalog(block([b"l\x03a/b"]), 8), "invalid entry name"),
        (catalog(block([b"l\x03a\x00b"]), 8), "invalid entry name"),
        (catalog(block([b"l" + varint(5000) + b"a" * 5000]), 8), "name length 5000"),
        (catalog(block([b"f\x01a\x05"]), 8), "truncated varint"),  # file without mtime
        (catalog(b"\x07\x02l\x01al\x03b", 8), "name length 3"),  # name past the table end
    ],
)
def test_malformed_catalogs_raise_format_error(data: bytes, reason: str) -> None:
    with pytest.raises(FormatError, match=reason):
        list(CatalogReader.from_bytes(data).walk())


def test_trailing_bytes_in_a_table_are_rejected() -> None:
    table = b"\x01" + b"l\x01a" + b"junk"
    data = catalog(varint(len(table)) + table, 8)
    with pytest.raises(FormatError, match="trailing"):
        list(CatalogReader.from_bytes(data).walk())


def test_short_reads_are_format_errors() -> None:
    def read_at(offset: int, length: int) -> bytes:
        return TREE[offset : offset + length - 1]

    with pytest.raises(FormatError):
        CatalogReader(read_at, len(TREE))


@st.composite
def mutated_catalogs(draw: st.DrawFn) -> bytes:
    data = bytearray(write_catalog(lambda w: emit(w, draw(forests), b"", [])))
    for _ in range(draw(st.integers(1, 4))):
        action = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete"]))
        if not data:
            break
        pos = draw(st.integers(0, len(data) - 1))
        if action == "flip":
            data[pos] ^= 1 << draw(st.integers(0, 7))
        elif action == "set":
            data[pos] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[pos:]
        elif action == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=8))
        else:
            del data[pos : pos + draw(st.integers(1, 8))]
    return bytes(data)


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_catalogs())
def test_fuzz_mutated_catalogs(data: bytes) -> None:
    exercise(data)


@settings(max_examples=200, deadline=1000)
@given(st.binary(max_size=200), st.integers(0, 300))
def test_fuzz_random_bodies(body: bytes, root: int) -> None:
    exercise(catalog(body, root))
