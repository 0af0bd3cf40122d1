"""Bounded sequential readers under the decoder (a stream) and the accessor (a byte range).

Both hand out item headers already checked against the size limits, so no caller can be
talked into a huge allocation or a read past the data it was given.
"""

from collections.abc import Callable

from cairn.errors import FormatError

from .constants import HEADER_SIZE
from .items import HEADER, check_header

ReadFn = Callable[[int], bytes]
ReadAtFn = Callable[[int, int], bytes]

_SKIP_BLOCK = 1 << 20


def _truncated(position: int, wanted: int) -> FormatError:
    return FormatError(
        f"pxar: archive ends at offset {position} where {wanted} more bytes were expected"
    )


class StreamSource:
    """Reads a stream through ``read(n)`` (returns up to n bytes, ``b""`` at the end).

    Small reads are served from one block-sized buffer so that parsing many tiny items does
    not cost one call each; large reads bypass it.
    """

    def __init__(self, read: ReadFn, block: int = 1 << 16) -> None:
        self._read = read
        self._block = block
        self._buf = b""
        self._off = 0
        self.position = 0

    def _available(self) -> int:
        return len(self._buf) - self._off

    def _fill(self) -> bool:
        chunk = self._read(self._block)
        if not chunk:
            return False
        self._buf = (
            self._buf[self._off :] + bytes(chunk) if self._available() else bytes(chunk)
        )
        self._off = 0
        return True

    def read_exact(self, size: int) -> bytes:
        """Exactly ``size`` bytes, or FormatError if the stream ends first."""
        if self._available() >= size:
            data = self._buf[self._off : self._off + size]
            self._off += size
            self.position += size
            return data
        parts = [self._buf[self._off :]]
        got = len(parts[0])
        self._buf, self._off = b"", 0
        while got < size:
            chunk = self._read(max(size - got, self._block))
            if not chunk:
                raise _truncated(self.position + got, size - got)
            parts.append(bytes(chunk))
            got += len(chunk)
        data = b"".join(parts)
        if got > size:
            self._buf = data[size:]
            data = data[:size]
        self.position += size
        return data

    def read_some(self, size: int) -> bytes:
        """Between 1 and ``size`` bytes; FormatError at the end of the stream."""
        if not self._available():
            if size >= self._block:
                chunk = bytes(self._read(size))
                if not chunk:
                    raise _truncated(self.position, size)
                if len(chunk) > size:
                    self._buf, chunk = chunk[size:], chunk[:size]
                self.position += len(chunk)
                return chunk
            if not self._fill():
                raise _truncated(self.position, size)
        take = min(size, self._available())
        data = self._buf[self._off : self._off + take]
        self._off += take
        self.position += take
        return data

    def skip(self, size: int) -> None:
        """Consume ``size`` bytes without keeping them."""
        while size > 0:
            size -= len(self.read_some(min(size, _SKIP_BLOCK)))

    def at_end(self) -> bool:
        """True if the stream has no more bytes."""
        return not self._available() and not self._fill()

    def read_header(self) -> tuple[int, int, int] | None:
        """Next item header as ``(htype, content_size, offset)``; None at a clean end."""
        if self.at_end():
            return None
        at = self.position
        htype, full_size = HEADER.unpack(self.read_exact(HEADER_SIZE))
        return htype, check_header(htype, full_size, at, None), at


class RangeSource:
    """Reads the byte range ``[start, end)`` through ``read_at(offset, size)``.

    One ``read_at`` call fetches up to ``readahead`` bytes, enough for a FILENAME and the
    metadata items of a typical entry, so a lookup costs few calls on a remote archive.
    """

    def __init__(
        self, read_at: ReadAtFn, start: int, end: int, readahead: int = 4096
    ) -> None:
        self._read_at = read_at
        self.position = start
        self.end = end
        self._readahead = readahead
        self._window = b""
        self._window_start = start

    def read_exact(self, size: int) -> bytes:
        """Exactly ``size`` bytes inside the range, or FormatError."""
        if size > self.end - self.position:
            raise _truncated(self.end, size - (self.end - self.position))
        rel = self.position - self._window_start
        if not (0 <= rel and rel + size <= len(self._window)):
            want = max(size, min(self._readahead, self.end - self.position))
            self._window = fetch(self._read_at, self.position, want)
            self._window_start = self.position
            rel = 0
        self.position += size
        return self._window[rel : rel + size]

    def skip(self, size: int) -> None:
        if size > self.end - self.position:
            raise _truncated(self.end, size - (self.end - self.position))
        self.position += size

    def at_end(self) -> bool:
        return self.position >= self.end

    def read_header(self) -> tuple[int, int, int] | None:
        """Next item header as ``(htype, content_size, offset)``; None at the range end."""
        if self.at_end():
            return None
        at = self.position
        htype, full_size = HEADER.unpack(self.read_exact(HEADER_SIZE))
        return htype, check_header(htype, full_size, at, self.end - at), at


def fetch(read_at: ReadAtFn, offset: int, size: int) -> bytes:
    """``read_at`` that insists on a full answer: a short one means the data was cut off."""
    data = read_at(offset, size)
    if len(data) != size:
        raise FormatError(
            f"pxar: reading {size} bytes at offset {offset} returned {len(data)}; the archive is truncated"
        )
    return bytes(data)
