"""Human sentences for Kubernetes Events, in one place."""

from __future__ import annotations

from zomro_backup_operator.manual_backup import Progress, Removal
from zomro_backup_operator.reconcile import Action, Outcome
from zomro_backup_operator.retention import RotationOutcome
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


def for_backup_progress(before: str | None, progress: Progress) -> tuple[str, str, str] | None:
    """(type, reason, message) of the Event for a Backup's step, or None when its phase and
    reason did not change (a backup followed every few seconds posts one Event per change)."""
    if before == f"{progress.phase}/{progress.reason}":
        return None
    if progress.reason in ("DailyLimit", "BackupFailed", "BackupGone"):
        return "Warning", progress.reason, progress.message
    return "Normal", progress.reason, progress.message


def for_backup_removal(removal: Removal, backup_id: str | None, instance_id: str) -> str:
    return {
        Removal.DELETED: f"Deleted Zomro backup {backup_id} of instance {instance_id}",
        Removal.RETAINED: (
            f"Left Zomro backup {backup_id} of instance {instance_id} in place "
            "(deletionPolicy Retain)"
        ),
        Removal.NOTHING: f"No Zomro backup of instance {instance_id} to delete",
    }[removal]


def for_rotation(outcome: RotationOutcome, instance_id: str, *, drift: bool) -> tuple[str, str]:
    """(reason, message) of the Event for a rotation that had to change."""
    was = "unset" if outcome.previous is None else str(outcome.previous)
    if drift:
        return "DriftCorrected", (
            f"Zomro's backup_rotation of instance {instance_id} was changed outside the "
            f"operator to {was}; restored to {outcome.keep}"
        )
    return "Updated", f"Set backup_rotation of instance {instance_id} from {was} to {outcome.keep}"
