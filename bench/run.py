#!/usr/bin/env python3
"""Benchmark Cairn against restic and borg on one mixed data set, in one run.

    .venv/bin/python bench/run.py [--size-mb 1024] [--tools cairn,restic,borg] [--work DIR]
    .venv/bin/python bench/run.py --smoke --tools cairn      # a few seconds, what CI runs

The data set comes from ../shared/bench/mkdata.py (made once per size and kept in the work
directory). Each tool, encrypted, makes a first backup, an unchanged re-backup and a full
restore of the first snapshot; the restored tree is compared with the source (every file's
size and SHA-256, every symlink and directory) and any difference fails the run. The table
gives each measurement absolute and as a ratio to the best of the peers (restic, borg);
a JSON copy goes to WORK/results.json. Every tool runs ``--repeat`` times (default 3), each
time in a fresh repository, in rounds of one run of every tool (so that all tools see the
same spells of a noisy machine), and the table shows the median of each measurement.
Measurements run with a warm page cache (the data set is read through before every backup:
borg evicts what it reads) and each after a sync (nothing of the step before is still being
written back). Repositories and restores go to a fresh ext4 made for the run (see scratch.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import ExitStack
from pathlib import Path

from measure import CommandFailed, read_through, store_bytes, tree_differences, tree_manifest
from scratch import fresh_filesystem
from tools import Borg, Cairn, Restic, Tool, ToolRun, probe_cairn_pxar

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MKDATA = REPO_ROOT.parent / "shared" / "bench" / "mkdata.py"
SMOKE_SIZE_MB = 24  # the smallest size at which mkdata.py makes every kind of file
PEERS = ("restic", "borg")
TOOLS = {  # name: how to make it
    "cairn": Cairn,
    "cairn-metadata": lambda: Cairn(detection="metadata"),
    "restic": Restic,
    "borg": Borg,
}
METRICS = (  # key, header, unit, target ratio for Cairn (None: absolute target)
    ("first_backup", "first backup", "s", 0.5),
    ("rebackup", "unchanged re-backup", "s", 0.5),
    ("restore", "full restore", "s", 0.6),
    ("store_bytes", "store size", "bytes", 1.0),
    ("peak_rss", "peak RSS", "bytes", None),
)
RSS_LIMIT = 256 * 1000 * 1000
SETTLE_SECONDS = 1.0  # after a sync, before each measurement
DEFAULT_REPEAT = 3
MEDIAN_KEYS = ("first_backup", "rebackup", "restore", "store_bytes")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="data set size in MB (default 1024)")
    parser.add_argument("--tools", default=",".join(TOOLS),
                        help=f"comma-separated subset of {','.join(TOOLS)} (default: all)")
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/cairn-bench"),
                        help="work directory for data, repositories and restores (default /var/tmp/cairn-bench)")
    parser.add_argument("--mkdata", type=Path, default=DEFAULT_MKDATA, help="path of the shared mkdata.py")
    parser.add_argument("--smoke", action="store_true", help=f"a tiny run ({SMOKE_SIZE_MB} MB) to check the script works")
    parser.add_argument("--keep", action="store_true", help="keep repositories and restores after the run")
    parser.add_argument("--repeat", type=int, default=DEFAULT_REPEAT,
                        help=f"runs per tool, each in a fresh repository; the table shows medians (default "
                             f"{DEFAULT_REPEAT}, --smoke: 1)")
    parser.add_argument("--scratch", choices=("fresh", "here"), default="fresh",
                        help="where repositories and restores go: 'fresh' (default) a new ext4 made for the run "
                             "in WORK/scratch.img (needs root; falls back to 'here'), 'here' the work directory")
    args = parser.parse_args(argv)
    if args.smoke:
        args.size_mb = SMOKE_SIZE_MB
        args.repeat = 1
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.tools = [t.strip() for t in args.tools.split(",") if t.strip()]
    unknown = set(args.tools) - set(TOOLS)
    if unknown or not args.tools:
        parser.error(f"unknown tools {sorted(unknown)}; choose from {', '.join(TOOLS)}")
    if args.size_mb < SMOKE_SIZE_MB:
        parser.error(f"--size-mb must be at least {SMOKE_SIZE_MB}")
    return args


def make_data(args: argparse.Namespace) -> Path:
    data = args.work / f"data-{args.size_mb}"
    done = args.work / f"data-{args.size_mb}.done"
    if done.exists():
        return data
    if not args.mkdata.is_file():
        sys.exit(f"bench: error: {args.mkdata} not found (a clone needs shared/ beside it, or give --mkdata)")
    shutil.rmtree(data, ignore_errors=True)
    print(f"making a {args.size_mb} MB data set in {data} ...", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, str(args.mkdata), str(data), str(args.size_mb)], check=True)
    done.write_text("ok\n")
    return data


def image_subset(data: Path, work: Path) -> tuple[Path, list[str]]:
    """Hard links to the data set's files of 1 MiB and more: what per-file images can hold."""
    subset = work / "data-images"
    shutil.rmtree(subset, ignore_errors=True)
    files = []
    for path in sorted(data.rglob("*")):
        if path.is_file() and not path.is_symlink() and path.stat().st_size >= 1 << 20:
            rel = path.relative_to(data)
            (subset / rel).parent.mkdir(parents=True, exist_ok=True)
            os.link(path, subset / rel)
            files.append(str(rel))
    return subset, files


