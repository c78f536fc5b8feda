"""Whether a schedule's backups happen: which auto backups belong to it, and what its
``BackupsHealthy`` condition says. Pure and cluster-free; the rule is in docs/backups.md.

Nothing at Zomro ties an ``auto`` backup to the schedule that made it, so backups are attributed
by time:

- a schedule's runs are the instants at which Zomro's clock shows one of its days at its time,
  as Zomro holds them (the schedules listing);
- a run's window opens at the run and lasts the grace period, or until the schedule's next run
  if that comes sooner;
- an auto backup belongs to the schedule whose run most recently preceded its creation, if the
  backup was created within that run's window; schedules of the instance whose runs are at the
  same instant all count it, and say so (nothing tells which of them made it).

Only runs since ``Expectations.since`` (when the operator started watching these days and time)
are expected; the condition judges the latest expected run whose outcome is known: an active
backup (``True``), a failed one (``False``, ``BackupFailed``), none or none usable once the
window has closed (``False``, ``BackupOverdue``). A run whose window is still open and whose
backup has not finished is not judged yet: the condition keeps saying what the run before it
said, or ``Unknown`` (``AwaitingFirstRun``) before the first judged run.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Final, Literal
from zoneinfo import ZoneInfo

from zomro_backup_operator.time_zones import format_rfc3339, next_run
from zomro_backup_operator.zomro.models import Backup, Schedule, Weekday

BACKUPS_HEALTHY: Final = "BackupsHealthy"
COMPLETED: Final = "BackupCompleted"
FAILED: Final = "BackupFailed"
OVERDUE: Final = "BackupOverdue"
AWAITING: Final = "AwaitingFirstRun"
SUSPENDED: Final = "Suspended"

AUTO: Final = "auto"
FAILED_STATUSES: Final = frozenset({"error", "failed", "killed"})
"""Fleio statuses of a backup that will never become usable. Any other status that is not
``active`` counts as still in progress, until the run's window closes (then: overdue)."""

_WEEK: Final = dt.timedelta(days=15)
"""Further back than any weekly schedule's previous run, even one a daylight-saving gap skipped."""

State = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Runs:
    """A schedule's runs as Zomro holds them: its days and time on Zomro's clock."""

    schedule_id: str
    name: str
    days: frozenset[Weekday]
    time: str

    @classmethod
    def of(cls, schedule: Schedule) -> Runs:
        return cls(schedule.id, schedule.name, schedule.days, schedule.time)

    def after(self, instant: dt.datetime, zone: ZoneInfo) -> Iterator[dt.datetime]:
        """Every run strictly after ``instant``, in order, in UTC."""
        while True:
            instant = next_run(self.days, self.time, zone, instant)
            yield instant

    def latest_at_or_before(self, instant: dt.datetime, zone: ZoneInfo) -> dt.datetime:
        """The last run at or before ``instant`` (a weekly schedule has one within 15 days)."""
        earlier = self.after(instant - _WEEK, zone)
        latest = next(earlier)
        while (run := next(earlier)) <= instant:
            latest = run
        return latest

    def window_end(self, run: dt.datetime, zone: ZoneInfo, grace: dt.timedelta) -> dt.datetime:
        """When the window of ``run`` closes: after the grace, or at the next run if sooner."""
        return min(run + grace, next(self.after(run, zone)))


@dataclass(frozen=True)
class Expectations:
    """The days and time (Zomro's clock) whose runs are expected, and since when."""

    days: frozenset[Weekday]
    time: str
    since: dt.datetime

    def holds_for(self, runs: Runs) -> bool:
        return self.days == runs.days and self.time == runs.time


@dataclass(frozen=True)
class Attributed:
    """An auto backup that belongs to the schedule, and to which of its runs."""

    backup: Backup
    created: dt.datetime
    """In UTC."""
    run: dt.datetime
    shared_with: tuple[str, ...] = ()
    """Descriptions of other schedules of the instance that run at the same instant and so
    count this backup too."""

    @property
    def failed(self) -> bool:
        return self.backup.status in FAILED_STATUSES


@dataclass(frozen=True)
class Health:
    """The BackupsHealthy condition's content, without its bookkeeping timestamps."""

    status: State
    reason: str
    message: str

    @property
    def overdue(self) -> bool:
        return self.reason == OVERDUE

    @property
    def failed(self) -> bool:
        return self.reason == FAILED


@dataclass(frozen=True)
class Assessment:
    """What the status should say about the schedule's backups."""

    health: Health
    expectations: Expectations
    last_backup: Attributed | None
    """The newest backup attributed to the schedule, whatever its state; None if none is."""
    last_successful: dt.datetime | None
    """When the newest usable backup attributed to it was created (never earlier than the
    previous value: older backups rotate away)."""


SUSPENDED_HEALTH: Final = Health(
    "Unknown", SUSPENDED, "the schedule is suspended: no backups are expected"
)


