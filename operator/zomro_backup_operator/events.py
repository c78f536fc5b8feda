"""Human sentences for Kubernetes Events, in one place."""

from __future__ import annotations

from zomro_backup_operator.reconcile import Action, Outcome
from zomro_backup_operator.zomro.models import Schedule, ScheduleSpec


def describe_change(before: Schedule, after: ScheduleSpec) -> str:
    parts = []
    if before.name != after.name:
        parts.append(f"name {before.name!r} -> {after.name!r}")
    if before.days != after.days:
        parts.append(f"days {_days(before)} -> {_days_of(after)}")
    if before.time != after.time:
        parts.append(f"time {before.time} -> {after.time}")
    return ", ".join(parts) or "no visible change"


def _days(schedule: Schedule) -> str:
    return ",".join(day.title[:3] for day in sorted(schedule.days))


def _days_of(spec: ScheduleSpec) -> str:
    return ",".join(day.title[:3] for day in sorted(spec.days))


def for_outcome(
    outcome: Outcome, instance_id: str, *, drift: bool, shifted: str | None = None
) -> tuple[str, str] | None:
    """(reason, message) of the Event to post, or None when nothing happened. ``shifted``: the
    update followed a daylight-saving transition between spec.timeZone (its value) and Zomro's
    clock."""
    schedule = outcome.schedule
    where = f"Zomro schedule {schedule.id} {schedule.name!r} on instance {instance_id}"
    change = f" ({describe_change(outcome.previous, schedule.spec)})" if outcome.previous else ""
    if outcome.action is Action.SYNCED:
        return None
    if shifted is not None and outcome.action is Action.UPDATED:
        return "ScheduleShifted", (
            f"{where} moved on Zomro's clock so that it keeps running at the same {shifted} "
            f"time: the offset between the two clocks changed (daylight saving){change}"
        )
    if drift and outcome.action is Action.UPDATED:
        return "DriftCorrected", f"{where} was changed outside the operator; restored{change}"
    if outcome.action is Action.RECREATED:
        lead = "DriftCorrected" if drift else "Recreated"
        return lead, (
            f"Zomro schedule {outcome.previous_id} was removed outside the operator; "
            f"replaced by {where}{change}"
        )
    if outcome.action is Action.CREATED:
        return "Created", f"Created {where}"
    if outcome.action is Action.ADOPTED:
        return "Adopted", f"Adopted existing {where}{change}"
    return "Updated", f"Changed {where}{change}"
