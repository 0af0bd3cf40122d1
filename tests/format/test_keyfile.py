"""Key files, paper keys and the RSA master key against PBS's formats.

Key files "written by PBS" are assembled here by hand from PBS's serde schema
(pbs-key-config/src/lib.rs) with hashlib and cryptography's low-level GCM API, so Cairn's
reader is checked against an independent writer, and Cairn's writer against a schema check.
"""

import base64
import hashlib
import json
import re
import shutil
import subprocess

import pytest
import segno
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cairn.errors import CryptError, FormatError, IntegrityError, UsageError
from cairn.format.crypt import CryptConfig
from cairn.format.keyfile import (
    PAPERKEY_BEGIN,
    PAPERKEY_END,
    KeyConfig,
    Pbkdf2Params,
    ScryptParams,
    change_passphrase,
    create_key_config,
    paperkey_html,
    paperkey_text,
    parse_paperkey,
)
from cairn.format.rsa_key import (
    generate_master_key,
    master_key_config,
    rsa_decrypt_key_config,
    rsa_encrypt_key_config,
)

SEQ_KEY = bytes(range(32))
SEQ_FP = (
    "0e:ab:d4:46:0b:6e:b9:ca:34:50:23:de:e2:b7:78:c7:"
    "90:e5:4a:16:83:b9:65:9c:0a:57:ae:19:90:90:15:9b"
)
SEQ_B64 = base64.b64encode(SEQ_KEY).decode()
PASS = b"correct horse"
# 2023-11-14T22:13:20Z
T0 = 1_700_000_000

CHEAP_SCRYPT = ScryptParams(salt=b"s" * 32, n=2, r=1, p=1)
CHEAP_PBKDF2 = Pbkdf2Params(salt=b"p" * 32, iterations=1)

RFC3339_PBS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(Z|[+-]\d\d:\d\d)")
FINGERPRINT_PBS = re.compile(r"([0-9a-f]{2}:){31}[0-9a-f]{2}")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def seal_by_hand(derived: bytes, key: bytes, iv: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(derived), modes.GCM(iv)).encryptor()
    ciphertext = encryptor.update(key) + encryptor.finalize()
    return iv + encryptor.tag + ciphertext


def pbs_schema_check(text: str) -> dict:
    """What PBS's serde derive for KeyConfig requires of a key file (and PBS's new-key values)."""
    obj = json.loads(text)
    assert list(obj) == [
        k for k in ["kdf", "created", "modified", "data", "fingerprint", "hint"] if k in obj
    ]
    assert {"kdf", "created", "modified", "data"} <= set(obj)
    for field in ("created", "modified"):
        assert RFC3339_PBS.fullmatch(obj[field]) and len(obj[field]) in (20, 25)
    data = base64.b64decode(obj["data"], validate=True)
    kdf = obj["kdf"]
    if kdf is None:
        assert len(data) == 32
    else:
        assert len(data) == 16 + 16 + 32  # iv | tag | ciphertext
        ((variant, params),) = kdf.items()
        if variant == "Scrypt":
            assert list(params) == ["n", "r", "p", "salt"]
        else:
            assert variant == "PBKDF2" and list(params) == ["iter", "salt"]
        assert len(base64.b64decode(params["salt"], validate=True)) == 32
        assert all(type(v) is int and v >= 0 for k, v in params.items() if k != "salt")
    assert FINGERPRINT_PBS.fullmatch(obj["fingerprint"])
    assert "hint" not in obj or isinstance(obj["hint"], str)
    return obj


# --- reading key files as PBS writes them -------------------------------------------------


def test_plain_key_file_by_hand():
    text = (
        f'{{"kdf":null,"created":"2020-10-13T09:53:37+02:00","modified":"2020-10-13T09:53:37+02:00",'
        f'"data":"{SEQ_B64}","fingerprint":"{SEQ_FP}"}}'
    )
    config = KeyConfig.from_json(text)
    assert not config.needs_passphrase and config.kdf_name == "none"
    assert config.created == 1602575617  # 07:53:37 UTC
    key, created, fingerprint = config.decrypt()
    assert (key, created) == (SEQ_KEY, 1602575617)
    assert fingerprint == bytes.fromhex(SEQ_FP.replace(":", ""))


