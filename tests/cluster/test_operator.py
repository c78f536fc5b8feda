"""The contract's behaviour list, end to end: the real operator process, the real API server,
the sandbox over loopback HTTP."""

from __future__ import annotations

import json
import os
import urllib.request
from typing import Any

import kopf
import pytest
from harness import (
    API_VERSION,
    INSTANCE,
    PASSWORD,
    RESYNC_SECONDS,
    RIVAL_INSTANCE,
    USERNAME,
    Cluster,
    OperatorProcess,
    assert_no_secrets,
    free_port,
    lists_seen,
    wait_for,
)
from kopf.testing import KopfRunner

from zomro_backup_operator.handlers import register
from zomro_backup_operator.resources import KIND
from zomro_backup_operator.sandbox.control import SandboxProcess
from zomro_backup_operator.settings import Settings

WEEKDAYS = [1, 2, 3, 4, 5]


def remote(sandbox: SandboxProcess, instance: str = INSTANCE) -> list[dict[str, Any]]:
    return sandbox.control.schedules(instance)


def test_applying_a_schedule_creates_exactly_one_zomro_schedule_and_reports_ready(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")

    body = cluster.wait_ready("nightly")

    [held] = remote(sandbox)
    assert body["status"]["scheduleId"] == str(held["id"])
    assert body["status"]["serverName"] == "MyServer"
    assert (held["name"], sorted(held["days"]), held["time"]) == ("MySchedule", WEEKDAYS, "02:01")
    assert body["metadata"]["finalizers"] == ["zomro.com/finalizer"]
    assert not [a for a in body["metadata"].get("annotations", {}) if "kopf.zalando.org" in a]
    assert "Created" in wait_for("a Created event", lambda: cluster.event_reasons("nightly"))


def test_changing_days_time_and_name_changes_the_same_zomro_schedule(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    schedule_id = cluster.wait_ready("nightly")["status"]["scheduleId"]

    cluster.patch_spec("nightly", days=["Sunday", "Saturday"], time="23:45", scheduleName="Weekend")
    body = cluster.wait_ready("nightly")

    [held] = remote(sandbox)
    assert str(held["id"]) == schedule_id == body["status"]["scheduleId"]
    assert (held["name"], sorted(held["days"]), held["time"]) == ("Weekend", [0, 6], "23:45")


def test_deleting_with_delete_policy_removes_the_zomro_schedule_then_the_resource(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    cluster.wait_ready("nightly")

    cluster.delete("nightly")
    cluster.wait_gone("nightly")

    assert remote(sandbox) == []


def test_deleting_with_orphan_policy_keeps_the_zomro_schedule(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly", policy="Orphan")
    schedule_id = cluster.wait_ready("nightly")["status"]["scheduleId"]

    cluster.delete("nightly")
    cluster.wait_gone("nightly")

    assert [str(s["id"]) for s in remote(sandbox)] == [schedule_id]


def test_a_schedule_removed_behind_the_operators_back_is_restored_within_the_resync_period(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    old_id = cluster.wait_ready("nightly")["status"]["scheduleId"]

    sandbox.control.remove_schedule(old_id)

    restored = wait_for(
        "the schedule to be recreated",
        lambda: [s for s in remote(sandbox) if s["name"] == "MySchedule"],
        timeout=RESYNC_SECONDS * 5,
    )
    assert len(restored) == 1
    body = wait_for(
        "status to name the new id",
        lambda: (b := cluster.get("nightly")) and b["status"]["scheduleId"] != old_id and b,
    )
    assert body["status"]["scheduleId"] == str(restored[0]["id"])
    assert "DriftCorrected" in wait_for(
        "a DriftCorrected event", lambda: cluster.event_reasons("nightly")
    )


def test_a_schedule_changed_behind_the_operators_back_is_restored_within_the_resync_period(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    schedule_id = cluster.wait_ready("nightly")["status"]["scheduleId"]

    sandbox.control.edit_schedule(schedule_id, time="13:13", days=[0])

    wait_for(
        "the schedule's time and days to be restored",
        lambda: [
            s for s in remote(sandbox) if s["time"] == "02:01" and sorted(s["days"]) == WEEKDAYS
        ],
        timeout=RESYNC_SECONDS * 5,
    )
    assert [str(s["id"]) for s in remote(sandbox)] == [schedule_id]


def test_an_idle_resync_writes_nothing_to_the_resource(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    cluster.wait_ready("nightly")
    # Let the handler's own writes settle, then watch several resync periods.
    settled = wait_for(
        "the resource version to settle",
        lambda: _stable_version(cluster, "nightly"),
        timeout=30,
    )
    sandbox.control.clear_requests()
    wait_for(
        "two resync periods of drift checks",
        lambda: lists_seen(sandbox.control) >= 2,
        timeout=RESYNC_SECONDS * 6,
    )
    body = cluster.get("nightly")
    assert body is not None
    assert body["metadata"]["resourceVersion"] == settled


def _stable_version(cluster: Cluster, name: str) -> str | None:
    """The resourceVersion, once two reads a second apart agree. The sleep is the quiet
    window itself: "nothing writes any more" has no event to wait for."""
    import time

    first = (cluster.get(name) or {})["metadata"]["resourceVersion"]
    time.sleep(1.0)
    second = (cluster.get(name) or {})["metadata"]["resourceVersion"]
    return second if first == second else None


def test_the_adoption_annotation_adopts_that_schedule_instead_of_creating_one(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    legacy = sandbox.control.add_schedule(INSTANCE, "Legacy", [3], "04:00")

    cluster.create(
        "adopted",
        schedule_name="Adopted",
        annotations={"zomro.com/schedule-id": str(legacy["id"])},
    )
    body = cluster.wait_ready("adopted")

    [held] = remote(sandbox)
    assert body["status"]["scheduleId"] == str(legacy["id"]) == str(held["id"])
    assert (held["name"], held["time"]) == ("Adopted", "02:01")
    assert "Adopted" in wait_for("an Adopted event", lambda: cluster.event_reasons("adopted"))


def test_a_second_resource_for_the_same_schedule_gets_a_conflict(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("first")
    cluster.wait_ready("first")

    cluster.create("second")

    condition = cluster.wait_reason("second", "Conflict")
    assert condition["status"] == "False"
    assert "first" in condition["message"]
    assert len(remote(sandbox)) == 1


def test_a_tampered_schedule_id_in_status_never_reaches_zomro(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    # Whoever can write status could name two schedules at once: Zomro joins elid with ", ".
    cluster.create("victim", schedule_name="Victim")
    victim = cluster.wait_ready("victim")["status"]["scheduleId"]
    cluster.create("tenant", schedule_name="Tenant")
    own = cluster.wait_ready("tenant")["status"]["scheduleId"]

    cluster.patch_status("tenant", {"scheduleId": f"{victim}, {own}"})

    condition = cluster.wait_reason("tenant", "InvalidStatus", timeout=RESYNC_SECONDS * 3 + 30)
    assert "status.scheduleId" in condition["message"]
    # The status write came after both schedules were reconciled; the next look at the tenant
    # refused the id, so neither schedule was changed or deleted.
    assert {(str(s["id"]), s["name"]) for s in remote(sandbox)} == {
        (victim, "Victim"),
        (own, "Tenant"),
    }


def test_a_crash_between_zomros_create_and_the_status_write_heals_without_a_duplicate(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    # The sandbox applies the create at once but answers only after 30 s: kill the operator in
    # that window, so the new id is never recorded.
    sandbox.control.set_faults(late_create_seconds=30, late_create_count=1)
    cluster.create("nightly")
    wait_for("Zomro to hold the schedule", lambda: remote(sandbox), timeout=30)
    operator.kill()
    status = (cluster.get("nightly") or {}).get("status") or {}
    assert "scheduleId" not in status
    assert status["pendingCreate"]["name"] == "MySchedule"
    assert (cluster.ready("nightly") or {}).get("reason") == "Creating"
    sandbox.control.clear_faults()

    operator.start()
    body = cluster.wait_ready("nightly")

    [held] = remote(sandbox)
    assert body["status"]["scheduleId"] == str(held["id"])
    assert "pendingCreate" not in body["status"] or body["status"]["pendingCreate"] is None


def test_expired_sessions_are_renewed_without_the_user_noticing(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    cluster.wait_ready("nightly")
    assert sandbox.control.expire_sessions() >= 1

    cluster.patch_spec("nightly", time="06:30")
    cluster.wait_ready("nightly")

    [held] = remote(sandbox)
    assert held["time"] == "06:30"


def test_thirty_percent_server_errors_still_give_exactly_one_schedule_each(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    sandbox.control.set_faults(error_rate=0.3, latency=0.05)
    names = [f"s{n}" for n in range(5)]
    for name in names:
        cluster.create(name, schedule_name=f"Sched-{name}")

    for name in names:
        cluster.wait_ready(name, timeout=120)

    held = sorted(s["name"] for s in remote(sandbox))
    assert held == sorted(f"Sched-{name}" for name in names)


def test_a_deletion_during_a_zomro_outage_waits_and_says_so_then_completes(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    cluster.wait_ready("nightly")
    sandbox.control.set_faults(outage="503")

    cluster.delete("nightly")

    condition = cluster.wait_reason("nightly", "ZomroUnavailable")
    assert "deletion waits" in condition["message"]
    assert len(remote(sandbox)) == 1
    sandbox.control.clear_faults()
    cluster.wait_gone("nightly", timeout=400)
    assert remote(sandbox) == []


def test_wrong_credentials_give_auth_failed_and_a_fixed_secret_recovers(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.apply_secret("wrong", username=USERNAME, password="not-the-password")
    cluster.create("nightly", secret="wrong")

    condition = cluster.wait_reason("nightly", "AuthFailed")
    assert condition["status"] == "False"
    assert remote(sandbox) == []
    assert "not-the-password" not in str(cluster.get("nightly"))

    cluster.apply_secret("wrong", username=USERNAME, password=PASSWORD)

    cluster.wait_ready("nightly", timeout=180)
    assert len(remote(sandbox)) == 1


def test_the_operators_default_secret_serves_resources_that_name_none(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    operator.stop()
    operator.env["ZOMRO_CREDENTIALS_SECRET"] = f"{cluster.namespace}/zomro"
    operator.start()

    cluster.create("nightly", secret=None)

    cluster.wait_ready("nightly")
    assert len(remote(sandbox)) == 1


def test_deleting_a_whole_namespace_removes_its_schedules_and_finishes(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    for name in ("first", "second"):
        cluster.create(name, schedule_name=name.title())
        cluster.wait_ready(name)
    assert len(remote(sandbox)) == 2

    cluster.core.delete_namespace(cluster.namespace)

    wait_for("Zomro's schedules to be deleted", lambda: remote(sandbox) == [], timeout=90)
    wait_for(
        "the namespace to finish terminating",
        lambda: (
            cluster.namespace
            not in [n.metadata.name for n in cluster.core.list_namespace().items if n.metadata]
        ),
        timeout=180,
    )


def test_a_missing_secret_gives_credentials_not_found(
    cluster: Cluster, operator: OperatorProcess
) -> None:
    cluster.create("nightly", secret="absent")

    condition = cluster.wait_reason("nightly", "CredentialsNotFound")
    assert "absent" in condition["message"]


def test_an_instance_of_another_account_gives_instance_not_found(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly", instance=RIVAL_INSTANCE)

    cluster.wait_reason("nightly", "InstanceNotFound")
    assert remote(sandbox, RIVAL_INSTANCE) == []


def test_no_secret_reaches_logs_events_or_status(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    cluster.wait_ready("nightly")
    sandbox.control.expire_sessions()
    cluster.patch_spec("nightly", time="07:00")
    cluster.wait_ready("nightly")
    cluster.create("broken", schedule_name="Broken", secret="wrong")
    cluster.apply_secret("wrong", username=USERNAME, password="pw-Wrong-Secret-31")
    cluster.wait_reason("broken", "AuthFailed")

    logs = operator.logs()
    events = " ".join(f"{e.reason} {e.message}" for e in cluster.events())
    statuses = str([cluster.get("nightly"), cluster.get("broken")])
    texts = {"logs": logs, "events": events, "status": statuses}
    assert_no_secrets(texts, "pw-Wrong-Secret-31")
    assert "Synced" in statuses


def test_the_api_server_refuses_bad_specs_naming_the_field(cluster: Cluster, kubectl: Any) -> None:
    cases = [
        ("time", '{"instanceId": "1", "days": ["Monday"], "time": "25:00"}'),
        ("days", '{"instanceId": "1", "days": ["Funday"], "time": "02:00"}'),
        ("instanceId", '{"instanceId": "abc", "days": ["Monday"], "time": "02:00"}'),
        # A leading zero would make a second claim key for one instance; "²" passes isdigit().
        ("instanceId", '{"instanceId": "05203773", "days": ["Monday"], "time": "02:00"}'),
        ("instanceId", '{"instanceId": "52\u00b2", "days": ["Monday"], "time": "02:00"}'),
        ("instanceId", '{"instanceId": "' + "1" * 21 + '", "days": ["Monday"], "time": "02:00"}'),
        (
            "scheduleName",
            '{"instanceId": "1", "days": ["Monday"], "time": "02:00", '
            '"scheduleName": "' + "x" * 61 + '"}',
        ),
        (
            "deletionPolicy",
            '{"instanceId": "1", "days": ["Monday"], "time": "02:00", "deletionPolicy": "Keep"}',
        ),
    ]
    for number, (field, spec) in enumerate(cases):
        manifest = (
            f'{{"apiVersion": "{API_VERSION}", "kind": "{KIND}", '
            f'"metadata": {{"name": "bad-{number}"}}, "spec": {spec}}}'
        )
        result = kubectl("apply", "-n", cluster.namespace, "-f", "-", input=manifest, check=False)
        assert result.returncode != 0, field
        assert f"spec.{field}" in result.stderr, result.stderr


def test_instance_id_cannot_change_after_creation(cluster: Cluster, kubectl: Any) -> None:
    cluster.create("nightly", secret=None)

    result = kubectl(
        "patch",
        "-n",
        cluster.namespace,
        "zbs",
        "nightly",
        "--type=merge",
        "-p",
        '{"spec": {"instanceId": "42"}}',
        check=False,
    )

    assert result.returncode != 0
    assert "immutable" in result.stderr


def test_the_liveness_endpoint_answers_and_logs_can_be_json(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    port = free_port()
    operator.stop()
    operator.extra_args = [f"--liveness=http://127.0.0.1:{port}/healthz"]
    operator.env["ZOMRO_LOG_FORMAT"] = "json"
    operator.start()

    health = wait_for("the liveness endpoint", lambda: _get(f"http://127.0.0.1:{port}/healthz"))
    cluster.create("nightly")
    cluster.wait_ready("nightly")

    assert health[0] == 200
    lines = [line for line in operator.log_path.read_text().splitlines() if line.strip()]
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert records, "no JSON log lines"
    assert len(records) >= len(lines) - 5, "most lines should be JSON"  # allow interpreter noise
    assert any("ensure" in record.get("message", "") for record in records)


def _get(url: str) -> tuple[int, str] | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback test URL
            return response.status, response.read().decode()
    except OSError:
        return None


def test_the_operator_runs_in_process_under_kopfs_test_runner(
    cluster: Cluster, sandbox: SandboxProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox.control.reset()
    # The client library read KUBECONFIG's default when pytest imported it; kopf's login uses that.
    monkeypatch.setattr(
        "kubernetes.config.kube_config.KUBE_CONFIG_DEFAULT_LOCATION", os.environ["KUBECONFIG"]
    )
    settings = Settings(
        api_url=sandbox.url,
        resync_seconds=RESYNC_SECONDS,
        metrics_port=0,
        max_requests_per_second=50,
    )
    registry = kopf.OperatorRegistry()
    register(registry, settings)
    cluster.create("nightly")

    with KopfRunner(
        ["run", "--standalone", "--namespace", cluster.namespace], registry=registry, timeout=60
    ) as runner:
        cluster.wait_ready("nightly")
        cluster.delete("nightly")
        cluster.wait_gone("nightly")

    assert runner.exit_code == 0, runner.output
    assert remote(sandbox) == []


def test_a_namespace_whose_secret_went_first_still_removes_its_schedules(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    cluster.create("nightly")
    cluster.wait_ready("nightly")
    cluster.core.delete_namespaced_secret("zomro", cluster.namespace)
    # The drift check reports the missing Secret once its cached read has expired.
    cluster.wait_reason("nightly", "CredentialsNotFound", timeout=90)
    assert len(remote(sandbox)) == 1

    cluster.core.delete_namespace(cluster.namespace)

    wait_for("Zomro's schedule to be deleted", lambda: remote(sandbox) == [], timeout=90)
    cluster.wait_gone("nightly", timeout=90)
