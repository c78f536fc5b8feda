"""The periodic work on BackupSchedules, in one asyncio task per Zomro instance.

Every resource gets a drift check every ZOMRO_RESYNC_SECONDS, and another when what Zomro must
hold for it changes (``Timing.changes_at``: a daylight-saving transition of its time zone), and
a backup check every ZOMRO_BACKUP_CHECK_SECONDS. A kopf daemon and a kopf timer per resource
did this before; kopf keeps the whole body of every resource that has one in memory, and two
tasks for it, which at 10 000 resources was most of the operator's memory (docs/performance.md).
One loop per instance costs one task per instance and checks the instance's resources one after
another, on the listings they share anyway (``InstanceSlot``).

A loop reads its resources from the ``by_instance`` kopf index (:func:`index_entry`), which kopf
keeps current on every watch event, so a pass sees the status the previous one wrote. Loops are
started from handlers (:meth:`InstanceLoops.watch`): a task inherits its creator's context, and
kopf posts Events through the context of a handler.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, cast

import kopf

from zomro_backup_operator import backup_checks, handling
from zomro_backup_operator.claims import ClaimKey
from zomro_backup_operator.clock import Clock
from zomro_backup_operator.handling import HandlerCall
from zomro_backup_operator.kube import StatusChangedError
from zomro_backup_operator.resources import ADOPT_ANNOTATION, InvalidSpecError
from zomro_backup_operator.runtime import Recent, Runtime

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Tracked:
    """What the periodic checks need of one BackupSchedule, as its last watch event showed it.
    Only these fields are kept: not the body, whose managedFields and last-applied annotation
    would cost more than everything else."""

    api_version: str
    kind: str
    namespace: str
    name: str
    uid: str
    generation: int
    resource_version: str
    spec: Mapping[str, Any]
    status: Mapping[str, Any]
    annotations: Mapping[str, str]
    deleting: bool

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    def call(self, claims_index: Mapping[ClaimKey, Iterable[str]]) -> HandlerCall:
        """A handler's view of the resource, with an empty patch of its own."""
        reference = {
            "apiVersion": self.api_version,
            "kind": self.kind,
            "metadata": {"namespace": self.namespace, "name": self.name, "uid": self.uid},
        }
        return HandlerCall(
            body=kopf.Body(cast(kopf.RawBody, reference)),
            uid=self.uid,
            namespace=self.namespace,
            name=self.name,
            generation=self.generation,
            spec=self.spec,
            status=dict(self.status),
            patch=kopf.Patch(),
            claims_index=claims_index,
            annotations=dict(self.annotations),
            resource_version=self.resource_version or None,
        )


def index_entry(body: Mapping[str, Any]) -> dict[str, Tracked] | None:
    """The ``by_instance`` index's entry for a resource: its instance id -> what the checks need
    of it. None (not indexed) when the spec names no instance: nothing is checked then."""
    spec = body.get("spec") or {}
    instance_id = spec.get("instanceId")
    if not isinstance(instance_id, str) or not instance_id:
        return None
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    return {
        instance_id: Tracked(
            api_version=str(body.get("apiVersion") or ""),
            kind=str(body.get("kind") or ""),
            namespace=str(meta.get("namespace") or ""),
            name=str(meta.get("name") or ""),
            uid=str(meta.get("uid") or ""),
            generation=int(meta.get("generation") or 0),
            resource_version=str(meta.get("resourceVersion") or ""),
            spec=dict(spec),
            status=dict(body.get("status") or {}),
            annotations={k: v for k, v in annotations.items() if k == ADOPT_ANNOTATION},
            deleting=bool(meta.get("deletionTimestamp")),
        )
    }


Wait = Callable[[asyncio.Event, float], Awaitable[bool]]
"""Waits at most the given seconds for the event; True when it was set."""


async def _wait(event: asyncio.Event, seconds: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=max(seconds, 0.0))
    return event.is_set()


