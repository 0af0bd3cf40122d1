"""The backup catalog: a compact list of the files in a snapshot's pxar archives.

PBS stores it as ``catalog.pcat1.didx``; this module handles the bytes the dynamic index
chunks, i.e. the catalog before chunking. Clients use it to browse and search a snapshot
without downloading the (much larger) archives.

Layout (PBS ``pbs-datastore/src/catalog.rs``)::

    magic            8 bytes, PROXMOX_CATALOG_FILE_MAGIC_1_0
    directory blocks one per directory, each written when the directory is closed, so a
                     directory's block always comes after the blocks of all its descendants
    root pointer     u64 little endian: offset of the root directory's block

    block  = varint(len(table)) table
    table  = varint(entry count) entry*
    entry  = type letter (1 byte) varint(len(name)) name payload

The payload depends on the type: a directory stores ``varint(block start - child block
start)`` (a backwards distance from the start of the block that holds the entry, so it is
always positive); a file stores ``varint(size)`` and the signed varint of its mtime; every
other type stores nothing. The root block holds one directory per archive (``root.pxar.didx``
and so on), written by the client around each archive.

Varints store 7 bits per byte, least significant group first, with the high bit set on
every byte but the last. Negative i64 values encode their magnitude the same way except
that the high bit is also set on the last group, followed by one terminating ``0x00`` byte.

PBS (as of 3.2.4, the source these facts come from) has only this version 1 of the format;
anything with another magic is refused.

Everything a reader gets may be hostile, so the reader checks more than PBS does: every
block must lie between the magic and the trailing root pointer, a directory's block must
end before the block that names it, names must be possible file names, and a walk
requires sibling subtrees to occupy disjoint, ascending byte ranges (which is exactly what
the writer produces). Together these make a walk read each byte at most once: no cycles,
no exponential fan-in, no allocation beyond what the input really holds.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import NamedTuple

from cairn.errors import FormatError, NotFoundError

CATALOG_MAGIC_1_0 = bytes([145, 253, 96, 249, 196, 103, 88, 213])
"""First 8 bytes of SHA-256("Proxmox Backup Catalog file v1.0"), as in PBS's file_formats.rs."""

MAX_NAME_LEN = 4095
"""PBS's reader refuses names of 4096 bytes or more; the writer refuses them too so that
every catalog Cairn writes can be read by PBS."""

_MAGIC_LEN = len(CATALOG_MAGIC_1_0)
_POINTER_LEN = 8
_MIN_BLOCK_LEN = 2  # varint(1) + varint(0): an empty directory
_MIN_ENTRY_LEN = 3  # type letter, varint(1), a one-byte name
_U64_LIMIT = 1 << 64
_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_U64_MAX_BYTES = 10  # PBS reads at most 10 bytes for a u64
_I64_MAX_BYTES = 11  # ... and 11 for an i64 (10 groups plus the sign terminator)
# The longest entry a valid table can hold: letter, name length, name, then the largest
# payload (a file: size and mtime). Reading this much ahead always covers one whole entry.
_MAX_ENTRY_LEN = 1 + _U64_MAX_BYTES + MAX_NAME_LEN + _U64_MAX_BYTES + _I64_MAX_BYTES
_READ_CHUNK = 64 * 1024


class EntryType(StrEnum):
    """The one-letter type codes PBS writes in front of every catalog entry."""

    DIRECTORY = "d"
    FILE = "f"
    SYMLINK = "l"
    HARDLINK = "h"
    BLOCK_DEVICE = "b"
    CHAR_DEVICE = "c"
    FIFO = "p"
    SOCKET = "s"


_TYPE_BY_CODE = {ord(t.value): t for t in EntryType}


@dataclass(frozen=True, slots=True)
class DirEntry:
    """One named entry of a directory table.

    ``start`` is the absolute offset of a directory's own block (None for other types);
    ``size`` and ``mtime`` are only recorded for regular files (None otherwise), because
    that is all the catalog keeps.
    """

    name: bytes
    kind: EntryType
    start: int | None = None
    size: int | None = None
    mtime: int | None = None

    @property
    def is_directory(self) -> bool:
        return self.kind is EntryType.DIRECTORY


class CatalogItem(NamedTuple):
    """One entry met by a walk, with its path from the walk's starting directory."""

    path: bytes
    kind: EntryType
    size: int | None
    mtime: int | None


# -- variable-length integers -----------------------------------------------------------


_ONE_BYTE = [bytes((value,)) for value in range(0x80)]


