"""The decision core: from (spec, status, what Zomro holds) to what to do, and doing it.

``plan`` is pure. ``ensure`` and ``remove`` carry a plan out against anything that
looks like the Zomro client (``ZomroApi``), so the whole core runs in unit tests without a cluster.
The crash-safe create protocol is described in docs/design.md.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Protocol

from zomro_backup_operator.claims import ClaimKey, Claims
from zomro_backup_operator.instance_slot import InstanceSlot
from zomro_backup_operator.pending import PendingCreate
from zomro_backup_operator.resources import Desired, Observed
from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    AmbiguousResultError,
    CreatedNotListedError,
    UnknownOutcomeError,
    ZomroError,
)
from zomro_backup_operator.zomro.models import (
    Instance,
    Schedule,
    ScheduleSpec,
    may_be_stored_as,
    numeric_order,
)

PENDING_MAX_AGE = 1.0
"""Seconds a listing may be old while a create of ours waits to be listed: fresh, but shared."""


class ZomroApi(Protocol):
    """The part of ``ZomroClient`` the core uses."""

    async def list_instances(self) -> list[Instance]: ...
    async def list_schedules(self, instance_id: str) -> list[Schedule]: ...
    async def create_schedules(
        self,
        instance_id: str,
        specs: Sequence[ScheduleSpec],
        more: Callable[[], Sequence[ScheduleSpec]] = ...,
    ) -> Sequence[Schedule | Exception]: ...
    async def update_schedule(
        self, instance_id: str, schedule_id: str, spec: ScheduleSpec
    ) -> None: ...
    async def delete_schedules(
        self, instance_id: str, schedule_ids: Sequence[str]
    ) -> Sequence[Exception | None]: ...


class ReconcileError(Exception):
    """A state the operator cannot resolve by itself now; ``reason`` goes into Ready."""

    reason = "Error"


class ConflictError(ReconcileError):
    reason = "Conflict"


class AdoptionError(ReconcileError):
    reason = "AdoptionFailed"


class CreatePendingError(ReconcileError):
    """A create of this resource may have been made and is not listed yet: wait, never resend.

    ``retry_after`` is when to look again (None: with the usual backoff)."""

    reason = "Creating"

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Step(enum.Enum):
    KEEP = "keep"
    UPDATE = "update"
    ADOPT = "adopt"
    CREATE = "create"
    CONFLICT = "conflict"
    ADOPT_MISSING = "adopt-missing"
    WAIT = "wait"
    """A create of ours may still show up in the listing: neither adopt nor create yet."""


@dataclass(frozen=True)
class Plan:
    step: Step
    row: Schedule | None = None
    owner: str | None = None
    recreate: bool = False
    """True when the schedule we held is gone from Zomro (removed behind our back)."""
    wait: float | None = None
    """For WAIT: seconds until the create may be taken as never made; None while it is known
    to be on its way or made."""


def plan(
    desired: Desired,
    observed: Observed,
    rows: Sequence[Schedule],
    owner_of: Callable[[str], str | None],
    in_flight: Mapping[str, str] | None = None,
    *,
    accepted: Collection[str] = frozenset(),
    now: float = 0.0,
    settle: float = 0.0,
) -> Plan:
    """Decide what brings Zomro to ``desired``. Pure: no I/O, no clock (``now`` is given).

    ``in_flight`` maps names of creates on their way to Zomro (not listed yet) to their owners;
    ``accepted`` holds resources whose create Zomro accepted and no listing has shown yet;
    ``settle`` is how long after a create whose answer was lost it may still show up.
    """
    me = desired.key
    by_id = {row.id: row for row in rows}

    def taken(schedule_id: str) -> str | None:
        owner = owner_of(schedule_id)
        return owner if owner not in (None, me) else None

    if observed.schedule_id is not None:
        row = by_id.get(observed.schedule_id)
        owner = taken(observed.schedule_id)
        if owner is not None:  # status names a schedule another resource holds: never touch it
            return Plan(Step.CONFLICT, row, owner=owner)
        if row is not None:
            keep = row.matches(desired.schedule) or _as_zomro_writes_it(row, desired, observed)
            return Plan(Step.KEEP if keep else Step.UPDATE, row)
    elif desired.adopt_id is not None:
        row = by_id.get(desired.adopt_id)
        if row is None:
            return Plan(Step.ADOPT_MISSING)
        owner = taken(row.id)
        return Plan(Step.CONFLICT, row, owner=owner) if owner else Plan(Step.ADOPT, row)

    # No schedule of ours at Zomro: before creating one, look for one we may have created
    # without recording it (a crash between Zomro's answer and our status write, a lost answer,
    # a listing that shows new schedules late, a name Zomro changed), or one a person made by
    # hand with our name. Either is taken over rather than duplicated.
    recreate = observed.schedule_id is not None
    pending = observed.pending
    names = {desired.schedule.name} | ({pending.name} if pending else set())
    matches = sorted((row for row in rows if row.name in names), key=lambda r: numeric_order(r.id))
    free = [row for row in matches if taken(row.id) is None]
    if free:
        preferred = [row for row in free if pending and row.name == pending.name] or free
        return Plan(Step.ADOPT, preferred[0], recreate=recreate)
    made = pending.candidates(rows, lambda i: taken(i) is None) if pending else []
    if made:
        return Plan(Step.ADOPT, made[0], recreate=recreate)
    if matches:
        return Plan(Step.CONFLICT, matches[0], owner=taken(matches[0].id), recreate=recreate)
    creating = (in_flight or {}).get(desired.schedule.name)
    if creating is not None and creating != me:
        return Plan(Step.CONFLICT, owner=creating, recreate=recreate)
    if me in (in_flight or {}).values() or me in accepted:
        return Plan(Step.WAIT, recreate=recreate)
    if pending is not None:
        if pending.acknowledged:
            return Plan(Step.WAIT, recreate=recreate)
        remaining = pending.settles_in(now, settle)
        if remaining > 0:
            return Plan(Step.WAIT, recreate=recreate, wait=remaining)
    return Plan(Step.CREATE, recreate=recreate)


def _as_zomro_writes_it(row: Schedule, desired: Desired, observed: Observed) -> bool:
    """True when Zomro holds our unchanged spec with the name in the form Zomro gives it (case
    changed, cut short, ...): writing it again would change nothing. The name must be the one
    we last wrote or last saw, so a change behind our back is still put right."""
    spec = desired.schedule
    return (
        (row.days, row.time) == (spec.days, spec.time)
        and observed.observed_generation == desired.generation
        and observed.schedule_name in (row.name, spec.name)
        and may_be_stored_as(spec.name, row.name)
    )


class Action(enum.Enum):
    SYNCED = "synced"
    CREATED = "created"
    ADOPTED = "adopted"
    UPDATED = "updated"
    RECREATED = "recreated"


@dataclass(frozen=True)
class Outcome:
    action: Action
    schedule: Schedule
    previous: Schedule | None = None
    """What Zomro held before an update or an adoption that changed it."""
    previous_id: str | None = None
    """The id we held before it vanished from Zomro, for RECREATED."""


@dataclass
class Remote:
    """Zomro as one resource sees it: the client, its instance's slot and the claims."""

    zomro: ZomroApi
    slot: InstanceSlot
    claims: Claims
    indexed: Mapping[ClaimKey, Iterable[str]]
    max_age: float
    """How old a listing may be when ``ensure`` plans on it."""
    settle: float = 0.0
    """Seconds after sending a create whose answer was lost until it may be taken as never made."""
    clock: Callable[[], float] = field(default=time.time)

    async def schedules(self, instance_id: str, *, max_age: float) -> list[Schedule]:
        return await self.slot.schedules(
            lambda: self.zomro.list_schedules(instance_id),
            max_age=max_age,
            clock=self.clock,
        )

    def owner_of(self, instance_id: str, besides: str) -> Callable[[str], str | None]:
        """Who, other than ``besides``, claims a schedule of the instance."""
        return lambda schedule_id: self.claims.owner(
            instance_id, schedule_id, self.indexed, besides
        )


