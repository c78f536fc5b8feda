"""The operator as users run it: its image (built from the Dockerfile) in a Pod on the node,
installed by the Helm chart or the kustomize base, reconciling against the sandbox running as
a Pod of the same image."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ControlPlane, build_image
from harness import (
    INSTANCE,
    PASSWORD,
    SANDBOX_CONFIG,
    USERNAME,
    Cluster,
    create_many,
    list_bodies,
    mass_spec,
    wait_all_ready,
    wait_for,
)
from pods import Kubectl, cluster_ip, http_get_code, run_to_completion, start_sandbox_pod

from zomro_backup_operator.sandbox.control import SandboxControl

pytestmark = pytest.mark.timeout(900)

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "helm" / "zomro-backup-operator"
RELEASE = "zomro-backup-operator"
PUBLISHED_IMAGE = "ghcr.io/zomro-oss/zomro-backup-operator"
Helm = Kubectl


@pytest.fixture
def restricted(kubectl: Kubectl, namespace: str) -> str:
    """The test namespace, enforcing Pod Security `restricted` (as a careful user would)."""
    kubectl("label", "namespace", namespace, "pod-security.kubernetes.io/enforce=restricted")
    return namespace


@pytest.fixture
def sandbox_pod(
    kubectl: Kubectl, restricted: str, image: str
) -> Iterator[tuple[str, SandboxControl]]:
    # Ids of their own: a resource of these tests left behind (its namespace stuck terminating)
    # must not claim the id that the local sandbox gives another test's schedule.
    config = SANDBOX_CONFIG + "first_schedule_id: 900014\nfirst_backup_id: 903001\n"
    api_url, control_url = start_sandbox_pod(kubectl, restricted, image, config)
    with SandboxControl(control_url) as control:
        yield api_url, control


@pytest.fixture
def release(helm: Helm, restricted: str) -> Iterator[str]:
    """The Helm release under test, uninstalled afterwards even when the test failed (its
    ClusterRole and ClusterRoleBinding would otherwise block the next install)."""
    yield RELEASE
    helm("uninstall", RELEASE, "-n", restricted, "--wait", "--ignore-not-found", check=False)


def _helm_values(image: str, namespace: str, api_url: str) -> list[str]:
    name, _, tag = image.rpartition(":")
    sets = {
        "image.repository": name,
        "image.tag": tag,
        "image.pullPolicy": "Never",
        "watch.namespaces[0]": namespace,
        "credentials.create": "true",
        "credentials.username": USERNAME,
        "credentials.password": PASSWORD,
        "zomro.apiUrl": api_url,
        # The sandbox Pod serves plain HTTP on the node's Pod network, not loopback.
        "zomro.allowInsecureHttp": "true",
        "zomro.resyncSeconds": "5",
        "logging.level": "DEBUG",
        # The chart's initial delay (the operator needs seconds to start), then probes every
        # 5 s so the first success comes soon.
        "liveness.periodSeconds": "5",
    }
    return [arg for key, value in sets.items() for arg in ("--set", f"{key}={value}")]


def _helm_install(
    helm: Helm, kubectl: Kubectl, namespace: str, image: str, api_url: str, *extra: str
) -> str:
    """helm install of the chart with the built image, waited until its Deployment is Available
    (both replicas Ready); returns the release's Pod selector."""
    values = _helm_values(image, namespace, api_url)
    values += [arg for value in extra for arg in ("--set", value)]
    helm("install", RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout=180s", *values)
    kubectl("-n", namespace, "wait", "--for=condition=Available", f"deploy/{RELEASE}")
    return f"app.kubernetes.io/instance={RELEASE}"


REPLICAS = 2
"""The chart's and deploy/'s default replica count."""
LEASE = "zomro-backup-operator"
"""The leader-election Lease, in the operator's namespace (the release's fullname in the chart)."""


def _operator_pods(kubectl: Kubectl, namespace: str, selector: str) -> list[dict[str, Any]]:
    """The release's Pods that are not on their way out."""
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout)
    return [p for p in pods["items"] if not p["metadata"].get("deletionTimestamp")]


