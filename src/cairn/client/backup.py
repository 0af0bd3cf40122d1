"""Backing up images and small files into a snapshot."""

from __future__ import annotations

import errno
import time
from dataclasses import dataclass, field

from cairn.client.chunks import ChunkCodec
from cairn.client.pipeline import ordered_map
from cairn.client.progress import progress_bar
from cairn.client.pxar.create import TreeOptions, check_root
from cairn.client.pxar.tree_backup import TreeBackup
from cairn.client.sources import ImageSource, open_image, read_small_file
from cairn.client.spec import BackupSpec
from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.datastore.writer import BackupWriter
from cairn.errors import StoreError, UsageError
from cairn.format.blob import encode_blob
from cairn.format.crypt import CryptConfig
from cairn.format.manifest import ENCRYPTED_KEY_BLOB_NAME, Manifest

IMAGE_CHUNK_SIZE = 4 * 1024 * 1024


@dataclass
class BackupJob:
    ns: Namespace
    group: GroupName
    backup_time: int | None = None
    cipher: CryptConfig | None = None  # the key when encrypting or signing (or a DeferredCipher)
    crypt_mode: str = "none"  # none | encrypt | sign-only
    master_key_payload: bytes | None = None  # stored as rsa-encrypted.key.blob
    tree_options: TreeOptions = field(default_factory=TreeOptions)  # pxar: excludes, devices


@dataclass
class BackupResult:
    snapshot: SnapshotName
    manifest: Manifest
    chunks_new: int
    chunks_reused: int
    bytes_new: int
    bytes_read: int
    seconds: float
    trees: TreeBackup | None = None  # pxar archives' statistics (files read, reused...)


def run_backup(store: Datastore, specs: list[BackupSpec], job: BackupJob) -> BackupResult:
    """Back up every spec into one new snapshot; on any error nothing complete is left."""
    _check_specs(specs)
    started = time.monotonic()
    sources = _open_sources(specs)
    chunk_cipher = job.cipher if job.crypt_mode == "encrypt" else None
    codec = ChunkCodec(chunk_cipher)
    backup_time = job.backup_time if job.backup_time is not None else int(time.time())
    bytes_read = 0
    trees: TreeBackup | None = None
    try:
        with BackupWriter(store, job.ns, job.group, backup_time) as writer:
            for spec, source in zip(specs, sources):
                if spec.kind == "image":
                    bytes_read += _backup_image(writer, spec, source, codec, job.crypt_mode)
                elif spec.kind == "blob":
                    bytes_read += len(source)
                    writer.add_blob(spec.archive, encode_blob(source, chunk_cipher), job.crypt_mode)
                else:
                    if trees is None:
                        trees = TreeBackup(
                            writer, codec, job.crypt_mode, job.tree_options, fingerprint=lambda: _fingerprint(job)
                        )
                    bytes_read += trees.add(spec.archive, source)
            if trees is not None:
                trees.finish()
            if job.master_key_payload is not None:
                writer.add_blob(
                    ENCRYPTED_KEY_BLOB_NAME, encode_blob(job.master_key_payload, compress=False), job.crypt_mode
                )
            signer = job.cipher if job.crypt_mode in ("encrypt", "sign-only") else None
            manifest = writer.finish(signer)
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise StoreError(f"datastore {store.base} is full; the backup was discarded") from None
        raise
    finally:
        for source in sources:
            if isinstance(source, ImageSource):
                source.close()
    stats = writer.stats
    return BackupResult(
        writer.name, manifest, stats.chunks_new, stats.chunks_reused, stats.bytes_new, bytes_read,
        time.monotonic() - started, trees,
    )


def _fingerprint(job: BackupJob) -> str | None:
    """The fingerprint of the key encrypting or signing the backup (asked for only when needed:
    the key may still be unlocking)."""
    if job.cipher is None or job.crypt_mode == "none":
        return None
    return job.cipher.fingerprint_str()


def _check_specs(specs: list[BackupSpec]) -> None:
    if not specs:
        raise UsageError("nothing to back up: give at least one spec such as disk.img:/dev/sdb")
    archives = [s.archive for s in specs]
    for archive in archives:
        if archives.count(archive) > 1:
            raise UsageError(f"archive name {archive!r} is used twice")
    if sum(1 for s in specs if s.source == "-") > 1:
        raise UsageError("only one spec can read standard input")


def _open_sources(specs: list[BackupSpec]) -> list:
    """Open every source before the snapshot exists, so a bad path costs nothing."""
    opened: list = []
    try:
        for spec in specs:
            if spec.kind == "image":
                opened.append(open_image(spec.source))
            elif spec.kind == "blob":
                opened.append(read_small_file(spec.source))
            else:
                opened.append(check_root(spec.source))
    except BaseException:
        for source in opened:
            if isinstance(source, ImageSource):
                source.close()
        raise
    return opened


def _backup_image(writer: BackupWriter, spec: BackupSpec, source: ImageSource, codec: ChunkCodec, crypt_mode: str) -> int:
    index = writer.fixed_index(spec.archive, IMAGE_CHUNK_SIZE)
    chunks = writer.store.chunks
    with progress_bar(f"backup {spec.name}", source.size) as bar:
        for stored in ordered_map(lambda block: codec.store(chunks, block), source.blocks(IMAGE_CHUNK_SIZE)):
            index.add(stored.digest, stored.size)
            writer.stats.record(stored)
            bar.advance(stored.size)
    writer.close_index(spec.archive, index, crypt_mode)
    return index.size