RecordPending = Callable[[PendingCreate | None], Awaitable[None]]
"""Records a create in the resource's status. A PendingCreate must be durable when it returns;
None (the create was refused, nothing was made) may be written with the handler's own patch."""


async def ensure(
    desired: Desired,
    observed: Observed,
    remote: Remote,
    record_pending: RecordPending,
) -> Outcome:
    """Bring Zomro to ``desired``: keep, change in place, adopt, or create exactly once.

    Decisions on one instance are serialised by its slot's lock. ``record_pending`` must durably
    record the intent to create (in the resource's status) before it returns; a crash or a lost
    answer after the create is then healed by ``plan`` finding what it made.
    """
    step = await begin(desired, observed, remote, record_pending)
    return step if isinstance(step, Outcome) else await step.finish()


async def begin(
    desired: Desired,
    observed: Observed,
    remote: Remote,
    record_pending: RecordPending,
) -> Outcome | Creating:
    """``ensure`` up to Zomro's answer to a create: the Outcome when no create was needed, else
    the create queued (with its intent recorded), whose ``finish`` waits for the answer."""
    async with remote.slot.lock:
        step = await _ensure_locked(desired, observed, remote, record_pending)
    if isinstance(step, Outcome):
        return step
    # The create was queued under the lock; its answer is waited for outside, so that creates
    # of other resources on this instance can join the same batch.
    return Creating(step, desired, observed, remote, record_pending)


