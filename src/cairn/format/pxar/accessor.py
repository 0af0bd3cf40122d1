"""Random access into a pxar archive through ``read_at(offset, size)``.

Every directory ends with a goodbye table whose last record leads back to the directory's
start, so the root is found from the archive's last 24 bytes and any name is found by a
binary search over SipHash values, reading only that directory's table pages, one FILENAME
and one entry. Extracting one file from a huge archive therefore touches a handful of byte
ranges; this is what single-file restore and mounting build on. A walk that needs every
name of a directory reads the directory in one pass instead (``Directory.listing``).
Nothing read is trusted: each offset is checked to stay inside the directory that claims it,
so corrupt or hostile data ends in ``FormatError`` and never in a loop.
"""

import struct
import sys
from array import array
from bisect import bisect_right
from collections.abc import Iterator
from typing import NamedTuple

from cairn.errors import FormatError, UsageError

from .byte_source import RangeSource, ReadAtFn, fetch
from .constants import (
    FORMAT_VERSION_1,
    FORMAT_VERSION_2,
    GOODBYE_ITEM_SIZE,
    HEADER_SIZE,
    MAX_FILENAME_LEN,
    PXAR_ENTRY,
    PXAR_ENTRY_V1,
    PXAR_FILENAME,
    PXAR_FORMAT_VERSION,
    PXAR_GOODBYE,
    PXAR_GOODBYE_TAIL_MARKER,
    PXAR_PAYLOAD,
    PXAR_PAYLOAD_REF,
    PXAR_PRELUDE,
    S_IFDIR,
    S_IFMT,
    STAT_SIZE,
)
from .entry import Entry, EntryKind, PathNode
from .entry_parser import make_entry, parse_entry
from .goodbye import bst_find, hash_filename, unpack_item
from .items import (
    ATTRIBUTE_ITEMS,
    HEADER,
    check_header,
    fail,
    parse_filename,
    parse_format_version,
)

_TAIL_READ = 4096  # bytes read at a directory's end: the tail, and all of a small table
_PAGE_ITEMS = 512  # goodbye records fetched per read for large tables
_MIN_GOODBYE = HEADER_SIZE + GOODBYE_ITEM_SIZE
_PAIR = struct.Struct("<QQ")
_SCAN_WINDOW = 1 << 16  # bytes of neighbouring children a listing fetches at once
_ENTRY_FULL_SIZE = HEADER_SIZE + STAT_SIZE
_PAYLOAD_REF_FULL_SIZE = HEADER_SIZE + 16
_FILENAME_MAX = HEADER_SIZE + MAX_FILENAME_LEN + 1
_FILE_ITEMS = struct.Struct(f"<QQQ{STAT_SIZE - 8}xQQQQ")  # ENTRY header, mode, PAYLOAD_REF


class StoredFile(NamedTuple):
    """A regular file of a split archive as its entry stores it.

    ``metadata_items`` are the raw ENTRY and attribute items, unchecked: equal to what
    ``encode_metadata`` makes of some metadata, they stand for exactly that metadata.
    ``payload_offset`` is where its PAYLOAD header lies in the payload stream.
    """

    metadata_items: bytes
    payload_offset: int
    size: int


