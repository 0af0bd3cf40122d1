"""Property tests: random trees of every item kind survive encode -> decode and encode -> lookup."""

import io
import struct
from dataclasses import dataclass, field
from unittest.mock import patch

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cairn.errors import FormatError
from cairn.format.pxar import (
    S_IFBLK,
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFREG,
    S_IFSOCK,
    Accessor,
    Acl,
    AclDefault,
    AclGroup,
    AclUser,
    Decoder,
    Encoder,
    EntryKind,
    Metadata,
    StoredFile,
    accessor,
)
from cairn.format.pxar import constants as c
from cairn.format.pxar.items import encode_metadata, encode_stat

U64 = st.integers(0, 2**64 - 1)
U32 = st.integers(0, 2**32 - 1)


@dataclass
class Node:
    kind: EntryKind
    md: Metadata | None = None
    children: dict = field(default_factory=dict)
    content: bytes = b""
    target: bytes = b""
    device: tuple[int, int] | None = None
    pick: int = 0  # hardlinks: which earlier file to point at
    reuse: bool = False  # split archives: re-inject the payload and add a PAYLOAD_REF


def valid_name(name: bytes) -> bool:
    return b"/" not in name and b"\0" not in name and name not in (b".", b"..")


names = st.binary(min_size=1, max_size=8).filter(valid_name)
no_nul = st.binary(max_size=12).filter(lambda b: b"\0" not in b)

acls = st.builds(
    Acl,
    users=st.lists(st.builds(AclUser, U64, U64), max_size=2),
    groups=st.lists(st.builds(AclGroup, U64, U64), max_size=2),
    group_obj=st.none() | U64,
    default=st.none() | st.builds(AclDefault, U64, U64, U64, U64),
    default_users=st.lists(st.builds(AclUser, U64, U64), max_size=2),
    default_groups=st.lists(st.builds(AclGroup, U64, U64), max_size=2),
)


def metadata(file_type: int | st.SearchStrategy) -> st.SearchStrategy:
    types = (
        file_type if isinstance(file_type, st.SearchStrategy) else st.just(file_type)
    )
    return st.builds(
        Metadata,
        mode=st.tuples(types, st.integers(0, 0o7777)).map(lambda t: t[0] | t[1]),
        flags=U64,
        uid=U32,
        gid=U32,
        mtime_ns=st.integers(-(2**70), 2**70),
        xattrs=st.lists(st.tuples(no_nul, st.binary(max_size=16)), max_size=3),
        fcaps=st.none() | st.binary(max_size=16),
        acl=acls,
        quota_project_id=st.none() | U64,
    )


leaves = st.one_of(
    st.builds(
        Node,
        st.just(EntryKind.FILE),
        metadata(S_IFREG),
        content=st.binary(max_size=200),
        reuse=st.booleans(),
    ),
    st.builds(
        Node,
        st.just(EntryKind.SYMLINK),
        metadata(S_IFLNK),
        target=st.binary(max_size=40).filter(lambda b: b"\0" not in b),
    ),
    st.builds(
        Node,
        st.just(EntryKind.DEVICE),
        metadata(st.sampled_from([S_IFBLK, S_IFCHR])),
        device=st.tuples(U64, U64),
    ),
    st.builds(Node, st.just(EntryKind.FIFO), metadata(S_IFIFO)),
    st.builds(Node, st.just(EntryKind.SOCKET), metadata(S_IFSOCK)),
    st.builds(Node, st.just(EntryKind.HARDLINK), pick=st.integers(0, 100)),
)


def directory(children: st.SearchStrategy) -> st.SearchStrategy:
    return st.builds(
        Node,
        st.just(EntryKind.DIRECTORY),
        metadata(S_IFDIR),
        children=st.dictionaries(names, children, max_size=6),
    )


trees = directory(st.recursive(leaves, directory, max_leaves=30))


def join(parent: bytes, name: bytes) -> bytes:
    return parent + name if parent == b"/" else parent + b"/" + name


