"""spec.timeZone and spec.suspend against the real API server, the sandbox and the real operator
process: what Zomro holds, what status says, a daylight-saving transition reached by moving the
operator's clock (never by waiting for one), suspension and resumption through a SIGKILL."""

from __future__ import annotations

import datetime as dt
from typing import Any

from harness import (
    INSTANCE,
    RESYNC_SECONDS,
    SETTLE_SECONDS,
    Cluster,
    OperatorProcess,
    apply_spec,
    wait_for,
)

from zomro_backup_operator.sandbox.control import SandboxControl, SandboxProcess
from zomro_backup_operator.time_zones import DEFAULT_PROVIDER_ZONE, parse_zone, provider_schedule
from zomro_backup_operator.zomro.models import Weekday

WINTER = dt.datetime(2027, 1, 6, 12, 0, tzinfo=dt.UTC)
"""A Wednesday away from any transition: New York at UTC-5, Kyiv (Zomro's clock) at UTC+2."""


def create_new_york(cluster: Cluster) -> None:
    """Monday 20:00 in New York: Tuesday 03:00 on Zomro's clock in winter, 02:00 between the US
    and the EU spring changes."""
    cluster.create("nightly", days=["Monday"], time="20:00", timeZone="America/New_York")


def held(control: SandboxControl) -> list[dict[str, Any]]:
    return control.schedules(INSTANCE)


def only_schedule(control: SandboxControl) -> dict[str, Any]:
    [row] = held(control)
    return row


def status_of(cluster: Cluster, name: str) -> dict[str, Any]:
    return dict((cluster.get(name) or {}).get("status") or {})


def edits_sent(control: SandboxControl) -> int:
    """Creates and changes of schedules (one function at Zomro)."""
    return sum(1 for r in control.requests() if r["func"] == "instances.fleio_bckps.schedule.edit")


def listings_seen(control: SandboxControl) -> int:
    return sum(1 for r in control.requests() if r["func"] == "instances.fleio_bckps.schedule")


def through_resyncs(control: SandboxControl) -> None:
    """Let a few drift periods pass (seen as listings at Zomro), so a late duplicate would show."""
    seen = listings_seen(control)
    wait_for("three more listings", lambda: listings_seen(control) >= seen + 3, timeout=60)


def test_a_time_zone_gives_zomro_and_status_the_converted_schedule_changed_in_place(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess, kubectl: Any
) -> None:
    control = sandbox.control
    operator.set_clock(WINTER)
    create_new_york(cluster)

    status = cluster.wait_ready("nightly")["status"]
    row = only_schedule(control)
    assert (row["day_names"], row["time"]) == (["Tuesday"], "03:00")
    assert (status["providerDays"], status["providerTime"]) == (["Tuesday"], "03:00")
    assert status["nextRunTime"] == "2027-01-12T01:00:00Z"  # Monday 11 January, 20:00 EST
    table = kubectl("get", "zbs", "nightly", "-n", cluster.namespace).stdout
    assert "NEXT RUN" in table
    assert "SUSPENDED" in table
    assert "2027-01-12T01:00:00Z" in table

    cluster.patch_spec("nightly", timeZone="UTC")
    status = cluster.wait_ready("nightly")["status"]
    moved = only_schedule(control)
    assert moved["id"] == row["id"]
    assert (moved["day_names"], moved["time"]) == (["Monday"], "22:00")
    assert (status["providerDays"], status["providerTime"]) == (["Monday"], "22:00")
    assert status["scheduleId"] == str(row["id"])
    assert status["nextRunTime"] == "2027-01-11T20:00:00Z"


