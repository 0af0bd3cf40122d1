"""Streaming pxar encoder: the caller walks a tree, the encoder writes the archive as it goes.

Memory stays proportional to the open directories' child counts (one 24-byte goodbye record
per child), never to file sizes or the size of the tree. Without a payload stream the output
is a format version 1 archive, byte for byte what pxar's encoder writes for the same calls.
With one it is a version 2 split archive: FORMAT_VERSION (and an optional PRELUDE) at the
start, PAYLOAD_REF items in the metadata stream, and the file contents, each behind a PAYLOAD
header, in the payload stream between a start and a tail marker.
"""

from array import array
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Protocol

from cairn.errors import FormatError

from .constants import (
    PXAR_PAYLOAD,
    PXAR_PAYLOAD_START_MARKER,
    PXAR_PAYLOAD_TAIL_MARKER,
    S_IFREG,
)
from .goodbye import encode_goodbye, hash_filename
from .items import (
    encode_device,
    encode_filename,
    encode_format_version,
    encode_hardlink,
    encode_metadata,
    encode_payload_ref,
    encode_prelude,
    encode_symlink,
    encoded_file_type,
    header,
)
from .metadata import Metadata

WriteFn = Callable[[bytes | bytearray | memoryview], object]
Buffer = bytes | bytearray | memoryview

_COPY_BLOCK = 1 << 20
_U64_LIMIT = 1 << 64


class Reader(Protocol):
    def read(self, size: int, /) -> bytes: ...


class _Sink:
    """Counts every byte handed to ``write`` and batches small pieces into larger writes."""

    def __init__(self, write: WriteFn, batch: int) -> None:
        self._write = write
        self._batch = batch
        self._buf = bytearray()
        self.position = 0

    def put(self, data: Buffer) -> None:
        size = (
            len(data)
            if isinstance(data, (bytes, bytearray))
            else memoryview(data).nbytes
        )
        if size == 0:
            return
        self.position += size
        if size < self._batch:
            self._buf += data
            if len(self._buf) >= self._batch:
                self.flush()
        else:
            self.flush()
            self._write(data)

    def flush(self) -> None:
        if self._buf:
            buf, self._buf = self._buf, bytearray()
            self._write(buf)


class _Writing:
    """``with encoder._writing:`` marks the encoder broken if output fails half-way through
    an entry (a plain class: a generator-based context manager costs several times more)."""

    __slots__ = ("_encoder",)

    def __init__(self, encoder: "Encoder") -> None:
        self._encoder = encoder

    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if exc is not None:
            self._encoder._failure = str(exc) or type(exc).__name__


@dataclass(slots=True)
class _OpenDirectory:
    """A directory still being written.

    ``directory_offset`` is what its goodbye tail counts back to (its ENTRY, or 0 for the
    root); ``file_offset`` is its FILENAME in the parent; ``children`` holds a flat
    ``hash, FILENAME offset, goodbye size`` triple per child written so far.
    """

    directory_offset: int
    file_offset: int
    name_hash: int
    children: array = field(default_factory=lambda: array("Q"))
    last_name: bytes | None = None


