"""Restoring a pxar archive of a snapshot: whole, in part, or as raw bytes on stdout.

A whole restore streams the archive once (chunks loaded ahead in parallel) through the
sequential decoder. A restore limited by patterns asks the snapshot's catalog which paths
match, then fetches only those through the archive's goodbye tables: one small file from a
large archive costs the catalog's chunks plus a few archive chunks, not the archive. Without
a catalog it falls back to streaming and filtering. Either way the same match rules as PBS
apply (the last matching pattern decides, an unmatched entry inherits its directory's
decision), and everything is written by the ``Extractor``'s safety rules.
"""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from cairn.client.chunks import ChunkCodec
from cairn.datastore.datastore import Datastore
from cairn.datastore.names import Namespace, SnapshotName
from cairn.errors import CairnError, IntegrityError, UsageError
from cairn.format.blob import MAX_BLOB_SIZE
from cairn.format.catalog import CatalogReader, EntryType
from cairn.format.manifest import FileInfo, Manifest
from cairn.format.pxar import Accessor, Decoder, Entry, EntryKind, Metadata

from .exclude import MatchEntry, MatchType, match, parse_pattern
from .extract import Extractor, Problems
from .extract_thread import ExtractThread
from .reader import ChunkReader, StreamReader
from .tree_backup import CATALOG_ARCHIVE
from .util import raise_fd_limit, stderr_warning

CATALOG_MODES = {
    EntryType.DIRECTORY: stat.S_IFDIR,
    EntryType.FILE: stat.S_IFREG,
    EntryType.HARDLINK: stat.S_IFREG,
    EntryType.SYMLINK: stat.S_IFLNK,
    EntryType.BLOCK_DEVICE: stat.S_IFBLK,
    EntryType.CHAR_DEVICE: stat.S_IFCHR,
    EntryType.FIFO: stat.S_IFIFO,
    EntryType.SOCKET: stat.S_IFSOCK,
}


@dataclass
class TreeRestoreResult:
    files: int
    bytes: int
    chunk_reads: int  # archive chunks loaded from the store (catalog chunks not counted)
    catalog_chunk_reads: int = 0


@dataclass
class _PlanNode:
    """Part of the tree a selective restore visits; ``selected`` entries are restored."""

    selected: bool = False
    children: dict[bytes, _PlanNode] = field(default_factory=dict)


def open_index_reader(
    store: Datastore, ns: Namespace, name: SnapshotName, file_info: FileInfo, cipher
) -> ChunkReader:
    """A range reader over one index archive, checked against its manifest entry."""
    index = store.open_index(ns, name, file_info.filename)
    if index.index_csum != file_info.csum or index.size != file_info.size:
        raise IntegrityError(f"{file_info.filename} does not match the manifest (corrupt snapshot)")
    codec = ChunkCodec(cipher if file_info.crypt_mode == "encrypt" else None)
    return ChunkReader(store.chunks, index, codec)


def open_catalog(
    store: Datastore, ns: Namespace, name: SnapshotName, manifest: Manifest, cipher
) -> tuple[CatalogReader, ChunkReader] | None:
    """The snapshot's catalog, or None if it has none."""
    try:
        file_info = manifest.lookup(CATALOG_ARCHIVE)
    except KeyError:
        return None
    reader = open_index_reader(store, ns, name, file_info, cipher)
    return CatalogReader(reader.read_at, reader.size), reader


def restore_tree(
    store: Datastore,
    ns: Namespace,
    name: SnapshotName,
    manifest: Manifest,
    file_info: FileInfo,
    target: str,
    cipher=None,
    overwrite: bool = False,
    patterns: Sequence[str] = (),
    warn: Callable[[str], None] = stderr_warning,
) -> TreeRestoreResult:
    """Restore ``file_info`` (a ``.pxar.didx``, or the ``.mpxar.didx`` of a split archive) to
    the directory ``target``, or any other ``.didx`` as raw bytes to ``-`` (standard output)."""
    split = file_info.filename.endswith(".mpxar.didx")
    if target != "-" and not split and not file_info.filename.endswith(".pxar.didx"):
        raise UsageError(f"{file_info.filename} is not a pxar archive; restore it to - for its raw bytes")
    if target == "-" and split:
        raise UsageError(
            f"{file_info.filename} is a split archive (metadata and payload); restore it to a "
            "directory, or name its .ppxar.didx to get raw bytes"
        )
    reader = open_index_reader(store, ns, name, file_info, cipher)
    payload = open_payload_reader(store, ns, name, manifest, file_info, cipher) if split else None
    if target == "-":
        if patterns:
            raise UsageError("--pattern cannot be combined with - (the raw archive goes to stdout)")
        out = sys.stdout.buffer
        for block in reader.stream():
            out.write(block)
        out.flush()
        return TreeRestoreResult(0, reader.size, reader.chunk_reads)
    matchers = [parse_pattern(p, MatchType.INCLUDE) for p in patterns]
    catalog = open_catalog(store, ns, name, manifest, cipher) if matchers else None
    return extract_archive(
        reader, target, overwrite, matchers, catalog, file_info.filename, warn, payload=payload
    )


