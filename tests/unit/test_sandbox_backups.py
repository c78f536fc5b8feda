"""The sandbox takes backups: its clock, scheduled runs on the provider's wall clock, rotation,
manual backups and their limits, protection, and the fault modes of runs.

Real HTTP over loopback to a sandbox in the test's event loop. The sandbox clock is set and
advanced (through the control endpoint, or ``sb.set_clock``/``sb.advance_clock``); runs are made
lazily, so a jump of a week makes that week's backups at once.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
from test_sandbox_api import INSTANCE, call, error_of, login, take

from zomro_backup_operator.sandbox import ManualClock, RunningSandbox, SandboxControl
from zomro_backup_operator.sandbox import running_sandbox as serve
from zomro_backup_operator.sandbox.config import ConfigError, parse_config
from zomro_backup_operator.sandbox.runs import run_times

KYIV = ZoneInfo("Europe/Kyiv")
MONDAY_NOON = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=KYIV)
"""A Monday in winter: Kyiv is UTC+2."""
DAY = 86400.0
DURATION = 180.0


def kyiv(day: int, hour: int, minute: int, second: int = 0, month: int = 11) -> str:
    """The ``createdate`` Zomro lists for that wall time in 2026."""
    moment = datetime.datetime(2026, month, day, hour, minute, second)
    return moment.strftime("%Y-%m-%d %H:%M:%S")


@pytest.fixture
def clock() -> ManualClock:
    """conftest's ``sb`` runs on this clock: a Monday noon in Kyiv."""
    return ManualClock(start=MONDAY_NOON.timestamp())


def schedule(sb: RunningSandbox, days: list[int], time: str, name: str = "nightly") -> None:
    sb.state.add_schedule(INSTANCE, name, days, time)


async def listing(http: httpx.AsyncClient, sb: RunningSandbox) -> dict[str, Any]:
    doc = await call(http, sb, func="instances.fleio_bckps", authinfo="demo:demo", elid=INSTANCE)
    assert "error" not in doc, doc
    return doc


async def listed(http: httpx.AsyncClient, sb: RunningSandbox) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = (await listing(http, sb)).get("elem", [])
    return result


def created(row: dict[str, Any]) -> str:
    value = row["createdate"]
    text: str = (value[0] if isinstance(value, list) else value)["$"]
    return text


def statuses(rows: list[dict[str, Any]]) -> list[str]:
    return [row["fleio_status"]["$"] for row in rows]


async def control(
    http: httpx.AsyncClient, sb: RunningSandbox, method: str, path: str, body: object = None
) -> httpx.Response:
    return await http.request(method, sb.control_url + path, json=body)


# --- the clock ------------------------------------------------------------------------------


async def test_the_clock_starts_at_the_base_time_and_flows_with_it(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    first = (await control(http, sb, "GET", "/clock")).json()
    clock.advance(90)
    second = (await control(http, sb, "GET", "/clock")).json()
    assert first["now"] == MONDAY_NOON.timestamp()
    assert second["now"] - first["now"] == 90
    assert first["zone"] == "Europe/Kyiv"
    assert first["provider"] == "2026-11-30T12:00:00+02:00"
    assert first["utc"] == "2026-11-30T10:00:00+00:00"


async def test_the_clock_is_set_to_an_instant_and_advanced_by_seconds(
    sb: RunningSandbox, http: httpx.AsyncClient, clock: ManualClock
) -> None:
    answer = await control(http, sb, "PUT", "/clock", {"at": "2027-01-01T00:00:00Z"})
    assert answer.json()["utc"] == "2027-01-01T00:00:00+00:00"
    clock.advance(10)
    answer = await control(http, sb, "POST", "/clock/advance", {"seconds": 3600})
    assert answer.json()["utc"] == "2027-01-01T01:00:10+00:00"
    answer = await control(http, sb, "PUT", "/clock", {"at": 1_800_000_000})
    assert answer.json()["now"] == 1_800_000_000


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/clock", {"at": "2027-01-01T00:00:00"}),
        ("/clock", {"at": "soon"}),
        ("/clock", {}),
        ("/clock/advance", {"seconds": -1}),
        ("/clock/advance", {"seconds": "60"}),
    ],
)
async def test_the_clock_refuses_naive_unreadable_or_backward_moves(
    sb: RunningSandbox, http: httpx.AsyncClient, path: str, body: dict[str, Any]
) -> None:
    method = "PUT" if path == "/clock" else "POST"
    answer = await control(http, sb, method, path, body)
    assert answer.status_code == 400
    assert (await control(http, sb, "GET", "/clock")).json()["now"] == MONDAY_NOON.timestamp()


