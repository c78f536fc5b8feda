"""The node `up --node` adds: containerd + runc + Debian's CNI plugins, kubelet, kube-proxy and
kube-scheduler, on a bridge of its own whose host side is the node's (and the API server's)
address. Everything stays on this machine: pods may reach each other, the node and the API
server, and a FORWARD rule drops anything they send towards another interface.

One node per machine: kube-proxy's iptables rules, the bridge and the kubelet's cgroups are
machine-wide, so a second `up --node` from another state dir refuses to start.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

from devkit import build, processes
from devkit.console import fail, log

from . import core

NODE_NAME = "zomro-node"
BRIDGE = "zomro0"
POD_CIDR = "10.244.0.0/24"
NODE_IP = "10.244.0.1"
CNI_BIN_DIR = Path("/usr/lib/cni")
# The processes a node adds, in start order (stopped in reverse).
NODE_PROCESSES = ("containerd", "kubelet", "kube-proxy", "kube-scheduler")
# Controllers a node needs on top of core.CONTROLLERS: Deployments roll out, Services get
# endpoints, the node's not-ready taint goes once it is Ready, pods of a gone node are removed,
# and PodDisruptionBudgets get their status (the chart ships one; Argo CD's health reads it).
NODE_CONTROLLERS = (
    "deployment-controller",
    "replicaset-controller",
    "endpointslice-controller",
    "endpoints-controller",
    "node-lifecycle-controller",
    "pod-garbage-collector-controller",
    "disruption-controller",
)
# Debian packages the node runs with (iptables for kube-proxy, the CNI plugins, `ip`).
RUNTIME_PACKAGES = ("iptables", "conntrack", "iproute2", "containernetworking-plugins")
# Debian packages the node's build needs: a static pause (gcc, libc6-dev's libc.a) and runc's
# seccomp support (cgo with libseccomp-dev found through pkg-config).
BUILD_PACKAGES = ("gcc", "libc6-dev", "libseccomp-dev", "pkg-config")
FORWARD_CHAIN = "ZOMRO-NODE-FORWARD"
SYSCTLS = {
    "net/ipv4/ip_forward": "1",
    "net/bridge/bridge-nf-call-iptables": "1",
}


# ---------------------------------------------------------------------------------------------
# Debian packages
# ---------------------------------------------------------------------------------------------


def ensure_packages(packages: tuple[str, ...]) -> None:
    """Install the Debian packages that are missing: idempotent, non-interactive, as root."""
    missing = [p for p in packages if not _installed(p)]
    if not missing:
        return
    if os.geteuid() != 0:
        fail(f"Debian packages {', '.join(missing)} are missing and installing them needs root")
    log(f"apt-get install {' '.join(missing)}")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    apt = ["apt-get", "-q", "-o", "Dpkg::Use-Pty=0"]
    for args in (["update"], ["install", "-y", "--no-install-recommends", *missing]):
        result = subprocess.run(
            [*apt, *args],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            fail(f"apt-get {args[0]} failed:\n{result.stdout[-3000:]}")
    still = [p for p in missing if not _installed(p)]
    if still:
        fail(f"apt-get did not install {', '.join(still)}")


def _installed(package: str) -> bool:
    result = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode == 0 and result.stdout.endswith(" installed")


# ---------------------------------------------------------------------------------------------
# Build: kubelet, kube-proxy, kube-scheduler, containerd, runc and a static pause
# ---------------------------------------------------------------------------------------------

NODE_BINARIES = (
    "kubelet",
    "kube-proxy",
    "kube-scheduler",
    "containerd",
    "containerd-shim-runc-v2",
    "ctr",
    "runc",
    "pause",
)


def node_bin_dir(pins: dict[str, str]) -> Path:
    key = (
        f"node_kubernetes-{pins['KUBERNETES_VERSION']}"
        f"_containerd-{pins['CONTAINERD_VERSION']}_runc-{pins['RUNC_VERSION']}"
    )
    return build.cache_dir() / "bin" / key


def ensure_node_built(pins: dict[str, str]) -> Path:
    dest = node_bin_dir(pins)
    if not core.missing_binaries(dest, NODE_BINARIES):
        return dest
    ensure_packages(BUILD_PACKAGES)
    with build.locked(build.cache_dir() / "bin" / ".build.lock"):
        missing = set(core.missing_binaries(dest, NODE_BINARIES))
        if not missing:
            return dest
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(".tmp-*"):
            shutil.rmtree(stale, ignore_errors=True)
        log(f"building {', '.join(sorted(missing))} into {dest}")
        started = time.monotonic()
        mods = core.generate_modules(pins)
        key = dest.name
        if {"kubelet", "kube-proxy", "kube-scheduler"} & missing:
            gomod, info = mods["kubernetes"]
            work = core.prepare_module("kubernetes", gomod, key)
            core.build_into(
                work,
                [
                    f"k8s.io/kubernetes/cmd/{name}"
                    for name in ("kubelet", "kube-proxy", "kube-scheduler")
                ],
                core.kubernetes_ldflags(pins["KUBERNETES_VERSION"], core.release_time(info)),
                dest,
            )
        if {"containerd", "containerd-shim-runc-v2", "ctr"} & missing:
            gomod, _ = mods["containerd"]
            work = core.prepare_module("containerd", gomod, key)
            prefix = "github.com/containerd/containerd/v2"
            core.build_into(
                work,
                [
                    f"{prefix}/cmd/{name}"
                    for name in ("containerd", "containerd-shim-runc-v2", "ctr")
                ],
                [f"-X {prefix}/version.Version={pins['CONTAINERD_VERSION']}"],
                dest,
                tags="urfave_cli_no_docs no_btrfs",
            )
        if "runc" in missing:
            gomod, _ = mods["runc"]
            work = core.prepare_module("runc", gomod, key)
            # runc embeds its VERSION file; seccomp needs cgo and libseccomp (RuntimeDefault).
            core.build_into(
                work, ["github.com/opencontainers/runc"], [], dest, tags="seccomp", cgo=True
            )
        if "pause" in missing:
            build_pause(pins, dest)
        still = core.missing_binaries(dest, NODE_BINARIES)
        if still:
            fail(f"build finished but {', '.join(still)} missing from {dest}")
        log(f"node binaries ready in {dest} ({time.monotonic() - started:.0f}s)")
    return dest


def kubernetes_source(pins: dict[str, str]) -> Path:
    info = core.module_info("k8s.io/kubernetes", pins["KUBERNETES_VERSION"], core.MODULES)
    return Path(info["Dir"])


def containerd_source(pins: dict[str, str]) -> Path:
    info = core.module_info(
        "github.com/containerd/containerd/v2", pins["CONTAINERD_VERSION"], core.MODULES
    )
    return Path(info["Dir"])


def build_pause(pins: dict[str, str], dest: Path) -> None:
    """The pause program of Kubernetes' own pause image, built static like its Makefile does."""
    source = kubernetes_source(pins) / "build" / "pause" / "linux" / "pause.c"
    tag = pause_image(pins).rpartition(":")[2]
    tmp = dest / f".tmp-pause-{os.getpid()}"
    core.run(
        [
            "gcc",
            "-Os",
            "-Wall",
            "-Werror",
            "-static",
            f"-DVERSION=v{tag}",
            "-o",
            str(tmp),
            str(source),
        ]
    )
    core.run(["strip", str(tmp)])
    tmp.rename(dest / "pause")
    log(f"built pause from {source}")


