"""The chart and the kustomize base, rendered by the real helm/kubectl and judged by the real API
server (server-side dry runs, Pod Security admission), plus `helm lint --strict`."""

from __future__ import annotations

import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from harness import temporary_namespace, unavailable

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "zomro-backup-operator"
DEPLOY = REPO / "deploy"
CRD_FILES = sorted((REPO / "crds").glob("*.yaml"))
"""The single source of every CRD."""


def _crds_by_name() -> dict[str, dict[str, Any]]:
    docs = (yaml.safe_load(path.read_text()) for path in CRD_FILES)
    return {doc["metadata"]["name"]: doc for doc in docs}


SERVICE_MONITOR_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names:
    kind: ServiceMonitor
    plural: servicemonitors
    singular: servicemonitor
    listKind: ServiceMonitorList
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
"""

Helm = Callable[..., subprocess.CompletedProcess[str]]
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def _docs(text: str) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(text) if d]


def _values_file(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / f"values-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def _non_default_values(watched: list[str]) -> dict[str, Any]:
    return {
        "image": {"repository": "registry.example.com/zbo", "digest": "sha256:" + "ab" * 32},
        "fullnameOverride": "zbo",
        "watch": {"namespaces": watched},
        "credentials": {"create": True, "username": "ops", "password": "pw-not-logged-1"},
        "zomro": {
            "apiUrl": "http://zomro.internal:8808/",
            "allowInsecureHttp": True,
            "resyncSeconds": 60,
        },
        "logging": {"format": "text", "level": "DEBUG"},
        "metrics": {"port": 9100, "serviceMonitor": {"enabled": True, "labels": {"team": "ops"}}},
        "serviceAccount": {"name": "zbo-runner", "annotations": {"example.com/owner": "ops"}},
        "rbac": {"aggregateToTenantRoles": False},
        "commonAnnotations": {"argocd.argoproj.io/sync-wave": "-1"},
        "podLabels": {"team": "ops"},
        "extraEnv": [{"name": "TZ", "value": "UTC"}],
        "replicaCount": 3,
        "leaderElection": {
            "leaseDurationSeconds": 30,
            "renewDeadlineSeconds": 20,
            "retryPeriodSeconds": 4,
        },
        "podDisruptionBudget": {"maxUnavailable": 2},
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": "pool", "operator": "In", "values": ["ops"]}]}
                    ]
                }
            }
        },
    }


@pytest.fixture
def second_namespace(k8s_api: Any) -> Iterator[str]:
    with temporary_namespace(k8s_api, "second") as name:
        yield name


def _server_dry_run(kubectl: Kubectl, manifests: str) -> list[dict[str, Any]]:
    result = kubectl(
        "apply",
        "--server-side",
        "--force-conflicts",
        "--field-manager=zomro-packaging-test",
        "--dry-run=server",
        "-o",
        "json",
        "-f",
        "-",
        input=manifests,
    )
    out = json.loads(result.stdout)
    items: list[dict[str, Any]] = out["items"] if out.get("kind") == "List" else [out]
    return items


def _restricted_pod_dry_run(kubectl: Kubectl, namespace: str, deployment: dict[str, Any]) -> None:
    """Admit the Deployment's pod under the `restricted` Pod Security Standard (enforced)."""
    kubectl(
        "label",
        "--overwrite",
        "namespace",
        namespace,
        "pod-security.kubernetes.io/enforce=restricted",
    )
    # The ServiceAccount is not applied by a dry run; Pod Security does not look at it anyway.
    spec = {k: v for k, v in deployment["spec"]["template"]["spec"].items()}
    spec.pop("serviceAccountName", None)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "psa-probe", "namespace": namespace},
        "spec": spec,
    }
    result = kubectl(
        "create", "--dry-run=server", "-o", "name", "-f", "-", input=json.dumps(pod), check=False
    )
    assert result.returncode == 0, result.stderr
    assert "Warning" not in result.stderr, result.stderr


# ---- helm --------------------------------------------------------------------------------------


def test_chart_passes_helm_lint_strict_with_default_values(helm: Helm) -> None:
    result = helm("lint", "--strict", str(CHART))
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_chart_passes_helm_lint_strict_with_non_default_values(helm: Helm, tmp_path: Path) -> None:
    values = _values_file(tmp_path, _non_default_values(["apps", "staging"]))
    result = helm("lint", "--strict", str(CHART), "-f", values)
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout


