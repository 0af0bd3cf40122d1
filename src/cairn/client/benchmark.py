"""How fast this machine runs the steps every chunk goes through, as Cairn runs them.

Each step is timed on one thread and then on the backup pipeline's worker threads at once:
the C code behind every step (hashlib, zstandard, cryptography) releases the GIL, so the
second rate shows what the pipeline can reach with all cores busy. The one-thread rate is
also given as a share of the reference rate PBS's own ``benchmark`` compares against (its
2020 top result, one thread, on an AMD Ryzen 7 2700X).

The input is a 4 MiB chunk of little-endian 32-bit counters, the kind of pattern PBS's
benchmark uses, so the rates compare with PBS's; real data compresses differently.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import zstandard

from cairn.client.pipeline import default_workers
from cairn.format.blob import decode_blob, encode_blob, zstd_compress
from cairn.format.crypt import CryptConfig

CHUNK_SIZE = 4 * 1024 * 1024
MB = 1_000_000

# Reference rates (bytes/s) from proxmox-backup-client/src/benchmark.rs, "2020 top" results.
PBS_REFERENCE = {
    "tls": 1235 * MB,
    "sha256": 2022 * MB,
    "compress": 752 * MB,
    "decompress": 1198 * MB,
    "aes256_gcm": 3645 * MB,
    "verify": 758 * MB,
}

LABELS = {
    "tls": "upload to a server",
    "sha256": "SHA-256 digest",
    "compress": "zstd level 1 compress",
    "decompress": "zstd level 1 decompress",
    "aes256_gcm": "AES-256-GCM encrypt",
    "verify": "chunk verify (CRC, decompress, SHA-256)",
}


@dataclass(frozen=True)
class Speed:
    """One step's rates in bytes per second (None when not measured)."""

    name: str
    speed: float | None
    speed_threads: float | None
    threads: int

    @property
    def top(self) -> float:
        return PBS_REFERENCE[self.name]

    @property
    def label(self) -> str:
        return LABELS[self.name]

    @property
    def percent_of_reference(self) -> float | None:
        return None if self.speed is None else 100.0 * self.speed / self.top

    def to_json(self) -> dict:
        value: dict = {"top": self.top}
        if self.speed is not None:
            value.update({"speed": self.speed, "speed-threads": self.speed_threads, "threads": self.threads})
        return value


def counter_pattern(size: int = CHUNK_SIZE) -> bytes:
    """``size`` bytes of little-endian 32-bit counters 0, 1, 2, ..."""
    count = size // 4
    return b"".join(i.to_bytes(4, "little") for i in range(count))


def rate(step: Callable[[], int], seconds: float, threads: int = 1) -> float:
    """Bytes per second of ``step`` (which returns the bytes it handled) run on ``threads``.

    Every thread runs the step at least once and then until ``seconds`` have passed.
    """

    def worker(deadline: float) -> int:
        done = 0
        while True:
            done += step()
            if time.perf_counter() >= deadline:
                return done

    start = time.perf_counter()
    deadline = start + seconds
    if threads == 1:
        total = worker(deadline)
    else:
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="cairn-bench") as pool:
            total = sum(pool.map(worker, [deadline] * threads))
    return total / (time.perf_counter() - start)


def _steps(data: bytes) -> dict[str, Callable[[], int]]:
    size = len(data)
    compressed = zstd_compress(data)
    cipher = CryptConfig(hashlib.sha256(b"cairn benchmark key").digest())
    chunk = encode_blob(data)  # a stored chunk as backup writes it (compressed, CRC)
    digest = hashlib.sha256(data).digest()

    def sha256() -> int:
        hashlib.sha256(data).digest()
        return size

    def compress() -> int:
        zstd_compress(data)
        return size

    def decompress() -> int:
        zstandard.ZstdDecompressor().decompress(compressed)
        return size

    def aes256_gcm() -> int:
        cipher.encrypt(data)
        return size

    def verify() -> int:  # what restore and verify do with every chunk: CRC, decode, digest
        decode_blob(chunk, None, digest)
        return size

    return {"sha256": sha256, "compress": compress, "decompress": decompress, "aes256_gcm": aes256_gcm,
            "verify": verify}


def run_benchmark(seconds: float = 1.0, threads: int | None = None) -> list[Speed]:
    """Measure every step for ``seconds`` on one thread and again on ``threads`` threads."""
    threads = threads or default_workers()
    results = [Speed("tls", None, None, threads)]  # needs a server; Cairn has none yet
    for name, step in _steps(counter_pattern()).items():
        single = rate(step, seconds)
        parallel = rate(step, seconds, threads) if threads > 1 else single
        results.append(Speed(name, single, parallel, threads))
    return results
