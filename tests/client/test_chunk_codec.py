"""ChunkCodec: the shortcuts it takes leave digests and stored chunks exactly as hashing would."""

from __future__ import annotations

import hashlib
import os

import pytest

from conftest import GatedKey

from cairn.client.chunks import ChunkCodec
from cairn.format.blob import zstd_compress
from cairn.format.crypt import CryptConfig

MIB = 1024 * 1024


@pytest.mark.parametrize("encrypted", [False, True])
@pytest.mark.parametrize("block", [bytes(4 * MIB), bytes(12345), b"\0" * (4 * MIB - 1) + b"\1",
                                   b"\1" + bytes(4 * MIB - 1), bytes(2 * MIB) + b"\1" + bytes(2 * MIB),
                                   os.urandom(4096)])
def test_stored_digest_is_the_content_digest(store, encrypted, block):
    cipher = CryptConfig(hashlib.sha256(b"codec test key").digest()) if encrypted else None
    codec = ChunkCodec(cipher)
    expected = cipher.compute_digest(block) if cipher else hashlib.sha256(block).digest()
    for data in (block, memoryview(block)):
        stored = codec.store(store.chunks, data)
        assert stored.digest == expected and stored.size == len(block)
        assert codec.load(store.chunks, stored.digest) == block


def test_zero_blocks_of_changing_sizes(store):
    codec = ChunkCodec()
    for size in (4 * MIB, 100, 4 * MIB, 1):
        assert codec.store(store.chunks, bytes(size)).digest == hashlib.sha256(bytes(size)).digest()


def test_chunks_are_compressed_while_the_key_unlocks_and_stored_as_usual(store, monkeypatch):
    """A worker that gets a chunk before the key is unlocked compresses it first (instead
    of idling until the digest can be made); the chunk it stores is the usual one."""
    import threading

    from cairn.client import chunks as chunks_module

    gated = GatedKey(monkeypatch, hashlib.sha256(b"deferred").digest())
    compressed_before_key = []
    real_compress = chunks_module.zstd_compress

    def watched_compress(data):
        compressed_before_key.append(not gated.gate.is_set())
        return real_compress(data)

    monkeypatch.setattr(chunks_module, "zstd_compress", watched_compress)
    cipher = gated.cipher
    assert not cipher.ready
    data = b"text that compresses well " * 40000
    result = []
    worker = threading.Thread(target=lambda: result.append(ChunkCodec(cipher).store(store.chunks, data)))
    worker.start()
    worker.join(0.5)
    assert worker.is_alive() and compressed_before_key == [True]  # compressed, now waits for the key
    gated.open()
    worker.join(60)
    assert cipher.ready
    ready_codec = ChunkCodec(CryptConfig(gated.key))
    assert result[0].digest == ready_codec.digest(data) and result[0].new_bytes > 0
    assert ready_codec.load(store.chunks, result[0].digest) == data


@pytest.mark.parametrize("block", [bytes(3 * MIB), os.urandom(MIB), b"log line 42\n" * 100000])
def test_prepared_then_finished_is_the_same_chunk(store, block):
    """prepare (no key needed) + finish stores what store does: same digest, same data."""
    cipher = CryptConfig(hashlib.sha256(b"prepare test key").digest())
    codec = ChunkCodec(cipher)
    prepared = codec.prepare(block)
    assert prepared.zero == (not any(block))
    assert (prepared.packed is None) == (len(zstd_compress(block)) >= len(block))
    stored = codec.finish(store.chunks, block, prepared)
    assert stored.digest == cipher.compute_digest(block) and stored.size == len(block)
    assert codec.load(store.chunks, stored.digest) == block
    assert codec.store(store.chunks, block) == type(stored)(stored.digest, len(block), 0)