def provider_instant(created: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """A backup's naive creation time on Zomro's clock as a UTC instant (in a fall-back fold,
    the earlier of the two)."""
    return created.replace(tzinfo=zone, fold=0).astimezone(dt.UTC)


def attribute(
    runs: Runs,
    others: Sequence[Runs],
    backups: Iterable[Backup],
    zone: ZoneInfo,
    grace: dt.timedelta,
) -> list[Attributed]:
    """The instance's auto backups that belong to ``runs``, oldest first (the module's rule)."""
    mine = []
    for backup in backups:
        if backup.backup_type != AUTO or backup.created is None:
            continue
        created = provider_instant(backup.created, zone)
        owners = _owners(created, [runs, *others], zone, grace)
        if owners and owners[0][0] is runs:
            shared = tuple(_describe(other) for other, _ in owners[1:])
            mine.append(Attributed(backup, created, owners[0][1], shared))
    return sorted(mine, key=lambda item: (item.created, item.backup.id))


def _owners(
    created: dt.datetime, candidates: Sequence[Runs], zone: ZoneInfo, grace: dt.timedelta
) -> list[tuple[Runs, dt.datetime]]:
    """The schedules whose run most recently preceded ``created`` within its window, with that
    run; the first candidate stays first when it is one of them."""
    open_runs = []
    for candidate in candidates:
        run = candidate.latest_at_or_before(created, zone)
        if created < candidate.window_end(run, zone, grace):
            open_runs.append((candidate, run))
    if not open_runs:
        return []
    latest = max(run for _, run in open_runs)
    return [(candidate, run) for candidate, run in open_runs if run == latest]


def _describe(runs: Runs) -> str:
    return f"schedule {runs.schedule_id} {runs.name!r}"


def assess(
    runs: Runs,
    others: Sequence[Runs],
    backups: Iterable[Backup],
    *,
    zone: ZoneInfo,
    grace: dt.timedelta,
    now: dt.datetime,
    previous: Expectations | None,
    previous_successful: dt.datetime | None,
) -> Assessment:
    """The schedule's backup outcome at ``now``. ``previous`` is what status recorded; when it
    is missing or was for other days or another time, expectations start at ``now``."""
    expectations = (
        previous
        if previous is not None and previous.holds_for(runs)
        else Expectations(runs.days, runs.time, now)
    )
    mine = attribute(runs, others, backups, zone, grace)
    successful = [item.created for item in mine if item.backup.usable]
    if previous_successful is not None:
        successful.append(previous_successful)
    return Assessment(
        health=_health(runs, mine, zone, grace, now, expectations.since),
        expectations=expectations,
        last_backup=mine[-1] if mine else None,
        last_successful=max(successful, default=None),
    )


def _health(
    runs: Runs,
    mine: Sequence[Attributed],
    zone: ZoneInfo,
    grace: dt.timedelta,
    now: dt.datetime,
    since: dt.datetime,
) -> Health:
    latest = runs.latest_at_or_before(now, zone)
    before = runs.latest_at_or_before(latest - dt.timedelta(microseconds=1), zone)
    expected = [run for run in (before, latest) if run >= since]
    for run in reversed(expected):
        of_run = [item for item in mine if item.run == run]
        closed = now >= runs.window_end(run, zone, grace)
        judged = _judge(run, of_run, closed=closed, grace=grace)
        if judged is not None:
            return judged
    if expected:
        run = expected[-1]
        message = (
            f"waiting for the backup of the run at {format_rfc3339(run)}; "
            f"overdue from {format_rfc3339(runs.window_end(run, zone, grace))}"
        )
    else:
        upcoming = next(runs.after(now, zone))
        message = f"the first run is due at {format_rfc3339(upcoming)}"
    return Health("Unknown", AWAITING, message)


def _judge(
    run: dt.datetime, of_run: Sequence[Attributed], *, closed: bool, grace: dt.timedelta
) -> Health | None:
    """The outcome of one run, or None while its window is open and nothing has finished."""
    at = format_rfc3339(run)
    usable = [item for item in of_run if item.backup.usable]
    if usable:
        item = usable[-1]
        return Health("True", COMPLETED, f"{_backup(item)} of the run at {at} is active")
    failed = [item for item in of_run if item.failed]
    if failed:
        item = failed[-1]
        return Health(
            "False", FAILED, f"{_backup(item)} of the run at {at} failed ({item.backup.status})"
        )
    if not closed:
        return None
    if of_run:
        item = of_run[-1]
        return Health(
            "False",
            OVERDUE,
            f"{_backup(item)} of the run at {at} is still {item.backup.status!r} "
            f"{_duration(grace)} after the run",
        )
    return Health(
        "False", OVERDUE, f"no backup appeared within {_duration(grace)} after the run at {at}"
    )


def _backup(item: Attributed) -> str:
    text = f"backup {item.backup.id} {item.backup.name!r}"
    if item.shared_with:
        text += f" (also counted by {', '.join(item.shared_with)}, which runs at the same time)"
    return text


def _duration(span: dt.timedelta) -> str:
    seconds = int(span.total_seconds())
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
