"""What each handler does, in Kubernetes terms: resolve credentials, call the reconcile core,
write status, post Events. Kept apart from the decorators so it reads top to bottom."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, NoReturn, Protocol, Self, cast

import kopf

from zomro_backup_operator import events, metrics, reconcile
from zomro_backup_operator.claims import ClaimKey
from zomro_backup_operator.failures import Failure, classify
from zomro_backup_operator.kube import StatusChangedError
from zomro_backup_operator.pending import PendingCreate
from zomro_backup_operator.reconcile import Outcome, Remote, Removal
from zomro_backup_operator.resources import (
    Desired,
    InvalidSpecError,
    InvalidStatusError,
    Observed,
)
from zomro_backup_operator.runtime import Runtime
from zomro_backup_operator.status import SUSPENDED, SYNCED, Readiness, changes, iso, synced
from zomro_backup_operator.time_zones import format_rfc3339
from zomro_backup_operator.zomro.errors import NotFoundError

logger = logging.getLogger(__name__)


@dataclass
class ResourceCall:
    """One handler call's view of a resource, of any of the operator's kinds."""

    body: kopf.Body
    uid: str
    namespace: str
    name: str
    generation: int
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    patch: kopf.Patch
    claims_index: Mapping[ClaimKey, Iterable[str]]
    """The kind's own claims index (kopf passes every index to every handler)."""
    annotations: Mapping[str, str] = field(default_factory=dict)
    resource_version: str | None = None
    """metadata.resourceVersion of the body that ``status`` was read from."""

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_kopf(cls, kwargs: Mapping[str, Any], index: str) -> Self:
        """The view of a kopf handler's keyword arguments; ``index``: the kind's claims index."""
        meta = kwargs["meta"]
        return cls(
            body=reference(kwargs["body"]),
            uid=kwargs["uid"],
            namespace=kwargs["namespace"],
            name=kwargs["name"],
            generation=int(meta.get("generation") or 0),
            spec=dict(kwargs["spec"]),
            status=dict(kwargs["status"]),
            patch=kwargs["patch"],
            claims_index=kwargs[index],
            annotations=dict(meta.get("annotations") or {}),
            resource_version=meta.get("resourceVersion"),
        )


def reference(body: Mapping[str, Any]) -> kopf.Body:
    """What an Event needs of a resource (kopf.event), and nothing more: a call that outlives its
    handler (a create's answer, handed over) must not keep the whole body in memory."""
    meta = body.get("metadata") or {}
    return kopf.Body(
        cast(
            kopf.RawBody,
            {
                "apiVersion": body.get("apiVersion"),
                "kind": body.get("kind"),
                "metadata": {key: meta.get(key) for key in ("namespace", "name", "uid")},
            },
        )
    )


class Answers(Protocol):
    """Where a handler that ends before Zomro's answer to its create hands it over
    (create_answers.CreateAnswers)."""

    def take(self, answer: Answer) -> None:
        """Await the answer and write its outcome; the handler ends."""

    def defer(self, res: HandlerCall, retry: int, turn: asyncio.Lock) -> None:
        """Run this call of ``ensure`` in the background, once ``turn`` (the instance's lock)
        is free, on the resource as it is then; its status written there."""

    def awaits(self, uid: str, generation: int) -> bool:
        """True while an answer to a create of this resource at this generation is awaited, or
        a deferred call of it is under way."""


@dataclass
class HandlerCall(ResourceCall):
    """One handler call's view of a BackupSchedule."""

    def desired(self, rt: Runtime, *, deleting: bool = False) -> Desired:
        return Desired.from_resource(
            namespace=self.namespace,
            name=self.name,
            generation=self.generation,
            spec=self.spec,
            annotations=self.annotations,
            at=rt.clock.now(),
            provider_zone=rt.settings.provider_zone,
            deleting=deleting,
        )

    def observed(self) -> Observed:
        return Observed.from_status(self.status)

    def settled(self) -> bool:
        """Whether status says Zomro held this spec's schedule when the operator last looked:
        synced at this generation, with nothing under way. A resume of it (the operator started)
        is then a drift check's to confirm (``InstanceLoops.confirm``): a handler waiting for
        Zomro holds kopf's machinery for its resource, and a restart resumes every resource."""
        try:
            observed = self.observed()
        except InvalidStatusError:
            return False
        return (
            observed.schedule_id is not None
            and observed.pending is None
            and observed.observed_generation == self.generation
            and observed.ready_reason == SYNCED
            and self.spec.get("suspend") is not True
        )


