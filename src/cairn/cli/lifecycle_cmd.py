"""Keeping a store healthy: prune, garbage-collect, verify, status, maintenance, group notes."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from cairn.cli.common import key_options, ns_option, read_text_argument, repository_option
from cairn.cli.output import emit, emit_value, human_size, output_format_option
from cairn.client.repository import open_repository
from cairn.datastore.datastore import Datastore
from cairn.datastore.gc import GRACE_SECONDS, garbage_collect
from cairn.datastore.names import (
    GroupName,
    Namespace,
    SnapshotName,
    format_backup_time,
    parse_group_or_snapshot,
)
from cairn.datastore.prune import (
    KeepOptions,
    PruneDecision,
    PruneMark,
    prune_json_rows,
    schedule_from_spec,
    simulate,
)
from cairn.datastore.prune_store import prune_group, prune_namespace
from cairn.datastore.status import store_status
from cairn.datastore.verify import verify as run_verify
from cairn.errors import IntegrityError, LockError, StoreError, UsageError


def _warn(message: str) -> None:
    click.echo(message, err=True)


def _quiet(message: str) -> None:
    pass


# -- prune ----------------------------------------------------------------------------------

_KEEP_NAMES = ("last", "hourly", "daily", "weekly", "monthly", "yearly")


def keep_options(command):
    for name in reversed(_KEEP_NAMES):
        what = "snapshots" if name == "last" else f"{name} periods"
        command = click.option(f"--keep-{name}", type=click.IntRange(min=1), default=None,
                               metavar="N", help=f"Keep the newest of this many {what}.")(command)
    return command


def _reason(decision: PruneDecision) -> str:
    if decision.mark is PruneMark.KEEP:
        return decision.rule if decision.rule_index is None else f"{decision.rule} #{decision.rule_index}"
    if decision.mark is PruneMark.PROTECTED:
        return "protected"
    if decision.mark is PruneMark.KEEP_PARTIAL:
        return "newest snapshot, incomplete (backup may be running)"
    if not decision.candidate.complete:
        return "incomplete and not the newest"
    return "not kept by any rule"


@click.command()
@click.argument("group", required=False)
@repository_option
@ns_option
@keep_options
@click.option("--dry-run", is_flag=True, help="Only show what would be removed.")
@click.option("--recursive", is_flag=True, help="Prune every group in NS and the namespaces below it.")
@click.option("--max-depth", type=click.IntRange(0, 7), default=None, help="With --recursive: levels below NS.")
@click.option("--simulate", "schedule", default=None, metavar="START..END/EVERY",
              help="Try the options on a made-up schedule, e.g. 2024-01-01T21:00..2024-12-31/1d.")
@click.option("--simulate-times", "times_file", default=None, metavar="FILE",
              help="Try the options on backup times read from FILE (- for stdin), one per line.")
@output_format_option
def prune(group: str | None, repository: str | None, ns: Namespace, keep_last, keep_hourly, keep_daily,
          keep_weekly, keep_monthly, keep_yearly, dry_run: bool, recursive: bool, max_depth: int | None,
          schedule: str | None, times_file: str | None, output_format: str) -> None:
    """Remove the snapshots of GROUP that the --keep-* options do not keep (PBS's rules)."""
    options = KeepOptions(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly)
    if schedule is not None or times_file is not None:
        if group or schedule and times_file:
            raise UsageError("--simulate and --simulate-times take no GROUP and exclude each other")
        times = schedule_from_spec(schedule) if schedule is not None else _read_times(times_file)
        _print_simulation(simulate(times, options), output_format)
        return
    if group is None and not recursive:
        raise UsageError("give a GROUP (e.g. vm/100), or --recursive to prune every group in the namespace")
    if group is not None and (recursive or max_depth is not None):
        raise UsageError("--recursive and --max-depth apply only without a GROUP")
    store = open_repository(repository, for_write=not dry_run)
    if group is not None:
        results = [prune_group(store, ns, GroupName.parse(group), options, dry_run)]
    else:
        results = prune_namespace(store, ns, options, dry_run, max_depth)
    decisions = [d for r in results for d in r.decisions]
    failed = {name: why for r in results for name, why in r.failed.items()}
    if output_format != "text":
        emit(prune_json_rows(decisions), output_format, [])
    else:
        rows = []
        for d in decisions:
            name, ns_text = d.ref.name, d.ref.ns
            action = "keep" if d.keep else ("would remove" if dry_run else "remove")
            if name in failed:
                action = f"kept: {failed[name]}"
            rows.append({"snapshot": f"{ns_text}:{name}" if ns_text else str(name), "action": action,
                         "reason": _reason(d)})
        emit(rows, "text", [("snapshot", "snapshot", lambda r: r["snapshot"]),
                            ("action", "action", lambda r: r["action"]),
                            ("reason", "reason", lambda r: r["reason"])])
    if not options.keeps_something():
        _warn("no --keep-* option given: every snapshot is kept")
    removed = sum(len(r.removed) for r in results)
    if failed:
        first, why = next(iter(failed.items()))
        raise LockError(f"removed {removed} snapshots, but {len(failed)} marked for removal were kept "
                        f"({first}: {why})")
    if not dry_run:
        _warn(f"removed {removed} snapshots; run 'cairn garbage-collect' to free their chunks")


def _read_times(source: str) -> list[int]:
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except OSError as err:
        raise UsageError(f"cannot read {source}: {err.strerror}") from None
    times = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            times.append(int(line) if line.lstrip("-").isdigit() else int(datetime.fromisoformat(line).timestamp()))
        except (ValueError, OverflowError):
            raise UsageError(f"{source}, line {number}: {line!r} is neither an epoch nor an ISO time") from None
    return times


def _print_simulation(decisions: list[PruneDecision], output_format: str) -> None:
    rows = [{"backup-time": d.backup_time, "keep": d.keep, "mark": str(d.mark), "rule": d.rule,
             "rule-index": d.rule_index} for d in decisions]
    if output_format != "text":
        emit(rows, output_format, [])
        return

    def local(epoch: int) -> str:
        return datetime.fromtimestamp(epoch).strftime("%Y-%m-%d %H:%M %a")

    emit(rows, "text", [
        ("backup-time", "backup time (local)", lambda r: local(r["backup-time"])),
        ("mark", "decision", lambda r: r["mark"]),
        ("rule", "kept by", lambda r: f"{r['rule']} #{r['rule-index']}" if r["rule-index"] else (r["rule"] or "")),
    ])
    _warn(f"{sum(1 for r in rows if r['keep'])} of {len(rows)} snapshots kept")


# -- garbage collection ---------------------------------------------------------------------


@click.command("garbage-collect")
@repository_option
@click.option("--dry-run", is_flag=True, help="Only report what would be removed; change nothing.")
@output_format_option
def garbage_collect_cmd(repository: str | None, dry_run: bool, output_format: str) -> None:
    """Remove chunks no index references (PBS's mark and sweep, 24 h 5 min grace)."""
    store = open_repository(repository, for_write=not dry_run)
    result = garbage_collect(store, dry_run=dry_run, log=_warn)
    status = result.status
    verb = "would remove" if dry_run else "removed"
    emit_value(result.to_json(), output_format, [
        ("index files", str(status.index_file_count)),
        (f"{verb}", f"{status.removed_chunks} chunks ({human_size(status.removed_bytes)})"),
        ("pending", (f"{status.pending_chunks} chunks ({human_size(status.pending_bytes)}), unused but "
                     f"within the grace period ({GRACE_SECONDS // 3600} h {GRACE_SECONDS % 3600 // 60} min)")),
        ("in use", f"{status.disk_chunks} chunks ({human_size(status.disk_bytes)})"),
        ("original data", human_size(status.index_data_bytes)),
        ("dedup factor", f"{status.dedup_factor:.2f}"),
        ("bad chunks", f"{status.removed_bad} {verb}, {status.still_bad} left"),
        ("missing chunks", str(result.missing_chunks)),
    ])
    if result.skipped_indexes:
        raise StoreError(f"garbage collection skipped {len(result.skipped_indexes)} unreadable index files "
                         f"(first: {result.skipped_indexes[0]}); run 'cairn verify'")


# -- verify ---------------------------------------------------------------------------------


@click.command("verify")
@click.argument("target", required=False)
@repository_option
@ns_option
@click.option("--max-depth", type=click.IntRange(0, 7), default=None, help="Levels below NS to verify.")
@click.option("--ignore-verified", is_flag=True, help="Skip snapshots verified before.")
@click.option("--outdated-after", type=click.IntRange(min=1), default=None, metavar="DAYS",
              help="With --ignore-verified: verify again when the last verify is older than DAYS.")
@key_options
@output_format_option
def verify_cmd(target: str | None, repository: str | None, ns: Namespace, max_depth: int | None,
               ignore_verified: bool, outdated_after: int | None, keyfile: str | None, keyfd: int | None,
               passphrase_fd: int | None, output_format: str) -> None:
    """Read and check every chunk of TARGET: a snapshot, a group, or (omitted) NS and below."""
    from cairn.client.keys import find_key

    if outdated_after is not None and not ignore_verified:
        raise UsageError("--outdated-after only applies with --ignore-verified")
    parsed = parse_group_or_snapshot(target) if target else None
    store = open_repository(repository, for_write=True)
    key = find_key(keyfile, keyfd, passphrase_fd, use_default=False)
    cipher = key.unlock() if key is not None else None
    report = run_verify(
        store, ns,
        group=parsed if isinstance(parsed, GroupName) else None,
        snapshot=parsed if isinstance(parsed, SnapshotName) else None,
        max_depth=max_depth, cipher=cipher, ignore_verified=ignore_verified,
        outdated_after=outdated_after, log=click.echo if output_format == "text" else _quiet,
    )
    if output_format != "text":
        emit_value(report.to_json(), output_format, [])
    else:
        click.echo(f"{report.count('ok')} ok, {report.count('failed')} failed, {report.count('skipped')} skipped; "
                   f"{report.chunks_verified} chunks verified, {report.chunks_corrupt} bad, "
                   f"{human_size(report.bytes_read)} read in {report.finished - report.started:.1f}s")
    if not report.ok:
        first = report.failed[0]
        raise IntegrityError(f"verification failed for {len(report.failed)} snapshots "
                             f"(first: {first.name}: {first.errors[0]})")


# -- status ---------------------------------------------------------------------------------


@click.command("status")
@repository_option
@output_format_option
def status_cmd(repository: str | None, output_format: str) -> None:
    """Space, contents, last garbage collection and last verify of the store."""
    value = store_status(open_repository(repository))
    counts = value["counts"]
    lines = [
        ("datastore", value["store"]),
        ("space", (f"{human_size(value['used'])} used of {human_size(value['total'])}, "
                   f"{human_size(value['avail'])} available")),
        ("groups", ", ".join(f"{counts[t]['groups']} {t}" for t in counts)),
        ("snapshots", f"{sum(c['snapshots'] for c in counts.values())} ({value['incomplete-snapshots']} incomplete)"),
        ("chunks", (f"{value['chunks']['count']} ({human_size(value['chunks']['bytes'])}), "
                    f"{value['chunks']['bad']} moved aside as bad")),
        ("dedup factor", f"{value['deduplication-factor']:.2f}"),
        ("maintenance", value["maintenance-mode"] or "none"),
    ]
    gc = value.get("gc-status")
    if gc is None:
        lines.append(("last GC", "never"))
    else:
        lines.append(("last GC", (f"{gc['removed-chunks']} chunks removed ({human_size(gc['removed-bytes'])}), "
                                  f"{gc['pending-chunks']} pending, {gc['disk-chunks']} in use")))
    last = value.get("last-verify")
    if last is None:
        lines.append(("last verify", "never"))
    else:
        lines.append(("last verify", (f"{last['state']} at {format_backup_time(last['starttime'])}: "
                                      f"{last['snapshots-ok']} ok, {last['snapshots-failed']} failed")))
    emit_value(value, output_format, lines)


# -- maintenance mode -----------------------------------------------------------------------


def _open_any_mode(repository: str | None) -> Datastore:
    if not repository:
        raise UsageError("no repository given: use --repository PATH or set CAIRN_REPOSITORY")
    return Datastore.open(repository, ignore_maintenance=True)


@click.group()
def maintenance() -> None:
    """Put the store in read-only or offline maintenance mode, or take it out."""


@maintenance.command("set")
@click.argument("mode", type=click.Choice(("read-only", "offline", "none")))
@repository_option
def maintenance_set(mode: str, repository: str | None) -> None:
    """Set MODE: read-only (writes refused), offline (everything refused) or none."""
    _open_any_mode(repository).set_maintenance_mode(None if mode == "none" else mode)
    click.echo(f"maintenance mode: {mode}", err=True)


@maintenance.command("show")
@repository_option
def maintenance_show(repository: str | None) -> None:
    """Print the current maintenance mode (none, read-only or offline)."""
    click.echo(_open_any_mode(repository).maintenance_mode() or "none")


# -- group notes ----------------------------------------------------------------------------


@click.group()
def group() -> None:
    """Backup group commands."""


@group.group("notes")
def group_notes() -> None:
    """Show or change a group's notes (PBS's notes file in the group directory)."""


@group_notes.command("show")
@click.argument("group_name", metavar="GROUP")
@repository_option
@ns_option
def group_notes_show(group_name: str, repository: str | None, ns: Namespace) -> None:
    """Print the notes of GROUP."""
    click.echo(open_repository(repository).group_notes(ns, GroupName.parse(group_name)), nl=False)


@group_notes.command("update")
@click.argument("group_name", metavar="GROUP")
@click.argument("text", required=False)
@repository_option
@ns_option
def group_notes_update(group_name: str, text: str | None, repository: str | None, ns: Namespace) -> None:
    """Replace the notes of GROUP with TEXT (read from stdin when TEXT is - or omitted)."""
    store = open_repository(repository, for_write=True)
    store.write_group_notes(ns, GroupName.parse(group_name), read_text_argument(text))
