"""The chunk store: ``<store>/.chunks/<first 4 hex digits>/<64 hex digits>``.

Chunks are DataBlobs named by their digest and never change once written. PBS creates all
65536 prefix directories when a store is created, and so do we, so writers never race to
create a directory and a store written here is a valid PBS datastore.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cairn.datastore.fsutil import start_writeback, temp_name
from cairn.errors import StoreError

CHUNK_DIR = ".chunks"
LOCK_FILE = ".lock"
PREFIX_DIRS = 65536
TEMP_MARK = ".tmp_"


@dataclass(frozen=True)
class ChunkFile:
    """One file met while walking the chunk directories."""

    path: Path
    name: str
    size: int
    atime_ns: int


class ChunkStore:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.chunk_dir = base / CHUNK_DIR

    @classmethod
    def create(cls, base: Path) -> ChunkStore:
        store = cls(base)
        chunk_dir = store.chunk_dir
        chunk_dir.mkdir(mode=0o750)
        (base / LOCK_FILE).write_bytes(b"")
        for i in range(PREFIX_DIRS):
            os.mkdir(chunk_dir / f"{i:04x}", 0o750)
        return store

    def path(self, digest: bytes) -> Path:
        name = digest.hex()
        return self.chunk_dir / name[:4] / name

    def exists(self, digest: bytes) -> bool:
        return self.path(digest).is_file()

    def touch(self, digest: bytes) -> bool:
        """Mark a chunk as used now (atime), as GC's mark phase and re-inserts do.

        Returns False if the chunk is missing.
        """
        path = self.path(digest)
        try:
            st = os.stat(path)
            os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
        except FileNotFoundError:
            return False
        return True

    def insert(self, digest: bytes, *parts: bytes | memoryview) -> bool:
        """Store an encoded chunk, given whole or as consecutive parts (header, body);
        True if a new file was written.

        An existing chunk of the same size is kept and only touched; an existing empty or
        otherwise differing file (left by a crash or a bad disk) is replaced.
        """
        path = self.path(digest)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            st = None
        if st is not None and st.st_size == sum(len(part) for part in parts):
            try:
                os.utime(path, ns=(time.time_ns(), st.st_mtime_ns))
                return False
            except FileNotFoundError:
                pass  # garbage collection moved it aside just now: write it again
        tmp = temp_name(path)
        try:
            _write_new(tmp, parts)
            os.rename(tmp, path)
        except FileNotFoundError:
            tmp.unlink(missing_ok=True)
            raise StoreError(f"chunk directory {path.parent} is missing; the store is damaged") from None
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return True

    def read(self, digest: bytes) -> bytes:
        try:
            fd = os.open(self.path(digest), os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            raise StoreError(f"chunk {digest.hex()} is missing from the store") from None
        try:
            size = os.fstat(fd).st_size
            data = os.read(fd, size)
            while len(data) < size:  # a short read: rare, but allowed
                more = os.read(fd, size - len(data))
                if not more:
                    break
                data += more
            return data
        finally:
            os.close(fd)

    def rename_corrupt(self, digest: bytes) -> Path | None:
        """Move a bad chunk aside as ``<digest>.<n>.bad`` (first free n) so it is re-uploaded."""
        path = self.path(digest)
        for counter in range(1000):
            target = path.with_name(f"{path.name}.{counter}.bad")
            if target.exists():
                continue
            try:
                os.rename(path, target)
            except FileNotFoundError:
                return None
            return target
        return None

    def iter_files(self) -> Iterator[ChunkFile]:
        """Every file in the chunk directories (chunks, ``.bad`` copies and temp files)."""
        for i in range(PREFIX_DIRS):
            directory = self.chunk_dir / f"{i:04x}"
            try:
                entries = os.scandir(directory)
            except FileNotFoundError:
                continue
            with entries:
                for entry in entries:
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    yield ChunkFile(Path(entry.path), entry.name, st.st_size, st.st_atime_ns)

    def check_layout(self) -> None:
        if not self.chunk_dir.is_dir():
            raise StoreError(f"{self.base} is not a datastore (no {CHUNK_DIR} directory)")


def is_chunk_name(name: str) -> bool:
    if len(name) != 64:
        return False
    try:
        bytes.fromhex(name)
    except ValueError:
        return False
    return True


def _write_new(path: Path, parts: tuple[bytes | memoryview, ...]) -> None:
    """Create ``path`` (it must not exist) holding ``parts``, and start its writeback."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o666)
    try:
        views = [memoryview(part).cast("B") for part in parts]
        while views:
            written = os.writev(fd, views)
            while views and written >= len(views[0]):
                written -= len(views.pop(0))
            if views:
                views[0] = views[0][written:]
        start_writeback(fd)
    finally:
        os.close(fd)
