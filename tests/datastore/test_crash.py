"""Crash safety: backup, prune, GC and verify processes killed with SIGKILL at random moments.

Each trial starts real ``cairn`` processes on one store and kills them at a random moment
(a backup after a random part of its input). After every trial the store must hold every
snapshot that was complete before, except those the prune of that trial was allowed to
remove; every complete snapshot must verify and still describe exactly the data it was made
from; interrupted backups must show as incomplete, and the next backup of the group must go
ahead. GC trials age all chunks past the grace period first, so their sweep really deletes.
"""

from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from store_helpers import DAY, age_all_chunks

from cairn.datastore.datastore import Datastore
from cairn.datastore.names import GroupName, Namespace, SnapshotName
from cairn.datastore.prune import KeepOptions
from cairn.datastore.prune_store import prune_group
from cairn.datastore.verify import verify
from cairn.format.index import FixedIndex

MIB = 1024 * 1024
BLOCK = 4 * MIB  # the image chunk size
T0 = 1795312800
ROOT = Namespace()
GROUPS = ("vm/a", "vm/b")


def pool_block(k: int) -> bytes:
    """Blocks shared between snapshots (dedup), half random, half zeros."""
    return random.Random(k).randbytes(MIB) + bytes(BLOCK - MIB)


@dataclass
class Harness:
    path: Path
    home: Path
    rng: random.Random
    next_time: int = T0
    expected: dict[tuple[str, int], list[bytes]] = field(default_factory=dict)  # digests per snapshot
    killed_mid_run: int = 0
    trials: int = 0
    killed: Counter = field(default_factory=Counter)  # kills of a running process, by command
    durations: dict[str, float] = field(default_factory=dict)  # last full run, by command

    def env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "PBS_"))}
        env.update(HOME=str(self.home), TZ="UTC", PYTHONPATH=os.pathsep.join(sys.path))
        return env

    def spawn(self, *args: str, stdin=subprocess.DEVNULL) -> subprocess.Popen:
        return subprocess.Popen([sys.executable, "-m", "cairn", *args, "--repository", str(self.path)],
                                stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env())

    def kill_later(self, proc: subprocess.Popen, delay: float | None = None) -> None:
        """SIGKILL ``proc`` after ``delay`` s, by default a random moment of its usual run time
        (learnt from the runs that finished before their kill)."""
        command = proc.args[3]
        started = time.monotonic()
        if delay is None:
            delay = self.rng.uniform(0.05, 1.05) * self.durations.get(command, 1.0)
        deadline = started + delay
        while time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.005)
        if proc.poll() is not None:
            self.durations[command] = time.monotonic() - started
        else:
            proc.send_signal(signal.SIGKILL)
            self.killed_mid_run += 1
            self.killed[proc.args[3]] += 1
        proc.wait()

    # -- operations -------------------------------------------------------------------------

    def image(self) -> list[bytes]:
        blocks = [pool_block(self.rng.randrange(6)) for _ in range(self.rng.randint(2, 4))]
        return blocks + [self.rng.randbytes(200_000)]  # a new, short last chunk

    def start_backup(self) -> tuple[subprocess.Popen, list[bytes], str, int]:
        group, t = self.rng.choice(GROUPS), self.next_time
        self.next_time += 3600
        data = self.image()
        proc = self.spawn("backup", "disk.img:-", "--backup-type", "vm", "--backup-id", group[3:],
                          "--backup-time", str(t), "--crypt-mode", "none", stdin=subprocess.PIPE)
        return proc, data, group, t

    def feed_and_kill(self, proc: subprocess.Popen, data: list[bytes], group: str, t: int, kill: bool) -> None:
        payload = b"".join(data)
        cut = self.rng.randrange(len(payload)) if kill else len(payload)
        try:
            proc.stdin.write(payload[:cut])
            proc.stdin.flush()
            if kill:
                time.sleep(self.rng.uniform(0, 0.3))
                proc.send_signal(signal.SIGKILL)
                if proc.wait() == -signal.SIGKILL:
                    self.killed_mid_run += 1
                    self.killed["backup"] += 1
            else:
                proc.stdin.close()
        except BrokenPipeError:
            pass
        code = proc.wait()
        assert kill or code == 0, f"backup {group} at {t} failed ({code})"
        if code == 0:
            self.expected[(group, t)] = [hashlib.sha256(b).digest() for b in data]

    def backup(self, kill: bool = True) -> None:
        proc, data, group, t = self.start_backup()
        self.feed_and_kill(proc, data, group, t, kill)

    def gc(self) -> None:
        age_all_chunks(Datastore.open(self.path), 3 * DAY)
        self.kill_later(self.spawn("garbage-collect"))

    def backup_during_gc(self) -> None:
        age_all_chunks(Datastore.open(self.path), 3 * DAY)
        proc, data, group, t = self.start_backup()
        gc = self.spawn("garbage-collect")
        self.feed_and_kill(proc, data, group, t, kill=self.rng.random() < 0.5)
        self.kill_later(gc)

    def prune(self) -> set[tuple[str, int]]:
        group = self.rng.choice(GROUPS)
        keep = self.rng.randint(1, 3)
        store = Datastore.open(self.path)
        allowed = set()
        if store.group_path(ROOT, GroupName.parse(group)).is_dir():
            plan = prune_group(store, ROOT, GroupName.parse(group), KeepOptions(keep_last=keep), dry_run=True)
            allowed = {(group, d.backup_time) for d in plan.decisions if not d.keep}
        self.kill_later(self.spawn("prune", group, "--keep-last", str(keep)))
        return allowed

    def verify(self) -> None:
        self.kill_later(self.spawn("verify"))

    # -- invariants ---------------------------------------------------------------------------

    def complete(self) -> set[tuple[str, int]]:
        store = Datastore.open(self.path)
        found = set()
        for group in GROUPS:
            if store.group_path(ROOT, GroupName.parse(group)).is_dir():
                found |= {(group, s.name.backup_time) for s in store.list_snapshots(ROOT, GroupName.parse(group))
                          if s.complete}
        return found

    def trial(self, kind: str) -> None:
        before = self.complete()
        allowed: set[tuple[str, int]] = set()
        if kind == "backup":
            self.backup()
        elif kind == "backup+gc":
            self.backup_during_gc()
        elif kind == "gc":
            self.gc()
        elif kind == "prune":
            allowed = self.prune()
        else:
            self.verify()
        self.trials += 1
        self.check(before, allowed, kind)

    def check(self, before: set, allowed: set, kind: str) -> None:
        after = self.complete()
        lost = before - after - allowed
        assert not lost, f"after a killed {kind}: committed snapshots lost: {sorted(lost)}"
        store = Datastore.open(self.path)
        report = verify(store)
        assert report.ok, f"after a killed {kind}: {[s.to_json() for s in report.failed]}"
        for result in report.snapshots:
            if result.state == "skipped":
                assert result.reason.startswith("incomplete"), result.reason
                assert not store.snapshot(ROOT, result.name).finished
        for group, t in after:
            name = SnapshotName(GroupName.parse(group), t)
            index = FixedIndex(store.archive_path(ROOT, name, "disk.img.fidx").read_bytes())
            if (group, t) in self.expected:
                assert list(index.digests()) == self.expected[(group, t)], f"{name} holds other data"


