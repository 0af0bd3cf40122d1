"""Tests for the retention engine: PBS's own cases, hand-made edge cases, and a property test
against a separately written model of PBS's rules."""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass
from datetime import UTC as UTC_OFFSET
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cairn.datastore.prune import (
    MAX_SIMULATED_SNAPSHOTS,
    KeepOptions,
    PruneCandidate,
    PruneDecision,
    PruneMark,
    compute_prune_info,
    prune_json_rows,
    schedule_from_spec,
    simulate,
    simulate_schedule,
)
from cairn.errors import UsageError

UTC = ZoneInfo("UTC")
VIENNA = ZoneInfo("Europe/Vienna")


def at(text: str) -> int:
    """Epoch seconds of an ISO time with an explicit offset, e.g. 2019-11-15T09:39:15Z."""
    return int(datetime.fromisoformat(text).timestamp())


def snaps(
    *times: str, protected: tuple[str, ...] = (), partial: tuple[str, ...] = ()
) -> list[PruneCandidate]:
    return [
        PruneCandidate(
            at(t), protected=t in protected, complete=t not in partial, ref=t
        )
        for t in times
    ]


def kept(decisions: list[PruneDecision]) -> list[str]:
    return [d.ref for d in decisions if d.keep]


def removed(decisions: list[PruneDecision]) -> list[str]:
    return [d.ref for d in decisions if not d.keep]


def marks(decisions: list[PruneDecision]) -> dict[str, str]:
    return {d.ref: str(d.mark) for d in decisions}


# --- The cases of PBS's tests/prune.rs, restated (times in UTC, evaluated in UTC) -----------

SIMPLE = (
    "2019-12-02T11:59:15Z",
    "2019-12-03T11:59:15Z",
    "2019-12-04T11:59:15Z",
    "2019-12-04T12:59:15Z",
)
SIMPLE2 = (
    "2018-11-15T11:59:15Z",
    "2019-11-15T11:59:15Z",
    "2019-11-21T11:59:15Z",
    "2019-11-22T11:59:15Z",
    "2019-11-29T11:59:15Z",
    "2019-12-01T11:59:15Z",
    "2019-12-02T11:59:15Z",
    "2019-12-03T11:59:15Z",
    "2019-12-04T11:59:15Z",
)
HOURLY = (
    "2019-11-15T09:39:15Z",
    "2019-11-15T10:49:15Z",
    "2019-11-15T10:59:15Z",
    "2019-11-15T11:39:15Z",
    "2019-11-15T11:49:15Z",
    "2019-11-15T11:59:15Z",
)


@pytest.mark.parametrize(
    ("times", "options", "want_kept"),
    [
        (SIMPLE, KeepOptions(keep_last=4), SIMPLE),
        (SIMPLE, KeepOptions(keep_last=3), SIMPLE[1:]),
        (SIMPLE, KeepOptions(keep_last=2), SIMPLE[2:]),
        (SIMPLE, KeepOptions(keep_last=1), SIMPLE[3:]),
        (SIMPLE, KeepOptions(keep_last=2, keep_daily=2), SIMPLE),
        (SIMPLE, KeepOptions(keep_daily=3), (SIMPLE[0], SIMPLE[1], SIMPLE[3])),
        (SIMPLE, KeepOptions(keep_daily=2), (SIMPLE[1], SIMPLE[3])),
        (SIMPLE, KeepOptions(keep_weekly=5), SIMPLE[3:]),
        (SIMPLE, KeepOptions(keep_daily=1, keep_weekly=5), SIMPLE[3:]),
        (SIMPLE, KeepOptions(keep_monthly=6), SIMPLE[3:]),
        (SIMPLE, KeepOptions(keep_yearly=7), SIMPLE[3:]),
        (SIMPLE, KeepOptions(keep_weekly=5, keep_monthly=6, keep_yearly=7), SIMPLE[3:]),
        (SIMPLE2, KeepOptions(keep_daily=1), SIMPLE2[8:]),
        (SIMPLE2, KeepOptions(keep_last=1, keep_daily=1), SIMPLE2[7:]),
        (SIMPLE2, KeepOptions(keep_daily=1, keep_weekly=1), (SIMPLE2[5], SIMPLE2[8])),
        (
            SIMPLE2,
            KeepOptions(keep_daily=1, keep_weekly=1, keep_monthly=1),
            (SIMPLE2[3], SIMPLE2[5], SIMPLE2[8]),
        ),
        (SIMPLE2, KeepOptions(keep_monthly=1, keep_yearly=1), (SIMPLE2[0], SIMPLE2[8])),
        (HOURLY, KeepOptions(keep_hourly=3), (HOURLY[0], HOURLY[2], HOURLY[5])),
        (HOURLY, KeepOptions(keep_hourly=2), (HOURLY[2], HOURLY[5])),
    ],
)
def test_cases_from_pbs_test_suite(times, options, want_kept):
    assert kept(compute_prune_info(snaps(*times), options, UTC)) == list(want_kept)