async def test_a_reset_puts_the_clock_back_to_the_base_time(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.advance_clock(5 * DAY)
    await control(http, sb, "POST", "/reset", {})
    assert (await control(http, sb, "GET", "/clock")).json()["now"] == MONDAY_NOON.timestamp()


async def test_the_control_client_reads_sets_and_advances_the_clock(sb: RunningSandbox) -> None:
    with SandboxControl(sb.url) as ctl:
        assert await asyncio.to_thread(ctl.clock) == MONDAY_NOON
        target = datetime.datetime(2026, 12, 24, 18, 0, tzinfo=KYIV)
        assert await asyncio.to_thread(ctl.set_clock, target) == target
        assert await asyncio.to_thread(ctl.advance_clock, 60) == target + datetime.timedelta(
            seconds=60
        )
        with pytest.raises(ValueError, match="aware"):
            ctl.set_clock(datetime.datetime(2026, 12, 24, 18, 0))


# --- scheduled runs -------------------------------------------------------------------------


async def test_a_day_ahead_makes_that_days_backup_at_the_schedules_provider_time(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    schedule(sb, [2], "02:01")  # Tuesday
    sb.advance_clock(DAY)
    [row] = await listed(http, sb)
    assert row["backup_type"] == {"$": "auto"}
    assert created(row) == kyiv(1, 2, 1, month=12)
    assert set(row) >= {"id", "name", "fleio_status", "image_size", "protected", "fleio_id"}
    assert row["protected"] == {"$": "off"}


async def test_a_run_just_after_midnight_is_made_on_the_new_provider_day(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_clock(datetime.datetime(2026, 11, 30, 23, 58, tzinfo=KYIV))  # Monday night
    schedule(sb, [2], "00:01")  # Tuesday 00:01 Kyiv is Monday 22:01 UTC
    sb.advance_clock(60)
    assert await listed(http, sb) == []
    sb.advance_clock(120)
    [row] = await listed(http, sb)
    assert created(row) == kyiv(1, 0, 1, month=12)


async def test_a_run_is_made_once_when_the_clock_reaches_its_very_second(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    schedule(sb, [1], "12:05")
    sb.advance_clock(299)
    assert await listed(http, sb) == []
    for _ in range(3):
        sb.advance_clock(1)  # 12:05:00 exactly, then within the same minute
        assert [created(row) for row in await listed(http, sb)] == [kyiv(30, 12, 5)]


async def test_a_week_ahead_makes_each_run_in_order_with_its_own_time(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    schedule(sb, [1, 3, 5], "02:01")  # Monday (already past today), Wednesday, Friday
    await login(http, sb)
    sb.advance_clock(7 * DAY)
    rows = await listed(http, sb)
    assert [created(row) for row in rows] == [
        kyiv(2, 2, 1, month=12),
        kyiv(4, 2, 1, month=12),
        kyiv(7, 2, 1, month=12),
    ]
    assert [int(row["id"]["$"]) for row in rows] == sorted(int(row["id"]["$"]) for row in rows)


async def test_a_run_is_in_progress_and_keeps_the_instance_busy_until_it_is_active(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    schedule(sb, [2], "02:01")
    sb.set_clock(datetime.datetime(2026, 12, 1, 2, 2, tzinfo=KYIV))
    assert statuses(await listed(http, sb)) == ["image_creating"]
    edit = {"func": "instances.edit", "elid": INSTANCE, "backup_rotation": "4", "sok": "ok"}
    refused = await call(http, sb, authinfo="demo:demo", **edit)
    assert error_of(refused)["$object"] == "runningoperation"

    sb.advance_clock(DURATION)
    assert statuses(await listed(http, sb)) == ["active"]
    assert "ok" in await call(http, sb, authinfo="demo:demo", **edit)


async def test_with_busy_runs_turned_off_the_instance_takes_edits_during_a_run(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    answer = await control(http, sb, "PUT", "/settings", {"scheduled_backups_busy": False})
    assert answer.json()["scheduled_backups_busy"] is False
    schedule(sb, [2], "02:01")
    sb.set_clock(datetime.datetime(2026, 12, 1, 2, 2, tzinfo=KYIV))
    edit = {"func": "instances.edit", "elid": INSTANCE, "backup_rotation": "4", "sok": "ok"}
    assert "ok" in await call(http, sb, authinfo="demo:demo", **edit)


async def test_a_deleted_schedule_makes_no_more_backups(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    schedule(sb, [0, 1, 2, 3, 4, 5, 6], "02:01")
    sb.advance_clock(DAY)
    sb.state.remove_schedules(list(sb.state.schedules))
    sb.advance_clock(3 * DAY)
    assert len(await listed(http, sb)) == 1


async def test_a_clock_set_back_makes_no_backups_until_it_passes_its_old_time_again(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    schedule(sb, [0, 1, 2, 3, 4, 5, 6], "02:01")
    sb.advance_clock(DAY)
    sb.set_clock(MONDAY_NOON - datetime.timedelta(days=2))
    sb.advance_clock(DAY)
    assert len(await listed(http, sb)) == 2  # the Saturday-night run, made again


@pytest.mark.parametrize(("mode", "expected"), [("one", 1), ("each", 2)])
async def test_two_schedules_at_the_same_minute_make_one_backup_or_one_each(
    sb: RunningSandbox, http: httpx.AsyncClient, mode: str, expected: int
) -> None:
    await control(http, sb, "PUT", "/settings", {"same_minute_runs": mode})
    schedule(sb, [2], "02:01", name="first")
    schedule(sb, [2, 3], "02:01", name="second")
    sb.advance_clock(DAY)
    assert len(await listed(http, sb)) == expected


async def test_an_unknown_same_minute_mode_is_refused(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    answer = await control(http, sb, "PUT", "/settings", {"same_minute_runs": "both"})
    assert answer.status_code == 400
    assert sb.state.same_minute_runs == "one"


async def test_the_provider_zone_is_a_config_option() -> None:
    config = parse_config({"provider_zone": "UTC"})
    async with serve(config, clock=ManualClock(start=MONDAY_NOON.timestamp())) as sb:
        schedule(sb, [2], "02:01")
        sb.advance_clock(DAY)
        [backup] = sb.state.backups.values()
    expected = datetime.datetime(2026, 12, 1, 2, 1, tzinfo=datetime.UTC).timestamp()
    assert backup.created_at == expected
    with pytest.raises(ConfigError, match="provider_zone"):
        parse_config({"provider_zone": "Mars/Olympus"})


def test_run_times_follow_the_wall_clock_across_daylight_saving() -> None:
    # Kyiv moves from +02:00 to +03:00 at 03:00 on Sunday 2026-03-29.
    start = datetime.datetime(2026, 3, 28, 0, 0, tzinfo=KYIV).timestamp()
    times = run_times([0, 6], "02:30", KYIV, start, start + 2 * DAY)
    assert [datetime.datetime.fromtimestamp(t, KYIV).isoformat() for t in times] == [
        "2026-03-28T02:30:00+02:00",
        "2026-03-29T02:30:00+02:00",
    ]
    skipped = run_times([0], "03:30", KYIV, start, start + 2 * DAY)
    assert [datetime.datetime.fromtimestamp(t, KYIV).isoformat() for t in skipped] == [
        "2026-03-29T04:30:00+03:00"
    ]
    assert run_times([0], "25:00", KYIV, start, start + 2 * DAY) == []


# --- rotation -------------------------------------------------------------------------------


async def test_auto_backups_beyond_the_rotation_are_removed_and_manual_ones_kept(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    await call(
        http,
        sb,
        func="instances.edit",
        authinfo="demo:demo",
        elid=INSTANCE,
        backup_rotation="2",
        sok="ok",
    )
    sb.state.add_backup(INSTANCE, "before upgrade")
    schedule(sb, [0, 1, 2, 3, 4, 5, 6], "02:01")
    sb.advance_clock(4 * DAY)
    doc = await listing(http, sb)
    rows = doc["elem"]
    assert [row["backup_type"]["$"] for row in rows] == ["manual", "auto", "auto"]
    assert [created(row) for row in rows[1:]] == [
        kyiv(3, 2, 1, month=12),
        kyiv(4, 2, 1, month=12),
    ]
    assert doc["backup_rotation"] == {"$": "2"}


# --- manual backups -------------------------------------------------------------------------


async def test_the_daily_limit_counts_deleted_backups_and_resets_at_provider_midnight(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_clock(datetime.datetime(2026, 11, 30, 23, 0, tzinfo=KYIV))
    for n in range(5):
        assert "ok" in await take(http, sb, f"b{n}")
    first = next(iter(sb.state.backups))
    assert "ok" in await call(http, sb, func="image.delete", authinfo="demo:demo", elid=first)
    refused = error_of(await take(http, sb, "b5"))
    assert refused["$type"] == "value"
    assert "per day" in json.loads(refused["$object"])["non_field_errors"][0]
    doc = await listing(http, sb)
    assert (doc["manual_created_today"], doc["manual_created_total"]) == ({"$": "5"}, {"$": "4"})

    # 23:00 in Kyiv is 21:00 UTC: the provider's next day starts before UTC's.
    sb.set_clock(datetime.datetime(2026, 12, 1, 0, 0, 30, tzinfo=KYIV))
    assert "ok" in await take(http, sb, "next day")
    assert (await listing(http, sb))["manual_created_today"] == {"$": "1"}


async def test_a_manual_backup_name_over_100_characters_is_refused(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    refused = error_of(await take(http, sb, "x" * 101))
    assert json.loads(refused["$object"]).keys() == {"name"}
    assert "ok" in await take(http, sb, "x" * 100)


async def test_a_manual_backup_is_refused_while_a_scheduled_one_is_in_progress(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    schedule(sb, [2], "02:01")
    sb.set_clock(datetime.datetime(2026, 12, 1, 2, 1, 30, tzinfo=KYIV))
    assert error_of(await take(http, sb, "now"))["$object"] == "runningoperation"


async def test_a_backup_protected_through_control_cannot_be_deleted_until_unprotected(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    backup = sb.state.add_backup(INSTANCE, "keep")
    answer = await control(http, sb, "PATCH", f"/backups/{backup.id}", {"protected": True})
    assert answer.json()["protected"] is True
    delete = {"func": "image.delete", "authinfo": "demo:demo", "elid": backup.id}
    assert error_of(await call(http, sb, **delete))["$object"] == "protected"
    await control(http, sb, "PATCH", f"/backups/{backup.id}", {"protected": False})
    assert "ok" in await call(http, sb, **delete)
    assert (await control(http, sb, "PATCH", "/backups/1", {"protected": True})).status_code == 404


async def test_image_edit_reads_one_backups_details(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    schedule(sb, [2], "02:01")
    sb.advance_clock(DAY)
    [backup] = sb.state.backups.values()
    doc = await call(http, sb, func="image.edit", authinfo="demo:demo", elid=backup.id)
    assert doc["fleio_status"] == {"$": "active"}
    assert doc["created"] == {"$": kyiv(1, 2, 1, month=12)}
    assert doc["backup_type"] == {"$": "auto"}


async def test_backup_calls_are_in_the_request_log(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    await listing(http, sb)
    await take(http, sb, "logged")
    funcs = [(r.func, r.outcome) for r in sb.state.requests]
    assert ("instances.fleio_bckps", "ok") in funcs
    assert ("instances.fleio_bckps.edit", "ok") in funcs


# --- fault modes of runs --------------------------------------------------------------------


async def test_a_failing_run_goes_through_progress_to_error(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_faults(backup_runs="fail")
    schedule(sb, [2], "02:01")
    sb.set_clock(datetime.datetime(2026, 12, 1, 2, 2, tzinfo=KYIV))
    assert statuses(await listed(http, sb)) == ["image_creating"]
    sb.advance_clock(DURATION)
    assert statuses(await listed(http, sb)) == ["error"]


async def test_a_late_run_appears_its_delay_after_its_time(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    answer = await control(
        http, sb, "PATCH", "/faults", {"backup_runs": {"mode": "late", "seconds": 900}}
    )
    assert answer.json()["backup_runs"] == {
        "mode": "late",
        "seconds": 900,
        "instances": None,
        "count": None,
    }
    schedule(sb, [2], "02:01")
    sb.set_clock(datetime.datetime(2026, 12, 1, 2, 15, tzinfo=KYIV))
    assert await listed(http, sb) == []
    sb.advance_clock(60)
    [row] = await listed(http, sb)
    assert created(row) == kyiv(1, 2, 16, month=12)


async def test_a_skipped_run_makes_no_backup_and_count_limits_the_fault(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_faults(backup_runs={"mode": "skip", "count": 1})
    schedule(sb, [0, 1, 2, 3, 4, 5, 6], "02:01")
    sb.advance_clock(2 * DAY)
    assert [created(row) for row in await listed(http, sb)] == [kyiv(2, 2, 1, month=12)]
    assert sb.faults.backup_run_count == 0


async def test_a_run_fault_can_target_one_instance() -> None:
    config = parse_config(
        {
            "accounts": [
                {
                    "username": "demo",
                    "password": "demo",
                    "instances": [{"id": "111", "name": "a"}, {"id": "112", "name": "b"}],
                }
            ]
        }
    )
    async with serve(config, clock=ManualClock(start=MONDAY_NOON.timestamp())) as sb:
        sb.set_faults(backup_runs={"mode": "skip", "instances": ["111"]})
        sb.state.add_schedule("111", "a", [2], "02:01")
        sb.state.add_schedule("112", "b", [2], "02:01")
        sb.advance_clock(DAY)
        assert [b.instance_id for b in sb.state.backups.values()] == ["112"]


@pytest.mark.parametrize(
    "value",
    ["explode", {"mode": "late"}, {"mode": "fail", "instances": "111"}, {"mode": "x"}, 7],
)
async def test_a_bad_run_fault_is_refused_and_changes_nothing(
    sb: RunningSandbox, http: httpx.AsyncClient, value: object
) -> None:
    answer = await control(http, sb, "PATCH", "/faults", {"backup_runs": value})
    assert answer.status_code == 400
    assert sb.faults.backup_run_mode is None


async def test_run_faults_clear_with_the_others(
    sb: RunningSandbox, http: httpx.AsyncClient
) -> None:
    sb.set_faults(backup_runs="skip")
    await control(http, sb, "DELETE", "/faults")
    schedule(sb, [2], "02:01")
    sb.advance_clock(DAY)
    assert len(await listed(http, sb)) == 1


async def test_run_faults_and_settings_come_from_the_config() -> None:
    config = parse_config(
        {
            "faults": {"backup_runs": "fail"},
            "scheduled_backup_duration": 10,
            "scheduled_backups_busy": False,
            "same_minute_runs": "each",
        }
    )
    async with serve(config, clock=ManualClock(start=MONDAY_NOON.timestamp())) as sb:
        assert (sb.state.scheduled_backups_busy, sb.state.same_minute_runs) == (False, "each")
        schedule(sb, [2], "02:01")
        sb.advance_clock(DAY)
        [backup] = sb.state.backups.values()
        assert backup.status(sb.state.now()) == "error"
        assert backup.ready_at - backup.created_at == 10
    with pytest.raises(ConfigError, match="same_minute_runs"):
        parse_config({"same_minute_runs": "both"})
    with pytest.raises(ConfigError, match="scheduled_backups_busy"):
        parse_config({"scheduled_backups_busy": "yes"})


async def test_the_control_client_reads_backups_protects_them_and_changes_settings(
    sb: RunningSandbox,
) -> None:
    backup = sb.state.add_backup(INSTANCE, "keep")
    with SandboxControl(sb.url) as ctl:
        shown = await asyncio.to_thread(ctl.set_backup_protected, backup.id)
        [listed_backup] = await asyncio.to_thread(ctl.backups, INSTANCE)
        settings = await asyncio.to_thread(ctl.set_settings, same_minute_runs="each")
        assert await asyncio.to_thread(ctl.settings) == settings
    assert shown["protected"] is True
    assert listed_backup["protected"] is True
    assert listed_backup["created"] == "2026-11-30 12:00:00"
    assert settings["same_minute_runs"] == "each"
    assert backup.protected


async def test_a_restart_keeps_failed_runs_and_todays_manual_count(tmp_path: Path) -> None:
    state_file = tmp_path / "state.json"
    clock = ManualClock(start=MONDAY_NOON.timestamp())
    async with serve(clock=clock, state_file=state_file) as sb:
        sb.set_faults(backup_runs="fail")
        schedule(sb, [1], "12:01")
        sb.state.add_backup(INSTANCE, "manual")
        sb.state.remove_backups(list(sb.state.backups))
        clock.advance(60 + DURATION)  # the base clock: a restarted sandbox starts from it
        sb.advance_clock(0)
    async with serve(clock=clock, state_file=state_file) as sb:
        [backup] = sb.state.backups.values()
        assert backup.status(sb.state.now()) == "error"
        assert sb.state.manual_counts(INSTANCE) == (1, 0)
