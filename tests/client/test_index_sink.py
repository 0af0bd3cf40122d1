"""The threaded chunking sink: same index as one pass, bounded memory, failures surface."""

from __future__ import annotations

import random
import threading
import time

import pytest
from conftest import GatedKey, taken
from pyfastcdc import FastCDC

from cairn.client.chunks import ChunkCodec
from cairn.client.pxar import index_sink
from cairn.client.pxar.chunker import _FASTCDC_AVERAGE, MAX_CHUNK, MIN_CHUNK, StreamChunker
from cairn.client.pxar.index_sink import IndexSink
from cairn.client.pxar.reuse import ReusedChunk
from cairn.datastore.names import GroupName, Namespace
from cairn.datastore.writer import BackupWriter
from cairn.errors import CryptError, IntegrityError, StoreError
from cairn.format.crypt import CryptConfig
from cairn.format.index import DynamicIndex

MIB = 1 << 20
T0 = 1795312800


@pytest.fixture(scope="module")
def data() -> bytes:
    rng = random.Random(11)
    return rng.randbytes(40 * MIB) + bytes(18 * MIB) + rng.randbytes(5 * MIB + 3)


def index_chunks(store, writer: BackupWriter, archive: str, codec: ChunkCodec | None = None) -> list[bytes]:
    index = DynamicIndex((writer.path / archive).read_bytes())
    codec = codec or ChunkCodec()
    return [codec.load(store.chunks, index.digest(i)) for i in range(len(index))]


def test_index_matches_one_pass_whatever_the_write_sizes(store, data):
    """Pieces of any size, bytearrays the caller overwrites afterwards: same cuts, same bytes."""
    rng = random.Random(2)
    with BackupWriter(store, Namespace(), GroupName("host", "a"), T0) as writer:
        sink = IndexSink(writer, "root.pxar.didx", ChunkCodec())
        pos = 0
        while pos < len(data):
            size = rng.choice([1, 700, 64 * 1024, 3 * MIB, 9 * MIB])
            piece = bytearray(data[pos : pos + size])
            sink.write(piece)
            piece[:] = bytes(len(piece))  # a reused buffer must not change what was written
            pos += size
        assert sink.close("none") == len(data)
        chunks = index_chunks(store, writer, "root.pxar.didx")
        writer.finish()
    one_pass = [bytes(c.data) for c in FastCDC(_FASTCDC_AVERAGE, min_size=MIN_CHUNK, max_size=MAX_CHUNK).cut_buf(data)]
    assert chunks == one_pass


def test_suggested_boundaries_cut_as_the_plain_chunker_does(store, data):
    hints = [5 * MIB + 1, 5 * MIB + 2, 12 * MIB, 30 * MIB + 77, 59 * MIB]
    reference = StreamChunker()
    expected = []
    with BackupWriter(store, Namespace(), GroupName("host", "b"), T0) as writer:
        sink = IndexSink(writer, "root.ppxar.didx", ChunkCodec())
        pos = 0
        for hint in hints + [len(data)]:
            reference.suggest(hint)
            sink.suggest_boundary(hint)
            expected += taken(reference, reference.feed(data[pos:hint]))
            sink.write(data[pos:hint])
            pos = hint
        expected += taken(reference, reference.finish())
        sink.close("none")
        assert index_chunks(store, writer, "root.ppxar.didx") == expected
        writer.finish()
    ends, total = set(), 0
    for chunk in expected:
        total += len(chunk)
        ends.add(total)
    assert ends & set(hints)  # the hints did cut


def test_injected_chunks_follow_the_bytes_before_them(store, data):
    codec = ChunkCodec()
    old = data[: 2 * MIB]
    stored = codec.store(store.chunks, old)
    with BackupWriter(store, Namespace(), GroupName("host", "c"), T0) as writer:
        sink = IndexSink(writer, "root.ppxar.didx", codec)
        sink.write(b"head")
        sink.inject([ReusedChunk(stored.digest, stored.size, 0)])
        sink.write(b"tail")
        assert sink.close("none") == 8 + len(old)
        assert index_chunks(store, writer, "root.ppxar.didx") == [b"head", old, b"tail"]
        writer.finish()


def test_a_missing_reused_chunk_fails_the_archive(store):
    with pytest.raises(IntegrityError, match="missing"):
        with BackupWriter(store, Namespace(), GroupName("host", "d"), T0) as writer:
            sink = IndexSink(writer, "root.ppxar.didx", ChunkCodec())
            sink.write(b"x" * 1000)
            sink.inject([ReusedChunk(bytes(32), 4096, 0)])
            sink.close("none")
    assert not (store.base / "host" / "d").exists()


def test_a_worker_failure_reaches_the_caller_and_stops_every_thread(store, data):
    """A store that cannot take chunks (here: its chunk directories are gone) fails the
    caller with the store's one-line error, and no thread is left running."""
    before = set(threading.enumerate())
    (store.chunks.chunk_dir).rename(store.base / "moved")
    try:
        with pytest.raises(StoreError, match="chunk directory"):
            with BackupWriter(store, Namespace(), GroupName("host", "e"), T0) as writer:
                sink = IndexSink(writer, "root.pxar.didx", ChunkCodec())
                try:
                    for start in range(0, len(data), MIB):
                        sink.write(data[start : start + MIB])
                    sink.close("none")
                except BaseException:
                    sink.abort()
                    raise
    finally:
        (store.base / "moved").rename(store.chunks.chunk_dir)
    assert set(threading.enumerate()) <= before