def _holder(kubectl: Kubectl, namespace: str) -> str | None:
    lease = kubectl("-n", namespace, "get", "lease", LEASE, "-o", "json", check=False)
    if lease.returncode != 0:
        return None
    holder = json.loads(lease.stdout).get("spec", {}).get("holderIdentity")
    return str(holder) if holder else None


def _operator_pod(kubectl: Kubectl, namespace: str, selector: str) -> dict[str, Any]:
    """The leading Pod: the one the Lease names (its POD_ID is the Pod's name)."""

    def leader() -> dict[str, Any] | None:
        holder = _holder(kubectl, namespace)
        pods = _operator_pods(kubectl, namespace, selector)
        return next((p for p in pods if p["metadata"]["name"] == holder), None)

    return wait_for("a leading operator Pod", leader, timeout=120)


def _role(kubectl: Kubectl, namespace: str, pod: str) -> str:
    """What the Pod's own /readyz says it is (leader or standby); fails unless it is Ready."""
    code = (
        "import urllib.request\n"
        "print(urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=5).read().decode())"
    )
    out = kubectl("-n", namespace, "exec", pod, "--", "python", "-c", code).stdout
    return str(json.loads(out)["role"])


def _liveness_successes(kubectl: Kubectl, namespace: str, pod: str) -> int:
    """The kubelet's own count of successful liveness probes of the pod (its /metrics/probes)."""
    raw = kubectl("get", "--raw", "/api/v1/nodes/zomro-node/proxy/metrics/probes").stdout
    total = 0
    for line in raw.splitlines():
        if (
            line.startswith("prober_probe_total{")
            and f'pod="{pod}"' in line
            and f'namespace="{namespace}"' in line
            and 'probe_type="Liveness"' in line
            and 'result="successful"' in line
        ):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def _assert_runs_like_users_run_it(
    kubectl: Kubectl, namespace: str, selector: str, metrics_service: str, image: str
) -> None:
    """Non-root, read-only root filesystem, the liveness probe passing (per the kubelet),
    and the metrics Service answering from another Pod."""
    pod = _operator_pod(kubectl, namespace, selector)
    name = pod["metadata"]["name"]
    (container,) = pod["spec"]["containers"]
    assert container["image"].endswith(image)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    probe = (
        "import os\n"
        "print('uid', os.getuid())\n"
        "try:\n"
        "    open('/probe', 'w')\n"
        "except OSError as exc:\n"
        "    print('write:', exc.strerror)\n"
    )
    out = kubectl("-n", namespace, "exec", name, "--", "python", "-c", probe).stdout
    assert "uid 65532" in out
    assert "write: Read-only file system" in out
    pods = _operator_pods(kubectl, namespace, selector)
    assert len(pods) == REPLICAS
    for each in pods:  # the standby too: its liveness answers before it runs any of kopf
        pod_name = str(each["metadata"]["name"])
        wait_for(
            f"the kubelet's liveness probe of {pod_name} to succeed",
            functools.partial(_liveness_successes, kubectl, namespace, pod_name),
            timeout=60,
            interval=1,
        )
    url = f"http://{cluster_ip(kubectl, namespace, metrics_service)}:9090/metrics"
    logs = run_to_completion(
        kubectl, namespace, "metrics-client", image, http_get_code(url, "zomro_operator_")
    )
    assert "zomro_operator_reconciles_total" in logs
    assert [each["status"]["containerStatuses"][0]["restartCount"] for each in pods] == [0, 0]


def _reconcile_and_delete(cluster: Cluster, control: SandboxControl, name: str) -> None:
    cluster.create(name, schedule_name=f"{name}-nightly", secret=None)
    body = cluster.wait_ready(name, timeout=120)
    rows = control.schedules(INSTANCE)
    assert [str(r["id"]) for r in rows] == [body["status"]["scheduleId"]]
    cluster.delete(name)
    cluster.wait_gone(name, timeout=120)
    assert control.schedules(INSTANCE) == []


