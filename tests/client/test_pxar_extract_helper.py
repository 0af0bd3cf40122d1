"""An Extractor with a helper thread: same results as without one, and no fd left behind."""

from __future__ import annotations

import os
import stat

import pytest

from cairn.client.pxar.extract import Extractor, Problems
from cairn.errors import UsageError
from cairn.format.pxar import S_IFDIR, S_IFREG, Metadata

T = 1_700_000_000 * 10**9


def file_md(i: int) -> Metadata:
    return Metadata(mode=S_IFREG | 0o640, uid=1000 + i % 3, gid=2000, mtime_ns=T + i)


def dir_md(i: int, mode: int = 0o750) -> Metadata:
    return Metadata(mode=S_IFDIR | mode, uid=1000, gid=2000 + i % 2, mtime_ns=T - 10**9 * i)


def open_fds() -> set[str]:
    return set(os.listdir("/proc/self/fd"))


def build(extractor: Extractor, dirs: int = 12, files: int = 30) -> None:
    """Nested directories (every other one read-only) full of small files, one hardlink each."""
    for d in range(dirs):
        read_only = d % 2 == 1
        extractor.enter_directory(b"d%d" % d, dir_md(d, 0o555 if read_only else 0o750), b"/d%d" % d)
        extractor.enter_directory(b"sub", dir_md(100 + d), b"/d%d/sub" % d)
        for f in range(files):
            data = b"%d/%d " % (d, f) * (f + 1)
            extractor.extract_whole_file(b"f%d" % f, file_md(f), len(data), data, b"/d%d/sub/f%d" % (d, f))
        extractor.leave_directory()
        extractor.extract_hardlink(b"link", b"/d%d/sub/f3" % d, b"/d%d/link" % d)
        extractor.leave_directory()
    extractor.finish(dir_md(99, 0o711))


def tree(root) -> dict:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            data = open(path, "rb").read() if stat.S_ISREG(st.st_mode) else None
            found[os.path.relpath(path, root)] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, st.st_nlink, data)
    st = os.stat(root)
    found["."] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns)
    return found


@pytest.mark.skipif(os.geteuid() != 0, reason="sets owners and fills read-only directories as root does")
def test_a_helper_thread_gives_the_same_tree_as_one_thread(tmp_path):
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    before = open_fds()
    build(Extractor(str(tmp_path / "one"), False, Problems(pytest.fail)))
    helped = Extractor(str(tmp_path / "two"), False, Problems(pytest.fail), helper=True)
    build(helped)
    assert open_fds() == before

    one, two = tree(tmp_path / "one"), tree(tmp_path / "two")
    assert one == two
    assert len(one) == 1 + 12 * (2 + 30 + 1) and helped.files == 12 * 30
    # Directories got their metadata after their last child, wherever it was made.
    assert one["d3/sub"][3] == dir_md(103).mtime_ns and one["d3"][3] == dir_md(3).mtime_ns
    assert stat.S_IMODE(one["d3"][0]) == 0o555 and one["d3/link"][4] == 2


def test_a_file_the_helper_fails_on_is_reported_and_every_fd_is_released(tmp_path):
    before = open_fds()
    extractor = Extractor(str(tmp_path), False, Problems(pytest.fail), helper=True)
    with pytest.raises(UsageError, match="archive gave 3 bytes for a 5-byte file"):
        for d in range(1000):
            extractor.enter_directory(b"d%d" % d, dir_md(d), b"/d%d" % d)
            size = 5 if d == 1 else 3  # d1 is the first directory the helper fills
            extractor.extract_whole_file(b"f", file_md(0), size, b"abc", b"/d%d/f" % d)
            extractor.leave_directory()
        extractor.finish(None)
    extractor.close()
    assert open_fds() == before
    assert (tmp_path / "d0" / "f").read_bytes() == b"abc"
