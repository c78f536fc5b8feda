"""The chart's RBAC is enough and no more: the real operator runs as the chart's ServiceAccount
(a `kubectl create token` kubeconfig) through create, change and delete against the sandbox, with
its metrics scraped along the way; then `kubectl auth can-i` shows what that identity may not do.
Both watch scopes: all namespaces (ClusterRole) and a list of namespaces (Roles)."""

from __future__ import annotations

import copy
import json
import subprocess
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml
from devkit.launchers import operator_command
from harness import (
    API_VERSION,
    INSTANCE,
    OTHER_PASSWORD,
    OTHER_USERNAME,
    PASSWORD,
    RIVAL_INSTANCE,
    SECOND_INSTANCE,
    USERNAME,
    Cluster,
    free_port,
    list_bodies,
    sandbox_process,
    temporary_namespace,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from zomro_backup_operator.resources import KIND
from zomro_backup_operator.sandbox.control import SandboxProcess
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULE_EDIT

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "zomro-backup-operator"
CRDS = REPO / "crds"
KINDS = ("backupschedules.zomro.com", "backups.zomro.com", "backupretentions.zomro.com")
"""Every kind the operator reconciles (crds/)."""
HEALTH_LUA = REPO / "argocd/resource_customizations/zomro.com/BackupSchedule/health.lua"
DEFAULT_SECRET = "zomro-default"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

OTHER_KINDS = f"""
apiVersion: zomro.com/v1alpha1
kind: Backup
metadata: {{name: pkg-backup}}
spec: {{instanceId: "{INSTANCE}", name: pkg backup, deletionPolicy: Delete,
        credentialsSecretRef: {{name: zomro}}}}
---
apiVersion: zomro.com/v1alpha1
kind: BackupRetention
metadata: {{name: pkg-retention}}
spec: {{instanceId: "{INSTANCE}", keep: 6, credentialsSecretRef: {{name: zomro}}}}
"""


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    with sandbox_process(tmp_path_factory.mktemp("rbac-sandbox")) as process:
        yield process


@pytest.fixture
def home_namespace(k8s_api: Any) -> Iterator[str]:
    """The release namespace: ServiceAccount and default credentials, not watched itself."""
    with temporary_namespace(k8s_api, "home") as name:
        yield name


def _apply_crds(kubectl: Kubectl) -> None:
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRDS))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", *(f"crd/{k}" for k in KINDS))


@pytest.fixture
def foreign_namespace(k8s_api: Any, crd: None) -> Iterator[Cluster]:
    """Another namespace's BackupSchedules, unrelated to the test and of every awkward kind (a
    rival account, a missing Secret, wrong credentials, an instance not owned, a spec the
    operator must refuse), as a shared cluster or a demo left running would hold: an operator
    that watches all namespaces reconciles them too, and the test must not depend on them."""
    with temporary_namespace(k8s_api, "foreign") as name:
        foreign = Cluster(k8s_api, name)
        foreign.apply_secret("zomro", username=OTHER_USERNAME, password=OTHER_PASSWORD)
        foreign.apply_secret("wrong", username=USERNAME, password="not-the-password")
        foreign.create("rival", instance=RIVAL_INSTANCE, schedule_name="foreign-rival")
        foreign.create("no-secret", secret="missing", schedule_name="foreign-no-secret")
        foreign.create("wrong-password", secret="wrong", schedule_name="foreign-wrong")
        foreign.create("not-owned", instance=SECOND_INSTANCE, schedule_name="foreign-not-owned")
        foreign.apply_secret("ops", username=USERNAME, password=PASSWORD)
        foreign.create("same-instance", secret="ops", schedule_name="foreign-same-instance")
        for index in range(5):
            foreign.create(f"many-{index}", instance=RIVAL_INSTANCE, schedule_name=f"pkg-{index}")
        try:
            yield foreign
        finally:
            for body_name in list_bodies(foreign):
                foreign.clear_finalizers(body_name)