def open_payload_reader(
    store: Datastore, ns: Namespace, name: SnapshotName, manifest: Manifest, meta_info: FileInfo, cipher
) -> ChunkReader:
    """The payload archive (``NAME.ppxar.didx``) that goes with a split metadata archive."""
    payload_name = meta_info.filename.removesuffix(".mpxar.didx") + ".ppxar.didx"
    try:
        payload_info = manifest.lookup(payload_name)
    except KeyError:
        raise IntegrityError(f"snapshot has {meta_info.filename} but not its {payload_name}") from None
    return open_index_reader(store, ns, name, payload_info, cipher)


def extract_archive(
    reader: ChunkReader,
    target: str,
    overwrite: bool,
    matchers: Sequence[MatchEntry],
    catalog: tuple[CatalogReader, ChunkReader] | None,
    archive_name: str,
    warn: Callable[[str], None] = stderr_warning,
    payload: ChunkReader | None = None,
) -> TreeRestoreResult:
    """Extract the archive behind ``reader`` into ``target`` (created if missing).

    ``payload`` is the payload archive of a split (``.mpxar``) archive.
    """
    _prepare_target(target)
    raise_fd_limit()
    problems = Problems(warn)
    extractor = Extractor(target, overwrite, problems)
    try:
        if matchers and catalog is not None:
            plan = _plan_from_catalog(catalog[0], archive_name, matchers)
            _extract_plan(Accessor(reader.read_at, reader.size), plan, extractor)
            extractor.finish(None)
        else:
            _extract_stream(reader, extractor, matchers, payload)
    except BaseException:
        extractor.close()
        raise
    problems.report()
    if problems.skipped:
        raise CairnError(
            f"{problems.skipped} entr{'y was' if problems.skipped == 1 else 'ies were'} not restored "
            "(see the warnings above)"
        )
    catalog_reads = catalog[1].chunk_reads if catalog is not None else 0
    chunk_reads = reader.chunk_reads + (payload.chunk_reads if payload is not None else 0)
    return TreeRestoreResult(extractor.files, extractor.bytes, chunk_reads, catalog_reads)


def _prepare_target(target: str) -> None:
    try:
        os.makedirs(target, exist_ok=True)
    except FileExistsError:
        raise UsageError(f"cannot restore to {target}: it exists and is not a directory") from None
    except OSError as err:
        raise UsageError(f"cannot restore to {target}: {err.strerror}") from None


# --- whole archive, streamed ------------------------------------------------------------------


def _extract_stream(
    reader: ChunkReader, extractor: Extractor, matchers: Sequence[MatchEntry], payload: ChunkReader | None = None
) -> None:
    """One pass through the archive (and its payload stream), extracting on a thread of its own.

    The archive root's metadata goes to the target only when the whole archive is restored.
    """
    sink = ExtractThread(extractor)
    try:
        root = _walk_stream(reader, sink, matchers, payload)
        sink.finish(None if matchers else root)
    except BaseException:
        sink.abort()
        raise


def _walk_stream(
    reader: ChunkReader, extractor: ExtractThread, matchers: Sequence[MatchEntry], payload: ChunkReader | None
) -> Metadata | None:
    """Hand every selected entry to ``extractor`` in archive order; returns the root's metadata.

    Contents are read in pieces as large as a chunk, so that a large file's pieces are the
    decoded chunks themselves (see ``StreamReader``), not copies.
    """
    payload_read = StreamReader(payload.stream()).read if payload is not None else None
    decoder = Decoder(StreamReader(reader.stream()).read, payload_read, check_goodbye=False)
    # Per open directory: [bound PathNode or None, its entry's parent node, its name, the
    # match state outside it]. The decoder has no "directory ends" event, so the end of a
    # directory shows as an entry whose parent is further up.
    frames: list[list] = []
    current = not matchers
    root: Metadata | None = None
    for entry in decoder:
        if entry.parent is None:
            root = entry.metadata
            continue
        while frames and not _inside(frames[-1], entry.parent):
            current = frames.pop()[3]
            extractor.leave_directory()
        metadata = entry.metadata
        mode = metadata.mode if metadata is not None else stat.S_IFREG
        decision = match(matchers, entry.path, mode) if matchers else None
        selected = decision is MatchType.INCLUDE or (decision is None and current)
        if entry.kind is EntryKind.DIRECTORY:
            assert metadata is not None
            create = (current and decision is not MatchType.EXCLUDE) or selected
            extractor.enter_directory(entry.name, metadata, entry.path, create=create)
            frames.append([None, entry.parent, entry.name, current])
            current = selected
            continue
        if selected:
            _extract_entry(extractor, entry, lambda: decoder.iter_content(MAX_BLOB_SIZE))
    return root


