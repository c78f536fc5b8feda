"""The doctor's ``--write-test``: one marked schedule created, read back, changed and deleted,
and always cleaned up (on errors, and on SIGINT/SIGTERM, which cancel the run)."""

from __future__ import annotations

import datetime
import secrets
from collections.abc import Callable

from zomro_backup_operator.cli_tools.raw_answers import AnswerRecorder
from zomro_backup_operator.cli_tools.report import Finding, Level, Report
from zomro_backup_operator.zomro import ZomroClient, wire
from zomro_backup_operator.zomro.errors import ZomroError
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULE_EDIT, FUNC_SCHEDULES
from zomro_backup_operator.zomro.models import Schedule, ScheduleSpec, Weekday

MARK = "zbo-doctor-"
"""The name prefix of the write test's schedule: anything so named is the doctor's own."""


class WriteTest:
    """Create one marked schedule, read it back, change it, delete it; always clean up."""

    def __init__(
        self,
        client: ZomroClient,
        report: Report,
        recorder: AnswerRecorder,
        say: Callable[[str], None],
    ) -> None:
        self._client = client
        self._report = report
        self._recorder = recorder
        self._say = say
        self.name = f"{MARK}{secrets.token_hex(4)}"
        self._first = ScheduleSpec(self.name, frozenset({Weekday.WEDNESDAY}), "03:17")
        self._second = ScheduleSpec(
            self.name, frozenset({Weekday.THURSDAY, Weekday.SATURDAY}), "04:28"
        )

    def _step(self, level: Level, step: str, message: str) -> None:
        self._report.write_test.append(Finding(level, step, message))
        self._say(f"write test: {step}: {message}")

    async def run(self, instance_id: str) -> None:
        self._say(f"write test on instance {instance_id} with schedule {self.name!r}")
        done = False
        try:
            done = await self._steps(instance_id)
        except ZomroError as exc:
            self._step("problem", "stopped", exc.message)
        finally:
            if not done:
                await self._clean_up(instance_id)

    async def _steps(self, instance_id: str) -> bool:
        client = self._client
        mark = len(self._recorder.answers)
        created = await client.create_schedule(instance_id, self._first)
        answers = self._recorder.since(mark, FUNC_SCHEDULE_EDIT)
        carried = any(
            doc is not None and wire.parse_created_id(doc) is not None
            for doc in (a.doc() for a in answers)
        )
        how = "the answer carried it" if carried else "found by listing (the answer had no id)"
        self._step("ok", "create", f"id {created.id}, {how}")
        await self._expect(instance_id, created.id, self._first, "read back")
        await client.update_schedule(instance_id, created.id, self._second)
        self._step("ok", "change", f"days and time changed on id {created.id}")
        await self._expect(instance_id, created.id, self._second, "read back after change")
        await client.delete_schedule(instance_id, created.id)
        self._step("ok", "delete", f"id {created.id} deleted")
        left = [s for s in await client.list_schedules(instance_id) if s.name == self.name]
        if left:
            self._step("problem", "confirm deleted", f"still listed: {[s.id for s in left]}")
            return False
        self._step("ok", "confirm deleted", "no longer listed")
        return True

    async def _expect(
        self, instance_id: str, schedule_id: str, spec: ScheduleSpec, step: str
    ) -> None:
        mark = len(self._recorder.answers)
        listed = await self._client.list_schedules(instance_id)
        mine = [s for s in listed if s.name == self.name]
        held = next((s for s in mine if s.id == schedule_id), None)
        if held is None:
            self._step("problem", step, f"id {schedule_id} is not listed")
            return
        if len(mine) > 1:
            self._step("problem", step, f"{len(mine)} schedules carry the name: a duplicate")
        if not held.matches(spec):
            self._step("problem", step, f"Zomro holds {_describe(held)}, not {_describe(spec)}")
            return
        raw_days = self._raw_days(mark, schedule_id)
        self._step("ok", step, f"{_describe(held)}; listed days {raw_days!r}")
        if step == "read back" and held.create_date is not None:
            self._clock(held)

    def _raw_days(self, mark: int, schedule_id: str) -> str:
        for answer in self._recorder.since(mark, FUNC_SCHEDULES):
            doc = answer.doc()
            for row in wire.rows(doc or {}, func=FUNC_SCHEDULES):
                if wire.scalar(row.get("id")) == schedule_id:
                    return wire.scalar(row.get("rotation_days")) or ""
        return ""

    def _clock(self, held: Schedule) -> None:
        """A create date that is not today's UTC date tells which side of UTC the provider is."""
        assert held.create_date is not None
        today = datetime.datetime.now(datetime.UTC).date()
        if held.create_date == today:
            return
        side = "ahead of" if held.create_date > today else "behind"
        self._report.findings.append(
            Finding(
                "note",
                "clock",
                f"the new schedule's create_date {held.create_date} is not UTC's {today}: "
                f"the provider's clock is {side} UTC",
            )
        )
        self._report.provider_clock = (
            f"the provider's date is {side} UTC's: set the zone the panel's times are in"
        )

    async def _clean_up(self, instance_id: str) -> None:
        """Delete every schedule carrying this run's marked name, even after an interruption."""
        self._say(f"cleaning up: deleting schedules named {self.name!r}")
        try:
            mine = [
                s for s in await self._client.list_schedules(instance_id) if s.name == self.name
            ]
            for schedule in mine:
                await self._client.delete_schedule(instance_id, schedule.id)
            left = [
                s for s in await self._client.list_schedules(instance_id) if s.name == self.name
            ]
        except ZomroError as exc:
            self._step(
                "problem",
                "clean up",
                f"{exc.message}; delete the schedule named {self.name!r} on instance "
                f"{instance_id} by hand",
            )
            return
        if left:
            self._step("problem", "clean up", f"still listed: {[s.id for s in left]}")
        elif mine:
            self._step("ok", "clean up", f"removed {[s.id for s in mine]}")
        else:
            self._step("ok", "clean up", "nothing was left at Zomro")


def _describe(value: Schedule | ScheduleSpec) -> str:
    days = ",".join(day.title for day in sorted(value.days))
    return f"{days} {value.time}"
