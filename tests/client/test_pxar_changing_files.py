"""Files that change size between their stat and their read: padded or cut as PBS does,
reported in one warning each, and the archive stays well-formed (small files are read in
one piece, larger ones block by block; both paths must behave alike)."""

from __future__ import annotations

import io
import os

import pytest

from cairn.client.pxar import create
from cairn.client.pxar.create import Archiver, TreeOptions
from cairn.format.pxar import Decoder, EntryKind

BLOCK = create._READ_BLOCK


def archive(root, monkeypatch, claimed_size: int) -> tuple[dict[bytes, bytes], list[str], create.TreeStats]:
    """Archive ``root`` while fstat of ``victim`` claims ``claimed_size`` before the read."""
    real_fstat = os.fstat
    victim_ino = os.stat(root / "victim").st_ino
    seen: set[int] = set()

    def fstat(fd: int) -> os.stat_result:
        st = real_fstat(fd)
        if st.st_ino != victim_ino or fd in seen:
            return st
        seen.add(fd)  # only the stat taken before reading lies
        return _Resized(st, claimed_size)

    monkeypatch.setattr(create.os, "fstat", fstat)
    out, warnings = io.BytesIO(), []
    archiver = Archiver(str(root), out.write, None, TreeOptions(), warnings.append)
    stats = archiver.run()
    monkeypatch.undo()
    decoder = Decoder(io.BytesIO(out.getvalue()).read)
    files = {}
    for entry in decoder:
        if entry.kind is EntryKind.FILE:
            files[entry.path] = b"".join(decoder.iter_content(1 << 20))
    return files, warnings, stats


class _Resized:
    """A stat result with another size."""

    def __init__(self, st: os.stat_result, size: int) -> None:
        self._st, self.st_size = st, size

    def __getattr__(self, name: str):
        return getattr(self._st, name)


@pytest.mark.parametrize("size", [5000, BLOCK + 5000])
def test_a_file_that_shrank_is_padded_with_zeros(tmp_path, monkeypatch, size):
    data = os.urandom(size)
    (tmp_path / "victim").write_bytes(data)
    (tmp_path / "zz").write_bytes(b"after")
    files, warnings, stats = archive(tmp_path, monkeypatch, size + 3000)
    assert files[b"/victim"] == data + bytes(3000)
    assert files[b"/zz"] == b"after"
    assert len(warnings) == 1 and "victim shrank while being read; padded with zeros" in warnings[0]
    assert stats.changed == 1


@pytest.mark.parametrize("size", [5000, BLOCK + 5000])
def test_a_file_that_grew_is_cut_at_its_old_size(tmp_path, monkeypatch, size):
    data = os.urandom(size)
    (tmp_path / "victim").write_bytes(data)
    files, warnings, stats = archive(tmp_path, monkeypatch, size - 1000)
    assert files[b"/victim"] == data[: size - 1000]
    assert len(warnings) == 1 and "victim changed while being read" in warnings[0]
    assert stats.changed == 1


def test_an_unchanged_tree_reads_every_byte_once(tmp_path):
    (tmp_path / "small").write_bytes(b"s" * 100)
    (tmp_path / "large").write_bytes(os.urandom(BLOCK + 7))
    (tmp_path / "empty").write_bytes(b"")
    out, warnings = io.BytesIO(), []
    stats = Archiver(str(tmp_path), out.write, None, TreeOptions(), warnings.append).run()
    assert not warnings and stats.content_bytes_read == 100 + BLOCK + 7