def encode_u64(value: int) -> bytes:
    """Encode an unsigned 64-bit value as PBS's catalog varint."""
    if 0 <= value < 0x80:
        return _ONE_BYTE[value]  # name lengths, entry counts: most values
    # Sizes of small files and mtimes (five bytes until 2514) spelled out: a catalog takes
    # three varints per file, and the loop below costs several times more.
    if 0x80 <= value < 0x4000:
        return bytes((value & 0x7F | 0x80, value >> 7))
    if 0x10000000 <= value < 0x800000000:
        return bytes((value & 0x7F | 0x80, value >> 7 & 0x7F | 0x80, value >> 14 & 0x7F | 0x80,
                      value >> 21 & 0x7F | 0x80, value >> 28))
    if not 0 <= value < _U64_LIMIT:
        raise FormatError(f"catalog: {value} does not fit an unsigned 64-bit varint")
    out = bytearray()
    while value >= 0x80:
        out.append(0x80 | (value & 0x7F))
        value >>= 7
    out.append(value)
    return bytes(out)


def encode_i64(value: int) -> bytes:
    """Encode a signed 64-bit value; negatives get a set high bit and a trailing zero byte."""
    if not _I64_MIN <= value <= _I64_MAX:
        raise FormatError(f"catalog: {value} does not fit a signed 64-bit varint")
    if value >= 0:
        return encode_u64(value)
    out = bytearray(encode_u64(-value))
    out[-1] |= 0x80
    out.append(0x00)
    return bytes(out)


def decode_u64(data: bytes, pos: int = 0) -> tuple[int, int]:
    """Decode a u64 varint at ``pos``; return the value and the offset just after it.

    Unlike PBS, which silently drops bits beyond 64, an overlong value is an error.
    """
    value = 0
    for i in range(_U64_MAX_BYTES):
        if pos + i >= len(data):
            raise FormatError("catalog: truncated varint")
        byte = data[pos + i]
        value |= (byte & 0x7F) << (7 * i)
        if byte < 0x80:
            if value >= _U64_LIMIT:
                raise FormatError("catalog: varint exceeds 64 bits")
            return value, pos + i + 1
    raise FormatError("catalog: varint has no end marker within 10 bytes")


def decode_i64(data: bytes, pos: int = 0) -> tuple[int, int]:
    """Decode an i64 varint at ``pos``; return the value and the offset just after it."""
    magnitude = 0
    for i in range(_I64_MAX_BYTES):
        if pos + i >= len(data):
            raise FormatError("catalog: truncated varint")
        byte = data[pos + i]
        if byte == 0:
            value = -magnitude
        elif byte < 0x80:
            value = magnitude | (byte << (7 * i))
        else:
            magnitude |= (byte & 0x7F) << (7 * i)
            continue
        if not _I64_MIN <= value <= _I64_MAX:
            raise FormatError("catalog: signed varint exceeds 64 bits")
        return value, pos + i + 1
    raise FormatError("catalog: signed varint has no end marker within 11 bytes")


def _check_name(name: bytes) -> None:
    """Refuse names that no file system entry can have.

    Such names never come from a real tree, and accepting them from a catalog would let a
    hostile one smuggle ``..`` or slashes into the paths that restores and searches use.
    """
    if not 0 < len(name) <= MAX_NAME_LEN:
        raise FormatError(f"catalog: entry name has {len(name)} bytes, needs 1 to {MAX_NAME_LEN}")
    if b"/" in name or b"\0" in name or name in (b".", b".."):
        raise FormatError(f"catalog: invalid entry name {name!r}")


# -- writer -----------------------------------------------------------------------------


_KIND_BYTES = {kind: kind.value.encode() for kind in EntryType}


class _OpenDirectory:
    """A directory whose entries are still being collected.

    Each entry is kept encoded except for a subdirectory's distance, which depends on
    where this directory's own block will land and so is only known when it closes.
    """

    __slots__ = ("name", "entries")

    def __init__(self, name: bytes) -> None:
        self.name = name
        self.entries: list[tuple[bytes, int | None]] = []

    def encode(self, block_start: int) -> bytes:
        parts = [encode_u64(len(self.entries))]
        for head, child_start in self.entries:
            parts.append(head)
            if child_start is not None:
                parts.append(encode_u64(block_start - child_start))
        table = b"".join(parts)
        return encode_u64(len(table)) + table