async def connect(
    rt: Runtime,
    res: HandlerCall,
    desired: Desired,
    *,
    deleting: bool,
    max_age: float,
    stack: contextlib.AsyncExitStack,
) -> Remote:
    """Zomro for this resource; its client stays open until ``stack`` closes."""
    client, slot = await stack.enter_async_context(
        rt.zomro(desired.namespace, desired.secret_name, desired.instance_id, deleting=deleting)
    )
    return Remote(
        zomro=client,
        slot=slot,
        claims=rt.claims,
        indexed=res.claims_index,
        max_age=max_age,
        settle=rt.settings.create_settle_seconds,
    )


async def ensure(
    rt: Runtime,
    res: HandlerCall,
    retry: int,
    answers: Answers | None = None,
    *,
    may_defer: bool = False,
) -> None:
    """create/update/resume: bring Zomro to the spec, or say in status why not (and retry).

    A create's answer is waited for at most ZOMRO_CREATE_WAIT_SECONDS when ``answers`` is
    given: then the answer is handed over to it, and the handler ends without writing it.
    ``may_defer`` (kopf's calls): with another decision on the instance under way, the call is
    deferred to ``answers`` (run there in its turn) and the handler ends at once."""
    try:
        desired = res.desired(rt)
        observed = res.observed()
    except Exception as exc:
        _fail(rt, res, exc, retry)
    if desired.suspend:
        try:
            await _suspend(rt, res, desired)
        except Exception as exc:
            _fail(rt, res, exc, retry, failure=classify(exc).holding("suspension"))
        return
    deferring = answers if may_defer else None
    if deferring is not None and deferring.awaits(res.uid, res.generation):
        # Run again while its create's answer, or a deferred run, is under way (kopf took a
        # watch event older than its own last patch for a new resource, which happens when the
        # watch lags more than kopf's 5 s of patience): that one writes the outcome.
        return
    try:
        async with contextlib.AsyncExitStack() as stack:
            remote = await connect(
                rt, res, desired, deleting=False, max_age=rt.settings.resync_seconds, stack=stack
            )
            if deferring is not None and remote.slot.lock.locked():
                # Other decisions on the instance are under way (a mass apply): this one waits
                # for its turn in the background, not in a kopf handler (docs/design.md).
                res.patch = kopf.Patch()
                deferring.defer(res, retry, remote.slot.lock)
                return
            step = await _begin(rt, res, desired, remote)
            if isinstance(step, reconcile.Creating):
                wait = None if answers is None else rt.settings.create_wait_seconds
                if not await step.answered(wait):
                    assert answers is not None
                    # The answer's outcome goes to status from the hand-over, not kopf's patch.
                    res.patch = kopf.Patch()
                    answers.take(Answer(res, desired, observed, step, retry, stack.pop_all()))
                    return
    except reconcile.CreatePendingError as exc:
        if deferring is not None and deferring.awaits(res.uid, res.generation):
            return  # as above: came while this call waited; a retry would hold a kopf worker
        _fail(rt, res, exc, retry)
    except StatusChangedError as exc:
        # Decided on a status that has changed since (another operator recorded its create):
        # the status is no longer ours to write; look again at the new one.
        raise classify(exc).to_kopf(retry) from exc
    except Exception as exc:
        _fail(rt, res, exc, retry)
    await conclude(rt, Answer(res, desired, observed, step, retry))


@dataclass
class Answer:
    """A create handler's state while Zomro's answer to its create is awaited; ``step`` is the
    create (or, once there is no create to wait for, its outcome)."""

    res: HandlerCall
    desired: Desired
    observed: Observed
    step: Outcome | reconcile.Creating
    retry: int
    lease: contextlib.AsyncExitStack = field(default_factory=contextlib.AsyncExitStack)
    """What keeps the resource's Zomro client open until the answer has come."""


async def conclude(rt: Runtime, answer: Answer) -> None:
    """The end of ``ensure``: the outcome into the call's patch, with its Event; or the failure,
    raised as kopf's error (whose delay says when to try again)."""
    res, step = answer.res, answer.step
    try:
        outcome = await step.finish() if isinstance(step, reconcile.Creating) else step
    except StatusChangedError as exc:
        raise classify(exc).to_kopf(answer.retry) from exc
    except Exception as exc:
        _fail(rt, res, exc, answer.retry)
    shifted = _shifted(answer.desired, answer.observed, outcome)
    _succeed(rt, res, answer.desired, outcome, drift=False, shifted=shifted)