@dataclass
class Built:
    meta: bytes
    payload: bytes
    expected: list  # (path, kind, metadata, content, link_target, device, link_offset)
    offsets: dict  # path -> file_offset of files (hardlink targets)
    listing: dict  # directory path -> child names in order


def build(tree: Node, split: bool) -> Built:
    meta, payload = bytearray(), bytearray()
    enc = Encoder(meta.extend, tree.md, payload_write=payload.extend if split else None)
    expected = [(b"/", EntryKind.DIRECTORY, tree.md, None, None, None, None)]
    files: list[tuple[bytes, int, bytes]] = []
    listing: dict[bytes, list[bytes]] = {}

    def walk(node: Node, path: bytes) -> None:
        listing[path] = []
        for name in sorted(node.children):
            child = node.children[name]
            sub = join(path, name)
            if child.kind is EntryKind.HARDLINK:
                if not files:
                    continue
                target_path, target_offset, _ = files[child.pick % len(files)]
                enc.add_hardlink(name, target_path, target_offset)
                expected.append(
                    (sub, child.kind, None, None, target_path, None, target_offset)
                )
            elif child.kind is EntryKind.DIRECTORY:
                enc.create_directory(name, child.md)
                expected.append((sub, child.kind, child.md, None, None, None, None))
                walk(child, sub)
                enc.finish_directory()
            elif child.kind is EntryKind.FILE:
                if split and child.reuse:
                    # As PBS's metadata mode does: reference first, then inject and advance.
                    at = enc.payload_position
                    offset = enc.add_payload_ref(name, child.md, len(child.content), at)
                    payload.extend(
                        struct.pack("<QQ", c.PXAR_PAYLOAD, 16 + len(child.content))
                        + child.content
                    )
                    enc.advance(16 + len(child.content))
                else:
                    offset = enc.add_file(
                        name, child.md, len(child.content), child.content
                    )
                files.append((sub, offset, child.content))
                expected.append(
                    (sub, child.kind, child.md, child.content, None, None, None)
                )
            elif child.kind is EntryKind.SYMLINK:
                enc.add_symlink(name, child.md, child.target)
                expected.append(
                    (sub, child.kind, child.md, None, child.target, None, None)
                )
            elif child.kind is EntryKind.DEVICE:
                enc.add_device(name, child.md, *child.device)
                expected.append(
                    (sub, child.kind, child.md, None, None, child.device, None)
                )
            elif child.kind is EntryKind.FIFO:
                enc.add_fifo(name, child.md)
                expected.append((sub, child.kind, child.md, None, None, None, None))
            else:
                enc.add_socket(name, child.md)
                expected.append((sub, child.kind, child.md, None, None, None, None))
            listing[path].append(name)

    walk(tree, b"/")
    enc.finish()
    return Built(
        bytes(meta), bytes(payload), expected, {p: o for p, o, _ in files}, listing
    )


def trickle(data: bytes, step: int):
    """A stream that answers every read with at most ``step`` bytes."""
    stream = io.BytesIO(data)
    return lambda n: stream.read(min(n, step))


def decode_all(built: Built, step: int, piece: int) -> list:
    dec = Decoder(
        trickle(built.meta, step),
        trickle(built.payload, step) if built.payload else None,
    )
    got = []
    for e in dec:
        content = (
            b"".join(dec.iter_content(piece)) if e.kind is EntryKind.FILE else None
        )
        got.append(
            (
                e.path,
                e.kind,
                e.metadata,
                content,
                e.link_target,
                e.device,
                e.link_offset,
            )
        )
    return got


FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(trees, st.booleans(), st.integers(1, 100), st.integers(1, 64))
def test_encode_decode_roundtrip(tree, split, step, piece):
    built = build(tree, split)
    assert decode_all(built, step, piece) == built.expected


@FAST
@given(trees, st.booleans())
def test_decoder_skips_unread_contents(tree, split):
    built = build(tree, split)
    dec = Decoder(
        io.BytesIO(built.meta).read, io.BytesIO(built.payload).read if split else None
    )
    paths = []
    for i, e in enumerate(dec):
        paths.append(e.path)
        if e.kind is EntryKind.FILE and i % 2:
            dec.read_content(3)  # read a little, leave the rest to be skipped
    assert paths == [x[0] for x in built.expected]


