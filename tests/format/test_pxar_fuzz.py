"""Hostile input: mutated, truncated and forged archives either decode or raise FormatError.

Any other exception, or a hang (caught by an interval timer), fails the test.
"""

import io
import signal
import struct
from contextlib import contextmanager

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cairn.errors import FormatError
from cairn.format.pxar import (
    S_IFBLK,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFREG,
    S_IFSOCK,
    Accessor,
    Acl,
    AclDefault,
    AclUser,
    Decoder,
    Encoder,
    EntryKind,
    Metadata,
)
from cairn.format.pxar import constants as c

TIME_LIMIT = 5.0  # seconds per example; far above what a tiny archive needs


@contextmanager
def time_limit(seconds: float = TIME_LIMIT):
    def expire(signum, frame):
        raise TimeoutError("pxar codec did not finish on a small input (hang?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def seed_archive(split: bool) -> tuple[bytes, bytes]:
    """A small archive with every item kind, nested directories and a hardlink."""
    meta, payload = bytearray(), bytearray()
    md = lambda mode, **kw: Metadata(mode=mode, uid=1, gid=2, mtime_ns=3, **kw)
    enc = Encoder(
        meta.extend,
        md(S_IFDIR | 0o755, acl=Acl(default=AclDefault(7, 5, 5, c.ACL_NO_MASK))),
        payload_write=payload.extend if split else None,
        prelude=b"prelude" if split else None,
    )
    target = enc.add_file(
        b"a", md(S_IFREG | 0o644, xattrs=[(b"user.k", b"v")]), 11, b"hello world"
    )
    enc.add_device(b"blk", md(S_IFBLK | 0o600), 8, 0)
    with enc.directory(
        b"d", md(S_IFDIR | 0o700, acl=Acl(users=[AclUser(5, 7)], group_obj=5))
    ):
        enc.add_file(
            b"f", md(S_IFREG, fcaps=b"\x01\x00\x00\x02", quota_project_id=9), 3, b"xyz"
        )
        enc.add_hardlink(b"h", b"/a", target)
        with enc.directory(b"sub", md(S_IFDIR)):
            enc.add_fifo(b"p", md(S_IFIFO))
    enc.add_socket(b"s", md(S_IFSOCK))
    enc.add_symlink(b"z", md(S_IFLNK | 0o777), b"d/f")
    enc.finish()
    return bytes(meta), bytes(payload)


SEEDS = {False: seed_archive(False), True: seed_archive(True)}
PATHS = [
    b"/",
    b"a",
    b"blk",
    b"d",
    b"d/f",
    b"d/h",
    b"d/sub",
    b"d/sub/p",
    b"s",
    b"z",
    b"nope",
]
INTERESTING = [0, 1, 15, 16, 17, 23, 24, 25, 40, 4097, 2**31, 2**63, 2**64 - 1]


def run_decoder(meta: bytes, payload: bytes | None) -> None:
    dec = Decoder(
        io.BytesIO(meta).read, io.BytesIO(payload).read if payload is not None else None
    )
    for entry in dec:
        _ = entry.path
        if entry.kind is EntryKind.FILE:
            for _chunk in dec.iter_content(5):
                pass


def run_accessor(meta: bytes, payload: bytes | None) -> None:
    acc = Accessor(
        lambda o, n: meta[o : o + n],
        len(meta),
        payload_read_at=(lambda o, n: payload[o : o + n])
        if payload is not None
        else None,
        payload_size=len(payload or b""),
    )
    acc.prelude()
    for path in PATHS:
        entry = acc.lookup(path)
        if entry is not None:
            use_entry(acc, entry)
    pending = [acc.open_root()]
    visited = 0
    while pending:
        directory = pending.pop()
        directory.entry()
        listing = directory.listing()
        for name, stored in listing.files.items():
            assert isinstance(name, bytes) and stored.size >= 0
        for entry in directory.entries():
            listing.lookup(entry.name)
            opened = listing.open_directory(entry.name)
            if opened is not None:
                opened.entry()
                opened.listing()
            visited += 1
            assert visited < 10_000
            if entry.kind is EntryKind.DIRECTORY:
                pending.append(acc.open_directory(entry))
            else:
                use_entry(acc, entry)


def use_entry(acc: Accessor, entry) -> None:
    if entry.kind is EntryKind.HARDLINK:
        entry = acc.follow_hardlink(entry)
    if entry.kind is EntryKind.FILE:
        for _chunk in acc.open_file(entry).chunks(4):
            pass


def survive(meta: bytes, payload: bytes | None) -> None:
    """Both readers must finish or raise FormatError, and nothing else."""
    for run in (run_decoder, run_accessor):
        with time_limit():
            try:
                run(meta, payload)
            except FormatError:
                pass


def mutate(data: bytes, edits, u64_edits, cut) -> bytes:
    buf = bytearray(data)
    for pos, value in edits:
        if buf:
            buf[pos % len(buf)] = value
    for slot, value in u64_edits:
        if len(buf) >= 8:
            at = (slot * 8) % (len(buf) - 7)
            struct.pack_into("<Q", buf, at, value)
    if cut is not None:
        del buf[cut % (len(buf) + 1) :]
    return bytes(buf)


FUZZ = settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
edits = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6)
u64_edits = st.lists(
    st.tuples(
        st.integers(0, 2**12), st.sampled_from(INTERESTING) | st.integers(0, 2**64 - 1)
    ),
    max_size=3,
)
cuts = st.none() | st.integers(0, 2**16)


def test_seed_archives_are_valid():
    for split, (meta, payload) in SEEDS.items():
        run_decoder(meta, payload if split else None)
        run_accessor(meta, payload if split else None)


@FUZZ
@given(st.booleans(), edits, u64_edits, cuts)
def test_mutated_archive(split, byte_edits, field_edits, cut):
    meta, payload = SEEDS[split]
    survive(mutate(meta, byte_edits, field_edits, cut), payload if split else None)


@FUZZ
@given(edits, u64_edits, cuts)
def test_mutated_payload_stream(byte_edits, field_edits, cut):
    meta, payload = SEEDS[True]
    survive(meta, mutate(payload, byte_edits, field_edits, cut))


ITEM_TYPES = sorted(c.ITEM_NAMES) + [0, 2**64 - 1]


@st.composite
def forged_items(draw) -> bytes:
    """Well-framed items of random types and contents: reaches deeper than random bytes."""
    out = b""
    for htype, content in draw(
        st.lists(
            st.tuples(st.sampled_from(ITEM_TYPES), st.binary(max_size=48)), max_size=12
        )
    ):
        out += struct.pack("<QQ", htype, len(content) + 16) + content
    return out


@FUZZ
@given(forged_items(), st.booleans())
def test_forged_item_sequences(data, with_payload):
    survive(data, SEEDS[True][1] if with_payload else None)


@FUZZ
@given(st.binary(max_size=512))
def test_random_bytes(data):
    survive(data, None)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**16), st.binary(min_size=1, max_size=64))
def test_spliced_archive(at, insert):
    """Bytes inserted in the middle shift every later offset."""
    meta = SEEDS[False][0]
    at %= len(meta)
    survive(meta[:at] + insert + meta[at:], None)