class Accessor:
    """Random-access reader over an archive of ``size`` bytes.

    For a split (version 2) archive pass the payload stream as ``payload_read_at`` and
    ``payload_size``; without it entries can be listed but contents not read.
    """

    def __init__(
        self,
        read_at: ReadAtFn,
        size: int,
        *,
        payload_read_at: ReadAtFn | None = None,
        payload_size: int = 0,
    ) -> None:
        if size < HEADER_SIZE + _MIN_GOODBYE:
            raise FormatError(f"pxar: {size} bytes are too few for an archive")
        self._read_at = read_at
        self.size = size
        self._payload_read_at = payload_read_at
        self._payload_size = payload_size
        htype, full_size = HEADER.unpack(fetch(read_at, 0, HEADER_SIZE))
        check_header(htype, full_size, 0, size)
        self.format_version = FORMAT_VERSION_1
        if htype == PXAR_FORMAT_VERSION:
            content = fetch(read_at, HEADER_SIZE, full_size - HEADER_SIZE)
            self.format_version = parse_format_version(content, 0)

    # --- directories ----------------------------------------------------------------------

    def open_root(self) -> "Directory":
        """The root directory, located from the goodbye tail at the archive's end."""
        return Directory(self, PathNode(None, b""), 0, self.size, None)

    def open_directory(self, entry: Entry) -> "Directory":
        """A directory entry found by ``lookup`` or ``Directory.entries``."""
        if entry.kind is not EntryKind.DIRECTORY or entry.end_offset is None:
            raise UsageError(
                f"{entry.path!r} is not a directory found through this accessor"
            )
        if entry.parent is None:
            return self.open_root()
        node = PathNode(entry.parent, entry.name)
        return Directory(self, node, entry.entry_offset, entry.end_offset, entry)

    def lookup(self, path: bytes) -> Entry | None:
        """The entry at ``path`` (``b"/etc/hosts"``, leading slash optional), or None.

        Symlinks are not followed; ``..`` is refused because an archive path never needs it.
        """
        parts = [part for part in path.split(b"/") if part and part != b"."]
        if b".." in parts:
            raise UsageError(f"archive path {path!r} must not contain '..'")
        directory = self.open_root()
        if not parts:
            return directory.entry()
        for part in parts[:-1]:
            found = directory.lookup(part)
            if found is None or found.kind is not EntryKind.DIRECTORY:
                return None
            directory = self.open_directory(found)
        return directory.lookup(parts[-1])

    def prelude(self) -> bytes | None:
        """The PRELUDE blob of a version 2 archive, if it has one."""
        if self.format_version == FORMAT_VERSION_1:
            return None
        after_version = HEADER_SIZE + 8
        src = RangeSource(self._read_at, after_version, self.size)
        header = src.read_header()
        if header is None or header[0] != PXAR_PRELUDE:
            return None
        return src.read_exact(header[1])

    # --- links and contents ---------------------------------------------------------------

    def follow_hardlink(self, entry: Entry) -> Entry:
        """The regular file a hardlink entry points to."""
        if entry.kind is not EntryKind.HARDLINK or entry.link_offset is None:
            raise UsageError(f"{entry.path!r} is not a hardlink")
        at = entry.link_offset
        src = RangeSource(self._read_at, at, self.size)
        name = _read_filename(src)
        first = src.read_header()
        if first is None:
            raise fail(at, PXAR_FILENAME, "archive ends after this file name")
        parsed = parse_entry(
            src,
            first,
            self.format_version,
            allow_hardlink=False,
            end_closes_entry=False,
        )
        if parsed.kind is not EntryKind.FILE:
            raise fail(at, PXAR_FILENAME, "hardlink target is not a regular file")
        parent = PathNode.from_path((entry.link_target or b"").rpartition(b"/")[0])
        return make_entry(parsed, name, parent, at)

    def open_file(self, entry: Entry) -> "FileContents":
        """Reader for a regular file's contents, wherever they are stored."""
        if entry.kind is not EntryKind.FILE:
            raise UsageError(f"{entry.path!r} is not a regular file")
        if entry.payload_offset is None:
            assert entry.content_offset is not None
            if entry.content_offset + entry.size > self.size:
                raise fail(
                    entry.entry_offset,
                    PXAR_ENTRY,
                    "contents run past the archive's end",
                )
            return FileContents(self._read_at, entry.content_offset, entry.size)
        if self._payload_read_at is None:
            raise FormatError(
                "pxar: this archive keeps file contents in a payload stream; none was given"
            )
        at = entry.payload_offset
        if at + HEADER_SIZE + entry.size > self._payload_size:
            raise FormatError(
                f"pxar: payload of {entry.path!r} runs past the payload stream's end"
            )
        htype, full_size = HEADER.unpack(fetch(self._payload_read_at, at, HEADER_SIZE))
        if htype != PXAR_PAYLOAD or full_size != entry.size + HEADER_SIZE:
            raise FormatError(
                f"pxar: payload stream at offset {at} does not hold the PAYLOAD that "
                f"{entry.path!r} references"
            )
        return FileContents(self._payload_read_at, at + HEADER_SIZE, entry.size)


class FileContents:
    """A regular file's bytes, read by range."""

    def __init__(self, read_at: ReadAtFn, start: int, size: int) -> None:
        self._read_at = read_at
        self._start = start
        self.size = size

    def read_at(self, offset: int, size: int) -> bytes:
        """Up to ``size`` bytes from ``offset``; fewer only at the end of the file."""
        if offset < 0 or size < 0:
            raise UsageError("offset and size must not be negative")
        size = max(0, min(size, self.size - offset))
        if size == 0:
            return b""
        return fetch(self._read_at, self._start + offset, size)

    def chunks(self, chunk_size: int = 1 << 20, offset: int = 0) -> Iterator[bytes]:
        """The contents from ``offset`` on, in pieces of at most ``chunk_size`` bytes."""
        if chunk_size <= 0:
            raise UsageError("chunk size must be positive")
        while offset < self.size:
            data = self.read_at(offset, chunk_size)
            offset += len(data)
            yield data


