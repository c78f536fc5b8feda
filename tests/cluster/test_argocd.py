"""Argo CD itself syncs BackupSchedules and the Helm chart from a Git repository.

Argo CD v3.6.1 (built by `hack/argocd`, the version its pins file names) runs as local
processes against the session's control plane; the operator runs as a local process against
the sandbox; each test makes its own `file://` Git repository. What is proven: an Application
for a folder of BackupSchedules reaches Synced and Healthy; its health follows the Ready
condition through our health check in argocd-cm; after the operator has written status and
several of Argo CD's comparisons have passed it is still Synced, with no ignoreDifferences, in
both the client-side and the server-side diff mode; a time changed in Git reaches Zomro; a
BackupSchedule removed from Git is pruned and its Zomro schedule deleted. The chart's
Application syncs; it is Healthy only where the cluster has a node to run the Deployment.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest
import yaml
from argocd_harness import (
    SERVER_SIDE_DIFF,
    Applications,
    ArgoCD,
    GitRepo,
    argocd_info,
    describe,
    operation_running,
    run_hack_argocd,
    summary,
    write_schedule,
)
from conftest import ControlPlane
from harness import (
    CRD,
    INSTANCE,
    PASSWORD,
    USERNAME,
    Cluster,
    OperatorProcess,
    unavailable,
    wait_for,
)

from zomro_backup_operator.sandbox.control import SandboxProcess

pytestmark = [pytest.mark.argocd, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "zomro-backup-operator"
UP_TIMEOUT = 240.0
QUIET_COMPARISONS = 3
"""How many of Argo CD's periodic comparisons must pass with nothing to sync."""


def _unavailable(reason: str) -> NoReturn:
    unavailable("Argo CD", reason)


@pytest.fixture(scope="module")
def argocd(control_plane: ControlPlane) -> Iterator[ArgoCD]:
    """`hack/argocd up` against the session's control plane; `down` afterwards if this module
    started it."""
    if os.environ.get("ZOMRO_TEST_KUBECONFIG"):
        _unavailable("needs a hack/control-plane cluster, not ZOMRO_TEST_KUBECONFIG")
    env = {"ZOMRO_CP_STATE_DIR": str(control_plane.started_in)} if control_plane.started_in else {}
    info = argocd_info(env)
    if not info["built"]:
        _unavailable(f"argocd is not built ({info['argocd']}); run `hack/argocd build` once")
    started_here = not info["running"]
    result = run_hack_argocd("up", env, UP_TIMEOUT)
    if result.returncode != 0:
        _unavailable(f"`hack/argocd up` failed:\n{result.stderr[-3000:]}")
    info = argocd_info(env)
    try:
        yield ArgoCD(info["namespace"], bool(info["node"]))
    finally:
        if started_here:
            run_hack_argocd("down", env, 120)


@pytest.fixture
def apps(k8s_api: Any, argocd: ArgoCD) -> Iterator[Applications]:
    """Applications of this test, deleted (without cascading) before the operator stops."""
    applications = Applications(k8s_api, argocd)
    try:
        yield applications
    finally:
        for name in applications.created:
            applications.delete(name)


@pytest.fixture
def git(tmp_path: Path) -> GitRepo:
    return GitRepo(tmp_path / "gitops")


def _app_name(cluster: Cluster, stem: str) -> str:
    return f"{stem}-{cluster.namespace.rsplit('-', 1)[-1]}"


def _zomro(sandbox: SandboxProcess) -> dict[str, dict[str, Any]]:
    return {str(row["name"]): row for row in sandbox.control.schedules(INSTANCE)}


def _wait_quiet(apps: Applications, name: str, revision: str) -> dict[str, Any]:
    """Let QUIET_COMPARISONS of Argo CD's periodic comparisons pass; at every one the
    Application must be Synced and Healthy at ``revision`` with no new sync in its history."""
    start = apps.get(name)
    history = len((start.get("status") or {}).get("history") or [])
    seen = {start["status"]["reconciledAt"]}

    def probe() -> dict[str, Any] | None:
        app = apps.get(name)
        status = app["status"]
        assert summary(app) == (revision, "Synced", "Healthy"), describe(app)
        assert len(status.get("history") or []) == history, "Argo CD synced again: a diff"
        assert all(r.get("status") == "Synced" for r in status["resources"]), describe(app)
        seen.add(status["reconciledAt"])
        return app if len(seen) > QUIET_COMPARISONS else None

    return wait_for(f"{QUIET_COMPARISONS} quiet comparisons of {name}", probe, timeout=120)


