"""Retention decisions for the snapshots of one backup group, with PBS's exact semantics.

This module is pure: it receives descriptions of snapshots (time, protected, complete) and
returns one decision per snapshot. Reading the group and removing directories belong to the
callers, so the same engine serves ``prune``, prune jobs, ``--dry-run`` and the simulator, and
can be tested exhaustively without a datastore.

The rules, as implemented by ``pbs-datastore/src/prune.rs``:

* Snapshots are considered newest first; every period rule looks at *local* wall-clock time
  (the server's time zone), because that is what ``strftime_local`` does in PBS.
* Incomplete snapshots (no manifest) are decided before any rule: the newest snapshot of the
  group is kept as ``keep-partial`` if it is incomplete (a backup may still be running or may
  be resumed); every other incomplete snapshot is removed. The rules never count them.
* Then keep-last, keep-hourly, keep-daily, keep-weekly (ISO week and ISO year), keep-monthly and
  keep-yearly run in that order. A rule skips snapshots already decided by an earlier rule and
  skips periods that already contain a snapshot kept by an earlier rule. Of every new period it
  keeps the newest snapshot and marks the others of that period for removal (so later rules
  cannot pick them up either); it stops at the first snapshot of one period too many, leaving
  everything older open for the next rule.
* Protected snapshots never count for a rule and are never removed.
* Options that keep nothing at all (all absent or zero) keep every snapshot.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, tzinfo
from enum import Enum
from typing import Any

from cairn.errors import UsageError

__all__ = [
    "KEEP_ALL_RULE",
    "MAX_SIMULATED_SNAPSHOTS",
    "KeepOptions",
    "PruneCandidate",
    "PruneDecision",
    "PruneMark",
    "compute_prune_info",
    "prune_json_rows",
    "schedule_from_spec",
    "simulate",
    "simulate_schedule",
]

# The rule names double as PBS's option names (``keep-daily``) and as display labels.
_RULE_NAMES = (
    "keep-last",
    "keep-hourly",
    "keep-daily",
    "keep-weekly",
    "keep-monthly",
    "keep-yearly",
)

# A rule name shown for snapshots kept because the options keep nothing; the PBS prune
# simulator uses the same label.
KEEP_ALL_RULE = "keep-all"

# A simulated schedule larger than this would only produce an unreadable table; asking for one
# is almost certainly a typo in the interval.
MAX_SIMULATED_SNAPSHOTS = 200_000


@dataclass(frozen=True)
class KeepOptions:
    """How many snapshots (keep-last) or periods (the others) each rule keeps.

    ``None`` means the rule is not used. Zero is accepted here because PBS's engine accepts it
    (a rule that keeps nothing), but PBS's API schema requires at least 1, and so does
    :meth:`from_json`, which parses what users and config files hand us.
    """

    keep_last: int | None = None
    keep_hourly: int | None = None
    keep_daily: int | None = None
    keep_weekly: int | None = None
    keep_monthly: int | None = None
    keep_yearly: int | None = None

    def __post_init__(self) -> None:
        for field in fields(self):
            value = getattr(self, field.name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int):
                raise UsageError(
                    f"{_json_name(field.name)} must be a whole number, not {value!r}"
                )
            if value < 0:
                raise UsageError(
                    f"{_json_name(field.name)} must not be negative (got {value})"
                )

    def keeps_something(self) -> bool:
        """Whether any rule keeps at least one snapshot; if not, PBS keeps everything."""
        return any(count for count in self._counts())

    def to_json(self) -> dict[str, int]:
        """PBS's JSON form: kebab-case names, unset options left out."""
        return {
            name: count
            for name, count in zip(_RULE_NAMES, self._counts())
            if count is not None
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> KeepOptions:
        """Read the ``keep-*`` members of a PBS JSON object (API call or prune job config).

        Members that are not retention options (``ns``, ``max-depth``, ``schedule``, ...) are
        ignored so a whole job config can be passed; a misspelt ``keep-*`` name is an error
        rather than a silently ignored rule, since it would delete more than intended.
        """
        unknown = sorted(
            k for k in data if k.startswith("keep-") and k not in _RULE_NAMES
        )
        if unknown:
            raise UsageError(
                f"unknown retention option {unknown[0]!r}; valid are {', '.join(_RULE_NAMES)}"
            )
        values: dict[str, int | None] = {}
        for name in _RULE_NAMES:
            value = data.get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value < 1:
                raise UsageError(f"{name} must be at least 1 (got {value})")
            values[name.replace("-", "_")] = value
        return cls(**values)

    def _counts(self) -> tuple[int | None, ...]:
        return (
            self.keep_last,
            self.keep_hourly,
            self.keep_daily,
            self.keep_weekly,
            self.keep_monthly,
            self.keep_yearly,
        )


def _json_name(field_name: str) -> str:
    return field_name.replace("_", "-")


class PruneMark(str, Enum):
    """The verdict for one snapshot; the values are PBS's display names (``PruneMark``)."""

    PROTECTED = "protected"
    KEEP = "keep"
    KEEP_PARTIAL = "keep-partial"
    REMOVE = "remove"

    @property
    def keep(self) -> bool:
        """Everything but ``remove`` stays on disk."""
        return self is not PruneMark.REMOVE

    def __str__(self) -> str:
        return self.value


@dataclass(frozen=True)
class PruneCandidate:
    """What the engine needs to know about one snapshot.

    ``complete`` means the manifest exists. ``ref`` is the caller's own object (a snapshot
    handle, a path, ...); the engine never looks into it and hands it back in the decision.
    """

    backup_time: int
    protected: bool = False
    complete: bool = True
    ref: Any = None


@dataclass(frozen=True)
class PruneDecision:
    """The verdict for one candidate, with the rule that kept it for display.

    ``rule`` is the option that kept the snapshot (``keep-daily``, or ``keep-all`` when the
    options keep nothing), and ``rule_index`` counts that rule's periods newest first (the 3rd
    day kept by keep-daily has 3), as PBS's prune simulator shows it. Both are ``None`` for
    ``protected``, ``keep-partial`` and ``remove``.
    """

    candidate: PruneCandidate
    mark: PruneMark
    rule: str | None = None
    rule_index: int | None = None

    @property
    def keep(self) -> bool:
        return self.mark.keep

    @property
    def protected(self) -> bool:
        return self.mark is PruneMark.PROTECTED

    @property
    def backup_time(self) -> int:
        return self.candidate.backup_time

    @property
    def ref(self) -> Any:
        return self.candidate.ref


def _period_keys(tz: tzinfo | None) -> dict[str, Callable[[int], Hashable]]:
    """One function per rule mapping a backup time to the period it belongs to.

    Tuples of wall-clock fields identify the same periods as PBS's ``strftime_local``
    strings; the weekly rule uses the ISO year and week, so 2021-01-01 belongs to 2020-W53.
    """

    def local(epoch: int) -> datetime:
        try:
            return datetime.fromtimestamp(epoch, tz)
        except (OverflowError, OSError, ValueError):
            raise UsageError(
                f"backup time {epoch} is outside the supported range"
            ) from None

    def hour(epoch: int) -> Hashable:
        d = local(epoch)
        return (d.year, d.month, d.day, d.hour)

    def day(epoch: int) -> Hashable:
        d = local(epoch)
        return (d.year, d.month, d.day)

    def iso_week(epoch: int) -> Hashable:
        iso = local(epoch).isocalendar()
        return (iso.year, iso.week)

    def month(epoch: int) -> Hashable:
        d = local(epoch)
        return (d.year, d.month)

    def year(epoch: int) -> Hashable:
        return local(epoch).year

    return {
        "keep-last": lambda epoch: epoch,
        "keep-hourly": hour,
        "keep-daily": day,
        "keep-weekly": iso_week,
        "keep-monthly": month,
        "keep-yearly": year,
    }


def compute_prune_info(
    snapshots: Iterable[PruneCandidate], options: KeepOptions, tz: tzinfo | None = None
) -> list[PruneDecision]:
    """Decide, for every snapshot of one group, whether prune keeps or removes it.

    ``tz`` is the zone whose wall clock defines hours, days, weeks, months and years; ``None``
    uses the machine's local zone, as PBS does. The result lists the snapshots oldest first,
    the order in which PBS reports them and removes them.
    """
    newest_first = _sorted_newest_first(snapshots)

    if not options.keeps_something():
        return [
            PruneDecision(c, PruneMark.PROTECTED)
            if c.protected
            else PruneDecision(c, PruneMark.KEEP, KEEP_ALL_RULE)
            for c in reversed(newest_first)
        ]

    marks: list[PruneMark | None] = [None] * len(newest_first)
    kept_by: list[tuple[str, int] | None] = [None] * len(newest_first)
    _decide_incomplete(newest_first, marks)

    keys = _period_keys(tz)
    for rule, periods in zip(_RULE_NAMES, options._counts()):
        if periods is not None:
            _apply_rule(newest_first, marks, kept_by, rule, periods, keys[rule])

    decisions = []
    for candidate, mark, kept in zip(newest_first, marks, kept_by):
        if candidate.protected:
            decisions.append(PruneDecision(candidate, PruneMark.PROTECTED))
        elif kept is not None:
            decisions.append(PruneDecision(candidate, PruneMark.KEEP, *kept))
        else:
            decisions.append(PruneDecision(candidate, mark or PruneMark.REMOVE))
    decisions.reverse()
    return decisions


def _sorted_newest_first(snapshots: Iterable[PruneCandidate]) -> list[PruneCandidate]:
    """Order as PBS evaluates; refuse input no group can hold (a snapshot is named by its
    time, to the second, so two with the same time cannot exist)."""
    candidates = list(snapshots)
    for candidate in candidates:
        time = candidate.backup_time
        if isinstance(time, bool) or not isinstance(time, int):
            raise UsageError(
                f"backup time must be whole seconds since the epoch, not {time!r}"
            )
    candidates.sort(key=lambda c: c.backup_time, reverse=True)
    for newer, older in itertools.pairwise(candidates):
        if newer.backup_time == older.backup_time:
            raise UsageError(f"two snapshots share the backup time {newer.backup_time}")
    return candidates


def _decide_incomplete(
    newest_first: Sequence[PruneCandidate], marks: list[PruneMark | None]
) -> None:
    """Keep the newest snapshot if it is incomplete; remove every other incomplete one.

    An unfinished newest snapshot may be a backup still running; once a newer backup finished,
    older unfinished ones are useless. Protection is not consulted here (the final verdict
    overrides it), so a protected incomplete newest snapshot still uses up the keep-partial slot.
    """
    for position, candidate in enumerate(newest_first):
        if not candidate.complete:
            marks[position] = (
                PruneMark.KEEP_PARTIAL if position == 0 else PruneMark.REMOVE
            )


def _apply_rule(
    newest_first: Sequence[PruneCandidate],
    marks: list[PruneMark | None],
    kept_by: list[tuple[str, int] | None],
    rule: str,
    periods: int,
    period_of: Callable[[int], Hashable],
) -> None:
    """Run one retention rule over the snapshots that earlier steps left undecided."""
    covered = {
        period_of(c.backup_time)
        for c, mark in zip(newest_first, marks)
        if mark is PruneMark.KEEP
    }
    chosen: set[Hashable] = set()
    for position, candidate in enumerate(newest_first):
        if marks[position] is not None:
            continue
        if candidate.protected:
            # Settled here so that later rules skip it too; it never counts for a period.
            marks[position] = PruneMark.PROTECTED
            continue
        period = period_of(candidate.backup_time)
        if period in covered:
            continue
        if period in chosen:
            marks[position] = PruneMark.REMOVE
            continue
        if len(chosen) >= periods:
            return
        chosen.add(period)
        marks[position] = PruneMark.KEEP
        kept_by[position] = (rule, len(chosen))


def prune_json_rows(decisions: Iterable[PruneDecision]) -> list[dict[str, Any]]:
    """The rows of ``prune --dry-run --output-format json``, named and ordered as PBS does.

    The engine knows only times, so the backup type and id come from each decision's
    ``ref``: its ``backup_type`` (``vm``, ``ct``, ``host``) and ``backup_id`` attributes, and
    its ``ns`` attribute (``a/b``) if it has one, reported as PBS does when not the root.
    """
    rows = []
    for decision in decisions:
        ref = decision.ref
        row: dict[str, Any] = {
            "backup-type": ref.backup_type,
            "backup-id": ref.backup_id,
            "backup-time": decision.backup_time,
            "keep": decision.keep,
            "protected": decision.protected,
        }
        ns = getattr(ref, "ns", None)
        if ns:
            row["ns"] = str(ns)
        rows.append(row)
    return rows


def simulate(
    timestamps: Iterable[int], options: KeepOptions, tz: tzinfo | None = None
) -> list[PruneDecision]:
    """Decisions for a made-up group of complete, unprotected snapshots at ``timestamps``.

    Lets users try a policy before anything is deleted. Repeated timestamps stand for the same
    snapshot and are merged, since a group cannot hold two snapshots of the same second.
    """
    return compute_prune_info((PruneCandidate(t) for t in set(timestamps)), options, tz)


_EVERY = re.compile(r"\s*([0-9]+)\s*(min|h|d|w)\s*")
_DATE_ONLY = re.compile(r"\d{4}-\d{2}-\d{2}")


def simulate_schedule(
    start: str | datetime, end: str | datetime, every: str, tz: tzinfo | None = None
) -> list[int]:
    """Backup times of a regular schedule from ``start`` to ``end``, both included.

    ``every`` is ``<N>min``, ``<N>h``, ``<N>d`` or ``<N>w``. Minutes and hours step in real
    seconds; days and weeks step on the wall clock of ``tz`` (``None``: local zone), so a
    nightly backup stays at 21:00 across DST changes as a real schedule would. Strings are ISO
    dates or date-times in ``tz``; an end given as a date alone covers that whole day.
    """
    match = _EVERY.fullmatch(every)
    if match is None:
        raise UsageError(
            f"cannot read interval {every!r}; use e.g. 30min, 6h, 1d or 1w"
        )
    amount, unit = int(match.group(1)), match.group(2)
    if amount < 1:
        raise UsageError(f"interval {every!r} must be at least 1{unit}")

    first = _wall_clock(start, tz, "start")
    last = _wall_clock(end, tz, "end")
    if isinstance(end, str) and _DATE_ONLY.fullmatch(end.strip()):
        last += timedelta(days=1, seconds=-1)
    if first > last:
        raise UsageError(f"schedule start {start} is after its end {end}")

    if unit in ("min", "h"):
        seconds = amount * (60 if unit == "min" else 3600)
        origin = _epoch(first, tz)

        def nth(k: int) -> int:
            return origin + k * seconds

    else:
        days = amount * (7 if unit == "w" else 1)

        def nth(k: int) -> int:
            return _epoch(first + timedelta(days=k * days), tz)

    limit = _epoch(last, tz)
    result: list[int] = []
    while (time := nth(len(result))) <= limit:
        if len(result) == MAX_SIMULATED_SNAPSHOTS:
            raise UsageError(
                f"the schedule yields more than {MAX_SIMULATED_SNAPSHOTS} backups; "
                "use a longer interval or a shorter time span"
            )
        result.append(time)
    return result


def _wall_clock(value: str | datetime, tz: tzinfo | None, what: str) -> datetime:
    """``value`` as a naive wall-clock time of ``tz`` (of the local zone when ``None``)."""
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.strip())
        except ValueError:
            raise UsageError(
                f"cannot read schedule {what} {value!r}; use e.g. 2024-01-31 or 2024-01-31T21:00"
            ) from None
    else:
        moment = value
    if moment.tzinfo is not None:
        moment = moment.astimezone(tz).replace(tzinfo=None)
    return moment


def _epoch(wall_clock: datetime, tz: tzinfo | None) -> int:
    """Place a naive wall-clock time in ``tz``; a time skipped by DST takes the offset that
    was in force before the change (``fold=0``), as :mod:`zoneinfo` does."""
    if tz is not None:
        wall_clock = wall_clock.replace(tzinfo=tz)
    return int(wall_clock.timestamp())


def schedule_from_spec(spec: str, tz: tzinfo | None = None) -> list[int]:
    """Parse the compact ``START..END/EVERY`` form taken by ``cairn prune --simulate``.

    Example: ``2023-01-01T21:00..2024-12-31/1d`` is a nightly backup at 21:00 for two years.
    """
    span, slash, every = spec.rpartition("/")
    start, dots, end = span.partition("..")
    if not slash or not dots or not start.strip() or not end.strip():
        raise UsageError(
            f"cannot read schedule {spec!r}; use START..END/EVERY, e.g. 2024-01-01..2024-12-31/1d"
        )
    return simulate_schedule(start, end, every, tz)
