"""Sequential pxar decoder: one pass over a stream, yielding entries in archive order.

It reads the archive exactly once and keeps only the open directories' bookkeeping, so it
suits verifying, listing or restoring a whole archive from a chunk stream. Goodbye tables are
not needed for that, but they are verified record by record against the entries just read
(hash, offset, size, search-tree order, tail), so an archive this decoder accepts also works
for random access. File contents are read on request in bounded pieces; whatever the caller
leaves unread is skipped.
"""

from array import array
from bisect import bisect_left
from collections.abc import Iterator
from dataclasses import dataclass, field

from cairn.errors import FormatError, UsageError

from .byte_source import ReadFn, StreamSource
from .constants import (
    FORMAT_VERSION_1,
    FORMAT_VERSION_2,
    GOODBYE_ITEM_SIZE,
    HEADER_SIZE,
    PXAR_ENTRY,
    PXAR_ENTRY_V1,
    PXAR_FILENAME,
    PXAR_FORMAT_VERSION,
    PXAR_GOODBYE,
    PXAR_GOODBYE_TAIL_MARKER,
    PXAR_PAYLOAD,
    PXAR_PAYLOAD_START_MARKER,
    PXAR_PRELUDE,
)
from .entry import Entry, EntryKind, PathNode
from .entry_parser import Header, ParsedEntry, make_entry, parse_entry
from .goodbye import hash_filename, hashes_in_table_order, iter_items
from .items import HEADER, fail, parse_filename, parse_format_version

_GOODBYE_BLOCK = GOODBYE_ITEM_SIZE * 4096
_U64_MAX = (1 << 64) - 1


@dataclass(slots=True)
class _Directory:
    """An open directory and what its goodbye table must say about each child."""

    node: PathNode
    start: int  # what its goodbye tail must count back to: its ENTRY, or 0 for the root
    file_offset: int  # its FILENAME in the parent
    name_hash: int
    # Per child, in archive order: FILENAME offset, name hash, goodbye size. pxar writes a
    # PAYLOAD_REF file's size with or without its contents depending on how it was added,
    # so two sizes are acceptable there.
    offsets: array = field(default_factory=lambda: array("Q"))
    hashes: array = field(default_factory=lambda: array("Q"))
    sizes: array = field(default_factory=lambda: array("Q"))
    alt_sizes: array = field(default_factory=lambda: array("Q"))
    names: set[bytes] = field(default_factory=set)  # children so far, without goodbye checks

    def add(self, name_hash: int, offset: int, size: int, alt_size: int) -> None:
        if size > _U64_MAX:
            raise fail(offset, PXAR_FILENAME, "entry is too large for a goodbye record")
        self.offsets.append(offset)
        self.hashes.append(name_hash)
        self.sizes.append(size)
        # pxar's encoder could not have written an alternative that overflows.
        self.alt_sizes.append(alt_size if alt_size <= _U64_MAX else size)


