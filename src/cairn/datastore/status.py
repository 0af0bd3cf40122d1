"""What ``cairn status`` reports about a store: space, contents, last GC and verify.

Field names follow PBS's ``DataStoreStatus`` (``total``, ``used``, ``avail``, ``counts``,
``gc-status``); the rest are Cairn's additions.
"""

from __future__ import annotations

import os

from cairn.datastore.chunk_store import is_chunk_name
from cairn.datastore.datastore import Datastore
from cairn.datastore.gc import last_gc_status
from cairn.datastore.names import BACKUP_TYPES
from cairn.datastore.verify import last_verify_summary


def store_status(store: Datastore) -> dict:
    fs = os.statvfs(store.base)
    counts = {backup_type: {"groups": 0, "snapshots": 0} for backup_type in BACKUP_TYPES}
    incomplete = 0
    logical_bytes = 0
    for ns in store.list_namespaces():
        for group in store.list_groups(ns):
            counts[group.backup_type]["groups"] += 1
            for info in store.list_snapshots(ns, group):
                counts[group.backup_type]["snapshots"] += 1
                if not info.finished:
                    incomplete += 1
                elif info.manifest is not None:
                    logical_bytes += sum(
                        f.size for f in info.manifest.files if f.filename.endswith((".fidx", ".didx"))
                    )
    chunk_count = chunk_bytes = bad_chunks = 0
    for chunk in store.chunks.iter_files():
        if len(chunk.name) == 64 and is_chunk_name(chunk.name):
            chunk_count += 1
            chunk_bytes += chunk.size
        elif chunk.name.endswith(".bad"):
            bad_chunks += 1
    value: dict = {
        "store": str(store.base),
        "total": fs.f_blocks * fs.f_frsize,
        "used": (fs.f_blocks - fs.f_bfree) * fs.f_frsize,
        "avail": fs.f_bavail * fs.f_frsize,
        "counts": counts,
        "incomplete-snapshots": incomplete,
        "chunks": {"count": chunk_count, "bytes": chunk_bytes, "bad": bad_chunks},
        "index-data-bytes": logical_bytes,
        "deduplication-factor": round(logical_bytes / chunk_bytes, 2) if chunk_bytes else 1.0,
        "maintenance-mode": store.maintenance_mode(),
    }
    gc = last_gc_status(store)
    if gc is not None:
        value["gc-status"] = gc.to_json()
    verify = last_verify_summary(store)
    if verify is not None:
        value["last-verify"] = verify
    return value