def test_wrong_stored_fingerprint_is_refused_and_missing_one_is_computed():
    # Both cases of PBS's fingerprint_checks test.
    base = {
        "kdf": None,
        "created": "2021-01-01T00:00:00Z",
        "modified": "2021-01-01T00:00:00Z",
        "data": SEQ_B64,
    }
    wrong = dict(base, fingerprint=":".join(["00"] * 32))
    with pytest.raises(IntegrityError, match="fingerprint"):
        KeyConfig.from_json(json.dumps(wrong)).decrypt()
    config = KeyConfig.from_json(json.dumps(base))
    assert config.fingerprint is None
    assert config.decrypt()[2].hex() == SEQ_FP.replace(":", "")


def test_pbkdf2_key_file_by_hand_with_pbs_parameters():
    salt, iv = bytes(range(100, 132)), bytes(range(200, 216))
    derived = hashlib.pbkdf2_hmac("sha256", PASS, salt, 65535, 32)
    text = json.dumps(
        {
            "kdf": {"PBKDF2": {"iter": 65535, "salt": b64(salt)}},
            "created": "2022-03-04T05:06:07Z",
            "modified": "2022-03-04T05:06:08-01:30",
            "data": b64(seal_by_hand(derived, SEQ_KEY, iv)),
            "fingerprint": SEQ_FP,
            "hint": "the usual",
        }
    )
    config = KeyConfig.from_json(text)
    assert config.needs_passphrase and config.kdf_name == "pbkdf2"
    assert config.kdf == Pbkdf2Params(salt=salt, iterations=65535)
    assert config.modified - config.created == 1 + 90 * 60
    assert config.decrypt(PASS)[0] == SEQ_KEY
    with pytest.raises(CryptError, match=r"wrong passphrase.*the usual"):
        config.decrypt(b"not the passphrase")


def test_scrypt_key_file_by_hand_with_pbs_parameters():
    # The one test that pays for PBS's real scrypt cost (n=65536, r=8: 64 MiB).
    salt, iv = bytes(32), bytes(16)
    derived = hashlib.scrypt(PASS, salt=salt, n=65536, r=8, p=1, maxmem=1025 * 2**20, dklen=32)
    text = json.dumps(
        {
            "kdf": {"Scrypt": {"n": 65536, "r": 8, "p": 1, "salt": b64(salt)}},
            "created": "2024-06-05T16:24:36+02:00",
            "modified": "2024-06-05T16:24:36+02:00",
            "data": b64(seal_by_hand(derived, SEQ_KEY, iv)),
            "fingerprint": SEQ_FP,
        }
    )
    config = KeyConfig.from_json(text)
    assert config.kdf == ScryptParams(salt=salt)
    assert config.decrypt(PASS)[0] == SEQ_KEY
    with pytest.raises(CryptError, match="wrong passphrase"):
        config.decrypt(b"wrong passphrase")


# --- writing key files --------------------------------------------------------------------


def test_plain_key_file_serializes_exactly_like_serde_json():
    config = create_key_config(SEQ_KEY, None, "none", now=T0)
    assert config.to_json() == (
        '{"kdf":null,"created":"2023-11-14T22:13:20+00:00","modified":"2023-11-14T22:13:20+00:00",'
        f'"data":"{SEQ_B64}","fingerprint":"{SEQ_FP}"}}'
    )
    assert config.to_json(pretty=True) == "\n".join(
        [
            "{",
            '  "kdf": null,',
            '  "created": "2023-11-14T22:13:20+00:00",',
            '  "modified": "2023-11-14T22:13:20+00:00",',
            f'  "data": "{SEQ_B64}",',
            f'  "fingerprint": "{SEQ_FP}"',
            "}",
        ]
    )


def test_sealed_key_file_layout_and_field_order():
    config = create_key_config(SEQ_KEY, PASS, CHEAP_PBKDF2, hint="ü <hint>", now=T0)
    text = config.to_json()
    assert text.startswith('{"kdf":{"PBKDF2":{"iter":1,"salt":"')
    assert text.endswith('"hint":"ü <hint>"}')  # serde_json writes UTF-8, not \u escapes
    data = base64.b64decode(json.loads(text)["data"])
    derived = hashlib.pbkdf2_hmac("sha256", PASS, CHEAP_PBKDF2.salt, 1, 32)
    decryptor = Cipher(algorithms.AES(derived), modes.GCM(data[:16], data[16:32])).decryptor()
    assert decryptor.update(data[32:]) + decryptor.finalize() == SEQ_KEY


