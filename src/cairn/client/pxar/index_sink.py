"""A write target that turns a byte stream into stored chunks and a dynamic index.

The pxar encoder and the catalog writer push their output through ``write``; this is the
push-side twin of ``pipeline.ordered_map``: chunks are cut here, digested, compressed,
encrypted and stored by a thread pool (C code that releases the GIL), and their digests are
appended to the index in stream order. At most ``max_inflight`` chunks are in flight, so
memory stays flat however large the tree is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from cairn.client.chunks import ChunkCodec, StoredChunk
from cairn.client.pipeline import default_workers
from cairn.client.progress import Progress
from cairn.datastore.writer import BackupWriter, DynamicIndexWriter
from cairn.errors import IntegrityError

from .chunker import Buffer, StreamChunker
from .reuse import ReusedChunk


class IndexSink:
    """Chunks written bytes into ``archive`` (a ``.didx``) of the snapshot ``writer`` builds."""

    def __init__(
        self,
        writer: BackupWriter,
        archive: str,
        codec: ChunkCodec,
        progress: Progress | None = None,
        workers: int | None = None,
    ) -> None:
        self._writer = writer
        self.archive = archive
        self._codec = codec
        self._progress = progress
        self._index: DynamicIndexWriter = writer.dynamic_index(archive)
        self._chunker = StreamChunker()
        workers = workers or default_workers()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cairn-pxar")
        self._max_inflight = workers * 2
        self._pending: deque[Future[StoredChunk]] = deque()
        self.size = 0

    def write(self, data: Buffer) -> None:
        """Accept the next bytes of the stream."""
        for chunk in self._chunker.feed(data):
            self._submit(chunk)

    def _submit(self, chunk: memoryview) -> None:
        chunks = self._writer.store.chunks
        self._pending.append(self._pool.submit(self._codec.store, chunks, chunk))
        while len(self._pending) >= self._max_inflight:
            self._collect()

    def _collect(self) -> None:
        stored = self._pending.popleft().result()
        self._index.add(stored.digest, stored.size)
        self._writer.stats.record(stored)
        self.size += stored.size
        if self._progress is not None:
            self._progress.advance(stored.size)

    def suggest_boundary(self, offset: int) -> None:
        """A file starts at stream ``offset``: prefer a chunk boundary there."""
        self._chunker.suggest(offset)

    def inject(self, chunks: Sequence[ReusedChunk]) -> None:
        """Cut the stream here and append already stored chunks as they are.

        Used for the previous snapshot's payload chunks in metadata mode: nothing is read or
        hashed, the chunks are only checked to exist and touched (so garbage collection
        keeps them), like any chunk a backup reuses.
        """
        for chunk in self._chunker.finish():
            self._submit(chunk)
        while self._pending:
            self._collect()
        chunk_store = self._writer.store.chunks
        self._chunker.skip(sum(chunk.size for chunk in chunks))
        for chunk in chunks:
            if not chunk_store.touch(chunk.digest):
                raise IntegrityError(
                    f"chunk {chunk.digest.hex()} of the previous snapshot is missing; "
                    "back up with --change-detection-mode data"
                )
            stored = StoredChunk(chunk.digest, chunk.size, 0)
            self._index.add(stored.digest, stored.size)
            self._writer.stats.record(stored)
            self.size += stored.size
            if self._progress is not None:
                self._progress.advance(stored.size)

    def close(self, crypt_mode: str) -> int:
        """Store what is left, write the index and list it in the manifest; returns the size."""
        try:
            for chunk in self._chunker.finish():
                self._submit(chunk)
            while self._pending:
                self._collect()
        finally:
            self._shutdown()
        self._writer.close_index(self.archive, self._index, crypt_mode)
        return self.size

    def abort(self) -> None:
        """Stop the workers after a failure (the writer discards the index file)."""
        for future in self._pending:
            future.cancel()
        self._pending.clear()
        self._shutdown()

    def _shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
