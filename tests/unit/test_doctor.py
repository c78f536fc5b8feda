"""``doctor`` against the sandbox over real loopback HTTP, in each fault mode, and its checks on
raw answers. The command runs in a worker thread (its own event loop) while the sandbox serves
in the test's loop."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support import assert_no_secrets

from zomro_backup_operator.cli_tools import commands
from zomro_backup_operator.cli_tools.access import (
    CredentialSource,
    ExitCode,
    ToolError,
    find_credentials,
)
from zomro_backup_operator.cli_tools.answer_checks import (
    check_list_answers,
    check_schedule_values,
)
from zomro_backup_operator.cli_tools.raw_answers import RawAnswer
from zomro_backup_operator.cli_tools.write_test import MARK
from zomro_backup_operator.sandbox import RunningSandbox, running_sandbox
from zomro_backup_operator.sandbox.config import AccountConfig, InstanceConfig, SandboxConfig

USERNAME = "alice"
PASSWORD = "Pa55-w0rd-that-must-never-show"
INSTANCE = "5203773"
EMPTY_INSTANCE = "7000001"
CONFIG = SandboxConfig(
    accounts=(
        AccountConfig(
            USERNAME,
            PASSWORD,
            (InstanceConfig(INSTANCE, "MyServer"), InstanceConfig(EMPTY_INSTANCE, "Spare")),
        ),
    ),
    login_failures_before_block=0,
)
WRITES = {"instances.fleio_bckps.schedule.edit", "instances.fleio_bckps.schedule.delete"}


@pytest.fixture
async def sb(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(config=CONFIG) as sandbox:
        monkeypatch.setenv("ZOMRO_API_URL", sandbox.url)
        monkeypatch.setenv("ZOMRO_MAX_REQUESTS_PER_SECOND", "200")
        monkeypatch.setenv("ZOMRO_TIMEOUT_SECONDS", "5")
        monkeypatch.delenv("ZOMRO_CREDENTIALS_SECRET", raising=False)
        sandbox.state.add_schedule(INSTANCE, "MySchedule", [1, 2, 3, 4, 5], "02:01")
        yield sandbox


async def doctor(
    password: str = PASSWORD, *, write_test: str | None = None, as_json: bool = False
) -> tuple[int, str, str]:
    """Run the command as the console script would, with the password on stdin."""
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        commands.doctor,
        CredentialSource(username=USERNAME, password_stdin=True),
        write_test_instance=write_test,
        as_json=as_json,
        stdin=io.StringIO(password + "\n"),
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def funcs_called(sb: RunningSandbox) -> set[str]:
    return {record.func for record in sb.state.requests}


def mine_left(sb: RunningSandbox) -> list[str]:
    return [s.name for s in sb.state.schedules.values() if s.name.startswith(MARK)]


# --- a healthy account -------------------------------------------------------------------------


async def test_a_healthy_account_reports_what_worked_and_exits_zero(sb: RunningSandbox) -> None:
    code, out, _ = await doctor()

    assert code == ExitCode.OK
    assert "instances: 2 listed (5203773 MyServer, 7000001 Spare)" in out
    assert "days as English names, e.g. 'Monday Tuesday Wednesday Thursday Friday '" in out
    assert f"schedule {EMPTY_INSTANCE}: no rows, and no 'elem' key, as documented" in out
    assert "refusals come as HTTP 200 doc.error ($type='access'" in out
    assert "fields the client does not read: ['os_distro', 'os_version']" in out
    assert "ZOMRO_MAX_IN_FLIGHT=" in out
    assert "ZOMRO_PROVIDER_TIMEZONE" in out


async def test_doctor_changes_nothing_without_the_write_test(sb: RunningSandbox) -> None:
    before = dict(sb.state.schedules)

    await doctor()

    assert not funcs_called(sb) & WRITES
    assert sb.state.schedules == before


async def test_the_report_never_shows_the_password_or_a_session_id(sb: RunningSandbox) -> None:
    code, out, err = await doctor(write_test=INSTANCE, as_json=True)

    assert code == ExitCode.OK
    assert_no_secrets({"stdout": out, "stderr": err}, PASSWORD, *sb.state.sessions)


async def test_json_output_holds_findings_round_trips_and_recommendations(
    sb: RunningSandbox,
) -> None:
    code, out, _ = await doctor(as_json=True)

    report: dict[str, Any] = json.loads(out)
    assert report["exit_code"] == code == 0
    assert {f["level"] for f in report["findings"]} <= {"ok", "note", "problem"}
    assert report["round_trips"]["instances"]["calls"] >= 1
    assert {r["variable"] for r in report["recommendations"]} >= {
        "ZOMRO_MAX_IN_FLIGHT",
        "ZOMRO_TIMEOUT_SECONDS",
        "ZOMRO_PROVIDER_TIMEZONE",
    }
    assert report["instances"] == [
        {"id": INSTANCE, "name": "MyServer", "schedules": 1},
        {"id": EMPTY_INSTANCE, "name": "Spare", "schedules": 0},
    ]


async def test_a_second_call_refused_on_one_session_recommends_one_in_flight(
    sb: RunningSandbox,
) -> None:
    sb.set_faults(latency=0.2)

    _, out, _ = await doctor(as_json=True)

    [rec] = [
        r for r in json.loads(out)["recommendations"] if r["variable"] == "ZOMRO_MAX_IN_FLIGHT"
    ]
    assert rec["value"] == "1"
    assert "request in process" in rec["why"]


# --- fault modes -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("faults", "password", "code", "says"),
    [
        ({}, "wrong-password", ExitCode.LOGIN_REFUSED, "Invalid username or password"),
        ({"two_factor": True}, PASSWORD, ExitCode.LOGIN_REFUSED, "second factor"),
        ({"block": {"status": 460, "retry_after": 30}}, PASSWORD, ExitCode.BLOCKED, "HTTP 460"),
        ({"outage": "reset"}, PASSWORD, ExitCode.UNREACHABLE, "connection to Zomro failed"),
        ({"outage": "503"}, PASSWORD, ExitCode.UNREACHABLE, "HTTP 503"),
        ({"hostile": "truncated"}, PASSWORD, ExitCode.PROBLEMS, "answer is not JSON"),
        ({"hostile": "wrong_types"}, PASSWORD, ExitCode.PROBLEMS, "row 0 has no 'id'"),
        ({"hostile": "html"}, PASSWORD, ExitCode.PROBLEMS, "answer is not JSON"),
    ],
    ids=[
        "wrong-password",
        "two-factor",
        "blocked-460",
        "outage-reset",
        "outage-503",
        "hostile-truncated",
        "hostile-wrong-types",
        "hostile-html",
    ],
)
async def test_each_fault_mode_gives_its_exit_code_and_says_why(
    sb: RunningSandbox, faults: dict[str, Any], password: str, code: ExitCode, says: str
) -> None:
    sb.set_faults(**faults)

    got, out, _ = await doctor(password)

    assert got == code
    assert says in out
    assert "what to do" in out
    assert_no_secrets({"stdout": out}, PASSWORD)


async def test_a_refused_login_recommends_no_settings_it_could_not_measure(
    sb: RunningSandbox,
) -> None:
    _, out, _ = await doctor("wrong-password", as_json=True)

    assert json.loads(out)["recommendations"] == []


# --- the write test ----------------------------------------------------------------------------


async def test_the_write_test_creates_reads_changes_and_deletes_one_marked_schedule(
    sb: RunningSandbox,
) -> None:
    code, out, err = await doctor(write_test=INSTANCE)

    assert code == ExitCode.OK
    for step in ("create", "read back", "change", "read back after change", "delete"):
        assert f"ok      {step}: " in out
    assert "found by listing (the answer had no id)" in out
    assert "listed days 'Thursday Saturday '" in out
    assert mine_left(sb) == []
    assert funcs_called(sb) >= WRITES
    assert "write test on instance 5203773" in err


async def test_a_create_whose_answer_is_lost_is_still_cleaned_up(sb: RunningSandbox) -> None:
    sb.set_faults(late_create={"drop": True, "count": 1})

    code, out, _ = await doctor(write_test=INSTANCE)

    assert code == ExitCode.PROBLEMS
    assert "problem stopped:" in out
    assert "ok      clean up: removed" in out
    assert mine_left(sb) == []


async def test_a_write_test_on_an_instance_not_owned_fails_without_leaving_anything(
    sb: RunningSandbox,
) -> None:
    code, out, _ = await doctor(write_test="999")

    assert code == ExitCode.PROBLEMS
    assert "problem stopped:" in out
    assert mine_left(sb) == []


# --- credentials -------------------------------------------------------------------------------


def test_without_any_credentials_source_the_doctor_asks_for_one() -> None:
    with pytest.raises(ToolError) as caught:
        find_credentials(CredentialSource(), stdin=io.StringIO(""), env={})
    assert caught.value.code == ExitCode.USAGE
    assert "--secret" in caught.value.message


def test_a_username_without_a_password_on_stdin_is_a_usage_error() -> None:
    with pytest.raises(ToolError) as caught:
        find_credentials(
            CredentialSource(username="alice", password_stdin=True), stdin=io.StringIO(""), env={}
        )
    assert caught.value.code == ExitCode.USAGE


def test_a_token_is_read_from_stdin_without_its_newline() -> None:
    found = find_credentials(
        CredentialSource(token_stdin=True), stdin=io.StringIO("abc123\n"), env={}
    )
    assert found.credentials.token == "abc123"


def test_a_malformed_credentials_secret_setting_is_named() -> None:
    with pytest.raises(ToolError) as caught:
        find_credentials(
            CredentialSource(), stdin=io.StringIO(""), env={"ZOMRO_CREDENTIALS_SECRET": "oops"}
        )
    assert "ZOMRO_CREDENTIALS_SECRET" in caught.value.message


# --- checks on raw answers ---------------------------------------------------------------------


def answer(func: str, doc: dict[str, Any]) -> RawAnswer:
    raw = RawAnswer(func=func, started=0.0, finished=0.0, status=200)
    raw.body += json.dumps({"doc": doc}).encode()
    return raw


def row(days: str, time: str = "02:01") -> dict[str, Any]:
    return {
        "id": {"$": "14"},
        "name": {"$": "n"},
        "rotation_days": {"$": days},
        "rotation_time": {"$": time},
    }


def test_day_names_the_client_cannot_read_are_a_problem() -> None:
    raw = answer("s", {"elem": [row("Montag Dienstag ")]})
    [finding] = check_schedule_values([raw], where="s")
    assert finding.level == "problem"
    assert "Montag" in finding.message


def test_day_numbers_and_seconds_are_noted_as_undocumented_forms_the_client_reads() -> None:
    raw = answer("s", {"elem": [row("1 2 3", "02:01:00")]})
    levels = {f.message.split(" ")[0]: f.level for f in check_schedule_values([raw], where="s")}
    assert levels == {"rotation_days": "note", "rotation_time": "note"}


def test_a_total_that_disagrees_with_the_rows_received_is_a_problem() -> None:
    raw = answer("s", {"elem": [row("Monday ")], "p_elems": {"$": "3"}})
    findings = check_list_answers(
        [raw], where="s", rows_received=1, known_fields=("id",), required_fields=("id",)
    )
    assert [f.message for f in findings if f.level == "problem"] == [
        "'p_elems' says 3 rows, the client received 1 in 1 page(s)"
    ]


def test_an_empty_elem_list_is_noted_because_zomro_documents_none() -> None:
    raw = answer("s", {"elem": [], "p_elems": {"$": "0"}})
    [finding] = check_list_answers(
        [raw], where="s", rows_received=0, known_fields=("id",), required_fields=("id",)
    )
    assert finding.level == "note"
    assert "empty 'elem'" in finding.message


def test_rows_missing_a_needed_field_are_a_problem_and_extra_fields_a_note() -> None:
    bad = {"id": {"$": "14"}, "colour": {"$": "red"}}
    raw = answer("s", {"elem": [bad], "p_elems": {"$": "1"}})
    findings = check_list_answers(
        [raw], where="s", rows_received=1, known_fields=("id", "name"), required_fields=("name",)
    )
    assert [(f.level, f.message) for f in findings] == [
        ("problem", "rows lack fields the client needs: ['name']"),
        ("note", "fields the client does not read: ['colour']"),
    ]
