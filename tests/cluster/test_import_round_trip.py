"""``import`` end to end: schedules made at Zomro before the operator, imported as manifests,
applied with kubectl to the real API server with the operator running, are adopted as they are:
Ready, the same ids, no duplicate, and not one write at Zomro. ``doctor`` reads the same Secret."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import yaml
from harness import INSTANCE, PASSWORD, SECOND_INSTANCE, Cluster, OperatorProcess, wait_all_ready

from zomro_backup_operator.sandbox.control import SandboxProcess
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULE_DELETE, FUNC_SCHEDULE_EDIT

WRITES = {FUNC_SCHEDULE_EDIT, FUNC_SCHEDULE_DELETE}
SEEDED = [
    (INSTANCE, "Nightly DB (full)", [1, 2, 3, 4, 5], "02:01"),
    (INSTANCE, "Weekend", [0, 6], "23:45"),
    (SECOND_INSTANCE, "Weekend", [6], "04:10"),
]


def held(sandbox: SandboxProcess) -> list[tuple[str, str, list[int], str]]:
    return sorted(
        (str(s["id"]), str(s["name"]), sorted(s["days"]), str(s["time"]))
        for instance in (INSTANCE, SECOND_INSTANCE)
        for s in sandbox.control.schedules(instance)
    )


def run_tool(
    control_plane: Any, sandbox: SandboxProcess, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "zomro_backup_operator", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        stdin=subprocess.DEVNULL,
        env={
            **os.environ,
            "ZOMRO_API_URL": sandbox.url,
            "KUBECONFIG": str(control_plane.kubeconfig),
        },
    )


def test_imported_schedules_are_adopted_as_they_are_with_no_write_at_zomro(
    cluster: Cluster,
    operator: OperatorProcess,
    sandbox: SandboxProcess,
    kubectl: Any,
    control_plane: Any,
) -> None:
    for instance, name, days, time in SEEDED:
        sandbox.control.add_schedule(instance, name, days, time)
    before = held(sandbox)
    sandbox.control.clear_requests()
    ns = cluster.namespace
    secret = f"{ns}/zomro"
    flags = ["--secret", secret, "-n", ns, "--credentials-secret", "zomro"]

    imported = run_tool(control_plane, sandbox, "import", *flags)
    assert imported.returncode == 0, imported.stderr
    documents: list[dict[str, Any]] = list(yaml.safe_load_all(imported.stdout))
    kubectl("apply", "-f", "-", input=imported.stdout)
    names = [d["metadata"]["name"] for d in documents]
    bodies = wait_all_ready(cluster, names, timeout=90)

    assert len(names) == len(set(names)) == len(SEEDED)
    for document in documents:
        status = bodies[document["metadata"]["name"]]["status"]
        assert status["scheduleId"] == document["metadata"]["annotations"]["zomro.com/schedule-id"]
    assert held(sandbox) == before
    assert not {r["func"] for r in sandbox.control.requests()} & WRITES

    again = run_tool(control_plane, sandbox, "import", *flags)
    assert again.returncode == 0, again.stderr
    assert list(yaml.safe_load_all(again.stdout)) == []
    for name in names:
        assert f"already claimed by {ns}/{name}" in again.stderr


def test_doctor_reads_the_secret_through_the_kubeconfig_and_never_prints_it(
    cluster: Cluster, sandbox: SandboxProcess, control_plane: Any
) -> None:
    result = run_tool(control_plane, sandbox, "doctor", "--secret", f"{cluster.namespace}/zomro")

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"credentials: Secret {cluster.namespace}/zomro, password login" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_doctor_names_a_missing_secret_and_exits_with_a_usage_code(
    cluster: Cluster, sandbox: SandboxProcess, control_plane: Any
) -> None:
    result = run_tool(control_plane, sandbox, "doctor", "--secret", f"{cluster.namespace}/nope")

    assert result.returncode == 2
    assert f"Secret {cluster.namespace}/nope not found" in result.stderr
