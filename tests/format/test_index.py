"""Fixed and dynamic index headers and checksums, derived from PBS's fixed_index.rs/dynamic_index.rs."""

from __future__ import annotations

import hashlib
import os
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.errors import FormatError, IntegrityError
from cairn.format.index import (
    DYNAMIC_INDEX_MAGIC,
    FIXED_INDEX_MAGIC,
    DynamicIndex,
    DynamicIndexHeader,
    FixedIndex,
    FixedIndexHeader,
    pack_dynamic_entry,
)

UUID = bytes(range(16))


def test_index_magics():
    assert FIXED_INDEX_MAGIC == hashlib.sha256(b"Proxmox Backup fixed sized chunk index v1.0").digest()[:8]
    assert DYNAMIC_INDEX_MAGIC == hashlib.sha256(b"Proxmox Backup dynamic sized chunk index v1.0").digest()[:8]
    assert list(FIXED_INDEX_MAGIC) == [47, 127, 65, 237, 145, 253, 15, 205]
    assert list(DYNAMIC_INDEX_MAGIC) == [28, 145, 78, 165, 25, 186, 179, 205]


def fixed_index_bytes(digests: list[bytes], size: int, chunk_size: int, ctime: int = 1700000000) -> bytes:
    """Built field by field from the C struct in fixed_index.rs: magic, uuid, ctime, csum, size, chunk_size, 4016 reserved."""
    csum = hashlib.sha256(b"".join(digests)).digest()
    header = (
        FIXED_INDEX_MAGIC + UUID + ctime.to_bytes(8, "little", signed=True) + csum
        + size.to_bytes(8, "little") + chunk_size.to_bytes(8, "little") + bytes(4016)
    )
    assert len(header) == 4096
    return header + b"".join(digests)


def test_fixed_header_layout_matches_pbs_struct():
    digests = [hashlib.sha256(bytes([i])).digest() for i in range(3)]
    raw = fixed_index_bytes(digests, size=2 * 4194304 + 17, chunk_size=4194304)
    header = FixedIndexHeader(UUID, 1700000000, hashlib.sha256(b"".join(digests)).digest(), 2 * 4194304 + 17, 4194304)
    assert header.pack() == raw[:4096]
    index = FixedIndex(raw)
    assert len(index) == 3
    assert index.digest(2) == digests[2]
    assert index.chunk_range(2) == (2 * 4194304, 2 * 4194304 + 17)
    assert index.index_csum == hashlib.sha256(b"".join(digests)).digest()


def test_fixed_rejects_bad_csum_and_length():
    digests = [os.urandom(32) for _ in range(2)]
    raw = bytearray(fixed_index_bytes(digests, size=8, chunk_size=4))
    raw[-1] ^= 1
    with pytest.raises(IntegrityError, match="checksum"):
        FixedIndex(bytes(raw))
    with pytest.raises(FormatError, match="length"):
        FixedIndex(fixed_index_bytes(digests, size=8, chunk_size=4)[:-1])
    with pytest.raises(FormatError, match="length"):
        FixedIndex(fixed_index_bytes(digests, size=9, chunk_size=4))
    with pytest.raises(FormatError, match="magic"):
        FixedIndex(b"\0" * 4096)
    with pytest.raises(FormatError, match="too small"):
        FixedIndex(b"\0" * 100)


def dynamic_index_bytes(entries: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(struct.pack("<Q", end) + digest for end, digest in entries)
    csum = hashlib.sha256()
    for end, digest in entries:
        csum.update(end.to_bytes(8, "little"))
        csum.update(digest)
    header = DYNAMIC_INDEX_MAGIC + UUID + (5).to_bytes(8, "little") + csum.digest() + bytes(4032)
    assert len(header) == 4096
    return header + body


def test_dynamic_layout_and_lookup():
    entries = [(100, os.urandom(32)), (250, os.urandom(32)), (1000, os.urandom(32))]
    raw = dynamic_index_bytes(entries)
    index = DynamicIndex(raw)
    assert DynamicIndexHeader(UUID, 5, index.index_csum).pack() == raw[:4096]
    assert pack_dynamic_entry(*entries[1]) == raw[4096 + 40 : 4096 + 80]
    assert index.size == 1000
    assert [index.chunk_at(o) for o in (0, 99, 100, 249, 250, 999)] == [0, 0, 1, 1, 2, 2]
    assert index.chunk_range(1) == (100, 250)


def test_dynamic_rejects_malformed():
    entries = [(100, os.urandom(32)), (250, os.urandom(32))]
    with pytest.raises(FormatError, match="truncated"):
        DynamicIndex(dynamic_index_bytes(entries)[:-3])
    with pytest.raises(FormatError, match="increasing"):
        DynamicIndex(dynamic_index_bytes([(100, os.urandom(32)), (100, os.urandom(32))]))
    raw = bytearray(dynamic_index_bytes(entries))
    raw[4096 + 20] ^= 1
    with pytest.raises(IntegrityError):
        DynamicIndex(bytes(raw))


@given(st.lists(st.tuples(st.integers(1, 1 << 24), st.binary(min_size=32, max_size=32)), max_size=60))
@settings(max_examples=100)
def test_dynamic_round_trip(pieces):
    end = 0
    entries = []
    for length, digest in pieces:
        end += length
        entries.append((end, digest))
    index = DynamicIndex(dynamic_index_bytes(entries))
    assert [index.digest(i) for i in range(len(index))] == [d for _, d in entries]
    assert index.size == end
    for i, (stop, _) in enumerate(entries):
        assert index.chunk_at(stop - 1) == i


@given(st.integers(0, 1 << 30), st.sampled_from([65536, 1 << 20, 4 << 20]))
@settings(max_examples=100)
def test_fixed_round_trip(size, chunk_size):
    count = -(-size // chunk_size)
    if count > 300:
        size = 300 * chunk_size
        count = 300
    digests = [hashlib.sha256(i.to_bytes(4, "little")).digest() for i in range(count)]
    index = FixedIndex(fixed_index_bytes(digests, size, chunk_size))
    assert list(index.digests()) == digests
    assert sum(e - s for s, e in (index.chunk_range(i) for i in range(count))) == size
