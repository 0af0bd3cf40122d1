"""Restoring archives of a snapshot: images to files, devices or stdout; blobs likewise."""

from __future__ import annotations

import hashlib

import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Sequence
from typing import BinaryIO

from cairn.client.chunks import ChunkCodec
from cairn.client.pipeline import ordered_map
from cairn.client.progress import progress_bar
from cairn.client.pxar.tree_restore import restore_tree
from cairn.client.spec import archive_candidates
from cairn.datastore.datastore import Datastore, SnapshotInfo
from cairn.datastore.fsutil import temp_name
from cairn.datastore.names import Namespace, SnapshotName
from cairn.client.keys import KeySource
from cairn.errors import IntegrityError, NotFoundError, UsageError
from cairn.format.crypt import CryptConfig, format_fingerprint
from cairn.format.blob import decode_blob
from cairn.format.index import FixedIndex
from cairn.format.manifest import FileInfo, Manifest


@dataclass
class RestoreResult:
    archive: str
    size: int
    holes: int  # bytes left as holes (zero chunks not written)
    chunk_reads: int = 0  # chunks loaded for a pxar archive (a selective restore loads few)


def resolve_archive(manifest: Manifest, name: str) -> FileInfo:
    for candidate in archive_candidates(name):
        try:
            return manifest.lookup(candidate)
        except KeyError:
            continue
    known = ", ".join(f.filename for f in manifest.files) or "none"
    raise NotFoundError(f"snapshot has no archive {name!r} (archives: {known})")


def open_snapshot(
    store: Datastore, ns: Namespace, name: SnapshotName, key: KeySource | None
) -> tuple[SnapshotInfo, CryptConfig | None]:
    """A complete snapshot and the unlocked key it needs, checked before anything is read.

    The key is unlocked (which may prompt) only when the snapshot was made with one, and a
    key file whose recorded fingerprint differs is refused before any prompt.
    """
    info = store.complete_snapshot(ns, name)
    manifest = info.manifest
    expected = manifest.key_fingerprint
    if expected is None:
        return info, None
    if key is None:
        manifest.check_key(None)
    if key.config.fingerprint is not None:
        manifest.check_fingerprint(format_fingerprint(key.config.fingerprint))
    cipher = key.unlock()
    manifest.check_key(cipher)
    manifest.verify_signature(cipher)
    return info, cipher


def restore_archive(
    store: Datastore, ns: Namespace, name: SnapshotName, archive: str, target: str,
    key: KeySource | None = None, overwrite: bool = False, patterns: Sequence[str] = (),
) -> RestoreResult:
    info, cipher = open_snapshot(store, ns, name, key)
    file_info = resolve_archive(info.manifest, archive)
    if patterns and not file_info.filename.endswith((".pxar.didx", ".mpxar.didx")):
        raise UsageError("--pattern applies to pxar archives only")
    chunk_cipher = cipher if file_info.crypt_mode == "encrypt" else None
    with store.lock_snapshot(ns, name, exclusive=False, timeout=10):
        if file_info.filename.endswith(".blob"):
            data = read_blob(store, ns, name, file_info, cipher)
            with _Target(target, overwrite) as out:
                out.write(data)
            return RestoreResult(file_info.filename, len(data), 0)
        if file_info.filename.endswith(".fidx"):
            index = store.open_index(ns, name, file_info.filename)
            if index.index_csum != file_info.csum or index.size != file_info.size:
                raise IntegrityError(f"{file_info.filename} does not match the manifest (corrupt snapshot)")
            return _restore_image(store, index, file_info.filename, target, ChunkCodec(chunk_cipher), overwrite)
        tree = restore_tree(
            store, ns, name, info.manifest, file_info, target, cipher, overwrite, patterns
        )
        return RestoreResult(file_info.filename, tree.bytes, 0, tree.chunk_reads)


def read_blob(
    store: Datastore, ns: Namespace, name: SnapshotName, file_info: FileInfo, cipher: CryptConfig | None
) -> bytes:
    """A blob archive's content, after checking its size and SHA-256 against the manifest."""
    raw = store.read_archive_bytes(ns, name, file_info.filename)
    if len(raw) != file_info.size or hashlib.sha256(raw).digest() != file_info.csum:
        raise IntegrityError(f"{file_info.filename} does not match the manifest (corrupt snapshot)")
    return decode_blob(raw, cipher if file_info.crypt_mode == "encrypt" else None)


def _restore_image(
    store: Datastore, index: FixedIndex, archive: str, target: str, codec: ChunkCodec, overwrite: bool
) -> RestoreResult:
    holes = 0

    def fetch(pos: int) -> tuple[int, bytes | None]:
        start, end = index.chunk_range(pos)
        digest = index.digest(pos)
        if digest == codec.zero_digest(end - start):
            return end - start, None
        return end - start, codec.load(store.chunks, digest)

    with _Target(target, overwrite) as out, progress_bar(f"restore {archive}", index.size) as bar:
        for length, data in ordered_map(fetch, range(len(index))):
            if data is None and out.seekable:
                out.skip(length)
                holes += length
            else:
                out.write(data if data is not None else bytes(length))
            bar.advance(length)
        out.set_size(index.size)
    return RestoreResult(archive, index.size, holes)


class _Target:
    """Where restored bytes go: stdout, a block device, or a new file made atomically.

    A regular file is written under a temporary name and renamed into place only when the
    whole archive was restored, so an interrupted restore never leaves a half-written file.
    """

    def __init__(self, target: str, overwrite: bool) -> None:
        self.target = target
        self.overwrite = overwrite
        self.seekable = False
        self._tmp: Path | None = None
        self._file: BinaryIO

    def __enter__(self) -> _Target:
        if self.target == "-":
            self._file = sys.stdout.buffer
            return self
        path = Path(self.target)
        try:
            mode = os.stat(path).st_mode
        except FileNotFoundError:
            mode = None
        except PermissionError:
            raise UsageError(f"cannot restore to {path}: permission denied") from None
        if mode is not None and stat.S_ISBLK(mode):
            self._file = _open_target(path, "r+b")
            self.seekable = False  # a device keeps old data in holes: write zeros explicitly
            return self
        if mode is not None and stat.S_ISDIR(mode):
            raise UsageError(f"cannot restore to {path}: it is a directory")
        if mode is not None and not self.overwrite:
            raise UsageError(f"{path} exists; use --overwrite to replace it")
        if not path.parent.is_dir():
            raise UsageError(f"cannot restore to {path}: directory {path.parent} does not exist")
        self._tmp = temp_name(path)
        self._file = _open_target(self._tmp, "xb")
        self.seekable = True
        return self

    def write(self, data: bytes) -> None:
        self._file.write(data)

    def skip(self, length: int) -> None:
        self._file.seek(length, os.SEEK_CUR)

    def set_size(self, size: int) -> None:
        if self._tmp is not None:
            self._file.truncate(size)

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._file is sys.stdout.buffer:
            if exc_type is None:
                self._file.flush()
            return
        try:
            self._file.close()
        finally:
            if self._tmp is not None:
                if exc_type is None:
                    os.rename(self._tmp, self.target)
                else:
                    self._tmp.unlink(missing_ok=True)


def _open_target(path: Path, mode: str) -> BinaryIO:
    try:
        return open(path, mode)
    except PermissionError:
        raise UsageError(f"cannot restore to {path}: permission denied") from None
    except OSError as err:
        raise UsageError(f"cannot restore to {path}: {err.strerror}") from None
