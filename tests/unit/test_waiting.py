"""hack/devkit's wait_for, which every test and hack tool waits with."""

from __future__ import annotations

import asyncio

import pytest
from devkit.waiting import WaitTimeout, wait_for, wait_for_async


def test_a_wait_returns_the_first_truthy_look() -> None:
    looks = iter([None, [], ["ready"]])
    assert wait_for("a list", lambda: next(looks), interval=0) == ["ready"]


def test_a_wait_that_runs_out_names_what_it_waited_for_and_the_last_look() -> None:
    with pytest.raises(WaitTimeout, match=r"waiting for the thing; last: \[\]") as caught:
        wait_for("the thing", lambda: [], timeout=0)
    assert isinstance(caught.value, AssertionError)  # a test that waits fails as an assertion


async def test_the_async_wait_yields_to_the_loop_until_the_condition_holds() -> None:
    seen: list[int] = []

    async def later() -> None:
        seen.append(1)

    task = asyncio.create_task(later())
    assert await wait_for_async("the task to run", lambda: seen, timeout=5) == [1]
    await task
    with pytest.raises(WaitTimeout, match="waiting for nothing"):
        await wait_for_async("nothing", lambda: None, timeout=0)
