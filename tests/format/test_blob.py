"""DataBlob: golden vectors from PBS's file_formats.rs and data_blob.rs, and properties."""

from __future__ import annotations

import hashlib
import os
import struct
import zlib

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.errors import FormatError, IntegrityError
from cairn.format import blob
from cairn.format.blob import decode_blob, encode_blob
from cairn.format.crypt import CryptConfig


@pytest.mark.parametrize(
    "magic, text",
    [
        (blob.UNCOMPRESSED_BLOB_MAGIC, b"Proxmox Backup uncompressed blob v1.0"),
        (blob.COMPRESSED_BLOB_MAGIC, b"Proxmox Backup zstd compressed blob v1.0"),
        (blob.ENCRYPTED_BLOB_MAGIC, b"Proxmox Backup encrypted blob v1.0"),
        (blob.ENCR_COMPR_BLOB_MAGIC, b"Proxmox Backup zstd compressed encrypted blob v1.0"),
    ],
)
def test_magic_is_sha256_prefix_of_pbs_name(magic, text):
    assert magic == hashlib.sha256(text).digest()[:8]


def test_magic_literal_bytes_match_pbs_source():
    # Copied as numbers from pbs-datastore/src/file_formats.rs, to catch a typo in either place.
    assert list(blob.UNCOMPRESSED_BLOB_MAGIC) == [66, 171, 56, 7, 190, 131, 112, 161]
    assert list(blob.COMPRESSED_BLOB_MAGIC) == [49, 185, 88, 66, 111, 182, 163, 127]
    assert list(blob.ENCRYPTED_BLOB_MAGIC) == [123, 103, 133, 190, 34, 45, 76, 240]
    assert list(blob.ENCR_COMPR_BLOB_MAGIC) == [230, 89, 27, 191, 11, 191, 216, 11]


def test_uncompressed_blob_layout_byte_for_byte():
    data = os.urandom(100)  # random data does not compress
    raw = encode_blob(data)
    expected = blob.UNCOMPRESSED_BLOB_MAGIC + struct.pack("<I", zlib.crc32(data)) + data
    assert raw == expected


def test_compressed_blob_layout_and_crc_covers_payload_only():
    data = b"proxmox " * 1000
    raw = encode_blob(data)
    assert raw[:8] == blob.COMPRESSED_BLOB_MAGIC
    payload = raw[12:]
    assert struct.unpack("<I", raw[8:12])[0] == zlib.crc32(payload)
    assert zstandard.ZstdDecompressor().decompress(payload, max_output_size=len(data)) == data


def test_compression_used_only_when_smaller():
    assert encode_blob(os.urandom(4096))[:8] == blob.UNCOMPRESSED_BLOB_MAGIC
    assert encode_blob(bytes(4096))[:8] == blob.COMPRESSED_BLOB_MAGIC
    assert encode_blob(bytes(4096), compress=False)[:8] == blob.UNCOMPRESSED_BLOB_MAGIC


def test_empty_blob():
    raw = encode_blob(b"")
    assert raw == blob.UNCOMPRESSED_BLOB_MAGIC + struct.pack("<I", 0)
    assert decode_blob(raw) == b""


def test_decode_rejects_wrong_magic():
    raw = bytearray(encode_blob(b"hello"))
    raw[0] ^= 1
    with pytest.raises(FormatError, match="magic"):
        decode_blob(bytes(raw))


def test_decode_rejects_crc_mismatch():
    raw = bytearray(encode_blob(b"hello world"))
    raw[-1] ^= 0x40
    with pytest.raises(IntegrityError, match="CRC"):
        decode_blob(bytes(raw))


@pytest.mark.parametrize("length", [0, 5, 11])
def test_decode_rejects_truncated_header(length):
    with pytest.raises(FormatError):
        decode_blob(encode_blob(b"hello")[:length])


def test_decode_rejects_truncated_compressed_payload():
    raw = encode_blob(b"abc" * 10000)
    cut = raw[:-5]
    fixed = cut[:8] + struct.pack("<I", zlib.crc32(cut[12:])) + cut[12:]
    with pytest.raises(FormatError):
        decode_blob(fixed)


def test_encode_refuses_oversize():
    with pytest.raises(FormatError, match="too large"):
        encode_blob(bytes(blob.MAX_BLOB_SIZE + 1))


def test_decode_refuses_decompression_bomb():
    bomb = zstandard.ZstdCompressor(level=1).compress(bytes(blob.MAX_BLOB_SIZE + 4096))
    raw = blob.COMPRESSED_BLOB_MAGIC + struct.pack("<I", zlib.crc32(bomb)) + bomb
    with pytest.raises(FormatError, match="beyond"):
        decode_blob(raw)


