"""Specific malformations and API misuse, each with the one clear error it must produce."""

import io
import struct

import pytest

from cairn.errors import FormatError, UsageError
from cairn.format.pxar import (
    S_IFCHR,
    S_IFDIR,
    S_IFIFO,
    S_IFLNK,
    S_IFREG,
    Accessor,
    Decoder,
    Encoder,
    Metadata,
)
from cairn.format.pxar import constants as c
from cairn.format.pxar.items import encode_metadata

DIR = Metadata(mode=S_IFDIR | 0o755)
REG = Metadata(mode=S_IFREG | 0o644)


def hdr(htype: int, content_len: int) -> bytes:
    return struct.pack("<QQ", htype, content_len + 16)


def entry(mode: int) -> bytes:
    return hdr(c.PXAR_ENTRY, 40) + struct.pack("<QQIIqII", mode, 0, 0, 0, 0, 0, 0)


def empty_goodbye(goodbye_at: int, dir_start: int) -> bytes:
    return hdr(c.PXAR_GOODBYE, 24) + struct.pack(
        "<QQQ", c.PXAR_GOODBYE_TAIL_MARKER, goodbye_at - dir_start, 40
    )


def decode(data: bytes, payload: bytes | None = None) -> list:
    dec = Decoder(
        io.BytesIO(data).read, io.BytesIO(payload).read if payload is not None else None
    )
    out = []
    for e in dec:
        out.append(e)
        if e.size:
            b"".join(dec.iter_content())
    return out


def access(data: bytes) -> Accessor:
    return Accessor(lambda o, n: data[o : o + n], len(data))


def archive_with(items: bytes) -> bytes:
    """Root directory whose single child is ``items`` (starting with its FILENAME)."""
    root = entry(S_IFDIR | 0o755)
    child_at = len(root)
    body = root + items
    from cairn.format.pxar.goodbye import hash_filename

    name = items[16:].split(b"\0", 1)[0]
    full = 16 + 48
    table = hdr(c.PXAR_GOODBYE, 48)
    table += struct.pack("<QQQ", hash_filename(name), len(body) - child_at, len(items))
    table += struct.pack("<QQQ", c.PXAR_GOODBYE_TAIL_MARKER, len(body), full)
    return body + table


def filename(name: bytes) -> bytes:
    return hdr(c.PXAR_FILENAME, len(name) + 1) + name + b"\0"


def test_minimal_valid_archive():
    data = entry(S_IFDIR) + empty_goodbye(56, 0)
    assert [e.path for e in decode(data)] == [b"/"]
    assert len(access(data).open_root()) == 0


def test_header_smaller_than_itself():
    data = struct.pack("<QQ", c.PXAR_ENTRY, 15) + bytes(60)
    with pytest.raises(FormatError, match="smaller than the item header"):
        decode(data)


def test_filename_size_beyond_limit_is_rejected_before_reading():
    data = archive_with(hdr(c.PXAR_FILENAME, 1 << 40) + b"x\0")
    with pytest.raises(
        FormatError,
        match="FILENAME item at offset 56: content size 1099511627776 exceeds",
    ):
        decode(data)


def test_xattr_at_limit_ok_and_beyond_rejected():
    big = (b"user.big", b"v" * (c.MAX_XATTR_LEN - len(b"user.big") - 1))
    out = bytearray()
    enc = Encoder(out.extend, Metadata(mode=S_IFDIR, xattrs=[big]))
    enc.finish()
    assert decode(bytes(out))[0].metadata.xattrs == [big]
    with pytest.raises(FormatError, match="exceeds the limit"):
        Encoder(out.extend, Metadata(mode=S_IFDIR, xattrs=[(big[0], big[1] + b"!")]))


def test_payload_larger_than_stream():
    data = archive_with(
        filename(b"f") + entry(S_IFREG) + hdr(c.PXAR_PAYLOAD, 1 << 50) + b"abc"
    )
    with pytest.raises(FormatError, match="archive ends at offset"):
        decode(data)
    # The accessor knows the range and refuses before reading anything.
    acc = access(data)
    with pytest.raises(FormatError, match="runs past the end of its range"):
        acc.lookup(b"f")


def test_goodbye_claiming_huge_size_in_stream():
    data = entry(S_IFDIR) + hdr(c.PXAR_GOODBYE, (1 << 60) - 8) + bytes(100)
    with pytest.raises(FormatError):
        decode(data)


