"""The create protocol against the real API server, the sandbox and the real operator process:
whatever Zomro does to a name, however late it lists a new schedule, through a SIGKILL and 30 %
server errors, each resource ends with exactly one Zomro schedule (docs/design.md)."""

from __future__ import annotations

from typing import Any

import pytest
from harness import (
    INSTANCE,
    RESYNC_SECONDS,
    SETTLE_SECONDS,
    Cluster,
    OperatorProcess,
    apply_spec,
    list_bodies,
    lists_seen,
    wait_all_ready,
    wait_for,
    worst_wait,
)
from kubernetes.client.exceptions import ApiException

from zomro_backup_operator.kube import Kube
from zomro_backup_operator.sandbox.control import SandboxControl, SandboxProcess

DAYS = ["Monday", "Wednesday", "Friday"]
MODES: dict[str, dict[str, Any]] = {
    # Admission already refuses what trimming or collapsing would change; upper case is tested
    # in the SIGKILL test below, and every mode in tests/unit/test_create_protocol.py.
    "lower case": {"names": {"case": "lower"}},
    "cut to 10": {"names": {"cut": 10}},
    "listing delay": {"listing_delay": 2 * RESYNC_SECONDS},
    "all at once": {"names": {"collapse": True, "case": "lower", "cut": 10}, "listing_delay": 4},
}


def assert_one_schedule_each(cluster: Cluster, control: SandboxControl, names: list[str]) -> None:
    """Exactly one Zomro schedule per resource, recorded in its status, with its days and time,
    and nothing else on the instance."""
    held = {str(row["id"]): row for row in control.schedules(INSTANCE)}
    bodies = list_bodies(cluster)
    ids = [bodies[name]["status"]["scheduleId"] for name in names]
    assert sorted(ids) == sorted(held), f"status ids {ids}, Zomro holds {sorted(held)}"
    for name, ident in zip(names, ids, strict=True):
        spec = bodies[name]["spec"]
        assert held[ident]["time"] == spec["time"], name
        assert sorted(held[ident]["day_names"]) == sorted(spec["days"]), name


def settle_through_resyncs(control: SandboxControl) -> None:
    """Let a few drift periods pass (seen as listings at Zomro), so a late duplicate would show."""
    seen = lists_seen(control)
    wait_for("three more listings", lambda: lists_seen(control) >= seen + 3, timeout=60)


