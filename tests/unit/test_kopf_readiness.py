"""kopf's indexing barrier, made quiet (kopf_readiness.py): the same answers, one wake-up."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable

import pytest
from kopf._cogs.aiokits import aiotoggles
from kopf._core.reactor import orchestration

from zomro_backup_operator import kopf_readiness
from zomro_backup_operator.kopf_readiness import QuietToggleSet

OBJECTS = 300


def _count_notifications(toggles: QuietToggleSet) -> list[int]:
    calls = [0]
    notify_all = toggles._condition.notify_all

    def counting() -> None:
        calls[0] += 1
        notify_all()

    toggles._condition.notify_all = counting  # type: ignore[method-assign]
    return calls


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_the_barrier_wakes_its_waiters_once_when_the_last_object_is_indexed() -> None:
    # kopf's own set notified at every make_toggle and drop_toggle: 2 x OBJECTS wake-ups of
    # OBJECTS waiters, which over 10 000 objects kept a restart busy for more than 11 minutes.
    barrier = QuietToggleSet(all)
    blocker = await barrier.make_toggle(name="orchestration blocker")
    notifications = _count_notifications(barrier)
    objects = [await barrier.make_toggle(name=f"object {i}") for i in range(OBJECTS)]
    waiters = [asyncio.create_task(barrier.wait_for(True)) for _ in objects]
    await barrier.drop_toggle(blocker)
    for toggle in objects[:-1]:
        await barrier.drop_toggle(toggle)
    await _settle()
    assert not any(waiter.done() for waiter in waiters)

    await barrier.drop_toggles(objects[-1:])
    await asyncio.wait_for(asyncio.gather(*waiters), timeout=5)
    assert barrier.is_on()
    assert notifications == [1]


async def test_a_set_that_turns_off_again_wakes_who_waits_for_off() -> None:
    barrier = QuietToggleSet(all)
    waiter = asyncio.create_task(barrier.wait_for(False))
    await _settle()
    assert not waiter.done()
    await barrier.make_toggle()
    await asyncio.wait_for(waiter, timeout=5)


@pytest.mark.parametrize("fn", [any, all])
async def test_a_member_turned_on_directly_still_wakes_the_waiters(
    fn: Callable[[Iterable[bool]], bool],
) -> None:
    # kopf's peering pause is a ToggleSet(any) whose members turn on and off themselves.
    paused = QuietToggleSet(fn)
    member = await paused.make_toggle(False, name="peering CRD is missing")
    waiter = asyncio.create_task(paused.wait_for(True))
    await _settle()
    assert not waiter.done()
    await member.turn_to(True)
    await asyncio.wait_for(waiter, timeout=5)


def test_kopf_makes_its_indexing_barrier_from_the_quiet_set_once_installed() -> None:
    # The fix reaches kopf only while its orchestrator looks the class up in aiotoggles when it
    # starts; a kopf that builds its barrier otherwise makes this fail rather than stay slow.
    kopf_readiness.install()
    kopf_readiness.install()
    assert "aiotoggles.ToggleSet(all)" in inspect.getsource(orchestration.orchestrator)
    assert vars(orchestration)["aiotoggles"] is aiotoggles
    assert aiotoggles.ToggleSet is QuietToggleSet
