"""Attribution of auto backups to schedules, and the BackupsHealthy condition's transitions
(backup_outcomes.py; the rule is in docs/backups.md)."""

from __future__ import annotations

import datetime as dt

import pytest

from zomro_backup_operator.backup_outcomes import (
    AWAITING,
    COMPLETED,
    FAILED,
    OVERDUE,
    Assessment,
    Expectations,
    Runs,
    assess,
    attribute,
    provider_instant,
)
from zomro_backup_operator.time_zones import parse_zone
from zomro_backup_operator.zomro.models import Backup, Weekday

KYIV = parse_zone("Europe/Kyiv", "test")
GRACE = dt.timedelta(hours=3)
EVERY_DAY = frozenset(Weekday)
NIGHTLY = Runs("14", "nightly", EVERY_DAY, "02:00")
SINCE = dt.datetime(2026, 12, 1, 12, 0, tzinfo=dt.UTC)  # Kyiv is UTC+2 in winter


def backup(
    created: str, *, status: str = "active", kind: str = "auto", backup_id: str = "900"
) -> Backup:
    """A backup listed with ``created`` on Zomro's clock (Kyiv)."""
    return Backup(
        id=backup_id,
        name=f"auto-{backup_id}",
        backup_type=kind,
        status=status,
        created=dt.datetime.fromisoformat(created),
        size_gb=1.5,
        protected=False,
    )


def kyiv(text: str) -> dt.datetime:
    """An instant given as Kyiv wall time."""
    return provider_instant(dt.datetime.fromisoformat(text), KYIV)


def check(
    backups: list[Backup],
    now: str,
    *,
    runs: Runs = NIGHTLY,
    others: tuple[Runs, ...] = (),
    since: dt.datetime = SINCE,
    previous_successful: dt.datetime | None = None,
) -> Assessment:
    return assess(
        runs,
        others,
        backups,
        zone=KYIV,
        grace=GRACE,
        now=kyiv(now),
        previous=Expectations(runs.days, runs.time, since),
        previous_successful=previous_successful,
    )


def test_before_the_first_run_is_due_the_condition_is_unknown_and_says_when() -> None:
    result = check([], "2026-12-01T23:00")
    assert (result.health.status, result.health.reason) == ("Unknown", AWAITING)
    assert result.health.message == "the first run is due at 2026-12-02T00:00:00Z"
    assert result.last_backup is None
    assert result.last_successful is None


def test_a_nights_active_backup_makes_the_schedule_healthy() -> None:
    result = check([backup("2026-12-02T02:00:41")], "2026-12-02T02:30")
    assert (result.health.status, result.health.reason) == ("True", COMPLETED)
    assert result.health.message == (
        "backup 900 'auto-900' of the run at 2026-12-02T00:00:00Z is active"
    )
    assert result.last_backup is not None
    assert result.last_backup.created == dt.datetime(2026, 12, 2, 0, 0, 41, tzinfo=dt.UTC)
    assert result.last_successful == result.last_backup.created


def test_a_run_in_progress_within_the_grace_is_not_judged_yet() -> None:
    first = check([backup("2026-12-02T02:00:41", status="saving")], "2026-12-02T02:30")
    assert (first.health.status, first.health.reason) == ("Unknown", AWAITING)
    assert first.last_backup is not None
    assert first.last_backup.backup.status == "saving"
    assert first.last_successful is None

    listed = [
        backup("2026-12-02T02:00:41", backup_id="1"),
        backup("2026-12-03T02:00:30", status="saving", backup_id="2"),
    ]
    later = check(listed, "2026-12-03T02:30")
    assert (later.health.status, later.health.reason) == ("True", COMPLETED)
    assert "of the run at 2026-12-02T00:00:00Z" in later.health.message  # the night before


def test_no_backup_within_the_grace_makes_the_run_overdue() -> None:
    waiting = check([], "2026-12-02T04:59")
    assert (waiting.health.status, waiting.health.reason) == ("Unknown", AWAITING)
    assert "overdue from 2026-12-02T03:00:00Z" in waiting.health.message
    overdue = check([], "2026-12-02T05:00")
    assert (overdue.health.status, overdue.health.reason) == ("False", OVERDUE)
    assert overdue.health.message == (
        "no backup appeared within 3 h after the run at 2026-12-02T00:00:00Z"
    )