def test_max_size_payload_round_trips():
    data = bytes(blob.MAX_BLOB_SIZE)
    assert decode_blob(encode_blob(data)) == data


def test_digest_check():
    data = b"chunk data" * 50
    raw = encode_blob(data)
    assert decode_blob(raw, digest=hashlib.sha256(data).digest()) == data
    with pytest.raises(IntegrityError, match="digest"):
        decode_blob(raw, digest=hashlib.sha256(b"other").digest())


@given(st.binary(max_size=20000), st.booleans())
@settings(max_examples=200)
def test_round_trip(data, compress):
    raw = encode_blob(data, compress=compress)
    assert blob.blob_crc_ok(raw)
    assert decode_blob(raw) == data
    assert len(raw) <= len(data) + blob.PLAIN_HEADER_SIZE


@given(st.binary(min_size=1, max_size=3000), st.data())
@settings(max_examples=200)
def test_corruption_never_goes_unnoticed_or_crashes(data, draw):
    raw = bytearray(encode_blob(data))
    pos = draw.draw(st.integers(0, len(raw) - 1))
    raw[pos] ^= draw.draw(st.integers(1, 255))
    try:
        decoded = decode_blob(bytes(raw))
    except FormatError:
        return
    # A flipped CRC byte with intact payload is the only undetected case that still decodes,
    # and then the data is still right.
    assert decoded == data


def _encrypted(data: bytes) -> tuple[bytes, CryptConfig]:
    config = CryptConfig(bytes(range(32)))
    return encode_blob(data, config), config


@pytest.mark.parametrize("where", ["iv", "tag", "payload"])
def test_corrupt_encrypted_blob_is_reported_as_corrupt_not_as_wrong_key(where):
    raw, config = _encrypted(b"some chunk " * 500)
    damaged = bytearray(raw)
    damaged[{"iv": 12, "tag": 30, "payload": len(raw) - 5}[where]] ^= 0x40
    # The IV and tag are outside the CRC; damage there can only show as a failed tag.
    match = "CRC" if where == "payload" else "wrong key or corrupt"
    with pytest.raises(IntegrityError, match=match):
        decode_blob(bytes(damaged), config)


def test_encrypted_blob_with_a_wrong_key_names_the_key():
    raw, _ = _encrypted(b"secret " * 100)
    with pytest.raises(IntegrityError, match="wrong key or corrupt"):
        decode_blob(raw, CryptConfig(bytes(32)))


def test_encrypted_blob_is_authenticated_by_its_tag_not_its_crc():
    """A damaged stored CRC alone does not stop an intact encrypted blob from decoding
    (the tag proves every payload byte), while plain blobs are refused."""
    data = b"payload " * 64
    raw, config = _encrypted(data)
    bad_crc = raw[:8] + bytes(b ^ 0xFF for b in raw[8:12]) + raw[12:]
    assert decode_blob(bad_crc, config) == data
    plain = encode_blob(data)
    with pytest.raises(IntegrityError, match="CRC"):
        decode_blob(plain[:8] + bytes(b ^ 0xFF for b in plain[8:12]) + plain[12:])


_PIECES = st.one_of(
    st.binary(max_size=2000),
    st.integers(1, 300_000).map(bytes),  # zero runs: RLE blocks
    st.integers(1, 200_000).map(lambda n: (b"abc" * n)[:n]),
    st.integers(1, 200_000).map(os.urandom),  # raw (incompressible) blocks
)


@given(st.lists(_PIECES, max_size=6).map(b"".join), st.booleans(), st.sampled_from([1, 3, 19]))
@settings(max_examples=60, deadline=None)
def test_frame_size_walks_every_kind_of_block(data, checksum, level):
    frame = zstandard.ZstdCompressor(level=level, write_checksum=checksum).compress(data)
    assert blob._frame_size(frame) == len(frame)
    raw = blob.COMPRESSED_BLOB_MAGIC + struct.pack("<I", zlib.crc32(frame)) + frame
    assert decode_blob(raw) == data


@pytest.mark.parametrize("extra", [b"\x00", b"junk", None])
def test_decode_rejects_bytes_after_the_frame(extra):
    frame = zstandard.ZstdCompressor(level=1).compress(b"data " * 1000)
    payload = frame + (extra if extra is not None else frame)  # None: a second whole frame
    raw = blob.COMPRESSED_BLOB_MAGIC + struct.pack("<I", zlib.crc32(payload)) + payload
    with pytest.raises(FormatError, match="trailing bytes"):
        decode_blob(raw)