def test_new_scrypt_key_uses_pbs_parameters_and_matches_pbs_schema():
    config = create_key_config(SEQ_KEY, PASS, "scrypt", hint="hint", now=T0)
    obj = pbs_schema_check(config.to_json())
    assert obj["kdf"]["Scrypt"]["n"] == 65536
    assert (obj["kdf"]["Scrypt"]["r"], obj["kdf"]["Scrypt"]["p"]) == (8, 1)
    assert obj["fingerprint"] == SEQ_FP and obj["created"] == obj["modified"]
    assert KeyConfig.from_json(config.to_json()).decrypt(PASS)[0] == SEQ_KEY


def test_new_pbkdf2_and_plain_keys_match_pbs_schema():
    pbkdf2 = pbs_schema_check(create_key_config(SEQ_KEY, PASS, "pbkdf2").to_json())
    assert pbkdf2["kdf"]["PBKDF2"]["iter"] == 65535
    plain = pbs_schema_check(create_key_config(SEQ_KEY, None, "none").to_json())
    assert "hint" not in plain and plain["kdf"] is None


def test_fresh_salt_and_iv_per_key():
    a = create_key_config(SEQ_KEY, PASS, "pbkdf2", now=T0)
    b = create_key_config(SEQ_KEY, PASS, "pbkdf2", now=T0)
    assert a.kdf.salt != b.kdf.salt and a.data[:16] != b.data[:16]


KDFS = st.sampled_from([CHEAP_SCRYPT, CHEAP_PBKDF2, "none"])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    key=st.binary(min_size=32, max_size=32),
    passphrase=st.binary(min_size=5, max_size=64),
    kdf=KDFS,
    hint=st.none()
    | st.text(st.characters(blacklist_categories=["Cc", "Cs"]), min_size=1, max_size=64),
    now=st.integers(0, 253402300799),  # up to 9999-12-31T23:59:59Z
    compact=st.booleans(),
)
def test_key_file_round_trip(key, passphrase, kdf, hint, now, compact):
    if kdf == "none":
        passphrase, hint = None, None
    config = create_key_config(key, passphrase, kdf, hint, now=now)
    again = KeyConfig.from_json(config.to_json(pretty=not compact))
    assert again == config
    assert again.decrypt(passphrase) == (key, now, CryptConfig(key).fingerprint())


@pytest.mark.parametrize("kdf", [CHEAP_SCRYPT, CHEAP_PBKDF2])
def test_wrong_missing_or_short_passphrase_refused(kdf):
    config = create_key_config(SEQ_KEY, PASS, kdf)
    with pytest.raises(CryptError, match="wrong passphrase"):
        config.decrypt(PASS + b"!")
    with pytest.raises(CryptError):
        config.decrypt(None)
    with pytest.raises(CryptError, match="too short"):
        config.decrypt(b"abcd")


@pytest.mark.parametrize("offset", [0, 15, 16, 31, 32, 63])
def test_tampered_sealed_data_refused(offset):
    config = create_key_config(SEQ_KEY, PASS, CHEAP_PBKDF2)
    data = bytearray(config.data)
    data[offset] ^= 0x80
    tampered = KeyConfig.from_json(config.to_json().replace(b64(config.data), b64(bytes(data))))
    with pytest.raises(CryptError):
        tampered.decrypt(PASS)


def test_swapped_fingerprint_refused_even_with_right_passphrase():
    config = create_key_config(SEQ_KEY, PASS, CHEAP_PBKDF2)
    other = CryptConfig(bytes(32)).fingerprint_str()
    with pytest.raises(IntegrityError):
        KeyConfig.from_json(config.to_json().replace(SEQ_FP, other)).decrypt(PASS)


def test_creation_argument_errors():
    with pytest.raises(UsageError, match="hint"):
        create_key_config(SEQ_KEY, None, "none", hint="x")
    with pytest.raises(UsageError):
        create_key_config(SEQ_KEY, PASS, "none")
    with pytest.raises(UsageError):
        create_key_config(SEQ_KEY, None, CHEAP_PBKDF2)
    with pytest.raises(UsageError, match="too short"):
        create_key_config(SEQ_KEY, b"1234", CHEAP_PBKDF2)
    with pytest.raises(UsageError):
        create_key_config(SEQ_KEY, PASS, "argon2")
    for hint in ["", "x" * 65, "two\nlines"]:
        with pytest.raises(UsageError):
            create_key_config(SEQ_KEY, PASS, CHEAP_PBKDF2, hint)
    with pytest.raises(FormatError):
        create_key_config(SEQ_KEY[:16], None, "none")