def test_keep_last_zero_alone_keeps_everything():
    # The engine of PBS would mark all four "remove" for keep-last 0, but every caller first
    # asks keeps_something() and keeps all when it says no; the engine here does both steps.
    decisions = compute_prune_info(snaps(*SIMPLE), KeepOptions(keep_last=0), UTC)
    assert kept(decisions) == list(SIMPLE)
    assert {d.rule for d in decisions} == {"keep-all"}


def test_zero_count_rule_next_to_a_real_one_keeps_nothing_itself():
    decisions = compute_prune_info(
        snaps(*SIMPLE), KeepOptions(keep_last=0, keep_daily=1), UTC
    )
    assert kept(decisions) == [SIMPLE[3]]


def test_pbs_protected_case():
    times = (
        "2019-11-15T09:39:15Z",
        "2019-11-15T10:39:15Z",
        "2019-11-15T10:49:15Z",
        "2019-11-15T10:59:15Z",
    )
    candidates = snaps(*times, protected=(times[0], times[3]))
    for options in (KeepOptions(keep_last=1), KeepOptions(keep_hourly=1)):
        decisions = compute_prune_info(candidates, options, UTC)
        assert removed(decisions) == [times[1]]
        assert marks(decisions) == {
            times[0]: "protected",
            times[1]: "remove",
            times[2]: "keep",
            times[3]: "protected",
        }


# --- Hand-made edge cases ---------------------------------------------------------------------


def test_iso_week_53_spans_the_new_year():
    # 2020-12-31 (Thu), 2021-01-01 (Fri) and 2021-01-03 (Sun) are all in 2020-W53;
    # 2021-01-04 (Mon) starts 2021-W01.
    times = (
        "2020-12-24T12:00:00Z",
        "2020-12-31T12:00:00Z",
        "2021-01-01T12:00:00Z",
        "2021-01-03T12:00:00Z",
        "2021-01-04T12:00:00Z",
    )
    decisions = compute_prune_info(snaps(*times), KeepOptions(keep_weekly=3), UTC)
    assert kept(decisions) == [times[0], times[3], times[4]]
    # The calendar year, in contrast, splits the ISO week.
    decisions = compute_prune_info(snaps(*times[:4]), KeepOptions(keep_yearly=2), UTC)
    assert kept(decisions) == [times[1], times[3]]


def test_year_boundary_follows_the_local_wall_clock():
    # 23:30 UTC on New Year's Eve is already 00:30 on 1 January in Vienna.
    times = ("2020-12-31T22:30:00Z", "2020-12-31T23:30:00Z")
    assert kept(compute_prune_info(snaps(*times), KeepOptions(keep_yearly=2), UTC)) == [
        times[1]
    ]
    assert kept(
        compute_prune_info(snaps(*times), KeepOptions(keep_yearly=2), VIENNA)
    ) == list(times)


def test_several_backups_in_one_hour_and_one_day_keep_only_the_newest():
    times = (
        "2023-05-01T08:05:00Z",
        "2023-05-01T08:35:00Z",
        "2023-05-01T08:55:00Z",
        "2023-05-01T17:00:00Z",
        "2023-05-01T17:30:00Z",
    )
    hourly = compute_prune_info(snaps(*times), KeepOptions(keep_hourly=10), UTC)
    assert kept(hourly) == [times[2], times[4]]
    daily = compute_prune_info(snaps(*times), KeepOptions(keep_daily=10), UTC)
    assert kept(daily) == [times[4]]
    assert [(d.rule, d.rule_index) for d in daily if d.keep] == [("keep-daily", 1)]