def test_default_chart_is_accepted_by_the_api_server_and_its_pod_is_restricted(
    helm: Helm, kubectl: Kubectl, namespace: str
) -> None:
    rendered = helm("template", "zomro-backup-operator", str(CHART), "-n", namespace).stdout
    docs = _docs(rendered)
    kinds = sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs)
    assert kinds == [
        "ClusterRole/zomro-backup-operator",
        "ClusterRole/zomro-backup-operator-edit",
        "ClusterRole/zomro-backup-operator-view",
        "ClusterRoleBinding/zomro-backup-operator",
        "Deployment/zomro-backup-operator",
        "PodDisruptionBudget/zomro-backup-operator",
        "Role/zomro-backup-operator-leader-election",
        "RoleBinding/zomro-backup-operator-leader-election",
        "Service/zomro-backup-operator-metrics",
        "ServiceAccount/zomro-backup-operator",
    ]
    accepted = _server_dry_run(kubectl, rendered)
    assert len(accepted) == len(docs)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    pod = deployment["spec"]["template"]["spec"]
    assert "preferredDuringSchedulingIgnoredDuringExecution" in pod["affinity"]["podAntiAffinity"]
    container = pod["containers"][0]
    assert container["args"] == ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "healthz"}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert "ZOMRO_CREDENTIALS_SECRET" not in env
    assert (env["ZOMRO_LEASE_NAME"], env["ZOMRO_LEASE_DURATION_SECONDS"]) == (
        "zomro-backup-operator",
        "15",
    )
    (role,) = [d for d in docs if d["kind"] == "Role"]
    assert role["metadata"]["namespace"] == namespace
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "resourceNames": ["zomro-backup-operator"],
            "verbs": ["get", "update"],
        },
    ]
    _restricted_pod_dry_run(kubectl, namespace, deployment)


