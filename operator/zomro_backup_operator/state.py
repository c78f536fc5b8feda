"""Shared in-process state: who claims which Zomro schedule, and one listing per instance.

Both exist so that N resources on one instance cost one Zomro list per period, and so that two
resources can never take the same remote schedule, even while their statuses are still in flight.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace

from zomro_backup_operator.zomro.models import Schedule, ScheduleSpec

ClaimKey = tuple[str, str]
"""(instance id, schedule id)."""


class Claims:
    """Which resource ("namespace/name") owns which remote schedule.

    The cluster's truth is kopf's index over ``status.scheduleId`` (complete at start-up, so a
    restarted operator knows every claim before it handles anything). Claims this process makes
    or drops are recorded here at once, because the index only learns of them when the status
    write comes back through the watch.
    """

    def __init__(self) -> None:
        self._local: dict[ClaimKey, str | None] = {}

    def owner(
        self, instance_id: str, schedule_id: str, indexed: Mapping[ClaimKey, Iterable[str]]
    ) -> str | None:
        key = (instance_id, schedule_id)
        if key in self._local:
            return self._local[key]
        return next(iter(sorted(indexed.get(key, ()))), None)

    def claim(self, instance_id: str, schedule_id: str, owner: str) -> None:
        self._local[(instance_id, schedule_id)] = owner

    def release(self, instance_id: str, schedule_id: str, owner: str) -> None:
        key = (instance_id, schedule_id)
        if self._local.get(key, owner) == owner:
            self._local[key] = None


@dataclass
class InstanceSlot:
    """One instance under one credential set: a lock for decisions, and the last listing."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rows: list[Schedule] | None = None
    fetched_at: float = 0.0

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
        now = clock()
        if self.rows is None or now - self.fetched_at >= max_age:
            self.rows = list(await fetch())
            self.fetched_at = clock()
        return list(self.rows)

    def invalidate(self) -> None:
        self.rows = None

    def added(self, schedule: Schedule) -> None:
        if self.rows is not None:
            self.rows = [row for row in self.rows if row.id != schedule.id] + [schedule]

    def changed(self, schedule_id: str, spec: ScheduleSpec) -> None:
        if self.rows is not None:
            self.rows = [
                replace(row, name=spec.name, days=spec.days, time=spec.time)
                if row.id == schedule_id
                else row
                for row in self.rows
            ]

    def removed(self, schedule_id: str) -> None:
        if self.rows is not None:
            self.rows = [row for row in self.rows if row.id != schedule_id]


class Slots:
    """InstanceSlots by (credentials fingerprint, instance id)."""

    def __init__(self) -> None:
        self._slots: dict[tuple[str, str], InstanceSlot] = {}

    def get(self, fingerprint: str, instance_id: str) -> InstanceSlot:
        return self._slots.setdefault((fingerprint, instance_id), InstanceSlot())
