"""Building the resource's status in one place, and writing only what changed."""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zomro_backup_operator.backup_outcomes import BACKUPS_HEALTHY, Assessment, Expectations, Health
from zomro_backup_operator.resources import Timing
from zomro_backup_operator.time_zones import format_rfc3339
from zomro_backup_operator.zomro.models import Schedule, ScheduleSpec, Weekday

READY = "Ready"
SYNCED = "Synced"
"""The Ready condition's reason while Zomro holds what the spec asks for."""
_CONDITION_FIELDS = ("status", "reason", "message", "observedGeneration")


def iso(epoch: float) -> str:
    """RFC 3339 in UTC, to the second, as status shows times."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Readiness:
    """The Ready condition's content, without its bookkeeping timestamps."""

    ready: bool
    reason: str
    message: str


SUSPENDED = Readiness(
    False,
    "Suspended",
    "spec.suspend is true: Zomro holds no schedule for this resource; set it to false to "
    "create the schedule again",
)

_TRACKING = frozenset({"nextRunTime"})
"""Fields that move by themselves as time passes (after each run), not because of a sync."""


def _days(days: frozenset[Weekday]) -> str:
    return ", ".join(day.title for day in sorted(days))


def synced(
    schedule: Schedule, wanted: ScheduleSpec | None = None, zone: str | None = None
) -> Readiness:
    """Ready=True; with spec.timeZone (``wanted`` on ``zone``'s clock) the message says both."""
    runs = f"runs {_days(schedule.days)} at {schedule.time}"
    if wanted is not None and zone is not None:
        runs += f" on Zomro's clock ({_days(wanted.days)} at {wanted.time} {zone})"
    return Readiness(True, SYNCED, f"Zomro schedule {schedule.id} {schedule.name!r} {runs}")


def ready_condition(
    readiness: Readiness, generation: int, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """A Ready condition whose lastTransitionTime moves only when its status flips."""
    status = "True" if readiness.ready else "False"
    return _condition(READY, status, readiness.reason, readiness.message, generation, previous, now)


def _condition(
    kind: str,
    status: str,
    reason: str,
    message: str,
    generation: int,
    previous: Mapping[str, Any] | None,
    now: str,
) -> dict[str, Any]:
    unchanged = previous is not None and previous.get("status") == status
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": (previous or {}).get("lastTransitionTime", now) if unchanged else now,
        "observedGeneration": generation,
    }


def find_condition(status: Mapping[str, Any], kind: str) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == kind:
            return condition
    return None