@FAST
@given(trees, st.booleans())
def test_accessor_finds_every_path(tree, split):
    built = build(tree, split)
    acc = Accessor(
        lambda o, n: built.meta[o : o + n],
        len(built.meta),
        payload_read_at=(lambda o, n: built.payload[o : o + n]) if split else None,
        payload_size=len(built.payload),
    )
    contents = {
        path: content
        for path, kind, _, content, *_ in built.expected
        if kind is EntryKind.FILE
    }
    for path, kind, md, content, link_target, device, link_offset in built.expected:
        e = acc.lookup(path)
        assert e is not None, path
        assert (e.path, e.kind, e.metadata, e.link_target, e.device) == (
            path,
            kind,
            md,
            link_target,
            device,
        )
        if kind is EntryKind.FILE:
            assert e.file_offset == built.offsets[path]
            assert b"".join(acc.open_file(e).chunks(7)) == content
        elif kind is EntryKind.HARDLINK:
            assert e.link_offset == link_offset
            target = acc.follow_hardlink(e)
            assert target.path == link_target
            assert acc.open_file(target).read_at(0, 1 << 20) == contents[link_target]
        elif kind is EntryKind.DIRECTORY:
            directory = acc.open_directory(e)
            assert [child.name for child in directory.entries()] == built.listing[path]
            assert len(directory) == len(built.listing[path])
            assert directory.entry().metadata == md
    # Names that are not there are not found.
    assert acc.lookup(b"/\xff" * 3 + b"nope") is None


@FAST
@given(trees, st.booleans(), st.sampled_from([1, 100, 1 << 16]))
def test_listing_agrees_with_lookup(tree, split, window):
    """A directory's one-pass listing finds what the hash search finds, and decodes files
    that reference the payload stream down to their encoded metadata items."""
    built = build(tree, split)
    acc = Accessor(lambda o, n: built.meta[o : o + n], len(built.meta))
    stored = {}
    for path, kind, md, content, *_ in built.expected:
        if kind is EntryKind.FILE and split:
            entry = acc.lookup(path)
            stored[path] = StoredFile(encode_metadata(md), entry.payload_offset, len(content))
    with patch.object(accessor, "_SCAN_WINDOW", window):
        for path, names in built.listing.items():
            directory = acc.open_root() if path == b"/" else acc.open_directory(acc.lookup(path))
            listing = directory.listing()
            assert len(listing) == len(names)
            for name in names:
                entry = directory.lookup(name)
                assert listing.lookup(name) == entry
                opened = listing.open_directory(name)
                if entry.kind is EntryKind.DIRECTORY:
                    assert (opened.path, opened.start, opened.end) == (
                        entry.path,
                        entry.entry_offset,
                        entry.end_offset,
                    )
                    assert opened.entry().metadata == entry.metadata
                else:
                    assert opened is None
            expected_files = {
                name: stored[join(path, name)] for name in names if join(path, name) in stored
            }
            assert listing.files == expected_files
            assert listing.lookup(b"/\xff-not-there") is None
            assert listing.open_directory(b"/\xff-not-there") is None


@FAST
@given(U64, U64, U32, U32, st.integers(-(2**70), 2**70))
def test_stat_alone_encodes_like_attribute_free_metadata(mode, flags, uid, gid, mtime_ns):
    md = Metadata(mode=mode, flags=flags, uid=uid, gid=gid, mtime_ns=mtime_ns)
    try:
        expected = encode_metadata(md)
    except FormatError as err:
        with pytest.raises(FormatError, match="out of range"):
            encode_stat(mode, flags, uid, gid, mtime_ns)
        assert "out of range" in str(err)
    else:
        assert encode_stat(mode, flags, uid, gid, mtime_ns) == expected


