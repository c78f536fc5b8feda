"""The client's session (zomro/session.py): one login shared by concurrent callers, one renewal,
a brand-new session never renewed, the refused login's memory, token mode, redaction of replaced
session ids, the write fence on a renewed write, and the request hook on logins. Against the
sandbox over loopback, or canned answers (``httpx.MockTransport``) where the sandbox cannot say it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx
import pytest
from support import FakeTime, assert_no_secrets
from test_client_shapes import INSTANCE, SID, CannedZomro, doc, error, make

from zomro_backup_operator.sandbox import RunningSandbox
from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    AuthenticationError,
    TokenExpiredError,
    WriteWithheldError,
)
from zomro_backup_operator.zomro.funcs import (
    FUNC_AUTH,
    FUNC_INSTANCES,
    FUNC_SCHEDULE_EDIT,
    FUNC_SCHEDULES,
)
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday

NIGHTLY = ScheduleSpec(name="nightly", days=frozenset({Weekday.MONDAY}), time="02:01")
LATER = ScheduleSpec(name="nightly", days=frozenset({Weekday.MONDAY}), time="03:00")
SECOND_SID = "9e8d7c6b5a4f3e2d1c0b9a8f"


def funcs(sb: RunningSandbox) -> list[str]:
    return [record.func for record in sb.state.requests]


async def test_concurrent_first_calls_share_one_login(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    zc = make_client()
    await asyncio.gather(*(zc.list_schedules(INSTANCE) for _ in range(4)))
    assert funcs(sb) == [FUNC_AUTH, *[FUNC_SCHEDULES] * 4]


async def test_a_refusal_of_a_brand_new_session_is_final_without_a_second_login(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    zc = make_client()
    with pytest.raises(AccessDeniedError):
        await zc.list_schedules("777")
    assert funcs(sb) == [FUNC_AUTH, FUNC_SCHEDULES]


async def test_logins_and_renewals_reach_the_request_hook(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    seen: list[tuple[str, str]] = []
    zc = make_client(on_request=lambda func, outcome, _: seen.append((func, outcome)))
    await zc.list_instances()
    sb.state.expire_sessions()
    await zc.list_instances()
    # Zomro answers a call on a session it no longer knows as an access refusal.
    assert seen == [
        (FUNC_AUTH, "ok"),
        (FUNC_INSTANCES, "ok"),
        (FUNC_INSTANCES, "AccessDeniedError"),
        (FUNC_AUTH, "ok"),
        (FUNC_INSTANCES, "ok"),
    ]


class Fence:
    """A write fence that closes once a refused edit has been seen, while armed."""

    def __init__(self) -> None:
        self.open = True
        self.armed = False

    def may_write(self) -> bool:
        return self.open

    def on_request(self, func: str, outcome: str, _: float) -> None:
        if self.armed and func == FUNC_SCHEDULE_EDIT and outcome != "ok":
            self.open = False


async def test_a_renewed_write_asks_the_fence_again_before_it_is_sent_again(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    fence = Fence()
    zc = make_client(may_write=fence.may_write, on_request=fence.on_request)
    created = await zc.create_schedule(INSTANCE, NIGHTLY)
    sb.state.expire_sessions()
    sb.state.requests.clear()
    fence.armed = True
    with pytest.raises(WriteWithheldError):
        await zc.update_schedule(INSTANCE, created.id, LATER)
    assert funcs(sb) == [FUNC_SCHEDULE_EDIT, FUNC_AUTH]
    assert [s.time for s in sb.state.schedules_of(INSTANCE)] == ["02:01"]


async def test_a_session_id_replaced_by_a_renewal_is_still_redacted() -> None:
    fake = CannedZomro(
        {
            FUNC_AUTH: [doc({"auth": {"$id": SID}}), doc({"auth": {"$id": SECOND_SID}})],
            FUNC_INSTANCES: doc({}),
            FUNC_SCHEDULES: [
                error("auth", "", "Session expired"),
                error("access", "", f"session {SID} was replaced by {SECOND_SID}"),
            ],
        }
    )
    async with make(fake) as zc:
        await zc.list_instances()
        with pytest.raises(AccessDeniedError) as caught:
            await zc.list_schedules(INSTANCE)
    assert fake.funcs == [FUNC_AUTH, FUNC_INSTANCES, FUNC_SCHEDULES, FUNC_AUTH, FUNC_SCHEDULES]
    assert_no_secrets([str(caught.value)], SID, SECOND_SID, "p-secret")


async def test_a_refusal_from_memory_is_a_new_error_of_the_same_kind_and_words() -> None:
    fake = CannedZomro({FUNC_AUTH: error("auth", "badpassword", "Wrong password")})
    async with make(fake) as zc:
        with pytest.raises(AuthenticationError) as first:
            await zc.list_instances()
        with pytest.raises(AuthenticationError) as remembered:
            await zc.list_instances()
    assert fake.funcs == [FUNC_AUTH]
    assert remembered.value is not first.value
    assert type(remembered.value) is type(first.value)
    assert remembered.value.message == first.value.message


async def test_a_login_after_the_refusal_lapses_serves_the_call() -> None:
    clock = FakeTime(now=500.0)
    fake = CannedZomro(
        {
            FUNC_AUTH: [error("auth", "badpassword"), doc({"auth": {"$id": SID}})],
            FUNC_INSTANCES: doc({}),
        }
    )
    async with make(fake, clock=clock) as zc:
        with pytest.raises(AuthenticationError):
            await zc.list_instances()
        clock.now += ClientOptions().login_refusal_memory - 1
        with pytest.raises(AuthenticationError):
            await zc.list_instances()
        clock.now += 1
        assert await zc.list_instances() == []
    assert fake.funcs == [FUNC_AUTH, FUNC_AUTH, FUNC_INSTANCES]


async def test_a_token_refused_without_saying_expired_is_expired_when_a_probe_fails_too() -> None:
    fake = CannedZomro(
        {
            FUNC_SCHEDULES: error("access", "", "Insufficient privileges"),
            FUNC_INSTANCES: error("auth", "", "unknown session"),
        }
    )
    async with make(fake, credentials=Credentials(token=SID)) as zc:
        with pytest.raises(TokenExpiredError) as caught:
            await zc.list_schedules(INSTANCE)
    assert fake.funcs == [FUNC_SCHEDULES, FUNC_INSTANCES]
    assert [call["auth"] for call in fake.calls] == [SID, SID]
    assert_no_secrets([str(caught.value)], SID)


async def test_a_token_refused_for_one_instance_is_that_refusal_when_the_probe_works() -> None:
    fake = CannedZomro(
        {
            FUNC_SCHEDULES: error("access", "", "Insufficient privileges"),
            FUNC_INSTANCES: doc({}),
        }
    )
    async with make(fake, credentials=Credentials(token=SID)) as zc:
        with pytest.raises(AccessDeniedError):
            await zc.list_schedules(INSTANCE)
    assert fake.funcs == [FUNC_SCHEDULES, FUNC_INSTANCES]


async def test_a_login_for_a_read_is_sent_once_per_attempt_of_the_read() -> None:
    clock = FakeTime(now=500.0)
    fake = CannedZomro(
        {
            FUNC_AUTH: [httpx.Response(500, text="oops"), doc({"auth": {"$id": SID}})],
            FUNC_INSTANCES: doc({}),
        }
    )
    async with make(fake, clock=clock) as zc:
        assert await zc.list_instances() == []
    assert fake.funcs == [FUNC_AUTH, FUNC_AUTH, FUNC_INSTANCES]
    assert len(clock.sleeps) == 1
