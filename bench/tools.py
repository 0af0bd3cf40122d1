"""The three backup programs the bench compares, each driven through its command line.

Every tool encrypts with a passphrase-protected key (Cairn: a PBS key file with scrypt,
restic: its repository password, borg: ``repokey``), backs up the same directory twice
(the second time unchanged) and restores the first snapshot into an empty directory.
Caches and configuration live in the tool's work directory so runs do not share state.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from measure import (
    ZERO,
    Measured,
    run_measured,
    run_quiet,
    tree_differences,
    tree_manifest,
)

PASSPHRASE = "cairn-bench-passphrase"
T0 = 1795312800  # snapshot times of Cairn's backups: T0 + n


@dataclass
class ToolRun:
    """Where one tool keeps its repository, caches, logs and restore target."""

    work: Path
    data: Path

    @property
    def repo(self) -> Path:
        return self.work / "repo"

    @property
    def target(self) -> Path:
        return self.work / "restore"

    @property
    def log(self) -> Path:
        return self.work / "commands.log"


class Tool:
    name = ""

    def missing(self) -> str | None:
        """Why this tool cannot run here, or None."""
        raise NotImplementedError

    def version(self) -> str:
        raise NotImplementedError

    def setup(self, run: ToolRun) -> None:
        raise NotImplementedError

    def backup(self, run: ToolRun, n: int) -> Measured:
        raise NotImplementedError

    def restore(self, run: ToolRun) -> Measured:
        """Restore the first snapshot into ``run.target``; returns the measurement."""
        raise NotImplementedError

    def restored_root(self, run: ToolRun) -> Path:
        """The directory in the restore target that corresponds to ``run.data``."""
        return run.target


def _first_line(cmd: list[str]) -> str:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False).stdout
    except OSError:
        return "?"
    return out.strip().splitlines()[0] if out.strip() else "?"


class Restic(Tool):
    name = "restic"

    def missing(self) -> str | None:
        return None if shutil.which("restic") else "restic is not installed (apt-get install restic)"

    def version(self) -> str:
        return _first_line(["restic", "version"])

    def _env(self, run: ToolRun) -> dict:
        return {**os.environ, "RESTIC_PASSWORD": PASSPHRASE, "RESTIC_REPOSITORY": str(run.repo),
                "RESTIC_CACHE_DIR": str(run.work / "cache")}

    def setup(self, run: ToolRun) -> None:
        run_quiet(["restic", "init", "--repository-version", "2"], run.log, env=self._env(run))

    def backup(self, run: ToolRun, n: int) -> Measured:
        return run_measured(["restic", "backup", "--quiet", "--host", "bench", "."], run.log,
                            cwd=run.data, env=self._env(run))

    def restore(self, run: ToolRun) -> Measured:
        snapshots = subprocess.run(["restic", "snapshots", "--json"], capture_output=True, text=True,
                                   env=self._env(run), check=True).stdout
        first = min(json.loads(snapshots), key=lambda s: s["time"])["short_id"]
        return run_measured(["restic", "restore", first, "--target", str(run.target)], run.log,
                            env=self._env(run))

    def restored_root(self, run: ToolRun) -> Path:
        # restic keeps the absolute path of what was backed up
        nested = run.target / str(run.data).lstrip("/")
        return nested if nested.is_dir() else run.target


class Borg(Tool):
    name = "borg"

    def missing(self) -> str | None:
        return None if shutil.which("borg") else "borg is not installed (apt-get install borgbackup)"

    def version(self) -> str:
        return _first_line(["borg", "--version"])

    def _env(self, run: ToolRun) -> dict:
        return {**os.environ, "BORG_PASSPHRASE": PASSPHRASE, "BORG_REPO": str(run.repo),
                "BORG_BASE_DIR": str(run.work / "home"), "BORG_RELOCATED_REPO_ACCESS_IS_OK": "yes"}

    def setup(self, run: ToolRun) -> None:
        run_quiet(["borg", "init", "--encryption", "repokey"], run.log, env=self._env(run))

    def backup(self, run: ToolRun, n: int) -> Measured:
        # exit code 1 is a warning (e.g. a file changed while read), not a failure
        return run_measured(["borg", "create", f"::bench-{n}", "."], run.log, cwd=run.data,
                            env=self._env(run), ok_codes=(0, 1))

    def restore(self, run: ToolRun) -> Measured:
        run.target.mkdir(parents=True, exist_ok=True)
        return run_measured(["borg", "extract", "::bench-1"], run.log, cwd=run.target, env=self._env(run))


@dataclass
class Cairn(Tool):
    """Cairn backs the tree up as one pxar archive, or per file as images without pxar.

    With ``detection="metadata"`` the pxar archive is split (.mpxar/.ppxar) and a re-backup
    reuses the previous snapshot's data for files whose metadata did not change, as restic's
    and borg's files caches do; the default ("legacy", PBS's default) reads everything.
    """

    name = "cairn"
    detection: str | None = None  # --change-detection-mode, None for the default
    python: str = sys.executable
    image_files: list[str] | None = None  # set for the per-file image fallback
    archive_names: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.detection:
            self.name = f"cairn-{self.detection}"

    def missing(self) -> str | None:
        try:
            result = subprocess.run([self.python, "-m", "cairn", "backup", "--help"], capture_output=True,
                                    text=True, check=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return f"cairn is not importable by {self.python} (run make bench, or use the project's .venv python)"
        if self.detection and "--change-detection-mode" not in result.stdout:
            return "this Cairn has no --change-detection-mode"
        return None

    def version(self) -> str:
        return _first_line([self.python, "-m", "cairn", "--version"])

    def _cmd(self, *args: str) -> list[str]:
        return [self.python, "-m", "cairn", *args]

    def _env(self, run: ToolRun) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CAIRN_", "PBS_"))}
        env.update({"CAIRN_REPOSITORY": str(run.repo), "CAIRN_ENCRYPTION_PASSWORD": PASSPHRASE,
                    "XDG_CONFIG_HOME": str(run.work / "config")})
        return env

    def _key(self, run: ToolRun) -> str:
        return str(run.work / "bench-key.json")

    def setup(self, run: ToolRun) -> None:
        run_quiet(self._cmd("init", str(run.repo)), run.log, env=self._env(run))
        run_quiet(self._cmd("key", "create", self._key(run)), run.log, env=self._env(run))

    def _specs(self, run: ToolRun) -> list[str]:
        if self.image_files is None:
            mode = ["--change-detection-mode", self.detection] if self.detection else []
            return [f"root.pxar:{run.data}", *mode]
        self.archive_names = {rel: f"f{i:05d}.img" for i, rel in enumerate(self.image_files)}
        return [f"{name}:{run.data / rel}" for rel, name in self.archive_names.items()]

    def backup(self, run: ToolRun, n: int) -> Measured:
        return run_measured(self._cmd("backup", *self._specs(run), "--backup-type", "host", "--backup-id", "bench",
                                      "--backup-time", str(T0 + n), "--keyfile", self._key(run)),
                            run.log, env=self._env(run))

    def restore(self, run: ToolRun) -> Measured:
        snapshot = "host/bench/" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0 + 1))
        if self.image_files is None:
            return run_measured(self._cmd("restore", snapshot, "root.pxar", str(run.target), "--keyfile",
                                          self._key(run)), run.log, env=self._env(run))
        total = ZERO
        for rel, name in self.archive_names.items():
            out = run.target / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            total = total + run_measured(self._cmd("restore", snapshot, name, str(out), "--keyfile", self._key(run)),
                                         run.log, env=self._env(run))
        return total


def probe_cairn_pxar(cairn: Cairn, run: ToolRun) -> str | None:
    """Back up and restore a tiny tree as pxar in the set-up repository; None if that works.

    The probe snapshot is removed again; its few chunks (some KB) stay in the store.
    """
    work = run.work / "pxar-probe"
    tree, target = work / "tree", work / "restored"
    (tree / "sub").mkdir(parents=True)
    (tree / "sub" / "a.txt").write_bytes(b"cairn bench probe\n" * 100)
    (tree / "b.bin").write_bytes(os.urandom(5000))
    os.symlink("sub/a.txt", tree / "link")
    snapshot = "host/probe/" + time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(T0))

    def call(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(cairn._cmd(*args, "--keyfile", cairn._key(run)), capture_output=True, text=True,
                              env=cairn._env(run), timeout=300, check=False)

    try:
        result = call("backup", f"probe.pxar:{tree}", "--backup-type", "host", "--backup-id", "probe",
                      "--backup-time", str(T0))
        if result.returncode == 0:
            result = call("restore", snapshot, "probe.pxar", str(target))
        if result.returncode != 0:
            return result.stderr.strip().splitlines()[-1] if result.stderr.strip() else "failed"
        if tree_differences(tree_manifest(tree), tree_manifest(target)):
            return "a restored pxar tree differs from its source"
        return None
    finally:
        subprocess.run(cairn._cmd("snapshot", "forget", snapshot), capture_output=True, env=cairn._env(run), check=False)
        shutil.rmtree(work, ignore_errors=True)