def test_a_late_backup_within_the_grace_still_counts() -> None:
    result = check([backup("2026-12-02T04:40:00")], "2026-12-02T06:00")
    assert (result.health.status, result.health.reason) == ("True", COMPLETED)


def test_a_backup_later_than_the_grace_belongs_to_no_run() -> None:
    result = check([backup("2026-12-02T05:00:01")], "2026-12-02T06:00")
    assert (result.health.status, result.health.reason) == ("False", OVERDUE)
    assert result.last_backup is None


def test_a_backup_still_in_progress_after_the_grace_is_overdue() -> None:
    result = check([backup("2026-12-02T02:01:00", status="saving")], "2026-12-02T05:00")
    assert (result.health.status, result.health.reason) == ("False", OVERDUE)
    assert "is still 'saving' 3 h after the run" in result.health.message


def test_a_failed_backup_is_reported_at_once_without_waiting_for_the_grace() -> None:
    result = check([backup("2026-12-02T02:00:10", status="error")], "2026-12-02T02:20")
    assert (result.health.status, result.health.reason) == ("False", FAILED)
    assert result.health.message == (
        "backup 900 'auto-900' of the run at 2026-12-02T00:00:00Z failed (error)"
    )
    assert result.last_backup is not None
    assert result.last_backup.backup.status == "error"


def test_the_next_nights_active_backup_recovers_from_a_failure() -> None:
    listed = [
        backup("2026-12-02T02:00:10", status="error", backup_id="1"),
        backup("2026-12-03T02:00:12", backup_id="2"),
    ]
    failed_night = check(listed[:1], "2026-12-02T09:00")
    assert failed_night.health.reason == FAILED
    recovered = check(listed, "2026-12-03T02:10")
    assert (recovered.health.status, recovered.health.reason) == ("True", COMPLETED)
    assert recovered.last_backup is not None
    assert recovered.last_backup.backup.id == "2"


def test_an_overdue_night_recovers_with_the_next_active_backup() -> None:
    assert check([], "2026-12-02T09:00").health.reason == OVERDUE
    result = check([backup("2026-12-03T02:00:12")], "2026-12-03T02:30")
    assert result.health.reason == COMPLETED


def test_a_failure_stays_reported_until_the_next_run_is_judged() -> None:
    listed = [backup("2026-12-02T02:00:10", status="error")]
    # The next night's run is due but its window is open and nothing has finished.
    result = check(listed, "2026-12-03T02:30")
    assert result.health.reason == FAILED


def test_a_run_across_midnight_counts_its_backup_taken_after_midnight() -> None:
    late_evening = Runs("15", "late", frozenset({Weekday.SUNDAY}), "23:30")
    # Sunday 2026-12-06 23:30 Kyiv; the backup is made at 00:20 on Monday.
    result = check(
        [backup("2026-12-07T00:20:00")],
        "2026-12-07T01:00",
        runs=late_evening,
    )
    assert (result.health.status, result.health.reason) == ("True", COMPLETED)
    assert "of the run at 2026-12-06T21:30:00Z" in result.health.message


def test_a_weekly_run_across_the_week_boundary_is_judged_a_week_later() -> None:
    saturday = Runs("16", "weekly", frozenset({Weekday.SATURDAY}), "23:00")
    listed = [backup("2026-12-05T23:10:00")]  # Saturday night
    result = check(listed, "2026-12-12T22:59", runs=saturday)  # the next Saturday, before 23:00
    assert result.health.reason == COMPLETED
    assert "2026-12-05T21:00:00Z" in result.health.message
    overdue = check(listed, "2026-12-13T02:00", runs=saturday)
    assert (overdue.health.reason, "2026-12-12T21:00:00Z" in overdue.health.message) == (
        OVERDUE,
        True,
    )