class InstanceLoops:
    """One loop per instance that has BackupSchedules, for as long as it has them."""

    def __init__(
        self,
        rt: Runtime,
        *,
        wait: Wait = _wait,
        monotonic: Callable[[], float] = time.monotonic,
        spread: Callable[[float, float], float] = random.uniform,
    ) -> None:
        self._rt = rt
        self._wait = wait
        self._monotonic = monotonic
        self._spread = spread
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._nudges: dict[str, asyncio.Event] = {}
        self._index: Mapping[str, Iterable[Tracked]] = {}
        self._claims: Mapping[ClaimKey, Iterable[str]] = {}
        self._checking: dict[str, asyncio.Future[None]] = {}
        """uid -> the check of that resource under way (its end)."""
        self._held = Recent()
        """uids whose deletion has begun: never checked again."""
        self._confirming: dict[str, set[str]] = {}
        """instance id -> uids to check at once (:meth:`confirm`)."""

    def watch(
        self,
        spec: Mapping[str, Any],
        index: Mapping[str, Iterable[Tracked]],
        claims: Mapping[ClaimKey, Iterable[str]],
    ) -> None:
        """Make sure the loop of the instance ``spec`` names runs, and let it look again at when
        its next pass is due (the resource may be new, or its time zone changed). ``index`` and
        ``claims`` are kopf's live indices, the same objects on every call."""
        self._index, self._claims = index, claims
        instance_id = spec.get("instanceId")
        if not isinstance(instance_id, str) or not instance_id:
            return
        task = self._tasks.get(instance_id)
        if task is not None and not task.done():
            self._nudges[instance_id].set()
            return
        nudge = self._nudges[instance_id] = asyncio.Event()
        self._tasks[instance_id] = asyncio.create_task(
            self.run(instance_id, nudge), name=f"checks of instance {instance_id}"
        )

    def confirm(self, spec: Mapping[str, Any], uid: str) -> None:
        """Check this resource at once in its instance's loop, which :meth:`watch` started: a
        resume of a resource whose status says it is in sync (``HandlerCall.settled``). Its
        handler ends without waiting for Zomro, so that a restart over many resources does not
        hold kopf's machinery for all of them until each instance has been listed; the loop
        checks them one after another on one listing, as its drift checks do."""
        instance_id = spec.get("instanceId")
        if not isinstance(instance_id, str) or instance_id not in self._nudges:
            return
        self._confirming.setdefault(instance_id, set()).add(uid)
        self._nudges[instance_id].set()

    @property
    def running(self) -> frozenset[str]:
        """The instances whose loop runs."""
        return frozenset(key for key, task in self._tasks.items() if not task.done())

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._tasks.values())

    async def aclose(self) -> None:
        tasks = self.tasks()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    def members(self, instance_id: str) -> list[Tracked]:
        return list(self._index.get(instance_id, ()))

    async def hold(self, uid: str) -> bool:
        """The resource is being deleted: it is never checked again. Waits for a check of it
        that is under way; True when there was one (it may have changed the resource's status
        and Zomro since the deletion handler's body was read: the handler must look again)."""
        self._held.add(uid)
        checking = self._checking.get(uid)
        if checking is None:
            return False
        await asyncio.shield(checking)
        return True

    async def run(self, instance_id: str, nudge: asyncio.Event) -> None:
        """The instance's loop: ends when the index holds none of its resources."""
        rt = self._rt
        period = rt.settings.resync_seconds
        check_period = rt.settings.backup_check_seconds
        # The first passes after a random 0.5-1 period, so that the instances spread the load.
        drift_due = self._monotonic() + period * self._spread(0.5, 1.0)
        backups_due = self._monotonic() + check_period * self._spread(0.5, 1.0)
        conversions: dict[str, _Conversion] = {}
        try:
            while members := self.members(instance_id):
                nudge.clear()
                if confirming := self._confirming.pop(instance_id, None):
                    await self._drift([m for m in members if m.uid in confirming])
                    continue
                changes = _next_changes(rt, members, conversions)
                soonest = min((at for at in changes.values() if at is not None), default=None)
                due = min(drift_due, backups_due) - self._monotonic()

                async def nap(seconds: float) -> bool:
                    return await self._wait(nudge, seconds)

                if await sleep_until_next_pass(
                    rt.clock, due, soonest, nap, monotonic=self._monotonic
                ):
                    continue  # nudged: look again at what is due
                now, wall = self._monotonic(), rt.clock.now()
                members = self.members(instance_id)
                if now >= drift_due:
                    drift_due = now + period
                    await self._drift(members)
                else:  # only those whose conversion changed (a daylight-saving transition)
                    await self._drift(
                        [
                            m
                            for m in members
                            if (at := changes.get(m.uid)) is not None and at <= wall
                        ]
                    )
                if now >= backups_due:
                    backups_due = now + check_period
                    await self._check_backups(self.members(instance_id))
        finally:
            if self._tasks.get(instance_id) is asyncio.current_task():
                del self._tasks[instance_id]
                del self._nudges[instance_id]
                self._confirming.pop(instance_id, None)

    async def _drift(self, members: Iterable[Tracked]) -> None:
        for member in members:
            await self._one(member, "Drift check", handling.resync)

    async def _check_backups(self, members: Iterable[Tracked]) -> None:
        for member in members:
            await self._one(member, "Backup check", backup_checks.check)

    def _latest(self, member: Tracked) -> Tracked | None:
        """The resource as the index holds it now (a pass's list may be seconds old); None once
        it is gone or its deletion has begun."""
        return self._find(str(member.spec.get("instanceId")), member.uid)

    def latest_call(self, res: HandlerCall) -> HandlerCall | None:
        """A handler's view of the resource as the index holds it now (create_answers.py); None
        once it is gone, its deletion has begun, or its spec changed (kopf's handlers see to it)."""
        now = self._find(str(res.spec.get("instanceId")), res.uid)
        return (
            now.call(self._claims) if now is not None and now.generation == res.generation else None
        )

    def _find(self, instance_id: str, uid: str) -> Tracked | None:
        if uid in self._held:
            return None
        now = next((m for m in self._index.get(instance_id, ()) if m.uid == uid), None)
        return None if now is None or now.deleting else now

    async def _one(
        self,
        member: Tracked,
        what: str,
        work: Callable[..., Awaitable[None]],
    ) -> None:
        """One resource's check; its status changes are written at its end, only if the resource
        is still as the check saw it (else the next pass decides again). A failure is logged and
        leaves the instance's other resources to be checked."""
        latest = self._latest(member)
        if latest is None:
            return
        res = latest.call(self._claims)
        done = self._checking[latest.uid] = asyncio.get_running_loop().create_future()
        try:
            await work(self._rt, res, deleting=False)
            patch = dict(res.patch.get("status") or {})
            if patch:
                logger.debug("%s of %s writes status %s", what, res.key, sorted(patch))
                await asyncio.to_thread(
                    self._rt.kube.patch_status,
                    res.namespace,
                    res.name,
                    patch,
                    resource_version=res.resource_version,  # the check's own write moves it
                )
        except StatusChangedError:
            logger.info("%s of %s: the resource changed meanwhile; not written", what, res.key)
        except Exception:  # the next pass computes the same changes and writes them then
            logger.warning("%s of %s failed", what, res.key, exc_info=True)
        finally:
            del self._checking[latest.uid]
            done.set_result(None)