def prepare(tool: Tool, run: ToolRun) -> None:
    """A repository in a fresh work directory (not measured)."""
    run.work.mkdir(parents=True)
    tool.setup(run)


def clear(work_dirs: list[Path]) -> None:
    """Remove earlier runs' repositories and restores, and let the disk settle.

    Deleting gigabytes (on a file system mounted with ``discard``, synchronously) slows
    everything running at the same time, so it never overlaps a measurement.
    """
    for path in work_dirs:
        shutil.rmtree(path, ignore_errors=True)
    os.sync()


def settle(data: Path | None = None) -> None:
    """Start a measurement with nothing left to write back from the one before, and with
    the data set ``data`` (when given) in the page cache.

    A restore leaves a gigabyte of dirty pages that the kernel writes back for seconds
    afterwards, on the same two cores: without the sync the next tool's first backup pays
    for the previous tool's restore. And borg evicts the files it reads from the page cache,
    so without reading them again every backup after a borg backup would read the disk.
    """
    if data is not None:
        read_through(data)
    os.sync()
    time.sleep(SETTLE_SECONDS)


def bench_once(tool: Tool, run: ToolRun, source: dict, label: str) -> dict:
    """First backup, unchanged re-backup and restore in the fresh repository of ``run``."""
    print(f"{label}: first backup ...", file=sys.stderr, flush=True)
    settle(run.data)
    first = tool.backup(run, 1)
    print(f"{label}: unchanged re-backup ...", file=sys.stderr, flush=True)
    settle(run.data)
    second = tool.backup(run, 2)
    print(f"{label}: full restore ...", file=sys.stderr, flush=True)
    settle()
    restore = tool.restore(run)
    differences = tree_differences(source, tree_manifest(tool.restored_root(run)))
    return {
        "first_backup": first.seconds, "rebackup": second.seconds, "restore": restore.seconds,
        "store_bytes": store_bytes(run.repo),
        "peak_rss": max(first.peak_rss, second.peak_rss, restore.peak_rss),
        "cpu_seconds": {"first_backup": first.cpu_seconds, "rebackup": second.cpu_seconds,
                        "restore": restore.cpu_seconds},
        "peak_rss_by_step": {"first_backup": first.peak_rss, "rebackup": second.peak_rss,
                             "restore": restore.peak_rss},
        "differences": differences,
    }


