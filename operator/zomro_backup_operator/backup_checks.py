"""The periodic backup check of one BackupSchedule, in Kubernetes terms: read the instance's
shared listings, ask the core (backup_outcomes.py) what they mean, write status only when that
changed, post an Event when the BackupsHealthy condition changes, keep the metrics."""

from __future__ import annotations

import datetime as dt
import logging

import kopf

from zomro_backup_operator import status
from zomro_backup_operator.backup_outcomes import SUSPENDED_HEALTH, Assessment, Health, Runs, assess
from zomro_backup_operator.failures import classify
from zomro_backup_operator.handling import HandlerCall
from zomro_backup_operator.resources import InvalidSpecError, InvalidStatusError
from zomro_backup_operator.runtime import Runtime

logger = logging.getLogger(__name__)

SCHEDULES_MAX_AGE = 1.5
"""The check reads the schedules listing the drift check keeps fresh, accepting it up to this
many resync periods old, so that it never costs a schedules listing of its own."""

LISTING_MAX_AGE = 0.9
"""A backups listing younger than this many check periods is reused by the instance's other
schedules: one listing per instance per period."""


async def check(rt: Runtime, res: HandlerCall, *, deleting: bool) -> None:
    """Report the outcome of the schedule's backups. Leaves alone a resource being deleted or
    that no handler has reconciled at its current generation; a suspended one expects none."""
    if deleting:
        return
    if res.spec.get("suspend") is True:  # the one place suspension enters the backup check
        now = rt.clock.now()
        patch = status.suspended_changes(res.status, SUSPENDED_HEALTH, res.generation, now=now)
        _report(rt, res, patch, SUSPENDED_HEALTH)
        return
    try:
        desired = res.desired(rt)
        observed = res.observed()
    except (InvalidSpecError, InvalidStatusError):  # the other handlers report these
        return
    if observed.schedule_id is None or observed.observed_generation != res.generation:
        return
    try:
        async with rt.zomro(
            desired.namespace, desired.secret_name, desired.instance_id, deleting=False
        ) as (client, slot):
            async with slot.lock:
                rows = await slot.schedules(
                    lambda: client.list_schedules(desired.instance_id),
                    max_age=rt.settings.resync_seconds * SCHEDULES_MAX_AGE,
                )
            listing = await slot.backups(
                lambda: client.list_backups(desired.instance_id),
                max_age=rt.settings.backup_check_seconds * LISTING_MAX_AGE,
            )
    except Exception as exc:  # the next period tries again; the condition keeps its value
        failure = classify(exc)  # Ready reports these failures (the drift check sees them too)
        if failure.reason == "Error":
            logger.exception("Backup check of %s failed", res.key)
        else:
            logger.warning(
                "Backup check of %s skipped: %s: %s", res.key, failure.reason, failure.message
            )
        return
    mine = next((row for row in rows if row.id == observed.schedule_id), None)
    if mine is None:  # removed behind our back: the drift check restores it
        return
    now = rt.clock.now()
    assessment = assess(
        Runs.of(mine),
        [Runs.of(row) for row in rows if row.id != mine.id],
        listing.backups,
        zone=rt.settings.provider_zone,
        grace=dt.timedelta(seconds=rt.settings.backup_grace_seconds),
        now=now,
        previous=status.expectations_from(res.status),
        previous_successful=status.parse_time(res.status.get("lastSuccessfulBackupTime")),
    )
    patch = status.backup_changes(res.status, assessment, res.generation, now=now)
    _report(rt, res, patch, assessment.health, assessment=assessment)


def _report(
    rt: Runtime,
    res: HandlerCall,
    patch: dict[str, object],
    health: Health,
    *,
    assessment: Assessment | None = None,
) -> None:
    before = status.find_backups_healthy(res.status)
    res.patch.status.update(patch)
    successful = assessment.last_successful if assessment is not None else None
    if successful is None:
        successful = status.parse_time(res.status.get("lastSuccessfulBackupTime"))
    rt.backups.set(
        res.namespace,
        res.name,
        str(res.spec.get("instanceId") or ""),
        last_successful=successful.timestamp() if successful is not None else None,
        overdue=health.overdue,
        failed=health.failed,
    )
    if before is None and health.status == "Unknown":
        return  # a first "nothing to judge yet" is no news: no Event for every new resource
    if before is None or (before.get("status"), before.get("reason")) != (
        health.status,
        health.reason,
    ):
        kind = "Warning" if health.status == "False" else "Normal"
        kopf.event(res.body, type=kind, reason=health.reason, message=health.message)
