"""Running Argo CD's application controller and repo server (and Redis) as local processes
against the cluster of `hack/control-plane`, the way Argo CD's own Procfile runs them."""

from __future__ import annotations

import json
import os
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from devkit import processes
from devkit.waiting import WaitTimeout
from devkit.waiting import wait_for as wait_for_condition

from .common import REPO, fail, locked, log

CONTROL_PLANE = REPO / "hack" / "control-plane"
USER_ARGOCD_CM = REPO / "argocd" / "argocd-cm.yaml"
"""The snippet users merge into their argocd-cm: merged here exactly as docs/install.md says."""
NAMESPACE = "argocd"
READY_TIMEOUT = 120.0
DEFAULT_RESYNC_SECONDS = 30
PROCESSES = ("redis", "repo-server", "application-controller")

SETTINGS = f"""
apiVersion: v1
kind: Namespace
metadata:
  name: {NAMESPACE}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: {NAMESPACE}
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
---
apiVersion: argoproj.io/v1alpha1
kind: AppProject
metadata:
  name: default
  namespace: {NAMESPACE}
spec:
  sourceRepos: ["*"]
  destinations:
    - server: "*"
      namespace: "*"
  clusterResourceWhitelist:
    - group: "*"
      kind: "*"
"""
"""What Argo CD's install manifests and argocd-server would otherwise provide: its namespace,
the labelled argocd-cm, and the `default` AppProject (argocd-server creates it; there is none)."""


def control_plane_info() -> dict[str, Any]:
    """`hack/control-plane info` in this environment, so ZOMRO_CP_STATE_DIR picks the cluster."""
    result = subprocess.run(
        [str(CONTROL_PLANE), "info"],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        check=False,
    )
    if result.returncode != 0:
        fail(f"`hack/control-plane info` failed: {result.stderr.strip()}")
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def state_dir(cp: dict[str, Any]) -> Path:
    """ZOMRO_ARGOCD_STATE_DIR, else next to the control plane's own state dir."""
    explicit = os.environ.get("ZOMRO_ARGOCD_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return Path(f"{cp['state_dir']}-argocd")


def resync_seconds() -> int:
    raw = os.environ.get("ZOMRO_ARGOCD_RESYNC_SECONDS", str(DEFAULT_RESYNC_SECONDS))
    if not raw.isdigit() or int(raw) < 1:
        fail(f"ZOMRO_ARGOCD_RESYNC_SECONDS must be a whole number of seconds, not {raw!r}")
    return int(raw)


# ---------------------------------------------------------------------------------------------
# Redis, from Debian's package
# ---------------------------------------------------------------------------------------------


DEBIAN_PACKAGES = {"redis-server": "redis-server", "git": "git"}
"""Command -> Debian package: Redis for Argo CD's cache, git for the repo server."""


def ensure_debian_packages() -> None:
    """Install what is missing with apt-get the first time (as root, no prompts, no stdin)."""
    missing = sorted({pkg for cmd, pkg in DEBIAN_PACKAGES.items() if not shutil.which(cmd)})
    if not missing:
        return
    if os.geteuid() != 0:
        fail(f"missing {', '.join(missing)}: `apt-get install {' '.join(missing)}` as root once")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing]
    for attempt in ("install", "update then install"):
        if attempt != "install":
            apt(["apt-get", "update", "-q"], env)
        log(f"installing Debian's {', '.join(missing)} ({attempt})")
        if apt(install, env):
            break
    still = [cmd for cmd in DEBIAN_PACKAGES if not shutil.which(cmd)]
    if still:
        fail(f"`apt-get install {' '.join(missing)}` did not provide {', '.join(still)}")


def apt(cmd: list[str], env: dict[str, str]) -> bool:
    result = subprocess.run(
        cmd, env=env, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr, check=False
    )
    return result.returncode == 0


# ---------------------------------------------------------------------------------------------
# The cluster side: CRDs, settings, the default project
# ---------------------------------------------------------------------------------------------


def kubectl(cp: dict[str, Any], *args: str, input: str | None = None) -> str:
    cmd = [str(Path(cp["bin_dir"]) / "kubectl"), f"--kubeconfig={cp['kubeconfig']}", *args]
    result = subprocess.run(
        cmd, input=input, capture_output=True, text=True, timeout=120, check=False
    )
    if result.returncode != 0:
        fail(f"`kubectl {shlex.join(args)}` failed: {result.stderr.strip()}")
    return result.stdout