class _StuckCodec(ChunkCodec):
    """Stores nothing until released: the pipeline's bounds are all that limit the caller."""

    def __init__(self) -> None:
        super().__init__()
        self.release = threading.Event()

    def store(self, chunks, data):
        self.release.wait()
        return super().store(chunks, data)


def test_the_caller_cannot_run_ahead_of_stuck_workers(store):
    """Memory stays flat: with the workers stuck, write() blocks after a bounded amount."""
    codec = _StuckCodec()
    piece = random.Random(4).randbytes(MIB)
    accepted = 0

    def produce(sink: IndexSink) -> None:
        nonlocal accepted
        for _ in range(400):
            sink.write(piece)
            accepted += len(piece)

    with BackupWriter(store, Namespace(), GroupName("host", "f"), T0) as writer:
        sink = IndexSink(writer, "root.pxar.didx", codec, workers=2)
        producer = threading.Thread(target=produce, args=(sink,))
        producer.start()
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 1.0:  # wait until the producer is blocked
            if accepted != last:
                last, stable_since = accepted, time.monotonic()
            time.sleep(0.05)
        bound = (
            index_sink._BATCH_BYTES * (index_sink._QUEUED_BATCHES + 2)
            + 2 * index_sink._INFLIGHT_PER_WORKER
            + 2 * (16 * MIB)  # the cutter's buffer and the chunk it holds back
        )
        assert accepted < bound
        assert producer.is_alive()
        codec.release.set()
        producer.join()
        assert sink.close("none") == 400 * MIB
        writer.finish()


class _CountingCodec(ChunkCodec):
    """Counts the chunks prepared (hashed and compressed without the key) and stored."""

    def __init__(self, cipher) -> None:
        super().__init__(cipher)
        self.prepared: list[int] = []
        self.written = 0

    def prepare(self, data):
        result = super().prepare(data)
        self.prepared.append(len(data))
        return result

    def _write(self, *args, **kwargs):
        self.written += 1
        return super()._write(*args, **kwargs)


def _write_all(sink: IndexSink, data: bytes, progress: list[int], errors: list[BaseException]) -> None:
    try:
        for start in range(0, len(data), MIB):
            sink.write(data[start : start + MIB])
            progress[0] = start + MIB
    except BaseException as error:  # the caller's thread gets the pipeline's failure
        errors.append(error)


def _wait_until_blocked(progress: list[int]) -> None:
    last, stable_since = -1, time.monotonic()
    while time.monotonic() - stable_since < 1.0:
        if progress[0] != last:
            last, stable_since = progress[0], time.monotonic()
        time.sleep(0.05)


def test_chunks_are_prepared_while_the_key_unlocks(store, data, monkeypatch):
    """While the key is still being unlocked the workers hash and compress chunk after chunk
    (bounded) instead of stalling on the first digest; once it is unlocked the chunks are
    stored as they would have been, in order."""
    data = data * 3  # more than the pipeline holds
    gated = GatedKey(monkeypatch, bytes(range(32)))
    codec = _CountingCodec(gated.cipher)
    progress, errors = [0], []
    with BackupWriter(store, Namespace(), GroupName("host", "g"), T0) as writer:
        sink = IndexSink(writer, "root.pxar.didx", codec, workers=2)
        producer = threading.Thread(target=_write_all, args=(sink, data, progress, errors))
        producer.start()
        _wait_until_blocked(progress)
        assert producer.is_alive() and codec.written == 0
        assert len(codec.prepared) > 2  # more chunks than workers: nobody waited for the key
        assert sum(codec.prepared) <= index_sink._UNLOCK_INFLIGHT + MAX_CHUNK
        gated.open()
        producer.join()
        assert not errors
        assert sink.close("encrypt") == len(data)
        ready = ChunkCodec(CryptConfig(gated.key))
        chunks = index_chunks(store, writer, "root.pxar.didx", ready)
        index = DynamicIndex((writer.path / "root.pxar.didx").read_bytes())
        writer.finish()
    one_pass = [bytes(c.data) for c in FastCDC(_FASTCDC_AVERAGE, min_size=MIN_CHUNK, max_size=MAX_CHUNK).cut_buf(data)]
    assert chunks == one_pass
    assert [index.digest(i) for i in range(len(index))] == [ready.digest(c) for c in one_pass]


def test_a_key_that_fails_to_unlock_fails_the_archive(store, data, monkeypatch):
    """A wrong passphrase found after chunks were prepared fails the archive with the key's
    error; no chunk was written and no thread is left."""
    before = set(threading.enumerate())
    data = data * 3
    gated = GatedKey(monkeypatch, bytes(range(32)))
    codec = _CountingCodec(gated.cipher)
    progress, errors = [0], []
    with pytest.raises(CryptError, match="wrong passphrase"):
        with BackupWriter(store, Namespace(), GroupName("host", "h"), T0) as writer:
            sink = IndexSink(writer, "root.pxar.didx", codec, workers=2)
            producer = threading.Thread(target=_write_all, args=(sink, data, progress, errors))
            producer.start()
            _wait_until_blocked(progress)
            assert len(codec.prepared) > 2
            gated.open(fail=True)
            producer.join()
            try:
                if errors:
                    raise errors[0]
                sink.close("encrypt")
            except BaseException:
                sink.abort()
                raise
    assert codec.written == 0
    assert not (store.base / "host" / "h").exists()
    gated.source._unlocking.join()
    assert set(threading.enumerate()) <= before