class Directory:
    """One directory of an archive: its goodbye table and the way to its children."""

    def __init__(
        self,
        accessor: Accessor,
        node: PathNode,
        start: int,
        end: int,
        entry: Entry | None,
    ) -> None:
        self._accessor = accessor
        self._read_at = accessor._read_at
        self._node = node
        self._entry = entry
        self.start = start  # ENTRY offset (0 for the root: its tail counts from there)
        self.end = end
        if end - start < _MIN_GOODBYE:
            raise FormatError(
                f"pxar: directory at offset {start} is too small for a goodbye table"
            )
        block_start = max(start, end - _TAIL_READ)
        block = fetch(self._read_at, block_start, end - block_start)
        marker, back, goodbye_size = unpack_item(block, len(block) - GOODBYE_ITEM_SIZE)
        if marker != PXAR_GOODBYE_TAIL_MARKER:
            raise FormatError(f"pxar: no goodbye tail marker before offset {end}")
        if (
            goodbye_size < _MIN_GOODBYE
            or (goodbye_size - HEADER_SIZE) % GOODBYE_ITEM_SIZE
            or goodbye_size > end - start
            or back != end - goodbye_size - start
        ):
            raise FormatError(
                f"pxar: goodbye tail before offset {end} does not fit its directory"
            )
        self.goodbye_offset = end - goodbye_size
        self._count = (goodbye_size - HEADER_SIZE) // GOODBYE_ITEM_SIZE - 1
        # Small tables came with the tail read; large ones are fetched page by page.
        self._table: bytes | None = None
        self._pages: dict[int, bytes] = {}
        rel = self.goodbye_offset - block_start
        if rel >= 0:
            head = block[rel : rel + HEADER_SIZE]
            self._table = block[rel + HEADER_SIZE : len(block) - GOODBYE_ITEM_SIZE]
        else:
            head = fetch(self._read_at, self.goodbye_offset, HEADER_SIZE)
        htype, full_size = HEADER.unpack(head)
        if htype != PXAR_GOODBYE or full_size != goodbye_size:
            raise fail(
                self.goodbye_offset, htype, "is not the GOODBYE item its tail describes"
            )

    @property
    def path(self) -> bytes:
        return self._node.path

    def __len__(self) -> int:
        return self._count

    def entry(self) -> Entry:
        """This directory's own entry (name, metadata)."""
        if self._entry is None:
            self._entry = self._decode_self()
        return self._entry

    def lookup(self, name: bytes) -> Entry | None:
        """The child called ``name``, found through the goodbye table's hash search."""
        for slot in bst_find(self._count, self._hash_at, hash_filename(name)):
            found, src, file_offset, range_end = self._open_child(slot)
            if found == name:
                return self._decode_child(found, src, file_offset, range_end)
        return None

    def listing(self) -> "Listing":
        """Every child by name, read in one pass over the directory (see ``Listing``)."""
        goodbye_offset = self.goodbye_offset
        records = self._records()
        offsets = [goodbye_offset - back for back in records[1::3]]
        sizes = records[2::3]
        order = sorted(range(len(offsets)), key=offsets.__getitem__)
        bounds = [offsets[slot] for slot in order]
        bounds.append(goodbye_offset)
        previous = self.start
        for offset in bounds:
            if offset <= previous:
                raise fail(
                    goodbye_offset,
                    PXAR_GOODBYE,
                    "records overlap or point outside their directory",
                )
            previous = offset
        split = self._accessor.format_version >= FORMAT_VERSION_2
        listing = Listing(self)
        count = len(order)
        first = 0
        while first < count:
            base = bounds[first]
            last = bisect_right(bounds, base + _SCAN_WINDOW, first + 1) - 1
            if last == first:
                slot = order[first]
                name, found = self._scan_large_child(slot, bounds[first + 1], split)
                listing._add(name, slot, found, bounds[first] + sizes[slot])
                first += 1
                continue
            window = fetch(self._read_at, base, bounds[last] - base)
            start = 0
            for k in range(first, last):
                end = bounds[k + 1] - base
                name, found = _scan_child(window, start, end, base + start, split)
                slot = order[k]
                listing._add(name, slot, found, bounds[k] + sizes[slot])
                start = end
            first = last
        if len(listing) != count:
            raise fail(goodbye_offset, PXAR_GOODBYE, "two children have the same name")
        return listing

    def entries(self) -> Iterator[Entry]:
        """All children in archive order (which is name order for well-formed archives)."""
        order = sorted(
            (self.goodbye_offset - self._item(slot)[1], slot)
            for slot in range(self._count)
        )
        previous = -1
        for file_offset, slot in order:
            if file_offset == previous:
                raise fail(
                    self.goodbye_offset,
                    PXAR_GOODBYE,
                    "two records point at the same entry",
                )
            previous = file_offset
            yield self._decode_child(*self._open_child(slot))

    # --- internals ------------------------------------------------------------------------

    def _item(self, slot: int) -> tuple[int, int, int]:
        if self._table is not None:
            return unpack_item(self._table, slot * GOODBYE_ITEM_SIZE)
        page, index = divmod(slot, _PAGE_ITEMS)
        data = self._pages.get(page)
        if data is None:
            first = page * _PAGE_ITEMS
            count = min(_PAGE_ITEMS, self._count - first)
            offset = self.goodbye_offset + HEADER_SIZE + first * GOODBYE_ITEM_SIZE
            data = self._pages[page] = fetch(
                self._read_at, offset, count * GOODBYE_ITEM_SIZE
            )
        return unpack_item(data, index * GOODBYE_ITEM_SIZE)

    def _scan_large_child(
        self, slot: int, end: int, split: bool
    ) -> tuple[bytes, StoredFile | int | None]:
        """``_scan_child`` for a child spanning more than a scan window: a directory with
        its contents is not fetched whole, a file with large attributes is."""
        entry = self._decode_child(*self._open_child(slot))
        if entry.kind is EntryKind.DIRECTORY:
            return entry.name, entry.entry_offset
        if entry.kind is not EntryKind.FILE or entry.payload_offset is None:
            return entry.name, None
        assert entry.file_offset is not None
        data = fetch(self._read_at, entry.file_offset, end - entry.file_offset)
        return _scan_child(data, 0, len(data), entry.file_offset, split)

    def _records(self) -> array:
        """Every child's goodbye record (hash, offset back, size), flat in table order."""
        table = self._table
        if table is None:
            size = self._count * GOODBYE_ITEM_SIZE
            table = fetch(self._read_at, self.goodbye_offset + HEADER_SIZE, size)
        items = array("Q", table)
        if sys.byteorder == "big":
            items.byteswap()
        return items

    def _hash_at(self, slot: int) -> int:
        return self._item(slot)[0]

    def _open_child(self, slot: int) -> tuple[bytes, RangeSource, int, int]:
        """Read a child's FILENAME; return its name, a source after it, offset, range end."""
        _hash, back, size = self._item(slot)
        file_offset = self.goodbye_offset - back
        if not self.start < file_offset < self.goodbye_offset:
            raise fail(
                self.goodbye_offset, PXAR_GOODBYE, "record points outside its directory"
            )
        range_end = file_offset + size
        src = RangeSource(
            self._read_at, file_offset, min(range_end, self.goodbye_offset)
        )
        return _read_filename(src), src, file_offset, range_end

    def _decode_child(
        self, name: bytes, src: RangeSource, file_offset: int, range_end: int
    ) -> Entry:
        first = src.read_header()
        if first is None:
            raise fail(file_offset, PXAR_FILENAME, "nothing follows this file name")
        parsed = parse_entry(
            src,
            first,
            self._accessor.format_version,
            allow_hardlink=True,
            end_closes_entry=True,
        )
        if parsed.kind is EntryKind.DIRECTORY and range_end > self.goodbye_offset:
            raise fail(
                file_offset,
                PXAR_FILENAME,
                "directory extends past its parent's goodbye table",
            )
        return make_entry(
            parsed, name, self._node, file_offset, min(range_end, self.goodbye_offset)
        )

    def _decode_self(self) -> Entry:
        src = RangeSource(self._read_at, self.start, self.end)
        first = src.read_header()
        if (
            self._node.parent is None
            and first is not None
            and first[0] == PXAR_FORMAT_VERSION
        ):
            src.skip(first[1])
            first = src.read_header()
            if first is not None and first[0] == PXAR_PRELUDE:
                src.skip(first[1])
                first = src.read_header()
        if first is None or first[0] not in (PXAR_ENTRY, PXAR_ENTRY_V1):
            raise FormatError(f"pxar: no directory ENTRY at offset {self.start}")
        parsed = parse_entry(
            src,
            first,
            self._accessor.format_version,
            allow_hardlink=False,
            end_closes_entry=False,
        )
        if parsed.kind is not EntryKind.DIRECTORY:
            raise fail(
                first[2],
                first[0],
                "goodbye table belongs to something that is not a directory",
            )
        return make_entry(parsed, b"", None, None, self.end)


