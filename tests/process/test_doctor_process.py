"""The ``doctor`` console command in its own process against a sandbox process: interrupted in
the middle of its write test, it removes its schedule before it exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from devkit.launchers import run_cli
from devkit.waiting import wait_for

from zomro_backup_operator.cli_tools.access import ExitCode
from zomro_backup_operator.cli_tools.write_test import MARK
from zomro_backup_operator.sandbox.control import SandboxProcess, start_sandbox_process

pytestmark = pytest.mark.process

INSTANCE = "5203773"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxProcess]:
    with start_sandbox_process() as process:
        yield process


def marked(sandbox: SandboxProcess) -> list[dict[str, Any]]:
    return [s for s in sandbox.control.schedules(INSTANCE) if str(s["name"]).startswith(MARK)]


def start_doctor(sandbox: SandboxProcess, *args: str) -> subprocess.Popen[str]:
    """The command with the password on its stdin, as a script would pipe it."""
    read_end, write_end = os.pipe()
    os.write(write_end, b"demo\n")
    os.close(write_end)
    try:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zomro_backup_operator",
                "doctor",
                "--username",
                "demo",
                "--password-stdin",
                *args,
            ],
            stdin=read_end,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "ZOMRO_API_URL": sandbox.url, "ZOMRO_TIMEOUT_SECONDS": "10"},
        )
    finally:
        os.close(read_end)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_an_interrupted_write_test_deletes_its_schedule_before_exiting(
    sandbox: SandboxProcess, sig: signal.Signals
) -> None:
    sandbox.control.reset()
    sandbox.control.set_faults(latency=0.3)  # slow enough to be caught mid-test
    doctor = start_doctor(sandbox, "--write-test", "--instance", INSTANCE)
    try:
        wait_for(
            "the doctor's schedule at Zomro", lambda: marked(sandbox), timeout=30, interval=0.02
        )

        doctor.send_signal(sig)
        out, err = doctor.communicate(timeout=60)
    finally:
        if doctor.poll() is None:
            doctor.kill()
        sandbox.control.clear_faults()

    assert doctor.returncode == ExitCode.INTERRUPTED
    assert marked(sandbox) == []
    assert f"interrupted by {sig.name}" in out
    assert "clean up" in out
    assert "cleaning up" in err


def test_the_report_goes_to_stdout_and_diagnostics_to_stderr(sandbox: SandboxProcess) -> None:
    sandbox.control.reset()
    doctor = start_doctor(sandbox, "--write-test", "--instance", INSTANCE)
    out, err = doctor.communicate(timeout=60)

    assert doctor.returncode == ExitCode.OK
    assert out.startswith("zomro-backup-operator doctor: ")
    assert "doctor: write test" not in out
    assert "doctor: write test on instance" in err


def test_the_write_test_needs_an_instance() -> None:
    result = run_cli("doctor", "--write-test")
    assert result.returncode == ExitCode.USAGE
    assert "--write-test needs --instance" in result.stderr