async def sleep_until_next_pass(
    clock: Clock,
    period: float,
    changes_at: dt.datetime | None,
    stopped: Callable[[float], Awaitable[object]],
    *,
    monotonic: Callable[[], float] = time.monotonic,
) -> bool:
    """Wait until the next pass is due: after ``period`` seconds (of real time, so that moving
    the operator's clock back does not hold it up), or when the operator's clock reaches
    ``changes_at``, whichever comes first. True when ``stopped`` ended the wait."""
    deadline = monotonic() + period
    stop = False

    async def nap(seconds: float) -> bool:
        nonlocal stop
        left = deadline - monotonic()
        if left > 0:
            stop = bool(await stopped(min(seconds, left)))
        return stop or deadline <= monotonic()

    due = clock.now() + dt.timedelta(seconds=period)
    await clock.sleep_until(min(due, changes_at) if changes_at is not None else due, nap)
    return stop


@dataclass(frozen=True)
class _Conversion:
    """A resource's ``changes_at`` and what it was computed from."""

    key: tuple[int, bool]
    """The resource's generation and whether it was being deleted."""
    since: dt.datetime
    """The operator's clock when it was computed."""
    changes_at: dt.datetime | None


def _next_changes(
    rt: Runtime, members: Iterable[Tracked], known: dict[str, _Conversion]
) -> dict[str, dt.datetime | None]:
    """Each member's :func:`changes_at` by uid. A conversion (a scan of up to a year of runs)
    is computed again only when the spec changed, the instant has passed, the clock went back,
    or a day has passed when none was found: every nudge of the loop (each handler call of one
    of its resources) used to compute it again for every resource. ``known`` is updated."""
    wall = rt.clock.now()
    fresh: dict[str, _Conversion] = {}
    for member in members:
        key = (member.generation, member.deleting)
        seen = known.get(member.uid)
        until = seen.changes_at or seen.since + dt.timedelta(days=1) if seen is not None else wall
        if seen is None or seen.key != key or not seen.since <= wall < until:
            seen = _Conversion(key, wall, changes_at(rt, member))
        fresh[member.uid] = seen
    known.clear()
    known.update(fresh)
    return {uid: conversion.changes_at for uid, conversion in fresh.items()}


def changes_at(rt: Runtime, member: Tracked) -> dt.datetime | None:
    """When what Zomro must hold for this resource changes next (None: not within a year, or
    the spec cannot tell, or the resource is suspended or being deleted)."""
    if member.spec.get("suspend") is True or member.deleting:
        return None
    try:
        timing = member.call({}).desired(rt).timing
    except InvalidSpecError:
        return None
    return timing.changes_at if timing is not None else None


def of(memo: Any) -> InstanceLoops:
    loops = memo.loops
    assert isinstance(loops, InstanceLoops)
    return loops
