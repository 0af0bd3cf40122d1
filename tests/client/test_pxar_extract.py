"""File contents as the Extractor writes them: zero blocks become holes, wherever they are."""

from __future__ import annotations

import os

import pytest
from conftest import MIB

from cairn.client.pxar.extract import Extractor, Problems
from cairn.format.pxar import S_IFREG, Metadata

FILE = Metadata(mode=S_IFREG | 0o600, uid=os.geteuid(), gid=os.getegid(), mtime_ns=1_700_000_000 * 10**9)


@pytest.mark.parametrize(
    "layout",
    [
        [b"data", bytes(3 * MIB)],  # ends in a hole
        [bytes(2 * MIB), b"x" * 100, bytes(MIB)],  # starts and ends in one
        [bytes(MIB + 7)],  # nothing but zeros, not a whole number of blocks
        [b"y" * (MIB + 3), bytes(65536), b"z"],  # a hole between data, pieces not block-aligned
    ],
)
def test_zero_blocks_become_holes_and_the_file_keeps_its_size_and_bytes(tmp_path, layout):
    data = b"".join(layout)
    pieces = [data[i : i + 300_000] for i in range(0, len(data), 300_000)]
    extractor = Extractor(str(tmp_path), False, Problems(pytest.fail))
    extractor.extract_file(b"f", FILE, len(data), pieces, b"/f")
    extractor.finish(None)

    path = tmp_path / "f"
    assert path.read_bytes() == data
    st = os.stat(path)
    data_bytes = sum(len(part) for part in layout if part.strip(b"\0"))
    assert st.st_blocks * 512 <= data_bytes + 2 * 65536
    assert st.st_mtime_ns == FILE.mtime_ns