@dataclass(frozen=True)
class Creating:
    """A create queued at Zomro, its intent recorded: ``finish`` waits for Zomro's answer."""

    queued: _Queued
    desired: Desired
    observed: Observed
    remote: Remote
    record_pending: RecordPending

    async def answered(self, wait: float | None) -> bool:
        """Waits at most ``wait`` seconds (None: for as long as it takes) for Zomro's answer;
        True when it came (``finish`` then returns at once)."""
        created = asyncio.ensure_future(self.queued.created)
        if wait is None or wait > 0:
            await asyncio.wait([created], timeout=wait)
        return created.done()

    async def finish(self) -> Outcome:
        """The created schedule, once a listing has told its id; raises what the create met."""
        desired, observed, remote, step = self.desired, self.observed, self.remote, self.queued
        try:
            created = await step.created
        except (CreatedNotListedError, AmbiguousResultError) as exc:
            # Zomro made it: it is never sent again; wait until a listing shows it.
            remote.slot.accepted.add(desired.key)
            await self.record_pending(step.pending.acknowledge())
            raise CreatePendingError(
                f"Zomro accepted the create of schedule {desired.schedule.name!r} on instance "
                f"{desired.instance_id}; waiting until its listing shows it ({exc.message})"
            ) from exc
        except ZomroError as exc:
            if not isinstance(exc, UnknownOutcomeError):
                await self.record_pending(None)  # refused: nothing was made
            else:  # nothing can be decided before the settle window ends: look again then
                remaining = step.pending.settles_in(remote.clock(), remote.settle)
                exc.retry_after = max(exc.retry_after or 0.0, remaining)
            raise
        if observed.schedule_id is not None:
            remote.claims.release(desired.instance_id, observed.schedule_id, desired.key)
        action = Action.RECREATED if step.recreate else Action.CREATED
        return Outcome(action, created, previous_id=observed.schedule_id)


@dataclass(frozen=True)
class _Queued:
    created: Awaitable[Schedule]
    recreate: bool
    pending: PendingCreate