def test_keep_last_covers_its_days_for_keep_daily():
    # keep-last takes the two newest (both on 3 May), so keep-daily starts on 2 May and its
    # two days are 2 May and 1 May.
    times = (
        "2023-05-01T10:00:00Z",
        "2023-05-02T10:00:00Z",
        "2023-05-02T20:00:00Z",
        "2023-05-03T10:00:00Z",
        "2023-05-03T20:00:00Z",
    )
    decisions = compute_prune_info(
        snaps(*times), KeepOptions(keep_last=2, keep_daily=2), UTC
    )
    assert [(d.ref, d.rule, d.rule_index) for d in decisions if d.keep] == [
        (times[0], "keep-daily", 2),
        (times[2], "keep-daily", 1),
        (times[3], "keep-last", 2),
        (times[4], "keep-last", 1),
    ]
    assert removed(decisions) == [times[1]]


def test_snapshot_removed_by_a_rule_is_not_reconsidered_by_a_later_one():
    # ISO week 2024-W18 runs from Mon 29 April to Sun 5 May. keep-weekly keeps 2 May and marks
    # 30 April (same week) for removal; keep-monthly then needs an April snapshot but may not
    # take 30 April any more, so it takes 10 April.
    times = ("2024-04-10T12:00:00Z", "2024-04-30T12:00:00Z", "2024-05-02T12:00:00Z")
    decisions = compute_prune_info(
        snaps(*times), KeepOptions(keep_weekly=1, keep_monthly=2), UTC
    )
    assert marks(decisions) == {times[0]: "keep", times[1]: "remove", times[2]: "keep"}
    assert [d.rule for d in decisions] == ["keep-monthly", None, "keep-weekly"]


def test_protected_snapshots_never_count_and_never_cover_a_period():
    times = (
        "2023-05-01T10:00:00Z",
        "2023-05-01T20:00:00Z",
        "2023-05-02T10:00:00Z",
        "2023-05-02T20:00:00Z",
    )
    decisions = compute_prune_info(
        snaps(*times, protected=(times[3],)), KeepOptions(keep_daily=1), UTC
    )
    # The protected newest does not use up the one day: its older sibling on 2 May is kept.
    assert marks(decisions) == {
        times[0]: "remove",
        times[1]: "remove",
        times[2]: "keep",
        times[3]: "protected",
    }
    assert all(d.keep for d in decisions if d.protected)


def test_newest_incomplete_is_kept_partial_and_older_incomplete_removed():
    times = (
        "2023-05-01T10:00:00Z",
        "2023-05-02T10:00:00Z",
        "2023-05-03T10:00:00Z",
        "2023-05-04T10:00:00Z",
        "2023-05-05T10:00:00Z",
    )
    candidates = snaps(*times, partial=(times[0], times[2], times[3], times[4]))
    decisions = compute_prune_info(candidates, KeepOptions(keep_last=10), UTC)
    # Only the newest snapshot of the group may be kept while incomplete; the complete one
    # is the only snapshot keep-last counts.
    assert marks(decisions) == {
        times[0]: "remove",
        times[1]: "keep",
        times[2]: "remove",
        times[3]: "remove",
        times[4]: "keep-partial",
    }
    assert [d.rule for d in decisions] == [None, "keep-last", None, None, None]


def test_incomplete_snapshot_older_than_a_complete_one_is_removed():
    times = ("2023-05-01T10:00:00Z", "2023-05-02T10:00:00Z")
    decisions = compute_prune_info(
        snaps(*times, partial=(times[0],)), KeepOptions(keep_daily=7), UTC
    )
    assert marks(decisions) == {times[0]: "remove", times[1]: "keep"}


def test_incomplete_newest_does_not_count_for_keep_last():
    times = ("2023-05-01T10:00:00Z", "2023-05-02T10:00:00Z", "2023-05-03T10:00:00Z")
    decisions = compute_prune_info(
        snaps(*times, partial=(times[2],)), KeepOptions(keep_last=1), UTC
    )
    assert marks(decisions) == {
        times[0]: "remove",
        times[1]: "keep",
        times[2]: "keep-partial",
    }