def pause_image(pins: dict[str, str]) -> str:
    """The sandbox image this containerd pins by default (read from its source), so the one
    built here is imported under exactly that name and nothing ever tries to pull it."""
    config = containerd_source(pins) / "internal" / "cri" / "config" / "config.go"
    for line in config.read_text().splitlines():
        stripped = line.strip()
        if stripped.startswith("DefaultSandboxImage ="):
            return stripped.partition("=")[2].strip().strip('"')
    fail(f"no DefaultSandboxImage in {config}")


# ---------------------------------------------------------------------------------------------
# Network: the bridge, forwarding, and the fence around it
# ---------------------------------------------------------------------------------------------


def _owner_file() -> Path:
    return build.cache_dir() / "node-owner"


def claim_machine(state: Path) -> None:
    """Refuse a second node; take over what a node that is gone left behind."""
    owner_file = _owner_file()
    with contextlib.suppress(OSError):
        owner = Path(owner_file.read_text().strip())
        if owner != state and core.is_running(owner):
            fail(f"a node already runs from {owner} (one node per machine); stop it first")
        if owner != state and owner.exists():
            log(f"cleaning up the node left by {owner}")
            stop_node(owner)
    cleanup_network({})
    owner_file.parent.mkdir(parents=True, exist_ok=True)
    owner_file.write_text(f"{state}\n")


