"""The control plane behaves like a real cluster in the ways the operator and its tests rely on."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import pytest
from devkit.launchers import CONTROL_PLANE, control_plane, launcher_info
from devkit.waiting import wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

# The fixtures' types (ControlPlane, Kubectl) live in conftest.py, which is not importable as a
# module of its own without a tests package, so they are annotated loosely here.
ControlPlane = Any
Kubectl = Callable[..., subprocess.CompletedProcess[str]]


def crd_manifest(group: str) -> str:
    return json.dumps(
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"widgets.{group}"},
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {
                            "openAPIV3Schema": {
                                "type": "object",
                                "properties": {
                                    "spec": {
                                        "type": "object",
                                        "required": ["size"],
                                        "properties": {"size": {"type": "integer", "minimum": 1}},
                                    }
                                },
                            }
                        },
                    }
                ],
            },
        }
    )


def test_api_server_serves_a_custom_resource_once_its_definition_is_applied(
    kubectl: Kubectl, k8s_api: Any, namespace: str
) -> None:
    group = f"t{uuid.uuid4().hex[:8]}.zomro.test"
    kubectl("apply", "-f", "-", input=crd_manifest(group))
    try:
        kubectl("wait", "--for=condition=Established", f"crd/widgets.{group}", "--timeout=60s")
        custom = client.CustomObjectsApi(k8s_api)
        body = {"apiVersion": f"{group}/v1", "kind": "Widget", "metadata": {"name": "w"}}

        created = cast(
            dict[str, Any],
            custom.create_namespaced_custom_object(
                group, "v1", namespace, "widgets", {**body, "spec": {"size": 3}}
            ),
        )
        with pytest.raises(ApiException) as refused:
            custom.create_namespaced_custom_object(
                group,
                "v1",
                namespace,
                "widgets",
                {**body, "metadata": {"name": "bad"}, "spec": {"size": 0}},
            )

        fetched = cast(
            dict[str, Any],
            custom.get_namespaced_custom_object(group, "v1", namespace, "widgets", "w"),
        )
        assert fetched["spec"] == {"size": 3}
        assert fetched["metadata"]["uid"] == created["metadata"]["uid"]
        assert refused.value.status == 422
        assert "spec.size" in str(refused.value.body)
    finally:
        kubectl("delete", f"crd/widgets.{group}", "--wait=false")


def test_a_service_account_token_without_rights_is_refused_until_a_role_grants_them(
    kubectl: Kubectl, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    kubectl("-n", namespace, "create", "serviceaccount", "nobody")
    token = kubectl("-n", namespace, "create", "token", "nobody").stdout.strip()
    config = client.Configuration()
    config.host = control_plane.server
    config.api_key = {"authorization": f"Bearer {token}"}
    kubeconfig_ca = kubectl(
        "config",
        "view",
        "--raw",
        "--minify",
        "-o",
        "jsonpath={.clusters[0].cluster.certificate-authority-data}",
    ).stdout
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes(base64.b64decode(kubeconfig_ca))
    config.ssl_ca_cert = str(ca_file)
    with client.ApiClient(config) as as_nobody:
        core = client.CoreV1Api(as_nobody)
        with pytest.raises(ApiException) as refused:
            core.list_namespaced_config_map(namespace)

        kubectl(
            "-n", namespace, "create", "role", "read-cm", "--verb=list", "--resource=configmaps"
        )
        kubectl(
            "-n",
            namespace,
            "create",
            "rolebinding",
            "nobody-reads",
            "--role=read-cm",
            f"--serviceaccount={namespace}:nobody",
        )

        def can_list() -> bool:
            try:
                core.list_namespaced_config_map(namespace)
            except ApiException as exc:
                if exc.status != 403:
                    raise
                return False
            return True

        wait_for("the RoleBinding to take effect", can_list)
    assert refused.value.status == 403
    assert f"system:serviceaccount:{namespace}:nobody" in str(refused.value.body)


def test_kubectl_creates_a_token_that_authenticates_as_the_service_account(
    kubectl: Kubectl, namespace: str
) -> None:
    kubectl("-n", namespace, "create", "serviceaccount", "operator")
    token = kubectl("-n", namespace, "create", "token", "operator", "--duration=10m").stdout.strip()

    whoami = json.loads(kubectl("auth", "whoami", f"--token={token}", "-o", "json").stdout)

    assert whoami["status"]["userInfo"]["username"] == (
        f"system:serviceaccount:{namespace}:operator"
    )


def test_kubectl_and_server_report_the_pinned_kubernetes_version(
    kubectl: Kubectl, control_plane: ControlPlane
) -> None:
    pins = launcher_info()["versions"]

    versions = json.loads(kubectl("version", "-o", "json").stdout)
    helm = subprocess.run(
        [str(control_plane.bin_dir / "helm"), "version", "--template", "{{.Version}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert versions["clientVersion"]["gitVersion"] == pins["KUBERNETES_VERSION"]
    assert versions["serverVersion"]["gitVersion"] == pins["KUBERNETES_VERSION"]
    assert helm == pins["HELM_VERSION"]


def test_env_puts_the_matching_kubectl_and_helm_first_on_path(control_plane: ControlPlane) -> None:
    script = f'eval "$({CONTROL_PLANE} env)"; command -v kubectl; command -v helm'

    found = subprocess.run(
        ["bash", "-c", script], capture_output=True, text=True, check=True
    ).stdout.split()

    assert found == [str(control_plane.bin_dir / "kubectl"), str(control_plane.bin_dir / "helm")]


def test_a_new_namespace_gets_its_default_service_account(k8s_api: Any, namespace: str) -> None:
    core = client.CoreV1Api(k8s_api)

    def has_default() -> bool:
        items = core.list_namespaced_service_account(namespace).items
        names = [sa.metadata.name for sa in items if sa.metadata]
        return "default" in names

    wait_for("the serviceaccount controller to create `default`", has_default)


def test_deleting_a_namespace_finishes_with_its_contents(k8s_api: Any) -> None:
    core = client.CoreV1Api(k8s_api)
    name = f"zt-delete-{uuid.uuid4().hex[:6]}"
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    core.create_namespaced_config_map(
        name, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="content"), data={"a": "b"})
    )

    core.delete_namespace(name)

    def gone() -> bool:
        try:
            core.read_namespace(name)
        except ApiException as exc:
            if exc.status == 404:
                return True
            raise
        return False

    wait_for(f"namespace {name} to finish terminating", gone)


def test_garbage_collector_removes_dependents_of_a_deleted_owner(
    k8s_api: Any, namespace: str
) -> None:
    core = client.CoreV1Api(k8s_api)
    owner = core.create_namespaced_config_map(
        namespace, client.V1ConfigMap(metadata=client.V1ObjectMeta(name="owner"))
    )
    assert owner.metadata is not None
    assert owner.metadata.uid is not None
    ref = client.V1OwnerReference(
        api_version="v1", kind="ConfigMap", name="owner", uid=owner.metadata.uid
    )
    core.create_namespaced_config_map(
        namespace,
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="dependent", owner_references=[ref])),
    )

    core.delete_namespaced_config_map("owner", namespace)

    def dependent_gone() -> bool:
        items = core.list_namespaced_config_map(namespace).items
        names = [cm.metadata.name for cm in items if cm.metadata]
        return "dependent" not in names

    wait_for("the garbage collector to delete the dependent", dependent_gone)


def _control_plane_cmd(state: Path, command: str) -> subprocess.CompletedProcess[str]:
    return control_plane(command, state_dir=state, timeout=240)


def _pids(state: Path) -> dict[str, int]:
    recorded: dict[str, int] = json.loads((state / "state.json").read_text())["pids"]
    return recorded


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[-1].split()[0] != "Z"


def test_up_is_idempotent_and_down_stops_everything_and_up_again_works(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    state = tmp_path / "cp"
    kubectl = str(control_plane.bin_dir / "kubectl")
    try:
        first = _control_plane_cmd(state, "up")
        assert first.returncode == 0, first.stderr
        pids = _pids(state)
        second = _control_plane_cmd(state, "up")
        same_pids = _pids(state)
        kubeconfig = first.stdout.strip().removeprefix("export KUBECONFIG=")
        ready = subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", "get", "--raw=/readyz"],
            capture_output=True,
            text=True,
            check=False,
        )

        down = _control_plane_cmd(state, "down")
        state_after_down = state.exists()
        alive_after_down = [name for name, pid in pids.items() if _alive(pid)]
        third = _control_plane_cmd(state, "up")
        third_ready = subprocess.run(
            [kubectl, f"--kubeconfig={kubeconfig}", "get", "--raw=/readyz"],
            capture_output=True,
            text=True,
            check=False,
        )
    finally:
        _control_plane_cmd(state, "down")

    assert first.stdout == f"export KUBECONFIG={state / 'kubeconfig'}\n"
    assert second.returncode == 0, second.stderr
    assert second.stdout == first.stdout
    assert same_pids == pids
    assert set(pids) == {"etcd", "kube-apiserver", "kube-controller-manager"}
    assert ready.stdout == "ok"
    assert down.returncode == 0, down.stderr
    assert not state_after_down
    assert alive_after_down == []
    assert third.returncode == 0, third.stderr
    assert third.stdout == first.stdout
    assert third_ready.stdout == "ok"
    assert not state.exists()


def test_up_replaces_a_control_plane_whose_processes_died(
    tmp_path: Path, control_plane: ControlPlane
) -> None:
    state = tmp_path / "cp"
    try:
        first = _control_plane_cmd(state, "up")
        assert first.returncode == 0, first.stderr
        old = _pids(state)
        os.kill(old["kube-apiserver"], signal.SIGKILL)
        wait_for("the killed kube-apiserver to exit", lambda: not _alive(old["kube-apiserver"]))

        again = _control_plane_cmd(state, "up")
        new = _pids(state)
        leftovers = [name for name, pid in old.items() if _alive(pid)]
    finally:
        _control_plane_cmd(state, "down")

    assert again.returncode == 0, again.stderr
    assert again.stdout == first.stdout
    assert new["kube-apiserver"] != old["kube-apiserver"]
    assert leftovers == []
