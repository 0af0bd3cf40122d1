"""The one owner of a datastore's paths.

Layout (as PBS)::

    <store>/.chunks/XXXX/<digest>           chunk store
    <store>/.lock                           chunk store lock file
    <store>/[ns/<a>/[ns/<b>/...]]<type>/<id>/owner
    <store>/.../<type>/<id>/notes           group notes (optional)
    <store>/.../<type>/<id>/<time>/         a snapshot: archives, index.json.blob last,
                                            .protected marker, client.log.blob, notes

Nothing outside this module (and the writer/reader helpers next to it) builds a path into
a store.
"""

from __future__ import annotations

import mmap
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cairn.datastore.chunk_store import ChunkStore
from cairn.datastore.fsutil import fsync_dir, replace_file
from cairn.datastore.locking import DirLock, lock_path
from cairn.datastore.names import (
    BACKUP_TYPES,
    GroupName,
    Namespace,
    SnapshotName,
    format_backup_time,
    is_safe_id,
    parse_backup_time,
)
from cairn.errors import CairnError, FormatError, NotFoundError, StoreError, UsageError
from cairn.format.blob import decode_blob, encode_blob
from cairn.format.index import DynamicIndex, FixedIndex
from cairn.format.manifest import MANIFEST_BLOB_NAME, Manifest

PROTECTED_MARKER = ".protected"
NOTES_FILE = "notes"
OWNER_FILE = "owner"
DEFAULT_OWNER = "root@pam"
MAINTENANCE_FILE = ".cairn-maintenance"
MAINTENANCE_MODES = ("read-only", "offline")
WRITERS_DIR = ".cairn-writers"  # one marker per running BackupWriter (writer.py writes them)
GC_STATUS_FILE = ".gc-status"  # PBS writes the last GarbageCollectionStatus here
GC_LOCK_FILE = ".cairn-gc.lck"
VERIFY_STATUS_FILE = ".cairn-verify-status"
INDEX_SUFFIXES = (".fidx", ".didx")


@dataclass
class SnapshotInfo:
    """What a listing shows of one snapshot directory."""

    ns: Namespace
    name: SnapshotName
    path: Path
    manifest: Manifest | None
    protected: bool
    files: list[str] = field(default_factory=list)
    manifest_error: str | None = None  # the manifest exists but cannot be read

    @property
    def complete(self) -> bool:
        return self.manifest is not None

    @property
    def finished(self) -> bool:
        """The manifest file exists (readable or not): what PBS calls a finished snapshot.

        Prune must treat a snapshot whose manifest was damaged as finished, not as a partial
        backup to throw away; verify reports it as failed.
        """
        return self.manifest is not None or self.manifest_error is not None

    @property
    def size(self) -> int:
        if self.manifest is None:
            return 0
        return sum(f.size for f in self.manifest.files)


