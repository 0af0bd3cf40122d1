"""The streaming chunker, PBS's match patterns and the POSIX ACL conversion."""

from __future__ import annotations

import os
import random
import stat

import pytest
from conftest import taken
from hypothesis import given, settings
from hypothesis import strategies as st
from pyfastcdc import FastCDC

from cairn.client.pxar import posix_acl
from cairn.client.pxar.chunker import (
    _FASTCDC_AVERAGE,
    MAX_CHUNK,
    MIN_CHUNK,
    StreamChunker,
)
from cairn.client.pxar.exclude import MatchType, match, parse_pattern, parse_pxarexclude
from cairn.errors import UsageError
from cairn.format.pxar import ACL_NO_MASK, Acl, AclDefault, AclGroup, AclUser

MIB = 1 << 20
DIR, FILE = stat.S_IFDIR | 0o755, stat.S_IFREG | 0o644


# --- chunker ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def data() -> bytes:
    rng = random.Random(3)
    return rng.randbytes(60 * MIB) + bytes(20 * MIB) + rng.randbytes(3 * MIB + 17)


def cut_streaming(data: bytes, piece_sizes, early: bool = False) -> list[bytes]:
    """Feed ``data`` in pieces; with ``early``, also ask for an early cut after each piece
    (what the sink does whenever its workers run out of chunks)."""
    chunker = StreamChunker()
    out, pos = [], 0
    view = memoryview(data)
    for size in piece_sizes:
        if pos >= len(data):
            break
        out += taken(chunker, chunker.feed(view[pos : pos + size]))
        if early:
            out += taken(chunker, chunker.cut_early())
        pos += size
    out += taken(chunker, chunker.feed(view[pos:]))
    out += taken(chunker, chunker.finish())
    return out


def test_streaming_cuts_equal_one_pass_over_the_whole_stream(data):
    one_pass = [bytes(c.data) for c in FastCDC(_FASTCDC_AVERAGE, min_size=MIN_CHUNK, max_size=MAX_CHUNK).cut_buf(data)]
    rng = random.Random(5)
    for pieces in ([1 << 18] * 400, [rng.randrange(1, 9 * MIB) for _ in range(40)], [len(data)]):
        assert cut_streaming(data, pieces) == one_pass
        assert cut_streaming(data, pieces, early=True) == one_pass
    sizes = [len(c) for c in one_pass]
    assert all(MIN_CHUNK <= s <= MAX_CHUNK for s in sizes[:-1])
    random_part = sizes[: len(sizes) // 2]
    assert 3 * MIB <= sum(random_part) / len(random_part) <= 6 * MIB  # PBS's 4 MiB mean


def test_small_streams_make_one_chunk_and_empty_ones_none():
    assert cut_streaming(b"tiny", [2]) == [b"tiny"]
    assert cut_streaming(b"", []) == []


def test_a_long_stream_reuses_a_few_segments(data):
    """Chunks are views into a fixed set of buffers, whatever the stream's length."""
    chunker = StreamChunker()
    buffers = set()
    for _ in range(4):
        for piece in range(0, len(data), 4 * MIB):
            for chunk in chunker.feed(memoryview(data)[piece : piece + 4 * MIB]):
                buffers.add(id(chunk.obj))
                chunker.release(chunk)
    assert len(buffers) <= 3


def test_unreleased_chunks_make_the_chunker_wait(data):
    waits = []
    held = []

    def wait():
        waits.append(len(held))
        chunker.release(held.pop(0))

    chunker = StreamChunker(wait=wait)
    for piece in range(0, len(data), 4 * MIB):
        held += chunker.feed(memoryview(data)[piece : piece + 4 * MIB])
    held += chunker.finish()
    assert waits  # the chunker ran out of free memory and asked for chunks back
    assert b"".join(map(bytes, held)) == data[-sum(len(c) for c in held) :]


# --- match patterns ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "path", "mode", "expected"),
    [
        ("*.o", "/a/b/x.o", FILE, True),
        ("*.o", "/a/b/x.c", FILE, False),
        ("/*.o", "/x.o", FILE, True),
        ("/*.o", "/a/x.o", FILE, False),  # a leading slash anchors at the root
        ("build/*.o", "/src/build/x.o", FILE, True),
        ("build/", "/src/build", DIR, True),
        ("build/", "/src/build", FILE, False),  # a trailing slash means directories only
        ("a/**/z", "/a/z", FILE, True),
        ("a/**/z", "/a/b/c/z", FILE, True),
        ("**/z", "/q/z", FILE, True),
        ("/a/**", "/a/b/c", FILE, True),
        ("x?z", "/x/z", FILE, False),  # ? and * never match a slash
        ("[a-c]at", "/bat", FILE, True),
        ("[^a-c]at", "/bat", FILE, False),
        ("[[:digit:]]x", "/7x", FILE, True),
        ("\\*", "/*", FILE, True),
        ("\\*", "/a", FILE, False),
        ("café", "/dir/café", FILE, True),
    ],
)
def test_pbs_pattern_rules(pattern, path, mode, expected):
    entry = parse_pattern(pattern, MatchType.EXCLUDE)
    assert entry.matches(path.encode(), mode) is expected


