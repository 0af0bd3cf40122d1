"""CryptConfig against PBS's crypt_config.rs, checked by an independent re-derivation.

The expected values are computed here from first principles (hmac/hashlib, a hand-rolled
PBKDF2, cryptography's low-level GCM API) and pinned as hex constants, so a regression in
either path shows up. The fingerprint of the key 00 01 .. 1f is PBS's own test vector
(pbs-key-config/src/lib.rs, fingerprint_checks).
"""

import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.errors import FormatError, IntegrityError
from cairn.format.crypt import (
    FINGERPRINT_INPUT,
    CryptConfig,
    format_fingerprint,
    parse_fingerprint,
    short_key_id,
)

SEQ_KEY = bytes(range(32))
ZERO_KEY = bytes(32)

# FINGERPRINT_INPUT exactly as the u8 array in crypt_config.rs.
PBS_FINGERPRINT_INPUT = bytes([
    110, 208, 239, 119, 71, 31, 255, 77, 85, 199, 168, 254, 74, 157, 182, 33, 97, 64, 127, 19,
    76, 114, 93, 223, 48, 153, 45, 37, 236, 69, 237, 38,
])  # fmt: skip
# The expected fingerprint of key 0..31 in PBS's own unit test.
PBS_SEQ_KEY_FINGERPRINT = bytes([
    14, 171, 212, 70, 11, 110, 185, 202, 52, 80, 35, 222, 226, 183, 120, 199, 144, 229, 74, 22,
    131, 185, 101, 156, 10, 87, 174, 25, 144, 144, 21, 155,
])  # fmt: skip

# Computed once and cross-checked by the independent functions below.
GOLDEN = {
    ZERO_KEY: {
        "id_key": "1fa7f0ef7eae0e67adbec4219b31d02fbb831d686fda90ea02c47b91c6df888e",
        "fingerprint": "6f10a083b89e3706a0b8cecacc120e9f406e4937e8600d786d420d38fb67de7a",
        "digest_abc": "a1c8b2da666f7d1cc759b27bb1bfc4db0d3d8185a1e9bd5414bf536c4daa4b71",
        "tag_abc": "928c2f06cab3bb30e6c448316830d829e454096800685c0cdaf39e073735c1f5",
    },
    SEQ_KEY: {
        "id_key": "7c2c013efd07f3b25717a485263343cd4d292a4b65c200bb3b18ea227abe225c",
        "fingerprint": "0eabd4460b6eb9ca345023dee2b778c790e54a1683b9659c0a57ae199090159b",
        "digest_abc": "ae52f0812a2f1ac3f368d9295cf6419bdff5fe1fe197e48052dd2f7e6d00a6fd",
        "tag_abc": "7360a50d400e31775748b350f5dd31f7becb35579072430d2eb74afe5536f844",
    },
}


def reference_id_key(key: bytes) -> bytes:
    """PBKDF2-HMAC-SHA256(key, b"_id_key", 10 rounds), one 32-byte block, spelled out."""
    block = u = hmac.new(key, b"_id_key" + (1).to_bytes(4, "big"), hashlib.sha256).digest()
    for _ in range(9):
        u = hmac.new(key, u, hashlib.sha256).digest()
        block = bytes(a ^ b for a, b in zip(block, u, strict=True))
    return block


def reference_digest(key: bytes, data: bytes) -> bytes:
    return hashlib.sha256(data + reference_id_key(key)).digest()