def find_ready(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return find_condition(status, READY)


def _conditions_with(
    current: Mapping[str, Any], condition: dict[str, Any]
) -> list[Mapping[str, Any]] | None:
    """The conditions list with ``condition`` in place of its type's, or None when status
    already says the same (the other conditions are kept as they are)."""
    previous = find_condition(current, condition["type"])
    if previous is not None and all(
        previous.get(key) == condition[key] for key in _CONDITION_FIELDS
    ):
        return None
    others = [
        c
        for c in current.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") != condition["type"]
    ]
    return [*others, condition]


def ready_changes(
    current: Mapping[str, Any], readiness: Readiness, generation: int, now: str
) -> dict[str, Any]:
    """``{"conditions": [...]}`` when the Ready condition must change to say ``readiness``, else
    empty: the part of a status patch that every kind of resource shares."""
    conditions = _conditions_with(
        current, ready_condition(readiness, generation, find_ready(current), now)
    )
    return {} if conditions is None else {"conditions": conditions}


def changes(
    current: Mapping[str, Any],
    readiness: Readiness,
    generation: int,
    *,
    schedule: Schedule | None = None,
    timing: Timing | None = None,
    clear_pending: bool = False,
    suspended: bool = False,
    now: str,
) -> dict[str, Any]:
    """The status fields to patch so that status says ``readiness`` (and ``schedule`` when
    reconciled, with ``timing`` its next run; or, ``suspended``, that Zomro holds nothing).
    Empty when status already says so: an idle resync writes nothing. nextRunTime is written
    when it changes, that is once after each run (and with the schedule), and does not move
    lastSyncTime."""
    wanted: dict[str, Any] = {}
    if schedule is not None:
        wanted["scheduleId"] = schedule.id
        wanted["scheduleName"] = schedule.name
        if schedule.server_name:
            wanted["serverName"] = schedule.server_name
        wanted["observedGeneration"] = generation
        wanted["providerDays"] = [day.title for day in sorted(schedule.days)]
        wanted["providerTime"] = schedule.time
        if timing is not None:
            wanted["nextRunTime"] = format_rfc3339(timing.next_run)
    if suspended:  # what is needed to resume is the spec; what Zomro held is gone
        wanted.update(
            scheduleId=None,
            providerDays=None,
            providerTime=None,
            nextRunTime=None,
            observedGeneration=generation,
        )
    if (clear_pending or suspended) and current.get("pendingCreate") is not None:
        wanted["pendingCreate"] = None
    patch = {key: value for key, value in wanted.items() if current.get(key) != value}
    patch.update(ready_changes(current, readiness, generation, now))
    if set(patch) - _TRACKING and schedule is not None and readiness.ready:
        patch["lastSyncTime"] = now
    return patch


def find_backups_healthy(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    return find_condition(status, BACKUPS_HEALTHY)


def backup_changes(
    current: Mapping[str, Any],
    assessment: Assessment,
    generation: int,
    *,
    now: datetime.datetime,
) -> dict[str, Any]:
    """The status fields to patch so that status says ``assessment``: lastBackup,
    lastSuccessfulBackupTime, expectedRuns and the BackupsHealthy condition. Empty when status
    already says so: an idle check writes nothing."""
    wanted: dict[str, Any] = {"expectedRuns": _expectations_to_status(assessment.expectations)}
    last = assessment.last_backup
    if last is not None:
        wanted["lastBackup"] = {
            "id": last.backup.id,
            "name": last.backup.name,
            "time": format_rfc3339(last.created),
            "state": last.backup.status,
        }
    if assessment.last_successful is not None:
        wanted["lastSuccessfulBackupTime"] = format_rfc3339(assessment.last_successful)
    patch = {key: value for key, value in wanted.items() if current.get(key) != value}
    conditions = _conditions_with(
        current, _health_condition(current, assessment.health, generation, now)
    )
    if conditions is not None:
        patch["conditions"] = conditions
    return patch


def suspended_changes(
    current: Mapping[str, Any], health: Health, generation: int, *, now: datetime.datetime
) -> dict[str, Any]:
    """While suspended no run is expected: the expectations are dropped (they start again when
    the schedule resumes) and the condition says why."""
    patch: dict[str, Any] = {"expectedRuns": None} if current.get("expectedRuns") else {}
    conditions = _conditions_with(current, _health_condition(current, health, generation, now))
    if conditions is not None:
        patch["conditions"] = conditions
    return patch


def _health_condition(
    current: Mapping[str, Any], health: Health, generation: int, now: datetime.datetime
) -> dict[str, Any]:
    previous = find_backups_healthy(current)
    return _condition(
        BACKUPS_HEALTHY,
        health.status,
        health.reason,
        health.message,
        generation,
        previous,
        format_rfc3339(now),
    )


def _expectations_to_status(expectations: Expectations) -> dict[str, Any]:
    return {
        "days": [day.title for day in sorted(expectations.days)],
        "time": expectations.time,
        "since": format_rfc3339(expectations.since),
    }


def expectations_from(status: Mapping[str, Any]) -> Expectations | None:
    """status.expectedRuns as the check wrote it; None when absent or not in its form (the
    expectations then start again)."""
    record = status.get("expectedRuns")
    if not isinstance(record, Mapping):
        return None
    since = parse_time(record.get("since"))
    try:
        days = frozenset(Weekday.from_name(str(day)) for day in record.get("days") or [])
    except ValueError:
        return None
    time_of_day = record.get("time")
    if since is None or not days or not isinstance(time_of_day, str):
        return None
    return Expectations(days, time_of_day, since)


def parse_time(value: object) -> datetime.datetime | None:
    """An RFC 3339 UTC time as status holds them (``2026-12-02T00:00:41Z``), or None."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ")
    except ValueError:
        return None
    return parsed.replace(tzinfo=datetime.UTC)