@pytest.mark.parametrize("diff", ["client-side", "server-side"])
def test_an_application_of_backupschedules_syncs_stays_synced_updates_and_prunes(
    cluster: Cluster,
    operator: OperatorProcess,
    sandbox: SandboxProcess,
    apps: Applications,
    git: GitRepo,
    diff: str,
) -> None:
    write_schedule(git, "nightly", schedule_name="Nightly", time="02:01")
    write_schedule(git, "weekly", schedule_name="Weekly", time="03:30")
    first = git.commit("two schedules")
    name = _app_name(cluster, "schedules")
    apps.create(
        name,
        repo=git,
        path="schedules",
        namespace=cluster.namespace,
        annotations=SERVER_SIDE_DIFF if diff == "server-side" else None,
    )  # fmt: skip

    app = apps.wait(name, revision=first, sync="Synced", health="Healthy")
    assert "ignoreDifferences" not in app["spec"]
    assert {r["name"] for r in app["status"]["resources"]} == {"nightly", "weekly"}
    assert set(_zomro(sandbox)) == {"Nightly", "Weekly"}
    for schedule in ("nightly", "weekly"):
        status = (cluster.get(schedule) or {}).get("status") or {}
        assert status.get("scheduleId"), status  # the operator has written status
        assert status.get("kopf"), status
    _wait_quiet(apps, name, first)

    write_schedule(git, "nightly", schedule_name="Nightly", time="04:45")
    second = git.commit("nightly at 04:45")
    apps.refresh(name)
    apps.wait(name, revision=second, sync="Synced", health="Healthy")
    wait_for("04:45 at Zomro", lambda: _zomro(sandbox)["Nightly"]["time"] == "04:45")

    weekly_id = str((cluster.get("weekly") or {})["status"]["scheduleId"])
    git.remove("schedules/weekly.yaml")
    third = git.commit("no weekly schedule")
    apps.refresh(name)
    cluster.wait_gone("weekly")
    assert "Weekly" not in _zomro(sandbox)
    assert weekly_id not in {str(row["id"]) for row in sandbox.control.schedules(INSTANCE)}
    app = apps.wait(name, revision=third, sync="Synced", health="Healthy")
    assert [r["name"] for r in app["status"]["resources"]] == ["nightly"]
    _wait_quiet(apps, name, third)


def test_the_applications_health_follows_the_ready_condition(
    cluster: Cluster,
    operator: OperatorProcess,
    sandbox: SandboxProcess,
    apps: Applications,
    git: GitRepo,
) -> None:
    # Zomro applies the create at once but answers late: the schedule stays Creating meanwhile.
    sandbox.control.set_faults(late_create_seconds=20, late_create_count=1)
    write_schedule(git, "nightly", schedule_name="Nightly", time="02:01")
    first = git.commit("one schedule")
    name = _app_name(cluster, "health")
    apps.create(name, repo=git, path="schedules", namespace=cluster.namespace)

    def progressing_while_creating() -> bool:
        app = apps.get(name)
        creating = (cluster.ready("nightly") or {}).get("reason") == "Creating"
        return creating and summary(app)[2] == "Progressing"

    wait_for("Progressing while Creating", progressing_while_creating, timeout=60)
    apps.wait(name, revision=first, sync="Synced", health="Healthy")

    cluster.apply_secret("wrong", username=USERNAME, password="not-the-password")
    write_schedule(git, "broken", schedule_name="Broken", time="05:00", secret="wrong")
    second = git.commit("a schedule with wrong credentials")
    apps.refresh(name)
    apps.wait(name, revision=second, sync="Synced", health="Degraded")
    assert (cluster.ready("broken") or {}).get("reason") == "AuthFailed"

    cluster.apply_secret("wrong", username=USERNAME, password=PASSWORD)
    apps.wait(name, revision=second, sync="Synced", health="Healthy", timeout=240)
    assert set(_zomro(sandbox)) == {"Nightly", "Broken"}


# --- the Helm chart ------------------------------------------------------------------------


def _dropped(wanted: Any, live: Any, path: str = "") -> list[str]:
    """Paths of values in ``wanted`` that ``live`` lacks or holds differently."""
    if isinstance(wanted, dict) and isinstance(live, dict):
        return [p for k, v in wanted.items() for p in _dropped(v, live.get(k), f"{path}.{k}")]
    if isinstance(wanted, list) and isinstance(live, list) and len(wanted) == len(live):
        return [p for i, (w, v) in enumerate(zip(wanted, live, strict=True))
                for p in _dropped(w, v, f"{path}[{i}]")]  # fmt: skip
    return [] if wanted == live else [path]