def test_trailing_garbage():
    data = entry(S_IFDIR) + empty_goodbye(56, 0)
    with pytest.raises(FormatError, match="after the end of the archive"):
        decode(data + b"\0")


@pytest.mark.parametrize("name", [b".", b"..", b"a/b", b""])
def test_illegal_names_in_archive(name):
    data = archive_with(
        hdr(c.PXAR_FILENAME, len(name) + 1) + name + b"\0" + entry(S_IFIFO)
    )
    with pytest.raises(FormatError, match="FILENAME"):
        decode(data)


def test_filename_without_nul():
    data = archive_with(hdr(c.PXAR_FILENAME, 1) + b"a" + entry(S_IFIFO))
    with pytest.raises(FormatError, match="not NUL-terminated"):
        decode(data)


def test_duplicate_single_valued_attribute():
    fcaps = hdr(c.PXAR_FCAPS, 1) + b"x"
    data = archive_with(filename(b"p") + entry(S_IFIFO) + fcaps + fcaps)
    with pytest.raises(FormatError, match="FCAPS item .* appears twice"):
        decode(data)


def test_wrong_fixed_item_size():
    data = archive_with(
        filename(b"d") + entry(S_IFCHR) + hdr(c.PXAR_DEVICE, 8) + bytes(8)
    )
    with pytest.raises(FormatError, match="DEVICE item .* content size 8, expected 16"):
        decode(data)


def test_payload_ref_in_version_1_archive():
    data = archive_with(
        filename(b"f") + entry(S_IFREG) + hdr(c.PXAR_PAYLOAD_REF, 16) + bytes(16)
    )
    with pytest.raises(FormatError, match="format version 1"):
        decode(data)


def test_hardlink_pointing_before_archive():
    link = (
        filename(b"h")
        + hdr(c.PXAR_HARDLINK, 8 + 3)
        + struct.pack("<Q", 10_000)
        + b"/a\0"
    )
    data = archive_with(link)
    with pytest.raises(FormatError, match="HARDLINK .* outside"):
        decode(data)
    with pytest.raises(FormatError, match="HARDLINK .* outside"):
        access(data).lookup(b"h")


def test_goodbye_count_mismatch():
    data = archive_with(filename(b"p") + entry(S_IFIFO))
    body = data[
        :-64
    ]  # a goodbye table with the tail only: the child's record is missing
    data = (
        body
        + hdr(c.PXAR_GOODBYE, 24)
        + struct.pack("<QQQ", c.PXAR_GOODBYE_TAIL_MARKER, len(body), 40)
    )
    with pytest.raises(FormatError, match="0 records for 1 entries"):
        decode(data)


def test_goodbye_tail_wrong():
    data = bytearray(entry(S_IFDIR) + empty_goodbye(56, 0))
    struct.pack_into("<Q", data, len(data) - 16, 55)  # tail offset off by one
    with pytest.raises(FormatError, match="tail record does not match"):
        decode(bytes(data))
    with pytest.raises(FormatError, match="does not fit its directory"):
        access(bytes(data)).open_root()


def test_accessor_rejects_missing_tail_and_tiny_input():
    with pytest.raises(FormatError, match="too few"):
        access(b"\0" * 20)
    data = entry(S_IFDIR) + hdr(c.PXAR_GOODBYE, 24) + bytes(24)
    with pytest.raises(FormatError, match="no goodbye tail marker"):
        access(data).open_root()


def test_accessor_short_read_is_a_format_error():
    data = entry(S_IFDIR) + empty_goodbye(56, 0)
    acc = Accessor(
        lambda o, n: data[o : o + n], len(data) + 100
    )  # claims more than exists
    with pytest.raises(FormatError, match="truncated"):
        acc.open_root()


def test_split_archive_needs_payload_stream_for_contents():
    meta, payload = bytearray(), bytearray()
    enc = Encoder(meta.extend, DIR, payload_write=payload.extend)
    enc.add_file(b"f", REG, 3, b"abc")
    enc.finish()
    dec = Decoder(io.BytesIO(bytes(meta)).read)
    next(dec)
    assert next(dec).payload_offset == 16
    with pytest.raises(FormatError, match="payload stream"):
        dec.read_content()
    bad_payload = bytes(payload).replace(b"abc", b"ab")  # PAYLOAD header now lies
    with pytest.raises(FormatError):
        decode(bytes(meta), bad_payload[:20])
    with pytest.raises(FormatError, match="start marker"):
        decode(bytes(meta), b"\0" * 64)


