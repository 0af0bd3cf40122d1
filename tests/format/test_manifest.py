"""The manifest's JSON shape follows PBS's BackupManifest (manifest.rs)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cairn.errors import FormatError
from cairn.format.manifest import Manifest, canonical_json


def sample() -> Manifest:
    m = Manifest("vm", "100", 1795312800)
    m.add_file("disk.img.fidx", 100663296 + 12345, bytes(range(32)))
    m.add_file("qemu-server.conf.blob", 94, bytes(32), "none")
    return m


def test_json_shape_and_key_order():
    value = json.loads(sample().to_bytes())
    assert list(value) == ["backup-type", "backup-id", "backup-time", "files", "unprotected", "signature"]
    assert list(value["files"][0]) == ["filename", "crypt-mode", "size", "csum"]
    assert value["files"][0]["csum"] == bytes(range(32)).hex()
    assert value["signature"] is None and value["unprotected"] == {}
    assert sample().to_bytes().startswith(b'{\n  "backup-type": "vm",\n')


def test_canonical_json_sorts_and_strips():
    assert canonical_json({"b": 1, "a": [1, {"d": 2, "c": "x"}]}) == b'{"a":[1,{"c":"x","d":2}],"b":1}'


def test_reads_old_manifest_without_crypt_mode_and_unprotected():
    old = {"backup-type": "ct", "backup-id": "101", "backup-time": 1, "files": [
        {"filename": "root.pxar.didx", "size": 5, "csum": "ab" * 32}]}
    m = Manifest.from_bytes(json.dumps(old).encode())
    assert m.files[0].crypt_mode == "none" and m.unprotected == {}


@pytest.mark.parametrize("text", [b"", b"{", b"[]", b'{"backup-type":"vm"}',
                                  b'{"backup-type":"vm","backup-id":"1","backup-time":1,"files":[{"filename":"a.blob","size":1,"csum":"zz"}]}'])
def test_malformed(text):
    with pytest.raises(FormatError):
        Manifest.from_bytes(text)


def test_rejects_unknown_archive_type_and_duplicates():
    m = sample()
    with pytest.raises(FormatError):
        m.add_file("x.tar", 1, bytes(32))
    with pytest.raises(FormatError):
        m.add_file("disk.img.fidx", 1, bytes(32))


@given(st.lists(st.tuples(st.from_regex(r"[a-z0-9_-]{1,20}\.(img\.fidx|pxar\.didx|conf\.blob)", fullmatch=True),
                          st.integers(0, 1 << 50), st.binary(min_size=32, max_size=32)), unique_by=lambda t: t[0]))
def test_round_trip(files):
    m = Manifest("host", "pve1", 1700000000)
    for name, size, csum in files:
        m.add_file(name, size, csum)
    assert Manifest.from_bytes(m.to_bytes()) == m
