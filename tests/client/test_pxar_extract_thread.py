"""Extraction on a thread of its own: order, bounded hand-over, failures on either side."""

from __future__ import annotations

import os
import threading

import pytest
from conftest import MIB, assert_one_line_error, run_cairn

from cairn.client.pxar.extract import Extractor, Problems
from cairn.client.pxar.extract_thread import ExtractThread
from cairn.format.index import DynamicIndex
from cairn.format.pxar import S_IFDIR, S_IFREG, Metadata

FILE = Metadata(mode=S_IFREG | 0o644, mtime_ns=1_700_000_000 * 10**9)
DIR = Metadata(mode=S_IFDIR | 0o750, mtime_ns=1_600_000_000 * 10**9)


class Recorder(Extractor):
    """An Extractor that notes each call and what the decoder had produced by then."""

    def __init__(self, target, produced: list[int], fail_on: bytes | None = None) -> None:
        super().__init__(str(target), False, Problems(lambda message: None))
        self.calls: list[tuple] = []
        self.lead: list[int] = []  # pieces produced but not yet written, at each piece written
        self._produced = produced
        self._fail_on = fail_on

    def extract_file(self, name, metadata, size, contents, path) -> None:
        if name == self._fail_on:
            raise OSError(28, "No space left on device")

        def watched():
            for done, piece in enumerate(contents, 1):
                if len(piece) == MIB:
                    self.lead.append(self._produced[0] - done)
                yield piece

        super().extract_file(name, metadata, size, watched(), path)
        self.calls.append(("file", name))

    def enter_directory(self, name, metadata, path, create=True) -> None:
        super().enter_directory(name, metadata, path, create)
        self.calls.append(("enter", name))

    def leave_directory(self) -> None:
        super().leave_directory()
        self.calls.append(("leave",))


def pieces(count: int, size: int, produced: list[int]):
    for i in range(count):
        produced[0] += 1
        yield bytes([i % 251 + 1]) * size


def test_calls_reach_the_extractor_in_order_and_large_contents_stay_bounded(tmp_path):
    produced = [0]
    recorder = Recorder(tmp_path, produced)
    sink = ExtractThread(recorder, max_bytes=4 * MIB)
    sink.enter_directory(b"d", DIR, b"/d")
    sink.extract_file(b"big", FILE, 64 * MIB, pieces(64, MIB, produced), b"/d/big")
    sink.extract_file(b"small", FILE, 3, [b"abc"], b"/d/small")
    sink.leave_directory()
    sink.finish(None)

    assert recorder.calls == [("enter", b"d"), ("file", b"big"), ("file", b"small"), ("leave",)]
    # The decoder is never more than the hand-over's room (plus the piece it holds) ahead.
    assert max(recorder.lead) <= 4 + 1
    data = (tmp_path / "d" / "big").read_bytes()
    assert len(data) == 64 * MIB and data[::MIB] == bytes(i % 251 + 1 for i in range(64))
    assert (tmp_path / "d" / "small").read_bytes() == b"abc"
    # Directory metadata came after its last child.
    assert os.stat(tmp_path / "d").st_mtime_ns == DIR.mtime_ns


def test_a_failure_on_the_worker_reaches_the_caller_and_stops_later_calls(tmp_path):
    recorder = Recorder(tmp_path, [0], fail_on=b"second")
    sink = ExtractThread(recorder)
    with pytest.raises(OSError, match="No space left"):
        sink.extract_file(b"first", FILE, 1, [b"1"], b"/first")
        sink.extract_file(b"second", FILE, 1, [b"2"], b"/second")
        for i in range(10000):
            sink.extract_file(b"f%d" % i, FILE, 1, [b"x"], b"/f%d" % i)
        sink.finish(None)
    sink.abort()
    recorder.close()
    assert sorted(os.listdir(tmp_path)) == sorted(name.decode() for _, name in recorder.calls)
    assert recorder.calls[0] == ("file", b"first") and ("file", b"second") not in recorder.calls


def test_abort_while_a_file_is_half_handed_over_does_not_hang(tmp_path):
    recorder = Recorder(tmp_path, [0])
    sink = ExtractThread(recorder, max_bytes=MIB)

    def failing_contents():
        yield b"x" * MIB
        yield b"y" * MIB
        raise ValueError("chunk 3 is corrupt")

    with pytest.raises(ValueError, match="corrupt"):
        sink.extract_file(b"partial", FILE, 8 * MIB, failing_contents(), b"/partial")
    sink.abort()
    recorder.close()
    assert not [t for t in threading.enumerate() if t.name == "cairn-extract"]
    assert recorder.calls == []  # the file was never finished, so no metadata went onto it


def test_a_corrupt_chunk_inside_a_large_file_ends_the_restore_with_one_line(store_path, tmp_path):
    src = tmp_path / "src"
    (src / "small").mkdir(parents=True)
    for i in range(50):
        (src / "small" / f"f{i}").write_bytes(os.urandom(3000))
    (src / "large.bin").write_bytes(os.urandom(24 * MIB))
    run_cairn("backup", f"root.pxar:{src}", "--repository", str(store_path), "--backup-id", "corrupt-pxar",
              "--backup-time", "1795312800")
    snap = "host/corrupt-pxar/2026-11-22T02:00:00Z"
    index = DynamicIndex((store_path / snap / "root.pxar.didx").read_bytes())
    assert len(index) >= 3
    digest = index.digest(len(index) // 2).hex()
    chunk = store_path / ".chunks" / digest[:4] / digest
    raw = bytearray(chunk.read_bytes())
    raw[100] ^= 1
    chunk.write_bytes(bytes(raw))

    result = run_cairn("restore", snap, "root.pxar", str(tmp_path / "out"), "--repository", str(store_path),
                       check=False)
    assert_one_line_error(result, "CRC")
