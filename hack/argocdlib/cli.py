"""Argo CD from its Go module, run as local processes against `hack/control-plane`'s cluster.

    hack/argocd build   build argocd once per machine into the cache (skipped when cached)
    hack/argocd up      build if needed, install Argo CD's CRDs, settings and default project
                        into the control plane's cluster (which must be up), start Redis, the
                        repo server and the application controller, wait until they serve;
                        print the `env` lines (the only lines on stdout)
    hack/argocd down    stop them and remove their state (the cluster's objects stay)
    hack/argocd env     shell lines: the dir with `argocd` first on PATH, and the KUBECONFIG used
    hack/argocd info    JSON facts for tools (bin dir, state dir, kubeconfig, running, version)
    hack/argocd pin     regenerate hack/argocdlib/module/go.mod and go.sum from versions.env

Environment:
    ZOMRO_CP_STATE_DIR           which control plane (as for hack/control-plane)
    ZOMRO_ARGOCD_STATE_DIR       where the processes keep logs and state
                                 (default <control plane state dir>-argocd)
    ZOMRO_ARGOCD_RESYNC_SECONDS  the controller's --app-resync (default 30)
    ZOMRO_CACHE_DIR              cache root, as for hack/control-plane
                                 (default ${XDG_CACHE_HOME:-$HOME/.cache}/zomro-backup-operator)
"""

from __future__ import annotations

import json
import shlex
import sys
import time

from . import build, run
from .common import bin_dir, fail, log, read_pins


def cmd_build() -> None:
    log(f"argocd in {build.ensure_built(read_pins())}")


def cmd_up() -> None:
    started = time.monotonic()
    pins = read_pins()
    cp = run.control_plane_info()
    if not cp["running"]:
        fail(f"no control plane running in {cp['state_dir']}; start it with hack/control-plane up")
    dest = build.ensure_built(pins)
    state = run.up(cp, dest)
    log(f"up in {time.monotonic() - started:.1f}s; state in {state}")
    cmd_env()


def cmd_down() -> None:
    run.down(run.control_plane_info())


def cmd_env() -> None:
    cp = run.control_plane_info()
    print(f'export PATH={shlex.quote(str(bin_dir(read_pins())))}:"$PATH"')
    print(f"export KUBECONFIG={shlex.quote(str(cp['kubeconfig']))}", flush=True)


def cmd_info() -> None:
    pins = read_pins()
    cp = run.control_plane_info()
    dest = bin_dir(pins)
    state = run.state_dir(cp)
    resync = run.resync_seconds()
    running = bool(cp["running"]) and run.is_running(state, cp, dest, resync)
    facts = {
        "bin_dir": str(dest),
        "argocd": str(dest / "argocd"),
        "built": build.is_built(dest),
        "version": pins["ARGOCD_VERSION"],
        "namespace": run.NAMESPACE,
        "state_dir": str(state),
        "kubeconfig": cp["kubeconfig"],
        "resync_seconds": resync,
        "running": running,
        "node": bool(cp.get("node")),  # whether the control plane has a node that runs Pods
    }
    print(json.dumps(facts, indent=2))


def cmd_pin() -> None:
    build.cmd_pin(read_pins())


COMMANDS = {
    "build": cmd_build,
    "up": cmd_up,
    "down": cmd_down,
    "env": cmd_env,
    "info": cmd_info,
    "pin": cmd_pin,
}


def main(argv: list[str]) -> None:
    if len(argv) != 1 or argv[0] not in COMMANDS:
        print(__doc__, file=sys.stderr)
        raise SystemExit(2)
    COMMANDS[argv[0]]()
