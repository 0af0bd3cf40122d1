"""Measuring one command (wall time, CPU time, peak RSS) and comparing file trees.

Peak RSS comes from ``wait4(2)`` on the very child that ran, so each command is measured on
its own and a tool's helper processes (waited for by it) are included.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class CommandFailed(Exception):
    """A benchmarked command exited with an error; the message names its log file."""


@dataclass
class Measured:
    seconds: float  # wall clock
    cpu_seconds: float  # user + system
    peak_rss: int  # bytes

    def __add__(self, other: Measured) -> Measured:
        """Two commands run one after the other: times add up, the peak is the larger one."""
        return Measured(self.seconds + other.seconds, self.cpu_seconds + other.cpu_seconds,
                        max(self.peak_rss, other.peak_rss))


ZERO = Measured(0.0, 0.0, 0)


def run_measured(cmd: list[str], log: Path, *, cwd: Path | None = None, env: dict | None = None,
                 ok_codes: tuple[int, ...] = (0,)) -> Measured:
    """Run ``cmd`` with its output in ``log``; raise CommandFailed on an unexpected exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(cmd)}\n".encode())
        out.flush()
        start = time.monotonic()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.monotonic() - start
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code not in ok_codes:
        raise CommandFailed(f"{os.path.basename(cmd[0])} exited with {code}; see {log}")
    return Measured(seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss * 1024)


def run_quiet(cmd: list[str], log: Path, *, cwd: Path | None = None, env: dict | None = None) -> None:
    """Set-up steps that are not measured (init, key creation)."""
    run_measured(cmd, log, cwd=cwd, env=env)


def tree_manifest(root: Path) -> dict[str, tuple]:
    """Every entry below ``root``: files by size and SHA-256, symlinks by target, directories."""
    found: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                found[rel] = ("symlink", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                found[rel] = ("dir",)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    found[rel] = ("file", st.st_size, hashlib.file_digest(f, "sha256").hexdigest())
            else:
                found[rel] = ("other", stat.S_IFMT(st.st_mode))
    return found


def read_through(root: Path, block: int = 1 << 20) -> int:
    """Read every regular file below ``root`` once (into the page cache); returns the bytes.

    borg drops what it has read from the page cache (``posix_fadvise(DONTNEED)``), so
    after a borg backup the data set would be read from disk by whatever comes next.
    """
    buf = bytearray(block)
    total = 0
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            path = os.path.join(dirpath, name)
            if os.path.islink(path):
                continue
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    total += n
    return total


def tree_differences(expected: dict[str, tuple], actual: dict[str, tuple], limit: int = 5) -> list[str]:
    """Human-readable differences between two tree manifests (empty when bit-identical)."""
    problems = []
    for rel in sorted(expected.keys() | actual.keys()):
        want, got = expected.get(rel), actual.get(rel)
        if want == got:
            continue
        if got is None:
            problems.append(f"{rel}: missing from the restore")
        elif want is None:
            problems.append(f"{rel}: not in the source")
        else:
            problems.append(f"{rel}: {want[0]} {want[1:]} restored as {got[0]} {got[1:]}")
        if len(problems) >= limit:
            problems.append("...")
            break
    return problems


def store_bytes(root: Path) -> int:
    """Bytes in regular files below ``root`` (empty directories, like Cairn's 65536, cost none)."""
    total = 0
    for dirpath, _, filenames in os.walk(root):
        for name in filenames:
            st = os.lstat(os.path.join(dirpath, name))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total
