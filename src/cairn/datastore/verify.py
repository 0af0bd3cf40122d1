"""Verification: read back every byte of snapshots and check it against what recorded it.

For each archive the manifest lists: a blob's size and SHA-256 must match the manifest and
the blob must decode; an index's checksum and size must match both its own header and the
manifest, its unused header bytes must be zero, and every chunk it references is read,
CRC-checked, decoded and hashed back to its digest (with the key's keyed digest when a key
is given; encrypted chunks without a key get the CRC check only, as on a PBS server).

Each chunk is checked once per run, however many snapshots share it. A corrupt chunk is
renamed to ``<digest>.<n>.bad`` so the next backup that has its data writes it again. The
outcome is recorded as PBS does, in the manifest's unsigned ``verify_state``
(``{"state": "ok"|"failed", "upid": ...}``), and the run's summary in the store for
``cairn status``. Snapshots are read under a shared lock, so they cannot be removed while
they are verified.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from cairn.datastore.datastore import Datastore, SnapshotInfo
from cairn.datastore.fsutil import replace_file
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.datastore.upid import make_upid, upid_starttime
from cairn.errors import CairnError, FormatError, LockError
from cairn.format.blob import blob_crc_ok, blob_info, decode_blob
from cairn.format.index import INDEX_HEADER_SIZE, DynamicIndex, FixedIndex
from cairn.format.manifest import FileInfo, Manifest, archive_kind

# Bytes of an index header that carry data; the rest is reserved and written as zeros.
_FIXED_HEADER_USED = 80
_DYNAMIC_HEADER_USED = 64
_MAX_FAILED_LISTED = 100
_IN_FLIGHT_PER_WORKER = 4
_MAX_CHUNK_ERRORS_LISTED = 20

Log = Callable[[str], None]


def _quiet(_: str) -> None:
    pass


@dataclass
class SnapshotResult:
    ns: Namespace
    name: SnapshotName
    state: str  # ok | failed | skipped
    errors: list[str] = field(default_factory=list)
    reason: str = ""  # why it was skipped

    def to_json(self) -> dict:
        value = {
            "backup-type": self.name.group.backup_type,
            "backup-id": self.name.group.backup_id,
            "backup-time": self.name.backup_time,
            "state": self.state,
        }
        if not self.ns.is_root:
            value["ns"] = str(self.ns)
        if self.errors:
            value["errors"] = self.errors
        if self.reason:
            value["reason"] = self.reason
        return value


@dataclass
class VerifyReport:
    upid: str
    started: float
    finished: float = 0.0
    snapshots: list[SnapshotResult] = field(default_factory=list)
    chunks_verified: int = 0
    chunks_corrupt: int = 0
    bytes_read: int = 0

    def count(self, state: str) -> int:
        return sum(1 for s in self.snapshots if s.state == state)

    @property
    def failed(self) -> list[SnapshotResult]:
        return [s for s in self.snapshots if s.state == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failed

    def summary_json(self) -> dict:
        """What ``cairn status`` shows of the last run."""
        return {
            "upid": self.upid,
            "starttime": int(self.started),
            "endtime": int(self.finished),
            "state": "ok" if self.ok else "failed",
            "snapshots-ok": self.count("ok"),
            "snapshots-failed": self.count("failed"),
            "snapshots-skipped": self.count("skipped"),
            "chunks-verified": self.chunks_verified,
            "chunks-corrupt": self.chunks_corrupt,
            "bytes-read": self.bytes_read,
            "failed": [_display(s.ns, s.name) for s in self.failed][:_MAX_FAILED_LISTED],
        }

    def to_json(self) -> dict:
        value = self.summary_json()
        value["snapshots"] = [s.to_json() for s in self.snapshots]
        return value


def _display(ns: Namespace, name: SnapshotName) -> str:
    return str(name) if ns.is_root else f"{ns}:{name}"


def last_verify_summary(store: Datastore) -> dict | None:
    try:
        value = json.loads(store.verify_status_path().read_bytes())
    except (FileNotFoundError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def needs_verify(manifest: Manifest, ignore_verified: bool, outdated_after: int | None, now: float) -> bool:
    """PBS's verify filter: with ``ignore_verified``, skip snapshots verified before (ok or
    failed) unless that was more than ``outdated_after`` whole days ago."""
    if not ignore_verified:
        return True
    state = manifest.unprotected.get("verify_state")
    try:
        last = upid_starttime(state["upid"])
    except (TypeError, KeyError, FormatError):
        return True
    if outdated_after is None:
        return False
    return (int(now) - last) // 86400 > outdated_after


class Verifier:
    """One verification run; remembers which chunks it has already judged."""

    def __init__(
        self, store: Datastore, cipher=None, log: Log = _quiet, ignore_verified: bool = False,
        outdated_after: int | None = None, now: float | None = None, workers: int | None = None,
        worker_id: str = "",
    ) -> None:
        self.store = store
        self.cipher = cipher
        self.log = log
        self.ignore_verified = ignore_verified
        self.outdated_after = outdated_after
        self.now = time.time() if now is None else now
        self.workers = workers or max(2, min(4, os.cpu_count() or 2))
        self.report = VerifyReport(make_upid("verify", worker_id or store.base.name, self.now), self.now)
        self.verified: set[bytes] = set()
        self.corrupt: set[bytes] = set()

    # -- scope ----------------------------------------------------------------------------

    def run(self, snapshots: Iterable[tuple[Namespace, SnapshotName]]) -> VerifyReport:
        with ThreadPoolExecutor(self.workers, thread_name_prefix="verify") as pool:
            self._pool = pool
            for ns, name in snapshots:
                result = self.verify_snapshot(ns, name)
                self.report.snapshots.append(result)
                detail = f" ({result.reason})" if result.reason else ""
                self.log(f"{result.state:7}  {_display(ns, name)}{detail}")
                for error in result.errors:
                    self.log(f"         {error}")
        self.report.finished = time.time()
        try:
            replace_file(self.store.verify_status_path(), json.dumps(self.report.summary_json()).encode())
        except OSError as err:
            self.log(f"warning: cannot save the verify status: {err.strerror}")
        return self.report

    # -- one snapshot ---------------------------------------------------------------------

    def verify_snapshot(self, ns: Namespace, name: SnapshotName) -> SnapshotResult:
        store = self.store
        try:
            info = store.snapshot(ns, name)
        except CairnError:
            return SnapshotResult(ns, name, "skipped", reason="it no longer exists")
        if not info.finished:
            return SnapshotResult(ns, name, "skipped", reason="incomplete (no manifest): an interrupted or running backup")
        try:
            lock = store.lock_snapshot(ns, name, exclusive=False)
        except LockError:
            return SnapshotResult(ns, name, "skipped", reason="locked by another operation")
        with lock:
            try:
                info = store.snapshot(ns, name)
            except CairnError:
                return SnapshotResult(ns, name, "skipped", reason="it no longer exists")
            if info.manifest is None:
                error = info.manifest_error or "manifest is missing"
                return SnapshotResult(ns, name, "failed", [error])
            if not needs_verify(info.manifest, self.ignore_verified, self.outdated_after, self.now):
                return SnapshotResult(ns, name, "skipped", reason="verified before")
            errors = self._check_snapshot(info)
            state = "failed" if errors else "ok"
            self._record(ns, name, state, errors)
            return SnapshotResult(ns, name, state, errors)

    def _record(self, ns: Namespace, name: SnapshotName, state: str, errors: list[str]) -> None:
        upid = self.report.upid

        def update(unprotected: dict) -> None:
            unprotected["verify_state"] = {"state": state, "upid": upid}

        try:
            self.store.update_manifest_unprotected(ns, name, update)
        except (CairnError, OSError) as err:
            errors.append(f"cannot record the verify state in the manifest: {err}")

    def _check_snapshot(self, info: SnapshotInfo) -> list[str]:
        manifest = info.manifest
        errors = []
        group = info.name.group
        if (manifest.backup_type, manifest.backup_id, manifest.backup_time) != (
            group.backup_type, group.backup_id, info.name.backup_time
        ):
            errors.append("manifest names another snapshot "
                          f"({manifest.backup_type}/{manifest.backup_id}/{manifest.backup_time})")
        cipher = self._cipher_for(manifest, errors)
        for file_info in manifest.files:
            try:
                kind = archive_kind(file_info.filename)
                path = self.store.archive_path(info.ns, info.name, file_info.filename)
                if kind == "blob":
                    self._check_blob(path, file_info, cipher)
                    continue
                bad = self._check_index(path, kind, file_info, cipher)
            except (CairnError, OSError) as err:
                errors.append(f"{file_info.filename}: {_reason(err)}")
                continue
            errors.extend(f"{file_info.filename}: {problem}" for problem in bad[:_MAX_CHUNK_ERRORS_LISTED])
            if len(bad) > _MAX_CHUNK_ERRORS_LISTED:
                errors.append(f"{file_info.filename}: {len(bad)} bad chunks in all")
        return errors

    def _cipher_for(self, manifest: Manifest, errors: list[str]):
        """The key to check this snapshot with: ours if it made the snapshot, else none."""
        if self.cipher is None or manifest.key_fingerprint is None:
            return None
        if manifest.key_fingerprint != self.cipher.fingerprint_str():
            return None
        try:
            manifest.verify_signature(self.cipher)
        except CairnError as err:
            errors.append(f"{err}")
        return self.cipher

    # -- archives -------------------------------------------------------------------------

    def _check_blob(self, path, file_info: FileInfo, cipher) -> None:
        raw = path.read_bytes()
        self.report.bytes_read += len(raw)
        if len(raw) != file_info.size:
            raise FormatError(f"wrong size ({len(raw)} bytes, manifest says {file_info.size})")
        if hashlib.sha256(raw).digest() != file_info.csum:
            raise FormatError("checksum does not match the manifest")
        encrypted = blob_info(raw).encrypted
        if not encrypted:
            decode_blob(raw)
        elif cipher is not None:
            decode_blob(raw, cipher)

    def _check_index(self, path, kind: str, file_info: FileInfo, cipher) -> list[str]:
        """Check the index itself (raising), then its chunks: returns the chunks' problems."""
        raw = path.read_bytes()
        self.report.bytes_read += len(raw)
        if kind == "fidx":
            index: FixedIndex | DynamicIndex = FixedIndex(raw, verify_csum=False)
            used = _FIXED_HEADER_USED
        else:
            index = DynamicIndex(raw, verify_csum=False)
            used = _DYNAMIC_HEADER_USED
        csum = index.compute_csum()
        problems = []
        if index.size != file_info.size:
            problems.append(f"wrong size ({index.size} bytes, manifest says {file_info.size})")
        if csum != file_info.csum:
            problems.append("index checksum does not match the manifest")
        if csum != index.index_csum:
            problems.append("index checksum does not match its header")
        if raw[used:INDEX_HEADER_SIZE].strip(b"\0"):
            problems.append("reserved header bytes are not zero")
        if problems:
            raise FormatError("; ".join(problems))
        return self._check_chunks(index, file_info.crypt_mode == "encrypt", cipher)

    # -- chunks ---------------------------------------------------------------------------

    def _check_chunks(self, index: FixedIndex | DynamicIndex, encrypted: bool, cipher) -> list[str]:
        """Check every chunk of ``index`` not judged before in this run; list the bad ones."""
        bad: list[str] = []
        in_flight: deque[tuple[bytes, Future]] = deque()
        pending: set[bytes] = set()
        limit = self.workers * _IN_FLIGHT_PER_WORKER

        def settle() -> None:
            digest, future = in_flight.popleft()
            pending.discard(digest)
            problem, size_read = future.result()
            self.report.bytes_read += size_read
            if problem is None:
                self.verified.add(digest)
                self.report.chunks_verified += 1
                return
            if digest not in self.corrupt:
                self.corrupt.add(digest)
                self.report.chunks_corrupt += 1
                moved = self.store.chunks.rename_corrupt(digest)
                if moved is not None:
                    problem += f" (moved aside as {moved.name[65:]})"
            bad.append(f"chunk {digest.hex()}: {problem}")

        for pos in range(len(index)):
            digest = index.digest(pos)
            if digest in self.verified or digest in pending:
                continue
            if digest in self.corrupt:
                bad.append(f"chunk {digest.hex()}: found bad earlier in this run")
                continue
            start, end = index.chunk_range(pos)
            pending.add(digest)
            in_flight.append((digest, self._pool.submit(self._check_chunk, digest, end - start, encrypted, cipher)))
            if len(in_flight) >= limit:
                settle()
        while in_flight:
            settle()
        return bad

    def _check_chunk(self, digest: bytes, size: int, encrypted: bool, cipher) -> tuple[str | None, int]:
        """Runs in a worker thread: (None, bytes read) when the chunk is good, else a reason."""
        try:
            raw = self.store.chunks.read(digest)
        except CairnError as err:
            return str(err), 0
        except OSError as err:
            return f"cannot be read: {err.strerror}", 0
        try:
            info = blob_info(raw)
            if not blob_crc_ok(raw):
                return "wrong CRC checksum (corrupt data)", len(raw)
            if info.encrypted != encrypted:
                return ("encrypted chunk in an unencrypted archive" if info.encrypted
                        else "unencrypted chunk in an encrypted archive"), len(raw)
            if info.encrypted and cipher is None:
                return None, len(raw)
            data = decode_blob(raw, cipher if info.encrypted else None, digest, check_crc=False)
        except CairnError as err:
            return str(err), len(raw)
        if len(data) != size:
            return f"wrong length ({len(data)} bytes, index says {size})", len(raw)
        return None, len(raw)