def test_protected_incomplete_newest_still_uses_up_the_partial_slot():
    times = ("2023-05-01T10:00:00Z", "2023-05-02T10:00:00Z", "2023-05-03T10:00:00Z")
    candidates = snaps(*times, protected=(times[2],), partial=(times[1], times[2]))
    decisions = compute_prune_info(candidates, KeepOptions(keep_last=5), UTC)
    assert marks(decisions) == {
        times[0]: "keep",
        times[1]: "remove",
        times[2]: "protected",
    }


def test_no_options_keep_everything_but_protected_stays_protected():
    times = ("2023-05-01T10:00:00Z", "2023-05-02T10:00:00Z", "2023-05-03T10:00:00Z")
    candidates = snaps(*times, protected=(times[1],), partial=(times[0], times[2]))
    decisions = compute_prune_info(candidates, KeepOptions(), UTC)
    assert marks(decisions) == {
        times[0]: "keep",
        times[1]: "protected",
        times[2]: "keep",
    }
    assert [d.rule for d in decisions] == ["keep-all", None, "keep-all"]


def test_dst_fall_back_repeats_the_same_local_hour():
    # Vienna, 31 October 2021: 02:30 CEST (00:30Z) and, an hour later, 02:30 CET (01:30Z).
    times = (
        "2021-10-31T00:10:00+02:00",
        "2021-10-31T02:30:00+02:00",
        "2021-10-31T02:30:00+01:00",
    )
    assert at(times[2]) - at(times[1]) == 3600
    vienna = compute_prune_info(snaps(*times), KeepOptions(keep_hourly=5), VIENNA)
    assert kept(vienna) == [times[0], times[2]]
    utc = compute_prune_info(snaps(*times), KeepOptions(keep_hourly=5), UTC)
    assert kept(utc) == list(times)


def test_dst_spring_forward_day_is_one_local_day():
    # Vienna, 28 March 2021 has 23 hours: 00:30 CET and 23:30 CEST are the same day there,
    # but 23:30 CEST is 21:30Z, and 00:30 CET is 27 March 23:30Z.
    times = ("2021-03-28T00:30:00+01:00", "2021-03-28T23:30:00+02:00")
    assert kept(
        compute_prune_info(snaps(*times), KeepOptions(keep_daily=5), VIENNA)
    ) == [times[1]]
    assert kept(
        compute_prune_info(snaps(*times), KeepOptions(keep_daily=5), UTC)
    ) == list(times)


def test_default_zone_is_the_machine_local_zone(monkeypatch):
    times = ("2021-10-31T02:30:00+02:00", "2021-10-31T02:30:00+01:00")
    monkeypatch.setenv("TZ", "Europe/Vienna")
    time.tzset()
    try:
        decisions = compute_prune_info(snaps(*times), KeepOptions(keep_hourly=5))
    finally:
        monkeypatch.undo()
        time.tzset()
    assert kept(decisions) == [times[1]]


def test_result_is_oldest_first_and_passes_refs_through():
    refs = [object(), object(), object()]
    candidates = [PruneCandidate(t, ref=r) for t, r in zip((300, 100, 200), refs)]
    decisions = compute_prune_info(candidates, KeepOptions(keep_last=1), UTC)
    assert [d.backup_time for d in decisions] == [100, 200, 300]
    assert [d.ref for d in decisions] == [refs[1], refs[2], refs[0]]
    assert [d.candidate for d in decisions] == [
        candidates[1],
        candidates[2],
        candidates[0],
    ]


def test_empty_group():
    assert compute_prune_info([], KeepOptions(keep_last=1), UTC) == []


def test_two_snapshots_with_the_same_time_are_refused():
    with pytest.raises(UsageError, match="share the backup time"):
        compute_prune_info(
            [PruneCandidate(5), PruneCandidate(5)], KeepOptions(keep_last=1), UTC
        )


@pytest.mark.parametrize("bad_time", [1.5, "10", True])
def test_backup_time_must_be_integer_seconds(bad_time):
    with pytest.raises(UsageError, match="whole seconds"):
        compute_prune_info([PruneCandidate(bad_time)], KeepOptions(keep_last=1), UTC)