class Listing:
    """Every child of one directory by name, from one pass over the directory.

    A walk that compares a whole tree against an archive (metadata change detection) asks
    for every name in turn; one pass costs far less than a hash search and a few reads per
    name. Regular files that reference the payload stream, the entries such a walk reuses,
    are decoded during the pass into ``files``, and subdirectories are recognised so that
    ``open_directory`` needs no further read; any other child is decoded (and checked in
    full) when ``lookup`` asks for it.
    """

    def __init__(self, directory: Directory) -> None:
        self.directory = directory
        self.files: dict[bytes, StoredFile] = {}
        self._slots: dict[bytes, int] = {}
        self._directories: dict[bytes, tuple[int, int]] = {}  # ENTRY offset, end

    def __len__(self) -> int:
        return len(self._slots)

    def lookup(self, name: bytes) -> Entry | None:
        """The child called ``name``, decoded like ``Directory.lookup`` does."""
        slot = self._slots.get(name)
        if slot is None:
            return None
        directory = self.directory
        return directory._decode_child(*directory._open_child(slot))

    def open_directory(self, name: bytes) -> Directory | None:
        """The subdirectory called ``name``; None if there is no such child or it is not
        a directory. Directories the pass recognised open without decoding their entry."""
        found = self._directories.get(name)
        if found is None:
            entry = self.lookup(name)
            if entry is None or entry.kind is not EntryKind.DIRECTORY:
                return None
            return self.directory._accessor.open_directory(entry)
        start, end = found
        parent = self.directory
        if end > parent.goodbye_offset:
            raise fail(start, PXAR_ENTRY, "directory extends past its parent's goodbye table")
        return Directory(parent._accessor, PathNode(parent._node, name), start, end, None)

    def _add(self, name: bytes, slot: int, found: StoredFile | int | None, end: int) -> None:
        self._slots[name] = slot
        if type(found) is StoredFile:
            self.files[name] = found
        elif found is not None:
            self._directories[name] = (found, end)


