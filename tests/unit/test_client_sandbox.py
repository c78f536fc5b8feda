"""The Zomro client against the real sandbox over loopback HTTP: operations, errors, sessions,
retries, throttling and rate limiting. Time is controlled through the injected sleep and clock."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import httpx
import pytest
from devkit.processes import free_port
from support import FAST, FakeTime, assert_no_secrets

from zomro_backup_operator.sandbox import ManualClock, RunningSandbox, running_sandbox
from zomro_backup_operator.sandbox.config import AccountConfig, InstanceConfig, SandboxConfig
from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    AmbiguousResultError,
    AuthenticationError,
    CreatedNotListedError,
    InvalidValueError,
    NotFoundError,
    OperationInProgressError,
    ServerError,
    SessionExpiredError,
    ThrottledError,
    TokenExpiredError,
    UnknownOutcomeError,
    ZomroConnectionError,
    ZomroError,
    ZomroTimeoutError,
)
from zomro_backup_operator.zomro.funcs import (
    FUNC_AUTH,
    FUNC_INSTANCES,
    FUNC_SCHEDULE_DELETE,
    FUNC_SCHEDULE_EDIT,
    FUNC_SCHEDULES,
)
from zomro_backup_operator.zomro.models import Instance, ScheduleSpec, Weekday
from zomro_backup_operator.zomro.transport import tls_context

USERNAME = "alice"
PASSWORD = "Pa55-w0rd-that-must-never-show"
INSTANCE = "5203773"
FOREIGN_INSTANCE = "777"
CONFIG = SandboxConfig(
    accounts=(
        AccountConfig(USERNAME, PASSWORD, (InstanceConfig(INSTANCE, "MyServer"),)),
        AccountConfig("bob", "bob-password", (InstanceConfig(FOREIGN_INSTANCE, "Theirs"),)),
    ),
)
WEEKDAYS = frozenset(Weekday(d) for d in range(1, 6))
NIGHTLY = ScheduleSpec(name="nightly", days=WEEKDAYS, time="02:01")


@pytest.fixture
async def sb() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(CONFIG) as sandbox:
        yield sandbox


@pytest.fixture
def client_credentials() -> Credentials:
    return Credentials(username=USERNAME, password=PASSWORD)


@pytest.fixture
def client(make_client: Callable[..., ZomroClient]) -> ZomroClient:
    return make_client()


def funcs(sb: RunningSandbox) -> list[str]:
    return [record.func for record in sb.state.requests]


def outcomes(sb: RunningSandbox, func: str) -> list[str]:
    return [record.outcome for record in sb.state.requests if record.func == func]


def set_faults(sb: RunningSandbox, **faults: Any) -> None:
    sb.faults.update(faults, sb.state.now())


def schedules_held(sb: RunningSandbox) -> list[tuple[str, str, tuple[int, ...], str]]:
    return [(s.id, s.name, s.days, s.time) for s in sb.state.schedules_of(INSTANCE)]


# --- every operation ------------------------------------------------------------------------


async def test_the_default_sandbox_account_lists_its_one_instance() -> None:
    async with (
        running_sandbox() as sandbox,
        ZomroClient(Credentials(username="demo", password="demo"), base_url=sandbox.url) as zc,
    ):
        instances = await zc.list_instances()
    assert instances == [Instance(id=INSTANCE, name="MyServer", ip="192.0.2.10", status="active")]


async def test_a_fresh_instance_has_no_schedules(client: ZomroClient) -> None:
    assert await client.list_schedules(INSTANCE) == []


async def test_create_returns_the_schedule_zomro_holds(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    created = await client.create_schedule(INSTANCE, NIGHTLY)
    assert schedules_held(sb) == [(created.id, "nightly", (1, 2, 3, 4, 5), "02:01")]
    assert created.matches(NIGHTLY)
    listed = await client.get_schedule(INSTANCE, created.id)
    assert listed is not None
    assert listed.matches(NIGHTLY)
    assert listed.server_name == "MyServer"
    assert listed.instance_id == INSTANCE
    assert listed.create_date is not None


async def test_create_costs_one_write_and_one_list(client: ZomroClient, sb: RunningSandbox) -> None:
    await client.list_schedules(INSTANCE)
    sb.state.requests.clear()
    await client.create_schedule(INSTANCE, NIGHTLY)
    assert funcs(sb) == [FUNC_SCHEDULE_EDIT, FUNC_SCHEDULES]


async def test_a_batch_of_creates_costs_one_write_each_and_a_single_list(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    await client.list_schedules(INSTANCE)
    sb.state.requests.clear()
    specs = [ScheduleSpec(name=f"batch-{n}", days=WEEKDAYS, time=f"0{n}:00") for n in range(3)]

    results = await client.create_schedules(INSTANCE, specs)

    assert funcs(sb) == [FUNC_SCHEDULE_EDIT] * 3 + [FUNC_SCHEDULES]
    held = {row[0]: row[1:] for row in schedules_held(sb)}
    for spec, result in zip(specs, results, strict=True):
        assert not isinstance(result, ZomroError)
        assert held[result.id] == (spec.name, (1, 2, 3, 4, 5), spec.time)


async def test_creates_handed_out_while_a_batch_is_sent_share_its_one_listing(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    await client.list_schedules(INSTANCE)  # logged in, and the rows before the batch known
    sb.state.requests.clear()
    first, later = (
        [ScheduleSpec(name=f"{part}-{n}", days=WEEKDAYS, time=f"0{n}:00") for n in range(2)]
        for part in ("first", "later")
    )
    handed = [later, []]

    results = await client.create_schedules(INSTANCE, first, lambda: handed.pop(0))

    assert funcs(sb) == [FUNC_SCHEDULE_EDIT] * 4 + [FUNC_SCHEDULES]
    held = {row[0]: row[1] for row in schedules_held(sb)}
    assert [held[r.id] for r in results if not isinstance(r, ZomroError)] == [
        s.name for s in first + later
    ]


async def test_a_refused_create_in_a_batch_fails_alone(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    bad = ScheduleSpec(name="  ", days=WEEKDAYS, time="02:01")

    good, refused = await client.create_schedules(INSTANCE, [NIGHTLY, bad])

    assert isinstance(refused, InvalidValueError)
    assert not isinstance(good, ZomroError)
    assert [row[0] for row in schedules_held(sb)] == [good.id]


async def test_get_schedule_of_an_unknown_id_is_none(client: ZomroClient) -> None:
    await client.create_schedule(INSTANCE, NIGHTLY)
    assert await client.get_schedule(INSTANCE, "999999") is None


async def test_update_changes_the_same_schedule_in_place(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    created = await client.create_schedule(INSTANCE, NIGHTLY)
    weekend = ScheduleSpec(
        name="weekend", days=frozenset({Weekday.SATURDAY, Weekday.SUNDAY}), time="23:59"
    )
    await client.update_schedule(INSTANCE, created.id, weekend)
    assert schedules_held(sb) == [(created.id, "weekend", (0, 6), "23:59")]


async def test_update_of_a_schedule_gone_behind_our_back_is_not_found(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    created = await client.create_schedule(INSTANCE, NIGHTLY)
    sb.state.remove_schedules([created.id])
    with pytest.raises(NotFoundError):
        await client.update_schedule(INSTANCE, created.id, NIGHTLY)
    assert schedules_held(sb) == []


async def test_delete_removes_the_schedule(client: ZomroClient, sb: RunningSandbox) -> None:
    created = await client.create_schedule(INSTANCE, NIGHTLY)
    await client.delete_schedule(INSTANCE, created.id)
    assert schedules_held(sb) == []


async def test_deleting_a_schedule_already_gone_succeeds_once_a_listing_confirms_it(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    created = await client.create_schedule(INSTANCE, NIGHTLY)
    sb.state.remove_schedules([created.id])
    sb.state.requests.clear()
    await client.delete_schedule(INSTANCE, created.id)
    assert funcs(sb) == [FUNC_SCHEDULE_DELETE, FUNC_SCHEDULES]


async def test_a_delete_refused_for_a_schedule_that_still_exists_is_raised(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    created = await client.create_schedule(INSTANCE, NIGHTLY)
    sb.state.make_busy(INSTANCE, 60)
    with pytest.raises(OperationInProgressError):
        await client.delete_schedule(INSTANCE, created.id)
    assert len(schedules_held(sb)) == 1


# --- matching a create without an id in the answer ------------------------------------------


async def test_create_ignores_a_same_named_schedule_that_the_last_listing_showed(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    old = sb.state.add_schedule(INSTANCE, "nightly", (1, 2, 3, 4, 5), "02:01")
    await client.list_schedules(INSTANCE)
    created = await client.create_schedule(INSTANCE, NIGHTLY)
    assert created.id != old.id
    assert {s[0] for s in schedules_held(sb)} == {old.id, created.id}


async def test_create_picks_the_exact_match_among_same_named_unknown_schedules(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    other = sb.state.add_schedule(INSTANCE, "nightly", (0,), "05:00")
    created = await client.create_schedule(INSTANCE, NIGHTLY)
    assert created.id != other.id
    assert created.matches(NIGHTLY)


async def test_create_that_cannot_tell_its_schedule_from_an_identical_one_is_ambiguous(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    twin = sb.state.add_schedule(INSTANCE, "nightly", (1, 2, 3, 4, 5), "02:01")
    with pytest.raises(AmbiguousResultError) as caught:
        await client.create_schedule(INSTANCE, NIGHTLY)
    assert twin.id in caught.value.candidate_ids
    assert len(caught.value.candidate_ids) == 2
    assert len(schedules_held(sb)) == 2


@pytest.mark.parametrize(
    ("names", "sent", "stored"),
    [
        ({}, " nightly ", "nightly"),
        ({"collapse": True}, "nightly  run", "nightly run"),
        ({"case": "upper"}, "nightly", "NIGHTLY"),
        ({"cut": 7}, "nightly run", "nightly"),
    ],
)
async def test_create_finds_its_schedule_whatever_zomro_did_to_the_name(
    client: ZomroClient, sb: RunningSandbox, names: dict[str, Any], sent: str, stored: str
) -> None:
    sb.set_faults(names=names)
    sb.state.add_schedule(INSTANCE, stored, (0,), "05:00")  # same name, other days: not it
    await client.list_schedules(INSTANCE)
    created = await client.create_schedule(INSTANCE, replace(NIGHTLY, name=sent))
    assert (created.name, created.days, created.time) == (stored, NIGHTLY.days, NIGHTLY.time)
    assert len(schedules_held(sb)) == 2


async def test_a_create_zomro_lists_late_is_known_to_be_made(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    sb.set_faults(listing_delay=30)
    with pytest.raises(CreatedNotListedError):
        await client.create_schedule(INSTANCE, NIGHTLY)
    assert len(schedules_held(sb)) == 1


# --- refusals -------------------------------------------------------------------------------


async def test_a_wrong_password_is_an_authentication_error(
    make_client: Callable[..., ZomroClient],
) -> None:
    zc = make_client(Credentials(username=USERNAME, password="wrong-password-xyz"))
    with pytest.raises(AuthenticationError) as caught:
        await zc.list_instances()
    assert not caught.value.retryable
    assert "wrong-password-xyz" not in str(caught.value)


async def test_a_refused_login_is_not_sent_again_for_a_while(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox, fake_time: FakeTime
) -> None:
    zc = make_client(Credentials(username=USERNAME, password="wrong-password-xyz"))
    for _ in range(3):
        with pytest.raises(AuthenticationError):
            await zc.list_instances()
    assert funcs(sb) == [FUNC_AUTH]

    fake_time.now += FAST.login_refusal_memory

    with pytest.raises(AuthenticationError):
        await zc.list_instances()
    assert funcs(sb) == [FUNC_AUTH, FUNC_AUTH]


async def test_too_many_failed_logins_block_the_login() -> None:
    config = SandboxConfig(accounts=CONFIG.accounts, login_failures_before_block=2)
    async with running_sandbox(config) as sandbox:
        for _ in range(2):
            async with ZomroClient(
                Credentials(username=USERNAME, password="bad"), base_url=sandbox.url
            ) as zc:
                with pytest.raises(AuthenticationError):
                    await zc.list_instances()
        async with ZomroClient(
            Credentials(username=USERNAME, password=PASSWORD), base_url=sandbox.url
        ) as zc:
            with pytest.raises(AuthenticationError, match="blocked_ip"):
                await zc.list_instances()


async def test_another_accounts_instance_is_access_denied_after_one_renewal(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    await client.list_instances()
    sb.state.requests.clear()
    with pytest.raises(AccessDeniedError):
        await client.list_schedules(FOREIGN_INSTANCE)
    assert funcs(sb) == [FUNC_SCHEDULES, FUNC_AUTH, FUNC_SCHEDULES]


async def test_creating_on_an_unknown_instance_is_access_denied_and_creates_nothing(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    with pytest.raises(AccessDeniedError):
        await client.create_schedule("123456", NIGHTLY)
    assert sb.state.schedules == {}


async def test_values_zomro_refuses_come_back_with_per_field_messages(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    blank = ScheduleSpec(name="   ", days=WEEKDAYS, time="02:01")
    with pytest.raises(InvalidValueError) as caught:
        await client.create_schedule(INSTANCE, blank)
    assert list(caught.value.field_errors) == ["name"]
    assert caught.value.field_errors["name"]
    assert sb.state.schedules == {}


async def test_an_instance_running_an_operation_refuses_edits_as_in_progress(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    sb.state.make_busy(INSTANCE, 60)
    with pytest.raises(OperationInProgressError) as caught:
        await client.create_schedule(INSTANCE, NIGHTLY)
    assert caught.value.retryable
    assert sb.state.schedules == {}


# --- sessions -------------------------------------------------------------------------------


async def test_one_login_serves_many_calls(client: ZomroClient, sb: RunningSandbox) -> None:
    await client.list_instances()
    await client.list_schedules(INSTANCE)
    await client.create_schedule(INSTANCE, NIGHTLY)
    assert funcs(sb).count(FUNC_AUTH) == 1


async def test_an_expired_session_is_renewed_once_and_the_read_repeated(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    await client.list_instances()
    sb.state.expire_sessions()
    sb.state.requests.clear()
    assert await client.list_schedules(INSTANCE) == []
    assert funcs(sb) == [FUNC_SCHEDULES, FUNC_AUTH, FUNC_SCHEDULES]


async def test_a_session_idle_for_an_hour_is_renewed_for_a_write() -> None:
    clock = ManualClock()
    async with (
        running_sandbox(CONFIG, clock=clock) as sandbox,
        ZomroClient(
            Credentials(username=USERNAME, password=PASSWORD),
            base_url=sandbox.url,
            # Not what this test is about: no rate-limit pause between its six requests.
            options=ClientOptions(max_requests_per_second=1000.0),
        ) as zc,
    ):
        created = await zc.create_schedule(INSTANCE, NIGHTLY)
        clock.advance(3600)
        await zc.update_schedule(INSTANCE, created.id, NIGHTLY)
        await zc.delete_schedule(INSTANCE, created.id)
        assert [r.func for r in sandbox.state.requests].count(FUNC_AUTH) == 2
        assert sandbox.state.schedules == {}


async def test_concurrent_callers_share_one_renewal(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    zc = make_client(options=ClientOptions(max_requests_per_second=1000.0, max_in_flight=1))
    await zc.list_instances()
    sb.state.expire_sessions()
    await asyncio.gather(*(zc.list_schedules(INSTANCE) for _ in range(4)))
    assert funcs(sb).count(FUNC_AUTH) == 2


async def test_a_token_is_used_as_is(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    token = sb.state.open_session(USERNAME)
    zc = make_client(Credentials(token=token))
    assert [i.id for i in await zc.list_instances()] == [INSTANCE]
    assert FUNC_AUTH not in funcs(sb)


async def test_an_expired_token_is_an_error_the_caller_sees(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    zc = make_client(Credentials(token=sb.state.open_session(USERNAME)))
    await zc.list_instances()
    sb.state.expire_sessions()
    with pytest.raises(TokenExpiredError) as caught:
        await zc.list_schedules(INSTANCE)
    assert isinstance(caught.value, AuthenticationError)
    assert isinstance(caught.value, SessionExpiredError)
    assert not caught.value.retryable
    assert FUNC_AUTH not in funcs(sb)


async def test_a_valid_token_on_a_foreign_instance_is_access_denied(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    zc = make_client(Credentials(token=sb.state.open_session(USERNAME)))
    with pytest.raises(AccessDeniedError):
        await zc.list_schedules(FOREIGN_INSTANCE)


# --- retries and backoff --------------------------------------------------------------------


async def test_a_read_recovers_from_a_transient_server_error(
    client: ZomroClient, sb: RunningSandbox, fake_time: FakeTime
) -> None:
    await client.list_instances()
    set_faults(sb, error_rate=1.0, error_funcs=[FUNC_SCHEDULES])
    fake_time.on_sleep = lambda _: set_faults(sb, error_rate=0.0)
    assert await client.list_schedules(INSTANCE) == []
    assert outcomes(sb, FUNC_SCHEDULES) == ["http:500", "ok"]
    assert len(fake_time.sleeps) == 1
    assert 0.0 <= fake_time.sleeps[0] <= FAST.backoff_initial


async def test_reads_back_off_exponentially_up_to_the_cap_then_give_up(
    make_client: Callable[..., ZomroClient],
    sb: RunningSandbox,
    fake_time: FakeTime,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = ClientOptions(
        max_requests_per_second=1000.0, read_attempts=6, backoff_initial=1.0, backoff_max=3.0
    )
    zc = make_client(options=options, random=lambda: 1.0)  # the top of every jitter range
    await zc.list_instances()
    set_faults(sb, error_rate=1.0, error_funcs=[FUNC_SCHEDULES])
    with pytest.raises(ServerError):
        await zc.list_schedules(INSTANCE)
    assert fake_time.sleeps == [1.0, 2.0, 3.0, 3.0, 3.0]
    assert len(outcomes(sb, FUNC_SCHEDULES)) == 6


async def test_backoff_is_fully_jittered(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox, fake_time: FakeTime
) -> None:
    zc = make_client(options=ClientOptions(max_requests_per_second=1000.0, read_attempts=2))
    await zc.list_instances()
    set_faults(sb, error_rate=1.0, error_funcs=[FUNC_SCHEDULES])
    for _ in range(20):
        with pytest.raises(ServerError):
            await zc.list_schedules(INSTANCE)
    assert all(0.0 <= delay <= 0.5 for delay in fake_time.sleeps)
    assert len(set(fake_time.sleeps)) > 10


async def test_a_write_is_never_repeated_after_a_server_error(
    client: ZomroClient, sb: RunningSandbox, fake_time: FakeTime
) -> None:
    await client.list_instances()
    set_faults(sb, error_rate=1.0, error_funcs=[FUNC_SCHEDULE_EDIT])
    with pytest.raises(UnknownOutcomeError):
        await client.create_schedule(INSTANCE, NIGHTLY)
    assert outcomes(sb, FUNC_SCHEDULE_EDIT) == ["http:500"]
    assert fake_time.sleeps == []


# --- throttling -----------------------------------------------------------------------------


async def test_a_throttled_read_waits_the_retry_after_then_succeeds(
    client: ZomroClient, sb: RunningSandbox, fake_time: FakeTime
) -> None:
    await client.list_instances()
    set_faults(sb, block={"status": 460, "retry_after": 7})
    fake_time.on_sleep = lambda _: set_faults(sb, block=None)
    assert await client.list_schedules(INSTANCE) == []
    assert sum(fake_time.sleeps) == pytest.approx(7.0)
    assert outcomes(sb, FUNC_SCHEDULES) == ["http:460", "ok"]


async def test_a_throttle_pauses_every_call_of_the_client(
    client: ZomroClient, sb: RunningSandbox, fake_time: FakeTime
) -> None:
    await client.list_instances()
    set_faults(sb, block={"status": 403, "retry_after": 9})
    with pytest.raises(ThrottledError) as caught:
        await client.create_schedule(INSTANCE, NIGHTLY)
    assert caught.value.retry_after == 9.0
    set_faults(sb, block=None)
    sb.state.requests.clear()
    await client.list_instances()
    assert fake_time.sleeps == [pytest.approx(9.0)]
    assert funcs(sb) == [FUNC_INSTANCES]


async def test_a_retry_after_beyond_the_backoff_cap_is_left_to_the_caller(
    client: ZomroClient, sb: RunningSandbox, fake_time: FakeTime
) -> None:
    await client.list_instances()
    set_faults(sb, block={"status": 429, "retry_after": 120})
    with pytest.raises(ThrottledError) as caught:
        await client.list_schedules(INSTANCE)
    assert caught.value.retry_after == 120.0
    assert outcomes(sb, FUNC_SCHEDULES) == ["http:429"]
    assert fake_time.sleeps == []


async def test_a_block_without_retry_after_still_pauses_with_backoff(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox, fake_time: FakeTime
) -> None:
    zc = make_client(options=ClientOptions(max_requests_per_second=1000.0, read_attempts=1))
    set_faults(sb, block=460)
    with pytest.raises(ThrottledError) as caught:
        await zc.list_instances()
    assert caught.value.retry_after == pytest.approx(FAST.backoff_initial)
    set_faults(sb, block=None)
    await zc.list_instances()
    assert fake_time.sleeps == [pytest.approx(FAST.backoff_initial)]


# --- outages, timeouts, late answers --------------------------------------------------------


@pytest.mark.parametrize(
    ("outage", "error"), [("reset", ZomroConnectionError), ("503", ServerError)]
)
async def test_an_outage_fails_reads_with_a_clear_error_after_retries(
    client: ZomroClient, sb: RunningSandbox, outage: str, error: type[ZomroError]
) -> None:
    set_faults(sb, outage=outage)
    with pytest.raises(error):
        await client.list_instances()
    assert len(sb.state.requests) == FAST.read_attempts


@pytest.mark.parametrize("outage", ["reset", "503"])
async def test_an_outage_during_a_write_is_an_unknown_outcome(
    client: ZomroClient, sb: RunningSandbox, outage: str
) -> None:
    await client.list_instances()
    set_faults(sb, outage=outage)
    with pytest.raises(UnknownOutcomeError):
        await client.create_schedule(INSTANCE, NIGHTLY)


async def test_nothing_listening_is_a_connection_error_even_for_a_write(
    make_client: Callable[..., ZomroClient],
) -> None:
    zc = make_client(Credentials(token="abc123"), base_url=f"http://127.0.0.1:{free_port()}/")
    with pytest.raises(ZomroConnectionError):
        await zc.list_instances()
    with pytest.raises(ZomroConnectionError):
        await zc.create_schedule(INSTANCE, NIGHTLY)


async def test_a_slow_answer_to_a_read_times_out(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    zc = make_client(
        options=ClientOptions(timeout=0.3, max_requests_per_second=1000.0, read_attempts=1)
    )
    await zc.list_instances()
    set_faults(sb, latency=2.0)
    with pytest.raises(ZomroTimeoutError):
        await zc.list_schedules(INSTANCE)


async def test_a_create_answered_too_late_is_an_unknown_outcome_and_applied_once(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    zc = make_client(options=ClientOptions(timeout=0.3, max_requests_per_second=1000.0))
    await zc.list_instances()
    set_faults(sb, late_create={"seconds": 2.0, "count": 1})
    with pytest.raises(UnknownOutcomeError):
        await zc.create_schedule(INSTANCE, NIGHTLY)
    assert [s[1] for s in schedules_held(sb)] == ["nightly"]


async def test_a_create_whose_connection_drops_is_an_unknown_outcome(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    await client.list_instances()
    set_faults(sb, late_create={"drop": True, "count": 1})
    with pytest.raises(UnknownOutcomeError):
        await client.create_schedule(INSTANCE, NIGHTLY)
    assert [s[1] for s in schedules_held(sb)] == ["nightly"]
    assert outcomes(sb, FUNC_SCHEDULE_EDIT) == ["ok:dropped"]


# --- serialising and rate limiting ----------------------------------------------------------


async def test_calls_on_one_session_are_serialised_so_zomro_never_sees_two_at_once(
    client: ZomroClient, sb: RunningSandbox
) -> None:
    await client.list_instances()
    set_faults(sb, latency=0.05)
    await asyncio.gather(*(client.list_schedules(INSTANCE) for _ in range(4)))
    assert outcomes(sb, FUNC_SCHEDULES) == ["ok"] * 4


async def test_without_serialising_zomro_refuses_the_second_call_as_in_progress(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    zc = make_client(
        options=ClientOptions(max_requests_per_second=1000.0, max_in_flight=2, read_attempts=1)
    )
    await zc.list_instances()
    set_faults(sb, latency=0.3)
    results = await asyncio.gather(
        zc.list_schedules(INSTANCE), zc.list_schedules(INSTANCE), return_exceptions=True
    )
    assert sum(isinstance(r, OperationInProgressError) for r in results) == 1


class RecordingTransport(httpx.AsyncBaseTransport):
    """A real loopback transport that notes when each request leaves the client."""

    def __init__(self) -> None:
        self.sent: list[float] = []
        self._inner = httpx.AsyncHTTPTransport(verify=tls_context())

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(time.monotonic())
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()


async def test_requests_including_the_login_are_spaced_by_the_rate_limit(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    rate = 20.0
    transport = RecordingTransport()
    zc = make_client(options=ClientOptions(max_requests_per_second=rate), transport=transport)
    await asyncio.gather(*(zc.list_instances() for _ in range(9)))
    assert funcs(sb) == [FUNC_AUTH] + [FUNC_INSTANCES] * 9
    gaps = [later - earlier for earlier, later in itertools.pairwise(transport.sent)]
    assert len(gaps) == 9
    # The limiter spaces the requests; each reaches the transport a little after it is let go,
    # later on a loaded machine, which can shorten one gap by that delay. Together they span
    # the rate; none comes in a burst.
    assert transport.sent[-1] - transport.sent[0] >= 0.9 * len(gaps) / rate
    assert min(gaps) >= 0.5 / rate


# --- reporting and secrets ------------------------------------------------------------------


async def test_every_request_is_reported_with_func_outcome_and_duration(
    make_client: Callable[..., ZomroClient], sb: RunningSandbox
) -> None:
    seen: list[tuple[str, str, float]] = []
    zc = make_client(
        on_request=lambda func, outcome, seconds: seen.append((func, outcome, seconds))
    )
    await zc.list_instances()
    with pytest.raises(AccessDeniedError):
        await zc.list_schedules(FOREIGN_INSTANCE)
    assert [(func, outcome) for func, outcome, _ in seen] == [
        (FUNC_AUTH, "ok"),
        (FUNC_INSTANCES, "ok"),
        (FUNC_SCHEDULES, "AccessDeniedError"),
        (FUNC_AUTH, "ok"),
        (FUNC_SCHEDULES, "AccessDeniedError"),
    ]
    assert all(seconds >= 0 for _, _, seconds in seen)


async def test_a_failing_report_hook_does_not_fail_the_call(
    make_client: Callable[..., ZomroClient],
) -> None:
    def broken(func: str, outcome: str, seconds: float) -> None:
        raise RuntimeError("metrics are down")

    zc = make_client(on_request=broken)
    assert [i.id for i in await zc.list_instances()] == [INSTANCE]


async def test_no_password_or_session_id_leaves_the_client(
    make_client: Callable[..., ZomroClient],
    sb: RunningSandbox,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    issued: list[str] = []
    open_session = sb.state.open_session

    def recording_open_session(username: str) -> str:
        sid = open_session(username)
        issued.append(sid)
        return sid

    monkeypatch.setattr(sb.state, "open_session", recording_open_session)
    errors: list[BaseException] = []
    credentials = Credentials(username=USERNAME, password=PASSWORD)
    zc = make_client(credentials)
    created = await zc.create_schedule(INSTANCE, NIGHTLY)
    sb.state.expire_sessions()
    await zc.update_schedule(INSTANCE, created.id, NIGHTLY)
    for call in (
        zc.list_schedules(FOREIGN_INSTANCE),
        zc.create_schedule(INSTANCE, ScheduleSpec(name=" ", days=WEEKDAYS, time="02:01")),
    ):
        try:
            await call
        except ZomroError as exc:
            errors.append(exc)
    await zc.delete_schedule(INSTANCE, created.id)
    token = sb.state.open_session(USERNAME)
    token_client = make_client(Credentials(token=token))
    await token_client.list_instances()
    sb.state.expire_sessions()
    for zc_call in (
        token_client.list_instances(),
        make_client(Credentials(username=USERNAME, password=PASSWORD + "x")).list_instances(),
    ):
        try:
            await zc_call
        except ZomroError as exc:
            errors.append(exc)

    assert len(errors) == 4
    secrets = [PASSWORD, *issued]
    assert len(issued) >= 3
    texts = [caplog.text, repr(zc), repr(token_client), repr(credentials)]
    texts += [repr(Credentials(token=token))]
    for record in caplog.records:
        texts.append(record.getMessage())
    for error in errors:
        texts += [str(error), repr(error), str(error.__cause__), str(error.__context__)]
    assert_no_secrets(texts, *secrets)


async def test_during_a_long_pause_calls_fail_at_once_without_reaching_zomro(
    client: ZomroClient, sb: RunningSandbox, fake_time: FakeTime
) -> None:
    await client.list_instances()
    set_faults(sb, block={"status": 460, "retry_after": 300})
    with pytest.raises(ThrottledError):
        await client.list_schedules(INSTANCE)
    set_faults(sb, block=None)
    sb.state.requests.clear()
    fake_time.now += 100
    with pytest.raises(ThrottledError) as caught:
        await client.create_schedule(INSTANCE, NIGHTLY)
    assert caught.value.retry_after == pytest.approx(200)
    assert sb.state.requests == []
    fake_time.now += 200
    assert [i.id for i in await client.list_instances()] == [INSTANCE]
