"""Deleting several schedules in one call, against the sandbox in each way Zomro might serve a
group (``group_delete``): only what a listing no longer shows counts as deleted."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from zomro_backup_operator.sandbox import RunningSandbox
from zomro_backup_operator.zomro.client import ZomroClient
from zomro_backup_operator.zomro.errors import OperationInProgressError, ServerError
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULE_DELETE, FUNC_SCHEDULES
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday

INSTANCE = "5203773"
GROUP_MODES = (None, "first", "partial", "refused")


@pytest.fixture
def client(make_client: Callable[..., ZomroClient]) -> ZomroClient:
    return make_client()


async def make(client: ZomroClient, count: int) -> list[str]:
    specs = [ScheduleSpec(f"s{n}", frozenset({Weekday(1)}), "02:01") for n in range(count)]
    made = await client.create_schedules(INSTANCE, specs)
    return [schedule.id for schedule in made if not isinstance(schedule, Exception)]


def held(sb: RunningSandbox) -> list[str]:
    return [schedule.id for schedule in sb.state.schedules_of(INSTANCE)]


def calls(sb: RunningSandbox) -> list[tuple[str, str]]:
    """(func, how many ids a delete named, or "list") of each schedule call since the start."""
    made: list[tuple[str, str]] = []
    for record in sb.state.requests:
        if record.func == FUNC_SCHEDULE_DELETE:
            made.append((record.func, str(record.elids)))
        elif record.func == FUNC_SCHEDULES:
            made.append((record.func, "list"))
    return made


def set_faults(sb: RunningSandbox, **faults: Any) -> None:
    sb.faults.update(faults, sb.state.now())


@pytest.mark.parametrize("mode", GROUP_MODES)
async def test_a_group_delete_ends_with_exactly_the_named_schedules_gone_in_every_mode(
    client: ZomroClient, sb: RunningSandbox, mode: str | None
) -> None:
    ids = await make(client, 4)
    set_faults(sb, group_delete=mode)

    results = await client.delete_schedules(INSTANCE, ids[:3])

    assert results == [None, None, None]
    assert held(sb) == ids[3:]


async def test_a_group_zomro_honours_costs_one_delete_and_one_listing(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    ids = await make(client, 5)
    sb.state.requests.clear()

    await client.delete_schedules(INSTANCE, ids)

    assert calls(sb) == [(FUNC_SCHEDULE_DELETE, "5"), (FUNC_SCHEDULES, "list")]


@pytest.mark.parametrize("mode", ["first", "refused"])
async def test_a_group_zomro_falls_short_of_is_finished_one_by_one_and_not_tried_again(
    client: ZomroClient, sb: RunningSandbox, mode: str
) -> None:
    ids = await make(client, 5)
    set_faults(sb, group_delete=mode)
    sb.state.requests.clear()

    await client.delete_schedules(INSTANCE, ids[:3])
    first = calls(sb)
    sb.state.requests.clear()
    await client.delete_schedules(INSTANCE, ids[3:])

    singles = 2 if mode == "first" else 3
    assert (
        first
        == [(FUNC_SCHEDULE_DELETE, "3"), (FUNC_SCHEDULES, "list")]
        + [(FUNC_SCHEDULE_DELETE, "1")] * singles
    )
    assert calls(sb) == [(FUNC_SCHEDULE_DELETE, "1")] * 2
    assert held(sb) == []


@pytest.mark.parametrize("mode", [None, "partial"])
async def test_a_group_naming_a_schedule_already_gone_deletes_the_rest_and_keeps_grouping(
    client: ZomroClient, sb: RunningSandbox, mode: str | None
) -> None:
    ids = await make(client, 5)
    sb.state.remove_schedules([ids[1]])
    set_faults(sb, group_delete=mode)

    results = await client.delete_schedules(INSTANCE, ids[:3])
    sb.state.requests.clear()
    await client.delete_schedules(INSTANCE, ids[3:])

    assert results == [None, None, None]
    assert calls(sb) == [(FUNC_SCHEDULE_DELETE, "2"), (FUNC_SCHEDULES, "list")]
    assert held(sb) == []


async def test_a_group_whose_listing_fails_reports_no_schedule_deleted(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    ids = await make(client, 3)
    set_faults(sb, error_rate=1.0, error_status=503, error_funcs=[FUNC_SCHEDULES])

    results = await client.delete_schedules(INSTANCE, ids)

    assert all(isinstance(result, ServerError) for result in results)
    assert held(sb) == []  # Zomro did delete them: the callers only cannot know it yet
    set_faults(sb, error_rate=0.0)
    assert await client.delete_schedules(INSTANCE, ids) == [None, None, None]


async def test_a_group_refused_because_the_instance_is_busy_keeps_every_schedule_and_grouping(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    ids = await make(client, 3)
    sb.state.make_busy(INSTANCE, 60)

    results = await client.delete_schedules(INSTANCE, ids)

    assert all(isinstance(result, OperationInProgressError) for result in results)
    assert held(sb) == ids
    sb.state.instances[INSTANCE].busy_until = 0.0
    sb.state.requests.clear()
    await client.delete_schedules(INSTANCE, ids)
    assert calls(sb) == [(FUNC_SCHEDULE_DELETE, "3"), (FUNC_SCHEDULES, "list")]