def test_backup_time_out_of_range_is_a_usage_error():
    with pytest.raises(UsageError, match="outside the supported range"):
        compute_prune_info([PruneCandidate(10**15)], KeepOptions(keep_daily=1), UTC)


def test_mark_names_match_pbs():
    assert [str(m) for m in PruneMark] == [
        "protected",
        "keep",
        "keep-partial",
        "remove",
    ]
    assert [m.keep for m in PruneMark] == [True, True, True, False]


# --- JSON forms --------------------------------------------------------------------------------


@dataclass
class Snap:
    backup_type: str
    backup_id: str
    ns: str = ""


def test_prune_json_rows_match_pbs_dry_run_output():
    candidates = [
        PruneCandidate(1_700_000_000, ref=Snap("vm", "100")),
        PruneCandidate(1_700_086_400, protected=True, ref=Snap("vm", "100")),
        PruneCandidate(1_700_172_800, ref=Snap("vm", "100")),
    ]
    rows = prune_json_rows(
        compute_prune_info(candidates, KeepOptions(keep_last=1), UTC)
    )
    assert rows == [
        {
            "backup-type": "vm",
            "backup-id": "100",
            "backup-time": 1_700_000_000,
            "keep": False,
            "protected": False,
        },
        {
            "backup-type": "vm",
            "backup-id": "100",
            "backup-time": 1_700_086_400,
            "keep": True,
            "protected": True,
        },
        {
            "backup-type": "vm",
            "backup-id": "100",
            "backup-time": 1_700_172_800,
            "keep": True,
            "protected": False,
        },
    ]


def test_prune_json_rows_name_a_namespace_outside_the_root():
    decisions = compute_prune_info(
        [PruneCandidate(10, ref=Snap("ct", "web", "prod/eu"))], KeepOptions(), UTC
    )
    assert prune_json_rows(decisions) == [
        {
            "backup-type": "ct",
            "backup-id": "web",
            "backup-time": 10,
            "keep": True,
            "protected": False,
            "ns": "prod/eu",
        }
    ]


def test_keep_options_json_round_trip():
    options = KeepOptions.from_json(
        {"keep-last": 3, "keep-weekly": 4, "ns": "a", "max-depth": 2}
    )
    assert options == KeepOptions(keep_last=3, keep_weekly=4)
    assert options.to_json() == {"keep-last": 3, "keep-weekly": 4}
    full = {
        "keep-last": 1,
        "keep-hourly": 2,
        "keep-daily": 3,
        "keep-weekly": 4,
        "keep-monthly": 5,
        "keep-yearly": 6,
    }
    assert KeepOptions.from_json(full).to_json() == full
    assert KeepOptions.from_json({}) == KeepOptions()


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"keep-daily": 0}, "at least 1"),
        ({"keep-daily": -2}, "at least 1"),
        ({"keep-daily": "7"}, "whole number"),
        ({"keep-daily": True}, "whole number"),
        ({"keep-dialy": 7}, "unknown retention option"),
    ],
)
def test_keep_options_from_json_rejects_bad_values(data, message):
    with pytest.raises(UsageError, match=message):
        KeepOptions.from_json(data)


def test_keep_options_constructor_rejects_negative_counts():
    with pytest.raises(UsageError, match="keep-hourly must not be negative"):
        KeepOptions(keep_hourly=-1)


def test_keeps_something():
    assert not KeepOptions().keeps_something()
    assert not KeepOptions(keep_last=0, keep_yearly=0).keeps_something()
    assert KeepOptions(keep_yearly=1).keeps_something()


# --- Simulator ---------------------------------------------------------------------------------


def test_simulate_merges_repeated_times_and_marks_everything():
    decisions = simulate([100, 200, 200, 300], KeepOptions(keep_last=2), UTC)
    assert [(d.backup_time, str(d.mark)) for d in decisions] == [
        (100, "remove"),
        (200, "keep"),
        (300, "keep"),
    ]


def test_schedule_every_six_hours_over_one_leap_year():
    times = simulate_schedule("2020-01-01", "2020-12-31", "6h", UTC)
    assert len(times) == 366 * 4
    assert times[0] == at("2020-01-01T00:00:00Z")
    assert times[-1] == at("2020-12-31T18:00:00Z")
    assert {b - a for a, b in itertools.pairwise(times)} == {6 * 3600}


