"""Garbage collection of a chunk store, in PBS's two phases.

Phase 1 (mark) reads every index file in the store and sets the access time (atime) of every
chunk it references to now. Phase 2 (sweep) walks the chunk directories and removes every
chunk whose atime is older than the cutoff: the start of the oldest running backup writer or
of this collection, whichever is earlier, minus 24 h 5 min. A chunk a running backup reuses
is touched by that backup, so it is newer than the writer's start and survives, although no
finished index mentions it yet.

That reasoning only holds if atimes can be set at all, so before anything is removed the
collection checks on a probe file that an explicit atime update takes effect, and refuses
to run otherwise.

The result has the fields of PBS's ``GarbageCollectionStatus`` and is kept in
``<store>/.gc-status``, where PBS keeps it too.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import stat
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from cairn.datastore.chunk_store import TEMP_MARK, is_chunk_name
from cairn.datastore.datastore import Datastore
from cairn.datastore.fsutil import replace_file
from cairn.datastore.upid import make_upid
from cairn.errors import CairnError, LockError, StoreError
from cairn.format.index import DynamicIndex, FixedIndex

# PBS keeps 24 h (the relatime window) plus 5 minutes of safety margin.
GRACE_SECONDS = 24 * 3600 + 300
_ATIME_PROBE_AGE = 2 * 24 * 3600
# Digests touched recently are not touched again; the set is cleared when it grows this big,
# which bounds memory on stores with many millions of chunks.
_TOUCHED_CACHE_LIMIT = 1 << 20
_MAX_LISTED_WARNINGS = 10
_ASIDE_MARK = ".gc_"  # a chunk renamed aside by the sweep while it decides

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


# -- touching chunks: utimensat(atime = now, mtime unchanged), as PBS --------------------------

_libc = ctypes.CDLL(None, use_errno=True)


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


_UTIME_NOW = (1 << 30) - 1
_UTIME_OMIT = (1 << 30) - 2
_AT_FDCWD = -100
_AT_SYMLINK_NOFOLLOW = 0x100
_ATIME_NOW = (_Timespec * 2)(_Timespec(0, _UTIME_NOW), _Timespec(0, _UTIME_OMIT))


def touch_atime(path: str | Path) -> bool:
    """Set ``path``'s atime to now and leave its mtime alone; False if it does not exist."""
    if _libc.utimensat(_AT_FDCWD, os.fsencode(path), _ATIME_NOW, _AT_SYMLINK_NOFOLLOW) == 0:
        return True
    err = ctypes.get_errno()
    if err == errno.ENOENT:
        return False
    raise OSError(err, os.strerror(err), str(path))


def check_atime_updates(store: Datastore, now: float | None = None) -> None:
    """Refuse a store whose file system does not record the atime updates GC relies on.

    A probe file next to the chunks gets an atime two days in the past, is touched the way
    the mark phase touches chunks, and must then show a recent atime.
    """
    now = time.time() if now is None else now
    probe = store.chunk_probe_path()
    past_ns = int(now - _ATIME_PROBE_AGE) * 1_000_000_000
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, b"cairn atime probe\n")
        finally:
            os.close(fd)
        st = os.stat(probe)
        os.utime(probe, ns=(past_ns, st.st_mtime_ns))
        set_back = os.stat(probe).st_atime_ns
        touch_atime(probe)
        touched = os.stat(probe).st_atime_ns
    except OSError as err:
        raise StoreError(f"cannot check atime updates in {probe.parent}: {err.strerror}") from None
    finally:
        probe.unlink(missing_ok=True)
    if abs(set_back - past_ns) > 1_000_000_000 or touched < past_ns + 3600 * 1_000_000_000:
        raise StoreError(
            f"garbage collection refused: the file system of {store.base} does not update file "
            "access times (atime) when told to; GC would remove chunks still in use"
        )


# -- running writers ------------------------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_writer_starts(store: Datastore, remove_stale: bool = False) -> list[float]:
    """Start times of the backup writers that are running now.

    Each writer leaves a marker ``<pid>-<backup time>-<random>`` holding its start time.
    Markers of dead processes are left by killed backups: they are ignored (and removed with
    ``remove_stale``). An unreadable start time falls back to the marker's mtime, its
    creation time.
    """
    starts = []
    try:
        entries = list(os.scandir(store.writer_markers_dir()))
    except FileNotFoundError:
        return []
    for entry in entries:
        try:
            pid = int(entry.name.split("-", 1)[0])
            st = entry.stat()
        except (ValueError, FileNotFoundError):
            continue
        if not _pid_alive(pid):
            if remove_stale:
                Path(entry.path).unlink(missing_ok=True)
            continue
        start = st.st_mtime
        try:
            start = min(start, float(Path(entry.path).read_text().strip()))
        except (ValueError, OSError):
            pass
        starts.append(start)
    return starts


