"""Fixtures the unit tests share: the sandbox in this process on a manual clock, and an HTTP
client for it. A test module's own `clock` fixture overrides the default one (a start time)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import kopf
import pytest
from handler_world import World

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


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    """The handler work's fake cluster and Zomro; kopf's Events land in ``World.events``."""
    made = World()

    def event(_body: Any, *, type: str, reason: str, message: str) -> None:
        made.events.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", event)
    return made
