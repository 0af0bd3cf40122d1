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
                                   b"\1" + bytes(4 * MIB - 1), os.urandom(4096)])
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