def run_trials(tmp_path: Path, kinds: list[str], seed: int) -> Harness:
    path = tmp_path / "store"
    Datastore.create(path)
    harness = Harness(path, tmp_path, random.Random(seed))
    for _ in range(3):
        harness.backup(kill=False)
    assert len(harness.complete()) == 3
    for kind in kinds:
        harness.trial(kind)
    # the store is still usable: a final backup of each group completes, GC and verify pass
    for group in GROUPS:
        proc, data, _, t = harness.start_backup()
        harness.feed_and_kill(proc, data, group, t, kill=False)
    age_all_chunks(Datastore.open(path), 3 * DAY)
    harness.kill_later(harness.spawn("garbage-collect"), 300)
    harness.check(harness.complete(), set(), "final GC")
    return harness


def test_crash_trials_short(tmp_path: Path):
    harness = run_trials(tmp_path, ["backup", "backup+gc", "prune", "gc", "verify"], seed=4)
    assert harness.killed_mid_run >= 1


@pytest.mark.slow
@pytest.mark.parametrize("seed", [1, 2])
def test_crash_trials_long(tmp_path: Path, seed: int):
    rng = random.Random(seed)
    kinds = [rng.choice(["backup", "backup", "backup+gc", "gc", "prune", "verify"]) for _ in range(30)]
    harness = run_trials(tmp_path, kinds, seed)
    assert harness.trials == 30
    assert harness.killed_mid_run >= 10  # most trials must really interrupt something
    assert harness.killed["backup"] >= 3 and harness.killed["garbage-collect"] >= 1
    assert harness.killed["verify"] + harness.killed["prune"] >= 1
