"""Building small snapshots in-process, and ageing chunks, for the lifecycle tests."""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import contextmanager
from pathlib import Path

import cairn.datastore.writer as writer_module
from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace
from cairn.datastore.writer import BackupWriter
from cairn.format.blob import encode_blob

CHUNK = 64 * 1024
DAY = 86400


def blocks(seed: int, count: int, size: int = CHUNK) -> list[bytes]:
    """``count`` distinct pseudo-random blocks (compressible halves, so blobs are zstd)."""
    out = []
    for i in range(count):
        head = hashlib.sha256(f"{seed}/{i}".encode()).digest() * (size // 64)
        out.append(head + bytes(size // 2))
    return out


def write_snapshot(
    store: Datastore, group: str, t: int, data: list[bytes], ns: Namespace = Namespace(), cipher=None
) -> list[bytes]:
    """A complete snapshot with one fixed index over ``data`` and one config blob."""
    mode = "encrypt" if cipher is not None else "none"
    digests = []
    with _without_syncfs(), BackupWriter(store, ns, GroupName.parse(group), t) as writer:
        index = writer.fixed_index("disk.img.fidx", CHUNK)
        for block in data:
            digest = cipher.compute_digest(block) if cipher else hashlib.sha256(block).digest()
            store.chunks.insert(digest, encode_blob(block, cipher))
            index.add(digest, len(block))
            digests.append(digest)
        writer.close_index("disk.img.fidx", index, mode)
        writer.add_blob("vm.conf.blob", encode_blob(f"config of {group} at {t}\n".encode() * 50, cipher), mode)
        writer.finish(cipher)
    return digests


@contextmanager
def _without_syncfs():
    """These tests are not about durability; a store-wide flush per snapshot only costs time
    (seconds when other processes write to the same disk)."""
    saved = writer_module.syncfs
    writer_module.syncfs = lambda path: None
    try:
        yield
    finally:
        writer_module.syncfs = saved


def age(path: Path, seconds: float) -> None:
    """Set ``path``'s atime ``seconds`` into the past (mtime unchanged)."""
    st = os.stat(path)
    os.utime(path, ns=(int((time.time() - seconds) * 1e9), st.st_mtime_ns))


def age_all_chunks(store: Datastore, seconds: float) -> None:
    for chunk in store.chunks.iter_files():
        age(chunk.path, seconds)


def chunk_names(store: Datastore) -> set[str]:
    return {c.name for c in store.chunks.iter_files()}