def setup_network(state: Path) -> dict[str, str]:
    """The bridge with the node's address, the sysctls a node needs (their previous values are
    returned so `down` restores them), and a FORWARD fence: pods reach only the bridge."""
    ensure_packages(RUNTIME_PACKAGES)
    core.run(["ip", "link", "add", BRIDGE, "type", "bridge"])
    core.run(["ip", "addr", "add", f"{NODE_IP}/{POD_CIDR.split('/')[1]}", "dev", BRIDGE])
    core.run(["ip", "link", "set", BRIDGE, "up"])
    saved: dict[str, str] = {}
    for key, value in SYSCTLS.items():
        path = Path("/proc/sys") / key
        saved[key] = path.read_text().strip()
        path.write_text(value)
    core.run(["iptables", "-w", "-N", FORWARD_CHAIN])
    # Pod to pod (also after a Service's DNAT) is allowed even where FORWARD's policy is DROP.
    core.run(["iptables", "-w", "-A", FORWARD_CHAIN, "-i", BRIDGE, "-o", BRIDGE, "-j", "ACCEPT"])
    core.run(["iptables", "-w", "-A", FORWARD_CHAIN, "-i", BRIDGE, "!", "-o", BRIDGE, "-j", "DROP"])
    core.run(["iptables", "-w", "-A", FORWARD_CHAIN, "-o", BRIDGE, "!", "-i", BRIDGE, "-j", "DROP"])
    core.run(["iptables", "-w", "-I", "FORWARD", "1", "-j", FORWARD_CHAIN])
    cni = state / "cni"
    (cni / "net.d").mkdir(parents=True)
    conflist = {
        "cniVersion": "1.0.0",
        "name": "zomro",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # nothing leaves the machine, so nothing to masquerade
                "hairpinMode": True,
                "ipam": {
                    "type": "host-local",
                    "dataDir": str(cni / "ipam"),
                    "ranges": [[{"subnet": POD_CIDR, "gateway": NODE_IP}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }
    (cni / "net.d" / "10-zomro.conflist").write_text(json.dumps(conflist, indent=2))
    return saved


def cleanup_network(saved: dict[str, str]) -> None:
    """Undo setup_network (each step tolerates it being undone already)."""
    core.run(["ip", "link", "del", BRIDGE], check=False)
    while core.run(["iptables", "-w", "-D", "FORWARD", "-j", FORWARD_CHAIN], check=False) == 0:
        pass
    core.run(["iptables", "-w", "-F", FORWARD_CHAIN], check=False)
    core.run(["iptables", "-w", "-X", FORWARD_CHAIN], check=False)
    for key, value in saved.items():
        with contextlib.suppress(OSError):
            (Path("/proc/sys") / key).write_text(value)


# ---------------------------------------------------------------------------------------------
# Certificates and configuration files
# ---------------------------------------------------------------------------------------------


def make_node_certs(pki: Path) -> None:
    """Client certs for the kubelet (Node authorizer: system:node:<name> in system:nodes),
    kube-proxy and the API server's kubelet client; the kubelet's serving cert for NODE_IP."""
    core.issue_cert(
        pki, "kubelet-client", f"/O=system:nodes/CN=system:node:{NODE_NAME}", "clientAuth"
    )
    core.issue_cert(pki, "kube-proxy", "/CN=system:kube-proxy", "clientAuth")
    core.issue_cert(
        pki, "apiserver-kubelet-client", "/O=system:masters/CN=kube-apiserver-kubelet-client",
        "clientAuth",
    )  # fmt: skip
    core.issue_cert(
        pki, "kubelet", f"/CN={NODE_NAME}", "serverAuth", f"IP:{NODE_IP},DNS:{NODE_NAME}"
    )


def apiserver_flags(pki: Path) -> list[str]:
    return [
        f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
        f"--kubelet-certificate-authority={pki / 'ca.crt'}",
        "--kubelet-preferred-address-types=InternalIP",
    ]


def containerd_config(state: Path, bins: Path, image: str) -> str:
    root = state / "containerd"
    return f"""version = 3
root = '{root / "root"}'
state = '{root / "state"}'

[grpc]
  address = '{root / "containerd.sock"}'

[ttrpc]
  address = '{root / "containerd.sock.ttrpc"}'

[plugins.'io.containerd.internal.v1.opt']
  path = '{root / "opt"}'

[plugins.'io.containerd.nri.v1.nri']
  disable = true

[plugins.'io.containerd.cri.v1.runtime']
  # Processes here lack CAP_SYS_RESOURCE: none can lower its oom_score_adj, and the kubelet asks
  # -998 for the sandbox. Without this every pod sandbox fails in runc's nsexec.
  restrict_oom_score_adj = true
  enable_cdi = false
  netns_mounts_under_state_dir = true

  [plugins.'io.containerd.cri.v1.runtime'.containerd]
    default_runtime_name = 'runc'

    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
      runtime_type = 'io.containerd.runc.v2'

      [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
        BinaryName = '{bins / "runc"}'
        SystemdCgroup = false

  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = ['{CNI_BIN_DIR}']
    conf_dir = '{state / "cni" / "net.d"}'

[plugins.'io.containerd.cri.v1.images']
  snapshotter = 'overlayfs'

  # Every registry resolves to a closed port on loopback: an image that is not local fails to
  # pull at once, and no pull ever leaves this machine (see registry_hosts).
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = '{root / "certs.d"}'

  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = '{image}'

[plugins.'io.containerd.grpc.v1.cri']
  stream_server_address = '127.0.0.1'
  stream_server_port = '0'
"""


NO_REGISTRY = "http://127.0.0.1:1"


def registry_hosts(certs_d: Path) -> None:
    """containerd's hosts.toml for every registry (`_default`): its server is a closed
    loopback port, so the node is offline by construction."""
    (certs_d / "_default").mkdir(parents=True)
    (certs_d / "_default" / "hosts.toml").write_text(f'server = "{NO_REGISTRY}"\n')


def kubelet_config(state: Path, ports: dict[str, int]) -> str:
    pki = state / "pki"
    config = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "address": NODE_IP,
        "port": ports["kubelet"],
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": ports["kubelet-healthz"],
        "tlsCertFile": str(pki / "kubelet.crt"),
        "tlsPrivateKeyFile": str(pki / "kubelet.key"),
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(pki / "ca.crt")},
        },
        "authorization": {"mode": "Webhook"},
        "containerRuntimeEndpoint": f"unix://{state / 'containerd' / 'containerd.sock'}",
        "cgroupDriver": "cgroupfs",
        # These machines have cgroup v1 (kubelet 1.35+ refuses it unless told; KEP-5573).
        "failCgroupV1": False,
        "failSwapOn": False,
        "rotateCertificates": False,
        "serializeImagePulls": False,
        "maxPods": 110,
        # The disk is shared with builds and caches: never evict the test pods for it.
        "evictionHard": {"memory.available": "100Mi"},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "nodeStatusReportFrequency": "10s",
        "podLogsDir": str(state / "pod-logs"),
        "logging": {"format": "text"},
    }
    return json.dumps(config, indent=2)