class CatalogWriter:
    """Streams a catalog to ``write`` while a tree is walked depth first.

    A directory's block is written as soon as it ends, so memory holds only the entries of
    the directories still open (the path from the root to the current directory), as in
    PBS. Call ``start_directory``/``end_directory`` around each directory's content and
    ``finish`` once at the end; the output is complete only after ``finish``.
    """

    def __init__(self, write: Callable[[bytes], object]) -> None:
        self._write = write
        self._pos = 0
        self._stack = [_OpenDirectory(b"")]
        self._finished = False
        self._emit(CATALOG_MAGIC_1_0)

    def _emit(self, data: bytes) -> None:
        self._write(data)
        self._pos += len(data)

    def _current(self) -> _OpenDirectory:
        if self._finished:
            raise FormatError("catalog writer: already finished")
        return self._stack[-1]

    def _add(self, kind: EntryType, name: bytes, payload: bytes = b"") -> None:
        current = self._current()
        _check_name(name)
        head = _KIND_BYTES[kind] + encode_u64(len(name)) + name + payload
        current.entries.append((head, None))

    def start_directory(self, name: bytes) -> None:
        self._current()
        _check_name(name)
        self._stack.append(_OpenDirectory(name))

    def end_directory(self) -> None:
        self._current()
        if len(self._stack) == 1:
            raise FormatError("catalog writer: end_directory without an open directory")
        directory = self._stack.pop()
        start = self._pos
        self._emit(directory.encode(start))
        head = EntryType.DIRECTORY.value.encode() + encode_u64(len(directory.name)) + directory.name
        self._stack[-1].entries.append((head, start))

    def add_file(self, name: bytes, size: int, mtime: int) -> None:
        self._add(EntryType.FILE, name, encode_u64(size) + encode_i64(mtime))

    def add_symlink(self, name: bytes) -> None:
        self._add(EntryType.SYMLINK, name)

    def add_hardlink(self, name: bytes) -> None:
        self._add(EntryType.HARDLINK, name)

    def add_block_device(self, name: bytes) -> None:
        self._add(EntryType.BLOCK_DEVICE, name)

    def add_char_device(self, name: bytes) -> None:
        self._add(EntryType.CHAR_DEVICE, name)

    def add_fifo(self, name: bytes) -> None:
        self._add(EntryType.FIFO, name)

    def add_socket(self, name: bytes) -> None:
        self._add(EntryType.SOCKET, name)

    def finish(self) -> None:
        """Write the root block and the pointer to it; the writer is closed afterwards."""
        root = self._current()
        if len(self._stack) != 1:
            raise FormatError(
                f"catalog writer: finish with {len(self._stack) - 1} directories still open"
            )
        self._finished = True
        start = self._pos
        self._emit(root.encode(start))
        self._emit(struct.pack("<Q", start))


# -- reader -----------------------------------------------------------------------------


def _read_exact(read_at: Callable[[int, int], bytes], offset: int, length: int) -> bytes:
    data = read_at(offset, length)
    if len(data) != length:
        raise FormatError(f"catalog: short read at offset {offset}")
    return data