def _install_identity(
    helm_bin: Path, kubectl: Kubectl, home: str, watched: list[str]
) -> tuple[str, str]:
    """Apply only the chart's ServiceAccount and RBAC; return (manifests, ServiceAccount name)."""
    release = f"zbo-{uuid.uuid4().hex[:6]}"
    args = [
        str(helm_bin),
        "template",
        release,
        str(CHART),
        "-n",
        home,
        "--set",
        f"credentials.existingSecret={DEFAULT_SECRET}",
        "--show-only",
        "templates/serviceaccount.yaml",
        "--show-only",
        "templates/rbac.yaml",
    ]
    if watched:
        args += ["--set", "watch.namespaces={" + ",".join(watched) + "}"]
    rendered = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    kubectl("apply", "-f", "-", input=rendered)
    accounts = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] == "ServiceAccount"]
    return rendered, accounts[0]["metadata"]["name"]


def _token_kubeconfig(kubectl: Kubectl, admin: Path, home: str, account: str, dest: Path) -> Path:
    token = kubectl("create", "token", account, "-n", home, "--duration=3600s").stdout.strip()
    config = yaml.safe_load(admin.read_text())
    context = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    cluster = next(c for c in config["clusters"] if c["name"] == context["context"]["cluster"])
    dest.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [cluster],
                "users": [{"name": account, "user": {"token": token}}],
                "contexts": [
                    {
                        "name": account,
                        "context": {"cluster": cluster["name"], "user": account},
                    }
                ],
                "current-context": account,
            }
        )
    )
    return dest


def _health(obj: dict[str, Any]) -> str:
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    return str(lua.execute(HEALTH_LUA.read_text())["status"])


