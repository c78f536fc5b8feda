"""The node of `hack/control-plane up --node` runs what users run: Pods (offline, from local
images), Deployments, Services through kube-proxy, with the Node authorizer and NodeRestriction
guarding what the kubelet's own credential may do."""

from __future__ import annotations

import json
import subprocess

import pytest
from conftest import ControlPlane
from harness import wait_for
from pods import Kubectl, apply, http_get_code, python_pod, run_to_completion

pytestmark = pytest.mark.timeout(900)


def test_the_node_is_ready_and_schedulable(kubectl: Kubectl, node_plane: ControlPlane) -> None:
    node = json.loads(kubectl("get", "node", "zomro-node", "-o", "json").stdout)
    ready = [c for c in node["status"]["conditions"] if c["type"] == "Ready"]
    assert ready[0]["status"] == "True"
    assert not node["spec"].get("unschedulable")
    assert not [t for t in node["spec"].get("taints", []) if t["effect"] == "NoSchedule"]
    assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.36.3"
    assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://2.")


def test_a_pod_runs_as_non_root_offline_and_its_logs_can_be_read(
    kubectl: Kubectl, namespace: str, image: str
) -> None:
    code = "import os; print('uid', os.getuid(), 'hello from the node')"
    logs = run_to_completion(kubectl, namespace, "hello", image, code)
    assert "uid 65532 hello from the node" in logs


def test_a_deployment_rolls_out(kubectl: Kubectl, namespace: str, image: str) -> None:
    pod = python_pod("web", image, "import time; time.sleep(3600)", once=False)
    deployment = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": pod["spec"]},
        },
    }
    apply(kubectl, namespace, deployment)
    kubectl("-n", namespace, "rollout", "status", "deployment/web", "--timeout=120s")
    status = json.loads(kubectl("-n", namespace, "get", "deploy", "web", "-o", "json").stdout)
    assert status["status"]["availableReplicas"] == 2


def test_a_service_cluster_ip_answers_from_another_pod(
    kubectl: Kubectl, namespace: str, image: str
) -> None:
    server_code = (
        "import http.server\n"
        "class H(http.server.BaseHTTPRequestHandler):\n"
        "    def do_GET(self):\n"
        "        self.send_response(200)\n"
        "        self.end_headers()\n"
        "        self.wfile.write(b'pong-from-server')\n"
        "http.server.HTTPServer(('0.0.0.0', 8000), H).serve_forever()\n"
    )
    server = python_pod("server", image, server_code, labels={"app": "server"}, once=False)
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "server"},
        "spec": {"selector": {"app": "server"}, "ports": [{"port": 80, "targetPort": 8000}]},
    }
    apply(kubectl, namespace, server, service)
    cluster_ip = kubectl(
        "-n", namespace, "get", "svc", "server", "-o", "jsonpath={.spec.clusterIP}"
    ).stdout
    assert cluster_ip.startswith("10.0.0.")
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "--timeout=120s", "pod/server")
    code = http_get_code(f"http://{cluster_ip}:80/", "pong-from-server")
    logs = run_to_completion(kubectl, namespace, "client", image, code)
    assert "pong-from-server" in logs


def _as_node(plane: ControlPlane, kubectl: Kubectl, *args: str) -> subprocess.CompletedProcess[str]:
    assert plane.state_dir is not None
    node_kubeconfig = plane.state_dir / "pki" / "kubelet.kubeconfig"
    return kubectl(f"--kubeconfig={node_kubeconfig}", *args, check=False)


def test_the_node_authorizer_limits_the_kubelet_to_its_own_pods_secrets(
    kubectl: Kubectl, node_plane: ControlPlane, namespace: str
) -> None:
    kubectl("-n", namespace, "create", "secret", "generic", "unrelated", "--from-literal=a=b")
    result = _as_node(node_plane, kubectl, "-n", namespace, "get", "secret", "unrelated")
    assert result.returncode != 0
    # The Node authorizer's own wording: the secret is not used by a pod on this node.
    assert "no relationship found between node 'zomro-node'" in result.stderr


def test_node_restriction_keeps_the_kubelet_from_setting_restricted_labels(
    kubectl: Kubectl, node_plane: ControlPlane
) -> None:
    result = _as_node(
        node_plane, kubectl, "label", "node", "zomro-node", "node-restriction.kubernetes.io/x=y"
    )
    assert result.returncode != 0
    assert "is not allowed to modify labels: node-restriction.kubernetes.io/x" in result.stderr


def test_an_image_that_is_not_local_is_never_pulled_from_outside(
    kubectl: Kubectl, namespace: str, node_plane: ControlPlane
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "remote"},
        "spec": {"containers": [{"name": "c", "image": "ghcr.io/example/absent:1.0"}]},
    }
    apply(kubectl, namespace, pod)
    jsonpath = "jsonpath={.status.containerStatuses[0].state.waiting.message}"

    def refused_on_loopback() -> str | None:
        # The kubelet's waiting message alternates between the pull error and "Back-off".
        text = kubectl("-n", namespace, "get", "pod", "remote", "-o", jsonpath).stdout
        return text if "127.0.0.1:1" in text else None

    # containerd resolved the registry to the closed loopback port, not to ghcr.io.
    wait_for("the pull to be refused on loopback", refused_on_loopback, timeout=60)