def test_helm_install_upgrade_and_uninstall_run_the_operator_in_a_restricted_pod(
    helm: Helm,
    kubectl: Kubectl,
    k8s_api: Any,
    restricted: str,
    sandbox_pod: tuple[str, SandboxControl],
    image: str,
    node_plane: ControlPlane,
    release: str,
) -> None:
    namespace = restricted
    api_url, control = sandbox_pod
    selector = _helm_install(helm, kubectl, namespace, image, api_url)
    _assert_runs_like_users_run_it(kubectl, namespace, selector, f"{RELEASE}-metrics", image)

    cluster = Cluster(k8s_api, namespace)
    _reconcile_and_delete(cluster, control, "first")

    # An upgrade to another tag of the image rolls the Pod; the schedule neither doubles nor
    # goes missing meanwhile.
    cluster.create("kept", schedule_name="kept-nightly", secret=None)
    kept = cluster.wait_ready("kept", timeout=120)
    old_pods = {p["metadata"]["name"] for p in _operator_pods(kubectl, namespace, selector)}
    other = build_image(node_plane, tag=image.rpartition(":")[2] + "-upgrade")
    upgraded = _helm_values(other, namespace, api_url)
    helm("upgrade", RELEASE, str(CHART), "-n", namespace, "--wait", "--timeout=180s", *upgraded)
    kubectl("-n", namespace, "rollout", "status", f"deploy/{RELEASE}", "--timeout=180s")
    new_pods = wait_for(
        "the old operator Pods to be gone",
        lambda: _new_pods(kubectl, namespace, selector, old_pods),
        timeout=120,
    )
    assert all(p["spec"]["containers"][0]["image"].endswith(other) for p in new_pods)
    cluster.patch_spec("kept", time="03:30")
    wait_for(
        "the new Pod to apply a change",
        lambda: [r for r in control.schedules(INSTANCE) if r["time"] == "03:30"],
        timeout=120,
    )
    rows = control.schedules(INSTANCE)
    assert [str(r["id"]) for r in rows] == [kept["status"]["scheduleId"]]
    cluster.delete("kept")
    cluster.wait_gone("kept", timeout=120)
    assert control.schedules(INSTANCE) == []

    helm("uninstall", RELEASE, "-n", namespace, "--wait", "--timeout=120s")
    left = kubectl(
        "-n",
        namespace,
        "get",
        "deploy,sa,svc,secret,role,rolebinding",
        "-l",
        selector,
        "-o",
        "name",
    ).stdout
    assert left.strip() == ""
    cluster_wide = kubectl("get", "clusterrole,clusterrolebinding", "-l", selector, "-o", "name")
    assert cluster_wide.stdout.strip() == ""


def _new_pods(
    kubectl: Kubectl, namespace: str, selector: str, old: set[str]
) -> list[dict[str, Any]] | None:
    """All the release's Pods, once none of ``old`` is left and there are as many as wanted."""
    pods = json.loads(kubectl("-n", namespace, "get", "pods", "-l", selector, "-o", "json").stdout)
    names = {p["metadata"]["name"] for p in pods["items"]}
    if names & old or len(names) != REPLICAS:
        return None
    return list(pods["items"])


