"""Pods on the node of `hack/control-plane up --node`, for the e2e tests: specs that pass Pod
Security `restricted`, and waits on their conditions (never fixed sleeps)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

Kubectl = Callable[..., subprocess.CompletedProcess[str]]

RESTRICTED_CONTAINER: dict[str, Any] = {
    "allowPrivilegeEscalation": False,
    "readOnlyRootFilesystem": True,
    "runAsNonRoot": True,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def python_pod(
    name: str, image: str, code: str, *, labels: dict[str, str] | None = None, once: bool = True
) -> dict[str, Any]:
    """A Pod running `python -c code` in the operator's image (the only general-purpose image
    on an offline node), as uid 65532 with a read-only root filesystem."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "restartPolicy": "Never" if once else "Always",
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65532, "runAsGroup": 65532},
            "containers": [
                {
                    "name": "main",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "command": ["python", "-c", code],
                    "securityContext": RESTRICTED_CONTAINER,
                }
            ],
        },
    }


def apply(kubectl: Kubectl, namespace: str, *objects: dict[str, Any]) -> None:
    manifest = json.dumps({"apiVersion": "v1", "kind": "List", "items": list(objects)})
    kubectl("-n", namespace, "apply", "-f", "-", input=manifest)


def wait_phase(kubectl: Kubectl, namespace: str, pod: str, phase: str, timeout: int = 120) -> None:
    result = kubectl(
        "-n",
        namespace,
        "wait",
        f"--for=jsonpath={{.status.phase}}={phase}",
        f"--timeout={timeout}s",
        f"pod/{pod}",
        check=False,
    )
    if result.returncode != 0:
        described = kubectl("-n", namespace, "describe", "pod", pod, check=False).stdout
        raise AssertionError(f"pod {pod} not {phase}: {result.stderr}\n{described[-3000:]}")


def run_to_completion(
    kubectl: Kubectl, namespace: str, name: str, image: str, code: str, timeout: int = 120
) -> str:
    """Run python code in a Pod until it succeeds; returns its logs."""
    apply(kubectl, namespace, python_pod(name, image, code))
    wait_phase(kubectl, namespace, name, "Succeeded", timeout)
    return kubectl("-n", namespace, "logs", name).stdout


def http_get_code(url: str, expect: str, seconds: int = 60) -> str:
    """Python for a client Pod: GET url until the body holds `expect` (the Service may need a
    moment for its endpoints), then print the body; exit 1 at the deadline."""
    return (
        "import time, urllib.request\n"
        f"deadline = time.monotonic() + {seconds}\n"
        "while True:\n"
        "    try:\n"
        f"        body = urllib.request.urlopen({url!r}, timeout=3).read().decode()\n"
        f"        if {expect!r} in body:\n"
        "            print(body)\n"
        "            break\n"
        "    except OSError as exc:\n"
        "        print('retry:', exc)\n"
        "    if time.monotonic() > deadline:\n"
        "        raise SystemExit(1)\n"
        "    time.sleep(0.5)\n"
    )


def pod_ip(kubectl: Kubectl, namespace: str, pod: str) -> str:
    return kubectl("-n", namespace, "get", "pod", pod, "-o", "jsonpath={.status.podIP}").stdout


def cluster_ip(kubectl: Kubectl, namespace: str, service: str) -> str:
    jsonpath = "jsonpath={.spec.clusterIP}"
    return kubectl("-n", namespace, "get", "svc", service, "-o", jsonpath).stdout


def start_sandbox_pod(kubectl: Kubectl, namespace: str, image: str, config: str) -> tuple[str, str]:
    """The Zomro sandbox as a Pod of the operator's image behind a Service. Returns the URL
    the operator uses (the Service's ClusterIP: there is no cluster DNS offline) and the URL
    this machine reaches the sandbox's control routes at (the Pod's own address)."""
    config_map = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "zomro-sandbox"},
        "data": {"config.yaml": config},
    }
    pod = python_pod("zomro-sandbox", image, "", labels={"app": "zomro-sandbox"}, once=False)
    container = pod["spec"]["containers"][0]
    # All of the Pod's own interfaces: its network namespace holds only its bridge address.
    container["command"] = ["zomro-backup-operator", "sandbox", "--host", "0.0.0.0"]  # noqa: S104
    container["args"] = ["--port", "8808", "--config", "/config/config.yaml"]
    container["volumeMounts"] = [{"name": "config", "mountPath": "/config"}]
    container["readinessProbe"] = {"tcpSocket": {"port": 8808}, "periodSeconds": 1}
    pod["spec"]["volumes"] = [{"name": "config", "configMap": {"name": "zomro-sandbox"}}]
    service = {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": "zomro-sandbox"},
        "spec": {"selector": {"app": "zomro-sandbox"}, "ports": [{"port": 8808}]},
    }
    apply(kubectl, namespace, config_map, pod, service)
    kubectl("-n", namespace, "wait", "--for=condition=Ready", "--timeout=120s", "pod/zomro-sandbox")
    api_url = f"http://{cluster_ip(kubectl, namespace, 'zomro-sandbox')}:8808/"
    return api_url, f"http://{pod_ip(kubectl, namespace, 'zomro-sandbox')}:8808/"
