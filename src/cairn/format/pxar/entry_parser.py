"""Decoding of one entry (ENTRY plus its items), shared by the decoder and the accessor."""

from dataclasses import dataclass

from .byte_source import RangeSource, StreamSource
from .constants import (
    FORMAT_VERSION_2,
    PXAR_DEVICE,
    PXAR_ENTRY,
    PXAR_ENTRY_V1,
    PXAR_FILENAME,
    PXAR_GOODBYE,
    PXAR_HARDLINK,
    PXAR_PAYLOAD,
    PXAR_PAYLOAD_REF,
    PXAR_SYMLINK,
)
from .entry import Entry, EntryKind, PathNode
from .items import (
    ATTRIBUTE_ITEMS,
    apply_attribute,
    fail,
    parse_hardlink,
    parse_pair,
    parse_stat,
    parse_symlink,
)
from .metadata import Metadata

Header = tuple[int, int, int]  # (htype, content size, offset of the header)

# Items that may follow ENTRY and whose content is read whole (all are size-capped).
_ENTRY_ITEMS = ATTRIBUTE_ITEMS | {PXAR_SYMLINK, PXAR_DEVICE}


@dataclass(slots=True)
class ParsedEntry:
    """An entry's items decoded, before it is placed in the tree."""

    kind: EntryKind
    metadata: Metadata | None
    entry_offset: int
    size: int = 0
    content_offset: int | None = None
    payload_offset: int | None = None
    link_target: bytes | None = None
    link_distance: int | None = None
    device: tuple[int, int] | None = None
    # FILENAME or GOODBYE header that ended a directory, fifo or socket entry.
    next_header: Header | None = None


def parse_entry(
    src: StreamSource | RangeSource,
    first: Header,
    version: int,
    *,
    allow_hardlink: bool,
    end_closes_entry: bool,
) -> ParsedEntry:
    """Read an entry whose first header (ENTRY, ENTRY_V1 or HARDLINK) was just read.

    Reading stops after the item that settles the entry's kind; for a regular file the
    source is left at the first content byte (PAYLOAD) or after the PAYLOAD_REF. When
    ``end_closes_entry`` is set (the accessor decodes one entry from an exact range), the end
    of the range may end a fifo or socket, which have no content item.
    """
    htype, size, at = first
    if htype == PXAR_HARDLINK and allow_hardlink:
        distance, target = parse_hardlink(src.read_exact(size), at)
        return ParsedEntry(
            EntryKind.HARDLINK, None, at, link_target=target, link_distance=distance
        )
    if htype not in (PXAR_ENTRY, PXAR_ENTRY_V1):
        raise fail(at, htype, "found where an ENTRY was expected")
    md = parse_stat(htype, src.read_exact(size), at)
    while True:
        header = src.read_header()
        if header is None:
            if not end_closes_entry:
                raise fail(at, htype, "archive ends inside this entry")
            if md.is_fifo():
                return ParsedEntry(EntryKind.FIFO, md, at)
            if md.is_socket():
                return ParsedEntry(EntryKind.SOCKET, md, at)
            raise fail(
                at, htype, "entry has no content, link, device or directory items"
            )
        item, item_size, item_at = header
        if item in (PXAR_FILENAME, PXAR_GOODBYE):
            if md.is_fifo():
                kind = EntryKind.FIFO
            elif md.is_socket():
                kind = EntryKind.SOCKET
            else:
                kind = EntryKind.DIRECTORY
            return ParsedEntry(kind, md, at, next_header=header)
        if item == PXAR_PAYLOAD:
            return ParsedEntry(
                EntryKind.FILE, md, at, size=item_size, content_offset=src.position
            )
        if item == PXAR_PAYLOAD_REF:
            if version < FORMAT_VERSION_2:
                raise fail(
                    item_at, item, "payload reference in a format version 1 archive"
                )
            offset, file_size = parse_pair(item, src.read_exact(item_size), item_at)
            return ParsedEntry(
                EntryKind.FILE, md, at, size=file_size, payload_offset=offset
            )
        if item not in _ENTRY_ITEMS:
            raise fail(item_at, item, "not allowed inside an entry")
        content = src.read_exact(item_size)
        if item == PXAR_SYMLINK:
            return ParsedEntry(
                EntryKind.SYMLINK, md, at, link_target=parse_symlink(content, item_at)
            )
        if item == PXAR_DEVICE:
            return ParsedEntry(
                EntryKind.DEVICE, md, at, device=parse_pair(item, content, item_at)
            )
        apply_attribute(md, item, content, item_at)


def make_entry(
    parsed: ParsedEntry,
    name: bytes,
    parent: PathNode | None,
    file_offset: int | None,
    end_offset: int | None = None,
) -> Entry:
    """Place a parsed entry in the tree, resolving a hardlink's distance to an offset."""
    link_offset = None
    if parsed.kind is EntryKind.HARDLINK:
        distance = parsed.link_distance or 0
        if file_offset is None or not 0 < distance <= file_offset:
            raise fail(
                parsed.entry_offset, PXAR_HARDLINK, "link points outside the archive"
            )
        link_offset = file_offset - distance
    return Entry(
        kind=parsed.kind,
        name=name,
        parent=parent,
        metadata=parsed.metadata,
        file_offset=file_offset,
        entry_offset=parsed.entry_offset,
        size=parsed.size,
        content_offset=parsed.content_offset,
        payload_offset=parsed.payload_offset,
        link_target=parsed.link_target,
        link_offset=link_offset,
        device=parsed.device,
        end_offset=end_offset,
    )