def _reason(err: Exception) -> str:
    if isinstance(err, OSError):
        return err.strerror or str(err)
    return str(err)


def snapshots_in_scope(
    store: Datastore, ns: Namespace = Namespace(), group: GroupName | None = None,
    snapshot: SnapshotName | None = None, max_depth: int | None = None,
) -> list[tuple[Namespace, SnapshotName]]:
    """The snapshots one verify covers: one snapshot, a group, or namespaces (newest first
    within a group, as PBS)."""
    if snapshot is not None:
        store.snapshot(ns, snapshot)
        return [(ns, snapshot)]
    if group is not None:
        groups = [(ns, group)]
        store.require_group(ns, group)
    else:
        groups = [(child, g) for child in store.list_namespaces(ns, max_depth) for g in store.list_groups(child)]
    found = []
    for group_ns, g in groups:
        for info in reversed(store.list_snapshots(group_ns, g)):
            found.append((group_ns, info.name))
    return found


def verify(
    store: Datastore, ns: Namespace = Namespace(), group: GroupName | None = None,
    snapshot: SnapshotName | None = None, max_depth: int | None = None, cipher=None,
    ignore_verified: bool = False, outdated_after: int | None = None, log: Log = _quiet,
    now: float | None = None,
) -> VerifyReport:
    """Verify a snapshot, a group, or every snapshot in ``ns`` and below (``max_depth``)."""
    targets = snapshots_in_scope(store, ns, group, snapshot, max_depth)
    scope = str(snapshot or group or ns or "")
    worker_id = f"{store.base.name}:{scope}" if scope else store.base.name
    verifier = Verifier(store, cipher, log, ignore_verified, outdated_after, now, worker_id=worker_id)
    return verifier.run(targets)