class Datastore:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.chunks = ChunkStore(base)

    # -- opening and creating -------------------------------------------------------------

    @classmethod
    def create(cls, path: str | Path) -> Datastore:
        base = Path(path).absolute()
        if base.exists() and (not base.is_dir() or any(base.iterdir())):
            raise StoreError(f"cannot create datastore at {base}: path exists and is not an empty directory")
        try:
            base.mkdir(parents=True, exist_ok=True)
            ChunkStore.create(base)
        except PermissionError:
            raise StoreError(f"cannot create datastore at {base}: permission denied") from None
        except OSError as err:
            shutil.rmtree(base / ".chunks", ignore_errors=True)
            raise StoreError(f"cannot create datastore at {base}: {err.strerror}") from None
        return cls(base)

    @classmethod
    def open(cls, path: str | Path, for_write: bool = False, ignore_maintenance: bool = False) -> Datastore:
        """Open a store; refuse it in maintenance mode ``offline``, and writes in ``read-only``.

        ``ignore_maintenance`` is for the one command that must work in any mode: changing it.
        """
        base = Path(path).absolute()
        if not base.is_dir():
            raise StoreError(f"no datastore at {base} (create one with 'cairn init {base}')")
        store = cls(base)
        store.chunks.check_layout()
        if ignore_maintenance:
            return store
        mode = store.maintenance_mode()
        if mode == "offline":
            raise StoreError(f"datastore {base} is in maintenance mode 'offline'")
        if for_write and mode == "read-only":
            raise StoreError(f"datastore {base} is in maintenance mode 'read-only'; writes are refused")
        return store

    # -- maintenance mode -----------------------------------------------------------------

    def maintenance_mode(self) -> str | None:
        try:
            mode = (self.base / MAINTENANCE_FILE).read_text().strip()
        except FileNotFoundError:
            return None
        return mode or None

    def set_maintenance_mode(self, mode: str | None) -> None:
        path = self.base / MAINTENANCE_FILE
        if mode is None:
            path.unlink(missing_ok=True)
            return
        if mode not in MAINTENANCE_MODES:
            raise UsageError(f"unknown maintenance mode {mode!r} (expected read-only or offline)")
        replace_file(path, mode.encode() + b"\n")

    # -- namespaces ---------------------------------------------------------------------------

    def ns_path(self, ns: Namespace) -> Path:
        path = self.base
        for component in ns.components:
            path = path / "ns" / component
        return path

    def namespace_exists(self, ns: Namespace) -> bool:
        return ns.is_root or self.ns_path(ns).is_dir()

    def require_namespace(self, ns: Namespace) -> None:
        if not self.namespace_exists(ns):
            raise NotFoundError(
                f"namespace '{ns}' does not exist (create it with 'cairn namespace create {ns}')"
            )

    def create_namespace(self, ns: Namespace) -> None:
        if ns.is_root:
            raise UsageError("the root namespace always exists")
        self.require_namespace(ns.parent())
        path = self.ns_path(ns)
        if path.exists():
            raise UsageError(f"namespace '{ns}' already exists")
        path.mkdir(parents=True)

    def list_namespaces(self, ns: Namespace = Namespace(), max_depth: int | None = None) -> list[Namespace]:
        """``ns`` itself and every namespace below it, up to ``max_depth`` levels down."""
        self.require_namespace(ns)
        found = [ns]
        if max_depth == 0:
            return found
        children_dir = self.ns_path(ns) / "ns"
        if children_dir.is_dir():
            for entry in sorted(os.listdir(children_dir)):
                if is_safe_id(entry) and (children_dir / entry).is_dir():
                    child = ns.child(entry)
                    found.extend(
                        self.list_namespaces(child, None if max_depth is None else max_depth - 1)
                    )
        return found

    def remove_namespace(self, ns: Namespace) -> None:
        if ns.is_root:
            raise UsageError("the root namespace cannot be removed")
        self.require_namespace(ns)
        for child in self.list_namespaces(ns):
            if self.list_groups(child):
                raise UsageError(f"namespace '{ns}' is not empty (it holds backup groups)")
        shutil.rmtree(self.ns_path(ns))

    # -- groups -------------------------------------------------------------------------------

    def group_path(self, ns: Namespace, group: GroupName) -> Path:
        return self.ns_path(ns) / group.backup_type / group.backup_id

    def list_groups(self, ns: Namespace = Namespace()) -> list[GroupName]:
        self.require_namespace(ns)
        groups = []
        base = self.ns_path(ns)
        for backup_type in BACKUP_TYPES:
            type_dir = base / backup_type
            if not type_dir.is_dir():
                continue
            for backup_id in sorted(os.listdir(type_dir)):
                if is_safe_id(backup_id) and (type_dir / backup_id).is_dir():
                    groups.append(GroupName(backup_type, backup_id))
        return groups

    def require_group(self, ns: Namespace, group: GroupName) -> Path:
        self.require_namespace(ns)
        path = self.group_path(ns, group)
        if not path.is_dir():
            raise NotFoundError(f"backup group {group} does not exist" + _in_ns(ns))
        return path

    def owner(self, ns: Namespace, group: GroupName) -> str | None:
        try:
            return (self.group_path(ns, group) / OWNER_FILE).read_text().splitlines()[0]
        except (FileNotFoundError, IndexError):
            return None

    def lock_group(self, ns: Namespace, group: GroupName, timeout: float = 0.0) -> DirLock:
        return lock_path(self.group_path(ns, group), True, f"backup group {group}", timeout)

    def remove_group(self, ns: Namespace, group: GroupName) -> int:
        """Remove every unprotected snapshot, and the group if nothing is left. Returns count."""
        removed = 0
        with self.lock_group(ns, group):
            for info in self.list_snapshots(ns, group):
                if not info.protected:
                    self.forget_snapshot(ns, info.name)
                    removed += 1
            if not self.list_snapshots(ns, group):
                shutil.rmtree(self.group_path(ns, group))
        return removed

    # -- snapshots ------------------------------------------------------------------------------

    def snapshot_path(self, ns: Namespace, snap: SnapshotName) -> Path:
        return self.group_path(ns, snap.group) / snap.time_string

    def list_snapshots(self, ns: Namespace, group: GroupName) -> list[SnapshotInfo]:
        """Snapshots of a group, oldest first; incomplete ones have ``manifest=None``."""
        group_dir = self.require_group(ns, group)
        snapshots = []
        for entry in sorted(os.listdir(group_dir)):
            path = group_dir / entry
            if not path.is_dir():
                continue
            try:
                backup_time = parse_backup_time(entry)
            except UsageError:
                continue
            name = SnapshotName(group, backup_time)
            snapshots.append(self._snapshot_info(ns, name, path))
        snapshots.sort(key=lambda s: s.name.backup_time)
        return snapshots

    def iter_all_snapshots(
        self, ns: Namespace = Namespace(), max_depth: int | None = None
    ) -> Iterator[SnapshotInfo]:
        for child in self.list_namespaces(ns, max_depth):
            for group in self.list_groups(child):
                yield from self.list_snapshots(child, group)

    def _snapshot_info(self, ns: Namespace, name: SnapshotName, path: Path) -> SnapshotInfo:
        manifest = None
        error = None
        manifest_path = path / MANIFEST_BLOB_NAME
        if manifest_path.exists():
            try:
                manifest = self.load_manifest_file(manifest_path)
            except FormatError as err:
                error = str(err)
        files = sorted(p for p in os.listdir(path) if not p.startswith("."))
        return SnapshotInfo(ns, name, path, manifest, (path / PROTECTED_MARKER).exists(), files, error)

    def snapshot(self, ns: Namespace, name: SnapshotName) -> SnapshotInfo:
        self.require_group(ns, name.group)
        path = self.snapshot_path(ns, name)
        if not path.is_dir():
            raise NotFoundError(f"snapshot {name} does not exist" + _in_ns(ns))
        return self._snapshot_info(ns, name, path)

    def complete_snapshot(self, ns: Namespace, name: SnapshotName) -> SnapshotInfo:
        info = self.snapshot(ns, name)
        if info.manifest_error is not None:
            raise FormatError(info.manifest_error)
        if info.manifest is None:
            raise NotFoundError(f"snapshot {name} is incomplete (it has no manifest)")
        return info

    def latest_snapshot(self, ns: Namespace, group: GroupName) -> SnapshotInfo | None:
        complete = [s for s in self.list_snapshots(ns, group) if s.complete]
        return complete[-1] if complete else None

    @staticmethod
    def load_manifest_file(path: Path) -> Manifest:
        try:
            raw = path.read_bytes()
            return Manifest.from_bytes(decode_blob(raw))
        except CairnError as err:
            raise FormatError(f"manifest {path} is unreadable: {err}") from None

    def update_manifest_unprotected(self, ns: Namespace, name: SnapshotName, update) -> Manifest:
        """Change the unsigned part of a manifest (verify state, notes) under the manifest lock."""
        info = self.complete_snapshot(ns, name)
        lock = lock_path(info.path / ".index.json.lck", True, f"manifest of {name}", timeout=30, directory=False)
        with lock:
            manifest = self.load_manifest_file(info.path / MANIFEST_BLOB_NAME)
            update(manifest.unprotected)
            replace_file(info.path / MANIFEST_BLOB_NAME, encode_blob(manifest.to_bytes()))
        return manifest

    def lock_snapshot(self, ns: Namespace, name: SnapshotName, exclusive: bool, timeout: float = 0.0) -> DirLock:
        return lock_path(self.snapshot_path(ns, name), exclusive, f"snapshot {name}", timeout)

    def set_protected(self, ns: Namespace, name: SnapshotName, protected: bool) -> None:
        """Create or remove PBS's ``.protected`` marker.

        A shared lock is enough: it keeps a removal (exclusive) from racing the change, while
        readers and verify may go on.
        """
        marker = self.snapshot(ns, name).path / PROTECTED_MARKER
        with self.lock_snapshot(ns, name, exclusive=False, timeout=10):
            if protected:
                replace_file(marker, b"")
            else:
                marker.unlink(missing_ok=True)
                fsync_dir(marker.parent)

    def is_protected(self, ns: Namespace, name: SnapshotName) -> bool:
        return (self.snapshot(ns, name).path / PROTECTED_MARKER).exists()

    def forget_snapshot(self, ns: Namespace, name: SnapshotName) -> None:
        """Remove a snapshot directory; refused while it is protected or in use."""
        info = self.snapshot(ns, name)
        with self.lock_snapshot(ns, name, exclusive=True):
            # Checked under the lock, which a protection change also takes.
            if (info.path / PROTECTED_MARKER).exists():
                raise UsageError(f"snapshot {name} is protected; unprotect it before removing it")
            # Remove the manifest first: if we are interrupted, what is left is an
            # incomplete snapshot, never a complete one with missing archives.
            (info.path / MANIFEST_BLOB_NAME).unlink(missing_ok=True)
            shutil.rmtree(info.path)

    # -- archives -------------------------------------------------------------------------------

    def archive_path(self, ns: Namespace, name: SnapshotName, archive: str) -> Path:
        if "/" in archive or archive.startswith("."):
            raise UsageError(f"invalid archive name {archive!r}")
        return self.snapshot_path(ns, name) / archive

    def read_archive_bytes(self, ns: Namespace, name: SnapshotName, archive: str) -> bytes:
        try:
            return self.archive_path(ns, name, archive).read_bytes()
        except FileNotFoundError:
            raise NotFoundError(f"snapshot {name} has no archive {archive!r}") from None

    def open_index(self, ns: Namespace, name: SnapshotName, archive: str) -> FixedIndex | DynamicIndex:
        """Map an index file and parse it (its checksum is checked)."""
        path = self.archive_path(ns, name, archive)
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                raw = mmap.mmap(f.fileno(), size, prot=mmap.PROT_READ) if size else b""
        except FileNotFoundError:
            raise NotFoundError(f"snapshot {name} has no archive {archive!r}") from None
        if archive.endswith(".fidx"):
            return FixedIndex(raw)
        if archive.endswith(".didx"):
            return DynamicIndex(raw)
        raise UsageError(f"{archive!r} is not an index archive")

    def group_notes(self, ns: Namespace, group: GroupName) -> str:
        try:
            return (self.require_group(ns, group) / NOTES_FILE).read_text()
        except FileNotFoundError:
            return ""

    def write_group_notes(self, ns: Namespace, group: GroupName, text: str) -> None:
        replace_file(self.require_group(ns, group) / NOTES_FILE, text.encode())

    def snapshot_notes(self, ns: Namespace, name: SnapshotName) -> str:
        """PBS keeps a snapshot's notes in the manifest's unsigned ``notes`` field."""
        return str(self.complete_snapshot(ns, name).manifest.unprotected.get("notes") or "")

    def write_snapshot_notes(self, ns: Namespace, name: SnapshotName, text: str) -> None:
        def update(unprotected: dict) -> None:
            unprotected["notes"] = text

        self.update_manifest_unprotected(ns, name, update)

    # -- store-wide files used by garbage collection, verify and status ---------------------

    def iter_index_files(self) -> Iterator[Path]:
        """Every ``.fidx``/``.didx`` file below the store, skipping hidden entries (as PBS).

        Index files anywhere count, including those of incomplete snapshots and of paths
        outside the usual scheme: garbage collection must err on the side of keeping chunks.
        A directory that cannot be read stops the walk with an error, since skipping it
        could let garbage collection remove chunks it still needs.
        """

        def fail(err: OSError) -> None:
            if isinstance(err, FileNotFoundError):
                return  # removed while we walked: a pruned snapshot
            if err.filename and Path(err.filename).name == "lost+found":
                return
            raise StoreError(f"cannot read {err.filename}: {err.strerror}; refusing to go on")

        for directory, subdirs, files in os.walk(self.base, onerror=fail):
            subdirs[:] = sorted(d for d in subdirs if not d.startswith("."))
            for name in sorted(files):
                if name.endswith(INDEX_SUFFIXES) and not name.startswith("."):
                    yield Path(directory) / name

    def writer_markers_dir(self) -> Path:
        return self.base / WRITERS_DIR

    def gc_status_path(self) -> Path:
        return self.base / GC_STATUS_FILE

    def verify_status_path(self) -> Path:
        return self.base / VERIFY_STATUS_FILE

    def lock_gc(self) -> DirLock:
        """The exclusive lock one garbage collection holds from start to end."""
        path = self.base / GC_LOCK_FILE
        return lock_path(path, True, f"garbage collection of {self.base}", directory=False)

    def chunk_probe_path(self) -> Path:
        """A scratch file inside the chunk directory, for the atime check of GC."""
        return self.chunks.chunk_dir / ".cairn-atime-probe"


def _in_ns(ns: Namespace) -> str:
    return "" if ns.is_root else f" in namespace '{ns}'"


__all__ = ["Datastore", "SnapshotInfo", "format_backup_time"]