def test_two_replicas_elect_one_leader_and_the_standby_leads_when_its_pod_is_deleted(
    helm: Helm,
    kubectl: Kubectl,
    k8s_api: Any,
    restricted: str,
    sandbox_pod: tuple[str, SandboxControl],
    image: str,
    release: str,
) -> None:
    namespace = restricted
    api_url, control = sandbox_pod
    selector = _helm_install(helm, kubectl, namespace, image, api_url)
    leader = _operator_pod(kubectl, namespace, selector)["metadata"]["name"]
    (standby,) = {p["metadata"]["name"] for p in _operator_pods(kubectl, namespace, selector)} - {
        leader
    }
    # Both Ready (readiness: fit for its role), each saying which role it has.
    assert (_role(kubectl, namespace, leader), _role(kubectl, namespace, standby)) == (
        "leader",
        "standby",
    )
    cluster = Cluster(k8s_api, namespace)
    cluster.create("before", schedule_name="before-nightly", secret=None)
    cluster.wait_ready("before", timeout=120)
    standby_log = kubectl("-n", namespace, "logs", standby).stdout
    assert "before" not in standby_log, "the standby handled a resource"

    deleted = time.monotonic()
    kubectl("-n", namespace, "delete", "pod", leader, "--wait=false")
    # The standby, or the Pod the Deployment makes in place of the deleted one if it is quicker
    # to the released Lease: either way another live replica leads.
    successor = wait_for(
        "another replica to lead",
        lambda: (holder := _holder(kubectl, namespace)) not in (None, leader) and holder,
        timeout=120,
    )
    takeover = time.monotonic() - deleted
    assert _role(kubectl, namespace, str(successor)) == "leader"
    cluster.create("after", schedule_name="after-nightly", secret=None)
    cluster.wait_ready("after", timeout=120)

    names = sorted(str(r["name"]) for r in control.schedules(INSTANCE))
    assert names == ["after-nightly", "before-nightly"]
    for name in ("before", "after"):
        cluster.delete(name)
        cluster.wait_gone(name, timeout=120)
    by = "the standby" if successor == standby else "the replacement Pod"
    print(f"\ntakeover by {by} after the leader's Pod was deleted: {takeover:.1f}s")


def _kustomize_overlay(tmp_path: Path, image: str, namespace: str, api_url: str) -> Path:
    """An overlay of deploy/ as a user writes one: the image built here, and (so this test
    never touches other tests' resources) only the test namespace watched."""
    name, _, tag = image.rpartition(":")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    patch = [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/imagePullPolicy",
            "value": "Never",
        },
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/args",
            "value": [
                f"--namespace={namespace}",
                "--liveness=http://0.0.0.0:8080/healthz",
            ],
        },
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/env/-",
            "value": {"name": "ZOMRO_API_URL", "value": api_url},
        },
        {
            "op": "add",
            "path": "/spec/template/spec/containers/0/env/-",
            "value": {"name": "ZOMRO_ALLOW_INSECURE_HTTP", "value": "true"},
        },
    ]
    kustomization = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [os.path.relpath(REPO / "deploy", overlay)],
        # The base already points at the released image: an overlay renames that one.
        "images": [{"name": PUBLISHED_IMAGE, "newName": name, "newTag": tag}],
        "patches": [
            {
                "target": {"kind": "Deployment", "name": "zomro-backup-operator"},
                "patch": json.dumps(patch),
            }
        ],
    }
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump(kustomization))
    return overlay


def test_kubectl_apply_k_deploy_runs_the_operator_that_reconciles(
    kubectl: Kubectl,
    k8s_api: Any,
    restricted: str,
    sandbox_pod: tuple[str, SandboxControl],
    image: str,
    tmp_path: Path,
) -> None:
    namespace = restricted
    api_url, control = sandbox_pod
    overlay = _kustomize_overlay(tmp_path, image, namespace, api_url)
    system = "zomro-system"
    kubectl("apply", "-k", str(overlay))
    try:
        kubectl(
            "label",
            "--overwrite",
            "namespace",
            system,
            "pod-security.kubernetes.io/enforce=restricted",
        )
        kubectl(
            "-n", system, "create", "secret", "generic", "zomro-credentials",
            f"--from-literal=username={USERNAME}", f"--from-literal=password={PASSWORD}",
        )  # fmt: skip
        kubectl("-n", system, "rollout", "status", "deploy/zomro-backup-operator", "--timeout=180s")
        kubectl("-n", system, "wait", "--for=condition=Available", "deploy/zomro-backup-operator")
        selector = "app.kubernetes.io/name=zomro-backup-operator"
        _assert_runs_like_users_run_it(
            kubectl, system, selector, "zomro-backup-operator-metrics", image
        )
        _reconcile_and_delete(Cluster(k8s_api, namespace), control, "from-kustomize")
    finally:
        # Everything but the CRD, which other tests share.
        rendered = kubectl("kustomize", str(overlay)).stdout
        kept = [
            d for d in yaml.safe_load_all(rendered) if d and d["kind"] != "CustomResourceDefinition"
        ]
        kubectl(
            "delete", "--wait=true", "--ignore-not-found", "-f", "-", input=yaml.safe_dump_all(kept)
        )
    gone = kubectl("get", "namespace", system, check=False)
    assert gone.returncode != 0


