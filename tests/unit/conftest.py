"""Fixtures the unit tests share: the sandbox in this process on a manual clock, and an HTTP
client for it. A test module's own `clock` fixture overrides the default one (a start time)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from zomro_backup_operator.sandbox import ManualClock, RunningSandbox, running_sandbox


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
async def sb(clock: ManualClock) -> AsyncIterator[RunningSandbox]:
    """The sandbox in this process (its default account), on the test's ``clock``."""
    async with running_sandbox(clock=clock) as sandbox:
        yield sandbox


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client