class Decoder:
    """Iterate over the entries of an archive read through ``read(n)``.

    ``payload_read`` gives the payload stream of a split (version 2) archive; without it the
    entries are still listed but their contents cannot be read. Iterating yields ``Entry``
    objects, the root first; ``format_version`` and ``prelude`` are set once the root has
    been yielded. Any malformation raises ``FormatError`` and ends the iteration.

    Every goodbye table is checked against the entries it indexes unless ``check_goodbye``
    is false; then only its framing is. A restore passes false: the tables are a lookup
    index for random access, never used to extract, and a damaged one should not stop a
    restore of intact files (pxar's own sequential decoder skips them too). Hashing every
    name for the check is a tenth of the decoding time of a tree of small files.
    """

    def __init__(self, read: ReadFn, payload_read: ReadFn | None = None, check_goodbye: bool = True) -> None:
        self._check = check_goodbye
        self._src = StreamSource(read)
        self._payload = StreamSource(payload_read) if payload_read is not None else None
        self._payload_started = False
        self.format_version = FORMAT_VERSION_1
        self.prelude: bytes | None = None
        self._current: Entry | None = None
        self._left = 0  # unread content bytes of the current file
        self._entries = self._walk()

    def __iter__(self) -> Iterator[Entry]:
        return self

    def __next__(self) -> Entry:
        return next(self._entries)

    # --- contents -------------------------------------------------------------------------

    def read_content(self, size: int = 1 << 20) -> bytes:
        """Up to ``size`` bytes of the file last yielded; ``b""`` once it is all read."""
        entry = self._current
        if entry is None or entry.kind is not EntryKind.FILE:
            raise UsageError("the current pxar entry is not a regular file")
        if self._left == 0 or size <= 0:
            return b""
        if entry.payload_offset is None:
            data = self._src.read_some(min(size, self._left))
        else:
            payload = self._payload_at(entry)
            data = payload.read_some(min(size, self._left))
        self._left -= len(data)
        return data

    def iter_content(self, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The rest of the current file's contents in pieces of at most ``chunk_size``."""
        if chunk_size <= 0:
            raise UsageError("chunk size must be positive")
        while chunk := self.read_content(chunk_size):
            yield chunk

    def _payload_at(self, entry: Entry) -> StreamSource:
        """The payload stream positioned inside ``entry``'s contents (checking its header)."""
        payload = self._payload
        if payload is None:
            raise FormatError(
                "pxar: this archive keeps file contents in a payload stream; none was given"
            )
        if not self._payload_started:
            start = HEADER.unpack(payload.read_exact(HEADER_SIZE))
            if start != (PXAR_PAYLOAD_START_MARKER, HEADER_SIZE):
                raise FormatError(
                    "pxar: payload stream does not begin with the start marker"
                )
            self._payload_started = True
        # Nothing read yet: move to this file's PAYLOAD header and check it.
        if self._left == entry.size:
            offset = entry.payload_offset
            if offset is None or offset < payload.position:
                raise fail(
                    entry.entry_offset,
                    None,
                    f"payload offset {offset} lies before the payload already consumed "
                    f"({payload.position}); references must increase",
                )
            payload.skip(offset - payload.position)
            found = payload.read_header()
            if found is None or found[0] != PXAR_PAYLOAD or found[1] != entry.size:
                raise FormatError(
                    f"pxar: payload stream at offset {offset} does not hold the "
                    f"{entry.size}-byte PAYLOAD that entry {entry.path!r} references"
                )
        return payload

    # --- walking --------------------------------------------------------------------------

    def _walk(self) -> Iterator[Entry]:
        src = self._src
        check = self._check
        first = self._start()
        root = parse_entry(
            src,
            first,
            self.format_version,
            allow_hardlink=False,
            end_closes_entry=False,
        )
        if root.kind is not EntryKind.DIRECTORY:
            raise fail(first[2], first[0], "the archive root is not a directory")
        yield self._emit(root, b"", None, None)
        stack = [_Directory(PathNode(None, b""), 0, 0, 0)]
        pending = root.next_header
        while stack:
            if pending is None:
                self._skip_content()
                pending = src.read_header()
                if pending is None:
                    raise FormatError(
                        f"pxar: archive ends at offset {src.position} inside a directory"
                    )
            htype, size, at = pending
            pending = None
            if htype == PXAR_GOODBYE:
                closed = stack.pop()
                if not check:
                    self._skip_goodbye(size, at)
                    continue
                self._check_goodbye(closed, size, at)
                if stack:
                    span = at + HEADER_SIZE + size - closed.file_offset
                    stack[-1].add(closed.name_hash, closed.file_offset, span, span)
                continue
            if htype != PXAR_FILENAME:
                raise fail(at, htype, "found where a FILENAME or GOODBYE was expected")
            parent = stack[-1]
            name = parse_filename(src.read_exact(size), at)
            first = src.read_header()
            if first is None:
                raise fail(at, htype, "archive ends right after this file name")
            parsed = parse_entry(
                src,
                first,
                self.format_version,
                allow_hardlink=True,
                end_closes_entry=False,
            )
            if not check:
                # The goodbye check would catch a name given twice. (Not the order of names:
                # PBS sorts them, but appends a root's .pxarexclude-cli after the others.)
                if name in parent.names:
                    raise fail(at, PXAR_FILENAME, f"name {name!r} appears twice in its directory")
                parent.names.add(name)
            name_hash = hash_filename(name) if check else 0
            if parsed.kind is EntryKind.DIRECTORY:
                node = PathNode(parent.node, name)
                stack.append(_Directory(node, parsed.entry_offset, at, name_hash))
            elif check:
                end, alt_end = self._entry_end(parsed)
                parent.add(name_hash, at, end - at, alt_end - at)
            yield self._emit(parsed, name, parent.node, at)
            pending = parsed.next_header
        self._skip_content()
        self._current = None
        if not src.at_end():
            raise FormatError(
                f"pxar: unexpected data after the end of the archive at offset {src.position}"
            )

    def _start(self) -> Header:
        """Read FORMAT_VERSION and PRELUDE if present; return the root's first header."""
        src = self._src
        first = src.read_header()
        if first is None:
            raise FormatError("pxar: empty archive")
        if first[0] == PXAR_FORMAT_VERSION:
            self.format_version = parse_format_version(
                src.read_exact(first[1]), first[2]
            )
            first = src.read_header()
            if first is not None and first[0] == PXAR_PRELUDE:
                if self.format_version < FORMAT_VERSION_2:
                    raise fail(
                        first[2], first[0], "prelude in a format version 1 archive"
                    )
                self.prelude = src.read_exact(first[1])
                first = src.read_header()
            if first is None:
                raise FormatError("pxar: archive ends before its root entry")
        if first[0] not in (PXAR_ENTRY, PXAR_ENTRY_V1):
            raise fail(first[2], first[0], "found where the root ENTRY was expected")
        return first

    def _emit(
        self,
        parsed: ParsedEntry,
        name: bytes,
        parent: PathNode | None,
        file_offset: int | None,
    ) -> Entry:
        entry = make_entry(parsed, name, parent, file_offset)
        self._current = entry
        self._left = parsed.size if parsed.kind is EntryKind.FILE else 0
        return entry

    def _skip_content(self) -> None:
        """Skip what the caller did not read of an inline file's contents."""
        entry = self._current
        if entry is not None and self._left and entry.payload_offset is None:
            self._src.skip(self._left)
        self._left = 0

    def _entry_end(self, parsed: ParsedEntry) -> tuple[int, int]:
        """Where a non-directory entry ends, as its goodbye record may state it."""
        if parsed.content_offset is not None:
            end = parsed.content_offset + parsed.size
            return end, end
        if parsed.next_header is not None:
            # A fifo or socket ends where the next item starts.
            return parsed.next_header[2], parsed.next_header[2]
        end = self._src.position
        return end, end + (parsed.size if parsed.payload_offset is not None else 0)

    @staticmethod
    def _check_goodbye_framing(size: int, at: int) -> None:
        if size < GOODBYE_ITEM_SIZE or size % GOODBYE_ITEM_SIZE:
            raise fail(
                at, PXAR_GOODBYE, f"table size {size} is not a whole number of records"
            )

    def _skip_goodbye(self, size: int, at: int) -> None:
        """Step over a goodbye table, checking only that it is a whole number of records."""
        self._check_goodbye_framing(size, at)
        self._src.skip(size)

    def _check_goodbye(self, directory: _Directory, size: int, at: int) -> None:
        """Stream through a goodbye table and check every record against the entries."""
        self._check_goodbye_framing(size, at)
        count = len(directory.offsets)
        if size // GOODBYE_ITEM_SIZE - 1 != count:
            raise fail(
                at,
                PXAR_GOODBYE,
                f"table has {size // GOODBYE_ITEM_SIZE - 1} records for {count} entries",
            )
        expected_hashes = hashes_in_table_order(directory.hashes)
        seen = bytearray(count)
        slot = 0
        remaining = size
        while remaining:
            block = self._src.read_exact(min(remaining, _GOODBYE_BLOCK))
            remaining -= len(block)
            for record in iter_items(block):
                if slot == count:
                    self._check_tail(directory, record, size, at)
                else:
                    self._check_record(
                        directory, record, expected_hashes[slot], seen, at
                    )
                slot += 1

    @staticmethod
    def _check_record(
        directory: _Directory,
        record: tuple[int, int, int],
        expected_hash: int,
        seen: bytearray,
        at: int,
    ) -> None:
        name_hash, back, size = record
        if name_hash != expected_hash:
            raise fail(at, PXAR_GOODBYE, "records are not in hash search-tree order")
        target = at - back
        index = bisect_left(directory.offsets, target)
        if index == len(seen) or directory.offsets[index] != target or seen[index]:
            raise fail(
                at, PXAR_GOODBYE, f"a record points at offset {target}, no entry"
            )
        seen[index] = 1
        if directory.hashes[index] != name_hash:
            raise fail(at, PXAR_GOODBYE, f"record for offset {target} has a wrong hash")
        if size not in (directory.sizes[index], directory.alt_sizes[index]):
            raise fail(at, PXAR_GOODBYE, f"record for offset {target} has a wrong size")

    @staticmethod
    def _check_tail(
        directory: _Directory, record: tuple[int, int, int], size: int, at: int
    ) -> None:
        marker, back, full_size = record
        if marker != PXAR_GOODBYE_TAIL_MARKER:
            raise fail(at, PXAR_GOODBYE, "tail record lacks the tail marker")
        if back != at - directory.start or full_size != size + HEADER_SIZE:
            raise fail(
                at,
                PXAR_GOODBYE,
                "tail record does not match the directory's position or size",
            )