async def _ensure_locked(
    desired: Desired,
    observed: Observed,
    remote: Remote,
    record_pending: RecordPending,
) -> Outcome | _Queued:
    instance_id = desired.instance_id
    max_age = remote.max_age
    if observed.pending is not None or desired.key in remote.slot.accepted:
        # A create of ours may have appeared since the last listing.
        max_age = min(PENDING_MAX_AGE, max_age)
    rows = await remote.schedules(instance_id, max_age=max_age)
    held = observed.schedule_id
    if held is not None and max_age > 0 and all(row.id != held for row in rows):
        # Only a listing made now may say that the schedule status names is gone: the last one
        # may be older than its create by another operator (docs/design.md, "More than one
        # operator"), and recreating on it would make a second schedule.
        rows = await remote.schedules(instance_id, max_age=0.0)
    owner_of = remote.owner_of(instance_id, desired.key)
    decision = plan(
        desired,
        observed,
        rows,
        owner_of,
        remote.slot.in_flight,
        accepted=remote.slot.accepted,
        now=remote.clock(),
        settle=remote.settle,
    )

    if decision.step is Step.CONFLICT:
        what = (
            f"Zomro schedule {decision.row.id} ({decision.row.name!r})"
            if decision.row is not None
            else f"Zomro schedule {observed.schedule_id}"
            if observed.schedule_id is not None and decision.owner == owner_of(observed.schedule_id)
            else f"a Zomro schedule named {desired.schedule.name!r}"
        )
        raise ConflictError(
            f"{what} on instance {instance_id} is already managed by BackupSchedule "
            f"{decision.owner}; give this resource another scheduleName or delete the other one"
        )
    if decision.step is Step.ADOPT_MISSING:
        raise AdoptionError(
            f"annotation asks to adopt Zomro schedule {desired.adopt_id}, but instance "
            f"{instance_id} has no such schedule"
        )
    if decision.step is Step.WAIT:
        raise CreatePendingError(
            _waiting(desired, observed.pending, decision.wait), retry_after=decision.wait
        )
    if decision.step is Step.CREATE:
        pending = PendingCreate.for_spec(
            desired.schedule, started_at=remote.clock(), known_ids=[row.id for row in rows]
        )
        await record_pending(pending)
        created = remote.slot.submit_create(
            desired.schedule,
            desired.key,
            lambda specs, more: remote.zomro.create_schedules(instance_id, specs, more),
            lambda schedule: _claim(remote, desired, schedule.id),
        )
        return _Queued(created, decision.recreate, pending)

    row = decision.row
    assert row is not None
    _claim(remote, desired, row.id)
    remote.slot.accepted.discard(desired.key)
    if observed.schedule_id is not None and observed.schedule_id != row.id:
        remote.claims.release(instance_id, observed.schedule_id, desired.key)
    if decision.step is Step.KEEP:
        return Outcome(Action.SYNCED, row)

    previous: Schedule | None = None
    if not row.matches(desired.schedule):
        try:
            await remote.zomro.update_schedule(instance_id, row.id, desired.schedule)
        except Exception:
            remote.slot.invalidate()
            raise
        remote.slot.changed(row.id, desired.schedule)
        previous = row
    spec = desired.schedule
    current = replace(row, name=spec.name, days=spec.days, time=spec.time)
    if decision.step is Step.UPDATE:
        return Outcome(Action.UPDATED, current, previous=previous)
    if decision.recreate:
        # Ours vanished, but an unclaimed one with our name was there: take it instead.
        return Outcome(
            Action.RECREATED, current, previous=previous, previous_id=observed.schedule_id
        )
    return Outcome(Action.ADOPTED, current, previous=previous)


def _waiting(desired: Desired, pending: PendingCreate | None, wait: float | None) -> str:
    name = pending.name if pending is not None else desired.schedule.name
    where = f"schedule {name!r} on instance {desired.instance_id}"
    if wait is not None:
        return (
            f"the answer to the create of {where} was lost; waiting {wait:.0f}s more for Zomro "
            "to list it before concluding that nothing was made"
        )
    return f"Zomro accepted the create of {where}; waiting until its listing shows it"


def _claim(remote: Remote, desired: Desired, schedule_id: str) -> None:
    remote.claims.claim(desired.instance_id, schedule_id, desired.key)


class Removal(enum.Enum):
    DELETED = "deleted"
    ORPHANED = "orphaned"
    NOTHING = "nothing"
    INSTANCE_GONE = "instance-gone"


async def remove(
    desired: Desired,
    observed: Observed,
    claims: Claims,
    connect: Callable[[], Awaitable[Remote]],
) -> tuple[Removal, str | None]:
    """Delete the resource's Zomro schedule (or leave it, for Orphan). Returns what happened and
    the schedule id concerned. Raises while Zomro has not confirmed, so the finalizer stays.
    ``connect`` is called only when Zomro must be asked: an orphaned or never-created schedule
    needs no credentials."""
    instance_id = desired.instance_id
    schedule_id = observed.schedule_id
    if desired.deletion_policy == "Orphan":
        if schedule_id:
            claims.release(instance_id, schedule_id, desired.key)
        return Removal.ORPHANED, schedule_id
    return await suspend(desired, observed, connect)


async def suspend(
    desired: Desired,
    observed: Observed,
    connect: Callable[[], Awaitable[Remote]],
) -> tuple[Removal, str | None]:
    """Make sure Zomro holds no schedule of this resource (spec.suspend, and the Delete policy's
    deletion): the one status names, and what a recorded create made. Nothing recorded means
    nothing of ours can be there: Zomro is not asked. Raises while Zomro has not confirmed."""
    if observed.schedule_id is None and observed.pending is None:
        return Removal.NOTHING, None
    remote = await connect()
    instance_id = desired.instance_id
    async with remote.slot.lock:
        targets = [await _removal_target(desired, observed, remote)]
        if observed.schedule_id is not None and observed.pending is not None:
            # A recreate was on its way when the old id vanished: what it made is ours too.
            unrecorded = replace(observed, schedule_id=None)
            targets.append(await _removal_target(desired, unrecorded, remote))
        # Queued under the lock, waited for outside it: the deletes of other resources on this
        # instance join the same call.
        deletions = [
            (
                sid,
                remote.slot.submit_delete(sid, partial(remote.zomro.delete_schedules, instance_id)),
            )
            for sid in targets
            if sid is not None
        ]
    removal: tuple[Removal, str | None] = (Removal.NOTHING, None)
    failure: Exception | None = None
    for schedule_id, deleted in deletions:
        try:
            removal = await _deleted(desired, remote, schedule_id, deleted), schedule_id
        except Exception as exc:  # the others are still waited for, and their claims released
            failure = failure or exc
    if failure is not None:
        raise failure
    return removal


async def _removal_target(desired: Desired, observed: Observed, remote: Remote) -> str | None:
    """The Zomro schedule of the resource to delete, if any; raises while a create of it may
    still come to light, and for a schedule another resource manages."""
    instance_id = desired.instance_id
    schedule_id = observed.schedule_id

    pending = observed.pending
    if schedule_id is None and pending is not None:
        # A create was sent but never recorded: find what it made, if anything.
        rows = await remote.schedules(instance_id, max_age=0.0)
        owner_of = remote.owner_of(instance_id, desired.key)

        def free(row_id: str) -> bool:
            return owner_of(row_id) is None

        exact = sorted(
            (row for row in rows if row.name == pending.name and free(row.id)),
            key=lambda row: numeric_order(row.id),
        )
        found = exact or pending.candidates(rows, free)
        schedule_id = found[0].id if found else None
        if schedule_id is None:
            accepted = pending.acknowledged or desired.key in remote.slot.accepted
            wait = None if accepted else pending.settles_in(remote.clock(), remote.settle)
            if desired.key in remote.slot.in_flight.values() or wait is None or wait > 0:
                raise CreatePendingError(_waiting(desired, pending, wait), retry_after=wait)
    if schedule_id is None:
        return None
    owner = remote.owner_of(instance_id, desired.key)(schedule_id)
    if owner is not None:
        raise ConflictError(
            f"status names Zomro schedule {schedule_id} on instance {instance_id}, which "
            f"BackupSchedule {owner} manages; it is not deleted"
        )
    return schedule_id


async def _deleted(
    desired: Desired, remote: Remote, schedule_id: str, deleted: asyncio.Future[None]
) -> Removal:
    """Waits for a queued delete; its claim goes once Zomro no longer holds the schedule."""
    instance_id = desired.instance_id
    try:
        await asyncio.shield(deleted)  # the future may be another resource's too
    except AccessDeniedError:
        # Either the instance is gone (and its schedules with it) or these credentials cannot
        # see it. Only the account's own instance list can tell the two apart.
        instances = await remote.zomro.list_instances()
        if any(instance.id == instance_id for instance in instances):
            raise
        remote.claims.release(instance_id, schedule_id, desired.key)
        return Removal.INSTANCE_GONE
    remote.claims.release(instance_id, schedule_id, desired.key)
    return Removal.DELETED
