"""Content-defined chunking of a byte stream pushed in pieces, at PBS's chunk sizes.

PBS cuts dynamic archives with a Buzhash chunker averaging 4 MiB, never below a quarter of
that (1 MiB) and never above four times it (16 MiB), except for the stream's last chunk.
Cairn uses FastCDC in C (pyfastcdc) with the same bounds; the cut points differ from PBS's,
which only costs deduplication against chunks PBS itself wrote, never correctness.

FastCDC starts every chunk afresh, so where a chunk ends depends only on the bytes from its
own start. Cutting a buffer and keeping back its last piece (which only ended because the
buffer did) therefore gives exactly the cuts a single pass over the whole stream would.

A payload stream (split archives) also takes suggested boundaries, the offsets where files
start, as PBS's payload chunker does: a chunk that has reached the minimum size ends at the
next file start if that comes before its content-defined cut. Chunks then tend to begin with
a file, so a later metadata-mode backup can reuse runs of unchanged files with little
padding.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator

from pyfastcdc import FastCDC

MIN_CHUNK = 1 << 20
MAX_CHUNK = 16 << 20
# FastCDC's mean chunk comes out near its "average" parameter plus the minimum; asking for
# 3 MiB gives PBS's 4 MiB mean.
_FASTCDC_AVERAGE = 3 << 20
_CUT_THRESHOLD = 16 << 20  # bytes gathered before a cut pass; bounds memory per stream

Buffer = bytes | bytearray | memoryview


class StreamChunker:
    """Feed bytes with ``feed``; get finished chunks (read-only memoryviews) back.

    The memoryviews point into immutable buffers, so they can be handed to worker threads
    without copying. At most about ``_CUT_THRESHOLD`` plus one chunk is held back.
    """

    def __init__(self) -> None:
        self._cdc = FastCDC(_FASTCDC_AVERAGE, min_size=MIN_CHUNK, max_size=MAX_CHUNK)
        self._pieces: list[Buffer] = []
        self._pending = 0
        self._base = 0  # stream offset of the first byte held back
        self._hints: deque[int] = deque()  # suggested boundaries (stream offsets), ascending

    def suggest(self, offset: int) -> None:
        """Prefer to cut at stream ``offset`` (a file starts there)."""
        if not self._hints or offset > self._hints[-1]:
            self._hints.append(offset)

    def skip(self, size: int) -> None:
        """Account for ``size`` stream bytes added elsewhere (after ``finish``)."""
        assert not self._pending
        self._base += size

    def feed(self, data: Buffer) -> Iterator[memoryview]:
        """Take ``data``; yield the chunks it completes (possibly none)."""
        size = memoryview(data).nbytes
        if not size:
            return
        # Callers may reuse their buffers; bytes objects are immutable and kept as they are.
        self._pieces.append(data if isinstance(data, bytes) else bytes(data))
        self._pending += size
        if self._pending >= _CUT_THRESHOLD:
            yield from self._cut(final=False)

    def finish(self) -> Iterator[memoryview]:
        """Yield every remaining chunk; the last one may be shorter than the minimum."""
        if self._pending:
            yield from self._cut(final=True)

    def _cut(self, final: bool) -> Iterator[memoryview]:
        buf = self._pieces[0] if len(self._pieces) == 1 else b"".join(self._pieces)
        view = memoryview(buf).toreadonly()
        self._pieces = []
        self._pending = 0
        if self._hints:
            yield from self._cut_hinted(view, final)
            return
        self._base += len(view)
        chunks = list(self._cdc.cut_buf(view))
        keep = None if final else chunks.pop()
        for chunk in chunks:
            yield view[chunk.offset : chunk.offset + chunk.length]
        if keep is not None:
            self._pieces.append(view[keep.offset :])
            self._pending = keep.length
            self._base -= keep.length

    def _cut_hinted(self, view: memoryview, final: bool) -> Iterator[memoryview]:
        """Like the plain cut, but ending a chunk early at a suggested boundary."""
        hints = self._hints
        base = self._base
        size = len(view)
        pos = 0
        while pos < size:
            while hints and hints[0] - base <= pos:
                hints.popleft()
            first = next(iter(self._cdc.cut_buf(view[pos:])))
            end = pos + first.length
            if hints and pos + MIN_CHUNK <= hints[0] - base < end:
                end = hints[0] - base
            if end == size and not final:
                break  # it only ends because the buffer does
            yield view[pos:end]
            pos = end
        self._base = base + pos
        if pos < size:
            self._pieces.append(view[pos:])
            self._pending = size - pos
