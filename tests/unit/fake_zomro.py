"""An in-memory stand-in for ZomroClient, for unit tests of the reconcile core only.

Behaviour against the real HTTP surface is tested against the sandbox; this fake exists so the
decision core's branches run in microseconds and failures can be injected per call.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from zomro_backup_operator.zomro.errors import AccessDeniedError, NotFoundError
from zomro_backup_operator.zomro.models import (
    Backup,
    BackupListing,
    Instance,
    Schedule,
    ScheduleSpec,
)


@dataclass(eq=False)  # compared and hashed by identity, like the client it stands in for
class FakeZomro:
    instances: dict[str, str] = field(default_factory=lambda: {"5203773": "MyServer"})
    schedules: dict[str, Schedule] = field(default_factory=dict)
    backups: dict[str, list[Backup]] = field(default_factory=dict)
    """Backups by instance id."""
    calls: list[str] = field(default_factory=list)
    batches: list[list[str]] = field(default_factory=list)
    """Names of each create_schedules call, in order."""
    deletes: list[list[str]] = field(default_factory=list)
    """Ids of each delete_schedules call, in order."""
    fail: dict[str, Exception] = field(default_factory=dict)
    """Raise this exception on the next call of the named method (then forget it)."""
    after_create: Callable[[Schedule], None] | None = None
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(14))

    def _enter(self, method: str, instance_id: str | None = None) -> None:
        self.calls.append(method)
        if method in self.fail:
            raise self.fail.pop(method)
        if instance_id is not None and instance_id not in self.instances:
            raise AccessDeniedError(f"instance {instance_id} is not yours")

    def add(self, instance_id: str, spec: ScheduleSpec) -> Schedule:
        schedule = Schedule(
            id=str(next(self._ids)),
            instance_id=instance_id,
            name=spec.name,
            days=spec.days,
            time=spec.time,
            server_name=self.instances[instance_id],
        )
        self.schedules[schedule.id] = schedule
        return schedule

    async def list_instances(self) -> list[Instance]:
        self._enter("list_instances")
        return [Instance(id=i, name=n) for i, n in self.instances.items()]

    async def list_schedules(self, instance_id: str) -> list[Schedule]:
        self._enter("list_schedules", instance_id)
        return [s for s in self.schedules.values() if s.instance_id == instance_id]

    async def create_schedules(
        self,
        instance_id: str,
        specs: Sequence[ScheduleSpec],
        more: Callable[[], Sequence[ScheduleSpec]] = tuple,
    ) -> list[Schedule | Exception]:
        self.batches.append([spec.name for spec in specs])
        self._enter("create_schedules", instance_id)
        results: list[Schedule | Exception] = []
        batch = list(specs)
        while batch:
            for spec in batch:
                await asyncio.sleep(0)  # a real client yields while each request is out
                created = self.add(instance_id, spec)
                try:
                    if self.after_create is not None:
                        self.after_create(created)
                    results.append(created)
                except Exception as exc:  # a lost answer: applied at Zomro, unknown to the caller
                    results.append(exc)
            batch = list(more())
            self.batches[-1].extend(spec.name for spec in batch)
        return results

    async def update_schedule(self, instance_id: str, schedule_id: str, spec: ScheduleSpec) -> None:
        self._enter("update_schedule", instance_id)
        if schedule_id not in self.schedules:
            raise NotFoundError(f"schedule {schedule_id} not found")
        self.schedules[schedule_id] = replace(
            self.schedules[schedule_id], name=spec.name, days=spec.days, time=spec.time
        )

    async def delete_schedules(
        self, instance_id: str, schedule_ids: Sequence[str]
    ) -> list[Exception | None]:
        self.deletes.append(list(schedule_ids))
        self._enter("delete_schedules", instance_id)
        await asyncio.sleep(0)  # a real client yields while the request is out
        for schedule_id in schedule_ids:
            self.schedules.pop(schedule_id, None)
        return [None for _ in schedule_ids]

    async def list_backups(self, instance_id: str) -> BackupListing:
        self._enter("list_backups", instance_id)
        await asyncio.sleep(0)  # a real client yields while the request is out
        return BackupListing(tuple(self.backups.get(instance_id, [])), 3, 0, 0)