def test_change_passphrase_keeps_created():
    original = create_key_config(SEQ_KEY, PASS, CHEAP_PBKDF2, hint="old", now=T0)
    changed = change_passphrase(original, PASS, b"new passphrase", CHEAP_SCRYPT, "new", now=T0 + 99)
    assert (changed.created, changed.modified, changed.hint) == (T0, T0 + 99, "new")
    assert changed.decrypt(b"new passphrase")[0] == SEQ_KEY
    with pytest.raises(CryptError):
        changed.decrypt(PASS)
    plain = change_passphrase(changed, b"new passphrase", None, "none", now=T0 + 100)
    assert not plain.needs_passphrase and plain.created == T0
    assert plain.decrypt() == (SEQ_KEY, T0, CryptConfig(SEQ_KEY).fingerprint())
    with pytest.raises(CryptError):
        change_passphrase(original, b"bad passphrase", None, "none")


# --- parsing hostile or odd input ---------------------------------------------------------


def test_timestamps_parse_like_proxmox_time():
    def created(ts):
        return KeyConfig.from_json(
            json.dumps({"kdf": None, "created": ts, "modified": ts, "data": SEQ_B64})
        ).created

    assert created("1970-01-01T00:00:00Z") == 0
    assert created("1970-01-01T01:00:00+01:00") == 0
    assert created("1969-12-31T23:30:00-00:30") == 0
    assert created("2021-02-29T00:00:00Z") == created("2021-03-01T00:00:00Z")  # timegm rolls over
    for bad in [
        "2021-01-01T00:00:00",
        "2021-01-01T00:00:00.5Z",
        "2021-01-01 00:00:00Z",
        "2021-13-01T00:00:00Z",
        "2021-01-01T24:00:00Z",
        "2021-01-01T00:00:00+0100",
        "2021-01-01T00:00:00+24:00",
        "0000-01-01T00:00:00Z",
        "２０２１-01-01T00:00:00Z",
    ]:
        with pytest.raises(FormatError):
            created(bad)


@pytest.mark.parametrize(
    "mutation",
    [
        lambda o: o.update(kdf="scrypt"),
        lambda o: o.update(kdf={"Argon2": {}}),
        lambda o: o.update(kdf={"Scrypt": {"n": 2, "r": 1, "p": 1}}),
        lambda o: o.update(kdf={"Scrypt": {"n": 2.0, "r": 1, "p": 1, "salt": ""}}),
        lambda o: o.update(kdf={"PBKDF2": {"iter": True, "salt": ""}}),
        lambda o: o.update(kdf={"PBKDF2": {"iter": -1, "salt": ""}}),
        lambda o: o.update(kdf={"PBKDF2": {"iter": 1, "salt": ""}, "Scrypt": {}}),
        lambda o: o.update(data="not base64!"),
        lambda o: o.update(data=SEQ_B64.rstrip("=")),
        lambda o: o.update(created=1700000000),
        lambda o: o.pop("modified"),
        lambda o: o.pop("data"),
        lambda o: o.update(fingerprint="00:11"),
        lambda o: o.update(fingerprint=12),
        lambda o: o.update(hint=["x"]),
    ],
    ids=lambda _: "",
)
def test_malformed_key_files_are_format_errors(mutation):
    obj = {
        "kdf": None,
        "created": "2021-01-01T00:00:00Z",
        "modified": "2021-01-01T00:00:00Z",
        "data": SEQ_B64,
    }
    mutation(obj)
    with pytest.raises(FormatError):
        KeyConfig.from_json(json.dumps(obj))


def test_unknown_fields_ignored_and_nulls_accepted_like_serde():
    text = json.dumps(
        {
            "created": "2021-01-01T00:00:00Z",
            "modified": "2021-01-01T00:00:00Z",
            "data": SEQ_B64,
            "fingerprint": None,
            "hint": None,
            "future": 1,
        }
    )
    config = KeyConfig.from_json(text)
    assert config.kdf is None and config.fingerprint is None and config.hint is None


def test_unusable_kdf_parameters_fail_cleanly():
    sealed = create_key_config(SEQ_KEY, PASS, CHEAP_PBKDF2)
    for kdf in [
        {"Scrypt": {"n": 3, "r": 1, "p": 1, "salt": ""}},
        {"Scrypt": {"n": 2**40, "r": 8, "p": 1, "salt": ""}},
        {"PBKDF2": {"iter": 0, "salt": ""}},
    ]:
        obj = json.loads(sealed.to_json())
        obj["kdf"] = kdf
        with pytest.raises(FormatError):
            KeyConfig.from_json(json.dumps(obj)).decrypt(PASS)