def test_backward_payload_reference_in_stream_decoder():
    meta, payload = bytearray(), bytearray()
    enc = Encoder(meta.extend, DIR, payload_write=payload.extend)
    enc.add_file(b"a", REG, 3, b"abc")
    enc.add_payload_ref(b"b", REG, 3, enc.payload_position)
    enc.finish()
    # Point b's reference back at a's payload: a sequential reader cannot go back.
    fixed = bytes(meta).replace(
        struct.pack("<QQ", 16 + 19, 3), struct.pack("<QQ", 16, 3)
    )
    assert fixed != bytes(meta)
    with pytest.raises(FormatError, match="references must increase"):
        decode(fixed, bytes(payload))


# --- encoder misuse --------------------------------------------------------------------------


def new_encoder(**kwargs) -> Encoder:
    return Encoder(bytearray().extend, DIR, **kwargs)


@pytest.mark.parametrize("name", [b"", b".", b"..", b"a/b", b"a\0b", b"x" * 4097])
def test_encoder_rejects_bad_names(name):
    enc = new_encoder()
    with pytest.raises(FormatError):
        enc.add_fifo(name, Metadata(mode=S_IFIFO))
    enc.add_fifo(b"ok", Metadata(mode=S_IFIFO))  # still usable: nothing was written
    enc.finish()


def test_encoder_accepts_longest_name():
    out = bytearray()
    enc = Encoder(out.extend, DIR)
    enc.add_fifo(b"x" * 4096, Metadata(mode=S_IFIFO))
    enc.finish()
    assert access(bytes(out)).lookup(b"x" * 4096).name == b"x" * 4096


def test_encoder_requires_sorted_unique_names():
    enc = new_encoder()
    enc.add_fifo(b"b", Metadata(mode=S_IFIFO))
    for name in (b"a", b"b"):
        with pytest.raises(FormatError, match="strictly increasing"):
            enc.add_fifo(name, Metadata(mode=S_IFIFO))
    enc.create_directory(b"c", DIR)
    enc.add_fifo(b"a", Metadata(mode=S_IFIFO))  # order is per directory
    enc.finish_directory()


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.add_file(b"f", DIR, 0, b""),
        lambda e: e.add_symlink(b"f", REG, b"t"),
        lambda e: e.add_device(b"f", REG, 1, 2),
        lambda e: e.add_fifo(b"f", REG),
        lambda e: e.add_socket(b"f", REG),
        lambda e: e.create_directory(b"f", REG),
    ],
)
def test_encoder_checks_mode_matches_kind(call):
    with pytest.raises(FormatError, match="mode"):
        call(new_encoder())


def test_root_must_be_directory():
    with pytest.raises(FormatError, match="root"):
        Encoder(bytearray().extend, REG)


@pytest.mark.parametrize("content", [b"ab", b"abcd", [b"ab", b"cd"], io.BytesIO(b"a")])
def test_content_size_mismatch_breaks_encoder(content):
    enc = new_encoder()
    with pytest.raises(FormatError, match="declared 3 bytes"):
        enc.add_file(b"f", REG, 3, content)
    with pytest.raises(FormatError, match="unusable"):
        enc.add_fifo(b"g", Metadata(mode=S_IFIFO))


def test_reader_content_is_read_up_to_size_only():
    out = bytearray()
    enc = Encoder(out.extend, DIR)
    stream = io.BytesIO(b"abcdef")
    enc.add_file(b"f", REG, 3, stream)
    enc.finish()
    assert stream.read() == b"def"


def test_write_failure_breaks_encoder():
    calls = []

    def write(data):
        calls.append(len(data))
        if len(calls) > 1:
            raise OSError("disk full")

    enc = Encoder(write, DIR)
    with pytest.raises(OSError):
        enc.add_file(b"f", REG, 1 << 20, bytes(1 << 20))
    with pytest.raises(FormatError, match="disk full"):
        enc.finish()


def test_directory_nesting_misuse():
    enc = new_encoder()
    with pytest.raises(FormatError, match="no subdirectory"):
        enc.finish_directory()
    enc.create_directory(b"d", DIR)
    with pytest.raises(FormatError, match="still open"):
        enc.finish()
    enc.finish_directory()
    enc.finish()
    with pytest.raises(FormatError, match="already finished"):
        enc.add_fifo(b"x", Metadata(mode=S_IFIFO))


