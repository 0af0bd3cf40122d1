"""Turning plain chunk data into stored chunks, and back.

Runs inside the worker threads of the pipeline: digesting, compressing, encrypting and
writing are all done by C code that releases the GIL.
"""

from __future__ import annotations

import hashlib
import mmap
import threading
from dataclasses import dataclass

from cairn.datastore.chunk_store import ChunkStore
from cairn.format.blob import Cipher, decode_blob, encode_blob_parts, zstd_compress


# Chunks up to this size are encrypted into a per-thread buffer. Larger ones are rare (and
# mostly runs of zeros that compress to little); a buffer sized for them would stay resident.
_SCRATCH_SIZE = 8 << 20


@dataclass(frozen=True, slots=True)
class PreparedChunk:
    """A chunk hashed and compressed before its key was unlocked (see ``ChunkCodec.prepare``)."""

    zero: bool  # all zeros: the digest is the cached one of that many zeros
    hasher: hashlib._Hash | None  # SHA-256 fed with the data; the digest appends the id key
    packed: bytes | None  # the compressed data, None where compression does not shrink it


@dataclass(frozen=True)
class StoredChunk:
    digest: bytes
    size: int
    new_bytes: int  # encoded bytes written, 0 when the chunk was already there


class ChunkCodec:
    """Digest and blob encoding of chunks under one key (or none)."""

    def __init__(self, cipher: Cipher | None = None) -> None:
        self.cipher = cipher
        self._zero_digests: dict[int, bytes] = {}
        self._zero_block = b""  # zeros, as many as in the largest all-zero chunk seen
        self._local = threading.local()  # each worker thread's ciphertext buffer

    def digest(self, data: bytes | memoryview) -> bytes:
        if self.cipher is not None:
            return self.cipher.compute_digest(data)
        return hashlib.sha256(data).digest()

    def zero_digest(self, size: int) -> bytes:
        """Digest of ``size`` zero bytes: restore writes a hole instead of reading such chunks."""
        digest = self._zero_digests.get(size)
        if digest is None:
            digest = self._zero_digests[size] = self.digest(bytes(size))
        return digest

    def _zero_block_digest(self, data: bytes | memoryview) -> bytes | None:
        """The digest of an all-zero block, found by comparing instead of hashing."""
        return self.zero_digest(len(data)) if self._is_zero_block(data) else None

    def _is_zero_block(self, data: bytes | memoryview) -> bool:
        """True if ``data`` is all zeros.

        Disk images are often half zeros; comparing 4 MiB with zeros (memcmp) is about 40
        times faster than hashing it. ``bytes.startswith`` compares a memoryview with
        memcmp too (``==`` would go element by element), against one zero block as large
        as the largest zero chunk seen.
        """
        if not len(data) or data[0] or data[-1]:
            return False
        zero = self._zero_block
        if len(zero) < len(data):
            zero = self._zero_block = bytes(len(data))
        return zero.startswith(data)

    @property
    def key_ready(self) -> bool:
        """False while the key is still being unlocked on its thread (digests would wait)."""
        return getattr(self.cipher, "ready", True)

    def store(self, chunks: ChunkStore, data: bytes | memoryview) -> StoredChunk:
        """Store ``data`` unless a chunk with its digest exists (then only mark it used).

        While the key is still being unlocked the digest has to wait, so the chunk is
        prepared (hashed and compressed) first: otherwise the worker would sit idle.
        """
        if not self.key_ready:
            return self.finish(chunks, data, self.prepare(data))
        digest = self._zero_block_digest(data) or self.digest(data)
        return self._write(chunks, data, digest, None)

    def prepare(self, data: bytes | memoryview) -> PreparedChunk:
        """The part of :meth:`store` that needs no key: hashing the data and compressing it.

        Pipelines run this on the first chunks of a backup while the key is being unlocked
        (a fraction of a second of scrypt on one core), so the other core is not left idle;
        :meth:`finish` does the rest. Should the chunk turn out to be stored already, the
        compression was wasted, which the first chunks of a backup can afford.
        """
        zero = self._is_zero_block(data)
        hasher = None if zero or self.cipher is None else hashlib.sha256(data)
        packed = zstd_compress(data)
        return PreparedChunk(zero, hasher, packed if len(packed) < len(data) else None)

    def finish(self, chunks: ChunkStore, data: bytes | memoryview, prepared: PreparedChunk) -> StoredChunk:
        """Complete :meth:`prepare`: the digest (waiting for the key), then the blob."""
        if prepared.zero:
            digest = self.zero_digest(len(data))
        elif prepared.hasher is None:
            digest = self.digest(data)
        else:
            assert self.cipher is not None
            digest = self.cipher.digest_after(prepared.hasher)
        return self._write(chunks, data, digest, prepared.packed, compress=prepared.packed is not None)

    def _write(
        self, chunks: ChunkStore, data: bytes | memoryview, digest: bytes, packed: bytes | None, compress: bool = True
    ) -> StoredChunk:
        """Store the chunk under ``digest`` unless it exists (``packed``, ``compress``: as
        ``encode_blob_parts`` takes them)."""
        if chunks.touch(digest):
            return StoredChunk(digest, len(data), 0)
        scratch = self._scratch() if len(data) <= _SCRATCH_SIZE else None
        header, body = encode_blob_parts(data, self.cipher, compress, scratch=scratch, packed=packed)
        written = len(header) + len(body) if chunks.insert(digest, header, body) else 0
        return StoredChunk(digest, len(data), written)

    def _scratch(self) -> mmap.mmap | None:
        """This thread's buffer for ciphertexts, reused for every chunk it encrypts.

        A fresh buffer of each chunk's size for every chunk fragments the heap: peak RSS grew
        with the size of the backup.
        """
        if self.cipher is None:
            return None
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = self._local.scratch = mmap.mmap(-1, _SCRATCH_SIZE + 64)
        return scratch

    def load(self, chunks: ChunkStore, digest: bytes) -> bytes:
        """Read, check (CRC and digest) and decode one chunk."""
        return decode_blob(chunks.read(digest), self.cipher, digest)
