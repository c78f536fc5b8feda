"""Backup outcomes end to end: the real operator and API server against the sandbox, whose clock
(and the operator's, moved together) the tests drive through a night, so that the sandbox's
scheduled backups happen, fail or go missing as its fault modes say (docs/backups.md)."""

from __future__ import annotations

import datetime as dt
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from harness import INSTANCE, Cluster, OperatorProcess, free_port, wait_for
from prometheus_client.parser import text_string_to_metric_families

from zomro_backup_operator.sandbox.control import SandboxProcess
from zomro_backup_operator.time_zones import parse_zone

KYIV = parse_zone("Europe/Kyiv", "test")
GRACE_SECONDS = 1800
RUN = "02:00"


class Night:
    """The operator (checking backups every second, metrics on) and the sandbox, both clocks
    set to a Monday night to come, before a schedule's 02:00 run."""

    def __init__(self, cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess):
        self.cluster = cluster
        self.operator = operator
        self.sandbox = sandbox
        self.metrics_port = free_port()
        today = dt.datetime.now(KYIV).date() + dt.timedelta(days=7)
        monday = today + dt.timedelta(days=(7 - today.weekday()) % 7)
        self.run = dt.datetime.combine(monday, dt.time(2, 0), KYIV)

    def start(self) -> None:
        self.operator.stop()
        self.operator.env.update(
            ZOMRO_BACKUP_CHECK_SECONDS="1",
            ZOMRO_BACKUP_GRACE_SECONDS=str(GRACE_SECONDS),
            ZOMRO_METRICS_PORT=str(self.metrics_port),
        )
        self.at(self.run - dt.timedelta(minutes=10))
        self.operator.start()

    def at(self, instant: dt.datetime) -> None:
        """Move both clocks to ``instant`` (the sandbox makes the runs up to it)."""
        self.operator.set_clock(instant)
        self.sandbox.control.set_clock(instant)

    def after_run(self, minutes: float, nights: int = 0) -> None:
        self.at(self.run + dt.timedelta(days=nights, minutes=minutes))

    def schedule(self, name: str, *, schedule_name: str | None = None) -> None:
        """A schedule every day at 02:00, reconciled and watched before the run."""
        self.cluster.create(
            name, days=EVERY_DAY, time=RUN, schedule_name=schedule_name or name.title()
        )
        self.cluster.wait_ready(name)
        self.wait_backups(name, "AwaitingFirstRun")

    def backups_healthy(self, name: str) -> dict[str, Any] | None:
        body = self.cluster.get(name) or {}
        for condition in (body.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "BackupsHealthy":
                return dict(condition)
        return None

    def wait_backups(self, name: str, reason: str, *, timeout: float = 60.0) -> dict[str, Any]:
        def probe() -> dict[str, Any] | None:
            condition = self.backups_healthy(name)
            return condition if condition and condition.get("reason") == reason else None

        return wait_for(f"{name} BackupsHealthy reason {reason}", probe, timeout=timeout)

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.cluster.get(name) or {}).get("status") or {})

    def metric(self, name: str, resource: str) -> float | None:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics") as answer:
            text = answer.read().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and sample.labels == {
                    "namespace": self.cluster.namespace,
                    "name": resource,
                    "instance": INSTANCE,
                }:
                    return float(sample.value)
        return None

    def wait_metric(self, name: str, resource: str, value: float) -> None:
        wait_for(
            f"{name} of {resource} = {value}",
            lambda: self.metric(name, resource) == value,
            timeout=30,
        )


EVERY_DAY = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


@pytest.fixture
def night(cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess) -> Iterator[Night]:
    made = Night(cluster, operator, sandbox)
    made.start()
    yield made
    sandbox.control.reset()  # the sandbox's clock back to real time for the next tests


def test_a_nights_backup_shows_in_status_and_metrics(night: Night) -> None:
    night.schedule("nightly")
    assert night.metric("zomro_operator_backup_overdue", "nightly") == 0

    night.after_run(minutes=1)  # the sandbox's backup is in progress: not judged yet
    wait_for(
        "the backup in progress in status",
        lambda: (night.status("nightly").get("lastBackup") or {}).get("state") == "image_creating",
    )
    assert night.backups_healthy("nightly")["reason"] == "AwaitingFirstRun"  # type: ignore[index]

    night.after_run(minutes=10)  # finished
    condition = night.wait_backups("nightly", "BackupCompleted")
    status = night.status("nightly")
    run_utc = night.run.astimezone(dt.UTC)
    assert condition["status"] == "True"
    assert status["lastBackup"]["state"] == "active"
    assert status["lastBackup"]["time"] == run_utc.strftime("%Y-%m-%dT%H:%M:%SZ")
    assert status["lastSuccessfulBackupTime"] == status["lastBackup"]["time"]
    assert [b["id"] for b in night.sandbox.control.backups(INSTANCE)] == [
        status["lastBackup"]["id"]
    ]
    night.wait_metric(
        "zomro_operator_last_successful_backup_timestamp_seconds", "nightly", run_utc.timestamp()
    )
    assert "BackupCompleted" in night.cluster.event_reasons("nightly")


