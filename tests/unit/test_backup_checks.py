"""The backup check (backup_checks.py) with a fake Kube, a fake Zomro and kopf's own Patch:
what goes into status, when an Event is posted, what one listing serves, the metrics."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Mapping
from typing import Any

import kopf
import pytest
from handler_world import INSTANCE, SPEC, World
from prometheus_client import REGISTRY

from zomro_backup_operator import backup_checks, handling
from zomro_backup_operator.clock import Clock
from zomro_backup_operator.handling import HandlerCall
from zomro_backup_operator.zomro.errors import ServerError
from zomro_backup_operator.zomro.models import Backup

MONDAY_NIGHT = dt.datetime(2026, 12, 7, 0, 30, tzinfo=dt.UTC)  # 02:30 in Kyiv, after 02:01
WATCHED = {"days": ["Monday"], "time": "02:01", "since": "2026-12-06T00:00:00Z"}


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    made = World()
    made.rt.clock = Clock(wall=lambda: MONDAY_NIGHT)

    def event(_body: Any, *, type: str, reason: str, message: str) -> None:
        made.events.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", event)
    return made


def auto_backup(created: str, status: str = "active", backup_id: str = "900") -> Backup:
    return Backup(
        backup_id,
        f"auto-{backup_id}",
        "auto",
        status,
        dt.datetime.fromisoformat(created),
        2.0,
        False,
    )


def reconciled(world: World, extra: Mapping[str, Any] | None = None, **kwargs: Any) -> HandlerCall:
    schedule_id = next(iter(world.zomro.schedules), None) or world.listed()
    status = {"scheduleId": schedule_id, "observedGeneration": 1, "expectedRuns": WATCHED}
    return world.resource({**status, **(extra or {})}, **kwargs)


def healthy(patch: Mapping[str, Any]) -> Mapping[str, Any]:
    return next(c for c in patch["conditions"] if c["type"] == "BackupsHealthy")


def metric(name: str, resource: str = "nightly") -> float | None:
    labels = {"namespace": "team", "name": resource, "instance": INSTANCE}
    return REGISTRY.get_sample_value(name, labels)


async def test_a_nights_backup_goes_into_status_once_with_one_event(world: World) -> None:
    world.zomro.backups[INSTANCE] = [auto_backup("2026-12-07T02:01:30")]
    res = reconciled(world)
    await backup_checks.check(world.rt, res, deleting=False)

    status = res.patch["status"]
    assert status["lastBackup"] == {
        "id": "900",
        "name": "auto-900",
        "time": "2026-12-07T00:01:30Z",
        "state": "active",
    }
    assert status["lastSuccessfulBackupTime"] == "2026-12-07T00:01:30Z"
    assert healthy(status)["status"] == "True"
    assert healthy(status)["reason"] == "BackupCompleted"
    assert [(kind, reason) for kind, reason, _ in world.events] == [("Normal", "BackupCompleted")]

    again = reconciled(world, {**res.status, **status})
    await backup_checks.check(world.rt, again, deleting=False)
    assert again.patch == {}  # nothing changed: nothing written
    assert len(world.events) == 1


async def test_a_schedule_whose_first_run_is_not_due_gets_unknown_without_an_event(
    world: World,
) -> None:
    res = reconciled(world, {"expectedRuns": None})  # its first check: nothing is due yet
    await backup_checks.check(world.rt, res, deleting=False)
    assert healthy(res.patch["status"])["status"] == "Unknown"
    assert world.events == []  # after an upgrade, 10 000 of these would be noise


async def test_a_failed_backup_posts_a_warning_only_when_the_condition_changes(
    world: World,
) -> None:
    world.zomro.backups[INSTANCE] = [auto_backup("2026-12-07T02:01:30", status="error")]
    res = reconciled(world)
    await backup_checks.check(world.rt, res, deleting=False)
    assert healthy(res.patch["status"])["reason"] == "BackupFailed"
    assert world.events[-1][:2] == ("Warning", "BackupFailed")
    assert metric("zomro_operator_backup_failed") == 1
    assert metric("zomro_operator_backup_overdue") == 0

    again = reconciled(world, dict(res.patch["status"]))
    await backup_checks.check(world.rt, again, deleting=False)
    assert len(world.events) == 1


async def test_the_schedules_of_one_instance_share_one_backups_listing_per_period(
    world: World,
) -> None:
    world.zomro.backups[INSTANCE] = [auto_backup("2026-12-07T02:01:30")]
    first = world.listed("first")
    second = world.listed("second")
    for schedule_id in (first, second, first):
        status = {"scheduleId": schedule_id, "observedGeneration": 1, "expectedRuns": WATCHED}
        await backup_checks.check(world.rt, world.resource(status), deleting=False)
    assert world.zomro.calls.count("list_backups") == 1
    assert world.zomro.calls.count("list_schedules") == 1


async def test_checks_that_run_at_once_share_one_backups_listing(world: World) -> None:
    first, second = world.listed("first"), world.listed("second")
    resources = [
        world.resource({"scheduleId": ident, "observedGeneration": 1, "expectedRuns": WATCHED})
        for ident in (first, second)
    ]
    await asyncio.gather(*(backup_checks.check(world.rt, r, deleting=False) for r in resources))
    assert world.zomro.calls.count("list_backups") == 1


@pytest.mark.parametrize(
    "recorded",
    [None, {"days": ["Someday"], "time": "02:01", "since": "2026-12-06T00:00:00Z"}, "garbage"],
)
async def test_missing_or_foreign_expectations_start_again_now(
    world: World, recorded: object
) -> None:
    res = reconciled(world, {"expectedRuns": recorded})
    await backup_checks.check(world.rt, res, deleting=False)
    assert res.patch["status"]["expectedRuns"] == {
        "days": ["Monday"],
        "time": "02:01",
        "since": "2026-12-07T00:30:00Z",
    }
    assert healthy(res.patch["status"])["reason"] == "AwaitingFirstRun"


async def test_a_suspended_schedule_asks_zomro_nothing_and_expects_no_backup(world: World) -> None:
    res = reconciled(world, spec={**SPEC, "suspend": True})
    await backup_checks.check(world.rt, res, deleting=False)
    assert world.zomro.calls == []
    status = res.patch["status"]
    assert status["expectedRuns"] is None  # watched again from when it resumes
    assert (healthy(status)["status"], healthy(status)["reason"]) == ("Unknown", "Suspended")


@pytest.mark.parametrize(
    "status",
    [
        {},  # never reconciled
        {"scheduleId": "14", "observedGeneration": 0},  # the current spec not yet reconciled
    ],
)
async def test_a_resource_no_handler_has_reconciled_is_left_alone(
    world: World, status: Mapping[str, Any]
) -> None:
    res = world.resource(status)
    await backup_checks.check(world.rt, res, deleting=False)
    assert world.zomro.calls == []
    assert res.patch == {}


async def test_a_resource_being_deleted_is_left_alone_even_when_suspended(world: World) -> None:
    res = reconciled(world, spec={**SPEC, "suspend": True})
    await backup_checks.check(world.rt, res, deleting=True)
    assert res.patch == {}


async def test_a_failing_listing_changes_nothing(world: World) -> None:
    res = reconciled(world)
    world.zomro.fail["list_backups"] = ServerError("HTTP 503")
    await backup_checks.check(world.rt, res, deleting=False)
    assert res.patch == {}
    assert world.events == []


async def test_the_backup_series_follow_the_check_and_go_with_the_resource(world: World) -> None:
    world.zomro.backups[INSTANCE] = [auto_backup("2026-12-07T02:01:30")]
    res = reconciled(world)
    await backup_checks.check(world.rt, res, deleting=False)
    created = dt.datetime(2026, 12, 7, 0, 1, 30, tzinfo=dt.UTC).timestamp()
    assert metric("zomro_operator_last_successful_backup_timestamp_seconds") == created
    assert metric("zomro_operator_backup_overdue") == 0

    gone = reconciled(world, {**res.status, **res.patch["status"]})
    await handling.remove(world.rt, gone, retry=0)
    assert metric("zomro_operator_last_successful_backup_timestamp_seconds") is None
    assert metric("zomro_operator_backup_overdue") is None