def test_non_default_chart_renders_every_option_and_is_accepted_by_the_api_server(
    helm: Helm, kubectl: Kubectl, namespace: str, second_namespace: str, tmp_path: Path
) -> None:
    watched = [second_namespace, f"{second_namespace}-x"]
    kubectl("create", "namespace", watched[1])
    try:
        kubectl("apply", "-f", "-", input=SERVICE_MONITOR_CRD)
        kubectl(
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/servicemonitors.monitoring.coreos.com",
        )
        values = _values_file(tmp_path, _non_default_values(watched))
        rendered = helm(
            "template", "rel", str(CHART), "-n", namespace, "-f", values, "--include-crds"
        ).stdout
        docs = _docs(rendered)
        by_kind: dict[str, list[dict[str, Any]]] = {}
        for doc in docs:
            by_kind.setdefault(doc["kind"], []).append(doc)

        # The CRDs shipped in the chart are crds/ itself.
        shipped = {crd["metadata"]["name"]: crd for crd in by_kind["CustomResourceDefinition"]}
        assert shipped == _crds_by_name()
        # A Role per watched namespace, the credentials Role outside them, a small ClusterRole
        # (and no tenant roles: aggregateToTenantRoles is off).
        roles = {(r["metadata"]["namespace"], r["metadata"]["name"]) for r in by_kind["Role"]}
        assert roles == {
            (watched[0], "zbo"),
            (watched[1], "zbo"),
            (namespace, "zbo-credentials"),
            (namespace, "zbo-leader-election"),
        }
        (cluster_role,) = by_kind["ClusterRole"]
        assert {r for rule in cluster_role["rules"] for r in rule["resources"]} == {
            "customresourcedefinitions",
            "namespaces",
        }
        (credentials_role,) = [r for r in by_kind["Role"] if r["metadata"]["name"].endswith("ls")]
        assert credentials_role["rules"] == [
            {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": ["zbo-credentials"],
                "verbs": ["get"],
            }
        ]
        (deployment,) = by_kind["Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert container["image"] == "registry.example.com/zbo@sha256:" + "ab" * 32
        assert container["args"] == [
            f"--namespace={watched[0]}",
            f"--namespace={watched[1]}",
            "--liveness=http://0.0.0.0:8080/healthz",
        ]
        assert deployment["spec"]["replicas"] == 3
        assert pod["affinity"] == _non_default_values(watched)["affinity"]
        (pdb,) = by_kind["PodDisruptionBudget"]
        assert pdb["spec"]["maxUnavailable"] == 2
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["ZOMRO_CREDENTIALS_SECRET"] == f"{namespace}/zbo-credentials"
        assert env["ZOMRO_LOG_FORMAT"] == "text"
        assert env["ZOMRO_LOG_LEVEL"] == "DEBUG"
        assert env["ZOMRO_RESYNC_SECONDS"] == "60"
        assert env["ZOMRO_ALLOW_INSECURE_HTTP"] == "true"
        assert env["ZOMRO_METRICS_PORT"] == "9100"
        assert env["TZ"] == "UTC"
        assert env["ZOMRO_LEASE_NAME"] == "zbo"
        assert [env[f"ZOMRO_LEASE_{n}_SECONDS"] for n in ("DURATION", "RENEW_DEADLINE")] == [
            "30",
            "20",
        ]
        assert env["ZOMRO_LEASE_RETRY_PERIOD_SECONDS"] == "4"
        assert pod["serviceAccountName"] == "zbo-runner"
        (secret,) = by_kind["Secret"]
        assert set(secret["data"]) == {"username", "password"}
        (monitor,) = by_kind["ServiceMonitor"]
        assert monitor["metadata"]["labels"]["team"] == "ops"
        for doc in docs:
            if doc["kind"] != "CustomResourceDefinition":
                annotations = doc["metadata"].get("annotations", {})
                assert annotations.get("argocd.argoproj.io/sync-wave") == "-1", doc["kind"]

        accepted = _server_dry_run(kubectl, rendered)
        assert len(accepted) == len(docs)
        _restricted_pod_dry_run(kubectl, namespace, deployment)
    finally:
        kubectl("delete", "namespace", watched[1], "--wait=false")
        kubectl("delete", "crd", "servicemonitors.monitoring.coreos.com", "--wait=false")


def test_without_leader_election_the_chart_runs_one_standalone_replica_recreated(
    helm: Helm, namespace: str
) -> None:
    off = ["--set", "leaderElection.enabled=false"]
    refused = helm("template", "z", str(CHART), "-n", namespace, *off, check=False)
    assert refused.returncode != 0
    assert "replicaCount above 1 needs leaderElection.enabled" in refused.stderr

    rendered = helm(
        "template", "z", str(CHART), "-n", namespace, *off, "--set", "replicaCount=1"
    ).stdout

    docs = _docs(rendered)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][0] == "--standalone"
    assert not [e for e in container["env"] if e["name"].startswith("ZOMRO_LEASE")]
    assert not [d for d in docs if d["kind"] == "Role"]


def test_disabling_metrics_turns_off_the_port_service_and_monitor(
    helm: Helm, namespace: str
) -> None:
    rendered = helm(
        "template",
        "zomro-backup-operator",
        str(CHART),
        "-n",
        namespace,
        "--set",
        "metrics.enabled=false",
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ).stdout
    docs = _docs(rendered)
    assert {d["kind"] for d in docs} == {
        "ClusterRole",
        "ClusterRoleBinding",
        "Deployment",
        "PodDisruptionBudget",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    }
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "ZOMRO_METRICS_PORT", "value": "0"} in container["env"]
    assert [p["name"] for p in container["ports"]] == ["healthz"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "imagePullPolicy=Always"], "imagePullPolicy"),
        (["--set", "watch.namespaces={Bad_Name}"], "watch"),
        (["--set", "logging.format=yaml"], "format"),
        (["--set", "zomro.resyncSeconds=0"], "resyncSeconds"),
        (["--set", "credentials.create=true", "--set", "credentials.username=ops"], "credentials"),
        (
            [
                "--set",
                "credentials.create=true",
                "--set",
                "credentials.token=abc",
                "--set",
                "credentials.existingSecret=mine",
            ],
            "credentials",
        ),
    ],
    ids=["unknown-key", "bad-namespace", "bad-log-format", "zero-resync", "half-creds", "both"],
)
def test_the_chart_refuses_bad_values_naming_them(
    helm: Helm, args: list[str], message: str
) -> None:
    result = helm("template", "x", str(CHART), *args, check=False)
    assert result.returncode != 0
    assert message in result.stderr


