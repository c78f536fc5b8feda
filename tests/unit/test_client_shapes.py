"""The Zomro client on answers the sandbox never gives: hostile bodies, ids in create answers,
single objects for lists, odd headers. Served by ``httpx.MockTransport``."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import time
from collections.abc import AsyncIterator, Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from support import FakeTime, assert_no_secrets, examples

from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    AuthenticationError,
    InvalidValueError,
    LoginTemporarilyBlockedError,
    MalformedResponseError,
    ServerError,
    ThrottledError,
    TokenExpiredError,
    UnknownOutcomeError,
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
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday

SID = "0f3a9c2b7d1e4f5a6b7c8d9e"
INSTANCE = "5203773"
SPEC = ScheduleSpec(name="nightly", days=frozenset({Weekday.MONDAY}), time="02:01")
ROW = {
    "id": {"$": "14"},
    "instance_id": {"$": INSTANCE},
    "name": {"$": "nightly"},
    "rotation_days": {"$": "Monday "},
    "rotation_time": {"$": "02:01"},
}
Answer = httpx.Response | Callable[[dict[str, str]], httpx.Response]


def doc(body: object, status: int = 200, **headers: str) -> httpx.Response:
    return httpx.Response(status, json={"doc": body}, headers=headers)


def error(type_: str, object_: str = "", msg: str = "refused") -> httpx.Response:
    return doc({"error": {"$type": type_, "$object": object_, "msg": {"$": msg}}})


class CannedZomro:
    """Zomro as canned HTTP answers per ``func`` (an httpx.MockTransport handler); a list answers
    in turn, its last entry repeating. The in-memory client stand-in is fake_zomro.FakeZomro."""

    def __init__(self, answers: dict[str, Answer | list[Answer]]) -> None:
        self.answers = {FUNC_AUTH: doc({"auth": {"$id": SID, "$": SID}}), **answers}
        self.calls: list[dict[str, str]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        form = {key: values[0] for key, values in parse_qs(request.content.decode()).items()}
        self.calls.append(form)
        answer = self.answers[form["func"]]
        if isinstance(answer, list):
            answer = answer.pop(0) if len(answer) > 1 else answer[0]
        return answer(form) if callable(answer) else answer

    @property
    def funcs(self) -> list[str]:
        return [call["func"] for call in self.calls]


def make(
    fake: CannedZomro | httpx.AsyncBaseTransport,
    *,
    credentials: Credentials | None = None,
    clock: FakeTime | None = None,
    **options: Any,
) -> ZomroClient:
    clock = clock or FakeTime(now=500.0)
    transport = httpx.MockTransport(fake) if isinstance(fake, CannedZomro) else fake
    return ZomroClient(
        credentials or Credentials(username="u", password="p-secret"),
        base_url="https://api.zomro.test/",
        options=ClientOptions(**{"max_requests_per_second": 1000.0, **options}),
        transport=transport,
        sleep=clock.sleep,
        clock=clock.clock,
    )


# --- requests as Zomro expects them ---------------------------------------------------------


async def test_calls_are_form_posts_with_json_english_and_the_session() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        form = parse_qs(request.content.decode())
        if form["func"] == ["auth"]:
            return doc({"auth": {"$id": SID}})
        return doc({})

    async with make(httpx.MockTransport(handler)) as zc:
        await zc.list_schedules(INSTANCE)
    login, listing = seen
    assert {r.method for r in seen} == {"POST"}
    assert all(r.url == "https://api.zomro.test/" for r in seen)
    assert all(r.headers["content-type"] == "application/x-www-form-urlencoded" for r in seen)
    assert parse_qs(login.content.decode()) == {
        "func": ["auth"],
        "out": ["json"],
        "lang": ["en"],
        "username": ["u"],
        "password": ["p-secret"],
    }
    assert parse_qs(listing.content.decode()) == {
        "func": [FUNC_SCHEDULES],
        "out": ["json"],
        "lang": ["en"],
        "elid": [INSTANCE],
        "auth": [SID],
    }


async def test_create_sends_the_seeds_fields_with_day_numbers() -> None:
    fake = CannedZomro({FUNC_SCHEDULE_EDIT: doc({"ok": {}, "id": {"$": "15"}})})
    async with make(fake) as zc:
        await zc.create_schedule(INSTANCE, SPEC)
    create = fake.calls[-1]
    assert {k: create[k] for k in ("plid", "name", "rotation_days", "rotation_time", "sok")} == {
        "plid": INSTANCE,
        "name": "nightly",
        "rotation_days": "1",
        "rotation_time": "02:01",
        "sok": "ok",
    }
    assert "elid" not in create


# --- shapes ---------------------------------------------------------------------------------


async def test_a_create_answer_with_an_id_needs_no_listing() -> None:
    fake = CannedZomro({FUNC_SCHEDULE_EDIT: doc({"ok": {}, "id": {"$": "15"}})})
    async with make(fake) as zc:
        created = await zc.create_schedule(INSTANCE, SPEC)
    assert created.id == "15"
    assert created.matches(SPEC)
    assert fake.funcs == [FUNC_AUTH, FUNC_SCHEDULE_EDIT]


async def test_a_login_answered_with_a_server_error_is_retried_even_before_a_write() -> None:
    login = doc({"auth": {"$id": SID, "$": SID}})
    fake = CannedZomro(
        {
            FUNC_AUTH: [httpx.Response(500, text="<html>oops</html>"), login],
            FUNC_SCHEDULE_EDIT: doc({"ok": {}, "id": {"$": "15"}}),
        }
    )
    async with make(fake) as zc:
        created = await zc.create_schedule(INSTANCE, SPEC)
    assert created.id == "15"
    assert fake.funcs == [FUNC_AUTH, FUNC_AUTH, FUNC_SCHEDULE_EDIT]


async def test_a_single_object_instead_of_an_array_is_one_schedule() -> None:
    fake = CannedZomro({FUNC_SCHEDULES: doc({"elem": ROW})})
    async with make(fake) as zc:
        assert [s.id for s in await zc.list_schedules(INSTANCE)] == ["14"]


async def test_a_write_answer_that_neither_confirms_nor_refuses_is_an_unknown_outcome() -> None:
    fake = CannedZomro({FUNC_SCHEDULE_EDIT: doc({"elem": []})})
    async with make(fake) as zc:
        with pytest.raises(UnknownOutcomeError):
            await zc.update_schedule(INSTANCE, "14", SPEC)


async def test_a_create_with_an_unreadable_id_is_an_unknown_outcome() -> None:
    fake = CannedZomro({FUNC_SCHEDULE_EDIT: doc({"ok": {}, "id": {"$": "../../etc"}})})
    async with make(fake) as zc:
        with pytest.raises(UnknownOutcomeError):
            await zc.create_schedule(INSTANCE, SPEC)


async def test_a_create_zomro_accepts_but_does_not_list_is_an_unknown_outcome() -> None:
    fake = CannedZomro({FUNC_SCHEDULE_EDIT: doc({"ok": {}}), FUNC_SCHEDULES: doc({})})
    async with make(fake) as zc:
        with pytest.raises(UnknownOutcomeError, match="lists no new schedule"):
            await zc.create_schedule(INSTANCE, SPEC)


async def test_a_create_whose_follow_up_listing_fails_is_an_unknown_outcome() -> None:
    fake = CannedZomro(
        {FUNC_SCHEDULE_EDIT: doc({"ok": {}}), FUNC_SCHEDULES: httpx.Response(502, text="x")}
    )
    async with make(fake, read_attempts=1) as zc:
        with pytest.raises(UnknownOutcomeError) as caught:
            await zc.create_schedule(INSTANCE, SPEC)
    assert isinstance(caught.value.__cause__, ServerError)


# --- hostile bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        (httpx.Response(200, text="<html>maintenance</html>"), ServerError),
        (httpx.Response(200, content=b"[" * 5_000 + b"]" * 5_000), MalformedResponseError),
        (httpx.Response(200, json={"doc": {"elem": [1, 2]}}), MalformedResponseError),
        (httpx.Response(200, json={"doc": {"elem": "rows"}}), MalformedResponseError),
        (
            httpx.Response(200, json={"doc": {"elem": [{**ROW, "id": {"$": ["x"]}}]}}),
            MalformedResponseError,
        ),
        (httpx.Response(200, json=["doc"]), MalformedResponseError),
        (httpx.Response(200, content=b'{"doc": {"x": "' + b"a" * 20_000 + b'"}}'), ServerError),
        (httpx.Response(302, headers={"location": "https://evil.test/"}), ZomroError),
        (httpx.Response(404, text="no"), ZomroError),
    ],
)
async def test_hostile_bodies_are_clear_errors(
    response: httpx.Response, expected: type[ZomroError]
) -> None:
    fake = CannedZomro({FUNC_SCHEDULES: response})
    async with make(fake, read_attempts=1, max_response_bytes=16_384) as zc:
        with pytest.raises(expected):
            await zc.list_schedules(INSTANCE)


class _EndlessBody(httpx.AsyncByteStream):
    """A body that drips forever: a client without an overall deadline would hang."""

    async def __aiter__(self) -> AsyncIterator[bytes]:
        yield b'{"doc": {"elem": ['
        while True:
            await asyncio.sleep(0.01)
            yield b" "


async def test_a_body_that_never_ends_times_out_instead_of_hanging() -> None:
    fake = CannedZomro({FUNC_SCHEDULES: httpx.Response(200, stream=_EndlessBody())})
    started = time.monotonic()
    async with make(fake, read_attempts=1, timeout=0.3) as zc:
        with pytest.raises(ZomroTimeoutError):
            await zc.list_schedules(INSTANCE)
    assert time.monotonic() - started < 5


async def test_a_declared_length_over_the_cap_is_refused_unread() -> None:
    response = httpx.Response(200, headers={"content-length": str(10**9)}, stream=_EndlessBody())
    fake = CannedZomro({FUNC_SCHEDULES: response})
    async with make(fake, read_attempts=1) as zc:
        with pytest.raises(ServerError, match="larger than"):
            await zc.list_schedules(INSTANCE)


_bodies = st.one_of(
    st.binary(max_size=300),
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
        ),
        max_leaves=20,
    ).map(lambda value: json.dumps({"doc": {"elem": value}}).encode()),
    st.dictionaries(
        st.sampled_from(["elem", "error", "id", "ok", "auth"]),
        st.recursive(
            st.text(max_size=10) | st.builds(lambda v: {"$": v}, st.text(max_size=10)),
            lambda inner: (
                st.lists(inner, max_size=3)
                | st.dictionaries(
                    st.sampled_from(["$", "$type", "$object", "msg", "id", "name"]),
                    inner,
                    max_size=4,
                )
            ),
            max_leaves=15,
        ),
        max_size=3,
    ).map(lambda value: json.dumps({"doc": value}).encode()),
)


@settings(max_examples=examples(150), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=_bodies, status=st.sampled_from([200, 200, 200, 403, 460, 500, 503, 418]))
def test_any_answer_gives_schedules_or_a_zomro_error_for_every_operation(
    body: bytes, status: int
) -> None:
    def answer(_: dict[str, str]) -> httpx.Response:
        return httpx.Response(status, content=body)

    async def scenario() -> None:
        fake = CannedZomro(
            {
                FUNC_SCHEDULES: answer,
                FUNC_SCHEDULE_EDIT: answer,
                FUNC_SCHEDULE_DELETE: answer,
                FUNC_INSTANCES: answer,
            }
        )
        async with make(fake, read_attempts=2, timeout=2.0) as zc:
            for call in (
                lambda: zc.list_schedules(INSTANCE),
                lambda: zc.list_instances(),
                lambda: zc.create_schedule(INSTANCE, SPEC),
                lambda: zc.update_schedule(INSTANCE, "14", SPEC),
                lambda: zc.delete_schedule(INSTANCE, "14"),
            ):
                with contextlib.suppress(ZomroError):
                    await call()

    asyncio.run(scenario())


# --- errors only a mock can produce -----------------------------------------------------------


async def test_a_retry_after_given_as_an_http_date_is_honoured() -> None:
    when = email.utils.formatdate(time.time() + 20, usegmt=True)
    fake = CannedZomro({FUNC_INSTANCES: httpx.Response(429, headers={"Retry-After": when})})
    async with make(fake, read_attempts=1) as zc:
        with pytest.raises(ThrottledError) as caught:
            await zc.list_instances()
    assert caught.value.retry_after == pytest.approx(20, abs=2)


async def test_a_blocked_login_waits_about_twenty_seconds_for_the_whole_client() -> None:
    clock = FakeTime(now=500.0)
    fake = CannedZomro(
        {
            FUNC_AUTH: [error("auth", "blocklogon"), doc({"auth": {"$id": SID}})],
            FUNC_INSTANCES: doc({}),
        }
    )
    async with make(fake, clock=clock) as zc:
        assert await zc.list_instances() == []
    assert sum(clock.sleeps) == pytest.approx(20)
    assert fake.funcs == [FUNC_AUTH, FUNC_AUTH, FUNC_INSTANCES]


async def test_a_blocked_login_is_temporary_and_says_so() -> None:
    fake = CannedZomro({FUNC_AUTH: error("auth", "blocklogon")})
    async with make(fake, read_attempts=1) as zc:
        with pytest.raises(LoginTemporarilyBlockedError) as caught:
            await zc.list_instances()
    assert caught.value.retryable
    assert caught.value.retry_after == pytest.approx(20)


@pytest.mark.parametrize("refusal", ["badpassword", "blocked_ip", "blockgeoip"])
async def test_refused_logins_are_not_retried(refusal: str) -> None:
    fake = CannedZomro({FUNC_AUTH: error("auth", refusal)})
    async with make(fake) as zc:
        with pytest.raises(AuthenticationError):
            await zc.list_instances()
    assert fake.funcs == [FUNC_AUTH]


async def test_an_account_with_two_factor_login_is_refused_clearly() -> None:
    fake = CannedZomro({FUNC_AUTH: doc({"totp": {"$": "required"}})})
    async with make(fake) as zc:
        with pytest.raises(AuthenticationError, match="second factor"):
            await zc.list_instances()


async def test_a_token_refused_as_auth_is_expired_without_probing() -> None:
    fake = CannedZomro({FUNC_SCHEDULES: error("auth", "", "Session expired")})
    async with make(fake, credentials=Credentials(token=SID)) as zc:
        with pytest.raises(TokenExpiredError):
            await zc.list_schedules(INSTANCE)
    assert fake.funcs == [FUNC_SCHEDULES]


async def test_a_server_echoing_the_session_id_has_it_redacted() -> None:
    fake = CannedZomro({FUNC_SCHEDULES: error("access", "", f"session {SID} may not do p-secret")})
    async with make(fake) as zc:
        with pytest.raises(AccessDeniedError) as caught:
            await zc.list_schedules(INSTANCE)
    assert_no_secrets([str(caught.value)], SID, "p-secret")
    assert "<redacted>" in str(caught.value)


def test_credentials_need_a_password_login_or_a_token() -> None:
    with pytest.raises(ValueError, match="username and a password, or a token"):
        Credentials(username="u")


def test_credentials_and_client_reprs_hold_no_secret() -> None:
    credentials = Credentials(username="u", password="p-secret", token=SID)
    zc = ZomroClient(credentials)
    texts = (repr(credentials), str(credentials), repr(zc), credentials.fingerprint)
    assert_no_secrets(texts, "p-secret", SID)
    assert credentials.fingerprint == Credentials("u", "p-secret", SID).fingerprint
    assert credentials.fingerprint != Credentials("u", "p-secret2").fingerprint


async def test_a_list_zomro_pages_by_itself_is_read_to_the_end() -> None:
    def row(ident: str) -> dict[str, object]:
        return {**ROW, "id": {"$": ident}}

    def listing(form: dict[str, str]) -> httpx.Response:
        pages = {"1": [row("14"), row("15")], "2": [row("16")]}
        number = form.get("p_num", "1")
        return doc({"p_elems": {"$": "3"}, "p_cnt": {"$": "2"}, "elem": pages[number]})

    fake = CannedZomro({FUNC_SCHEDULES: listing})
    async with make(fake) as zc:
        schedules = await zc.list_schedules(INSTANCE)
    assert [s.id for s in schedules] == ["14", "15", "16"]
    assert [call.get("p_num") for call in fake.calls[1:]] == [None, "2"]


async def test_an_unpaged_list_is_read_in_one_request() -> None:
    fake = CannedZomro({FUNC_SCHEDULES: doc({"p_elems": {"$": "1"}, "elem": [ROW]})})
    async with make(fake) as zc:
        assert len(await zc.list_schedules(INSTANCE)) == 1
    assert fake.funcs == [FUNC_AUTH, FUNC_SCHEDULES]


async def test_a_refused_delete_of_a_schedule_that_is_still_listed_is_raised() -> None:
    fake = CannedZomro(
        {
            FUNC_SCHEDULE_DELETE: error("access", "", "Insufficient privileges"),
            FUNC_SCHEDULES: doc({"elem": [ROW]}),
        }
    )
    async with make(fake) as zc:
        with pytest.raises(AccessDeniedError):
            await zc.delete_schedule(INSTANCE, "14")
    # A brand-new session is not renewed: the refusal is real.
    assert fake.funcs == [FUNC_AUTH, FUNC_SCHEDULE_DELETE, FUNC_SCHEDULES]


async def test_a_refused_update_with_field_errors_is_raised_without_a_listing() -> None:
    refusal = error("value", json.dumps({"rotation_time": ["Invalid time"]}), "Invalid value")
    fake = CannedZomro({FUNC_SCHEDULE_EDIT: refusal})
    async with make(fake) as zc:
        with pytest.raises(InvalidValueError) as caught:
            await zc.update_schedule(INSTANCE, "14", SPEC)
    assert caught.value.field_errors == {"rotation_time": ["Invalid time"]}
    assert FUNC_SCHEDULES not in fake.funcs


@pytest.mark.parametrize(
    "echo",
    [
        "p%2Fs%20cr%C3%A9t%26x",  # URL-encoded, as the form field reached Zomro
        "p%2fs%20cr%c3%a9t%26x",  # ... with lower-case escapes
        "p%2Fs+cr%C3%A9t%26x",  # form encoding: a space as '+'
        "P/S CRÉT&X",  # case-folded
    ],
)
async def test_a_server_echoing_the_password_encoded_or_in_another_case_has_it_redacted(
    echo: str,
) -> None:
    fake = CannedZomro({FUNC_AUTH: error(echo, echo, f"no such user or password {echo}")})
    async with make(fake, credentials=Credentials(username="u", password="p/s crét&x")) as zc:
        with pytest.raises(ZomroError) as caught:
            await zc.list_schedules(INSTANCE)
    assert echo not in str(caught.value)
    assert echo.lower() not in str(caught.value).lower()


@pytest.mark.parametrize(
    ("failure", "write"),
    [
        (httpx.ConnectError, False),
        (httpx.ReadTimeout, False),
        (httpx.ReadTimeout, True),
        (httpx.RemoteProtocolError, False),
        (httpx.RemoteProtocolError, True),
    ],
)
async def test_a_transport_failure_carries_no_trace_of_the_request_body(
    failure: type[httpx.TransportError], write: bool
) -> None:
    def broken(request: httpx.Request) -> httpx.Response:
        if b"func=auth" in request.content:
            return doc({"auth": {"$id": SID, "$": SID}})
        raise failure("boom", request=request)

    async with make(httpx.MockTransport(broken), read_attempts=1) as zc:
        call = zc.delete_schedule(INSTANCE, "14") if write else zc.list_schedules(INSTANCE)
        with pytest.raises(ZomroError) as caught:
            await call
    chain: list[BaseException] = []
    link: BaseException | None = caught.value
    while link is not None and len(chain) < 10:
        chain.append(link)
        link = link.__cause__ or link.__context__
    assert not any(isinstance(link, httpx.HTTPError) for link in chain), chain


async def test_an_unreadable_body_carries_no_trace_of_itself() -> None:
    fake = CannedZomro({FUNC_AUTH: httpx.Response(200, content=b'{"doc": {"auth": "' + b"s" * 9)})
    async with make(fake, read_attempts=1) as zc:
        with pytest.raises(ServerError) as caught:
            await zc.list_schedules(INSTANCE)
    assert caught.value.__context__ is None
    assert caught.value.__cause__ is None


async def test_one_listing_reads_at_most_its_byte_budget_across_pages() -> None:
    filler = "x" * 2000

    def listing(form: dict[str, str]) -> httpx.Response:
        rows = [{**ROW, "id": {"$": str(int(form.get("p_num", "1")) * 10 + n)}} for n in range(5)]
        for row in rows:
            row["servername"] = {"$": filler}
        return doc({"p_elems": {"$": "500"}, "p_cnt": {"$": "5"}, "elem": rows})

    fake = CannedZomro({FUNC_SCHEDULES: listing})
    async with make(fake, read_attempts=1, max_listing_bytes=50_000) as zc:
        with pytest.raises(ServerError, match="listing larger than 50000 bytes"):
            await zc.list_schedules(INSTANCE)
    # Each page is ~10 kB: the budget stops the listing after a handful of its 100 pages.
    assert len([call for call in fake.calls if call["func"] == FUNC_SCHEDULES]) <= 6
