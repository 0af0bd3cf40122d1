"""A write target that turns a byte stream into stored chunks and a dynamic index.

The pxar encoder and the catalog writer push their output through ``write``; this is the
push-side twin of ``pipeline.ordered_map``. Three stages keep both cores busy:

- the caller's thread (walking and reading the tree) only hands its pieces over, in
  batches through a short queue;
- a cutter thread joins the pieces and cuts them into chunks (FastCDC in C, without the
  GIL), submits each chunk to the pool and appends the digests to the index in stream
  order. It cuts in passes of 16 MiB, or over what it has as soon as the workers run out
  of chunks (many small files come slower than two workers compress them);
- a thread pool digests, compresses, encrypts and stores the chunks (C code that releases
  the GIL). While the key is still being unlocked (scrypt, on a core of its own) the
  first chunks are only hashed and compressed, and finished once it is ready: the other
  core works instead of waiting for the first digest.

Both the queue and the chunks in flight are bounded in bytes, so memory stays flat however
large the tree is. A failure in the cutter or a worker (a missing chunk, a full disk) is
raised in the caller's thread at its next ``write`` or at ``close``.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from cairn.client.chunks import ChunkCodec, PreparedChunk, StoredChunk
from cairn.client.pipeline import default_workers
from cairn.client.progress import Progress
from cairn.datastore.writer import BackupWriter, DynamicIndexWriter
from cairn.errors import IntegrityError

from .chunker import Buffer, StreamChunker
from .reuse import ReusedChunk

_BATCH_BYTES = 4 << 20  # bytes the caller gathers before handing a batch to the cutter
# Batches waiting for the cutter: how far the walk may run ahead. The cutter cuts every
# 16 MiB (see chunker), so four let the walk gather the next pass while one is cut (two:
# the first backup took 50 ms longer in A/B runs).
_QUEUED_BATCHES = 4
# Chunk bytes submitted and not yet in the index, per worker. Chunks run from 1 to 16 MiB,
# and the index takes them in order: with 8 MiB, a 12 MiB chunk and a 4 MiB one filled the
# budget, and a worker that finished the small one idled while the cutter waited for the
# large one (workers busy 120-160 % of 200 through random data; 16 MiB: 190-200 %).
_INFLIGHT_PER_WORKER = 16 << 20
# While the key is unlocked (~0.13 s of scrypt on one core) chunks are only hashed and
# compressed, and kept until it is ready: up to this many bytes (the chunker's segments
# bound them too).
_UNLOCK_INFLIGHT = 48 << 20

# A batch is a list of stream pieces (bytes), suggested boundaries (int stream offsets) and
# runs of reused chunks (tuples), in stream order.
_Item = bytes | int | tuple[ReusedChunk, ...]


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
        self._chunker = StreamChunker(wait=self._collect)
        workers = workers or default_workers()
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cairn-chunk")
        self._workers = workers
        self._max_inflight = workers * _INFLIGHT_PER_WORKER
        # Futures of StoredChunks, or of PreparedChunks (first in line) while the key unlocks.
        self._pending: deque[tuple[Future[StoredChunk | PreparedChunk], memoryview]] = deque()
        self._inflight = 0
        # Chunks prepared (first in line) while the key is being unlocked; -1 once it is.
        self._prepared = 0 if not codec.key_ready else -1
        self.size = 0
        # Caller's side: the batch being gathered.
        self._batch: list[_Item] = []
        self._batch_bytes = 0
        self._queue: queue.Queue[list[_Item] | None] = queue.Queue(maxsize=_QUEUED_BATCHES)
        self._error: BaseException | None = None
        self._stopping = False
        self._closed = False
        self._cutter = threading.Thread(target=self._cut_loop, name="cairn-cutter", daemon=True)
        self._cutter.start()

    # --- the caller's side ----------------------------------------------------------------

    def write(self, data: Buffer) -> None:
        """Accept the next bytes of the stream."""
        size = len(data) if isinstance(data, (bytes, bytearray)) else memoryview(data).nbytes
        if not size:
            return
        # Callers may reuse their buffers; bytes objects are immutable and kept as they are.
        self._batch.append(data if type(data) is bytes else bytes(data))
        self._batch_bytes += size
        if self._batch_bytes >= _BATCH_BYTES:
            self._send_batch()

    def suggest_boundary(self, offset: int) -> None:
        """A file starts at stream ``offset``: prefer a chunk boundary there."""
        self._batch.append(offset)

    def inject(self, chunks: Sequence[ReusedChunk]) -> None:
        """Cut the stream here and append already stored chunks as they are.

        Used for the previous snapshot's payload chunks in metadata mode: nothing is read or
        hashed, the chunks are only checked to exist and touched (so garbage collection
        keeps them), like any chunk a backup reuses.
        """
        self._batch.append(tuple(chunks))
        self._send_batch()

    def _send_batch(self) -> None:
        self._raise_failure()
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        self._queue.put(batch)

    def _raise_failure(self) -> None:
        if self._error is not None:
            error, self._error = self._error, None
            self.abort()
            raise error

    def close(self, crypt_mode: str) -> int:
        """Store what is left, write the index and list it in the manifest; returns the size."""
        if self._batch:
            self._send_batch()
        self._stop()
        self._raise_failure()
        self._writer.close_index(self.archive, self._index, crypt_mode)
        return self.size

    def abort(self) -> None:
        """Stop the cutter and the workers after a failure (the writer discards the index)."""
        self._stopping = True
        self._batch = []
        self._stop()

    def _stop(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        self._cutter.join()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # --- the cutter thread ----------------------------------------------------------------

    def _cut_loop(self) -> None:
        failed = False
        while True:
            batch = self._queue.get()
            if batch is None:
                break
            if failed or self._stopping:
                continue  # keep draining, so the caller never blocks on a full queue
            try:
                self._cut_batch(batch)
            except BaseException as error:  # handed to the caller's thread
                self._error = error
                failed = True
        if failed or self._stopping:
            for future, _ in self._pending:
                future.cancel()
            return
        try:
            for chunk in self._chunker.finish():
                self._submit(chunk)
            self._drain()
        except BaseException as error:
            self._error = error

    def _cut_batch(self, batch: list[_Item]) -> None:
        chunker = self._chunker
        for item in batch:
            if type(item) is bytes:
                for chunk in chunker.feed(item):
                    self._submit(chunk)
            elif type(item) is int:
                chunker.suggest(item)
            else:
                self._append_reused(item)
        if self._idle_workers():
            for chunk in chunker.cut_early():
                self._submit(chunk)

    def _idle_workers(self) -> bool:
        """True if fewer chunks are being stored than there are workers."""
        busy = 0
        for future, _ in self._pending:
            if not future.done():
                busy += 1
                if busy >= self._workers:
                    return False
        return True

    def _submit(self, chunk: memoryview) -> None:
        codec = self._codec
        if self._prepared >= 0 and codec.key_ready:
            self._finish_prepared()
        if self._prepared >= 0:
            future = self._pool.submit(codec.prepare, chunk)
            self._prepared += 1
            limit = _UNLOCK_INFLIGHT
        else:
            future = self._pool.submit(codec.store, self._writer.store.chunks, chunk)
            limit = self._max_inflight
        self._pending.append((future, chunk))
        self._inflight += len(chunk)
        pending = self._pending
        while pending and (self._inflight > limit or (self._prepared < 0 and pending[0][0].done())):
            self._collect()

    def _finish_prepared(self) -> None:
        """The key is unlocked (or must now be waited for): no more chunks are prepared, and
        the prepared ones (the first in line) are finished by the workers."""
        pending, count = self._pending, self._prepared
        self._prepared = -1
        codec, chunks = self._codec, self._writer.store.chunks

        def finish(prepared: Future[PreparedChunk], data: memoryview) -> StoredChunk:
            # The pool starts tasks in order, so every prepare is running or done here.
            return codec.finish(chunks, data, prepared.result())

        for i in range(count):
            prepared, data = pending[i]
            pending[i] = (self._pool.submit(finish, prepared, data), data)

    def _collect(self) -> None:
        if self._prepared >= 0:
            self._finish_prepared()
        future, chunk = self._pending.popleft()
        self._inflight -= len(chunk)
        stored = future.result()
        assert isinstance(stored, StoredChunk)
        self._chunker.release(chunk)
        self._add(stored)

    def _drain(self) -> None:
        while self._pending:
            self._collect()

    def _add(self, stored: StoredChunk) -> None:
        self._index.add(stored.digest, stored.size)
        self._writer.stats.record(stored)
        self.size += stored.size
        if self._progress is not None:
            self._progress.advance(stored.size)

    def _append_reused(self, chunks: tuple[ReusedChunk, ...]) -> None:
        for chunk in self._chunker.finish():
            self._submit(chunk)
        self._drain()
        chunk_store = self._writer.store.chunks
        self._chunker.skip(sum(chunk.size for chunk in chunks))
        for chunk in chunks:
            if not chunk_store.touch(chunk.digest):
                raise IntegrityError(
                    f"chunk {chunk.digest.hex()} of the previous snapshot is missing; "
                    "back up with --change-detection-mode data"
                )
            self._add(StoredChunk(chunk.digest, chunk.size, 0))