def kube_proxy_config(state: Path, ports: dict[str, int]) -> str:
    config = {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(state / "pki" / "kube-proxy.kubeconfig")},
        "hostnameOverride": NODE_NAME,
        "mode": "iptables",
        "clusterCIDR": POD_CIDR,
        "bindAddress": NODE_IP,
        "healthzBindAddress": f"127.0.0.1:{ports['kube-proxy-healthz']}",
        "metricsBindAddress": f"127.0.0.1:{ports['kube-proxy-metrics']}",
        # NodePorts only on the node's own address, never on the machine's outside interfaces.
        "nodePortAddresses": [f"{NODE_IP}/32"],
        # Leave the machine's conntrack sysctls alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
    }
    return json.dumps(config, indent=2)


def scheduler_config(state: Path) -> str:
    config = {
        "apiVersion": "kubescheduler.config.k8s.io/v1",
        "kind": "KubeSchedulerConfiguration",
        "clientConnection": {"kubeconfig": str(state / "kubeconfig")},
        "leaderElection": {"leaderElect": False},
    }
    return json.dumps(config, indent=2)


# ---------------------------------------------------------------------------------------------
# Start and stop
# ---------------------------------------------------------------------------------------------


def ctr(state: Path, bins: Path, *args: str, check: bool = True) -> str:
    result = subprocess.run(
        [
            str(bins / "ctr"),
            "--address",
            str(state / "containerd" / "containerd.sock"),
            "--namespace",
            "k8s.io",
            *args,
        ],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if check and result.returncode != 0:
        fail(f"ctr {' '.join(args)} failed: {result.stderr.strip()}")
    return result.stdout


def start_node(
    state: Path,
    pins: dict[str, str],
    bins: Path,
    server: str,
    deadline: float,
    procs: dict[str, subprocess.Popen[bytes]],
    binaries: dict[str, str],
    save: Any,
) -> None:
    """containerd (with the pause image imported), kubelet, kube-proxy, kube-scheduler; waits
    until the node is Ready."""
    pki = state / "pki"
    ports = {
        name: processes.free_port()
        for name in (
            "kubelet",
            "kubelet-healthz",
            "kube-proxy-healthz",
            "kube-proxy-metrics",
            "scheduler",
        )
    }
    image = pause_image(pins)
    (state / "containerd").mkdir()
    (state / "containerd" / "config.toml").write_text(containerd_config(state, bins, image))
    registry_hosts(state / "containerd" / "certs.d")
    (state / "kubelet.yaml").write_text(kubelet_config(state, ports))
    (state / "kube-proxy.yaml").write_text(kube_proxy_config(state, ports))
    (state / "kube-scheduler.yaml").write_text(scheduler_config(state))
    ca = pki / "ca.crt"
    core.write_kubeconfig(state / "pki" / "kubelet.kubeconfig", server, ca, cert="kubelet-client")
    core.write_kubeconfig(state / "pki" / "kube-proxy.kubeconfig", server, ca, cert="kube-proxy")
    for name in NODE_PROCESSES:
        binaries[name] = str(bins / name)

    env = {**os.environ, "PATH": f"{bins}:{os.environ.get('PATH', '')}"}
    procs["containerd"] = processes.spawn(
        "containerd",
        [binaries["containerd"], f"--config={state / 'containerd' / 'config.toml'}"],
        state,
        env=env,
    )
    save(procs)
    sock = state / "containerd" / "containerd.sock"
    processes.wait_started(
        "containerd",
        lambda: sock.exists() and bool(ctr(state, bins, "version", check=False)),
        deadline,
        procs,
        state,
    )
    import_pause(state, bins, image)
    from . import images

    images.load(state, images.operator_archives())  # what `make image` built before

    procs["kubelet"] = processes.spawn(
        "kubelet",
        [
            binaries["kubelet"],
            f"--config={state / 'kubelet.yaml'}",
            f"--kubeconfig={pki / 'kubelet.kubeconfig'}",
            f"--hostname-override={NODE_NAME}",
            f"--node-ip={NODE_IP}",
            f"--root-dir={state / 'kubelet'}",
            f"--cert-dir={state / 'kubelet' / 'pki'}",
            "--v=1",
        ],
        state,
        env=env,
    )
    procs["kube-proxy"] = processes.spawn(
        "kube-proxy", [binaries["kube-proxy"], f"--config={state / 'kube-proxy.yaml'}"], state
    )
    procs["kube-scheduler"] = processes.spawn(
        "kube-scheduler",
        [
            binaries["kube-scheduler"],
            f"--config={state / 'kube-scheduler.yaml'}",
            f"--authentication-kubeconfig={state / 'kubeconfig'}",
            f"--authorization-kubeconfig={state / 'kubeconfig'}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['scheduler']}",
        ],
        state,
    )
    save(procs)
    context = ssl.create_default_context(cafile=str(ca))
    token = json.loads((state / "state.json").read_text())["token"]
    processes.wait_started(
        f"node {NODE_NAME} Ready",
        lambda: node_ready(server, context, token),
        deadline,
        procs,
        state,
    )


def import_pause(state: Path, bins: Path, image: str) -> None:
    from . import images

    archive = images.pause_archive(bins / "pause", image)
    ctr(state, bins, "images", "import", "--local", str(archive))
    log(f"imported {image} (built from pause.c)")


def node_ready(server: str, context: ssl.SSLContext, token: str) -> bool:
    body = core.http_get_json(f"{server}/api/v1/nodes/{NODE_NAME}", context, token)
    if not body:
        return False
    conditions = body.get("status", {}).get("conditions", [])
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def stop_node(state: Path) -> None:
    """Stop the node's processes and every container, unmount what they mounted under the
    state dir, and undo the network; safe to call on a node that is half gone."""
    data = processes.load_state(state) or {}
    pids: dict[str, int] = data.get("pids", {})
    binaries: dict[str, str] = data.get("binaries", {})
    for name in ("kube-scheduler", "kube-proxy", "kubelet"):
        processes.stop_pid(name, pids.get(name), binaries.get(name, ""))
    bins = Path(binaries["containerd"]).parent if "containerd" in binaries else None
    if bins is not None and processes.pid_is_ours(
        pids.get("containerd", 0), binaries["containerd"]
    ):
        # `delete --force` kills a task that still runs: each container and pod sandbox.
        for task in ctr(state, bins, "tasks", "ls", "-q", check=False).split():
            ctr(state, bins, "tasks", "delete", "--force", task, check=False)
    processes.stop_pid("containerd", pids.get("containerd"), binaries.get("containerd", ""))
    kill_leftover_shims(state)
    remove_kube_chains()
    unmount_under(state)
    remove_pod_cgroups()
    cleanup_network(data.get("sysctls", {}))
    with contextlib.suppress(OSError):
        if Path(_owner_file().read_text().strip()) == state:
            _owner_file().unlink()


def remove_kube_chains() -> None:
    """Every KUBE-* chain kube-proxy and the kubelet made (IPv4 and IPv6, all tables), and the
    rules that jump to them: the machine is left as before the node."""
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            listing = subprocess.run(
                [tool, "-w", "-t", table, "-S"], capture_output=True, text=True, check=False
            ).stdout.splitlines()
            chains = [line.split()[1] for line in listing if line.startswith("-N KUBE-")]
            for line in listing:
                words = shlex.split(line)
                jumps = "-j" in words and words[words.index("-j") + 1].startswith("KUBE-")
                if words[:1] == ["-A"] and words[1] not in chains and jumps:
                    core.run([tool, "-w", "-t", table, "-D", *words[1:]], check=False)
            for chain in chains:
                core.run([tool, "-w", "-t", table, "-F", chain], check=False)
            for chain in chains:
                core.run([tool, "-w", "-t", table, "-X", chain], check=False)


def kill_leftover_shims(state: Path) -> None:
    """A shim outlives containerd; ours carry our socket's path in their command line."""
    marker = str(state / "containerd").encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if b"containerd-shim-runc-v2" in cmdline.split(b"\0")[0] and marker in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(proc.name), signal.SIGKILL)


def unmount_under(state: Path) -> None:
    """Unmount (deepest first) what kubelet, containerd and the CNI left mounted in the state
    dir, so removing it never descends into a mounted filesystem."""
    prefix = str(state) + "/"
    targets = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        target = line.split()[4].replace("\\040", " ")
        if target.startswith(prefix):
            targets.append(target)
    for target in sorted(set(targets), key=len, reverse=True):
        core.run(["umount", "-l", target], check=False)


def remove_pod_cgroups() -> None:
    """The kubelet's (empty) kubepods cgroups, depth first; a busy one stays."""
    for hierarchy in Path("/sys/fs/cgroup").iterdir():
        top = hierarchy / "kubepods"
        if not top.is_dir():
            continue
        for directory in sorted(
            (p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
        ):
            with contextlib.suppress(OSError):
                directory.rmdir()
        with contextlib.suppress(OSError):
            top.rmdir()