def test_split_only_features():
    with pytest.raises(FormatError, match="prelude"):
        new_encoder(prelude=b"x")
    enc = new_encoder()
    with pytest.raises(FormatError, match="split"):
        enc.add_payload_ref(b"f", REG, 1, 0)
    with pytest.raises(FormatError, match="split"):
        enc.advance(5)
    enc = new_encoder(payload_write=bytearray().extend)
    enc.advance(100)
    with pytest.raises(FormatError, match="before the current payload position"):
        enc.add_payload_ref(b"f", REG, 1, 50)


def test_payload_ref_with_encoded_metadata():
    """Metadata given encoded writes the same bytes; bytes of another shape are refused."""
    md = Metadata(mode=S_IFREG | 0o600, uid=7, mtime_ns=-5, xattrs=[(b"user.a", b"1")], fcaps=b"c")
    archives = []
    for given in (md, encode_metadata(md)):
        out = bytearray()
        enc = Encoder(out.extend, DIR, payload_write=bytearray().extend)
        enc.advance(100)
        enc.add_payload_ref(b"f", given, 3, 120)
        enc.finish()
        archives.append(bytes(out))
    assert archives[0] == archives[1]
    assert access(archives[1]).lookup(b"f").metadata == md
    good = encode_metadata(md)
    for bad, problem in [
        (encode_metadata(DIR), "not S_IFREG"),
        (good[:40], "too short"),
        (hdr(c.PXAR_ENTRY_V1, 40) + good[16:], "ENTRY item"),
        (good + hdr(c.PXAR_SYMLINK, 1) + b"\0", "not an attribute item"),
        (good + hdr(c.PXAR_XATTR, 10) + b"a\0", "runs past"),
        (good + b"\0" * 8, "inside an item header"),
    ]:
        enc = new_encoder(payload_write=bytearray().extend)
        with pytest.raises(FormatError, match=problem):
            enc.add_payload_ref(b"f", bad, 3, 16)


def test_hardlink_must_point_backwards():
    enc = new_encoder()
    with pytest.raises(FormatError, match="earlier"):
        enc.add_hardlink(b"h", b"/x", enc.position)


@pytest.mark.parametrize(
    "md",
    [
        Metadata(mode=S_IFREG, uid=2**32),
        Metadata(mode=S_IFREG, mtime_ns=2**63 * 10**9),
        Metadata(mode=S_IFREG, xattrs=[(b"a\0b", b"")]),
        Metadata(mode=S_IFREG, quota_project_id=-1),
    ],
)
def test_metadata_out_of_range(md):
    with pytest.raises(FormatError):
        new_encoder().add_file(b"f", md, 0, b"")


def test_symlink_target_rules():
    enc = new_encoder()
    with pytest.raises(FormatError, match="NUL"):
        enc.add_symlink(b"l", Metadata(mode=S_IFLNK), b"a\0b")
    with pytest.raises(FormatError, match="longer"):
        enc.add_symlink(b"l", Metadata(mode=S_IFLNK), b"a" * 4097)


def test_accessor_usage_errors():
    out = bytearray()
    enc = Encoder(out.extend, DIR)
    enc.add_file(b"f", REG, 1, b"x")
    enc.finish()
    acc = access(bytes(out))
    f = acc.lookup(b"f")
    with pytest.raises(UsageError):
        acc.open_directory(f)
    with pytest.raises(UsageError):
        acc.follow_hardlink(f)
    with pytest.raises(UsageError):
        acc.lookup(b"/a/../f")
    assert acc.lookup(b"f/x") is None
    assert acc.lookup(b"/").path == b"/"


def three_fifos() -> bytes:
    out = bytearray()
    enc = Encoder(out.extend, DIR)
    for name in (b"a", b"b", b"c"):
        enc.add_fifo(name, Metadata(mode=S_IFIFO))
    enc.finish()
    return bytes(out)