# -- the status PBS keeps ---------------------------------------------------------------------


@dataclass
class GcStatus:
    """PBS's ``GarbageCollectionStatus`` (field names kebab-cased in JSON)."""

    upid: str | None = None
    index_file_count: int = 0
    index_data_bytes: int = 0
    disk_bytes: int = 0
    disk_chunks: int = 0
    removed_bytes: int = 0
    removed_chunks: int = 0
    pending_bytes: int = 0
    pending_chunks: int = 0
    removed_bad: int = 0
    still_bad: int = 0

    @property
    def dedup_factor(self) -> float:
        """Bytes the indexes describe per byte stored, as PBS's task log reports it."""
        return self.index_data_bytes / self.disk_bytes if self.disk_bytes else 1.0

    def to_json(self) -> dict:
        return {name.replace("_", "-"): value for name, value in asdict(self).items()}

    @classmethod
    def from_json(cls, value: dict) -> GcStatus:
        known = {f.name for f in fields(cls)}
        return cls(**{k.replace("-", "_"): v for k, v in value.items() if k.replace("-", "_") in known})


@dataclass
class GcResult:
    status: GcStatus
    dry_run: bool
    started: float
    cutoff: float  # chunks last touched before this (epoch seconds) are removed
    oldest_writer: float | None  # start of the oldest live backup writer, if any
    missing_chunks: int = 0  # referenced by an index but not in the store
    skipped_indexes: list[str] = field(default_factory=list)
    removed_temp_files: int = 0

    def to_json(self) -> dict:
        value = self.status.to_json()
        value.update({
            "dry-run": self.dry_run,
            "cutoff": int(self.cutoff),
            "oldest-writer": None if self.oldest_writer is None else int(self.oldest_writer),
            "missing-chunks": self.missing_chunks,
            "skipped-index-files": self.skipped_indexes,
            "removed-temp-files": self.removed_temp_files,
            "deduplication-factor": round(self.status.dedup_factor, 2),
        })
        return value


def last_gc_status(store: Datastore) -> GcStatus | None:
    try:
        return GcStatus.from_json(json.loads(store.gc_status_path().read_bytes()))
    except (FileNotFoundError, ValueError, TypeError, AttributeError):
        return None


# -- the collection --------------------------------------------------------------------------


def garbage_collect(
    store: Datastore, dry_run: bool = False, now: float | None = None, log: Log = _quiet
) -> GcResult:
    """Collect the garbage of ``store``; ``dry_run`` only reports what would go.

    ``now`` stands for the start of the collection (tests pass it; it must not lie ahead of
    the real clock, since the mark phase touches chunks with the real time). ``log`` receives
    warnings, one line each.
    """
    try:
        gc_lock = store.lock_gc()
    except LockError:
        raise LockError(f"a garbage collection is already running on {store.base}") from None
    with gc_lock:
        started = time.time() if now is None else now
        if not dry_run:
            check_atime_updates(store, started)
        writers = live_writer_starts(store, remove_stale=not dry_run)
        oldest_writer = min(writers) if writers else None
        in_use_from = min(oldest_writer, started) if oldest_writer is not None else started
        cutoff = in_use_from - GRACE_SECONDS
        result = GcResult(GcStatus(upid=make_upid("garbage_collection", store.base.name, started)),
                          dry_run, started, cutoff, oldest_writer)
        marker = _Marker(store, result, log, dry_run)
        marker.mark_all()
        _sweep(store, result, marker, in_use_from, log)
        if not dry_run:
            try:
                replace_file(store.gc_status_path(), json.dumps(result.status.to_json()).encode())
            except OSError as err:
                log(f"warning: cannot save the GC status: {err.strerror}")
    return result