def test_example_argocd_application_values_render_and_lint(helm: Helm, tmp_path: Path) -> None:
    application = yaml.safe_load((REPO / "argocd" / "application.yaml").read_text())
    source = application["spec"]["source"]
    assert source["path"] == "helm/zomro-backup-operator"
    values = _values_file(tmp_path, source["helm"]["valuesObject"])
    helm("lint", "--strict", str(CHART), "-f", values)
    rendered = _docs(helm("template", "x", str(CHART), "-f", values).stdout)
    for doc in rendered:
        assert doc["metadata"]["annotations"]["argocd.argoproj.io/sync-options"] == "PruneLast=true"


# ---- kustomize ---------------------------------------------------------------------------------


@pytest.fixture
def zomro_system(kubectl: Kubectl) -> Iterator[str]:
    """deploy/ targets zomro-system: create it for the dry run unless it is already there."""
    existing = kubectl("get", "namespace", "zomro-system", check=False).returncode == 0
    if not existing:
        kubectl("create", "namespace", "zomro-system")
    try:
        yield "zomro-system"
    finally:
        if not existing:
            kubectl("delete", "namespace", "zomro-system", "--wait=false")


def test_kustomize_base_is_accepted_by_the_api_server_and_its_pod_is_restricted(
    kubectl: Kubectl, zomro_system: str
) -> None:
    rendered = kubectl("kustomize", str(DEPLOY)).stdout
    docs = _docs(rendered)
    assert sorted(f"{d['kind']}/{d['metadata']['name']}" for d in docs) == [
        "ClusterRole/zomro-backup-operator",
        "ClusterRole/zomro-backup-operator-edit",
        "ClusterRole/zomro-backup-operator-view",
        "ClusterRoleBinding/zomro-backup-operator",
        "CustomResourceDefinition/backupretentions.zomro.com",
        "CustomResourceDefinition/backups.zomro.com",
        "CustomResourceDefinition/backupschedules.zomro.com",
        "Deployment/zomro-backup-operator",
        "Namespace/zomro-system",
        "PodDisruptionBudget/zomro-backup-operator",
        "Role/zomro-backup-operator-leader-election",
        "RoleBinding/zomro-backup-operator-leader-election",
        "Service/zomro-backup-operator-metrics",
        "ServiceAccount/zomro-backup-operator",
    ]
    crds = {
        d["metadata"]["name"]: d["spec"] for d in docs if d["kind"] == "CustomResourceDefinition"
    }
    assert crds == {name: crd["spec"] for name, crd in _crds_by_name().items()}
    accepted = _server_dry_run(kubectl, rendered)
    assert len(accepted) == len(docs)
    (deployment,) = [d for d in docs if d["kind"] == "Deployment"]
    assert deployment["metadata"]["namespace"] == zomro_system
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "ghcr.io/zomro-oss/zomro-backup-operator:0.1.0"
    )
    _restricted_pod_dry_run(kubectl, zomro_system, deployment)


def test_helm_install_prints_the_notes_and_uninstall_removes_the_release(
    helm: Helm, kubectl: Kubectl, namespace: str
) -> None:
    release = f"zbo-{uuid.uuid4().hex[:6]}"
    installed = helm(
        "install",
        release,
        str(CHART),
        "-n",
        namespace,
        "--set",
        f"watch.namespaces={{{namespace}}}",
        "--set",
        "credentials.existingSecret=zomro-credentials",
    )
    try:
        notes = installed.stdout
        assert f"Watching: namespaces {namespace}." in notes
        assert f"Default credentials: Secret {namespace}/zomro-credentials" in notes
        assert f"names no Secret of its own, in namespaces {namespace}," in " ".join(notes.split())
        assert f"{release}-zomro-backup-operator-metrics.{namespace}.svc:9090/metrics" in notes
        kubectl("get", "-n", namespace, f"deployment/{release}-zomro-backup-operator")
        kubectl("get", "crd", *_crds_by_name())
    finally:
        helm("uninstall", release, "-n", namespace)
    gone = kubectl("get", "clusterrole", f"{release}-zomro-backup-operator", check=False)
    assert gone.returncode != 0