def _inside(frame: list, parent) -> bool:
    """Is an entry whose parent node is ``parent`` inside the directory of ``frame``?"""
    if frame[0] is parent:
        return True
    if frame[0] is None and parent is not None and parent.parent is frame[1] and parent.name == frame[2]:
        frame[0] = parent
        return True
    return False


def _extract_entry(extractor: Extractor | ExtractThread, entry: Entry, contents, hardlink_fallback=None) -> None:
    metadata = entry.metadata
    kind = entry.kind
    if kind is EntryKind.FILE:
        extractor.extract_file(entry.name, metadata, entry.size, contents(), entry.path)
    elif kind is EntryKind.SYMLINK:
        extractor.extract_symlink(entry.name, metadata, entry.link_target or b"", entry.path)
    elif kind is EntryKind.HARDLINK:
        target = entry.link_target or b""
        if hardlink_fallback is not None and not extractor.has_file(target):
            hardlink_fallback(entry)
        else:
            extractor.extract_hardlink(entry.name, target, entry.path)
    elif kind is EntryKind.DEVICE:
        extractor.extract_special(entry.name, metadata, entry.path, entry.device)
    elif kind in (EntryKind.FIFO, EntryKind.SOCKET):
        extractor.extract_special(entry.name, metadata, entry.path)


# --- selected paths, through the catalog and random access -----------------------------------


def _plan_from_catalog(catalog: CatalogReader, archive_name: str, matchers: Sequence[MatchEntry]) -> _PlanNode:
    """Which paths to restore, decided on the catalog with PBS's matching rules."""
    archive_dir = catalog.lookup(catalog.root(), archive_name.encode())
    if archive_dir is None or not archive_dir.is_directory:
        raise UsageError(f"the snapshot's catalog does not list {archive_name}")
    plan = _PlanNode()
    # Per open directory: [path, match state inside it, plan node or None (not needed yet)].
    stack: list[list] = [[b"", False, plan]]
    for item in catalog.walk(archive_dir):
        parent_path, _, name = item.path.rpartition(b"/")
        while stack[-1][0] != parent_path:
            stack.pop()
        decision = match(matchers, item.path, CATALOG_MODES[item.kind])
        selected = decision is MatchType.INCLUDE or (decision is None and stack[-1][1])
        if item.kind is EntryType.DIRECTORY:
            node = None
            if selected:
                node = _plan_parent(stack).children.setdefault(name, _PlanNode())
                node.selected = True
            stack.append([item.path, selected, node])
        elif selected:
            _plan_parent(stack).children[name] = _PlanNode(selected=True)
    return plan


def _plan_parent(stack: list[list]) -> _PlanNode:
    """The plan node of the innermost directory, creating the nodes on the way to it."""
    for i in range(1, len(stack)):
        if stack[i][2] is None:
            name = stack[i][0].rpartition(b"/")[2]
            stack[i][2] = stack[i - 1][2].children.setdefault(name, _PlanNode())
    return stack[-1][2]


def _extract_plan(accessor: Accessor, plan: _PlanNode, extractor: Extractor) -> None:
    def copy_linked_file(entry: Entry) -> None:
        # The link's target is not part of this restore: restore its contents under this name.
        target = accessor.follow_hardlink(entry)
        contents = accessor.open_file(target)
        extractor.extract_file(entry.name, target.metadata, target.size, contents.chunks(), entry.path)
        extractor.alias(entry.path, entry.link_target or b"")

    stack = [(accessor.open_root(), iter(sorted(plan.children.items())))]
    while stack:
        directory, items = stack[-1]
        item = next(items, None)
        if item is None:
            stack.pop()
            if stack:
                extractor.leave_directory()
            continue
        name, node = item
        entry = directory.lookup(name)
        if entry is None:
            extractor.problems.skip(directory.path.rstrip(b"/") + b"/" + name, "in the catalog but not in the archive")
            continue
        if entry.kind is EntryKind.DIRECTORY:
            assert entry.metadata is not None
            extractor.enter_directory(name, entry.metadata, entry.path, create=node.selected)
            stack.append((accessor.open_directory(entry), iter(sorted(node.children.items()))))
            continue
        if node.selected and not extractor.skip_current():
            if entry.kind is EntryKind.FILE:
                file = accessor.open_file(entry)
                _extract_entry(extractor, entry, file.chunks)
            else:
                _extract_entry(extractor, entry, None, copy_linked_file)