def test_a_failed_run_gives_backup_failed_with_an_event_and_the_metric(night: Night) -> None:
    night.schedule("nightly")
    night.sandbox.control.set_faults(backup_runs={"mode": "fail"})
    night.after_run(minutes=10)

    condition = night.wait_backups("nightly", "BackupFailed")
    assert condition["status"] == "False"
    assert "failed (error)" in condition["message"]
    assert night.status("nightly")["lastBackup"]["state"] == "error"
    assert "lastSuccessfulBackupTime" not in night.status("nightly")
    wait_for(
        "the BackupFailed event", lambda: "BackupFailed" in night.cluster.event_reasons("nightly")
    )
    night.wait_metric("zomro_operator_backup_failed", "nightly", 1)
    assert night.cluster.ready("nightly")["status"] == "True"  # type: ignore[index]


def test_a_missing_run_is_overdue_after_the_grace_and_the_next_backup_recovers(
    night: Night,
) -> None:
    night.schedule("nightly")
    night.sandbox.control.set_faults(backup_runs={"mode": "skip", "count": 1})
    night.after_run(minutes=20)  # within the grace: not overdue yet
    wait_for(
        "the check to wait for the run's backup",
        lambda: (
            "waiting for the backup" in (night.backups_healthy("nightly") or {}).get("message", "")
        ),
    )
    assert night.metric("zomro_operator_backup_overdue", "nightly") == 0

    night.after_run(minutes=GRACE_SECONDS / 60 + 1)
    condition = night.wait_backups("nightly", "BackupOverdue")
    assert condition["status"] == "False"
    assert "no backup appeared within 30 min after the run" in condition["message"]
    night.wait_metric("zomro_operator_backup_overdue", "nightly", 1)
    wait_for(
        "the BackupOverdue event", lambda: "BackupOverdue" in night.cluster.event_reasons("nightly")
    )

    night.after_run(minutes=10, nights=1)  # the next night's run makes its backup
    night.wait_backups("nightly", "BackupCompleted")
    night.wait_metric("zomro_operator_backup_overdue", "nightly", 0)


def test_two_schedules_at_the_same_time_both_count_the_one_backup_and_say_so(
    night: Night,
) -> None:
    night.schedule("first")
    night.schedule("second")
    night.after_run(minutes=10)

    first = night.wait_backups("first", "BackupCompleted")
    second = night.wait_backups("second", "BackupCompleted")
    assert night.status("first")["lastBackup"] == night.status("second")["lastBackup"]
    assert "also counted by schedule" in first["message"]
    assert "'Second'" in first["message"]
    assert "'First'" in second["message"]


def test_with_nothing_changing_the_check_writes_nothing(night: Night) -> None:
    night.schedule("nightly")
    before_run = night.status("nightly").get("nextRunTime")
    night.after_run(minutes=10)
    night.wait_backups("nightly", "BackupCompleted")
    wait_for("the metrics", lambda: night.metric("zomro_operator_backup_failed", "nightly") == 0)
    # The run moved the next one: the first drift check after it writes nextRunTime, once (that
    # write is the drift check's, not the backup check's, and may come after BackupCompleted).
    wait_for(
        "the next run after this one",
        lambda: night.status("nightly").get("nextRunTime") not in (None, before_run),
    )
    version = (night.cluster.get("nightly") or {})["metadata"]["resourceVersion"]
    night.sandbox.control.clear_requests()

    wait_for(
        "five backups listings",
        lambda: (
            sum(r["func"] == "instances.fleio_bckps" for r in night.sandbox.control.requests()) >= 5
        ),
        timeout=30,
    )
    assert (night.cluster.get("nightly") or {})["metadata"]["resourceVersion"] == version


def test_an_edit_refused_while_a_scheduled_backup_runs_lands_once_it_is_done(
    night: Night,
) -> None:
    night.sandbox.control.set_settings(scheduled_backups_busy=True)  # Zomro's rule, on here
    night.schedule("busy")

    night.after_run(minutes=1)  # the 02:00 backup is being taken: the instance refuses edits
    night.cluster.patch_spec("busy", time="03:30")
    refused = night.cluster.wait_reason("busy", "ZomroUnavailable")
    assert "OperationInProgressError" in refused["message"]

    night.after_run(minutes=10)  # the backup is done, the instance free again
    night.cluster.wait_ready("busy", timeout=180)
    [row] = night.sandbox.control.schedules(INSTANCE)
    assert row["time"] == "03:30"  # changed in place, once the instance allowed it