class _Table:
    """Lazy parser of one directory block, reading ahead in bounded pieces.

    Parsing streams so that a walk holds at most one read-ahead buffer per open directory
    rather than whole tables, and nothing is read on the word of a length field before the
    bytes it claims are known to lie inside ``ceiling``.
    """

    def __init__(self, read_at: Callable[[int, int], bytes], start: int, ceiling: int) -> None:
        self.start = start
        self._read_at = read_at
        head = _read_exact(read_at, start, min(_U64_MAX_BYTES, ceiling - start))
        table_len, used = decode_u64(head)
        if table_len < 1:
            raise FormatError(f"catalog: empty directory block at offset {start}")
        self.end = start + used + table_len
        if self.end > ceiling:
            raise FormatError(f"catalog: directory block at offset {start} runs past its bounds")
        self._buf = head[used : used + table_len]
        self._buf_pos = start + used  # absolute offset of _buf[0]
        self._off = 0  # parse cursor inside _buf

    def _window(self, want: int) -> None:
        """Make ``want`` bytes from the cursor on available, or all that the table has left."""
        cursor = self._buf_pos + self._off
        have = len(self._buf) - self._off
        need = min(want, self.end - cursor)
        if have < need:
            at = self._buf_pos + len(self._buf)
            length = min(max(need - have, _READ_CHUNK), self.end - at)
            self._buf = self._buf[self._off :] + _read_exact(self._read_at, at, length)
            self._buf_pos = cursor
            self._off = 0

    def __iter__(self) -> Iterator[DirEntry]:
        self._window(_U64_MAX_BYTES)
        count, self._off = decode_u64(self._buf, self._off)
        if count * _MIN_ENTRY_LEN > self.end - self._buf_pos - self._off:
            raise FormatError(f"catalog: directory at offset {self.start} claims {count} entries")
        for _ in range(count):
            self._window(_MAX_ENTRY_LEN)
            entry, self._off = self._parse_entry(self._buf, self._off)
            yield entry
        if self._buf_pos + self._off != self.end:
            raise FormatError(f"catalog: trailing bytes in directory at offset {self.start}")

    def _parse_entry(self, buf: bytes, pos: int) -> tuple[DirEntry, int]:
        kind = _TYPE_BY_CODE.get(buf[pos]) if pos < len(buf) else None
        if kind is None:
            raise FormatError(f"catalog: bad entry type in directory at offset {self.start}")
        name_len, pos = decode_u64(buf, pos + 1)
        if name_len > MAX_NAME_LEN or pos + name_len > len(buf):
            raise FormatError(f"catalog: bad name length {name_len} at offset {self.start}")
        name = buf[pos : pos + name_len]
        _check_name(name)
        pos += name_len
        if kind is EntryType.DIRECTORY:
            distance, pos = decode_u64(buf, pos)
            child = self.start - distance
            if child < _MAGIC_LEN or child + _MIN_BLOCK_LEN > self.start:
                raise FormatError(f"catalog: directory {name!r} points to bad offset {child}")
            return DirEntry(name, kind, start=child), pos
        if kind is EntryType.FILE:
            size, pos = decode_u64(buf, pos)
            mtime, pos = decode_i64(buf, pos)
            return DirEntry(name, kind, size=size, mtime=mtime), pos
        return DirEntry(name, kind), pos


class _Frame:
    """A directory being walked, plus the lowest offset its next subtree may start at."""

    __slots__ = ("path", "entries", "start", "floor")

    def __init__(self, path: bytes, table: _Table, floor: int) -> None:
        self.path = path
        self.entries = iter(table)
        self.start = table.start
        self.floor = floor


