"""Running an ``Extractor`` on a thread of its own while the archive is being decoded.

A full restore of many small files spends most of its time in the kernel creating files
(tens of microseconds each on ext4, far more than writing a few KiB) and copying contents
into the page cache. Those system calls release the GIL, so on a thread of their own they
overlap with decoding the archive instead of following it. Every call still reaches the
``Extractor`` in archive order and on one thread, so directories, hardlinks, metadata and
reported problems behave exactly as when it runs inline.

The hand-over is bounded by bytes and by count, so memory stays flat however large the
archive: a big file's contents are handed over piece by piece while the decoder reads them.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

from cairn.format.pxar import Metadata

from .extract import Extractor

DEFAULT_MAX_BYTES = 32 * 1024 * 1024
DEFAULT_MAX_ITEMS = 4096
_STOP = object()  # no more calls
_END = object()  # the end of a streamed file's contents


class _Aborted(Exception):
    """The restore stopped while a file's contents were still being handed over."""


class ExtractThread:
    """The ``Extractor`` methods a streamed restore uses, queued for one worker thread.

    A failure on the worker ends it; the caller sees the exception at its next call or at
    ``finish``. ``abort`` stops the worker once what is already queued is done and closes
    the extractor (no more metadata is applied).
    """

    def __init__(
        self, extractor: Extractor, max_bytes: int = DEFAULT_MAX_BYTES, max_items: int = DEFAULT_MAX_ITEMS
    ) -> None:
        self.extractor = extractor
        self._max_bytes = max_bytes
        self._max_items = max_items
        self._items: deque[tuple[Any, int]] = deque()
        self._bytes = 0
        lock = threading.Lock()
        self._not_empty = threading.Condition(lock)
        self._not_full = threading.Condition(lock)
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="cairn-extract", daemon=True)
        self._thread.start()

    # --- the caller's side ----------------------------------------------------------------

    def enter_directory(self, name: bytes, metadata: Metadata, path: bytes, create: bool = True) -> None:
        self._put((self.extractor.enter_directory, (name, metadata, path, create)))

    def leave_directory(self) -> None:
        self._put((self.extractor.leave_directory, ()))

    def extract_file(self, name: bytes, metadata: Metadata, size: int, contents: Iterable[bytes], path: bytes) -> None:
        """Read ``contents`` now (the decoder moves on) and queue the file.

        A file that fits into one piece travels as one item; a larger one is handed over
        piece by piece, so the worker starts writing it before the decoder has read it all.
        """
        pieces = iter(contents)
        first = next(pieces, b"")
        if len(first) >= size:
            self._put((self.extractor.extract_file, (name, metadata, size, (first,), path)), len(first))
            return
        self._put((_extract_streamed, (self.extractor, name, metadata, size, self._stream(), path)))
        self._put(first, len(first))
        for piece in pieces:
            self._put(piece, len(piece))
        self._put(_END)

    def extract_symlink(self, name: bytes, metadata: Metadata, target: bytes, path: bytes) -> None:
        self._put((self.extractor.extract_symlink, (name, metadata, target, path)))

    def extract_hardlink(self, name: bytes, target_path: bytes, path: bytes) -> None:
        self._put((self.extractor.extract_hardlink, (name, target_path, path)))

    def extract_special(
        self, name: bytes, metadata: Metadata, path: bytes, device: tuple[int, int] | None = None
    ) -> None:
        self._put((self.extractor.extract_special, (name, metadata, path, device)))

    def finish(self, root_metadata: Metadata | None) -> None:
        """Wait until everything queued is done and the extractor finished; raise its failure."""
        self._put((self.extractor.finish, (root_metadata,)))
        self._put(_STOP)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abort(self) -> None:
        """Stop the worker after what is queued and release the extractor's fds."""
        with self._not_full:
            self._items.append((_STOP, 0))
            self._not_empty.notify()
        self._thread.join()
        self.extractor.close()

    def _put(self, item: Any, size: int = 0) -> None:
        with self._not_full:
            while (
                self._error is None
                and self._items
                and (self._bytes >= self._max_bytes or len(self._items) >= self._max_items)
            ):
                self._not_full.wait()
            if self._error is not None:
                raise self._error
            self._items.append((item, size))
            self._bytes += size
            self._not_empty.notify()

    # --- the worker's side ----------------------------------------------------------------

    def _get(self) -> Any:
        with self._not_empty:
            while not self._items:
                self._not_empty.wait()
            item, size = self._items.popleft()
            self._bytes -= size
            # Wake the decoder only once half the room is free: fewer thread switches.
            if self._bytes <= self._max_bytes // 2 and len(self._items) <= self._max_items // 2:
                self._not_full.notify()
            return item

    def _stream(self) -> Iterator[bytes]:
        while (piece := self._get()) is not _END:
            if piece is _STOP:
                raise _Aborted
            yield piece

    def _run(self) -> None:
        try:
            while (item := self._get()) is not _STOP:
                method, args = item
                method(*args)
        except _Aborted:
            pass
        except BaseException as err:  # handed to the caller's thread, raised there
            with self._not_full:
                self._error = err
                self._not_full.notify()


def _extract_streamed(
    extractor: Extractor, name: bytes, metadata: Metadata, size: int, contents: Iterator[bytes], path: bytes
) -> None:
    """``extract_file`` for contents still arriving; what it leaves unread is drained."""
    try:
        extractor.extract_file(name, metadata, size, contents, path)
    finally:
        for _ in contents:
            pass