def test_two_schedules_at_the_same_time_both_count_the_backup_and_say_so() -> None:
    twin = Runs("20", "twin", EVERY_DAY, "02:00")
    listed = [backup("2026-12-02T02:00:41")]
    mine = check(listed, "2026-12-02T02:30", others=(twin,))
    theirs = check(listed, "2026-12-02T02:30", runs=twin, others=(NIGHTLY,))
    for result, other in ((mine, "schedule 20 'twin'"), (theirs, "schedule 14 'nightly'")):
        assert result.health.reason == COMPLETED
        assert f"(also counted by {other}, which runs at the same time)" in result.health.message


def test_a_backup_belongs_to_the_schedule_whose_run_preceded_it_most_recently() -> None:
    later = Runs("21", "later", EVERY_DAY, "02:30")
    listed = [
        backup("2026-12-02T02:10:00", backup_id="1"),
        backup("2026-12-02T02:40:00", backup_id="2"),
    ]
    assert [a.backup.id for a in attribute(NIGHTLY, [later], listed, KYIV, GRACE)] == ["1"]
    assert [a.backup.id for a in attribute(later, [NIGHTLY], listed, KYIV, GRACE)] == ["2"]


def test_a_window_ends_at_the_schedules_next_run_when_that_is_sooner_than_the_grace() -> None:
    twice = Runs("22", "twice", EVERY_DAY, "02:00")
    long_grace = dt.timedelta(days=3)
    listed = [backup("2026-12-03T01:59:00")]  # a day later, just before the next run
    [item] = attribute(twice, [], listed, KYIV, long_grace)
    assert item.run == kyiv("2026-12-02T02:00")


def test_manual_backups_and_backups_without_a_time_are_never_attributed() -> None:
    undated = Backup("901", "x", "auto", "active", None, None, False)
    listed = [backup("2026-12-02T02:00:41", kind="manual"), undated]
    assert attribute(NIGHTLY, [], listed, KYIV, GRACE) == []


def test_runs_before_the_expectations_started_are_not_expected() -> None:
    since = kyiv("2026-12-02T10:00")  # watched from after last night's run
    result = check([], "2026-12-02T11:00", since=since)
    assert (result.health.status, result.health.reason) == ("Unknown", AWAITING)
    assert result.health.message == "the first run is due at 2026-12-03T00:00:00Z"


def test_an_older_backup_is_still_shown_before_the_first_expected_run() -> None:
    since = kyiv("2026-12-02T10:00")
    result = check([backup("2026-12-02T02:00:41")], "2026-12-02T11:00", since=since)
    assert result.health.reason == AWAITING
    assert result.last_backup is not None
    assert result.last_successful is not None


def test_changed_days_or_time_restart_the_expectations_now() -> None:
    now = kyiv("2026-12-02T11:00")
    moved = Runs("14", "nightly", EVERY_DAY, "05:00")
    result = assess(
        moved,
        [],
        [],
        zone=KYIV,
        grace=GRACE,
        now=now,
        previous=Expectations(NIGHTLY.days, NIGHTLY.time, SINCE),
        previous_successful=None,
    )
    assert result.expectations == Expectations(EVERY_DAY, "05:00", now)
    assert result.health.reason == AWAITING


def test_the_last_successful_time_never_goes_back_when_backups_rotate_away() -> None:
    kept = kyiv("2026-12-05T02:00")
    result = check([backup("2026-12-02T02:00:41")], "2026-12-02T03:00", previous_successful=kept)
    assert result.last_successful == kept


@pytest.mark.parametrize(
    ("created", "expected"),
    [
        ("2026-03-29T02:30", "2026-03-29T00:30:00Z"),  # before the spring-forward gap (03:00)
        ("2026-03-29T04:30", "2026-03-29T01:30:00Z"),  # after it: UTC+3
        ("2026-10-25T03:30", "2026-10-25T00:30:00Z"),  # the fold: the earlier instant
    ],
)
def test_backup_times_on_zomros_clock_become_utc_instants(created: str, expected: str) -> None:
    instant = provider_instant(dt.datetime.fromisoformat(created), KYIV)
    assert instant.strftime("%Y-%m-%dT%H:%M:%SZ") == expected
