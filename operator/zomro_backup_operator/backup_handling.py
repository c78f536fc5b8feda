"""What the Backup and BackupRetention handlers do, in Kubernetes terms: resolve credentials, call
their cores (manual_backup.py, retention.py), write status, post Events. The shared machinery is
the schedules': the runtime's clients, Secrets, slots and claims, failures.classify, status's
Ready condition and the mid-handler status write for the crash-safe intent record."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, NoReturn

import kopf

from zomro_backup_operator import events, manual_backup, metrics, retention
from zomro_backup_operator.failures import Failure, classify
from zomro_backup_operator.handling import ResourceCall
from zomro_backup_operator.kube import StatusChangedError
from zomro_backup_operator.manual_backup import (
    BackupObserved,
    BackupRequest,
    Context,
    PendingBackup,
    Progress,
    Removal,
)
from zomro_backup_operator.reconcile import CreatePendingError
from zomro_backup_operator.resources import InvalidSpecError
from zomro_backup_operator.retention import RetentionRequest
from zomro_backup_operator.runtime import Runtime
from zomro_backup_operator.status import Readiness, find_ready, ready_changes
from zomro_backup_operator.time_zones import format_rfc3339

logger = logging.getLogger(__name__)


def backup_claim(backup_id: str) -> str:
    """The second half of the claim key of a Backup's image (never a schedule id: not digits)."""
    return f"backup:{backup_id}"


# --- Backup ---------------------------------------------------------------------------------


async def take_backup(rt: Runtime, res: ResourceCall, retry: int) -> None:
    """create/resume: one step towards the backup; raise (to be called again) until it is final."""
    try:
        request = BackupRequest.from_resource(
            namespace=res.namespace, name=res.name, generation=res.generation, spec=res.spec
        )
        observed = BackupObserved.from_status(res.status)
        zomro = rt.zomro(res.namespace, request.secret_name, request.instance_id, deleting=False)
        async with zomro as (client, slot), slot.lock:  # one decision per instance at a time
            progress = await manual_backup.take(
                request, observed, _context(rt, res, request, client), _recorder(rt, res)
            )
    except StatusChangedError as exc:  # another operator's request was recorded first
        raise classify(exc).to_kopf(retry) from exc
    except Exception as exc:
        phase = "InProgress" if isinstance(exc, CreatePendingError) else None
        if isinstance(exc, InvalidSpecError):
            phase = "Failed"
        _fail(rt, res, exc, retry, phase=phase)
    _write_progress(rt, res, request, progress)
    if progress.retry_in is not None:
        raise kopf.TemporaryError(f"{progress.reason}: {progress.message}", delay=progress.retry_in)


async def remove_backup(rt: Runtime, res: ResourceCall, retry: int) -> None:
    """delete: with Delete, delete the image, raising until Zomro confirms; Retain leaves it."""
    if res.uid in rt.deleted:
        return
    try:
        observed = BackupObserved.from_status(res.status)
        request = BackupRequest.from_resource(
            namespace=res.namespace, name=res.name, generation=res.generation, spec=res.spec
        )
        async with rt.zomro(
            res.namespace, request.secret_name, request.instance_id, deleting=True
        ) as (client, _slot):
            removal, backup_id = await manual_backup.remove(
                request, observed, _context(rt, res, request, client)
            )
    except Exception as exc:
        failure = classify(exc)
        if failure.reason != "Protected":  # its own message says what the deletion waits for
            failure = failure.holding()
        _fail(rt, res, exc, retry, failure=failure)
    rt.deleted.add(res.uid)
    if backup_id is not None:
        rt.claims.release(request.instance_id, backup_claim(backup_id), res.key)
    metrics.BACKUPS.labels(result=removal.value).inc()
    if removal is not Removal.NOTHING:
        kopf.event(
            res.body,
            type="Normal",
            reason=removal.name.title(),
            message=events.for_backup_removal(removal, backup_id, request.instance_id),
        )


def _context(rt: Runtime, res: ResourceCall, request: BackupRequest, client: Any) -> Context:
    def free(backup_id: str) -> bool:
        claim = backup_claim(backup_id)
        return rt.claims.owner(request.instance_id, claim, res.claims_index, res.key) is None

    return Context(
        zomro=client,
        now=rt.clock.now,
        zone=rt.settings.provider_zone,
        settle=rt.settings.create_settle_seconds,
        free=free,
        recheck=rt.settings.resync_seconds,
    )


def _recorder(rt: Runtime, res: ResourceCall) -> manual_backup.RecordPending:
    async def record(pending: PendingBackup | None) -> None:
        if pending is None:  # the request was refused: the handler's own patch clears it
            res.patch.status["pendingCreate"] = None
            res.status = {**res.status, "pendingCreate": None}
            return
        # Durable before Zomro is asked (docs/design.md); the same write shows the phase.
        progress = Progress(
            "InProgress",
            "Creating",
            f"waiting until Zomro lists backup {pending.name!r}, which it accepted"
            if pending.acknowledged
            else f"asking Zomro for backup {pending.name!r}",
        )
        patch = {
            **manual_backup.status_changes(
                res.status, progress, res.generation, now=_now(rt), zone=rt.settings.provider_zone
            ),
            "pendingCreate": pending.to_status(),
        }
        # Only onto the status the request was decided on, as for a schedule's create
        # (docs/design.md, "More than one operator").
        res.resource_version = await asyncio.to_thread(
            rt.kube.patch_status,
            res.namespace,
            res.name,
            patch,
            plural=manual_backup.PLURAL,
            resource_version=None if pending.acknowledged else res.resource_version,
        )
        res.status = {**res.status, **patch}

    return record


