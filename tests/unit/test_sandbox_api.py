"""The sandbox answers like Zomro: the seed's own requests, validation, sessions, neighbours.

Every test talks real HTTP over loopback to a sandbox in the test's event loop; time is a
ManualClock, so an hour of idleness costs nothing.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import httpx
import pytest
from devkit.waiting import wait_for_async
from support import CREATE_FIELDS, SEED_ROW, assert_no_secrets

from zomro_backup_operator.sandbox import ManualClock, RunningSandbox, running_sandbox
from zomro_backup_operator.sandbox.config import parse_config

INSTANCE = "5203773"
TWO_ACCOUNTS = {
    "login_failures_before_block": 3,
    "login_block_seconds": 60,
    "accounts": [
        {
            "username": "alice",
            "password": "alice-pw",
            "instances": [{"id": "111", "name": "alpha"}, {"id": "112", "name": "beta"}],
        },
        {"username": "bob", "password": "bob-pw", "instances": [{"id": "222", "name": "bravo"}]},
    ],
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(start=1_721_800_000.0)  # 2024-07-24 08:46 GMT+3, the seed's date


async def send(
    http: httpx.AsyncClient, url: str, params: dict[str, str], encoding: str = "urlencoded"
) -> httpx.Response:
    """One API call, encoded as multipart (the seed's curl --form), urlencoded, or a GET."""
    if encoding == "multipart":
        return await http.post(url, files={k: (None, v) for k, v in params.items()})
    if encoding == "query":
        return await http.get(url, params=params)
    return await http.post(url, data=params)


async def call(
    http: httpx.AsyncClient, sb: RunningSandbox, encoding: str = "urlencoded", **params: str
) -> dict[str, Any]:
    response = await send(http, sb.url, {"out": "json", **params}, encoding)
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()["doc"]
    return doc


async def login(
    http: httpx.AsyncClient,
    sb: RunningSandbox,
    username: str = "demo",
    password: str = "demo",
) -> str:
    doc = await call(http, sb, func="auth", username=username, password=password)
    sid: str = doc["auth"]["$id"]
    return sid


def create_fields(**overrides: str) -> dict[str, str]:
    return {**CREATE_FIELDS, **overrides}


async def rows(http: httpx.AsyncClient, sb: RunningSandbox, sid: str) -> list[dict[str, Any]]:
    doc = await call(http, sb, func="instances.fleio_bckps.schedule", auth=sid, elid=INSTANCE)
    assert "error" not in doc
    result: list[dict[str, Any]] = doc.get("elem", [])
    return result


def error_of(doc: dict[str, Any]) -> dict[str, Any]:
    assert "error" in doc, doc
    error: dict[str, Any] = doc["error"]
    return error


# --------------------------------------------------------------------------- the seed


@pytest.mark.parametrize("encoding", ["multipart", "urlencoded", "query"])
async def test_seed_requests_create_list_and_delete_field_for_field(
    sb: RunningSandbox, http: httpx.AsyncClient, encoding: str
) -> None:
    sid = await login(http, sb)

    created = await call(http, sb, encoding, auth=sid, **create_fields())
    assert created["ok"] == {"$": "ok"}
    assert "id" not in created  # the strict reading: a create does not say the new id
    assert "error" not in created

    listed = await call(
        http, sb, encoding, func="instances.fleio_bckps.schedule", auth=sid, elid=INSTANCE
    )
    assert listed["elem"] == [SEED_ROW]

    deleted = await call(
        http, sb, encoding, func="instances.fleio_bckps.schedule.delete", auth=sid, elid="14"
    )
    assert deleted["ok"] == {"$": "ok"}
    assert await rows(http, sb, sid) == []


async def test_login_answers_session_id_in_both_places(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    doc = await call(http, sb, func="auth", username="demo", password="demo")
    auth = doc["auth"]
    assert auth["$id"] == auth["$"]
    assert len(auth["$id"]) == 24
    assert auth["$level"]


async def test_empty_schedule_list_has_no_elem_key(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    doc = await call(http, sb, func="instances.fleio_bckps.schedule", auth=sid, elid=INSTANCE)
    assert "elem" not in doc
    assert "error" not in doc
    assert doc["p_elems"] == {"$": "0"}


async def test_days_are_listed_in_week_order_from_sunday_with_trailing_space(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    await call(http, sb, auth=sid, **create_fields(rotation_days="6,0,3"))
    assert (await rows(http, sb, sid))[0]["rotation_days"] == {"$": "Sunday Wednesday Saturday "}


# --------------------------------------------------------------------------- validation

REQUIRED = ["This field is required."]


@pytest.mark.parametrize(
    ("overrides", "missing", "expected"),
    [
        ({"name": ""}, None, {"name": ["This field may not be blank."]}),
        ({"name": "   "}, None, {"name": ["This field may not be blank."]}),
        (
            {"name": "x" * 61},
            None,
            {"name": ["Ensure this field has no more than 60 characters."]},
        ),
        ({"rotation_time": "24:00"}, None, {"rotation_time": ["Invalid time"]}),
        ({"rotation_time": "2:01"}, None, {"rotation_time": ["Invalid time"]}),
        ({"rotation_time": "02:60"}, None, {"rotation_time": ["Invalid time"]}),
        ({"rotation_time": "0201"}, None, {"rotation_time": ["Invalid time"]}),
        ({"rotation_time": "02:01 "}, None, {"rotation_time": ["Invalid time"]}),
        ({"rotation_time": "02:01\n"}, None, {"rotation_time": ["Invalid time"]}),
        ({"rotation_time": "٠٢:٠١"}, None, {"rotation_time": ["Invalid time"]}),  # noqa: RUF001
        ({"rotation_days": ""}, None, {"rotation_days": ["Select at least one day."]}),
        ({"rotation_days": "7"}, None, {"rotation_days": ["Invalid day"]}),
        ({"rotation_days": "-1"}, None, {"rotation_days": ["Invalid day"]}),
        ({"rotation_days": "1,"}, None, {"rotation_days": ["Invalid day"]}),
        ({"rotation_days": ",1"}, None, {"rotation_days": ["Invalid day"]}),
        ({"rotation_days": "1,1"}, None, {"rotation_days": ["Invalid day"]}),
        ({"rotation_days": "1, 2"}, None, {"rotation_days": ["Invalid day"]}),
        ({"rotation_days": "1;2"}, None, {"rotation_days": ["Invalid day"]}),
        ({"rotation_days": "Monday"}, None, {"rotation_days": ["Invalid day"]}),
        ({}, "name", {"name": REQUIRED}),
        ({}, "rotation_days", {"rotation_days": REQUIRED}),
        ({}, "rotation_time", {"rotation_time": REQUIRED}),
        (
            {"rotation_time": "25:00", "rotation_days": "9"},
            None,
            {"rotation_days": ["Invalid day"], "rotation_time": ["Invalid time"]},
        ),
    ],
)
async def test_invalid_schedule_fields_are_refused_as_json_field_errors_and_nothing_is_created(
    sb: RunningSandbox,
    http: httpx.AsyncClient,
    overrides: dict[str, str],
    missing: str | None,
    expected: dict[str, list[str]],
) -> None:
    sid = await login(http, sb)
    fields = create_fields(**overrides)
    if missing:
        del fields[missing]

    error = error_of(await call(http, sb, auth=sid, **fields))

    assert error["$type"] == "value"
    assert isinstance(error["$object"], str)
    assert json.loads(error["$object"]) == expected
    assert error["$lang"] == "en"
    assert error["msg"]["$"]
    assert sb.state.schedules == {}


async def test_name_of_sixty_characters_is_accepted(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    doc = await call(http, sb, auth=sid, **create_fields(name="n" * 60))
    assert "ok" in doc
    assert (await rows(http, sb, sid))[0]["name"] == {"$": "n" * 60}


async def test_field_errors_example_of_the_spec_is_encoded_verbatim(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    error = error_of(await call(http, sb, auth=sid, **create_fields(rotation_time="2:1")))
    assert error["$object"] == '{"rotation_time": ["Invalid time"]}'


async def test_surrounding_whitespace_of_a_name_is_trimmed_like_a_drf_serializer(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    await call(http, sb, auth=sid, **create_fields(name="  Nightly "))
    assert (await rows(http, sb, sid))[0]["name"] == {"$": "Nightly"}


async def test_duplicate_names_are_allowed_and_get_distinct_ids(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    await call(http, sb, auth=sid, **create_fields())
    await call(http, sb, auth=sid, **create_fields())
    listed = await rows(http, sb, sid)
    assert [r["name"]["$"] for r in listed] == ["MySchedule", "MySchedule"]
    assert [r["id"]["$"] for r in listed] == ["14", "15"]


# --------------------------------------------------------------------------- edit and delete


async def test_edit_without_sok_reads_the_form_and_changes_nothing(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    form = await call(http, sb, auth=sid, **create_fields(sok=""))
    assert "ok" not in form
    assert sb.state.schedules == {}

    await call(http, sb, auth=sid, **create_fields())
    read = await call(
        http,
        sb,
        func="instances.fleio_bckps.schedule.edit",
        auth=sid,
        plid=INSTANCE,
        elid="14",
    )
    assert read["name"] == {"$": "MySchedule"}
    assert read["rotation_days"] == {"$": "1,2,3,4,5,6"}
    assert read["rotation_time"] == {"$": "02:01"}
    assert "ok" not in read


async def test_edit_with_elid_changes_the_same_schedule_in_place(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    await call(http, sb, auth=sid, **create_fields())
    doc = await call(
        http,
        sb,
        auth=sid,
        **create_fields(elid="14", name="Weekend", rotation_days="0,6", rotation_time="23:59"),
    )
    assert doc["ok"] == {"$": "ok"}
    listed = await rows(http, sb, sid)
    assert len(listed) == 1
    assert listed[0]["id"] == {"$": "14"}
    assert listed[0]["name"] == {"$": "Weekend"}
    assert listed[0]["rotation_days"] == {"$": "Sunday Saturday "}
    assert listed[0]["rotation_time"] == {"$": "23:59"}


async def test_edit_of_an_unknown_schedule_is_a_missed_elid_error(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    error = error_of(await call(http, sb, auth=sid, **create_fields(elid="99")))
    assert (error["$type"], error["$object"]) == ("missed", "elid")
    assert sb.state.schedules == {}


async def test_delete_of_an_unknown_id_is_a_missed_elid_error(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    doc = await call(http, sb, func="instances.fleio_bckps.schedule.delete", auth=sid, elid="99")
    error = error_of(doc)
    assert (error["$type"], error["$object"]) == ("missed", "elid")
    assert error["msg"]["$"] == "The item '99' does not exist"


async def test_delete_takes_several_ids_joined_by_comma_space(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    for _ in range(3):
        await call(http, sb, auth=sid, **create_fields())
    doc = await call(
        http, sb, func="instances.fleio_bckps.schedule.delete", auth=sid, elid="14, 16"
    )
    assert "ok" in doc
    assert [r["id"]["$"] for r in await rows(http, sb, sid)] == ["15"]


@pytest.mark.parametrize("elid", ["14,15", "14, 99"])
async def test_delete_with_a_malformed_or_partly_unknown_list_deletes_nothing(
    sb: RunningSandbox, http: httpx.AsyncClient, elid: str
) -> None:
    sid = await login(http, sb)
    await call(http, sb, auth=sid, **create_fields())
    await call(http, sb, auth=sid, **create_fields())
    doc = await call(http, sb, func="instances.fleio_bckps.schedule.delete", auth=sid, elid=elid)
    assert error_of(doc)["$type"] == "missed"
    assert len(await rows(http, sb, sid)) == 2


# --------------------------------------------------------------------------- sessions and auth


async def test_bad_password_is_an_auth_badpassword_error(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    doc = await call(http, sb, func="auth", username="demo", password="wrong")
    error = error_of(doc)
    assert (error["$type"], error["$object"]) == ("auth", "badpassword")
    assert error["msg"] == {"$": "Invalid username or password"}
    assert "auth" not in doc


async def test_calls_without_a_session_are_refused_as_access(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    for extra in ({}, {"auth": "0123456789abcdef01234567"}):
        doc = await call(http, sb, func="instances.fleio_bckps.schedule", elid=INSTANCE, **extra)
        error = error_of(doc)
        assert error["$type"] == "access"
        assert error["msg"] == {"$": "Insufficient privileges to perform this operation"}


async def test_session_expires_one_ttl_after_its_last_request_not_its_first(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    sid = await login(http, sb)
    clock.advance(3599)
    assert "error" not in await call(http, sb, func="keepalive", auth=sid)
    clock.advance(3599)  # 7198 s after login, but only 3599 s idle
    assert "error" not in await call(http, sb, func="keepalive", auth=sid)
    clock.advance(3600)
    assert error_of(await call(http, sb, func="keepalive", auth=sid))["$type"] == "access"
    # and it stays gone
    clock.advance(1)
    assert error_of(await call(http, sb, func="instances", auth=sid))["$type"] == "access"


async def test_session_ttl_comes_from_the_config(http: httpx.AsyncClient) -> None:
    clock = ManualClock()
    async with running_sandbox(parse_config({"session_ttl": 10}), clock=clock) as sb:
        sid = await login(http, sb)
        clock.advance(10)
        assert error_of(await call(http, sb, func="keepalive", auth=sid))["$type"] == "access"


async def test_authinfo_authenticates_each_call_without_a_session(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    doc = await call(http, sb, authinfo="demo:demo", **create_fields())
    assert "ok" in doc
    assert sb.state.sessions == {}
    bad = await call(http, sb, func="instances", authinfo="demo:nope")
    assert (error_of(bad)["$type"], error_of(bad)["$object"]) == ("auth", "badpassword")


async def test_another_accounts_instance_and_an_unknown_instance_are_both_access_errors(
    http: httpx.AsyncClient,
) -> None:
    async with running_sandbox(parse_config(TWO_ACCOUNTS), clock=ManualClock()) as sb:
        sid = await login(http, sb, "alice", "alice-pw")
        for instance in ("222", "999"):
            listed = await call(
                http, sb, func="instances.fleio_bckps.schedule", auth=sid, elid=instance
            )
            assert error_of(listed)["$type"] == "access"
            created = await call(http, sb, auth=sid, **create_fields(plid=instance))
            assert error_of(created)["$type"] == "access"
        assert sb.state.schedules == {}
        instances = await call(http, sb, func="instances", auth=sid)
        assert [row["id"]["$"] for row in instances["elem"]] == ["111", "112"]


async def test_another_accounts_schedule_cannot_be_deleted(http: httpx.AsyncClient) -> None:
    async with running_sandbox(parse_config(TWO_ACCOUNTS), clock=ManualClock()) as sb:
        bob_schedule = sb.state.add_schedule("222", "bobs", [1], "01:00")
        sid = await login(http, sb, "alice", "alice-pw")
        doc = await call(
            http, sb, func="instances.fleio_bckps.schedule.delete", auth=sid, elid=bob_schedule.id
        )
        assert error_of(doc)["$type"] == "missed"
        assert bob_schedule.id in sb.state.schedules


async def test_repeated_login_failures_block_the_ip_for_a_while(http: httpx.AsyncClient) -> None:
    clock = ManualClock()
    async with running_sandbox(parse_config(TWO_ACCOUNTS), clock=clock) as sb:
        for _ in range(3):
            await call(http, sb, func="auth", username="alice", password="wrong")
        doc = await call(http, sb, func="auth", username="alice", password="alice-pw")
        assert (error_of(doc)["$type"], error_of(doc)["$object"]) == ("auth", "blocked_ip")
        clock.advance(61)
        assert "auth" in await call(http, sb, func="auth", username="alice", password="alice-pw")


async def test_a_second_call_on_a_busy_session_is_refused_while_the_first_is_in_process(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    sb.set_faults(latency=0.5)  # the second call comes in this window, on loopback
    first = asyncio.create_task(call(http, sb, func="instances", auth=sid))
    await wait_for_async(
        "the first call to reach the sandbox", lambda: sb.sandbox.calls_in_process, timeout=5
    )

    second = await call(http, sb, func="instances", auth=sid)

    error = error_of(second)
    assert (error["$type"], error["$object"]) == ("access", "requestinprocess")
    assert "elem" in await first
    sb.clear_faults()
    assert "elem" in await call(http, sb, func="instances", auth=sid)


# --------------------------------------------------------------------------- protocol quirks


async def test_unknown_func_is_a_missed_func_error(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    error = error_of(await call(http, sb, func="instances.fleio_bckps.schedule.list", auth=sid))
    assert (error["$type"], error["$object"]) == ("missed", "func")


@pytest.mark.parametrize("out", [None, "xml", "html", "JSON"])
async def test_only_out_json_gets_a_json_answer(
    sb: RunningSandbox, http: httpx.AsyncClient, out: str | None
) -> None:
    params = {"func": "auth", "username": "demo", "password": "demo"}
    if out is not None:
        params["out"] = out
    response = await http.post(sb.url, data=params)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.text)


async def test_without_lang_days_and_messages_are_english_as_in_the_seed(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    await call(http, sb, auth=sid, **create_fields())
    doc = await call(
        http, sb, func="instances.fleio_bckps.schedule", auth=sid, elid=INSTANCE, lang="en"
    )
    assert doc["elem"][0]["rotation_days"]["$"].startswith("Monday")


async def test_another_lang_localises_day_names_and_messages(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    await call(http, sb, auth=sid, **create_fields(rotation_days="1"))
    doc = await call(
        http, sb, func="instances.fleio_bckps.schedule", auth=sid, elid=INSTANCE, lang="ru"
    )
    assert doc["elem"][0]["rotation_days"] == {"$": "Понедельник "}
    bad = await call(http, sb, func="auth", username="demo", password="x", lang="de")
    assert error_of(bad)["$lang"] == "ru"
    assert "Invalid" not in error_of(bad)["msg"]["$"]


async def test_errors_are_http_200_with_every_scalar_wrapped(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await http.post(sb.url, data={"func": "instances", "out": "json"})
    assert response.status_code == 200
    error = response.json()["doc"]["error"]
    assert set(error) >= {"$type", "$object", "$lang", "msg", "detail"}
    assert set(error["msg"]) == {"$"}
    assert set(error["detail"]) == {"$"}


async def test_secrets_are_not_logged_nor_echoed(
    sb: RunningSandbox, http: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    doc = await call(http, sb, func="auth", username="demo", password="demo")
    sid = doc["auth"]["$id"]
    listed = await call(http, sb, func="instances", auth=sid)
    await call(http, sb, func="instances", authinfo="demo:hunter2-secret")
    text = caplog.text + json.dumps(listed) + json.dumps(sb.state.requests, default=str)
    assert_no_secrets([text], sid, "hunter2-secret")
    assert "password" not in json.dumps(listed["tparams"])
    assert "func='instances'" in caplog.text  # the log is there, only without secrets


# --------------------------------------------------------------------------- the neighbours


async def test_instances_lists_id_name_ip_status(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    doc = await call(http, sb, func="instances", auth=sid)
    row = doc["elem"][0]
    assert row["id"] == {"$": INSTANCE}
    assert row["name"] == {"$": "MyServer"}
    assert set(row) >= {"id", "name", "ip", "status"}


async def test_manual_backup_makes_the_instance_refuse_edits_with_runningoperation(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    sid = await login(http, sb)
    doc = await call(
        http, sb, func="instances.fleio_bckps.edit", auth=sid, plid=INSTANCE, name="b1", sok="ok"
    )
    assert "ok" in doc
    listed = await call(http, sb, func="instances.fleio_bckps", auth=sid, elid=INSTANCE)
    assert listed["elem"][0]["fleio_status"] == {"$": "image_creating"}
    assert listed["elem"][0]["backup_type"] == {"$": "manual"}

    refused = await call(http, sb, auth=sid, **create_fields())
    assert error_of(refused)["$object"] == "runningoperation"
    assert sb.state.schedules == {}

    clock.advance(sb.state.config.backup_duration)
    assert "ok" in await call(http, sb, auth=sid, **create_fields())
    listed = await call(http, sb, func="instances.fleio_bckps", auth=sid, elid=INSTANCE)
    assert listed["elem"][0]["fleio_status"] == {"$": "active"}
    assert listed["manual_created_today"] == {"$": "1"}


async def take(http: httpx.AsyncClient, sb: RunningSandbox, name: str) -> dict[str, Any]:
    """Ask for a manual backup of INSTANCE named ``name``, then let the sandbox finish it."""
    doc = await call(
        http,
        sb,
        func="instances.fleio_bckps.edit",
        authinfo="demo:demo",
        plid=INSTANCE,
        name=name,
        sok="ok",
    )
    sb.advance_clock(sb.state.config.backup_duration)
    return doc


async def test_manual_backups_are_limited_to_five_a_day(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    for i in range(5):
        assert "ok" in await take(http, sb, f"b{i}")
    error = error_of(await take(http, sb, "b5"))
    assert error["$type"] == "value"
    assert "non_field_errors" in json.loads(error["$object"])
    clock.advance(24 * 3600)
    assert "ok" in await take(http, sb, "next-day")


async def test_backup_list_pages_with_p_num_and_p_cnt(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    for i in range(5):
        sb.state.add_backup(INSTANCE, f"auto-{i}", backup_type="manual")
    sid = await login(http, sb)
    doc = await call(
        http, sb, func="instances.fleio_bckps", auth=sid, elid=INSTANCE, p_cnt="2", p_num="3"
    )
    assert doc["p_elems"] == {"$": "5"}
    assert [r["name"]["$"] for r in doc["elem"]] == ["auto-4"]
    assert {"manual_created_today", "manual_created_total", "backup_rotation", "cost"} <= set(doc)
    assert "stat_cost" in doc["cost"]


async def test_backup_rotation_accepts_1_to_10_only(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    for bad in ("0", "11", "x", ""):
        doc = await call(
            http, sb, func="instances.edit", auth=sid, elid=INSTANCE, backup_rotation=bad, sok="ok"
        )
        assert json.loads(error_of(doc)["$object"]).keys() == {"backup_rotation"}
    ok = await call(
        http, sb, func="instances.edit", auth=sid, elid=INSTANCE, backup_rotation="10", sok="ok"
    )
    assert "ok" in ok
    read = await call(http, sb, func="instances.edit", auth=sid, elid=INSTANCE)
    assert read["backup_rotation"] == {"$": "10"}


async def test_scheduled_backups_beyond_the_rotation_are_overwritten(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.state.set_rotation(INSTANCE, 2)
    for i in range(4):
        sb.state.add_backup(INSTANCE, f"auto-{i}", backup_type="auto")
    sid = await login(http, sb)
    doc = await call(http, sb, func="instances.fleio_bckps", auth=sid, elid=INSTANCE)
    assert [r["name"]["$"] for r in doc["elem"]] == ["auto-2", "auto-3"]
    assert isinstance(doc["elem"][0]["createdate"], list)  # the array-of-one quirk


async def test_protected_backup_cannot_be_deleted_until_unprotected(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    backup = sb.state.add_backup(INSTANCE, "keep-me", backup_type="auto", protected=True)
    sid = await login(http, sb)
    read = await call(http, sb, func="image.edit", auth=sid, elid=backup.id)
    assert read["protected"] == {"$": "on"}
    assert read["backup_type"] == {"$": "auto"}

    refused = await call(http, sb, func="image.delete", auth=sid, elid=backup.id)
    assert error_of(refused)["$object"] == "protected"
    assert backup.id in sb.state.backups

    await call(http, sb, func="image.edit", auth=sid, elid=backup.id, protected="off", sok="ok")
    assert "ok" in await call(http, sb, func="image.delete", auth=sid, elid=backup.id)
    assert backup.id not in sb.state.backups


async def test_keepalive_answers_a_plain_document_without_ok(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    doc = await call(http, sb, func="keepalive", auth=sid)
    assert "error" not in doc
    assert "ok" not in doc


async def test_the_seed_tables_mistakes_are_not_forgiven(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sid = await login(http, sb)
    await call(http, sb, auth=sid, **create_fields())
    by_plid = await call(http, sb, func="instances.fleio_bckps.schedule", auth=sid, plid=INSTANCE)
    assert error_of(by_plid)["$type"] == "access"
    via_image_delete = await call(http, sb, func="image.delete", auth=sid, elid="14")
    assert error_of(via_image_delete)["$type"] == "missed"
    assert list(sb.state.schedules) == ["14"]
