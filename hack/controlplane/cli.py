"""A real Kubernetes control plane, built from Go modules: etcd, kube-apiserver,
kube-controller-manager, a matching kubectl and helm, and on request a node (containerd, runc,
kubelet, kube-proxy, kube-scheduler) that runs Pods.

    hack/control-plane build [--node]  build the binaries once per machine (skipped when cached)
    hack/control-plane up [--node]     start etcd, kube-apiserver, kube-controller-manager (and
                                       the node); print `export KUBECONFIG=<path>` (the only
                                       line on stdout)
    hack/control-plane down            stop everything and remove the state
    hack/control-plane image [--tag T] build the operator image from the Dockerfile (buildah, on
                                       a base made from Debian packages), import it into a
                                       running node; print NAME:TAG as the last line
    hack/control-plane env             shell lines: matching kubectl/helm first on PATH, and
                                       KUBECONFIG
    hack/control-plane info            JSON facts for tools (bin dir, state dir, kubeconfig...)
    hack/control-plane actionlint ARGS build actionlint once and run it
    hack/control-plane promtool ARGS   build promtool once and run it (checks the chart's
                                       PrometheusRule)
    hack/control-plane pin [NAME...]   regenerate hack/controlplane/*/go.mod and go.sum from
                                       versions.env

Environment:
    ZOMRO_CACHE_DIR      cache root (default ${XDG_CACHE_HOME:-$HOME/.cache}/zomro-backup-operator)
    ZOMRO_CP_STATE_DIR   where a running control plane keeps certs, data, logs (default <cache>/run)

Only the standard library and the `go` and `openssl` commands are used (the node and the image
also install the Debian packages they need with apt-get, as root): this runs before any
virtualenv exists (the Makefile calls `build` from `make test`), as root under CI, with no stdin.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys

from devkit import build
from devkit.console import fail, log

from . import core, images, node


def cmd_build(args: argparse.Namespace) -> None:
    pins = core.read_pins()
    dest = core.ensure_built(pins)
    log(f"binaries in {dest}")
    if args.node:
        log(f"node binaries in {node.ensure_node_built(pins)}")


def cmd_up(args: argparse.Namespace) -> None:
    kubeconfig = core.up(with_node=args.node)
    print(f"export KUBECONFIG={shlex.quote(str(kubeconfig))}", flush=True)


def cmd_down(args: argparse.Namespace) -> None:
    state = core.state_dir()
    with build.locked(state.parent / f".{state.name}.lock", "an `up` or `down` of this state dir"):
        if not state.exists():
            log("not running")
            return
        core.stop_all(state)
    log(f"stopped; removed {state}")


def cmd_image(args: argparse.Namespace) -> None:
    images.cmd_image(args.tag)


def cmd_env(args: argparse.Namespace) -> None:
    dest = core.bin_dir(core.read_pins())
    print(f'export PATH={shlex.quote(str(dest))}:"$PATH"')
    print(f"export KUBECONFIG={shlex.quote(str(core.state_dir() / 'kubeconfig'))}")


def cmd_info(args: argparse.Namespace) -> None:
    pins = core.read_pins()
    state = core.state_dir()
    running = core.is_running(state)
    promtool = core.tool_path(pins, "promtool")
    facts = {
        "cache_dir": str(build.cache_dir()),
        "bin_dir": str(core.bin_dir(pins)),
        "built": not core.missing_binaries(core.bin_dir(pins)),
        "node_bin_dir": str(node.node_bin_dir(pins)),
        "node_built": not core.missing_binaries(node.node_bin_dir(pins), node.NODE_BINARIES),
        "state_dir": str(state),
        "kubeconfig": str(state / "kubeconfig"),
        "server": running["server"] if running else None,
        "running": running is not None,
        "node": bool(running and running.get("node")),
        "node_name": node.NODE_NAME,
        "node_kubeconfig": str(state / "pki" / "kubelet.kubeconfig"),
        "promtool": str(promtool),
        "promtool_built": os.access(promtool, os.X_OK),
        "versions": pins,
    }
    print(json.dumps(facts, indent=2))


TOOLS = ("actionlint", "promtool")
"""Single-binary Go tools run as `hack/control-plane TOOL ARGS...` (built once)."""


def run_tool(name: str, args: list[str]) -> None:
    binary = core.ensure_tool(core.read_pins(), name)
    sys.stdout.flush()
    os.execv(binary, [binary, *args])  # noqa: S606 (our own build, no shell)


def cmd_pin(args: argparse.Namespace) -> None:
    known = ("kubernetes", *core.WRAPPERS)
    unknown = set(args.names) - set(known)
    if unknown:
        fail(f"no wrapper module {', '.join(sorted(unknown))}; known: {' '.join(known)}")
    core.pin(tuple(args.names) or known)


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(
        prog="hack/control-plane",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = top.add_subparsers(dest="command", required=True)
    for name, handler, with_node in (
        ("build", cmd_build, True),
        ("up", cmd_up, True),
        ("down", cmd_down, False),
        ("env", cmd_env, False),
        ("info", cmd_info, False),
    ):
        command = sub.add_parser(name)
        command.set_defaults(handler=handler)
        if with_node:
            command.add_argument("--node", action="store_true", help="with the node too")
    image = sub.add_parser("image")
    image.add_argument("--tag", help="tag the image so (default <version>-dev.<digest>)")
    image.set_defaults(handler=cmd_image)
    for tool in TOOLS:
        sub.add_parser(tool, help="its own arguments follow (see main)")
    pin = sub.add_parser("pin")
    pin.add_argument("names", nargs="*", help=f"of: kubernetes {' '.join(core.WRAPPERS)}")
    pin.set_defaults(handler=cmd_pin)
    return top


def main(argv: list[str]) -> None:
    if argv[1:2] and argv[1] in TOOLS:  # every later argument is the tool's own
        run_tool(argv[1], argv[2:])
    args = parser().parse_args(argv[1:])
    args.handler(args)