def bench_rounds(tools: list[Tool], root: Path, data: Path, source: dict, repeat: int, keep: bool) -> dict:
    """``repeat`` rounds, each running every tool once in a fresh work directory.

    Rounds rather than one tool's runs after another: this VM has slower and faster spells
    of minutes (15-20 % apart), and a tool measured wholly inside one would be compared
    with peers measured in another. A run's directory is removed before the next one
    starts (outside the measurements), the last round's only without ``keep``. A tool that
    fails is reported with its error and left out of later rounds.
    """
    runs: dict[str, list[dict]] = {tool.name: [] for tool in tools}
    errors: dict[str, str] = {}
    for i in range(repeat):
        for tool in tools:
            if tool.name in errors:
                continue
            run = ToolRun(root / tool.name / f"run{i + 1}", data)
            label = tool.name if repeat == 1 else f"{tool.name} ({i + 1}/{repeat})"
            try:
                prepare(tool, run)
                runs[tool.name].append(bench_once(tool, run, source, label))
            except CommandFailed as err:
                errors[tool.name] = f"failed: {err}"
            if i + 1 < repeat or not keep:
                shutil.rmtree(run.work, ignore_errors=True)
    return {tool.name: {"error": errors[tool.name]} if tool.name in errors else summarize(runs[tool.name])
            for tool in tools}


def summarize(runs: list[dict]) -> dict:
    """Medians of the times and sizes; peak RSS is the highest of all runs, and the
    restore must be bit-identical in every run."""
    result: dict = {key: statistics.median(r[key] for r in runs) for key in MEDIAN_KEYS}
    differences = sorted({problem for r in runs for problem in r["differences"]})
    result.update({
        "peak_rss": max(r["peak_rss"] for r in runs),
        "bit_identical": not differences, "differences": differences,
        "runs": runs,
    })
    return result


def fmt_value(value: float, unit: str) -> str:
    if unit == "s":
        return f"{value:.2f} s"
    return f"{value / 1e6:.0f} MB" if value >= 1e7 else f"{value / 1e6:.1f} MB"


def _runs(repeat: int) -> str:
    if repeat == 1:
        return "one run per tool"
    return (f"median of {repeat} runs per tool, in rounds of one run of each tool (each in a fresh repository; "
            "peak RSS: the highest)")


