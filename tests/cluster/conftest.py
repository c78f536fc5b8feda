"""Fixtures for tests against a real kube-apiserver, started by `hack/control-plane`.

The tests only ever target the control plane this session starts (or one already started with
`hack/control-plane up`), or a cluster named explicitly through `ZOMRO_TEST_KUBECONFIG`: never the
kubeconfig a person happens to have active. Under `CI=true` a control plane that cannot start fails
the tests; elsewhere they are skipped with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
import yaml
from harness import (
    CRD,
    PASSWORD,
    SANDBOX_CONFIG,
    USERNAME,
    Cluster,
    OperatorProcess,
    finalize_leftovers,
    operator_env,
    temporary_namespace,
)

from zomro_backup_operator.sandbox.control import SandboxProcess, start_sandbox_process

REPO = Path(__file__).resolve().parents[2]
CONTROL_PLANE = REPO / "hack" / "control-plane"
CLUSTER_TESTS = Path(__file__).resolve().parent
# Starting from a warm cache takes seconds; this bounds a stuck start, not a build.
UP_TIMEOUT = 240.0


@dataclass(frozen=True)
class ControlPlane:
    """Where the session's API server is and which matching client binaries to use."""

    kubeconfig: Path
    server: str
    bin_dir: Path
    # Set when this session started the control plane (in a state dir of its own) and so
    # stops it at the end; None for a cluster someone else started.
    started_in: Path | None
    # The state dir of a hack/control-plane cluster (None for ZOMRO_TEST_KUBECONFIG), and
    # whether it has a node that runs Pods (`up --node`).
    state_dir: Path | None = None
    node: bool = False


class Kubectl(Protocol):
    """Runs the control plane's own kubectl against the session's kubeconfig."""

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]: ...


_NODE_WANTED: list[bool] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test under tests/cluster needs the API server: mark it so `-m` can select it. The
    `test_e2e_*` files need a node that runs Pods too: mark them `e2e`; when any is selected,
    the session's control plane is started with the node."""
    for item in items:
        path = Path(str(item.path)).resolve()
        if CLUSTER_TESTS in path.parents:
            item.add_marker(pytest.mark.cluster)
            if path.name.startswith("test_e2e_"):
                item.add_marker(pytest.mark.e2e)


def pytest_collection_finish(session: pytest.Session) -> None:
    _NODE_WANTED.append(any(item.get_closest_marker("e2e") for item in session.items))


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"control plane unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"control plane unavailable: {reason}")