def _scan_child(
    data: bytes, pos: int, end: int, at: int, split: bool
) -> tuple[bytes, StoredFile | int | None]:
    """The name of the child at ``data[pos:end]`` (archive offset ``at``), and the child
    itself if it is a regular file with metadata items and a PAYLOAD_REF, or the offset of
    its ENTRY if it is a directory; None for anything else."""
    if end - pos < HEADER_SIZE:
        raise fail(at, None, "goodbye record points at a child too small for a FILENAME")
    htype, full_size = HEADER.unpack_from(data, pos)
    if htype != PXAR_FILENAME or not HEADER_SIZE < full_size <= min(end - pos, _FILENAME_MAX):
        check_header(htype, full_size, at, end - pos)  # the precise complaint, if any
        raise FormatError(f"pxar: expected a FILENAME item at offset {at}")
    name = parse_filename(data[pos + HEADER_SIZE : pos + full_size], at)
    items = pos + full_size
    if not split or end - items < _ENTRY_FULL_SIZE + _PAYLOAD_REF_FULL_SIZE:
        return name, None
    entry, entry_size, mode, ref, ref_size, offset, size = _FILE_ITEMS.unpack_from(data, items)
    if entry != PXAR_ENTRY or entry_size != _ENTRY_FULL_SIZE:
        return name, None
    item = items + _ENTRY_FULL_SIZE
    if ref == PXAR_PAYLOAD_REF and ref_size == _PAYLOAD_REF_FULL_SIZE:
        return name, StoredFile(data[items:item], offset, size)  # most files: no attributes
    while end - item >= HEADER_SIZE:
        htype, full_size = HEADER.unpack_from(data, item)
        if htype == PXAR_PAYLOAD_REF:
            if full_size != _PAYLOAD_REF_FULL_SIZE or end - item < full_size:
                return name, None
            offset, size = _PAIR.unpack_from(data, item + HEADER_SIZE)
            return name, StoredFile(data[items:item], offset, size)
        if htype in (PXAR_FILENAME, PXAR_GOODBYE) and mode & S_IFMT == S_IFDIR:
            return name, at + items - pos
        if htype not in ATTRIBUTE_ITEMS or full_size < HEADER_SIZE:
            return name, None
        item += full_size
    return name, None


def _read_filename(src: RangeSource) -> bytes:
    header = src.read_header()
    if header is None or header[0] != PXAR_FILENAME:
        raise FormatError(f"pxar: expected a FILENAME item at offset {src.position}")
    return parse_filename(src.read_exact(header[1]), header[2])