@pytest.mark.parametrize("mode", list(MODES))
def test_names_zomro_changes_and_late_listings_still_give_exactly_one_schedule_each(
    mode: str, cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    control = sandbox.control
    control.set_faults(**MODES[mode])
    # One day and time for all, and names alike up to their last word: the hardest to tell apart.
    names = [f"r{n}" for n in range(4)]
    for n, name in enumerate(names):
        cluster.create(name, schedule_name=f"Nightly Run {n}", days=DAYS, time="03:30")

    wait_all_ready(cluster, names, timeout=120)
    settle_through_resyncs(control)

    assert_one_schedule_each(cluster, control, names)


@pytest.mark.parametrize("lost", [False, True], ids=["accepted", "answer lost"])
def test_a_sigkill_while_a_create_waits_for_its_listing_leaves_exactly_one_schedule(
    lost: bool, cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    operator.restart_with(ZOMRO_CREATE_WAIT_SECONDS="0")  # the answer is handed over, then lost
    control = sandbox.control
    if lost:  # applied, the connection dropped, listed only within the settle window
        control.set_faults(late_create={"drop": True, "count": 1}, listing_delay=SETTLE_SECONDS / 2)
    else:  # accepted, and listed only long after the settle window
        control.set_faults(listing_delay=2 * SETTLE_SECONDS, names={"case": "upper"})
    cluster.create("nightly", schedule_name="Nightly")
    wait_for("Zomro to hold the schedule", lambda: control.schedules(INSTANCE), timeout=30)

    def recorded() -> dict[str, Any] | None:
        pending = ((cluster.get("nightly") or {}).get("status") or {}).get("pendingCreate")
        return pending if pending and pending.get("acknowledged") is not lost else None

    wait_for("the create recorded in status", recorded, timeout=30)
    operator.kill()
    operator.start()

    cluster.wait_ready("nightly", timeout=60 + 2 * SETTLE_SECONDS)
    settle_through_resyncs(control)
    assert_one_schedule_each(cluster, control, ["nightly"])


@pytest.mark.timeout(900)
@pytest.mark.parametrize("wait", ["5", "0"], ids=["answers in the handler", "answers handed over"])
def test_thirty_percent_server_errors_with_changed_names_and_late_listings_give_one_each(
    wait: str, cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    # With ZOMRO_CREATE_WAIT_SECONDS=0 every create's handler ends before Zomro's answer, and
    # the operator writes the outcome and retries the failures itself (create_answers.py).
    operator.restart_with(ZOMRO_CREATE_WAIT_SECONDS=wait)
    control = sandbox.control
    control.set_faults(error_rate=0.3, names={"case": "lower"}, listing_delay=3)
    names = [f"e{n}" for n in range(8)]
    for n, name in enumerate(names):
        cluster.create(name, schedule_name=f"Nightly Run {n}", days=DAYS, time="03:30")

    # An attempt here makes several calls, so about half fail: a resource can meet eight failures
    # in a row (1 in 256), and its backoff then reaches the cap (once, 180 s did not suffice).
    wait_all_ready(cluster, names, timeout=worst_wait(8) + 60)
    control.set_faults(error_rate=0.0)
    settle_through_resyncs(control)

    assert any(r["outcome"].startswith("http:5") for r in control.requests())
    assert_one_schedule_each(cluster, control, names)


def test_an_outcome_written_by_uid_never_lands_on_a_resource_made_since_with_that_name(
    cluster: Cluster, k8s_api: Any
) -> None:
    # What a create's answer handed over relies on (create_answers.py), against the API server.
    kube = Kube(k8s_api)
    first = cluster.create("nightly", schedule_name="Nightly")
    kube.patch_status(cluster.namespace, "nightly", {"scheduleName": "Nightly"})  # the intent
    uid = first["metadata"]["uid"]

    kube.patch_status(
        cluster.namespace, "nightly", {"scheduleId": "1", "scheduleName": None}, uid=uid
    )
    status = (cluster.get("nightly") or {})["status"]
    assert status["scheduleId"] == "1"
    assert "scheduleName" not in status  # a null removes the field, as in a merge patch

    cluster.delete("nightly")
    wait_for("the first to go", lambda: cluster.get("nightly") is None, timeout=30)
    cluster.create("nightly", schedule_name="Nightly")
    kube.patch_status(cluster.namespace, "nightly", {"scheduleName": "Nightly"})
    with pytest.raises(ApiException) as refused:
        kube.patch_status(cluster.namespace, "nightly", {"scheduleId": "2"}, uid=uid)

    assert refused.value.status == 422
    assert (cluster.get("nightly") or {})["status"] == {"scheduleName": "Nightly"}


def test_names_zomro_would_change_are_refused_at_admission(cluster: Cluster, kubectl: Any) -> None:
    spec = {"instanceId": "1", "days": ["Monday"], "time": "02:00"}
    for bad in [" Nightly", "Nightly ", "Nightly  Run", "Nightly\tRun", "Nightly\u00a0Run"]:
        result = apply_spec(kubectl, cluster.namespace, {**spec, "scheduleName": bad})
        assert result.returncode != 0, bad
        assert "spec.scheduleName" in result.stderr, result.stderr
    good = {**spec, "scheduleName": "Nightly run \u00e9t\u00e9"}
    ok = apply_spec(kubectl, cluster.namespace, good, name="good")
    assert ok.returncode == 0, ok.stderr