def test_decoder_verifies_goodbye_records():
    data = three_fifos()
    table = len(data) - 24 * 4  # first record of the root's goodbye table
    decode(data)

    swapped = bytearray(data)
    swapped[table : table + 24], swapped[table + 24 : table + 48] = (
        data[table + 24 : table + 48],
        data[table : table + 24],
    )
    with pytest.raises(FormatError, match="search-tree order"):
        decode(bytes(swapped))

    for field, delta, message in ((1, 1, "no entry"), (2, 1, "wrong size")):
        bad = bytearray(data)
        at = table + 8 * field
        struct.pack_into("<Q", bad, at, struct.unpack_from("<Q", bad, at)[0] + delta)
        with pytest.raises(FormatError, match=message):
            decode(bytes(bad))


def test_decoder_without_goodbye_checks_reads_past_damaged_records_but_not_bad_framing():
    """What a restore uses: the entries come out although a goodbye record is wrong, while a
    table that is not a whole number of records still stops the decoder."""
    data = three_fifos()
    table = len(data) - 24 * 4
    bad = bytearray(data)
    struct.pack_into("<Q", bad, table + 8, struct.unpack_from("<Q", bad, table + 8)[0] + 1)
    with pytest.raises(FormatError, match="no entry"):
        decode(bytes(bad))
    names = [e.name for e in Decoder(io.BytesIO(bytes(bad)).read, check_goodbye=False)]
    assert names == [b"", b"a", b"b", b"c"]

    framed = entry(S_IFDIR) + hdr(c.PXAR_GOODBYE, 30) + bytes(30)
    with pytest.raises(FormatError, match="whole number of records"):
        list(Decoder(io.BytesIO(framed).read, check_goodbye=False))


def test_decoder_without_goodbye_checks_takes_names_in_any_order_but_not_twice():
    """PBS appends a root's .pxarexclude-cli after the sorted names, so order is not
    required; a name given twice in one directory still stops the decoder."""
    data = three_fifos()
    filename = hdr(c.PXAR_FILENAME, 2) + b"c\0"
    assert data.count(filename) == 1
    unsorted = data.replace(filename, hdr(c.PXAR_FILENAME, 2) + b"0\0")
    names = [e.name for e in Decoder(io.BytesIO(unsorted).read, check_goodbye=False)]
    assert names == [b"", b"a", b"b", b"0"]
    twice = data.replace(filename, hdr(c.PXAR_FILENAME, 2) + b"a\0")
    with pytest.raises(FormatError, match="appears twice"):
        list(Decoder(io.BytesIO(twice).read, check_goodbye=False))


def test_content_reading_usage_errors():
    out = bytearray()
    enc = Encoder(out.extend, DIR)
    enc.add_file(b"f", REG, 1, b"x")
    enc.finish()
    dec = Decoder(io.BytesIO(bytes(out)).read)
    next(dec)
    with pytest.raises(UsageError):
        dec.read_content()
    next(dec)
    with pytest.raises(UsageError):
        next(dec.iter_content(0))
    acc = access(bytes(out))
    with pytest.raises(UsageError):
        next(acc.open_file(acc.lookup(b"f")).chunks(0))
    with pytest.raises(UsageError):
        acc.open_file(acc.lookup(b"/"))


def test_package_docstring_example():
    """The usage example in the package docstring runs as written."""
    out = io.BytesIO()
    content = b"This is the bzip2 executable"
    size, chunks = len(content), [content]

    enc = Encoder(out.write, Metadata(mode=S_IFDIR | 0o755))
    offset = enc.add_file(b"bunzip2", Metadata(mode=S_IFREG | 0o755), size, chunks)
    with enc.directory(b"usr", Metadata(mode=S_IFDIR | 0o755)):
        enc.add_hardlink(b"bzip2", b"/bunzip2", offset)
    enc.finish()
    data = out.getvalue()
    read_at, size = (lambda o, n: data[o : o + n]), len(data)
    acc = Accessor(read_at, size)
    entry = acc.lookup(b"/usr/bzip2")
    assert acc.open_file(acc.follow_hardlink(entry)).read_at(0, 4096) == content


def test_payload_ref_size_near_u64_limit():
    """Found by fuzzing: a PAYLOAD_REF whose size plus metadata overflows 64 bits."""
    meta, payload = bytearray(), bytearray()
    enc = Encoder(meta.extend, DIR, payload_write=payload.extend)
    enc.add_payload_ref(b"f", REG, 2**64 - 1, 16)
    enc.finish()
    entries = list(Decoder(io.BytesIO(bytes(meta)).read))  # contents left unread
    assert entries[1].size == 2**64 - 1