async def resync(rt: Runtime, res: HandlerCall, *, deleting: bool) -> None:
    """The periodic drift check. Leaves resources that a handler has yet to finish alone."""
    try:
        observed = res.observed()
    except InvalidStatusError as exc:  # written behind our back since the last handler ran
        _report_failure(rt, res, classify(exc))
        return
    if (
        deleting
        or observed.observed_generation != res.generation
        or observed.ready_reason == "InvalidSpec"
    ):
        return
    try:
        desired = res.desired(rt)
        if desired.suspend:  # only make sure that nothing of ours is at Zomro
            try:
                await _suspend(rt, res, desired)
            except Exception as exc:
                _report_failure(rt, res, classify(exc).holding("suspension"))
            return
        if observed.schedule_id is None:
            return
        outcome = await _ensure(rt, res, desired, max_age=rt.settings.resync_seconds * 0.9)
    except Exception as exc:  # the drift check reports; the next period retries
        failure = classify(exc)
        _report_failure(rt, res, failure)
        if failure.reason == "Error":
            logger.exception("Drift check of %s failed", res.key)
        return
    shifted = _shifted(desired, observed, outcome)
    if not shifted and outcome.action in (reconcile.Action.UPDATED, reconcile.Action.RECREATED):
        kind = "removed" if outcome.action is reconcile.Action.RECREATED else "changed"
        metrics.DRIFT_CORRECTIONS.labels(kind=kind).inc()
    _succeed(rt, res, desired, outcome, drift=True, shifted=shifted)


def _shifted(desired: Desired, observed: Observed, outcome: Outcome) -> str | None:
    """spec.timeZone when this update moved the schedule because the conversion changed (a
    daylight-saving transition) rather than because someone changed it at Zomro: Zomro held
    what status says the operator last wrote."""
    previous = outcome.previous
    if (
        desired.time_zone is None
        or observed.observed_generation != desired.generation
        or outcome.action is not reconcile.Action.UPDATED
        or previous is None
        or observed.provider != (previous.days, previous.time)
    ):
        return None
    return desired.time_zone


async def _suspend(rt: Runtime, res: HandlerCall, desired: Desired) -> None:
    """spec.suspend: remove the Zomro schedule, keep the resource, say so in status."""
    async with contextlib.AsyncExitStack() as stack:
        removal, schedule_id = await reconcile.suspend(
            desired,
            res.observed(),
            lambda: connect(rt, res, desired, deleting=False, max_age=0.0, stack=stack),
        )
    patch = changes(res.status, SUSPENDED, desired.generation, suspended=True, now=_now(rt))
    res.patch.status.update(patch)
    rt.ready.set(res.key, False)
    if removal is Removal.NOTHING and "conditions" not in patch:
        return
    metrics.RECONCILES.labels(result="suspended").inc()
    message = {
        Removal.DELETED: f"Removed Zomro schedule {schedule_id} (spec.suspend); the resource stays",
        Removal.INSTANCE_GONE: (
            f"Instance {desired.instance_id} no longer exists at Zomro; "
            f"schedule {schedule_id} went with it"
        ),
    }.get(removal, "Suspended (spec.suspend): Zomro holds no schedule for this resource")
    kopf.event(res.body, type="Normal", reason="Suspended", message=message)


def _now(rt: Runtime) -> str:
    return format_rfc3339(rt.clock.now())


async def remove(rt: Runtime, res: HandlerCall, retry: int) -> None:
    """delete: remove (or orphan) the Zomro schedule; raise until Zomro has confirmed."""
    if res.uid in rt.deleted:
        return
    try:
        observed = res.observed()
    except InvalidStatusError as exc:
        _fail(rt, res, exc, retry)
    try:
        desired = res.desired(rt, deleting=True)
    except InvalidSpecError:
        if observed.schedule_id is None and observed.pending is None:
            return  # never reached Zomro: nothing to clean up
        raise
    try:
        async with contextlib.AsyncExitStack() as stack:
            removal, schedule_id = await reconcile.remove(
                desired,
                observed,
                rt.claims,
                lambda: connect(rt, res, desired, deleting=True, max_age=0.0, stack=stack),
            )
    except Exception as exc:
        _fail(rt, res, exc, retry, failure=classify(exc).holding("deletion"))
    rt.deleted.add(res.uid)
    rt.ready.drop(res.key)
    rt.backups.drop(res.key)
    metrics.RECONCILES.labels(result="orphaned" if removal is Removal.ORPHANED else "deleted").inc()
    message = {
        Removal.DELETED: f"Deleted Zomro schedule {schedule_id}",
        Removal.ORPHANED: f"Left Zomro schedule {schedule_id} in place (deletionPolicy Orphan)",
        Removal.NOTHING: "No Zomro schedule to delete",
        Removal.INSTANCE_GONE: (
            f"Instance {desired.instance_id} no longer exists at Zomro; "
            f"schedule {schedule_id} went with it"
        ),
    }[removal]
    if removal is not Removal.NOTHING:
        kopf.event(
            res.body, type="Normal", reason=removal.name.title().replace("_", ""), message=message
        )