def _bare(container_id: str) -> str:
    return container_id.removeprefix("containerd://")


@pytest.mark.parametrize("kill", ["runtime-kills-the-container", "pod-deleted"])
def test_killing_the_operator_during_a_mass_create_leaves_one_schedule_per_resource(
    helm: Helm,
    kubectl: Kubectl,
    k8s_api: Any,
    restricted: str,
    sandbox_pod: tuple[str, SandboxControl],
    image: str,
    node_plane: ControlPlane,
    release: str,
    kill: str,
) -> None:
    namespace = restricted
    api_url, control = sandbox_pod
    selector = _helm_install(
        helm, kubectl, namespace, image, api_url, "zomro.maxRequestsPerSecond=20"
    )
    cluster = Cluster(k8s_api, namespace)
    control.set_faults(latency=0.1)  # spreads the creates over seconds, so the kill lands inside
    specs = {f"m{n:03d}": {**mass_spec(n), "secret": None} for n in range(30)}
    create_many(cluster, specs)
    wait_for("a first schedule", lambda: control.schedules(INSTANCE), timeout=120, interval=0.1)
    leader = _operator_pod(kubectl, namespace, selector)
    old = leader["metadata"]["name"]
    if kill == "runtime-kills-the-container":
        # SIGKILL of the leader from the runtime; the kubelet restarts the container in the same
        # Pod, and either it (same identity) or the standby leads next.
        assert node_plane.state_dir is not None
        container = str(leader["status"]["containerStatuses"][0]["containerID"])
        _ctr(node_plane.state_dir, "tasks", "kill", "--signal", "SIGKILL", _bare(container))
        wait_for(
            "the kubelet to restart the container",
            lambda: _restarts(kubectl, namespace, old) >= 1,
            timeout=120,
        )
    else:
        # The leader's Pod is deleted (SIGTERM: it releases the Lease); the standby, or the Pod
        # the ReplicaSet makes in its place if that one reaches the released Lease first, leads.
        kubectl("-n", namespace, "delete", "pod", old, "--wait=false")
        wait_for(
            "a replacement Pod",
            lambda: _new_pods(kubectl, namespace, selector, {old}),
            timeout=180,
        )
        wait_for(
            "another replica to lead",
            lambda: _holder(kubectl, namespace) not in (None, old),
            timeout=120,
        )
    kubectl("-n", namespace, "rollout", "status", f"deploy/{RELEASE}", "--timeout=180s")
    bodies = wait_all_ready(cluster, list(specs), timeout=300)
    control.clear_faults()
    rows = control.schedules(INSTANCE)
    by_name: dict[str, int] = {}
    for row in rows:
        by_name[str(row["name"])] = by_name.get(str(row["name"]), 0) + 1
    wanted = {spec["schedule_name"] for spec in specs.values()}
    assert by_name == dict.fromkeys(wanted, 1)
    assert {str(r["id"]) for r in rows} == {b["status"]["scheduleId"] for b in bodies.values()}
    names = list(list_bodies(cluster))
    for name in names:
        cluster.delete(name)
    for name in names:
        cluster.wait_gone(name, timeout=120)


def _restarts(kubectl: Kubectl, namespace: str, pod: str) -> int:
    body = json.loads(kubectl("-n", namespace, "get", "pod", pod, "-o", "json").stdout)
    statuses = body["status"].get("containerStatuses")
    return int(statuses[0]["restartCount"]) if statuses else 0


def _ctr(state: Path, *args: str) -> str:
    info = json.loads((state / "state.json").read_text())
    ctr = Path(info["binaries"]["containerd"]).parent / "ctr"
    sock = state / "containerd" / "containerd.sock"
    result = subprocess.run(
        [str(ctr), "--address", str(sock), "--namespace", "k8s.io", *args],
        capture_output=True,
        text=True,
        check=True,
    )
    return result.stdout