class Encoder:
    """Write one pxar archive through ``write``.

    Children of a directory must be added in strictly increasing byte order of their names
    (pxar's rule, which also rules out duplicates). Sizes of files must be declared up front
    and their contents must match them exactly. After any failure the encoder refuses further
    calls: the bytes already written cannot be taken back.

    ``payload_write`` switches to the version 2 split layout; ``prelude`` (version 2 only) is
    an opaque blob stored right after the FORMAT_VERSION item.
    """

    def __init__(
        self,
        write: WriteFn,
        root_metadata: Metadata,
        *,
        payload_write: WriteFn | None = None,
        prelude: bytes | None = None,
    ) -> None:
        if not root_metadata.is_dir():
            raise FormatError("pxar: the root entry of an archive must be a directory")
        if prelude is not None and payload_write is None:
            raise FormatError(
                "pxar: a prelude needs the split (format version 2) layout"
            )
        start = encode_metadata(root_metadata)
        if payload_write is not None:
            version = encode_format_version(2)
            if prelude is not None:
                version += encode_prelude(prelude)
            start = version + start
        self._out = _Sink(write, 1 << 18)
        # Unbuffered: callers inject reused payload bytes themselves between our writes.
        self._payload = _Sink(payload_write, 0) if payload_write is not None else None
        self._stack = [_OpenDirectory(0, 0, 0)]
        self._failure: str | None = None
        self._finished = False
        self._writing = _Writing(self)
        with self._writing:
            if self._payload is not None:
                self._payload.put(header(PXAR_PAYLOAD_START_MARKER, 0))
            self._out.put(start)

    # --- state ----------------------------------------------------------------------------

    @property
    def position(self) -> int:
        """Bytes of (metadata) archive produced so far, including any still batched."""
        return self._out.position

    @property
    def payload_position(self) -> int:
        """Bytes of payload stream produced or announced via ``advance`` so far."""
        return self._require_payload().position

    @property
    def format_version(self) -> int:
        return 1 if self._payload is None else 2

    def _require_payload(self) -> _Sink:
        if self._payload is None:
            raise FormatError(
                "pxar: payload references need the split (format version 2) layout"
            )
        return self._payload

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise FormatError(
                f"pxar: encoder unusable after an earlier failure: {self._failure}"
            )
        if self._finished:
            raise FormatError("pxar: encoder already finished")

    def _begin(self, name: bytes) -> bytes:
        """Validate a child name (and its place in the order); return its FILENAME item."""
        self._check_usable()
        filename = encode_filename(name)
        last = self._stack[-1].last_name
        if last is not None and name <= last:
            raise FormatError(
                f"pxar: {name!r} added after {last!r}; names must be strictly increasing"
            )
        return filename

    def _record(self, name: bytes, file_offset: int, size: int) -> None:
        current = self._stack[-1]
        current.children.extend((hash_filename(name), file_offset, size))
        current.last_name = name

    def _add_entry(self, name: bytes, items: bytes) -> int:
        file_offset = self._out.position
        with self._writing:
            self._out.put(items)
        self._record(name, file_offset, len(items))
        return file_offset

    # --- entries --------------------------------------------------------------------------

    def add_file(
        self,
        name: bytes,
        metadata: Metadata | bytes,
        size: int,
        content: Buffer | Iterable[Buffer] | Reader,
    ) -> int:
        """Add a regular file of exactly ``size`` bytes; return its offset for hardlinks.

        ``content`` is a bytes-like object, an iterable of bytes-like chunks, or a reader
        with ``read(n)``; a reader is read up to ``size`` bytes and no further. Contents go to
        the payload stream in the split layout, into the archive otherwise. ``metadata`` may
        also be given encoded, as ``encode_metadata`` returned it.
        """
        filename = self._begin(name)
        items = self._file_items(name, metadata)
        if not 0 <= size < _U64_LIMIT:
            raise FormatError(f"pxar: invalid file size {size}")
        file_offset = self._out.position
        with self._writing:
            if self._payload is not None:
                self._out.put(filename + items + encode_payload_ref(self._payload.position, size))
                self._payload.put(header(PXAR_PAYLOAD, size))
                _copy(self._payload, size, content, name)
            elif type(content) is bytes and len(content) == size:
                # A small file read whole: one piece (most files of a tree are small).
                self._out.put(filename + items + header(PXAR_PAYLOAD, size) + content)
            else:
                self._out.put(filename + items + header(PXAR_PAYLOAD, size))
                _copy(self._out, size, content, name)
        entry_size = self._out.position - file_offset
        if self._payload is not None:
            # pxar counts the content in the goodbye size even when it lives in the payload stream.
            entry_size += size
        self._record(name, file_offset, entry_size)
        return file_offset

    def _file_items(self, name: bytes, metadata: Metadata | bytes) -> bytes:
        """The encoded metadata of a regular file (given as Metadata or already encoded)."""
        if isinstance(metadata, Metadata):
            file_type = metadata.file_type
            items = encode_metadata(metadata)
        else:
            items = bytes(metadata)
            file_type = encoded_file_type(items)
        if file_type != S_IFREG:
            raise FormatError(
                f"pxar: {name!r} added as a file but its mode is not S_IFREG"
            )
        return items

    def add_payload_ref(
        self, name: bytes, metadata: Metadata | bytes, size: int, payload_offset: int
    ) -> int:
        """Add a file whose PAYLOAD (header and contents) is already in the payload stream.

        This is how the "metadata" change-detection mode reuses unchanged files: the caller
        re-injects their payload chunks, announces them with ``advance``, and points here at
        the PAYLOAD header inside them. Returns the file's offset for hardlinks.

        ``metadata`` may also be given encoded, as ``encode_metadata`` returned it: that mode
        compares files by their encoded metadata and so has it at hand.
        """
        filename = self._begin(name)
        payload = self._require_payload()
        items = self._file_items(name, metadata)
        if not 0 <= size < _U64_LIMIT:
            raise FormatError(f"pxar: invalid file size {size}")
        if not payload.position <= payload_offset < _U64_LIMIT:
            raise FormatError(
                f"pxar: payload offset {payload_offset} is before the current payload "
                f"position {payload.position}"
            )
        return self._add_entry(
            name, filename + items + encode_payload_ref(payload_offset, size)
        )

    def advance(self, size: int) -> None:
        """Account for ``size`` bytes the caller wrote into the payload stream itself."""
        self._check_usable()
        if size < 0:
            raise FormatError(f"pxar: cannot advance the payload stream by {size}")
        self._require_payload().position += size

    def add_symlink(self, name: bytes, metadata: Metadata, target: bytes) -> int:
        """Add a symbolic link pointing at ``target``."""
        filename = self._begin(name)
        if not metadata.is_symlink():
            raise FormatError(
                f"pxar: {name!r} added as a symlink but its mode is not S_IFLNK"
            )
        return self._add_entry(
            name, filename + encode_metadata(metadata) + encode_symlink(target)
        )

    def add_device(
        self, name: bytes, metadata: Metadata, major: int, minor: int
    ) -> int:
        """Add a block or character device node."""
        filename = self._begin(name)
        if not metadata.is_device():
            raise FormatError(
                f"pxar: {name!r} added as a device but its mode is not a device"
            )
        items = filename + encode_metadata(metadata) + encode_device(major, minor)
        return self._add_entry(name, items)

    def add_fifo(self, name: bytes, metadata: Metadata) -> int:
        """Add a named pipe (metadata only)."""
        filename = self._begin(name)
        if not metadata.is_fifo():
            raise FormatError(
                f"pxar: {name!r} added as a fifo but its mode is not S_IFIFO"
            )
        return self._add_entry(name, filename + encode_metadata(metadata))

    def add_socket(self, name: bytes, metadata: Metadata) -> int:
        """Add a unix socket (metadata only)."""
        filename = self._begin(name)
        if not metadata.is_socket():
            raise FormatError(
                f"pxar: {name!r} added as a socket but its mode is not S_IFSOCK"
            )
        return self._add_entry(name, filename + encode_metadata(metadata))

    def add_hardlink(self, name: bytes, target_path: bytes, target_offset: int) -> int:
        """Add a hardlink to a file added earlier.

        ``target_offset`` is what ``add_file``/``add_payload_ref`` returned for the target,
        ``target_path`` its path as restore should recreate it. A hardlink has no metadata of
        its own: it shares the target's inode.
        """
        filename = self._begin(name)
        here = self._out.position
        if not 0 <= target_offset < here:
            raise FormatError(
                "pxar: a hardlink can only point to a file earlier in the archive"
            )
        return self._add_entry(
            name, filename + encode_hardlink(here - target_offset, target_path)
        )

    # --- directories ----------------------------------------------------------------------

    def create_directory(self, name: bytes, metadata: Metadata) -> int:
        """Open a subdirectory; entries added next go into it until ``finish_directory``.

        Returns the offset of its FILENAME, like the other ``add_*`` methods.
        """
        filename = self._begin(name)
        if not metadata.is_dir():
            raise FormatError(
                f"pxar: {name!r} added as a directory but its mode is not S_IFDIR"
            )
        items = encode_metadata(metadata)
        file_offset = self._out.position
        with self._writing:
            self._out.put(filename)
            self._out.put(items)
        self._stack[-1].last_name = name
        self._stack.append(
            _OpenDirectory(
                file_offset + len(filename), file_offset, hash_filename(name)
            )
        )
        return file_offset

    def finish_directory(self) -> None:
        """Close the innermost open subdirectory by writing its goodbye table."""
        self._check_usable()
        if len(self._stack) == 1:
            raise FormatError(
                "pxar: no subdirectory is open (use finish() for the root)"
            )
        closing = self._stack.pop()
        with self._writing:
            self._write_goodbye(closing)
        end = self._out.position
        self._stack[-1].children.extend(
            (closing.name_hash, closing.file_offset, end - closing.file_offset)
        )

    @contextmanager
    def directory(self, name: bytes, metadata: Metadata) -> Iterator["Encoder"]:
        """``with enc.directory(name, md):`` creates, fills and finishes a subdirectory."""
        self.create_directory(name, metadata)
        yield self
        self.finish_directory()

    def _write_goodbye(self, closing: _OpenDirectory) -> None:
        goodbye_offset = self._out.position
        self._out.put(
            encode_goodbye(closing.children, goodbye_offset, closing.directory_offset)
        )

    def flush(self) -> None:
        """Hand every batched byte to ``write`` now."""
        with self._writing:
            self._out.flush()

    def finish(self) -> None:
        """Close the root directory and flush; the archive is complete afterwards."""
        self._check_usable()
        if len(self._stack) != 1:
            raise FormatError(
                f"pxar: {len(self._stack) - 1} subdirectories are still open"
            )
        with self._writing:
            self._write_goodbye(self._stack.pop())
            self._out.flush()
            if self._payload is not None:
                self._payload.put(header(PXAR_PAYLOAD_TAIL_MARKER, 0))
        self._finished = True


def _copy(
    sink: _Sink, size: int, content: Buffer | Iterable[Buffer] | Reader, name: bytes
) -> None:
    """Stream exactly ``size`` bytes of ``content`` into ``sink``."""
    written = 0
    if isinstance(content, (bytes, bytearray, memoryview)):
        chunks: Iterable[Buffer] = (content,)
    elif hasattr(content, "read"):
        chunks = _read_chunks(content, size)
    else:
        chunks = content
    for chunk in chunks:
        length = (
            len(chunk)
            if isinstance(chunk, (bytes, bytearray))
            else memoryview(chunk).nbytes
        )
        if written + length > size:
            raise FormatError(f"pxar: {name!r} has more than its declared {size} bytes")
        sink.put(chunk)
        written += length
    if written != size:
        raise FormatError(
            f"pxar: {name!r} ended after {written} of its declared {size} bytes"
        )


def _read_chunks(reader: Reader, size: int) -> Iterator[bytes]:
    remaining = size
    while remaining:
        chunk = reader.read(min(remaining, _COPY_BLOCK))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk
