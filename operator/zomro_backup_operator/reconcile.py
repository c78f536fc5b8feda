"""The decision core: from (spec, status, what Zomro holds) to what to do, and doing it.

``plan`` is pure. ``ensure``, ``resync`` and ``remove`` carry a plan out against anything that
looks like the Zomro client (``ZomroApi``), so the whole core runs in unit tests without a cluster.
The crash-safe create protocol is described in docs/design.md.
"""

from __future__ import annotations

import enum
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from zomro_backup_operator.resources import Desired, Observed
from zomro_backup_operator.state import ClaimKey, Claims, InstanceSlot
from zomro_backup_operator.zomro.errors import AccessDeniedError
from zomro_backup_operator.zomro.models import Instance, Schedule, ScheduleSpec, is_object_id


class ZomroApi(Protocol):
    """The part of ``ZomroClient`` the core uses."""

    async def list_instances(self) -> list[Instance]: ...
    async def list_schedules(self, instance_id: str) -> list[Schedule]: ...
    async def create_schedules(
        self, instance_id: str, specs: Sequence[ScheduleSpec]
    ) -> Sequence[Schedule | Exception]: ...
    async def update_schedule(
        self, instance_id: str, schedule_id: str, spec: ScheduleSpec
    ) -> None: ...
    async def delete_schedule(self, instance_id: str, schedule_id: str) -> None: ...


class ReconcileError(Exception):
    """A state the operator cannot resolve by itself now; ``reason`` goes into Ready."""

    reason = "Error"


class ConflictError(ReconcileError):
    reason = "Conflict"


class AdoptionError(ReconcileError):
    reason = "AdoptionFailed"


class Step(enum.Enum):
    KEEP = "keep"
    UPDATE = "update"
    ADOPT = "adopt"
    CREATE = "create"
    CONFLICT = "conflict"
    ADOPT_MISSING = "adopt-missing"


@dataclass(frozen=True)
class Plan:
    step: Step
    row: Schedule | None = None
    owner: str | None = None
    recreate: bool = False
    """True when the schedule we held is gone from Zomro (removed behind our back)."""


def plan(
    desired: Desired,
    observed: Observed,
    rows: Sequence[Schedule],
    owner_of: Callable[[str], str | None],
    in_flight: Mapping[str, str] | None = None,
) -> Plan:
    """Decide what brings Zomro to ``desired``. Pure: no I/O, no clock.

    ``in_flight`` maps names of creates on their way to Zomro (not listed yet) to their owners.
    """
    me = desired.key
    by_id = {row.id: row for row in rows}

    def taken(schedule_id: str) -> str | None:
        owner = owner_of(schedule_id)
        return owner if owner not in (None, me) else None

    if observed.schedule_id is not None:
        row = by_id.get(observed.schedule_id)
        if row is not None:
            return Plan(Step.KEEP if row.matches(desired.schedule) else Step.UPDATE, row)
    elif desired.adopt_id is not None:
        row = by_id.get(desired.adopt_id)
        if row is None:
            return Plan(Step.ADOPT_MISSING)
        owner = taken(row.id)
        return Plan(Step.CONFLICT, row, owner=owner) if owner else Plan(Step.ADOPT, row)

    # No schedule of ours at Zomro: before creating one, look for one we may have created
    # without recording it (a crash between Zomro's answer and our status write), or one a person
    # made by hand with our name. Either is taken over rather than duplicated.
    recreate = observed.schedule_id is not None
    names = {desired.schedule.name} | ({observed.pending_name} if observed.pending_name else set())
    matches = sorted(
        (row for row in rows if row.name in names), key=lambda row: (_numeric(row.id), row.id)
    )
    free = [row for row in matches if taken(row.id) is None]
    if free:
        preferred = [row for row in free if row.name == observed.pending_name] or free
        return Plan(Step.ADOPT, preferred[0], recreate=recreate)
    if matches:
        return Plan(Step.CONFLICT, matches[0], owner=taken(matches[0].id), recreate=recreate)
    creating = (in_flight or {}).get(desired.schedule.name)
    if creating is not None and creating != me:
        return Plan(Step.CONFLICT, owner=creating, recreate=recreate)
    return Plan(Step.CREATE, recreate=recreate)


def _numeric(value: str) -> int:
    return int(value) if is_object_id(value) else -1


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

    async def schedules(self, instance_id: str, *, max_age: float | None = None) -> list[Schedule]:
        return await self.slot.schedules(
            lambda: self.zomro.list_schedules(instance_id),
            max_age=self.max_age if max_age is None else max_age,
        )

    def owner_of(self, instance_id: str) -> Callable[[str], str | None]:
        return lambda schedule_id: self.claims.owner(instance_id, schedule_id, self.indexed)


RecordPending = Callable[[str], Awaitable[None]]


async def ensure(
    desired: Desired,
    observed: Observed,
    remote: Remote,
    record_pending: RecordPending,
    *,
    max_age: float | None = None,
) -> Outcome:
    """Bring Zomro to ``desired``: keep, change in place, adopt, or create exactly once.

    Decisions on one instance are serialised by its slot's lock. ``record_pending(name)`` must
    durably record the intent to create (in the resource's status) before it returns; a crash
    after the create is then healed by the name match in ``plan``.
    """
    async with remote.slot.lock:
        step = await _ensure_locked(desired, observed, remote, record_pending, max_age=max_age)
    if isinstance(step, Outcome):
        return step
    # The create was queued under the lock; wait for it outside, so that creates of other
    # resources on this instance can join the same batch.
    created = await step.created
    if observed.schedule_id is not None:
        remote.claims.release(desired.instance_id, observed.schedule_id, desired.key)
    action = Action.RECREATED if step.recreate else Action.CREATED
    return Outcome(action, created, previous_id=observed.schedule_id)


@dataclass(frozen=True)
class _Creating:
    created: Awaitable[Schedule]
    recreate: bool


async def _ensure_locked(
    desired: Desired,
    observed: Observed,
    remote: Remote,
    record_pending: RecordPending,
    *,
    max_age: float | None,
) -> Outcome | _Creating:
    instance_id = desired.instance_id
    rows = await remote.schedules(instance_id, max_age=max_age)
    decision = plan(desired, observed, rows, remote.owner_of(instance_id), remote.slot.in_flight)

    if decision.step is Step.CONFLICT:
        what = (
            f"Zomro schedule {decision.row.id} ({decision.row.name!r})"
            if decision.row is not None
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
    if decision.step is Step.CREATE:
        await record_pending(desired.schedule.name)
        created = remote.slot.submit_create(
            desired.schedule,
            desired.key,
            lambda specs: remote.zomro.create_schedules(instance_id, specs),
            lambda schedule: _claim(remote, desired, schedule.id),
        )
        return _Creating(created, decision.recreate)

    row = decision.row
    assert row is not None
    _claim(remote, desired, row.id)
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
    if schedule_id is None and observed.pending_name is None:
        return Removal.NOTHING, None
    remote = await connect()
    async with remote.slot.lock:
        return await _remove_locked(desired, observed, remote)


async def _remove_locked(
    desired: Desired, observed: Observed, remote: Remote
) -> tuple[Removal, str | None]:
    instance_id = desired.instance_id
    schedule_id = observed.schedule_id

    if schedule_id is None and observed.pending_name is not None:
        # A create was sent but never recorded: find what it made, if anything.
        rows = await remote.schedules(instance_id, max_age=0.0)
        owner_of = remote.owner_of(instance_id)
        found = [
            row
            for row in rows
            if row.name == observed.pending_name and owner_of(row.id) in (None, desired.key)
        ]
        schedule_id = min(found, key=lambda row: (_numeric(row.id), row.id)).id if found else None
    if schedule_id is None:
        return Removal.NOTHING, None

    try:
        await remote.zomro.delete_schedule(instance_id, schedule_id)
    except AccessDeniedError:
        # Either the instance is gone (and its schedules with it) or these credentials cannot
        # see it. Only the account's own instance list can tell the two apart.
        instances = await remote.zomro.list_instances()
        if any(instance.id == instance_id for instance in instances):
            raise
        remote.slot.invalidate()
        remote.claims.release(instance_id, schedule_id, desired.key)
        return Removal.INSTANCE_GONE, schedule_id
    except Exception:
        remote.slot.invalidate()
        raise
    remote.slot.removed(schedule_id)
    remote.claims.release(instance_id, schedule_id, desired.key)
    return Removal.DELETED, schedule_id