class _Marker:
    """Phase 1: touch (or, in a dry run, collect) every chunk an index references."""

    def __init__(self, store: Datastore, result: GcResult, log: Log, dry_run: bool) -> None:
        self.store = store
        self.result = result
        self.log = log
        self.dry_run = dry_run
        self.seen: set[bytes] = set()  # dry run: every referenced digest
        self.missing: set[bytes] = set()

    def mark_all(self) -> None:
        for path in self.store.iter_index_files():
            index = self._open(path)
            if index is not None:
                self.result.status.index_file_count += 1
                self.result.status.index_data_bytes += index.size
                self._mark(index, path)

    def _open(self, path: Path) -> FixedIndex | DynamicIndex | None:
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None  # removed by a prune since the walk found it
        except OSError as err:
            raise StoreError(f"cannot read index {path}: {err.strerror}; garbage collection stopped") from None
        kind = FixedIndex if path.name.endswith(".fidx") else DynamicIndex
        try:
            index = kind(raw, verify_csum=False)
        except CairnError as err:
            self.result.skipped_indexes.append(str(path))
            self.log(f"WARNING: skipping unreadable index {path} ({err}); chunks only it "
                     "references will be removed - run 'cairn verify'")
            return None
        if index.compute_csum() != index.index_csum:
            self.log(f"warning: index {path} fails its checksum; marking its chunks anyway - "
                     "run 'cairn verify'")
        return index

    def _mark(self, index: FixedIndex | DynamicIndex, path: Path) -> None:
        chunks = self.store.chunks
        seen = self.seen
        for digest in index.digests():
            if digest in seen:
                continue
            if self.dry_run:
                seen.add(digest)
                if not chunks.exists(digest):
                    self._missing(digest, path)
                continue
            if len(seen) >= _TOUCHED_CACHE_LIMIT:
                seen.clear()
            seen.add(digest)
            chunk_path = chunks.path(digest)
            if not touch_atime(chunk_path):
                self._missing(digest, path)
                # Keep the copies verify moved aside while something still needs the chunk.
                for counter in range(10):
                    touch_atime(f"{chunk_path}.{counter}.bad")

    def _missing(self, digest: bytes, path: Path) -> None:
        if digest in self.missing:
            return
        self.missing.add(digest)
        self.result.missing_chunks += 1
        if self.result.missing_chunks <= _MAX_LISTED_WARNINGS:
            self.log(f"warning: chunk {digest.hex()} is missing, required by {path}")


def _sweep(store: Datastore, result: GcResult, marker: _Marker, in_use_from: float, log: Log) -> None:
    """Phase 2: remove what the mark phase did not touch and no writer may still need."""
    status = result.status
    cutoff_ns = int(result.cutoff * 1_000_000_000)
    in_use_ns = int(in_use_from * 1_000_000_000)
    for chunk in store.chunks.iter_files():
        name = chunk.name
        if _ASIDE_MARK in name:
            if not result.dry_run:
                _put_back(chunk.path)
            continue
        if TEMP_MARK in name:
            if chunk.atime_ns < cutoff_ns and (result.dry_run or _remove_if_untouched(chunk.path, cutoff_ns)):
                result.removed_temp_files += 1
            continue
        bad = name.endswith(".bad")
        if not is_chunk_name(name[:64]) or not (len(name) == 64 or (bad and len(name) == 70)):
            continue
        atime_ns = chunk.atime_ns
        if result.dry_run:
            digest = bytes.fromhex(name[:64])
            if digest in marker.seen and (not bad or digest in marker.missing):
                atime_ns = in_use_ns  # the real run would touch it now
        if atime_ns < cutoff_ns:
            if not result.dry_run and not _remove_if_untouched(chunk.path, cutoff_ns):
                status.disk_bytes += chunk.size
                status.disk_chunks += 0 if bad else 1
                continue
            if bad:
                status.removed_bad += 1
            else:
                status.removed_chunks += 1
            status.removed_bytes += chunk.size
        elif atime_ns < in_use_ns:
            if bad:
                status.still_bad += 1
            else:
                status.pending_chunks += 1
            status.pending_bytes += chunk.size
        else:
            if bad:
                status.still_bad += 1  # still needed: its chunk is missing
            else:
                status.disk_chunks += 1
            status.disk_bytes += chunk.size
    if result.missing_chunks > _MAX_LISTED_WARNINGS:
        log(f"warning: {result.missing_chunks} chunks referenced by indexes are missing in total")


def _remove_if_untouched(path: Path, cutoff_ns: int) -> bool:
    """Remove ``path`` unless a backup touched it since the sweep looked at it.

    The file is first renamed aside: from then on a backup that wants the chunk finds it
    missing and writes it anew. If the file's atime shows a touch that came before the
    rename, it is still needed and is put back.
    """
    aside = path.with_name(f"{path.name}{_ASIDE_MARK}{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    st = os.lstat(aside)
    if st.st_atime_ns >= cutoff_ns or not stat.S_ISREG(st.st_mode):
        os.rename(aside, path)
        return False
    os.unlink(aside)
    return True


def _put_back(aside: Path) -> None:
    """Undo the rename of a collection killed between renaming a chunk aside and deciding."""
    original = aside.with_name(aside.name.split(_ASIDE_MARK, 1)[0])
    try:
        if original.exists():
            aside.unlink()
        else:
            os.rename(aside, original)
    except FileNotFoundError:
        pass
