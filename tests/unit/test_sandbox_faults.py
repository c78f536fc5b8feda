"""Injected faults and the control endpoint, over real loopback HTTP.

Faults are set both ways a test can: on the in-process object and through ``/_sandbox/``.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
from devkit.waiting import wait_for_async
from support import CREATE_FIELDS

from zomro_backup_operator.sandbox import ManualClock, RunningSandbox

INSTANCE = "5203773"
SEEDED = {"instance_id": INSTANCE, "name": "seeded", "days": [1], "time": "02:01"}
CREATE = {**CREATE_FIELDS, "out": "json"}

DROPPED = (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)
"""What a client sees when the connection is closed without an answer (not a timeout)."""


async def api(http: httpx.AsyncClient, sb: RunningSandbox, **params: str) -> httpx.Response:
    return await http.post(sb.url, data={"out": "json", "authinfo": "demo:demo", **params})


async def control(
    http: httpx.AsyncClient, sb: RunningSandbox, method: str, path: str, body: Any = None
) -> httpx.Response:
    if body is None and method in ("POST", "PUT", "PATCH"):
        body = {}
    return await http.request(method, sb.control_url + path, json=body)


def assert_bare_http_error(response: httpx.Response, status: int) -> None:
    """That HTTP status with a body that is no JSON at all (not a Zomro document)."""
    assert response.status_code == status
    with pytest.raises(json.JSONDecodeError):
        response.json()


# --------------------------------------------------------------------------- 5xx, blocks, latency


async def test_error_rate_one_answers_5xx_with_a_non_json_body_and_applies_nothing(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_faults(error_rate=1.0, error_status=502)
    response = await api(http, sb, **CREATE)
    assert_bare_http_error(response, 502)
    assert sb.state.schedules == {}


async def test_error_rate_can_target_some_funcs_only(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await control(
        http, sb, "PATCH", "/faults", {"error_rate": 1, "error_funcs": ["instances"]}
    )
    assert response.status_code == 200
    assert (await api(http, sb, func="instances")).status_code == 500
    assert (await api(http, sb, **CREATE)).status_code == 200
    assert len(sb.state.schedules) == 1


async def test_error_rate_hits_about_that_share_of_calls(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_faults(error_rate=0.5, error_seed=7)
    statuses = [(await api(http, sb, func="instances")).status_code for _ in range(60)]
    assert 15 <= statuses.count(500) <= 45
    assert set(statuses) == {200, 500}


@pytest.mark.parametrize("status", [403, 460])
async def test_block_answers_its_status_with_retry_after_until_it_ends(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock, status: int
) -> None:
    sb.set_faults(block={"status": status, "seconds": 30, "retry_after": 7})
    response = await api(http, sb, func="instances")
    assert_bare_http_error(response, status)
    assert response.headers["Retry-After"] == "7"
    clock.advance(30)
    assert (await api(http, sb, func="instances")).status_code == 200


async def test_block_without_duration_lasts_until_cleared(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    await control(http, sb, "PATCH", "/faults", {"block": 460})
    clock.advance(10_000)
    response = await api(http, sb, func="instances")
    assert response.status_code == 460
    assert "Retry-After" not in response.headers
    await control(http, sb, "DELETE", "/faults")
    assert (await api(http, sb, func="instances")).status_code == 200


async def test_latency_delays_every_api_answer(sb: RunningSandbox, http: httpx.AsyncClient) -> None:
    sb.set_faults(latency=0.4)
    started = time.monotonic()
    response = await api(http, sb, func="instances")
    assert response.status_code == 200
    assert time.monotonic() - started >= 0.4
    started = time.monotonic()
    await control(http, sb, "GET", "/state")
    assert time.monotonic() - started < 0.4  # the control endpoint is not delayed


# --------------------------------------------------------------------------- late creates


async def test_late_create_is_applied_before_it_is_answered(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_faults(late_create={"seconds": 0.3})
    started = time.monotonic()
    pending = asyncio.create_task(api(http, sb, **CREATE))

    await wait_for_async("the late create applied", lambda: len(sb.state.schedules) == 1, timeout=5)
    assert not pending.done()  # applied, not yet answered

    response = await pending
    assert time.monotonic() - started >= 0.3
    assert response.json()["doc"]["ok"] == {"$": "ok"}


async def test_late_create_with_drop_applies_it_and_never_answers(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_faults(late_create={"drop": True, "count": 1})
    with pytest.raises(DROPPED):
        await api(http, sb, **CREATE)
    assert len(sb.state.schedules) == 1
    # count=1: the next create is answered normally
    response = await api(http, sb, **CREATE)
    assert response.json()["doc"]["ok"] == {"$": "ok"}
    assert len(sb.state.schedules) == 2


async def test_late_create_can_be_set_with_flat_keys_too(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await control(
        http, sb, "PATCH", "/faults", {"late_create_seconds": 30, "late_create_count": 1}
    )
    assert response.json()["late_create"] == {"seconds": 30, "drop": False, "count": 1}
    response = await control(http, sb, "PATCH", "/faults", {"block_status": 403})
    assert response.json()["block"] == {"status": 403, "seconds": None, "retry_after": None}


async def test_late_create_leaves_changes_and_reads_alone(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    schedule = sb.state.add_schedule(INSTANCE, "x", [1], "01:00")
    sb.set_faults(late_create={"drop": True})
    changed = await api(http, sb, **{**CREATE, "elid": schedule.id})
    assert changed.json()["doc"]["ok"] == {"$": "ok"}
    listed = await api(http, sb, func="instances.fleio_bckps.schedule", elid=INSTANCE)
    assert listed.status_code == 200


# --------------------------------------------------------------------------- outage


async def test_outage_reset_drops_every_api_call_while_control_keeps_working(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await control(http, sb, "PATCH", "/faults", {"outage": "reset"})
    assert response.json()["outage"] == "reset"
    with pytest.raises(DROPPED):
        await api(http, sb, **CREATE)
    assert sb.state.schedules == {}

    state = await control(http, sb, "GET", "/state")
    assert state.status_code == 200
    assert INSTANCE in state.json()["instances"]

    await control(http, sb, "PATCH", "/faults", {"outage": None})
    assert (await api(http, sb, func="instances")).status_code == 200


async def test_outage_503_answers_service_unavailable_without_json(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_faults(outage="503")
    response = await api(http, sb, func="auth", username="demo", password="demo")
    assert_bare_http_error(response, 503)
    assert sb.state.sessions == {}


# --------------------------------------------------------------------------- sessions


async def test_expire_sessions_now_ends_every_session(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    login = await http.post(
        sb.url, data={"func": "auth", "username": "demo", "password": "demo", "out": "json"}
    )
    sid = login.json()["doc"]["auth"]["$id"]
    expired = await control(http, sb, "POST", "/expire-sessions")
    assert expired.json() == {"expired": 1}
    doc = (await http.post(sb.url, data={"func": "keepalive", "auth": sid, "out": "json"})).json()
    assert doc["doc"]["error"]["$type"] == "access"


async def test_session_ttl_can_be_changed_at_run_time(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    assert (await control(http, sb, "PUT", "/settings", {"session_ttl": 5})).status_code == 200
    login = await http.post(
        sb.url, data={"func": "auth", "username": "demo", "password": "demo", "out": "json"}
    )
    sid = login.json()["doc"]["auth"]["$id"]
    clock.advance(5)
    doc = (await http.post(sb.url, data={"func": "keepalive", "auth": sid, "out": "json"})).json()
    assert doc["doc"]["error"]["$type"] == "access"


# --------------------------------------------------------------------------- control endpoint


async def test_request_log_records_func_account_and_outcome_without_secrets(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    await api(http, sb, func="instances")
    await api(http, sb, func="instances", authinfo="demo:wrong-secret")
    sb.set_faults(error_rate=1)
    await api(http, sb, func="instances")

    log = (await control(http, sb, "GET", "/requests")).json()

    assert [(r["func"], r["account"], r["outcome"]) for r in log] == [
        ("instances", "demo", "ok"),
        ("instances", None, "error:auth:badpassword"),
        ("instances", None, "http:500"),
    ]
    assert all(isinstance(r["time"], float) for r in log)
    assert "wrong-secret" not in json.dumps(log)


async def test_faults_round_trip_and_put_replaces_them_all(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    await control(http, sb, "PATCH", "/faults", {"latency": 0.1, "outage": "503"})
    replaced = await control(http, sb, "PUT", "/faults", {"error_rate": 0.25})
    faults = replaced.json()
    assert faults["error_rate"] == 0.25
    assert faults["latency"] == 0
    assert faults["outage"] is None
    assert (await control(http, sb, "GET", "/faults")).json() == faults


@pytest.mark.parametrize(
    "body",
    [
        {"error_rate": 2},
        {"outage": "sometimes"},
        {"block": {"status": 200}},
        {"late_create": {"seconds": 0}},
        {"group_delete": "some"},
        {"no_such_fault": 1},
    ],
)
async def test_invalid_faults_are_refused_with_400_and_change_nothing(
    sb: RunningSandbox, http: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    before = (await control(http, sb, "GET", "/faults")).json()
    response = await control(http, sb, "PATCH", "/faults", {"latency": 1, **body})
    assert response.status_code == 400
    assert (await control(http, sb, "GET", "/faults")).json() == before


async def test_schedules_seeded_changed_and_removed_behind_the_clients_back_show_in_the_api(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    created = await control(
        http,
        sb,
        "POST",
        "/schedules",
        {"instance_id": INSTANCE, "name": "seeded", "days": [1, "Friday"], "time": "03:30"},
    )
    assert created.status_code == 201
    ident = created.json()["id"]

    def listing() -> Any:
        return api(http, sb, func="instances.fleio_bckps.schedule", elid=INSTANCE)

    row = (await listing()).json()["doc"]["elem"][0]
    assert row["rotation_days"] == {"$": "Monday Friday "}

    edited = await control(http, sb, "PATCH", f"/schedules/{ident}", {"time": "04:00"})
    assert edited.json()["time"] == "04:00"
    assert (await listing()).json()["doc"]["elem"][0]["rotation_time"] == {"$": "04:00"}

    assert (await control(http, sb, "DELETE", f"/schedules/{ident}")).status_code == 200
    assert "elem" not in (await listing()).json()["doc"]
    assert (await control(http, sb, "DELETE", f"/schedules/{ident}")).status_code == 404


async def test_state_shows_schedules_per_instance(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    await api(http, sb, **CREATE)
    state = (await control(http, sb, "GET", "/state")).json()
    (schedule,) = state["instances"][INSTANCE]["schedules"]
    assert schedule["name"] == "MySchedule"
    assert schedule["days"] == [1, 2, 3, 4, 5, 6]
    assert schedule["time"] == "02:01"


async def test_reset_forgets_schedules_sessions_and_faults(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    await api(http, sb, **CREATE)
    sb.set_faults(latency=0.2)
    await control(http, sb, "POST", "/reset")
    assert sb.state.schedules == {}
    assert sb.faults.latency == 0
    # ids start over as in a fresh sandbox
    await api(http, sb, **CREATE)
    assert list(sb.state.schedules) == ["14"]


async def test_busy_instance_refuses_edits_until_the_time_is_up(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    await control(http, sb, "POST", f"/instances/{INSTANCE}/busy", {"seconds": 20})
    refused = (await api(http, sb, **CREATE)).json()["doc"]["error"]
    assert refused["$object"] == "runningoperation"
    clock.advance(20)
    assert "ok" in (await api(http, sb, **CREATE)).json()["doc"]


async def test_api_path_is_only_the_root(sb: RunningSandbox, http: httpx.AsyncClient) -> None:
    response = await http.post(sb.url + "api", data={"func": "instances", "out": "json"})
    assert response.status_code == 404


async def listed_names(http: httpx.AsyncClient, sb: RunningSandbox) -> list[str]:
    answer = await api(http, sb, func="instances.fleio_bckps.schedule", elid=INSTANCE)
    return [row["name"]["$"] for row in answer.json()["doc"].get("elem", [])]


@pytest.mark.parametrize(
    ("names", "sent", "stored"),
    [
        ({}, "  Nightly  Backup ", "Nightly  Backup"),
        ({"collapse": True}, "Nightly \t Backup", "Nightly Backup"),
        ({"case": "lower"}, "Nightly Backup", "nightly backup"),
        ({"case": "upper"}, "Nightly Backup", "NIGHTLY BACKUP"),
        ({"cut": 9}, "Nightly Backup", "Nightly B"),
        ({"cut": 8}, "Nightly Backup", "Nightly"),
        ({"collapse": True, "case": "lower", "cut": 12}, "A  Nightly  Backup", "a nightly ba"),
    ],
)
async def test_name_modes_store_the_name_as_a_normalising_service_would(
    sb: RunningSandbox,
    http: httpx.AsyncClient,
    names: dict[str, Any],
    sent: str,
    stored: str,
) -> None:
    changed = await control(http, sb, "PATCH", "/faults", {"names": names})
    assert changed.status_code == 200
    await api(http, sb, **{**CREATE, "name": sent})
    assert await listed_names(http, sb) == [stored]


async def test_name_modes_can_be_set_with_flat_keys_and_are_cleared_with_the_faults(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    answer = await control(http, sb, "PATCH", "/faults", {"name_case": "upper", "name_cut": 4})
    assert answer.json()["names"] == {"collapse": False, "case": "upper", "cut": 4}
    await control(http, sb, "DELETE", "/faults")
    assert (await control(http, sb, "GET", "/faults")).json()["names"]["case"] is None


async def test_a_listing_delay_hides_a_new_schedule_from_listings_until_it_has_passed(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    await control(http, sb, "PATCH", "/faults", {"listing_delay": 30})
    created = await api(http, sb, **CREATE)
    assert "ok" in created.json()["doc"]
    assert await listed_names(http, sb) == []
    assert [s["name"] for s in sb.state.snapshot()["instances"][INSTANCE]["schedules"]] == [
        "MySchedule"
    ]
    clock.advance(29)
    assert await listed_names(http, sb) == []
    clock.advance(1)
    assert await listed_names(http, sb) == ["MySchedule"]


@pytest.mark.parametrize(
    "bad",
    [
        {"names": {"case": "title"}},
        {"names": {"cut": 0}},
        {"names": {"collapse": "yes"}},
        {"names": {"trim": True}},
        {"listing_delay": -1},
    ],
)
async def test_invalid_name_modes_and_listing_delays_are_refused(
    sb: RunningSandbox, http: httpx.AsyncClient, bad: dict[str, Any]
) -> None:
    answer = await control(http, sb, "PATCH", "/faults", bad)
    assert answer.status_code == 400
    assert sb.faults.name_case is None
    assert sb.faults.listing_delay == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/reset"), ("POST", "/schedules"), ("PATCH", "/faults")]
)
async def test_the_control_endpoint_refuses_writes_that_are_not_json(
    http: httpx.AsyncClient,
    sb: RunningSandbox,
    method: str,
    path: str,
    content_type: str | None,
) -> None:
    # What a web page in a browser can send to any site without a CORS preflight.
    await control(http, sb, "POST", "/schedules", SEEDED)
    headers = {"Content-Type": content_type} if content_type else {}
    body = json.dumps({"outage": "503", **SEEDED})
    response = await http.request(method, sb.control_url + path, content=body, headers=headers)
    assert response.status_code == 415
    assert len(sb.state.schedules_of(INSTANCE)) == 1
    assert sb.faults.outage is None


# --------------------------------------------------------------------------- second factor, hostile


async def test_two_factor_answers_a_right_password_with_the_code_form_and_no_session(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await control(http, sb, "PATCH", "/faults", {"two_factor": True})
    assert response.json()["two_factor"] is True

    login = await api(http, sb, func="auth", username="demo", password="demo")
    doc = login.json()["doc"]
    assert "auth" not in doc
    assert "error" not in doc
    assert "totp" in doc
    assert sb.state.sessions == {}
    refused = (await api(http, sb, func="instances")).json()["doc"]
    assert refused["error"]["$type"] == "access"
    wrong = await api(http, sb, func="auth", username="demo", password="nope")
    assert wrong.json()["doc"]["error"]["$object"] == "badpassword"


@pytest.mark.parametrize("mode", ["truncated", "wrong_types", "html"])
async def test_hostile_answers_are_200_bodies_that_are_not_zomro_documents_after_a_good_login(
    sb: RunningSandbox, http: httpx.AsyncClient, mode: str
) -> None:
    sb.set_faults(hostile=mode)
    login = await api(http, sb, func="auth", username="demo", password="demo")
    assert "auth" in login.json()["doc"]

    response = await api(http, sb, **CREATE)

    assert response.status_code == 200
    assert sb.state.schedules == {}
    try:
        parsed = response.json()
    except json.JSONDecodeError:
        return
    assert not isinstance(parsed["doc"]["elem"][0]["id"], dict)


async def test_an_unknown_hostile_mode_is_refused_by_the_control_endpoint(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    response = await control(http, sb, "PATCH", "/faults", {"hostile": "sometimes"})
    assert response.status_code == 400
    assert sb.faults.hostile is None