def test_helm_notes_warn_when_default_credentials_serve_every_namespace(
    helm: Helm, namespace: str
) -> None:
    notes = helm(
        "install",
        f"zbo-{uuid.uuid4().hex[:6]}",
        str(CHART),
        "-n",
        namespace,
        "--dry-run=client",
        "--set",
        "credentials.existingSecret=zomro-credentials",
    ).stdout
    text = " ".join(notes.split())
    assert "WARNING: every BackupSchedule that names no Secret of its own, in ANY namespace" in text
    assert "For production, list the namespaces" in text


# ---- the PrometheusRule, checked and exercised by the real promtool ---------------------------

PROMTOOL_TESTS = """
rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: zomro_operator_backup_overdue{namespace="team",name="nightly",instance="5203773"}
        values: 0 0 1x20
      - series: zomro_operator_backup_failed{namespace="team",name="nightly",instance="5203773"}
        values: 0x22
      - series: zomro_operator_backup_failed{namespace="team",name="weekly",instance="5203773"}
        values: 1x22
      - series: zomro_operator_schedules{ready="true"}
        values: 2x40
      - series: zomro_operator_reconciles_total{result="synced"}
        values: 0+1x10 10x30
    alert_rule_test:
      - eval_time: 4m
        alertname: ZomroBackupOverdue
        exp_alerts: []
      - eval_time: 8m
        alertname: ZomroBackupOverdue
        exp_alerts:
          - exp_labels: {severity: warning, namespace: team, name: nightly, instance: "5203773"}
      - eval_time: 8m
        alertname: ZomroBackupFailed
        exp_alerts:
          - exp_labels: {severity: warning, namespace: team, name: weekly, instance: "5203773"}
      - eval_time: 12m
        alertname: ZomroBackupOperatorNotReconciling
        exp_alerts: []
      - eval_time: 32m
        alertname: ZomroBackupOperatorNotReconciling
        exp_alerts:
          - exp_labels: {severity: warning}
      - eval_time: 32m
        alertname: ZomroBackupOperatorDown
        exp_alerts:
          - exp_labels: {severity: warning}
"""


@pytest.fixture(scope="session")
def promtool() -> Path:
    """promtool as `make promtool` builds it (part of `make test`); under CI its absence fails."""
    result = subprocess.run(
        [str(REPO / "hack" / "control-plane"), "info"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=True,
    )
    info = json.loads(result.stdout)
    if not info["promtool_built"]:
        unavailable("promtool", f"not built ({info['promtool']}); run `make promtool` once")
    return Path(info["promtool"])


def _prometheus_rule(helm: Helm, *args: str) -> list[dict[str, Any]]:
    rendered = helm("template", "zbo", str(CHART), "-n", "ops", *args).stdout
    return [d for d in _docs(rendered) if d["kind"] == "PrometheusRule"]


def _with_annotations(rule: dict[str, Any], tests: str) -> dict[str, Any]:
    """The promtool tests, each expected alert with its rule's annotations as Prometheus expands
    them for the alert's labels (promtool compares annotations too)."""
    annotations = {r["alert"]: r["annotations"] for r in rule["spec"]["groups"][0]["rules"]}
    spec: dict[str, Any] = yaml.safe_load(tests)
    for case in spec["tests"][0]["alert_rule_test"]:
        for alert in case["exp_alerts"]:
            expanded = {}
            for key, text in annotations[case["alertname"]].items():
                for label, value in alert["exp_labels"].items():
                    text = text.replace(f"{{{{ $labels.{label} }}}}", str(value))
                expanded[key] = text
            alert["exp_annotations"] = expanded
    return spec


def test_the_prometheus_rule_is_off_by_default(helm: Helm) -> None:
    assert _prometheus_rule(helm) == []


def test_the_prometheus_rule_passes_promtool_and_its_alerts_fire_as_documented(
    helm: Helm, promtool: Path, tmp_path: Path
) -> None:
    (rule,) = _prometheus_rule(
        helm,
        "--set",
        "metrics.prometheusRule.enabled=true",
        "--set",
        "metrics.prometheusRule.labels.release=kube-prometheus",
    )
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus"
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump(rule["spec"]))
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(_with_annotations(rule, PROMTOOL_TESTS)))

    checked = subprocess.run(
        [str(promtool), "check", "rules", "rules.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout
    tested = subprocess.run(
        [str(promtool), "test", "rules", "tests.yaml"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert tested.returncode == 0, tested.stdout + tested.stderr