def install_cluster_objects(cp: dict[str, Any], dest: Path) -> None:
    """Argo CD's Application and AppProject CRDs (server-side, from the built module), its
    namespace, argocd-cm merged with argocd/argocd-cm.yaml, argocd-secret and the default
    AppProject. Idempotent: a second `up` changes nothing."""
    crds = [arg for f in sorted((dest / "crds").glob("*.yaml")) for arg in ("-f", str(f))]
    kubectl(cp, "apply", "--server-side", "--force-conflicts", "--field-manager=hack-argocd", *crds)
    for crd in ("applications.argoproj.io", "appprojects.argoproj.io"):
        wait_established(cp, crd)
    kubectl(cp, "apply", "--server-side", "--field-manager=hack-argocd", "-f", "-", input=SETTINGS)
    kubectl(
        cp, "-n", NAMESPACE, "patch", "configmap", "argocd-cm", "--type=merge",
        f"--patch-file={USER_ARGOCD_CM}",
    )  # fmt: skip
    existing = kubectl(cp, "-n", NAMESPACE, "get", "secrets", "-o", "name")
    if "secret/argocd-secret" not in existing.split():
        # Argo CD's settings need a server.secretkey; only argocd-server would use it.
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {
                "name": "argocd-secret",
                "namespace": NAMESPACE,
                "labels": {
                    "app.kubernetes.io/name": "argocd-secret",
                    "app.kubernetes.io/part-of": "argocd",
                },
            },
            "stringData": {"server.secretkey": secrets.token_urlsafe(32)},
        }
        kubectl(cp, "create", "-f", "-", input=json.dumps(secret))


def wait_established(cp: dict[str, Any], crd: str) -> None:
    """Poll: `kubectl wait` and jsonpath filters fail while a new CRD's status is still empty."""

    def established() -> bool:
        crd_body = json.loads(kubectl(cp, "get", f"crd/{crd}", "-o", "json"))
        conditions = crd_body.get("status", {}).get("conditions") or []
        return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)

    try:
        wait_for_condition(f"CRD {crd} Established", established, timeout=60, interval=0.25)
    except WaitTimeout as exc:
        fail(str(exc))


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


