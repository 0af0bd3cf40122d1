"""The previous snapshot a metadata-mode backup compares against.

As PBS does, only the group's last finished snapshot is considered, and only if it holds
the same archive in split form (``NAME.mpxar.didx`` and ``NAME.ppxar.didx``), was made with
the same key (or none) and the same crypt mode. Anything else means "no reference": the
backup then reads every file, as in data mode, and says why in one line.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass

from cairn.client.chunks import ChunkCodec
from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.errors import CairnError
from cairn.format.index import DynamicIndex
from cairn.format.manifest import Manifest
from cairn.format.pxar import Accessor

from .reader import ChunkReader


def split_archive_names(archive: str) -> tuple[str, str]:
    """``root.pxar.didx`` -> (``root.mpxar.didx``, ``root.ppxar.didx``), PBS's split names."""
    base = archive.removesuffix(".didx").removesuffix(".pxar")
    return base + ".mpxar.didx", base + ".ppxar.didx"


@dataclass
class PreviousArchive:
    """The previous metadata archive (random access) and payload index of one archive."""

    snapshot: SnapshotName
    accessor: Accessor
    payload_index: DynamicIndex
    metadata_reader: ChunkReader


def find_previous(
    store: Datastore,
    ns: Namespace,
    group: GroupName,
    before: int,
    archive: str,
    codec: ChunkCodec,
    crypt_mode: str,
    fingerprint: str | None,
    locks: ExitStack,
    info: Callable[[str], None],
) -> PreviousArchive | None:
    """Open the reference for ``archive`` (``NAME.pxar.didx``), or None with a reason told.

    The previous snapshot is share-locked through ``locks`` for as long as the caller keeps
    that stack open, so it cannot be removed while its chunks are being re-referenced.
    """
    previous = [s for s in store.list_snapshots(ns, group) if s.complete and s.name.backup_time < before]
    if not previous:
        info("no previous snapshot: every file is read")
        return None
    snapshot = previous[-1]
    manifest = snapshot.manifest
    assert manifest is not None
    meta_name, payload_name = split_archive_names(archive)
    try:
        meta_info = manifest.lookup(meta_name)
        payload_info = manifest.lookup(payload_name)
    except KeyError:
        info(f"previous snapshot {snapshot.name} has no {meta_name}: every file is read")
        return None
    if manifest.key_fingerprint != fingerprint:
        info(f"previous snapshot {snapshot.name} was made with another key: every file is read")
        return None
    if (manifest.unprotected.get("verify_state") or {}).get("state") == "failed":
        info(f"previous snapshot {snapshot.name} failed verification: every file is read")
        return None
    if payload_info.crypt_mode != crypt_mode or meta_info.crypt_mode != crypt_mode:
        info(f"previous snapshot {snapshot.name} has another crypt mode: every file is read")
        return None
    try:
        locks.enter_context(store.lock_snapshot(ns, snapshot.name, exclusive=False, timeout=10))
        meta_index = _open_checked(store, ns, snapshot.name, manifest, meta_name)
        payload_index = _open_checked(store, ns, snapshot.name, manifest, payload_name)
        reader = ChunkReader(store.chunks, meta_index, codec)
        accessor = Accessor(reader.read_at, reader.size)
        accessor.open_root()
    except CairnError as err:
        info(f"cannot use previous snapshot {snapshot.name} as reference ({err}): every file is read")
        return None
    info(f"using {snapshot.name} {meta_name} as reference")
    return PreviousArchive(snapshot.name, accessor, payload_index, reader)


def _open_checked(
    store: Datastore, ns: Namespace, name: SnapshotName, manifest: Manifest, archive: str
) -> DynamicIndex:
    index = store.open_index(ns, name, archive)
    file_info = manifest.lookup(archive)
    if not isinstance(index, DynamicIndex) or index.index_csum != file_info.csum or index.size != file_info.size:
        raise CairnError(f"{archive} does not match its manifest entry")
    return index