@settings(max_examples=200)
@given(
    st.one_of(
        st.text(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=40),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(
                    st.sampled_from(
                        [
                            "kdf",
                            "created",
                            "modified",
                            "data",
                            "fingerprint",
                            "hint",
                            "Scrypt",
                            "PBKDF2",
                            "n",
                            "r",
                            "p",
                            "iter",
                            "salt",
                        ]
                    ),
                    inner,
                    max_size=6,
                )
            ),
            max_leaves=20,
        ).map(json.dumps),
    )
)
def test_fuzzed_key_files_raise_only_format_errors(text):
    try:
        KeyConfig.from_json(text)
    except FormatError:
        pass


# --- paper keys ---------------------------------------------------------------------------


def decode_utf8i(art: str) -> list[list[bool]]:
    """Invert `qrencode -t utf8i` glyphs back into module rows (True = dark)."""
    upper = {"█": (True, True), "▀": (True, False), "▄": (False, True), " ": (False, False)}
    rows: list[list[bool]] = []
    for line in art.splitlines():
        rows.append([upper[c][0] for c in line])
        rows.append([upper[c][1] for c in line])
    return rows


def test_paperkey_text_layout_and_round_trip():
    config = create_key_config(SEQ_KEY, PASS, CHEAP_SCRYPT, hint="paper", now=T0)
    text = paperkey_text(config, subject="My Key")
    json_lines = config.to_json(pretty=True).splitlines()
    head = ["Subject: My Key", "", PAPERKEY_BEGIN, *json_lines, PAPERKEY_END]
    lines = text.split("\n")
    assert lines[: len(head)] == head
    assert text.endswith("\n\n")  # qrencode's newline, then PBS's writeln
    art = "\n".join(lines[len(head) :]).strip("\n")
    expected = segno.make("\n".join(json_lines).encode(), error="m", boost_error=False).matrix
    width = len(expected)
    assert [row[:width] for row in decode_utf8i(art)][:width] == [
        [bool(m) for m in row] for row in expected
    ]
    assert parse_paperkey(text) == config
    assert parse_paperkey(config.to_json()) == config
    assert paperkey_text(config.to_json()) == paperkey_text(config)


def test_parse_paperkey_tolerates_retyping_and_refuses_garbage():
    config = create_key_config(SEQ_KEY, None, "none", now=T0)
    retyped = (
        f"notes\n{PAPERKEY_BEGIN}\n  "
        + config.to_json(pretty=True).replace("\n", "\n    ")
        + f"\n{PAPERKEY_END}\n"
    )
    assert parse_paperkey(retyped) == config
    with pytest.raises(FormatError):
        parse_paperkey("just some text")
    with pytest.raises(FormatError):
        parse_paperkey(f"{PAPERKEY_BEGIN}\n{{}}")
    with pytest.raises(FormatError):
        paperkey_text("neither json nor pem")


def test_paperkey_html_embeds_key_and_svg_qr():
    config = create_key_config(SEQ_KEY, PASS, CHEAP_PBKDF2, hint="a<b", now=T0)
    page = paperkey_html(config, subject="S&P")
    assert page.startswith("<!DOCTYPE html>\n") and page.endswith("</body>\n</html>\n")
    assert "<p>Subject: S&amp;P</p>" in page and '"hint": "a&lt;b"' in page
    assert f"<p>\n{PAPERKEY_BEGIN}\n" in page and f"\n{PAPERKEY_END}\n</p>\n" in page
    data = re.search(r'src="data:image/svg\+xml;base64,([A-Za-z0-9+/]+)"', page).group(1)
    svg = base64.b64decode(data + "=" * (-len(data) % 4))
    assert b"<svg" in svg and b"viewBox" in svg


# --- master key ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def master():
    # 3072 bits keeps the suite fast; PBS uses 4096 (MASTER_KEY_BITS), same code path.
    return generate_master_key(b"master secret", bits=3072)


def test_master_key_pem_formats(master):
    assert master.private_pem.startswith(b"-----BEGIN ENCRYPTED PRIVATE KEY-----\n")
    assert master.public_pem.startswith(b"-----BEGIN PUBLIC KEY-----\n")
    with pytest.raises(UsageError):
        generate_master_key(b"1234")


