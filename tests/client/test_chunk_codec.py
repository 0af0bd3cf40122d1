"""ChunkCodec: the shortcuts it takes leave digests and stored chunks exactly as hashing would."""

from __future__ import annotations

import hashlib
import os

import pytest

from cairn.client.chunks import ChunkCodec
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
    import dataclasses
    import threading

    from cairn.client import chunks as chunks_module
    from cairn.client.keys import DeferredCipher, KeySource
    from cairn.format.keyfile import Pbkdf2Params, create_key_config

    key = hashlib.sha256(b"deferred").digest()
    gate, compressed_before_key = threading.Event(), []

    @dataclasses.dataclass(frozen=True)
    class GatedKdf:
        inner: Pbkdf2Params

        def derive(self, passphrase: bytes) -> bytes:
            assert gate.wait(60)
            return self.inner.derive(passphrase)

    real_compress = chunks_module.zstd_compress

    def watched_compress(data):
        compressed_before_key.append(not gate.is_set())
        return real_compress(data)

    monkeypatch.setattr(chunks_module, "zstd_compress", watched_compress)
    monkeypatch.setenv("CAIRN_ENCRYPTION_PASSWORD", "deferred-pw")
    config = create_key_config(key, b"deferred-pw", Pbkdf2Params(salt=b"s" * 32, iterations=1000))
    source = KeySource(dataclasses.replace(config, kdf=GatedKdf(config.kdf)), "test")
    source.unlock_in_background()
    cipher = DeferredCipher(source)
    assert not cipher.ready
    data = b"text that compresses well " * 40000
    result = []
    worker = threading.Thread(target=lambda: result.append(ChunkCodec(cipher).store(store.chunks, data)))
    worker.start()
    worker.join(0.5)
    assert worker.is_alive() and compressed_before_key == [True]  # compressed, now waits for the key
    gate.set()
    worker.join(60)
    assert cipher.ready
    ready_codec = ChunkCodec(CryptConfig(key))
    assert result[0].digest == ready_codec.digest(data) and result[0].new_bytes > 0
    assert ready_codec.load(store.chunks, result[0].digest) == data