def reference_gcm_decrypt(key: bytes, iv: bytes, tag: bytes, ciphertext: bytes) -> bytes:
    decryptor = Cipher(algorithms.AES(key), modes.GCM(iv, tag)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def test_fingerprint_input_is_the_pbs_constant():
    assert FINGERPRINT_INPUT == PBS_FINGERPRINT_INPUT
    assert (
        FINGERPRINT_INPUT == hashlib.sha256(b"Proxmox Backup Encryption Key Fingerprint").digest()
    )


def test_pbs_fingerprint_vector():
    assert CryptConfig(SEQ_KEY).fingerprint() == PBS_SEQ_KEY_FINGERPRINT


@pytest.mark.parametrize("key", list(GOLDEN), ids=["zero", "seq"])
def test_golden_values_match_reference(key):
    expected = GOLDEN[key]
    config = CryptConfig(key)
    assert reference_id_key(key).hex() == expected["id_key"]
    assert config.id_key.hex() == expected["id_key"]
    assert reference_digest(key, FINGERPRINT_INPUT).hex() == expected["fingerprint"]
    assert config.fingerprint().hex() == expected["fingerprint"]
    assert reference_digest(key, b"abc").hex() == expected["digest_abc"]
    assert config.compute_digest(b"abc").hex() == expected["digest_abc"]
    ref_tag = hmac.new(reference_id_key(key), b"abc", hashlib.sha256).hexdigest()
    assert ref_tag == expected["tag_abc"]
    assert config.compute_auth_tag(b"abc").hex() == expected["tag_abc"]


@settings(max_examples=50)
@given(key=st.binary(min_size=32, max_size=32), data=st.binary(max_size=2048))
def test_digest_and_tag_match_reference(key, data):
    config = CryptConfig(key)
    assert config.compute_digest(data) == reference_digest(key, data)
    assert config.compute_digest(memoryview(data)) == reference_digest(key, data)
    assert config.compute_auth_tag(data) == hmac.new(reference_id_key(key), data, "sha256").digest()


def test_fingerprint_str_is_pbs_notation():
    config = CryptConfig(SEQ_KEY)
    assert config.fingerprint_str() == (
        "0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:"
        "90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b"
    )
    assert short_key_id(config.fingerprint()) == "0e:ab:d4:46:0b:6e:b9:ca"


def test_parse_fingerprint_like_pbs():
    fp = PBS_SEQ_KEY_FINGERPRINT
    assert parse_fingerprint(format_fingerprint(fp)) == fp
    assert parse_fingerprint(fp.hex()) == fp  # PBS just drops the colons
    assert parse_fingerprint(format_fingerprint(fp).upper()) == fp
    for bad in ["", "0e:ab", fp.hex() + "00", fp.hex()[:-1] + "g", " " + fp.hex(), "0e ab" * 16]:
        with pytest.raises(FormatError):
            parse_fingerprint(bad)


def test_golden_gcm_with_16_byte_iv():
    # AES-256-GCM with a 16-byte IV (GHASH-derived counter block), as PBS calls OpenSSL.
    config = CryptConfig(SEQ_KEY)
    iv = bytes(range(16))
    ciphertext = bytes.fromhex("371ecf0e548b3208df9eb84220d40ce031c11dc415")
    tag = bytes.fromhex("a711021e4147c949aebfddf2e96fa212")
    assert reference_gcm_decrypt(SEQ_KEY, iv, tag, ciphertext) == b"Proxmox Backup Server"
    assert config.decrypt(iv, tag, ciphertext) == b"Proxmox Backup Server"


@settings(max_examples=50)
@given(key=st.binary(min_size=32, max_size=32), data=st.binary(max_size=4096))
def test_encrypt_round_trip_and_independent_decrypt(key, data):
    config = CryptConfig(key)
    iv, tag, ciphertext = config.encrypt(data)
    assert (len(iv), len(tag), len(ciphertext)) == (16, 16, len(data))
    assert config.decrypt(iv, tag, ciphertext) == data
    assert reference_gcm_decrypt(key, iv, tag, ciphertext) == data


def test_encrypt_uses_a_fresh_iv_each_call():
    config = CryptConfig(SEQ_KEY)
    ivs = {config.encrypt(b"same data")[0] for _ in range(64)}
    assert len(ivs) == 64


@settings(max_examples=50)
@given(data=st.binary(min_size=1, max_size=512), where=st.data())
def test_any_flipped_bit_is_refused(data, where):
    config = CryptConfig(SEQ_KEY)
    iv, tag, ciphertext = config.encrypt(data)
    parts = [bytearray(iv), bytearray(tag), bytearray(ciphertext)]
    part = where.draw(st.integers(0, 2))
    index = where.draw(st.integers(0, len(parts[part]) - 1))
    parts[part][index] ^= 1 << where.draw(st.integers(0, 7))
    with pytest.raises(IntegrityError):
        config.decrypt(bytes(parts[0]), bytes(parts[1]), bytes(parts[2]))


def test_wrong_key_is_refused():
    iv, tag, ciphertext = CryptConfig(SEQ_KEY).encrypt(b"secret")
    with pytest.raises(IntegrityError):
        CryptConfig(ZERO_KEY).decrypt(iv, tag, ciphertext)


def test_bad_lengths_are_format_errors():
    with pytest.raises(FormatError):
        CryptConfig(bytes(31))
    config = CryptConfig(SEQ_KEY)
    iv, tag, ciphertext = config.encrypt(b"x")
    with pytest.raises(FormatError):
        config.decrypt(iv[:12], tag, ciphertext)
    with pytest.raises(FormatError):
        config.decrypt(iv, tag[:8], ciphertext)


def test_different_keys_have_different_digest_namespaces():
    assert CryptConfig(SEQ_KEY).compute_digest(b"") != CryptConfig(ZERO_KEY).compute_digest(b"")
    assert CryptConfig(SEQ_KEY).compute_digest(b"") != hashlib.sha256(b"").digest()