def test_rsa_blob_round_trip(master):
    backup_key = create_key_config(SEQ_KEY, PASS, CHEAP_PBKDF2, now=T0)
    inner = master_key_config(backup_key, PASS, now=T0 + 5)
    assert (inner.kdf, inner.created, inner.modified, inner.data) == (None, T0, T0 + 5, SEQ_KEY)
    blob = rsa_encrypt_key_config(master.public_pem, inner)
    assert len(blob) == 3072 // 8
    assert rsa_encrypt_key_config(master.public_pem, inner) != blob  # PKCS#1 v1.5 is randomized
    recovered = rsa_decrypt_key_config(master.private_pem, b"master secret", blob)
    assert recovered == inner
    assert recovered.decrypt() == (SEQ_KEY, T0, CryptConfig(SEQ_KEY).fingerprint())


def test_rsa_payload_is_pkcs1v15_of_compact_json(master):
    inner = create_key_config(SEQ_KEY, None, "none", now=T0)
    blob = rsa_encrypt_key_config(master.public_pem, inner)
    private = serialization.load_pem_private_key(master.private_pem, b"master secret")
    assert private.decrypt(blob, padding.PKCS1v15()) == inner.to_json().encode()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl command not installed")
def test_openssl_reads_master_key_and_blob(master, tmp_path):
    # OpenSSL is what PBS uses for both steps of `key import-with-master-key`.
    inner = create_key_config(SEQ_KEY, None, "none", now=T0)
    (tmp_path / "priv.pem").write_bytes(master.private_pem)
    (tmp_path / "blob").write_bytes(rsa_encrypt_key_config(master.public_pem, inner))
    out = subprocess.run(
        [
            "openssl",
            "pkeyutl",
            "-decrypt",
            "-inkey",
            tmp_path / "priv.pem",
            "-passin",
            "pass:master secret",
            "-pkeyopt",
            "rsa_padding_mode:pkcs1",
            "-in",
            tmp_path / "blob",
        ],
        check=True,
        capture_output=True,
    ).stdout
    assert out == inner.to_json().encode()


def test_rsa_decrypt_errors(master):
    blob = rsa_encrypt_key_config(master.public_pem, create_key_config(SEQ_KEY, None, "none"))
    with pytest.raises(CryptError, match="passphrase"):
        rsa_decrypt_key_config(master.private_pem, b"wrong secret", blob)
    with pytest.raises(CryptError):
        rsa_decrypt_key_config(master.private_pem, None, blob)
    with pytest.raises(CryptError):
        rsa_decrypt_key_config(master.private_pem, b"master secret", blob[:-1])
    with pytest.raises(CryptError):
        rsa_decrypt_key_config(master.private_pem, b"master secret", bytes(len(blob)))
    other = generate_master_key(b"other secret", bits=3072)
    with pytest.raises(CryptError):
        rsa_decrypt_key_config(other.private_pem, b"other secret", blob)


def test_rsa_accepts_traditional_unencrypted_pem_and_ignores_passphrase(master):
    private = serialization.load_pem_private_key(master.private_pem, b"master secret")
    traditional = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    assert traditional.startswith(b"-----BEGIN RSA PRIVATE KEY-----\n")
    inner = create_key_config(SEQ_KEY, None, "none", now=T0)
    blob = rsa_encrypt_key_config(master.public_pem, inner)
    assert rsa_decrypt_key_config(traditional, None, blob) == inner
    assert rsa_decrypt_key_config(traditional, b"unneeded", blob) == inner


def test_too_small_master_key_is_refused():
    small = generate_master_key(b"small secret", bits=2048)
    inner = create_key_config(SEQ_KEY, None, "none", now=T0)
    with pytest.raises(CryptError, match="too long"):
        rsa_encrypt_key_config(small.public_pem, inner)


def test_master_key_paperkey_blocks(master):
    text = paperkey_text(master.private_pem.decode())
    pem_lines = master.private_pem.decode().splitlines()
    pages = text.split("\f\n")
    assert pages[-1] == "" and len(pages) - 1 == -(-len(pem_lines) // 5)
    first = pages[0].splitlines()
    assert first[:5] == [f"{i:2}: {line}" for i, line in enumerate(pem_lines[:5])]
    assert pages[1].startswith(f" 5: {pem_lines[5]}\n")
    html_page = paperkey_html(master.private_pem.decode())
    assert "<p>\n00: -----BEGIN ENCRYPTED PRIVATE KEY-----\n" in html_page
    assert html_page.count("<img") == -(-len(pem_lines) // 20)
    with pytest.raises(FormatError):
        paperkey_text(master.private_pem.decode().replace("-----END ENCRYPTED", "-----END OTHER"))