def test_the_api_server_keeps_every_field_of_the_crd_as_written(crd: None, kubectl: Any) -> None:
    """Argo CD's client-side diff reports a field the API server drops (a zero `priority` of a
    printer column did) as a difference forever: the CRD must be stored as written."""
    wanted = yaml.safe_load(CRD.read_text())
    live = json.loads(kubectl("get", "crd", wanted["metadata"]["name"], "-o", "json").stdout)
    assert _dropped(wanted["spec"], live["spec"], "spec") == []
    assert _dropped(wanted["metadata"], live["metadata"], "metadata") == []


def _chart_application(
    cluster: Cluster, apps: Applications, git: GitRepo, image: str
) -> tuple[str, str]:
    """The chart from Git with the values, sync waves and finalizer of argocd/application.yaml."""
    shutil.copytree(CHART, git.path / "helm" / CHART.name)
    revision = git.commit("the chart")
    repository, _, tag = image.rpartition(":")
    name = _app_name(cluster, "operator")
    apps.create(
        name,
        repo=git,
        path=f"helm/{CHART.name}",
        namespace=cluster.namespace,
        annotations={"argocd.argoproj.io/sync-wave": "-1"},
        helm={
            "releaseName": name,
            "valuesObject": {
                "image": {"repository": repository, "tag": tag, "pullPolicy": "Never"},
                "watch": {"namespaces": [cluster.namespace]},
                "credentials": {"existingSecret": "zomro"},
                "commonAnnotations": {
                    "argocd.argoproj.io/sync-wave": "-1",
                    "argocd.argoproj.io/sync-options": "PruneLast=true",
                },
            },
        },
        cascade=True,
    )
    return name, revision


def _annotations(kubectl: Any, *resource: str) -> dict[str, str]:
    out = kubectl("get", *resource, "-o", "json").stdout
    return dict(json.loads(out)["metadata"].get("annotations") or {})


def test_the_charts_application_syncs_the_crd_first_and_never_deletes_it(
    cluster: Cluster, apps: Applications, git: GitRepo, argocd: ArgoCD, kubectl: Any
) -> None:
    name, revision = _chart_application(cluster, apps, git, "zomro-backup-operator:0.1.0")

    def synced() -> dict[str, Any] | None:
        app = apps.get(name)
        resources = (app.get("status") or {}).get("resources") or []
        in_sync = resources and all(r.get("status") == "Synced" for r in resources)
        done = in_sync and not operation_running(app)
        return app if summary(app)[:2] == (revision, "Synced") and done else None

    try:
        app = wait_for(f"{name} Synced", synced, timeout=120)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; now: {describe(apps.get(name))}") from None
    kinds = {r["kind"] for r in app["status"]["resources"]}
    assert {"CustomResourceDefinition", "Deployment", "ServiceAccount", "ClusterRole"} <= kinds
    crd = _annotations(kubectl, "crd", "backupschedules.zomro.com")
    assert crd["argocd.argoproj.io/sync-wave"] == "-2"
    deployment_name = f"{name}-zomro-backup-operator"
    deployment = _annotations(kubectl, "-n", cluster.namespace, "deployment", deployment_name)
    assert deployment["argocd.argoproj.io/sync-wave"] == "-1"
    assert app["status"]["operationState"]["phase"] == "Succeeded", describe(app)
    if not argocd.node:
        # Nothing runs the Deployment's Pod here (no node, no deployment controller).
        assert summary(app)[2] == "Progressing", describe(app)

    apps.delete(name)  # with Argo CD's resources finalizer: what it installed goes
    wait_for(
        "the chart's Deployment to go",
        lambda: kubectl("-n", cluster.namespace, "get", "deployments", "-o", "name").stdout == "",
    )
    assert kubectl("get", "crd", "backupschedules.zomro.com", check=False).returncode == 0


def test_the_charts_application_is_healthy_on_a_node(
    cluster: Cluster,
    apps: Applications,
    git: GitRepo,
    argocd: ArgoCD,
    request: pytest.FixtureRequest,
) -> None:
    if not argocd.node:
        pytest.skip(
            "the control plane reports no node (`hack/control-plane info`): the chart's "
            "Deployment cannot become Available"
        )
    image = str(request.getfixturevalue("image"))  # built and imported into the node
    name, revision = _chart_application(cluster, apps, git, image)
    app = apps.wait(name, revision=revision, sync="Synced", health="Healthy", timeout=300)
    assert app["status"]["operationState"]["phase"] == "Succeeded", describe(app)