def _write_progress(
    rt: Runtime, res: ResourceCall, request: BackupRequest, progress: Progress
) -> None:
    before = _phase_reason(res.status)
    if progress.backup is not None and res.status.get("backupId") != progress.backup.id:
        rt.claims.claim(request.instance_id, backup_claim(progress.backup.id), res.key)
    patch = manual_backup.status_changes(
        res.status, progress, res.generation, now=_now(rt), zone=rt.settings.provider_zone
    )
    res.patch.status.update(patch)
    event = events.for_backup_progress(before, progress)
    if event is not None:
        if progress.phase in ("Completed", "Failed"):
            metrics.BACKUPS.labels(result=progress.phase.lower()).inc()
        elif progress.reason == "DailyLimit":
            metrics.BACKUPS.labels(result="daily_limit").inc()
        kopf.event(res.body, type=event[0], reason=event[1], message=event[2])


def _phase_reason(status: Mapping[str, Any]) -> str | None:
    ready = find_ready(status)
    return f"{status.get('phase')}/{ready.get('reason')}" if ready else None


# --- BackupRetention ------------------------------------------------------------------------


async def ensure_retention(rt: Runtime, res: ResourceCall, retry: int | None) -> None:
    """create/update/resume, and the drift timer (``retry`` None): hold Zomro's rotation at
    spec.keep. The timer reports failures in status and leaves retries to the next period."""
    drift = retry is None
    try:
        request = RetentionRequest.from_resource(
            namespace=res.namespace, name=res.name, generation=res.generation, spec=res.spec
        )
        claim = (request.instance_id, retention.ROTATION_CLAIM)
        retention.check_claim(request, rt.claims.owner(*claim, res.claims_index, res.key))
        rt.claims.claim(*claim, res.key)
        async with rt.zomro(
            res.namespace, request.secret_name, request.instance_id, deleting=False
        ) as (client, _slot):
            outcome = await retention.ensure_rotation(request, client)
    except Exception as exc:
        if drift:
            _report_failure(rt, res, classify(exc), plural=retention.PLURAL)
            return
        _fail(rt, res, exc, retry or 0, plural=retention.PLURAL)
    readiness = Readiness(
        True,
        "Synced",
        f"Zomro keeps the {request.keep} latest scheduled backups of instance "
        f"{request.instance_id}; {retention.LEFT_AS_IS}",
    )
    wanted = {
        "instanceId": request.instance_id,
        "rotation": outcome.keep,
        "observedGeneration": res.generation,
    }
    now = _now(rt)
    patch = {k: v for k, v in wanted.items() if res.status.get(k) != v}
    patch.update(ready_changes(res.status, readiness, res.generation, now))
    if outcome.changed:
        patch["lastSyncTime"] = now
        reason, message = events.for_rotation(outcome, request.instance_id, drift=drift)
        if drift:
            metrics.ROTATION_CORRECTIONS.inc()
        kopf.event(res.body, type="Normal", reason=reason, message=message)
    res.patch.status.update(patch)


async def release_retention(rt: Runtime, res: ResourceCall) -> None:
    """delete: Zomro's setting stays as it is; the instance's claim is given up."""
    held = str(res.status.get("instanceId") or "")
    if not held:
        # In Conflict, or never reconciled; but an attempt that failed after claiming the instance
        # left a claim this process alone knows of: drop that one (and nobody else's).
        instance_id = str(res.spec.get("instanceId") or "")
        if rt.claims.owner(instance_id, retention.ROTATION_CLAIM, {}) == res.key:
            rt.claims.release(instance_id, retention.ROTATION_CLAIM, res.key)
        return
    rt.claims.release(held, retention.ROTATION_CLAIM, res.key)
    kopf.event(
        res.body,
        type="Normal",
        reason="LeftAsIs",
        message=f"Left Zomro's backup_rotation of instance {held} as it is "
        f"({res.status.get('rotation')}); {retention.LEFT_AS_IS}",
    )


# --- both -----------------------------------------------------------------------------------


def _now(rt: Runtime) -> str:
    return format_rfc3339(rt.clock.now())


def _report_failure(
    rt: Runtime, res: ResourceCall, failure: Failure, *, plural: str, phase: str | None = None
) -> None:
    patch: dict[str, Any] = ready_changes(
        res.status, Readiness(False, failure.reason, failure.message), res.generation, _now(rt)
    )
    if plural == manual_backup.PLURAL:
        wanted = phase or res.status.get("phase") or "Pending"
        if res.status.get("phase") != wanted:
            patch["phase"] = wanted
    res.patch.status.update(patch)
    metrics.RECONCILES.labels(result="error").inc()
    if "conditions" in patch:  # post an Event on a change of state, not on every retry
        kopf.event(res.body, type="Warning", reason=failure.reason, message=failure.message)


def _fail(
    rt: Runtime,
    res: ResourceCall,
    exc: Exception,
    retry: int,
    *,
    failure: Failure | None = None,
    plural: str = manual_backup.PLURAL,
    phase: str | None = None,
) -> NoReturn:
    failure = failure or classify(exc)
    _report_failure(rt, res, failure, plural=plural, phase=phase)
    if failure.reason == "Error":
        logger.exception("Reconciling %s %s failed unexpectedly", plural, res.key)
    raise failure.to_kopf(retry) from exc
