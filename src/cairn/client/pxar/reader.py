"""Random access to the bytes behind a chunk index: ``read_at(offset, size)``.

Restoring one file, browsing a catalog or serving a FUSE read only touches the chunks that
hold the bytes asked for. A small LRU cache keeps recently decoded chunks, because pxar
lookups read many small items close together; ``chunk_reads`` counts the chunks actually
loaded from the store (what a single-file restore is measured by).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator

from cairn.client.chunks import ChunkCodec
from cairn.client.pipeline import ordered_map
from cairn.datastore.chunk_store import ChunkStore
from cairn.errors import FormatError, IntegrityError
from cairn.format.index import DynamicIndex, FixedIndex

DEFAULT_CACHE_CHUNKS = 8


class ChunkReader:
    """Reads an index's data by range; thread-safe (FUSE may call from several threads)."""

    def __init__(
        self,
        chunks: ChunkStore,
        index: DynamicIndex | FixedIndex,
        codec: ChunkCodec,
        cache_chunks: int = DEFAULT_CACHE_CHUNKS,
    ) -> None:
        self._chunks = chunks
        self._index = index
        self._codec = codec
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_chunks = max(1, cache_chunks)
        self._lock = threading.Lock()
        self.size = index.size
        self.chunk_reads = 0

    def _position(self, offset: int) -> int:
        index = self._index
        if isinstance(index, FixedIndex):
            return offset // index.chunk_size
        return index.chunk_at(offset)

    def _load(self, pos: int) -> bytes:
        start, end = self._index.chunk_range(pos)
        data = self._codec.load(self._chunks, self._index.digest(pos))
        if len(data) != end - start:
            raise IntegrityError(
                f"chunk {pos} holds {len(data)} bytes where the index says {end - start}"
            )
        return data

    def chunk(self, pos: int) -> bytes:
        """The decoded chunk at index position ``pos`` (cached)."""
        with self._lock:
            data = self._cache.get(pos)
            if data is not None:
                self._cache.move_to_end(pos)
                return data
        data = self._load(pos)
        with self._lock:
            self.chunk_reads += 1
            self._cache[pos] = data
            while len(self._cache) > self._cache_chunks:
                self._cache.popitem(last=False)
        return data

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``; fewer only at the end of the data."""
        if offset < 0 or size < 0:
            raise FormatError(f"invalid read of {size} bytes at offset {offset}")
        end = min(offset + size, self.size)
        parts = []
        while offset < end:
            pos = self._position(offset)
            start, chunk_end = self._index.chunk_range(pos)
            data = self.chunk(pos)
            take = min(end, chunk_end) - offset
            parts.append(data[offset - start : offset - start + take])
            offset += take
        return parts[0] if len(parts) == 1 else b"".join(parts)

    def stream(self) -> Iterator[bytes]:
        """Every chunk in order, loaded ahead in parallel (for whole-archive reads)."""

        def load(pos: int) -> bytes:
            return self._load(pos)

        for data in ordered_map(load, range(len(self._index))):
            with self._lock:
                self.chunk_reads += 1
            yield data


class StreamReader:
    """A ``read(n)`` file-like view of an iterator of byte blocks.

    A read never spans two blocks. One that asks for a whole block gets the block itself,
    not a copy: a large file's contents travel from the chunk decoder to the file without
    being copied again.
    """

    def __init__(self, blocks: Iterator[bytes]) -> None:
        self._blocks = blocks
        self._block = b""
        self._pos = 0

    def read(self, size: int) -> bytes:
        block = self._block
        if self._pos == len(block):
            block = next(self._blocks, b"")
            if not block:
                return b""
            self._block, self._pos = block, 0
        start = self._pos
        self._pos = end = min(start + size, len(block))
        if start == 0 and end == len(block):
            return block
        return block[start:end]
