"""The sandbox as its own process: the CLI, the state file, and the sync control client (its
configuration without a process: tests/unit/test_sandbox_config.py)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from devkit.launchers import run_cli

from zomro_backup_operator.sandbox import SandboxControl, start_sandbox_process
from zomro_backup_operator.sandbox.control import SandboxControlError

pytestmark = pytest.mark.process

INSTANCE = "5203773"


def api(url: str, **params: str) -> httpx.Response:
    return httpx.post(url, data={"out": "json", **params}, timeout=10)


def create(url: str, auth: dict[str, str], name: str = "MySchedule") -> None:
    doc = api(
        url,
        func="instances.fleio_bckps.schedule.edit",
        plid=INSTANCE,
        name=name,
        rotation_days="1,2,3,4,5,6",
        rotation_time="02:01",
        sok="ok",
        **auth,
    ).json()["doc"]
    assert doc["ok"] == {"$": "ok"}


def listed(url: str, auth: dict[str, str]) -> list[tuple[str, str]]:
    doc = api(url, func="instances.fleio_bckps.schedule", elid=INSTANCE, **auth).json()["doc"]
    return [(row["id"]["$"], row["name"]["$"]) for row in doc.get("elem", [])]


def test_cli_prints_the_url_as_its_first_line_and_serves_the_default_account() -> None:
    with start_sandbox_process() as sandbox:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", sandbox.url)
        assert not sandbox.url.endswith(":0/")  # --port 0 prints the real port
        doc = api(sandbox.url, func="auth", username="demo", password="demo").json()["doc"]
        sid = doc["auth"]["$id"]
        instances = api(sandbox.url, func="instances", auth=sid).json()["doc"]["elem"]
        assert [(i["id"]["$"], i["name"]["$"]) for i in instances] == [(INSTANCE, "MyServer")]
    assert sandbox.process.returncode == 0


def test_cli_first_stdout_line_is_the_url_when_run_directly(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "zomro_backup_operator", "sandbox", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\n", first)
    finally:
        process.terminate()
        process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()


def test_schedules_survive_a_restart_with_a_state_file(tmp_path: Path) -> None:
    state = tmp_path / "sandbox-state.json"
    auth = {"authinfo": "demo:demo"}
    with start_sandbox_process(state=state) as first:
        create(first.url, auth, "kept")
    assert json.loads(state.read_text())["schedules"][0]["name"] == "kept"

    with start_sandbox_process(state=state) as second:
        assert listed(second.url, auth) == [("14", "kept")]
        create(second.url, auth, "next")
        assert listed(second.url, auth) == [("14", "kept"), ("15", "next")]


def test_config_file_sets_accounts_and_secrets_stay_out_of_the_log(tmp_path: Path) -> None:
    config = tmp_path / "sandbox.yaml"
    config.write_text(
        "accounts:\n"
        "  - username: ops\n"
        "    password: Sup3r-Secret-Pw\n"
        "    instances:\n"
        "      - {id: 42, name: db-1, ip: 198.51.100.7}\n"
    )
    with start_sandbox_process(config=config) as sandbox:
        sid = api(sandbox.url, func="auth", username="ops", password="Sup3r-Secret-Pw").json()[
            "doc"
        ]["auth"]["$id"]
        rows = api(sandbox.url, func="instances", auth=sid).json()["doc"]["elem"]
        assert rows[0]["name"] == {"$": "db-1"}
        api(sandbox.url, func="instances", authinfo="ops:Sup3r-Secret-Pw")
        log = sandbox.log()
    assert "func='instances' account=ops outcome=ok" in log
    assert "Sup3r-Secret-Pw" not in log
    assert sid not in log


def test_an_invalid_config_exits_with_a_message(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("accounts: []\n")
    result = run_cli("sandbox", "--config", str(config))
    assert result.returncode == 2
    assert result.stdout == ""
    assert "accounts" in result.stderr


def test_sync_control_client_drives_a_sandbox_process_through_an_outage() -> None:
    with start_sandbox_process() as sandbox:
        control: SandboxControl = sandbox.control
        schedule = control.add_schedule(INSTANCE, "seeded", ["Monday", 3], "01:15")
        assert control.schedules(INSTANCE)[0]["days"] == [1, 3]

        control.set_faults(outage="reset")
        with pytest.raises(httpx.TransportError):
            api(sandbox.url, func="instances", authinfo="demo:demo")
        control.edit_schedule(schedule["id"], name="renamed")
        assert control.schedules(INSTANCE)[0]["name"] == "renamed"
        assert control.faults()["outage"] == "reset"

        control.clear_faults()
        assert listed(sandbox.url, {"authinfo": "demo:demo"}) == [(schedule["id"], "renamed")]
        outcomes = [r["outcome"] for r in control.requests()]
        assert outcomes[0] == "outage:reset"

        control.remove_schedule(schedule["id"])
        assert control.schedules(INSTANCE) == []
        with pytest.raises(SandboxControlError):
            control.remove_schedule(schedule["id"])

        sid = api(sandbox.url, func="auth", username="demo", password="demo").json()["doc"]["auth"][
            "$id"
        ]
        assert control.expire_sessions() == 1
        error = api(sandbox.url, func="keepalive", auth=sid).json()["doc"]["error"]
        assert error["$type"] == "access"
        control.reset()
        assert control.requests() == []


@pytest.mark.parametrize("content", ['{"version": 1}', "not json", '{"version": 99}'])
def test_an_unusable_state_file_exits_with_a_message_instead_of_losing_it(
    tmp_path: Path, content: str
) -> None:
    state = tmp_path / "state.json"
    state.write_text(content)
    result = run_cli("sandbox", "--state", str(state))
    assert result.returncode == 2
    assert "state" in result.stderr
    assert state.read_text() == content


def test_the_sandbox_is_quiet_about_exposure_on_loopback(tmp_path: Path) -> None:
    log_path = tmp_path / "sandbox.log"
    with start_sandbox_process(log_path=log_path):
        pass
    assert "beyond loopback" not in log_path.read_text()


def test_the_sandbox_help_says_it_is_for_tests_and_demos_not_production() -> None:
    result = run_cli("sandbox", "--help")
    assert result.returncode == 0, result.stderr
    assert "for tests and demos, not production" in " ".join(result.stdout.split())