def test_listing_refuses_overlapping_records_and_repeated_names():
    meta = bytearray()
    enc = Encoder(meta.extend, Metadata(mode=S_IFDIR))
    enc.add_fifo(b"a", Metadata(mode=S_IFIFO))
    enc.add_fifo(b"b", Metadata(mode=S_IFIFO))
    enc.finish()
    table = len(meta) - 3 * 24  # two child records and the tail
    # Both records pointing at "a": the second offset equals the first.
    same = bytearray(meta)
    same[table + 24 + 8 : table + 24 + 16] = same[table + 8 : table + 16]
    acc = Accessor(lambda o, n: bytes(same[o : o + n]), len(same))
    with pytest.raises(FormatError, match="overlap"):
        acc.open_root().listing()
    # Both children named "a".
    twice = bytes(meta).replace(b"b\0", b"a\0")
    acc = Accessor(lambda o, n: twice[o : o + n], len(twice))
    with pytest.raises(FormatError, match="same name"):
        acc.open_root().listing()


def test_lookup_in_large_archive_touches_few_ranges():
    """One file out of many: the accessor reads a handful of small ranges, not the archive."""
    meta = bytearray()
    enc = Encoder(meta.extend, Metadata(mode=S_IFDIR | 0o755))
    for d in range(20):
        with enc.directory(b"dir%02d" % d, Metadata(mode=S_IFDIR | 0o755)):
            for f in range(300):
                enc.add_file(
                    b"f%04d" % f,
                    Metadata(mode=S_IFREG | 0o644),
                    100,
                    bytes([f % 256]) * 100,
                )
    enc.finish()
    data = bytes(meta)
    reads = []

    def read_at(offset, size):
        reads.append(size)
        return data[offset : offset + size]

    acc = Accessor(read_at, len(data))
    reads.clear()
    entry = acc.lookup(b"/dir13/f0123")
    assert acc.open_file(entry).read_at(0, 100) == bytes([123]) * 100
    assert len(reads) <= 8
    assert sum(reads) < 40_000 < len(data) // 10


def test_large_directory_goodbye_pages():
    """A directory with more children than one goodbye page is searched page by page."""
    meta = bytearray()
    enc = Encoder(meta.extend, Metadata(mode=S_IFDIR))
    names = [b"n%05d" % i for i in range(3000)]
    for name in names:
        enc.add_fifo(name, Metadata(mode=S_IFIFO))
    enc.finish()
    data = bytes(meta)
    acc = Accessor(lambda o, n: data[o : o + n], len(data))
    root = acc.open_root()
    assert len(root) == 3000
    for name in names[::97] + [names[-1]]:
        assert root.lookup(name).name == name
    assert root.lookup(b"n99999") is None
    assert [e.name for e in root.entries()] == names


def test_encoder_streams_large_file_without_buffering():
    """Contents flow straight to ``write``; the encoder holds at most its small batch buffer."""
    sizes = []
    enc = Encoder(lambda b: sizes.append(len(b)), Metadata(mode=S_IFDIR))
    chunk = bytes(1 << 20)
    total = 64 << 20
    written_before = []

    def chunks():
        for _ in range(total // len(chunk)):
            written_before.append(sum(sizes))
            yield chunk

    enc.add_file(b"big", Metadata(mode=S_IFREG), total, chunks())
    # Every chunk reached ``write`` before the next one was requested.
    assert written_before[-1] >= total - len(chunk)
    assert max(sizes) <= 1 << 20
    enc.finish()

    data_len = sum(sizes)
    # Decode the same archive from a generator-backed stream and read it in bounded pieces.
    out = bytearray()
    enc = Encoder(out.extend, Metadata(mode=S_IFDIR))
    enc.add_file(b"big", Metadata(mode=S_IFREG), 3 << 20, io.BytesIO(bytes(3 << 20)))
    enc.finish()
    dec = Decoder(io.BytesIO(bytes(out)).read)
    next(dec)
    next(dec)
    pieces = list(dec.iter_content(100_000))
    assert max(len(p) for p in pieces) <= 100_000 and sum(map(len, pieces)) == 3 << 20
    assert data_len > total