def test_last_matching_pattern_decides_and_bang_inverts():
    patterns = [parse_pattern("*.log", MatchType.EXCLUDE), parse_pattern("!keep.log", MatchType.EXCLUDE)]
    assert match(patterns, b"/a/x.log", FILE) is MatchType.EXCLUDE
    assert match(patterns, b"/a/keep.log", FILE) is MatchType.INCLUDE
    assert match(patterns, b"/a/x.txt", FILE) is None


def test_pxarexclude_lines_are_relative_to_their_directory():
    content = b"# comment\n\n  /build  \n*.tmp\n!/build/keep\n!important.tmp\n[bad\n"
    warnings = []
    patterns = parse_pxarexclude(content, b"/src", warnings.append)
    assert match(patterns, b"/src/build", DIR) is MatchType.EXCLUDE
    assert match(patterns, b"/other/build", DIR) is None
    assert match(patterns, b"/src/build/keep", FILE) is MatchType.INCLUDE
    assert match(patterns, b"/src/deep/x.tmp", FILE) is MatchType.EXCLUDE
    assert match(patterns, b"/src/important.tmp", FILE) is MatchType.INCLUDE
    assert len(warnings) == 1 and "unclosed" in warnings[0]


def test_bad_patterns_are_usage_errors():
    for bad in ("", "!", "a\\", "[abc"):
        with pytest.raises(UsageError):
            parse_pattern(bad, MatchType.EXCLUDE)


def test_cli_excludes_are_recorded_as_pxarexclude_lines():
    assert parse_pattern("/tmp/", MatchType.EXCLUDE).as_line() == b"/tmp/"
    assert parse_pattern("!keep", MatchType.EXCLUDE).as_line() == b"!keep"


# --- POSIX ACLs -------------------------------------------------------------------------------


perms = st.integers(0, 7)


@settings(max_examples=200, deadline=None)
@given(
    users=st.dictionaries(st.integers(0, 2**32 - 2), perms, max_size=4),
    groups=st.dictionaries(st.integers(0, 2**32 - 2), perms, max_size=4),
    group_obj=perms,
    mode=st.integers(0, 0o777),
)
def test_access_acl_round_trips_through_the_kernel_layout(users, groups, group_obj, mode):
    acl = Acl(
        users=[AclUser(u, p) for u, p in sorted(users.items())],
        groups=[AclGroup(g, p) for g, p in sorted(groups.items())],
        group_obj=group_obj,
    )
    back = Acl()
    posix_acl.read_access(back, posix_acl.access_blob(acl, mode))
    assert back == acl


def test_default_acl_round_trips_with_and_without_mask():
    for mask in (5, ACL_NO_MASK):
        acl = Acl(default=AclDefault(7, 5, 0, mask), default_users=[AclUser(1000, 6)] if mask != ACL_NO_MASK else [])
        back = Acl()
        posix_acl.read_default(back, posix_acl.default_blob(acl))
        assert back == acl


def test_acl_applies_to_a_real_file(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(b"")
    acl = Acl(users=[AclUser(1001, 6)], groups=[AclGroup(1002, 4)], group_obj=4)
    try:
        os.setxattr(path, posix_acl.ACCESS_XATTR, posix_acl.access_blob(acl, 0o640))
    except OSError as err:
        pytest.skip(f"file system without POSIX ACLs: {err.strerror}")
    back = Acl()
    posix_acl.read_access(back, os.getxattr(path, posix_acl.ACCESS_XATTR))
    assert back == acl
