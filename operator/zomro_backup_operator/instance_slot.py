"""One instance under one credential set (an ``InstanceSlot``): the lock its decisions take,
its last listings of schedules and of backups (so N resources on one instance cost one Zomro
list of each per period), and the workers that send its creates and its deletes in batches.
``Slots`` holds them by (credentials, instance)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Generic, TypeVar

from zomro_backup_operator.zomro.models import BackupListing, Schedule, ScheduleSpec

T = TypeVar("T")

CreateMany = Callable[
    [Sequence[ScheduleSpec], Callable[[], Sequence[ScheduleSpec]]],
    Awaitable[Sequence[Schedule | Exception]],
]
"""Creates schedules on the slot's instance, and those the second argument hands out while it
sends them, with one listing at the end; one result (the Schedule or its error) per spec."""

DeleteMany = Callable[[Sequence[str]], Awaitable[Sequence[Exception | None]]]
"""Deletes schedules of the slot's instance: one result per id, None once it is gone."""

MAX_BATCH = 100
"""Creates one listing may tell the ids of (the first of a batch learns its id only once the
last is sent), and ids one delete names."""


@dataclass
class _Create:
    spec: ScheduleSpec
    on_created: Callable[[Schedule], None]
    done: asyncio.Future[Schedule]


@dataclass
class Listing(Generic[T]):
    """The last answer of one listing call, reused while younger than a maximum age. Callers
    that ask at once share one call."""

    value: T | None = None
    fetched_at: float = 0.0
    _fetching: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def get(
        self,
        fetch: Callable[[], Awaitable[T]],
        *,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> T:
        async with self._fetching:
            if self.value is None or clock() - self.fetched_at >= max_age:
                self.value = await fetch()
                self.fetched_at = clock()
            return self.value

    def invalidate(self) -> None:
        self.value = None


@dataclass
class InstanceSlot:
    """One instance under one credential set: a lock for decisions, the last listings, and the
    creates and deletes on their way to Zomro."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    listed: Listing[list[Schedule]] = field(default_factory=Listing)
    """The instance's schedules; our own writes are applied to it as they happen."""
    backups_listed: Listing[BackupListing] = field(default_factory=Listing)
    """The instance's backups, shared by the backup checks of all its schedules."""
    in_flight: dict[str, str] = field(default_factory=dict)
    """Schedule name -> owning resource, for creates queued or sent but not yet listed back:
    the listing cannot show them yet, so decisions look here too."""
    accepted: set[str] = field(default_factory=set)
    """Resources whose create Zomro accepted but no listing has shown yet: never sent again.
    Status says the same durably; this covers a failed write of that status."""
    _queue: list[_Create] = field(default_factory=list)
    _worker: asyncio.Task[None] | None = None
    _deletes: dict[str, asyncio.Future[None]] = field(default_factory=dict)
    _delete_worker: asyncio.Task[None] | None = None

    def submit_create(
        self,
        spec: ScheduleSpec,
        owner: str,
        create_many: CreateMany,
        on_created: Callable[[Schedule], None],
    ) -> asyncio.Future[Schedule]:
        """Queue a create. Creates queued while a batch is at Zomro go together in the next one,
        so that one listing tells all their ids (Zomro's create answer has none)."""
        done: asyncio.Future[Schedule] = asyncio.get_running_loop().create_future()
        self.in_flight[spec.name] = owner
        self._queue.append(_Create(spec, on_created, done))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain(create_many))
        return done

    async def _drain(self, create_many: CreateMany) -> None:
        batch: list[_Create] = []

        def more() -> list[ScheduleSpec]:
            """Creates queued while the batch is at Zomro join it: its one listing tells their
            ids too (under a steady stream of creates, a listing per batch would be one per
            create)."""
            joining = self._queue[: max(MAX_BATCH - len(batch), 0)]
            del self._queue[: len(joining)]
            batch.extend(joining)
            return [item.spec for item in joining]

        try:
            while self._queue:
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                try:
                    results: Sequence[Schedule | Exception] = await create_many(
                        [item.spec for item in batch], more
                    )
                except Exception as exc:  # handed to every waiting caller
                    results = [exc] * len(batch)
                for item, result in zip(batch, results, strict=True):
                    self.in_flight.pop(item.spec.name, None)
                    if isinstance(result, Schedule):
                        self.added(result)
                        item.on_created(result)
                        _settle(item.done, result)
                    else:
                        self.invalidate()
                        _settle(item.done, result)
                batch = []
        finally:  # cancelled (the operator stops): nothing may wait forever
            for item in [*batch, *self._queue]:
                self.in_flight.pop(item.spec.name, None)
                item.done.cancel()
            self._queue = []

    def submit_delete(self, schedule_id: str, delete_many: DeleteMany) -> asyncio.Future[None]:
        """Queue a delete; done once Zomro no longer holds the schedule. Deletes queued while
        one is at Zomro go together in the next call. The future may be shared: await it
        shielded."""
        done = self._deletes.get(schedule_id)
        if done is None:
            done = self._deletes[schedule_id] = asyncio.get_running_loop().create_future()
        if self._delete_worker is None or self._delete_worker.done():
            self._delete_worker = asyncio.create_task(self._drain_deletes(delete_many))
        return done

    async def _drain_deletes(self, delete_many: DeleteMany) -> None:
        batch: dict[str, asyncio.Future[None]] = {}
        try:
            while self._deletes:
                batch = dict(list(self._deletes.items())[:MAX_BATCH])
                for schedule_id in batch:
                    del self._deletes[schedule_id]
                try:
                    results: Sequence[Exception | None] = await delete_many(list(batch))
                except Exception as exc:  # handed to every waiting caller
                    results = [exc] * len(batch)
                for (schedule_id, done), result in zip(batch.items(), results, strict=True):
                    if result is None:
                        self.removed(schedule_id)
                        if not done.done():
                            done.set_result(None)
                    else:
                        self.invalidate()
                        if not done.done():
                            done.set_exception(result)
                batch = {}
        finally:  # cancelled (the operator stops): nothing may wait forever
            for done in [*batch.values(), *self._deletes.values()]:
                done.cancel()
            self._deletes = {}

    async def schedules(
        self,
        fetch: Callable[[], Awaitable[list[Schedule]]],
        *,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> list[Schedule]:
        """The instance's schedules, from the last listing if it is younger than ``max_age``.

        Callers hold ``lock``; our own writes are applied to the cached rows, so within this
        process the cache only misses changes made behind the operator's back, which is what
        ``max_age`` (the resync period) bounds.
        """
        return list(await self.listed.get(fetch, max_age=max_age, clock=clock))

    async def backups(
        self,
        fetch: Callable[[], Awaitable[BackupListing]],
        *,
        max_age: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> BackupListing:
        """The instance's backups, from the last listing if it is younger than ``max_age``."""
        return await self.backups_listed.get(fetch, max_age=max_age, clock=clock)

    @property
    def idle(self) -> bool:
        """Nothing here that a listing would not tell again: no decision, no create under way."""
        busy = any(
            worker is not None and not worker.done()
            for worker in (self._worker, self._delete_worker)
        )
        queued = self._queue or self._deletes
        return not (self.lock.locked() or self.in_flight or self.accepted or busy or queued)

    def invalidate(self) -> None:
        self.listed.invalidate()

    def added(self, schedule: Schedule) -> None:
        rows = self.listed.value
        if rows is not None:
            self.listed.value = [row for row in rows if row.id != schedule.id] + [schedule]

    def changed(self, schedule_id: str, spec: ScheduleSpec) -> None:
        rows = self.listed.value
        if rows is not None:
            self.listed.value = [
                replace(row, name=spec.name, days=spec.days, time=spec.time)
                if row.id == schedule_id
                else row
                for row in rows
            ]

    def removed(self, schedule_id: str) -> None:
        rows = self.listed.value
        if rows is not None:
            self.listed.value = [row for row in rows if row.id != schedule_id]


def _settle(done: asyncio.Future[Schedule], result: Schedule | Exception) -> None:
    if done.done():
        return
    if isinstance(result, Schedule):
        done.set_result(result)
    else:
        done.set_exception(result)


class Slots:
    """InstanceSlots by (credentials fingerprint, instance id)."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, str], InstanceSlot] = {}

    def get(self, fingerprint: str, instance_id: str) -> InstanceSlot:
        return self._slots.setdefault((fingerprint, instance_id), InstanceSlot())

    def retire(self, fingerprint: str) -> None:
        """Forget the credential set's slots that hold nothing a decision still needs: one with
        a decision under way, a create on its way or one Zomro accepted stays."""
        for key, slot in list(self._slots.items()):
            if key[0] == fingerprint and slot.idle:
                del self._slots[key]
