"""The chart's RBAC is enough and no more: the real operator runs as the chart's ServiceAccount
(a `kubectl create token` kubeconfig) through create, change and delete against the sandbox, with
its metrics scraped along the way; then `kubectl auth can-i` shows what that identity may not do.
Both watch scopes: all namespaces (ClusterRole) and a list of namespaces (Roles)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml
from harness import (
    INSTANCE,
    PASSWORD,
    SANDBOX_CONFIG,
    USERNAME,
    Cluster,
    free_port,
    temporary_namespace,
    wait_for,
)
from prometheus_client.parser import text_string_to_metric_families

from zomro_backup_operator.sandbox.control import SandboxProcess, start_sandbox_process

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "zomro-backup-operator"
CRD_FILE = REPO / "crds" / "backupschedules.zomro.com.yaml"
HEALTH_LUA = REPO / "argocd/resource_customizations/zomro.com/BackupSchedule/health.lua"
DEFAULT_SECRET = "zomro-default"

Kubectl = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    home = tmp_path_factory.mktemp("rbac-sandbox")
    config = home / "config.yaml"
    config.write_text(SANDBOX_CONFIG)
    with start_sandbox_process(config=config, log_path=home / "sandbox.log") as process:
        yield process


@pytest.fixture
def home_namespace(k8s_api: Any) -> Iterator[str]:
    """The release namespace: ServiceAccount and default credentials, not watched itself."""
    with temporary_namespace(k8s_api, "home") as name:
        yield name


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
            "apiVersion": "zomro.com/v1alpha1",
            "kind": "BackupSchedule",
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
) -> None:
    helm_bin = Path(control_plane.bin_dir) / "helm"
    if not helm_bin.exists():
        pytest.fail(f"helm is not built: {helm_bin} is missing (hack/control-plane build)")
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/backupschedules.zomro.com")
    sandbox.control.reset()
    cluster = Cluster(k8s_api, namespace)
    cluster.apply_secret("zomro", username=USERNAME, password=PASSWORD)
    Cluster(k8s_api, home_namespace).apply_secret(
        DEFAULT_SECRET, username=USERNAME, password=PASSWORD
    )
    watched = [namespace] if scope == "listed-namespaces" else []
    rbac, account = _install_identity(helm_bin, kubectl, home_namespace, watched)
    sa_config = _token_kubeconfig(
        kubectl, Path(control_plane.kubeconfig), home_namespace, account, tmp_path / "sa.kubeconfig"
    )
    metrics_port, liveness_port = free_port(), free_port()
    scope_args = ["-n", namespace] if watched else ["-A"]
    log_path = tmp_path / "operator.log"
    with log_path.open("wb") as log:
        operator = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "zomro_backup_operator",
                "run",
                *scope_args,
                f"--liveness=http://127.0.0.1:{liveness_port}/healthz",
            ],
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
                func="instances.fleio_bckps.schedule.edit",
            )
            >= 3
        )
        # Watching all namespaces may also count what other tests left behind.
        ready_gauge = _value(samples, "zomro_operator_schedules", ready="true")
        assert ready_gauge == 2 if watched else ready_gauge >= 2

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
                cluster.custom.patch_namespaced_custom_object(
                    "zomro.com",
                    "v1alpha1",
                    namespace,
                    "backupschedules",
                    name,
                    {"metadata": {"finalizers": []}},
                )
                cluster.delete(name)

    output = log_path.read_text(errors="replace")
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
    assert not can("create", "backupschedules.zomro.com", *ns)
    assert not can("delete", "backupschedules.zomro.com", *ns)
    assert can("patch", "backupschedules.zomro.com", *ns)
    assert can("patch", "backupschedules.zomro.com", "--subresource=status", *ns)
    assert can("create", "events", *ns)
    # Verbs kopf never uses are not granted, yet the lifecycle above ran.
    assert not can("update", "backupschedules.zomro.com", *ns)
    assert not can("update", "backupschedules.zomro.com", "--subresource=status", *ns)
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
        assert not can("get", "backupschedules.zomro.com", *home)
        assert can("list", "namespaces")
    else:
        assert not can("list", "namespaces")

    kubectl("delete", "-f", "-", "--wait=false", input=rbac)


@pytest.mark.parametrize("source", ["chart", "deploy"])
def test_namespace_users_may_write_backupschedules_but_never_their_status(
    source: str, helm: Kubectl, kubectl: Kubectl, namespace: str
) -> None:
    """The built-in edit, admin and view roles gain BackupSchedules through aggregation, but not
    backupschedules/status, whose scheduleId names the Zomro schedule the operator acts on."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
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
        for user in (editor, admin):
            for verb in ("get", "list", "watch", "create", "update", "patch", "delete"):
                assert can(user, verb, bs), f"{user} {verb}"
            for verb in ("get", "update", "patch"):
                assert not can(user, verb, bs, "--subresource=status"), f"{user} {verb} status"
        for verb in ("get", "list", "watch"):
            assert can(viewer, verb, bs), verb
        for verb in ("create", "update", "patch", "delete"):
            assert not can(viewer, verb, bs), verb
        assert not can(viewer, "patch", bs, "--subresource=status")
    finally:
        kubectl("delete", "-f", "-", "--wait=false", input=bindings, check=False)
        kubectl("delete", "-f", "-", "--wait=false", input=roles, check=False)
