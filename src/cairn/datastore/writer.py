"""Writing one new snapshot into a datastore.

A :class:`BackupWriter` holds the group's exclusive lock from the moment the snapshot
directory is created until its manifest is written (complete) or the directory is removed
(aborted). A writer killed in between leaves a directory without manifest, which every
listing shows as incomplete and which prune and GC treat as PBS does.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cairn.datastore.datastore import DEFAULT_OWNER, OWNER_FILE, Datastore
from cairn.datastore.fsutil import fsync_dir, replace_file, syncfs, temp_name
from cairn.datastore.locking import DirLock
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.errors import StoreError, UsageError
from cairn.format.blob import encode_blob
from cairn.format.index import (
    DynamicCsum,
    DynamicIndexHeader,
    FixedCsum,
    FixedIndexHeader,
    INDEX_HEADER_SIZE,
    pack_dynamic_entry,
)
from cairn.format.manifest import MANIFEST_BLOB_NAME, Manifest

GROUP_LOCK_TIMEOUT = 10.0


@dataclass
class WriteStats:
    chunks_new: int = 0
    chunks_reused: int = 0
    bytes_new: int = 0
    # Several archives of one snapshot are chunked at once, each by its own thread.
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    def record(self, stored) -> None:
        """Count one chunk a client stored (a ``client.chunks.StoredChunk``)."""
        with self._lock:
            if stored.new_bytes:
                self.chunks_new += 1
                self.bytes_new += stored.new_bytes
            else:
                self.chunks_reused += 1


class _IndexFileWriter:
    """Streams entries to a temporary file; ``close`` fills in the header and renames."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = temp_name(path)
        self._file = open(self._tmp, "xb")
        self._file.write(b"\0" * INDEX_HEADER_SIZE)
        self.uuid = uuid.uuid4().bytes
        self.ctime = int(time.time())

    def _finish(self, header: bytes) -> None:
        self._file.seek(0)
        self._file.write(header)
        self._file.close()
        os.rename(self._tmp, self.path)

    def discard(self) -> None:
        if not self._file.closed:
            self._file.close()
        self._tmp.unlink(missing_ok=True)


class FixedIndexWriter(_IndexFileWriter):
    def __init__(self, path: Path, chunk_size: int) -> None:
        super().__init__(path)
        self.chunk_size = chunk_size
        self._csum = FixedCsum()
        self.size = 0

    def add(self, digest: bytes, length: int) -> None:
        if self.size % self.chunk_size:
            raise StoreError("fixed index: only the last chunk may be short")
        self._file.write(digest)
        self._csum.update(digest)
        self.size += length

    def close(self) -> tuple[int, bytes]:
        """Returns (size, index_csum): what the manifest records."""
        csum = self._csum.digest()
        self._finish(FixedIndexHeader(self.uuid, self.ctime, csum, self.size, self.chunk_size).pack())
        return self.size, csum


class DynamicIndexWriter(_IndexFileWriter):
    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._csum = DynamicCsum()
        self.size = 0

    def add(self, digest: bytes, length: int) -> None:
        self.size += length
        self._file.write(pack_dynamic_entry(self.size, digest))
        self._csum.update(self.size, digest)

    def close(self) -> tuple[int, bytes]:
        csum = self._csum.digest()
        self._finish(DynamicIndexHeader(self.uuid, self.ctime, csum).pack())
        return self.size, csum


class BackupWriter:
    """One snapshot being written. Use as a context manager: an exception aborts it."""

    def __init__(
        self,
        store: Datastore,
        ns: Namespace,
        group: GroupName,
        backup_time: int,
        owner: str = DEFAULT_OWNER,
    ) -> None:
        self.store = store
        self.ns = ns
        self.name = SnapshotName(group, backup_time)
        self.stats = WriteStats()
        self.manifest = Manifest(group.backup_type, group.backup_id, backup_time)
        self._writers: list[_IndexFileWriter] = []
        self._marker: Path | None = None
        self.path: Path | None = None  # set once this writer created the snapshot directory
        store.require_namespace(ns)
        group_dir = store.group_path(ns, group)
        # A backup that fails in a group it created removes the group again, as PBS does.
        self._new_group: Path | None = None if group_dir.exists() else group_dir
        group_dir.mkdir(parents=True, exist_ok=True)
        if not (group_dir / OWNER_FILE).exists():
            replace_file(group_dir / OWNER_FILE, owner.encode() + b"\n")
        self._lock: DirLock | None = store.lock_group(ns, group, timeout=GROUP_LOCK_TIMEOUT)
        try:
            last = store.latest_snapshot(ns, group)
            if last is not None and last.name.backup_time >= backup_time:
                raise UsageError(
                    f"backup time {self.name.time_string} is not newer than the last "
                    f"backup of {group} ({last.name.time_string})"
                )
            path = store.snapshot_path(ns, self.name)
            try:
                path.mkdir()
            except FileExistsError:
                raise UsageError(f"snapshot {self.name} already exists") from None
            self.path = path
            self._register_writer()
        except BaseException:
            self.abort()
            raise

    # A marker per running writer lets garbage collection find the oldest writer's start,
    # so it never sweeps a chunk that a running backup has reused but not yet referenced.
    def _register_writer(self) -> None:
        writers = self.store.writer_markers_dir()
        writers.mkdir(exist_ok=True)
        marker = writers / f"{os.getpid()}-{self.name.backup_time}-{uuid.uuid4().hex[:8]}"
        marker.write_text(f"{time.time()}\n")
        self._marker = marker

    def __enter__(self) -> BackupWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()

    def fixed_index(self, archive: str, chunk_size: int) -> FixedIndexWriter:
        writer = FixedIndexWriter(self.path / archive, chunk_size)
        self._writers.append(writer)
        return writer

    def dynamic_index(self, archive: str) -> DynamicIndexWriter:
        writer = DynamicIndexWriter(self.path / archive)
        self._writers.append(writer)
        return writer

    def close_index(self, archive: str, writer: FixedIndexWriter | DynamicIndexWriter, crypt_mode: str) -> None:
        size, csum = writer.close()
        self.manifest.add_file(archive, size, csum, crypt_mode)

    def add_blob(self, archive: str, raw_blob: bytes, crypt_mode: str = "none") -> None:
        """Store an encoded blob; the manifest records its raw size and SHA-256, as PBS."""
        replace_file(self.path / archive, raw_blob, durable=False)
        self.manifest.add_file(archive, len(raw_blob), hashlib.sha256(raw_blob).digest(), crypt_mode)

    def finish(self, signer=None) -> Manifest:
        """Make the snapshot durable, then write its manifest: from now on it is complete."""
        if signer is not None:
            self.manifest.sign(signer)
        syncfs(self.store.base)
        replace_file(self.path / MANIFEST_BLOB_NAME, encode_blob(self.manifest.to_bytes()))
        fsync_dir(self.path.parent)
        self._release()
        return self.manifest

    def abort(self) -> None:
        for writer in self._writers:
            writer.discard()
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)
            self.path = None
        group = self._new_group
        if group is not None and os.listdir(group) in ([], [OWNER_FILE]):
            shutil.rmtree(group, ignore_errors=True)
        self._release()

    def _release(self) -> None:
        if self._marker is not None:
            self._marker.unlink(missing_ok=True)
            self._marker = None
        if self._lock is not None:
            self._lock.release()
            self._lock = None