def _metrics(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _value(
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return sum(
        value
        for (sample, sample_labels), value in samples.items()
        if sample == name and set(labels.items()) <= set(sample_labels)
    )


def _ours(sandbox: SandboxProcess) -> dict[str, dict[str, Any]]:
    """This test's schedules at the sandbox, by name. Watching all namespaces, the operator also
    reconciles whatever else the cluster holds, so assertions look at our names only."""
    return {
        str(s["name"]): s
        for s in sandbox.control.schedules(INSTANCE)
        if s["name"] in ("pkg-own", "pkg-defaulted")
    }


def _manifest(name: str, days: list[str], time: str, secret: str | None) -> str:
    spec: dict[str, Any] = {
        "instanceId": INSTANCE,
        "scheduleName": f"pkg-{name}",
        "days": days,
        "time": time,
    }
    if secret:
        spec["credentialsSecretRef"] = {"name": secret}
    return yaml.safe_dump(
        {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name},
            "spec": spec,
        }
    )


@pytest.mark.parametrize("scope", ["all-namespaces", "listed-namespaces"])
def test_operator_runs_a_full_lifecycle_with_only_the_charts_rbac(
    scope: str,
    control_plane: Any,
    kubectl: Kubectl,
    k8s_api: Any,
    namespace: str,
    home_namespace: str,
    sandbox: SandboxProcess,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    helm_bin = Path(control_plane.bin_dir) / "helm"
    if not helm_bin.exists():
        pytest.fail(f"helm is not built: {helm_bin} is missing (hack/control-plane build)")
    _apply_crds(kubectl)
    sandbox.control.reset()
    watched = [namespace] if scope == "listed-namespaces" else []
    if not watched:
        # Other namespaces' resources are there, as on any shared cluster: not our business.
        request.getfixturevalue("foreign_namespace")
    cluster = Cluster(k8s_api, namespace)
    cluster.apply_secret("zomro", username=USERNAME, password=PASSWORD)
    Cluster(k8s_api, home_namespace).apply_secret(
        DEFAULT_SECRET, username=USERNAME, password=PASSWORD
    )
    rbac, account = _install_identity(helm_bin, kubectl, home_namespace, watched)
    sa_config = _token_kubeconfig(
        kubectl, Path(control_plane.kubeconfig), home_namespace, account, tmp_path / "sa.kubeconfig"
    )
    metrics_port, liveness_port = free_port(), free_port()
    scope_args = ["-n", namespace] if watched else ["-A"]
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        operator = subprocess.Popen(
            operator_command(
                *scope_args,
                f"--liveness=http://127.0.0.1:{liveness_port}/healthz",
                standalone=False,
            ),
            env={
                "PATH": "/usr/bin:/bin",
                "HOME": str(tmp_path),
                "KUBECONFIG": str(sa_config),
                # Leader election as in the chart's Pod: the Lease is named after the release
                # (so is the ServiceAccount) and lives in the release namespace.
                "ZOMRO_LEASE_NAMESPACE": home_namespace,
                "ZOMRO_LEASE_NAME": account,
                "ZOMRO_API_URL": sandbox.url,
                "ZOMRO_CREDENTIALS_SECRET": f"{home_namespace}/{DEFAULT_SECRET}",
                "ZOMRO_METRICS_PORT": str(metrics_port),
                "ZOMRO_RESYNC_SECONDS": "5",
                "ZOMRO_MAX_REQUESTS_PER_SECOND": "50",
                "ZOMRO_LOG_LEVEL": "DEBUG",
            },
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        # Create: one with its own Secret, one on the default credentials (another namespace).
        weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
        own = _manifest("own", weekdays, "02:01", "zomro")
        defaulted = _manifest("defaulted", ["Sunday"], "03:30", None)
        kubectl("apply", "-n", namespace, "-f", "-", input=own)
        kubectl("apply", "-n", namespace, "-f", "-", input=defaulted)
        first = cluster.wait_ready("own", timeout=90)
        cluster.wait_ready("defaulted", timeout=90)
        if not watched:  # the other namespace's resources were reconciled too, beside ours
            wait_for(
                "the other namespace's schedules at Zomro",
                lambda: (
                    {"foreign-rival", "foreign-same-instance"}
                    <= {
                        str(s["name"])
                        for i in (RIVAL_INSTANCE, INSTANCE)
                        for s in sandbox.control.schedules(i)
                    }
                ),
                timeout=60,
            )
        remote = _ours(sandbox)
        assert set(remote) == {"pkg-own", "pkg-defaulted"}
        assert remote["pkg-own"]["id"] == first["status"]["scheduleId"]
        assert (remote["pkg-own"]["days"], remote["pkg-own"]["time"]) == ([1, 2, 3, 4, 5], "02:01")
        assert _health(first) == "Healthy"
        assert cluster.event_reasons("own"), "the operator could post events"
        with urllib.request.urlopen(
            f"http://127.0.0.1:{liveness_port}/healthz", timeout=5
        ) as response:
            assert response.status == 200
        with urllib.request.urlopen(
            f"http://127.0.0.1:{liveness_port}/readyz", timeout=5
        ) as response:
            assert (response.status, json.loads(response.read())["role"]) == (200, "leader")

        # GitOps: the reconciled resource shows no difference from what was applied.
        diff = kubectl("diff", "-n", namespace, "-f", "-", input=own, check=False)
        assert diff.returncode == 0, diff.stdout + diff.stderr
        assert diff.stdout == ""
        annotations = first["metadata"].get("annotations") or {}
        assert not [a for a in annotations if a.startswith("kopf.zalando.org")]

        # Change.
        changed = _manifest("own", ["Saturday"], "04:15", "zomro")
        kubectl("apply", "-n", namespace, "-f", "-", input=changed)
        second = cluster.wait_ready("own", timeout=90)
        assert second["metadata"]["generation"] == first["metadata"]["generation"] + 1
        remote = _ours(sandbox)
        assert remote["pkg-own"]["id"] == first["status"]["scheduleId"]
        assert (remote["pkg-own"]["days"], remote["pkg-own"]["time"]) == ([6], "04:15")
        stale = copy.deepcopy(second)
        stale["metadata"]["generation"] += 1
        assert (_health(second), _health(stale)) == ("Healthy", "Progressing")

        # Drift: the schedule removed in Zomro's panel comes back within the resync period.
        sandbox.control.remove_schedule(remote["pkg-own"]["id"])
        restored = wait_for(
            "the removed schedule to be restored",
            lambda: [s for name, s in _ours(sandbox).items() if name == "pkg-own"],
            timeout=60,
        )
        assert (restored[0]["days"], restored[0]["time"]) == ([6], "04:15")
        cluster.wait_ready("own", timeout=60)

        samples = _metrics(metrics_port)
        assert _value(samples, "zomro_operator_drift_corrections_total", kind="removed") >= 1
        assert _value(samples, "zomro_operator_reconciles_total", result="created") >= 2
        assert _value(samples, "zomro_operator_reconciles_total", result="updated") >= 1
        assert _value(samples, "zomro_operator_zomro_requests_total", outcome="ok") > 0
        assert (
            _value(
                samples,
                "zomro_operator_zomro_request_duration_seconds_count",
                func=FUNC_SCHEDULE_EDIT,
            )
            >= 3
        )
        # Watching all namespaces may also count what other tests left behind.
        ready_gauge = _value(samples, "zomro_operator_schedules", ready="true")
        assert ready_gauge == 2 if watched else ready_gauge >= 2

        # The other kinds, as the same identity: a Backup taken and deleted with its image, and
        # a retention set and left in place.
        kubectl("apply", "-n", namespace, "-f", "-", input=OTHER_KINDS)

        def field(kind: str, name: str, path: str) -> str:
            got = kubectl("get", "-n", namespace, kind, name, "-o", f"jsonpath={path}")
            return got.stdout

        wait_for(
            "the Backup Completed",
            lambda: field("backup", "pkg-backup", "{.status.phase}") == "Completed",
            timeout=90,
        )
        wait_for(
            "the BackupRetention Ready",
            lambda: (
                field(
                    "backupretention",
                    "pkg-retention",
                    '{.status.conditions[?(@.type=="Ready")].status}',
                )
                == "True"
            ),
            timeout=90,
        )
        assert sandbox.control.state()["instances"][INSTANCE]["backup_rotation"] == 6
        kubectl("delete", "-n", namespace, "backup/pkg-backup", "backupretention/pkg-retention")
        assert not [b for b in sandbox.control.backups(INSTANCE) if b["backup_type"] == "manual"]

        # Delete.
        kubectl("delete", "-n", namespace, "backupschedule", "own", "defaulted", "--wait=false")
        cluster.wait_gone("own", timeout=90)
        cluster.wait_gone("defaulted", timeout=90)
        assert _ours(sandbox) == {}
        wait_for(
            "deletions counted",
            lambda: (
                _value(_metrics(metrics_port), "zomro_operator_reconciles_total", result="deleted")
                >= 2
            ),
            timeout=30,
        )
    finally:
        # Shown by pytest only when the test fails.
        print(log_path.read_text(errors="replace")[-8000:])
        operator.terminate()
        try:
            operator.wait(timeout=30)
        except subprocess.TimeoutExpired:
            operator.kill()
            operator.wait(timeout=30)
        for name in ("own", "defaulted"):
            if cluster.get(name) is not None:
                cluster.clear_finalizers(name)
                cluster.delete(name)

    # A namespace being deleted refuses new Events with 403 Forbidden (NamespaceTerminating):
    # another test's namespace going away, not a permission this identity lacks.
    output = "\n".join(
        line
        for line in log_path.read_text(errors="replace").splitlines()
        if "because it is being terminated" not in line
    )
    for symptom in ("Forbidden", "forbidden", "Not enough permissions", " 403"):
        assert symptom not in output, f"{symptom!r} in the operator log:\n{output[-4000:]}"

    # What this identity may not do.
    def can(*args: str) -> bool:
        result = kubectl("--kubeconfig", str(sa_config), "auth", "can-i", *args, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
        return result.stdout.strip() == "yes"

    ns = ["-n", namespace]
    assert can("get", "secrets", *ns)
    for verb in ("list", "watch", "create", "update", "patch", "delete"):
        assert not can(verb, "secrets", *ns), f"{verb} secrets"
    for verb in ("get", "list", "create", "update", "patch", "delete"):
        assert not can(verb, "pods", *ns), f"{verb} pods"
    for resource in (
        "configmaps",
        "deployments.apps",
        "serviceaccounts",
        "services",
        "roles.rbac.authorization.k8s.io",
    ):
        assert not can("get", resource, *ns), f"get {resource}"
    for kind in KINDS:
        assert not can("create", kind, *ns), f"create {kind}"
        assert not can("delete", kind, *ns), f"delete {kind}"
        assert can("patch", kind, *ns), f"patch {kind}"
        assert can("patch", kind, "--subresource=status", *ns), f"patch {kind}/status"
        # Verbs kopf never uses are not granted, yet the lifecycle above ran.
        assert not can("update", kind, *ns), f"update {kind}"
        assert not can("update", kind, "--subresource=status", *ns), f"update {kind}/status"
    assert can("create", "events", *ns)
    assert not can("patch", "events", *ns)
    assert not can("create", "events.events.k8s.io", *ns)
    assert not can("delete", "customresourcedefinitions.apiextensions.k8s.io")
    assert not can("*", "*", *ns)
    home = ["-n", home_namespace]
    assert can("get", f"secret/{DEFAULT_SECRET}", *home)
    for verb in ("get", "update"):
        assert can(verb, f"leases.coordination.k8s.io/{account}", *home), f"{verb} its Lease"
        assert not can(verb, "leases.coordination.k8s.io/other", *home), f"{verb} other Leases"
    assert not can("delete", f"leases.coordination.k8s.io/{account}", *home)
    assert not can("create", "leases.coordination.k8s.io", *ns)
    if watched:
        assert not can("get", "secret/other", *home)
        for kind in KINDS:
            assert not can("get", kind, *home), f"get {kind} outside the watched namespaces"
        assert can("list", "namespaces")
    else:
        assert not can("list", "namespaces")

    kubectl("delete", "-f", "-", "--wait=false", input=rbac)


@pytest.mark.parametrize("source", ["chart", "deploy"])
def test_namespace_users_may_write_every_kind_but_never_its_status(
    source: str, helm: Kubectl, kubectl: Kubectl, namespace: str
) -> None:
    """The built-in edit, admin and view roles gain BackupSchedules, Backups and BackupRetentions
    through aggregation, but never their status, whose scheduleId / backupId names the Zomro
    schedule or image the operator acts on."""
    _apply_crds(kubectl)
    if source == "chart":
        release = f"zbo-{uuid.uuid4().hex[:6]}"
        roles = helm(
            "template", release, str(CHART), "--show-only", "templates/rbac-tenants.yaml"
        ).stdout
    else:
        roles = (REPO / "deploy" / "rbac-tenants.yaml").read_text()
    editor, admin, viewer = (f"{role}-{uuid.uuid4().hex[:6]}" for role in ("ed", "ad", "vi"))
    bindings = "\n---\n".join(
        yaml.safe_dump(
            {
                "apiVersion": "rbac.authorization.k8s.io/v1",
                "kind": "RoleBinding",
                "metadata": {"name": f"tenant-{role}", "namespace": namespace},
                "roleRef": {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "ClusterRole",
                    "name": role,
                },
                "subjects": [
                    {"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}
                ],
            }
        )
        for role, user in (("edit", editor), ("admin", admin), ("view", viewer))
    )
    kubectl("apply", "-f", "-", input=roles)
    kubectl("apply", "-f", "-", input=bindings)

    def can(user: str, *args: str) -> bool:
        result = kubectl("auth", "can-i", f"--as={user}", "-n", namespace, *args, check=False)
        assert result.stdout.strip() in ("yes", "no"), result.stdout + result.stderr
        return result.stdout.strip() == "yes"

    try:
        bs = "backupschedules.zomro.com"
        # The aggregation controller folds the rules into edit/admin/view a moment later.
        wait_for(
            "the tenant rules to be aggregated",
            lambda: all(
                (can(editor, "create", bs), can(admin, "create", bs), can(viewer, "get", bs))
            ),
            timeout=60,
        )
        for kind in KINDS:
            for user in (editor, admin):
                for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
                    assert can(user, verb, kind), f"{user} {verb} {kind}"
                for verb in ("get", "update", "patch"):
                    assert not can(user, verb, kind, "--subresource=status"), f"{user} {verb}"
            for verb in ("get", "list", "watch"):
                assert can(viewer, verb, kind), f"{verb} {kind}"
            for verb in ("create", "update", "patch", "delete"):
                assert not can(viewer, verb, kind), f"{verb} {kind}"
            assert not can(viewer, "patch", kind, "--subresource=status")
    finally:
        kubectl("delete", "-f", "-", "--wait=false", input=bindings, check=False)
        kubectl("delete", "-f", "-", "--wait=false", input=roles, check=False)
