"""Fixtures the unit tests share: the sandbox in this process on a manual clock, an HTTP client
for it, and Zomro clients of it on a fake clock. A test module's own `clock` fixture overrides the
default one (a start time), its own `client_credentials` whom `make_client` logs in as."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import kopf
import pytest
from handler_world import World
from hypothesis import settings
from support import FAST, FULL_PROFILE_EXAMPLES, FakeTime

from zomro_backup_operator.sandbox import ManualClock, RunningSandbox, running_sandbox
from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.transport import tls_context

# `make unit` (--hypothesis-profile=unit) runs every property with a quarter of its examples, so
# that the inner loop takes seconds; CI's `make test` loads no profile and runs the full counts.
settings.register_profile("unit", max_examples=FULL_PROFILE_EXAMPLES // 4)


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
    async with httpx.AsyncClient(timeout=10, verify=tls_context()) as client:
        yield client


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client_credentials() -> Credentials:
    """The default sandbox's account."""
    return Credentials(username="demo", password="demo")


@pytest.fixture
async def make_client(
    sb: RunningSandbox, fake_time: FakeTime, client_credentials: Credentials
) -> AsyncIterator[Callable[..., ZomroClient]]:
    """Clients of ``sb`` that wait on ``fake_time``, closed after the test; they log in as
    ``client_credentials`` unless given others, with ``FAST`` options unless given others."""
    made: list[ZomroClient] = []

    def make(
        credentials: Credentials | None = None, options: ClientOptions = FAST, **kwargs: Any
    ) -> ZomroClient:
        kwargs.setdefault("base_url", sb.url)
        client = ZomroClient(
            credentials or client_credentials,
            options=options,
            sleep=fake_time.sleep,
            clock=fake_time.clock,
            **kwargs,
        )
        made.append(client)
        return client

    yield make
    for client in made:
        await client.aclose()


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    """The handler work's fake cluster and Zomro; kopf's Events land in ``World.events``."""
    made = World()

    def event(_body: Any, *, type: str, reason: str, message: str) -> None:
        made.events.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", event)
    return made
