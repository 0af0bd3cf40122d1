"""Fixed (``.fidx``) and dynamic (``.didx``) chunk indexes.

Both start with a 4096-byte header::

    fidx: magic[8] uuid[16] ctime:i64 index_csum[32] size:u64 chunk_size:u64 reserved[4016]
    didx: magic[8] uuid[16] ctime:i64 index_csum[32] reserved[4032]

followed by the entries: a fidx holds one 32-byte digest per chunk (every chunk has
``chunk_size`` bytes but the last); a didx holds (end offset:u64, digest[32]) pairs.

``index_csum`` is SHA-256 over the concatenated digests (fidx) or over each entry's
little-endian end offset followed by its digest (didx), exactly as PBS computes it, and is
what a manifest records for the archive.
"""

from __future__ import annotations

import bisect
import hashlib
import struct
from dataclasses import dataclass

from cairn.errors import FormatError, IntegrityError

FIXED_INDEX_MAGIC = bytes([47, 127, 65, 237, 145, 253, 15, 205])
DYNAMIC_INDEX_MAGIC = bytes([28, 145, 78, 165, 25, 186, 179, 205])

INDEX_HEADER_SIZE = 4096
DIGEST_SIZE = 32
DYNAMIC_ENTRY_SIZE = 40

_FIXED_HEAD = struct.Struct("<8s16sq32sQQ")
_DYNAMIC_HEAD = struct.Struct("<8s16sq32s")
_DYNAMIC_ENTRY = struct.Struct("<Q32s")


@dataclass(frozen=True)
class FixedIndexHeader:
    uuid: bytes
    ctime: int
    index_csum: bytes
    size: int
    chunk_size: int

    def pack(self) -> bytes:
        head = _FIXED_HEAD.pack(
            FIXED_INDEX_MAGIC, self.uuid, self.ctime, self.index_csum, self.size, self.chunk_size
        )
        return head.ljust(INDEX_HEADER_SIZE, b"\0")


@dataclass(frozen=True)
class DynamicIndexHeader:
    uuid: bytes
    ctime: int
    index_csum: bytes

    def pack(self) -> bytes:
        head = _DYNAMIC_HEAD.pack(DYNAMIC_INDEX_MAGIC, self.uuid, self.ctime, self.index_csum)
        return head.ljust(INDEX_HEADER_SIZE, b"\0")


def pack_dynamic_entry(end: int, digest: bytes) -> bytes:
    return _DYNAMIC_ENTRY.pack(end, digest)


class FixedCsum:
    """Incremental ``index_csum`` of a fixed index, so writers need not keep the digests."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update(self, digest: bytes) -> None:
        self._sha.update(digest)

    def digest(self) -> bytes:
        return self._sha.digest()


class DynamicCsum:
    """Incremental ``index_csum`` of a dynamic index."""

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update(self, end: int, digest: bytes) -> None:
        self._sha.update(struct.pack("<Q", end))
        self._sha.update(digest)

    def digest(self) -> bytes:
        return self._sha.digest()


def _check_magic(raw: bytes | memoryview, magic: bytes, what: str) -> None:
    if len(raw) < INDEX_HEADER_SIZE:
        raise FormatError(f"{what} too small ({len(raw)} bytes, header is {INDEX_HEADER_SIZE})")
    if bytes(raw[:8]) != magic:
        raise FormatError(f"not a {what} (wrong magic number)")


class FixedIndex:
    """A parsed fixed index over a buffer (bytes or an mmap); entries are read lazily."""

    def __init__(self, raw: bytes | memoryview, verify_csum: bool = True) -> None:
        _check_magic(raw, FIXED_INDEX_MAGIC, "fixed index")
        _, uuid, ctime, csum, size, chunk_size = _FIXED_HEAD.unpack_from(raw, 0)
        if chunk_size == 0:
            raise FormatError("fixed index has chunk size 0")
        count = (size + chunk_size - 1) // chunk_size
        expected_len = INDEX_HEADER_SIZE + count * DIGEST_SIZE
        if len(raw) != expected_len:
            raise FormatError(
                f"fixed index has wrong length ({len(raw)} bytes, expected {expected_len} "
                f"for {size} bytes in {chunk_size}-byte chunks)"
            )
        self.header = FixedIndexHeader(uuid, ctime, csum, size, chunk_size)
        self._entries = memoryview(raw)[INDEX_HEADER_SIZE:]
        self.count = count
        if verify_csum and self.compute_csum() != csum:
            raise IntegrityError("fixed index checksum mismatch (corrupt index)")

    @property
    def size(self) -> int:
        return self.header.size

    @property
    def chunk_size(self) -> int:
        return self.header.chunk_size

    @property
    def index_csum(self) -> bytes:
        return self.header.index_csum

    def __len__(self) -> int:
        return self.count

    def digest(self, pos: int) -> bytes:
        if not 0 <= pos < self.count:
            raise IndexError(pos)
        return bytes(self._entries[pos * DIGEST_SIZE : (pos + 1) * DIGEST_SIZE])

    def chunk_range(self, pos: int) -> tuple[int, int]:
        start = pos * self.chunk_size
        return start, min(start + self.chunk_size, self.size)

    def digests(self):
        for pos in range(self.count):
            yield self.digest(pos)

    def compute_csum(self) -> bytes:
        return hashlib.sha256(self._entries).digest()


class DynamicIndex:
    """A parsed dynamic index; finds the chunk holding any byte offset by binary search."""

    def __init__(self, raw: bytes | memoryview, verify_csum: bool = True) -> None:
        _check_magic(raw, DYNAMIC_INDEX_MAGIC, "dynamic index")
        _, uuid, ctime, csum = _DYNAMIC_HEAD.unpack_from(raw, 0)
        body = len(raw) - INDEX_HEADER_SIZE
        if body % DYNAMIC_ENTRY_SIZE:
            raise FormatError(f"dynamic index has a truncated entry ({len(raw)} bytes)")
        self.header = DynamicIndexHeader(uuid, ctime, csum)
        self._entries = memoryview(raw)[INDEX_HEADER_SIZE:]
        self.count = body // DYNAMIC_ENTRY_SIZE
        self._ends = [
            _DYNAMIC_ENTRY.unpack_from(self._entries, i * DYNAMIC_ENTRY_SIZE)[0]
            for i in range(self.count)
        ]
        previous = 0
        for end in self._ends:
            if end <= previous:
                raise FormatError("dynamic index offsets are not strictly increasing")
            previous = end
        if verify_csum and self.compute_csum() != csum:
            raise IntegrityError("dynamic index checksum mismatch (corrupt index)")

    @property
    def index_csum(self) -> bytes:
        return self.header.index_csum

    @property
    def size(self) -> int:
        return self._ends[-1] if self._ends else 0

    def __len__(self) -> int:
        return self.count

    def digest(self, pos: int) -> bytes:
        if not 0 <= pos < self.count:
            raise IndexError(pos)
        start = pos * DYNAMIC_ENTRY_SIZE + 8
        return bytes(self._entries[start : start + DIGEST_SIZE])

    def chunk_range(self, pos: int) -> tuple[int, int]:
        start = self._ends[pos - 1] if pos else 0
        return start, self._ends[pos]

    def chunk_at(self, offset: int) -> int:
        """Position of the chunk that holds byte ``offset``."""
        if not 0 <= offset < self.size:
            raise IndexError(offset)
        return bisect.bisect_right(self._ends, offset)

    def digests(self):
        for pos in range(self.count):
            yield self.digest(pos)

    def compute_csum(self) -> bytes:
        sha = hashlib.sha256()
        sha.update(self._entries)
        return sha.digest()
