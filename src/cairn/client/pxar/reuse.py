"""Reusing the previous snapshot's payload chunks for unchanged files ("metadata" mode).

In PBS's metadata change-detection mode a file whose metadata equals its entry in the
previous snapshot's ``.mpxar`` is not read: its PAYLOAD (header and contents) already lies
in the previous ``.ppxar`` stream, so the chunks holding it are appended to the new payload
index as they are (no read, no hash) and the new metadata archive points into them with a
PAYLOAD_REF.

Chunks rarely start and end exactly at file boundaries, so reused chunks carry bytes no file
of the new archive refers to ("padding"). As PBS does, consecutive reusable files whose
payloads are contiguous in the previous stream are gathered into one range, and entries
after the first gathered file are held back (a lookahead), because whether the range is
worth reusing is only known when it ends: if padding makes up more than 10 % of the chunks
that cover it, the files are read and encoded again instead. The last chunk of a range may
be kept back, since the next range can start inside that very chunk.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Protocol

from cairn.format.index import DynamicIndex
from cairn.format.pxar import Listing
from cairn.format.pxar.constants import HEADER_SIZE

from .util import FD_HEADROOM, grow_fd_table

CHUNK_PADDING_THRESHOLD = 0.1  # PBS's CHUNK_PADDING_THRESHOLD
DEFAULT_MAX_CACHED = 512  # files held back with an open fd (PBS's default lookahead size)
_RESERVE_FDS_AT = 32  # held files from which the fd table is grown for the whole lookahead


@dataclass(frozen=True, slots=True)
class ReusedChunk:
    """A chunk of the previous payload index, appended again to the new one."""

    digest: bytes
    size: int
    padding: int  # bytes of it that no reused file covers


@dataclass
class ReuseStats:
    files_reused: int = 0
    files_reencoded: int = 0
    reused_payload_bytes: int = 0  # PAYLOAD headers and contents referenced, not read
    injected_chunks: int = 0
    injected_bytes: int = 0
    partial_chunks: int = 0

    @property
    def padding_bytes(self) -> int:
        return self.injected_bytes - self.reused_payload_bytes


def chunks_for_range(index: DynamicIndex, start: int, end: int) -> tuple[list[ReusedChunk], int, int]:
    """The chunks covering ``[start, end)`` of the stream behind ``index``.

    Returns them with the padding before ``start`` and after ``end`` (counted into the first
    and the last chunk's ``padding``).
    """
    pos = index.chunk_at(start)
    first_start, _ = index.chunk_range(pos)
    entries: list[list] = []
    while True:
        chunk_start, chunk_end = index.chunk_range(pos)
        entries.append([index.digest(pos), chunk_end - chunk_start, 0])
        if chunk_end >= end:
            break
        pos += 1
    start_padding = start - first_start
    end_padding = chunk_end - end
    entries[0][2] += start_padding
    entries[-1][2] += end_padding
    return [ReusedChunk(*entry) for entry in entries], start_padding, end_padding


class HeldFile(Protocol):
    """A reusable file held back with its file open; written later one way or the other."""

    fd: int

    def reuse(self, payload_offset: int) -> None:
        """Encode the file as a PAYLOAD_REF to ``payload_offset`` of the new payload stream."""

    def reencode(self) -> None:
        """Read the file through ``fd`` and encode it with its contents."""


@dataclass(slots=True)
class _Held:
    """An entry held back: a reusable file with its offset in the range, or anything else."""

    run: Callable[[], None] | None  # any entry but a reusable file
    file: HeldFile | None = None
    offset: int = 0
    size: int = 0  # bytes of payload (header and contents) the file reuses


class PayloadReuser:
    """Decides per file, holds entries back and injects the previous payload chunks.

    ``inject`` appends chunks to the new payload index; ``encoder`` (set once the archive is
    started) is told about them with ``advance`` so its payload offsets stay right.
    """

    def __init__(
        self,
        payload_index: DynamicIndex,
        inject: Callable[[list[ReusedChunk]], None],
        max_cached: int = DEFAULT_MAX_CACHED,
    ) -> None:
        self._index = payload_index
        self._payload_size = payload_index.size
        self._inject_chunks = inject
        self._max_cached = max(1, max_cached)
        self.encoder = None  # cairn.format.pxar.Encoder, set by the Archiver
        self.stats = ReuseStats()
        self._held: list[_Held] = []
        self._files = 0
        self._range: tuple[int, int] | None = None
        self._kept: ReusedChunk | None = None

    # --- decisions ------------------------------------------------------------------------

    def reusable_range(
        self, previous: Listing | None, name: bytes, metadata_items: bytes, size: int
    ) -> tuple[int, int] | None:
        """Where the file's PAYLOAD lies in the previous payload stream, if it is unchanged.

        Unchanged means what PBS compares: the whole pxar metadata (mode, flags, owner, mtime,
        xattrs, ACLs, capabilities, project id); Cairn also requires the same size. The
        metadata is compared as encoded items (``encode_metadata``): equal items decode to
        equal metadata, and comparing them needs no decoding of the previous entry.
        """
        if previous is None:
            return None
        stored = previous.files.get(name)
        if stored is None or stored.size != size or stored.metadata_items != metadata_items:
            return None
        start = stored.payload_offset
        end = start + HEADER_SIZE + size
        if end > self._payload_size:
            return None
        return start, end

    @property
    def holding(self) -> bool:
        """Entries are held back: anything added now must queue behind them."""
        return bool(self._held)

    @property
    def full(self) -> bool:
        return self._files >= self._max_cached

    # --- queueing -------------------------------------------------------------------------

    def hold(self, run: Callable[[], None]) -> None:
        """Queue a non-file entry (directory start or end, link, device...) in order."""
        self._held.append(_Held(run))

    def add_file(self, span: tuple[int, int], file: HeldFile) -> None:
        """Hold back a reusable file; its payload is ``span`` in the previous stream.

        Holding costs one object per file: a lookahead of thousands of files stays cheap
        for the garbage collector, which walks every object still alive.
        """
        if self._range is not None and self._range[1] != span[0]:
            self.flush(keep_last_chunk=True)  # a hole: the range ends here
        if self._range is None:
            self._range = span
        else:
            self._range = (self._range[0], span[1])
        self._held.append(_Held(None, file, span[0] - self._range[0], span[1] - span[0]))
        self._files += 1
        if self._files == _RESERVE_FDS_AT and self._max_cached > _RESERVE_FDS_AT:
            grow_fd_table(self._max_cached + FD_HEADROOM, file.fd)

    # --- flushing -------------------------------------------------------------------------

    def flush(self, keep_last_chunk: bool = False) -> None:
        """Write every held entry, reusing the range's chunks unless padding is too high."""
        held, self._held = self._held, []
        span, self._range = self._range, None
        self._files = 0
        try:
            if span is None:
                self._inject_kept()
                self._run(held, None)
                return
            chunks, start_padding, end_padding = chunks_for_range(self._index, *span)
            kept, self._kept = self._kept, None
            padding = start_padding + end_padding
            total = span[1] - span[0] + padding
            continues = kept is not None and kept.digest == chunks[0].digest
            if continues:
                assert kept is not None
                padding -= kept.size - kept.padding  # used by the range before: not waste
            if padding / total > CHUNK_PADDING_THRESHOLD:
                self._kept = kept
                self._inject_kept()
                self._run(held, None)
                return
            if kept is not None:
                if continues:
                    chunks[0] = replace(chunks[0], padding=chunks[0].padding - (kept.size - kept.padding))
                else:
                    self._inject([kept])
            assert self.encoder is not None
            self._run(held, self.encoder.payload_position + start_padding)
            if keep_last_chunk:
                self._kept = chunks.pop()
            self._inject(chunks)
        finally:
            _close_files(held)

    def finish(self) -> None:
        """Write what is held and inject any kept chunk; call before the encoder finishes."""
        self.flush(keep_last_chunk=False)
        self._inject_kept()

    def close(self) -> None:
        """Release the fds of held files after a failure."""
        held, self._held = self._held, []
        _close_files(held)

    def _run(self, held: list[_Held], base: int | None) -> None:
        stats = self.stats
        for entry in held:
            if entry.run is not None:
                entry.run()
            elif base is None:
                assert entry.file is not None
                stats.files_reencoded += 1
                entry.file.reencode()
            else:
                assert entry.file is not None
                stats.files_reused += 1
                stats.reused_payload_bytes += entry.size
                entry.file.reuse(base + entry.offset)

    def _inject_kept(self) -> None:
        if self._kept is not None:
            kept, self._kept = self._kept, None
            self._inject([kept])

    def _inject(self, chunks: list[ReusedChunk]) -> None:
        if not chunks:
            return
        self._inject_chunks(chunks)
        size = sum(chunk.size for chunk in chunks)
        assert self.encoder is not None
        self.encoder.advance(size)
        stats = self.stats
        stats.injected_chunks += len(chunks)
        stats.injected_bytes += size
        stats.partial_chunks += sum(1 for chunk in chunks if chunk.padding)


def _close_files(held: list[_Held]) -> None:
    for entry in held:
        if entry.file is not None and entry.file.fd >= 0:
            os.close(entry.file.fd)
