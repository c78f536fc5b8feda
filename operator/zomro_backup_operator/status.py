"""Building the resource's status in one place, and writing only what changed."""

from __future__ import annotations

import datetime
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zomro_backup_operator.resources import Timing
from zomro_backup_operator.time_zones import format_rfc3339
from zomro_backup_operator.zomro.models import Schedule, ScheduleSpec, Weekday

READY = "Ready"


def iso(epoch: float) -> str:
    """RFC 3339 in UTC, to the second, as status shows times."""
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def now_iso() -> str:
    return iso(time.time())


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
    return Readiness(True, "Synced", f"Zomro schedule {schedule.id} {schedule.name!r} {runs}")


def ready_condition(
    readiness: Readiness, generation: int, previous: Mapping[str, Any] | None, now: str
) -> dict[str, Any]:
    """A Ready condition whose lastTransitionTime moves only when its status flips."""
    status = "True" if readiness.ready else "False"
    unchanged = previous is not None and previous.get("status") == status
    return {
        "type": READY,
        "status": status,
        "reason": readiness.reason,
        "message": readiness.message,
        "lastTransitionTime": (previous or {}).get("lastTransitionTime", now) if unchanged else now,
        "observedGeneration": generation,
    }


def find_ready(status: Mapping[str, Any]) -> Mapping[str, Any] | None:
    for condition in status.get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == READY:
            return condition
    return None


def ready_changes(
    current: Mapping[str, Any], readiness: Readiness, generation: int, now: str
) -> dict[str, Any]:
    """``{"conditions": [...]}`` when the Ready condition must change to say ``readiness``, else
    empty: the part of a status patch that every kind of resource shares."""
    previous = find_ready(current)
    condition = ready_condition(readiness, generation, previous, now)
    if previous is not None and all(
        previous.get(key) == condition[key]
        for key in ("status", "reason", "message", "observedGeneration")
    ):
        return {}
    others = [
        c
        for c in current.get("conditions") or []
        if isinstance(c, Mapping) and c.get("type") != READY
    ]
    return {"conditions": [*others, condition]}


def changes(
    current: Mapping[str, Any],
    readiness: Readiness,
    generation: int,
    *,
    schedule: Schedule | None = None,
    timing: Timing | None = None,
    clear_pending: bool = False,
    suspended: bool = False,
    now: str | None = None,
) -> dict[str, Any]:
    """The status fields to patch so that status says ``readiness`` (and ``schedule`` when
    reconciled, with ``timing`` its next run; or, ``suspended``, that Zomro holds nothing).
    Empty when status already says so: an idle resync writes nothing. nextRunTime is written
    when it changes, that is once after each run (and with the schedule), and does not move
    lastSyncTime."""
    now = now or now_iso()
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