async def _ensure(rt: Runtime, res: HandlerCall, desired: Desired, *, max_age: float) -> Outcome:
    async with contextlib.AsyncExitStack() as stack:
        remote = await connect(rt, res, desired, deleting=False, max_age=max_age, stack=stack)
        step = await _begin(rt, res, desired, remote)
        return step if isinstance(step, Outcome) else await step.finish()


async def _begin(
    rt: Runtime, res: HandlerCall, desired: Desired, remote: Remote
) -> Outcome | reconcile.Creating:

    async def record_pending(pending: PendingCreate | None) -> None:
        if pending is None:  # the create was refused: written with the handler's own patch
            res.patch.status["pendingCreate"] = None
            res.status = {**res.status, "pendingCreate": None}
            return
        # The intent must be durable before Zomro is asked (docs/design.md); the same write
        # tells users that the schedule is being created.
        where = f"Zomro schedule {pending.name!r} on instance {desired.instance_id}"
        creating = Readiness(
            False,
            "Creating",
            f"waiting until Zomro lists {where}, which it accepted"
            if pending.acknowledged
            else f"creating {where}",
        )
        patch = {
            **changes(res.status, creating, desired.generation, now=_now(rt)),
            "pendingCreate": pending.to_status(iso),
        }
        # The decision to create was made on this status: the intent is written only if the
        # resource is still at that version, so that of two operators deciding on the same
        # status (docs/design.md, "More than one operator") one records its create and the
        # other looks again (StatusChangedError) and finds that create instead of making one.
        version = res.resource_version if not pending.acknowledged else None
        res.resource_version = await asyncio.to_thread(
            rt.kube.patch_status, res.namespace, res.name, patch, resource_version=version
        )
        res.status = {**res.status, **patch}

    try:
        return await reconcile.begin(desired, res.observed(), remote, record_pending)
    except NotFoundError:
        # Our listing was older than a removal behind our back: look again, once.
        fresh = replace(remote, max_age=0.0)
        return await reconcile.begin(desired, res.observed(), fresh, record_pending)


def _succeed(
    rt: Runtime,
    res: HandlerCall,
    desired: Desired,
    outcome: Outcome,
    *,
    drift: bool,
    shifted: str | None = None,
) -> None:
    patch = changes(
        res.status,
        synced(outcome.schedule, desired.wanted, desired.time_zone),
        desired.generation,
        schedule=outcome.schedule,
        timing=desired.timing,
        clear_pending=True,
        now=_now(rt),
    )
    res.patch.status.update(patch)
    if res.uid not in rt.deleted:  # an answer handed over may come after the deletion
        rt.ready.set(res.key, True)
    metrics.RECONCILES.labels(result=outcome.action.value).inc()
    event = events.for_outcome(outcome, desired.instance_id, drift=drift, shifted=shifted)
    if event is not None:
        kopf.event(res.body, type="Normal", reason=event[0], message=event[1])


def _report_failure(rt: Runtime, res: HandlerCall, failure: Failure) -> None:
    patch = changes(
        res.status, Readiness(False, failure.reason, failure.message), res.generation, now=_now(rt)
    )
    res.patch.status.update(patch)
    rt.ready.set(res.key, False)
    metrics.RECONCILES.labels(result="error").inc()
    if "conditions" in patch:  # post an Event on a change of state, not on every retry
        kopf.event(res.body, type="Warning", reason=failure.reason, message=failure.message)


def _fail(
    rt: Runtime, res: HandlerCall, exc: Exception, retry: int, *, failure: Failure | None = None
) -> NoReturn:
    failure = failure or classify(exc)
    _report_failure(rt, res, failure)
    if failure.reason == "Error":
        logger.exception("Reconciling %s failed unexpectedly", res.key)
    raise failure.to_kopf(retry) from exc