def test_daily_schedule_keeps_its_wall_clock_time_across_dst():
    times = simulate_schedule("2021-03-26T21:00", "2021-03-30", "1d", VIENNA)
    assert [
        datetime.fromtimestamp(t, VIENNA).strftime("%m-%d %H:%M") for t in times
    ] == [
        "03-26 21:00",
        "03-27 21:00",
        "03-28 21:00",
        "03-29 21:00",
        "03-30 21:00",
    ]
    assert times[2] - times[1] == 23 * 3600


def test_weekly_and_minute_schedules_and_inclusive_end():
    assert simulate_schedule("2024-01-01", "2024-01-29T00:00", "1w", UTC) == [
        at(f"2024-01-{d:02d}T00:00:00Z") for d in (1, 8, 15, 22, 29)
    ]
    assert (
        len(simulate_schedule("2024-01-01T00:00", "2024-01-01T01:00", "30min", UTC))
        == 3
    )


def test_schedule_accepts_datetimes_with_any_offset():
    start = datetime(2024, 1, 1, 23, 0, tzinfo=UTC_OFFSET)
    end = start + timedelta(hours=2)
    assert simulate_schedule(start, end, "1h", VIENNA) == [
        int(start.timestamp()) + k * 3600 for k in range(3)
    ]


def test_schedule_spec_for_the_cli():
    assert schedule_from_spec("2023-01-01T21:00..2023-01-03/1d", UTC) == [
        at("2023-01-01T21:00:00Z"),
        at("2023-01-02T21:00:00Z"),
        at("2023-01-03T21:00:00Z"),
    ]


@pytest.mark.parametrize(
    "spec",
    [
        "2023-01-01/1d",
        "..2023-01-02/1d",
        "2023-01-01..2023-01-02",
        "2023-01-01..2023-01-02/1y",
        "2023-01-01..2023-01-02/0d",
        "yesterday..2023-01-02/1d",
        "2023-01-05..2023-01-02/1d",
    ],
)
def test_bad_schedule_specs_are_usage_errors(spec):
    with pytest.raises(UsageError):
        schedule_from_spec(spec, UTC)


def test_oversized_schedule_is_refused():
    assert 182 * 24 * 60 > MAX_SIMULATED_SNAPSHOTS
    with pytest.raises(UsageError, match="more than"):
        simulate_schedule("2020-01-01", "2020-06-30", "1min", UTC)


def test_simulated_policy_over_two_years_of_nightly_backups():
    times = simulate_schedule("2022-01-01T21:00", "2023-12-31", "1d", VIENNA)
    options = KeepOptions(
        keep_last=3, keep_daily=7, keep_weekly=4, keep_monthly=6, keep_yearly=2
    )
    decisions = simulate(times, options, VIENNA)
    by_rule: dict[str, int] = {}
    for d in decisions:
        if d.keep:
            by_rule[d.rule] = by_rule.get(d.rule, 0) + 1
    assert by_rule == {
        "keep-last": 3,
        "keep-daily": 7,
        "keep-weekly": 4,
        "keep-monthly": 6,
        "keep-yearly": 1,
    }
    # keep-yearly finds 2023 covered by newer rules and keeps the newest backup of 2022.
    assert [d.backup_time for d in decisions if d.rule == "keep-yearly"] == [
        at("2022-12-31T21:00:00+01:00")
    ]


# --- Property test against an independent model ------------------------------------------------

RULE_ORDER = (
    "keep-last",
    "keep-hourly",
    "keep-daily",
    "keep-weekly",
    "keep-monthly",
    "keep-yearly",
)
PERIOD_FORMAT = {
    "keep-hourly": "%Y/%m/%d/%H",
    "keep-daily": "%Y/%m/%d",
    "keep-weekly": "%G/%V",
    "keep-monthly": "%Y/%m",
    "keep-yearly": "%Y",
}