def _run_control_plane(
    command: str, state_dir: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if state_dir is not None:
        env["ZOMRO_CP_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [str(CONTROL_PLANE), *command.split()],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def _control_plane_info() -> dict[str, Any]:
    result = _run_control_plane("info")
    if result.returncode != 0:
        _unavailable(f"`hack/control-plane info` failed: {result.stderr.strip()}")
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def _session_state_dir(cache_dir: Path) -> Path:
    """A state dir of this session's own: parallel sessions never stop each other's cluster.
    Dirs left by sessions that were killed are cleaned up (their processes stopped) first."""
    for stale in cache_dir.glob("run-pytest-*"):
        pid = stale.name.removeprefix("run-pytest-")
        if pid.isdigit() and not Path(f"/proc/{pid}").exists():
            _run_control_plane("down", stale)
    return cache_dir / f"run-pytest-{os.getpid()}"


def _server_of(kubeconfig: Path) -> str:
    """The API server URL of the kubeconfig's current context."""
    config = yaml.safe_load(kubeconfig.read_text())
    context_name = config.get("current-context")
    contexts = {c["name"]: c["context"] for c in config.get("contexts", [])}
    clusters = {c["name"]: c["cluster"] for c in config.get("clusters", [])}
    cluster_name = contexts[context_name]["cluster"]
    return str(clusters[cluster_name]["server"])


def _start() -> ControlPlane:
    explicit = os.environ.get("ZOMRO_TEST_KUBECONFIG")
    info = _control_plane_info()
    bin_dir = Path(info["bin_dir"])
    if explicit:
        kubeconfig = Path(explicit).expanduser().resolve()
        if not kubeconfig.is_file():
            _unavailable(f"ZOMRO_TEST_KUBECONFIG={explicit} is not a file")
        return ControlPlane(kubeconfig, _server_of(kubeconfig), bin_dir, None)
    node = bool(_NODE_WANTED and _NODE_WANTED[0])
    if info["running"] and (info["node"] or not node):
        kubeconfig = Path(info["kubeconfig"])
        state = Path(info["state_dir"])
        return ControlPlane(kubeconfig, str(info["server"]), bin_dir, None, state, info["node"])
    if not info["built"] or (node and not info["node_built"]):
        _unavailable(
            "binaries not built yet; run `hack/control-plane build --node` (or `make test`) "
            "once, it takes a while the first time"
        )
    state_dir = _session_state_dir(Path(info["cache_dir"]))
    try:
        result = _run_control_plane("up --node" if node else "up", state_dir, timeout=UP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _run_control_plane("down", state_dir)
        _unavailable(f"`hack/control-plane up` took longer than {UP_TIMEOUT:.0f}s")
    if result.returncode != 0:
        _unavailable(f"`hack/control-plane up` failed:\n{result.stderr.strip()}")
    line = result.stdout.strip()
    prefix = "export KUBECONFIG="
    if not line.startswith(prefix):
        _unavailable(f"unexpected output from `hack/control-plane up`: {line!r}")
    kubeconfig = Path(line.removeprefix(prefix).strip("'"))
    return ControlPlane(kubeconfig, _server_of(kubeconfig), bin_dir, state_dir, state_dir, node)


@pytest.fixture(scope="session", autouse=True)
def control_plane() -> Iterator[ControlPlane]:
    """The session's API server; KUBECONFIG and PATH point at it and its matching clients."""
    plane = _start()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", str(plane.kubeconfig))
        if plane.bin_dir.is_dir():
            patch.setenv("PATH", f"{plane.bin_dir}{os.pathsep}{os.environ.get('PATH', '')}")
        try:
            yield plane
        finally:
            if plane.started_in is not None:
                _run_control_plane("down", plane.started_in)


@pytest.fixture(scope="session")
def k8s_api(control_plane: ControlPlane) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` for the session's cluster, with admin rights."""
    from kubernetes import config

    client = config.new_client_from_config(  # type: ignore[no-untyped-call]
        config_file=str(control_plane.kubeconfig)
    )
    try:
        yield client
    finally:
        client.close()


def _tool(name: str, binary: str, kubeconfig: Path) -> Kubectl:
    """A runner for a command-line client pointed at ``kubeconfig``; raises with its stderr."""

    def run(
        *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [binary, f"--kubeconfig={kubeconfig}", *args],
            input=input,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{name} {' '.join(args)} exited {result.returncode}: {result.stderr.strip()}"
            )
        return result

    return run


@pytest.fixture(scope="session")
def kubectl(control_plane: ControlPlane) -> Kubectl:
    """Run kubectl (the API server's own version) against the session's cluster."""
    own = control_plane.bin_dir / "kubectl"
    return _tool("kubectl", str(own) if own.exists() else "kubectl", control_plane.kubeconfig)


@pytest.fixture(scope="session")
def helm(control_plane: ControlPlane) -> Kubectl:
    """Run the control plane's own helm build against the session's cluster."""
    binary = control_plane.bin_dir / "helm"
    if not binary.exists():
        pytest.fail(f"helm is not built: {binary} is missing (hack/control-plane build)")
    return _tool("helm", str(binary), control_plane.kubeconfig)


@pytest.fixture
def namespace(k8s_api: Any, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace per test, deleted afterwards (without waiting for it to go)."""
    stem = "".join(c if c.isalnum() else "-" for c in request.node.name.lower())[:40].strip("-")
    with temporary_namespace(k8s_api, stem) as name:
        yield name


# --- the operator under test, the sandbox, and a namespace with credentials -----------------
# (used by test_operator.py and every other suite that runs the real operator process)


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SandboxProcess]:
    home = tmp_path_factory.mktemp("sandbox")
    config = home / "config.yaml"
    config.write_text(SANDBOX_CONFIG)
    with start_sandbox_process(config=config, log_path=home / "sandbox.log") as process:
        yield process


@pytest.fixture(scope="session")
def crd(kubectl: Any) -> None:
    kubectl("apply", "-f", str(CRD))
    kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/backupschedules.zomro.com")


@pytest.fixture
def cluster(k8s_api: Any, namespace: str, crd: None) -> Cluster:
    cluster = Cluster(k8s_api, namespace)
    cluster.apply_secret("zomro", username=USERNAME, password=PASSWORD)
    return cluster


@pytest.fixture
def operator(
    cluster: Cluster, sandbox: SandboxProcess, tmp_path: Path
) -> Iterator[OperatorProcess]:
    sandbox.control.reset()
    process = OperatorProcess(cluster.namespace, operator_env(sandbox.url), tmp_path)
    process.start()
    try:
        yield process
    finally:
        finalize_leftovers(cluster, sandbox, process)
        process.stop()


# --- the node: the operator's image, built by `make image` and imported into the node ---------


@pytest.fixture(scope="session")
def node_plane(control_plane: ControlPlane) -> ControlPlane:
    """The session's control plane, which has a node (e2e tests start it with one)."""
    if not control_plane.node or control_plane.state_dir is None:
        _unavailable("no node: the cluster was not started by `hack/control-plane up --node`")
    return control_plane


@pytest.fixture(scope="session")
def image(node_plane: ControlPlane) -> str:
    """NAME:TAG of the operator's image, built from the Dockerfile (once per source state,
    `make image` does the same) and imported into the node's containerd."""
    return build_image(node_plane)


def build_image(plane: ControlPlane, tag: str = "") -> str:
    result = _run_control_plane(
        f"image --tag {tag}" if tag else "image", plane.state_dir, timeout=1800
    )
    if result.returncode != 0:
        pytest.fail(f"`hack/control-plane image` failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]