def render_table(report: dict) -> str:
    results = report["results"]
    peers = [name for name in PEERS if "error" not in results.get(name, {"error": 1})]
    lines = [
        (f"{report['size_mb']} MB mixed data set, {report['cpus']} CPUs, load average {report['load_before']:.2f} "
         f"at start, all encrypted, warm page cache, {_runs(report['repeat'])}; "
         f"ratio = value / best of {', '.join(peers) or 'no peer'}"),
        "",
        "| tool | " + " | ".join(header for _, header, _, _ in METRICS) + " | restore check |",
        "|---" * (len(METRICS) + 2) + "|",
    ]
    for name in report["tools"]:
        result = results[name]
        if "error" in result:
            lines.append(f"| {name} | " + " | ".join("-" for _ in METRICS) + f" | {result['error']} |")
            continue
        cells = []
        for key, _, unit, _ in METRICS:
            value = result[key]
            best = min((results[p][key] for p in peers), default=None)
            ratio = f" ({value / best:.2f}x)" if best else ""
            cells.append(fmt_value(value, unit) + ratio)
        check = "bit-identical" if result["bit_identical"] else "DIFFERS"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {check} |")
    targets = [f"<= {t}x" if t is not None else f"<= {RSS_LIMIT // 1000000} MB" for _, _, _, t in METRICS]
    lines.append("| *cairn target* | " + " | ".join(targets) + " | bit-identical |")
    for note in report["notes"]:
        lines.append(f"\nnote: {note}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.work = args.work.resolve()
    args.work.mkdir(parents=True, exist_ok=True)
    notes: list[str] = []
    tools: list[Tool] = []
    skipped: dict[str, str] = {}
    for name in args.tools:
        tool = TOOLS[name]()
        reason = tool.missing()
        if reason:
            print(f"bench: skipping {name}: {reason}", file=sys.stderr)
            notes.append(f"{name} skipped: {reason}")
            skipped[name] = reason
        else:
            tools.append(tool)

    data = make_data(args)
    with ExitStack() as stack:
        root = args.work
        if args.scratch == "fresh":
            try:
                root = stack.enter_context(fresh_filesystem(args.work, args.size_mb, keep=args.keep))
                notes.append("repositories and restores are on a fresh ext4 (journal, defaults) made for this run "
                             "on a loop device; the data set is read from the work directory")
            except OSError as err:
                print(f"bench: no fresh file system ({err}); using {args.work}", file=sys.stderr)
                notes.append(f"repositories and restores are in {args.work} (no fresh file system: {err})")
        return run_tools(args, tools, skipped, notes, data, root)


def run_tools(args: argparse.Namespace, tools: list[Tool], skipped: dict[str, str], notes: list[str],
              data: Path, root: Path) -> int:
    """Set up, measure and check every tool with its work directory under ``root``."""
    clear([root / tool.name for tool in tools] + [root / "probe"])
    cairns = [t for t in tools if isinstance(t, Cairn)]
    if cairns:
        probe = ToolRun(root / "probe", data)
        try:
            prepare(cairns[0], probe)
        except CommandFailed as err:
            sys.exit(f"bench: error: cannot set up {cairns[0].name}: {err}")
        unsupported = probe_cairn_pxar(cairns[0], probe)
        shutil.rmtree(probe.work, ignore_errors=True)
        if unsupported:
            data, image_files = image_subset(data, args.work)
            for cairn in cairns:
                cairn.image_files = image_files
            tools = [t for t in tools if not (isinstance(t, Cairn) and t.detection)]
            notes.append(f"Cairn has no working pxar backup/restore here ({unsupported}); every tool backs up "
                         f"only the data set's {len(image_files)} files of 1 MiB or more, Cairn each as an "
                         "image archive (the small-files tree and symlinks are left out)")
        else:
            notes.append("cairn backs up the tree as one pxar archive (root.pxar, PBS's default legacy mode: "
                         "a re-backup reads every file again)")
            if any(c.detection for c in cairns):
                notes.append("cairn-metadata uses --change-detection-mode metadata (split .mpxar/.ppxar): "
                             "a re-backup reuses unchanged files' data unread, like restic's and borg's files caches")

    load_before = os.getloadavg()[0]
    print("hashing the source tree ...", file=sys.stderr, flush=True)
    source = tree_manifest(data)
    report = {
        "size_mb": args.size_mb, "repeat": args.repeat, "data": str(data), "cpus": os.cpu_count(), "load_before": load_before,
        "machine": platform.machine(), "python": platform.python_version(),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "tools": [t.name for t in tools] + list(skipped), "versions": {t.name: t.version() for t in tools},
        "results": {name: {"error": f"skipped ({reason})"} for name, reason in skipped.items()}, "notes": notes,
    }
    failed = False
    for name, result in bench_rounds(tools, root, data, source, args.repeat, args.keep).items():
        failed = failed or "error" in result or not result["bit_identical"]
        for problem in result.get("differences", []):
            print(f"bench: {name} restore differs: {problem}", file=sys.stderr)
        report["results"][name] = result
    report["load_after"] = os.getloadavg()[0]
    if not args.keep and root == args.work:  # a fresh file system goes as a whole
        clear([root / tool.name for tool in tools])
    (args.work / "results.json").write_text(json.dumps(report, indent=2) + "\n")
    print(render_table(report))
    print(f"\n(versions: {', '.join(f'{k} {v}' for k, v in report['versions'].items())}; "
          f"load average {report['load_after']:.2f} at end; JSON in {args.work / 'results.json'})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