def model_verdicts(snapshots, counts, tz):
    """PBS's retention rules written down plainly: ``snapshots`` are (time, protected,
    complete) triples, the answer maps each time to (mark, rule, rank)."""
    if not any(counts.values()):
        return {
            t: ("protected", None, None) if p else ("keep", "keep-all", None)
            for t, p, _ in snapshots
        }

    newest_first = sorted(snapshots, reverse=True)
    verdict = {}
    if newest_first and not newest_first[0][2]:
        verdict[newest_first[0][0]] = ("keep-partial", None, None)
    for t, _, complete in newest_first[1:]:
        if not complete:
            verdict[t] = ("remove", None, None)

    for rule in RULE_ORDER:
        wanted = counts.get(rule)
        if wanted is None:
            continue

        def period(t, rule=rule):
            if rule == "keep-last":
                return t
            return datetime.fromtimestamp(t, tz).strftime(PERIOD_FORMAT[rule])

        taken = {period(t) for t, v in verdict.items() if v[0] == "keep"}
        open_times = [
            t
            for t, p, _ in newest_first
            if t not in verdict and not p and period(t) not in taken
        ]
        new_periods = list(dict.fromkeys(period(t) for t in open_times))[:wanted]
        for rank, p in enumerate(new_periods, start=1):
            members = [t for t in open_times if period(t) == p]
            verdict[members[0]] = ("keep", rule, rank)
            for t in members[1:]:
                verdict[t] = ("remove", None, None)

    return {
        t: ("protected", None, None) if p else verdict.get(t, ("remove", None, None))
        for t, p, _ in snapshots
    }


ANCHORS = [
    at("2019-06-01T00:00:00Z"),
    at("2020-12-31T23:00:00Z"),  # new year and ISO week 53
    at("2021-10-31T01:00:00Z"),  # Vienna falls back
    at("2021-03-28T01:00:00Z"),  # Vienna springs forward
]
SPANS = [3 * 3600, 3 * 86400, 60 * 86400, 400 * 86400, 5 * 365 * 86400]
ZONES = [UTC, VIENNA, ZoneInfo("Australia/Lord_Howe"), ZoneInfo("America/St_Johns")]


@st.composite
def timelines(draw):
    anchor = draw(st.sampled_from(ANCHORS))
    span = draw(st.sampled_from(SPANS))
    size = draw(st.integers(0, 200))
    entries = draw(
        st.lists(
            st.tuples(st.integers(-span, span), st.integers(0, 9), st.integers(0, 9)),
            min_size=size,
            max_size=size,
            unique_by=lambda e: e[0],
        )
    )
    # About one snapshot in ten is protected, one in ten incomplete.
    return [(anchor + offset, prot == 0, done != 0) for offset, prot, done in entries]


counts_strategy = st.fixed_dictionaries(
    {rule: st.none() | st.integers(0, 12) for rule in RULE_ORDER}
)


@settings(max_examples=300, deadline=None)
@given(timeline=timelines(), counts=counts_strategy, tz=st.sampled_from(ZONES))
def test_engine_agrees_with_model(timeline, counts, tz):
    options = KeepOptions(**{rule.replace("-", "_"): n for rule, n in counts.items()})
    candidates = [
        PruneCandidate(t, protected=p, complete=c, ref=t) for t, p, c in timeline
    ]
    decisions = compute_prune_info(candidates, options, tz)

    assert [d.backup_time for d in decisions] == sorted(t for t, _, _ in timeline)
    assert all(d.ref == d.backup_time for d in decisions)
    got = {d.backup_time: (str(d.mark), d.rule, d.rule_index) for d in decisions}
    assert got == model_verdicts(timeline, counts, tz)


@settings(max_examples=100, deadline=None)
@given(timeline=timelines(), counts=counts_strategy, tz=st.sampled_from(ZONES))
def test_engine_invariants(timeline, counts, tz):
    options = KeepOptions(**{rule.replace("-", "_"): n for rule, n in counts.items()})
    candidates = [PruneCandidate(t, protected=p, complete=c) for t, p, c in timeline]
    decisions = compute_prune_info(candidates, options, tz)

    for d in decisions:
        if d.candidate.protected:
            assert d.mark is PruneMark.PROTECTED
        if d.mark is PruneMark.KEEP_PARTIAL:
            assert d.backup_time == max(t for t, _, _ in timeline)
    if options.keeps_something():
        for rule, n in counts.items():
            assert sum(d.rule == rule for d in decisions) <= (n or 0)
        assert all(d.candidate.complete for d in decisions if d.rule is not None)
    else:
        assert all(d.keep for d in decisions)