class CatalogReader:
    """Random access to a catalog through ``read_at(offset, length)``.

    ``size`` is the catalog's total length. Only the blocks a query needs are read, so a
    lookup in a large catalog touches a few kilobytes. Malformed input raises
    :class:`FormatError`; a path that is not in the catalog raises :class:`NotFoundError`.
    """

    def __init__(self, read_at: Callable[[int, int], bytes], size: int) -> None:
        if size < _MAGIC_LEN + _MIN_BLOCK_LEN + _POINTER_LEN:
            raise FormatError(f"catalog: {size} bytes is too short to be a catalog")
        self._read_at = read_at
        self._data_end = size - _POINTER_LEN
        if _read_exact(read_at, 0, _MAGIC_LEN) != CATALOG_MAGIC_1_0:
            raise FormatError("catalog: wrong magic, not a catalog")
        (self._root_start,) = struct.unpack(
            "<Q", _read_exact(read_at, self._data_end, _POINTER_LEN)
        )
        if not _MAGIC_LEN <= self._root_start <= self._data_end - _MIN_BLOCK_LEN:
            raise FormatError(f"catalog: root pointer {self._root_start} is out of bounds")

    @classmethod
    def from_bytes(cls, data: bytes) -> CatalogReader:
        """Read a catalog held in memory."""
        view = memoryview(data)
        return cls(lambda offset, length: bytes(view[offset : offset + length]), len(data))

    def _table(self, entry: DirEntry, ceiling: int | None = None) -> _Table:
        if not entry.is_directory or entry.start is None:
            raise FormatError(f"catalog: {entry.name!r} is not a directory")
        if not _MAGIC_LEN <= entry.start < self._data_end:
            raise FormatError(f"catalog: directory offset {entry.start} is out of bounds")
        return _Table(self._read_at, entry.start, self._data_end if ceiling is None else ceiling)

    def root(self) -> DirEntry:
        """The root directory; its entries are the snapshot's archives."""
        return DirEntry(b"", EntryType.DIRECTORY, start=self._root_start)

    def read_dir(self, directory: DirEntry) -> list[DirEntry]:
        """All entries of ``directory``, in the order they were written."""
        return list(self._table(directory))

    def lookup(self, parent: DirEntry, name: bytes) -> DirEntry | None:
        """The entry called ``name`` in ``parent``, or None; stops reading at the match."""
        for entry in self._table(parent):
            if entry.name == name:
                return entry
        return None

    def lookup_recursive(self, path: bytes) -> DirEntry:
        """The entry at ``path`` from the root (``/root.pxar.didx/etc/hosts``).

        A leading slash is optional and empty components are ignored, so ``/`` and ``b""``
        name the root itself.
        """
        current = self.root()
        for component in path.split(b"/"):
            if not component:
                continue
            found = self.lookup(current, component) if current.is_directory else None
            if found is None:
                raise NotFoundError(f"path {path.decode(errors='replace')!r} is not in the catalog")
            current = found
        return current

    def walk(self, directory: DirEntry | None = None) -> Iterator[CatalogItem]:
        """Yield every entry below ``directory`` (default: the root), depth first, pre-order.

        Paths start with ``/`` and are relative to ``directory``, so a walk from the root
        yields paths that :meth:`lookup_recursive` accepts. The walk is iterative (a deep
        tree cannot exhaust the stack) and checks that subtrees do not overlap, so even a
        hostile catalog costs at most one visit per byte.
        """
        top = directory if directory is not None else self.root()
        stack = [_Frame(b"", self._table(top), _MAGIC_LEN)]
        while stack:
            frame = stack[-1]
            entry = next(frame.entries, None)
            if entry is None:
                stack.pop()
                continue
            path = frame.path + b"/" + entry.name
            yield CatalogItem(path, entry.kind, entry.size, entry.mtime)
            if entry.is_directory:
                table = self._table(entry, ceiling=frame.start)
                if table.start < frame.floor:
                    raise FormatError(f"catalog: directory {path!r} overlaps an earlier one")
                stack.append(_Frame(path, table, frame.floor))
                frame.floor = table.end

    # PBS calls the full listing "catalog dump"; keep its name for the same traversal.
    dump = walk

    def find(self, pattern: bytes, directory: DirEntry | None = None) -> Iterator[CatalogItem]:
        """Yield the entries of :meth:`walk` whose path matches a glob ``pattern``.

        The rules follow PBS's match patterns closely enough for searching: ``*`` and
        ``?`` stay within one path component, ``**`` spans any number of components,
        ``[...]`` is a byte class (``[!...]`` negated) and a backslash quotes the next byte.
        A pattern with a leading ``/`` is anchored at ``directory``; without it, it may
        match at any depth (``*.conf`` finds every ``.conf`` file). A trailing ``/``
        matches directories only. It is not PBS's full pattern language: no include/exclude
        lists and no ``!`` negation.
        """
        directories_only = pattern.endswith(b"/")
        matcher = _compile_glob(pattern.rstrip(b"/"))
        for item in self.walk(directory):
            if directories_only and item.kind is not EntryType.DIRECTORY:
                continue
            if matcher.fullmatch(item.path):
                yield item


def _compile_glob(pattern: bytes) -> re.Pattern[bytes]:
    """Translate a glob into a regular expression over ``/``-prefixed paths."""
    anchored = pattern.startswith(b"/")
    pattern = pattern.lstrip(b"/")
    parts: list[bytes] = [b"/" if anchored else b"(?:/.*)?/"]
    i = 0
    while i < len(pattern):
        c = pattern[i : i + 1]
        if pattern.startswith(b"**/", i):
            parts.append(b"(?:[^/]*/)*")
            i += 3
        elif pattern.startswith(b"**", i):
            parts.append(b".*")
            i += 2
        elif c == b"*":
            parts.append(b"[^/]*")
            i += 1
        elif c == b"?":
            parts.append(b"[^/]")
            i += 1
        elif c == b"\\" and i + 1 < len(pattern):
            parts.append(re.escape(pattern[i + 1 : i + 2]))
            i += 2
        elif c == b"[":
            negate = pattern.startswith(b"[!", i)
            first = i + 2 if negate else i + 1
            close = pattern.find(b"]", first + 1)  # a ']' right after '[' is a member
            if close < 0:
                parts.append(re.escape(c))
                i += 1
                continue
            members = b"-".join(re.escape(p) for p in pattern[first:close].split(b"-"))
            parts.append(b"[" + (b"^/" if negate else b"") + members + b"]")
            i = close + 1
        else:
            parts.append(re.escape(c))
            i += 1
    return re.compile(b"".join(parts), re.DOTALL)