def test_a_daylight_saving_transition_is_acted_on_when_the_operators_clock_reaches_it(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    # A drift period far longer than the test: only the wake-up at the transition can act.
    operator.stop()
    operator.env["ZOMRO_RESYNC_SECONDS"] = "3600"
    start = dt.datetime(2027, 3, 1, tzinfo=dt.UTC)
    operator.set_clock(start)
    operator.start()
    control = sandbox.control
    create_new_york(cluster)
    cluster.wait_ready("nightly")
    assert only_schedule(control)["time"] == "03:00"
    change = provider_schedule(
        frozenset({Weekday.MONDAY}),
        "20:00",
        parse_zone("America/New_York", "spec.timeZone"),
        parse_zone(DEFAULT_PROVIDER_ZONE, "ZOMRO_PROVIDER_TIMEZONE"),
        start,
    ).changes_at
    assert change is not None

    operator.set_clock(change - dt.timedelta(seconds=2))

    wait_for("Zomro to hold 02:00", lambda: only_schedule(control)["time"] == "02:00", timeout=30)
    wait_for(
        "the ScheduleShifted Event",
        lambda: "ScheduleShifted" in cluster.event_reasons("nightly"),
        timeout=30,
    )
    wait_for(
        "status to show 02:00",
        lambda: status_of(cluster, "nightly").get("providerTime") == "02:00",
        timeout=30,
    )
    assert "DriftCorrected" not in cluster.event_reasons("nightly")


def test_suspend_removes_the_schedule_and_resume_creates_it_again_once(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    control = sandbox.control
    cluster.create("nightly")
    first = cluster.wait_ready("nightly")["status"]["scheduleId"]

    cluster.patch_spec("nightly", suspend=True)
    cluster.wait_reason("nightly", "Suspended")
    wait_for("Zomro to hold nothing", lambda: held(control) == [], timeout=30)
    status = status_of(cluster, "nightly")
    assert "scheduleId" not in status
    assert "nextRunTime" not in status
    body = cluster.get("nightly") or {}
    assert body["metadata"]["finalizers"] == ["zomro.com/finalizer"]

    control.clear_requests()
    cluster.patch_spec("nightly", suspend=False)
    status = cluster.wait_ready("nightly")["status"]
    through_resyncs(control)

    row = only_schedule(control)
    assert status["scheduleId"] == str(row["id"]) != first
    assert edits_sent(control) == 1
    assert "Suspended" in cluster.event_reasons("nightly")


def test_a_sigkill_while_resuming_leaves_exactly_one_schedule(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    control = sandbox.control
    cluster.create("nightly", schedule_name="Nightly", suspend=True)
    cluster.wait_reason("nightly", "Suspended")
    # The create is applied and its answer lost; the listing shows it only after a while.
    control.set_faults(late_create={"drop": True, "count": 1}, listing_delay=SETTLE_SECONDS / 2)

    cluster.patch_spec("nightly", suspend=False)
    wait_for("Zomro to hold the schedule", lambda: held(control), timeout=30)
    wait_for(
        "the create recorded in status",
        lambda: status_of(cluster, "nightly").get("pendingCreate"),
        timeout=30,
    )
    operator.kill()
    operator.start()

    status = cluster.wait_ready("nightly", timeout=60 + 2 * SETTLE_SECONDS)["status"]
    through_resyncs(control)
    row = only_schedule(control)
    assert status["scheduleId"] == str(row["id"])


def test_a_suspension_whose_delete_zomro_applied_before_a_sigkill_completes_after_restart(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    control = sandbox.control
    cluster.create("nightly")
    schedule_id = cluster.wait_ready("nightly")["status"]["scheduleId"]
    operator.kill()
    # The state a SIGKILL leaves between Zomro deleting the schedule and the status write: the
    # spec says suspend, status still names the schedule, Zomro no longer holds it.
    cluster.patch_spec("nightly", suspend=True)
    control.remove_schedule(schedule_id)

    operator.start()

    cluster.wait_reason("nightly", "Suspended")
    assert "scheduleId" not in status_of(cluster, "nightly")
    assert held(control) == []


def test_a_suspended_resource_is_deleted_even_while_zomro_fails(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    cluster.wait_ready("nightly")
    cluster.patch_spec("nightly", suspend=True)
    cluster.wait_reason("nightly", "Suspended")
    sandbox.control.set_faults(error_rate=1.0)

    cluster.delete("nightly")

    cluster.wait_gone("nightly", timeout=10 * RESYNC_SECONDS)


def test_an_unknown_time_zone_is_invalid_spec_and_reaches_no_zomro(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly", timeZone="Europe/Berln")

    ready = cluster.wait_reason("nightly", "InvalidSpec")

    assert ready["status"] == "False"
    assert "spec.timeZone" in ready["message"]
    assert held(sandbox.control) == []
    assert edits_sent(sandbox.control) == 0


def test_a_malformed_time_zone_name_is_refused_at_admission(cluster: Cluster, kubectl: Any) -> None:
    spec = {"instanceId": "1", "days": ["Monday"], "time": "02:00"}
    for bad in ["../etc/passwd", "Europe/Berlin ", "Europe//Berlin", "A" * 65]:
        result = apply_spec(kubectl, cluster.namespace, {**spec, "timeZone": bad})
        assert result.returncode != 0, bad
        assert "spec.timeZone" in result.stderr, result.stderr
    ok = apply_spec(
        kubectl, cluster.namespace, {**spec, "timeZone": "America/Argentina/Buenos_Aires"}
    )
    assert ok.returncode == 0, ok.stderr
