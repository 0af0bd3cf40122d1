"""``cairn benchmark``: the fields it reports (never the speeds themselves)."""

from __future__ import annotations

import json

from conftest import assert_one_line_error, run_cairn

STEPS = ("sha256", "compress", "decompress", "aes256_gcm", "verify")


def test_benchmark_json_has_every_step_with_rates_and_reference():
    result = run_cairn("benchmark", "--seconds", "0.01", "--threads", "2", "--output-format", "json")
    value = json.loads(result.stdout)
    assert set(value) == {"tls", *STEPS}
    assert set(value["tls"]) == {"top"}  # no server to upload to
    for step in STEPS:
        entry = value[step]
        assert set(entry) == {"speed", "speed-threads", "threads", "top"}
        assert entry["speed"] > 0 and entry["speed-threads"] > 0 and entry["top"] > 0
        assert entry["threads"] == 2


def test_benchmark_table_names_every_step():
    out = run_cairn("benchmark", "--seconds", "0.01", "--threads", "1").out
    for label in ("SHA-256", "zstd level 1 compress", "zstd level 1 decompress", "AES-256-GCM", "chunk verify",
                  "% of PBS reference"):
        assert label in out


def test_benchmark_rejects_a_bad_duration():
    assert_one_line_error(run_cairn("benchmark", "--seconds", "0", check=False), "--seconds")