def redis_ok(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


def wait_serving(
    what: str, check: Callable[[], bool], procs: dict[str, subprocess.Popen[bytes]], state: Path
) -> None:
    """Wait for one process to serve; a death or READY_TIMEOUT stops them all (keeping logs)."""
    try:
        processes.wait_started(what, check, time.monotonic() + READY_TIMEOUT, procs, state)
    except processes.StartError as exc:
        fail(str(exc))


def is_running(state: Path, cp: dict[str, Any], dest: Path, resync: int) -> bool:
    """Our processes live, serve, and run this build against this cluster with this resync."""
    data = processes.load_state(state)
    if not data or (data["server"], data["bin_dir"], data["resync"]) != (
        cp["server"], str(dest), resync,
    ):  # fmt: skip
        return False
    if not all(
        processes.pid_is_ours(pid, data["binaries"][name]) for name, pid in data["pids"].items()
    ):
        return False
    ports: dict[str, int] = data["ports"]
    return (
        redis_ok(ports["redis"])
        and processes.http_ok(f"http://127.0.0.1:{ports['repo-server-metrics']}/healthz")
        and processes.http_ok(f"http://127.0.0.1:{ports['controller-metrics']}/healthz")
    )


def stop_processes(state: Path) -> None:
    data = processes.load_state(state)
    if not data:
        return
    pids: dict[str, int] = data.get("pids", {})
    binaries: dict[str, str] = data.get("binaries", {})
    for name in reversed(PROCESSES):
        processes.stop_pid(name, pids.get(name), binaries.get(name, ""))


def start(state: Path, cp: dict[str, Any], dest: Path, resync: int) -> None:
    """Redis, the repo server and the application controller, in a fresh state dir."""
    started = time.monotonic()
    if state.exists():
        log(f"clearing stale state in {state}")
        stop_processes(state)
        shutil.rmtree(state, ignore_errors=True)
    for sub in ("logs", "redis", "tmp", "tls", "ssh", "gpg", "plugins"):
        (state / sub).mkdir(parents=True)
    state.chmod(0o700)
    argocd = str(dest / "argocd")
    redis = str(shutil.which("redis-server"))
    ports = {
        name: processes.free_port()
        for name in ("redis", "repo-server", "repo-server-metrics", "controller-metrics")
    }
    redis_addr = f"127.0.0.1:{ports['redis']}"
    env = {
        **os.environ,
        "KUBECONFIG": str(cp["kubeconfig"]),
        # Argo CD's helper scripts; helm (for Helm sources) and kubectl of the control plane.
        "PATH": os.pathsep.join([str(dest), cp["bin_dir"], os.environ.get("PATH", "")]),
        "TMPDIR": str(state / "tmp"),
        "ARGOCD_FAKE_IN_CLUSTER": "true",  # in-cluster = the kubeconfig's cluster
        "ARGOCD_GPG_ENABLED": "false",
        "ARGOCD_GNUPGHOME": str(state / "gpg"),
        "ARGOCD_TLS_DATA_PATH": str(state / "tls"),
        "ARGOCD_SSH_DATA_PATH": str(state / "ssh"),
        "ARGOCD_PLUGINSOCKFILEPATH": str(state / "plugins"),
        "ARGOCD_ASK_PASS_SOCK": str(state / "askpass.sock"),  # default: one /tmp path for all
        "HOSTNAME": "argocd-application-controller-0",
    }
    record: dict[str, Any] = {
        "server": cp["server"],
        "kubeconfig": cp["kubeconfig"],
        "bin_dir": str(dest),
        "resync": resync,
        "ports": ports,
        "pids": {},
        "binaries": {"redis": redis, "repo-server": argocd, "application-controller": argocd},
    }
    procs: dict[str, subprocess.Popen[bytes]] = {}

    def save() -> None:
        record["pids"] = {name: proc.pid for name, proc in procs.items()}
        (state / "state.json").write_text(json.dumps(record, indent=2))

    procs["redis"] = processes.spawn(
        "redis",
        [redis, "--bind", "127.0.0.1", "--port", str(ports["redis"]), "--save", "",
         "--appendonly", "no", "--dir", str(state / "redis"), "--protected-mode", "yes"],
        state, env,
    )  # fmt: skip
    save()
    wait_serving("redis", lambda: redis_ok(ports["redis"]), procs, state)

    procs["repo-server"] = processes.spawn(
        "repo-server",
        [argocd, "--address", "127.0.0.1", "--port", str(ports["repo-server"]),
         "--metrics-address", "127.0.0.1", "--metrics-port", str(ports["repo-server-metrics"]),
         "--redis", redis_addr, "--disable-tls", "--client-ca-path=", "--logformat", "text"],
        state, {**env, "ARGOCD_BINARY_NAME": "argocd-repo-server"},
    )  # fmt: skip
    save()
    wait_serving(
        "the repo server",
        lambda: processes.http_ok(f"http://127.0.0.1:{ports['repo-server-metrics']}/healthz"),
        procs,
        state,
    )

    # Argo CD hard-codes 0.0.0.0 for the controller's metrics/healthz listener; the port is a
    # free one and nothing is ever sent off this machine.
    procs["application-controller"] = processes.spawn(
        "application-controller",
        [argocd, f"--kubeconfig={cp['kubeconfig']}", f"--namespace={NAMESPACE}",
         "--redis", redis_addr, "--repo-server", f"127.0.0.1:{ports['repo-server']}",
         "--repo-server-plaintext", "--metrics-port", str(ports["controller-metrics"]),
         f"--app-resync={resync}", "--app-resync-jitter=0", "--status-processors=2",
         "--operation-processors=2", "--logformat", "text"],
        state, {**env, "ARGOCD_BINARY_NAME": "argocd-application-controller"},
    )  # fmt: skip
    save()
    wait_serving(
        "the application controller",
        lambda: processes.http_ok(f"http://127.0.0.1:{ports['controller-metrics']}/healthz"),
        procs,
        state,
    )
    log(f"ready in {time.monotonic() - started:.1f}s (logs in {state / 'logs'})")


def up(cp: dict[str, Any], dest: Path) -> Path:
    state = state_dir(cp)
    resync = resync_seconds()
    ensure_debian_packages()
    with locked(state.parent / f".{state.name}.lock", "an `up` or `down` of this state dir"):
        install_cluster_objects(cp, dest)
        if is_running(state, cp, dest, resync):
            log(f"already running (logs in {state / 'logs'})")
        else:
            start(state, cp, dest, resync)
    return state


def down(cp: dict[str, Any]) -> None:
    state = state_dir(cp)
    with locked(state.parent / f".{state.name}.lock", "an `up` or `down` of this state dir"):
        if not state.exists():
            log("not running")
            return
        stop_processes(state)
        shutil.rmtree(state, ignore_errors=True)
    log(f"stopped; removed {state}")
