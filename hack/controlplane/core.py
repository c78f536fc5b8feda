#!/usr/bin/env python3
"""The control plane itself: pins, the Go builds, certificates, and starting and stopping
etcd, kube-apiserver and kube-controller-manager (plus the node, see node.py). The command line
is in cli.py; `hack/control-plane` runs it. Standard library only."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

REPO = Path(__file__).resolve().parents[2]
MODULES = REPO / "hack" / "controlplane"
PINS_FILE = MODULES / "versions.env"

# Controllers the tests and the operator need: namespaces really finish deleting, owner references
# are honoured, every namespace gets its `default` ServiceAccount and the root CA ConfigMap, and the
# aggregated admin/edit/view ClusterRoles get their rules.
CONTROLLERS = (
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "clusterrole-aggregation-controller",
)
SERVICE_CIDR = "10.0.0.0/24"
SERVICE_IP = "10.0.0.1"  # the `kubernetes` Service, first address of SERVICE_CIDR
READY_TIMEOUT = 120.0
PIN_KEYS = (
    "KUBERNETES_VERSION",
    "ETCD_VERSION",
    "HELM_VERSION",
    "CONTAINERD_VERSION",
    "RUNC_VERSION",
    "ACTIONLINT_VERSION",
    "PROMETHEUS_VERSION",
)


def log(message: str) -> None:
    """Progress goes to stderr: stdout is reserved for the one `export` line."""
    print(f"control-plane: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    log(f"error: {message}")
    raise SystemExit(1)


# ---------------------------------------------------------------------------------------------
# Pins, cache and paths
# ---------------------------------------------------------------------------------------------


def read_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in PINS_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip()
    for key in PIN_KEYS:
        if not pins.get(key, "").startswith("v"):
            fail(f"{PINS_FILE}: {key} must be set to a vX.Y.Z version")
    return pins


def cache_dir() -> Path:
    explicit = os.environ.get("ZOMRO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser().resolve() / "zomro-backup-operator"


def bin_dir(pins: dict[str, str]) -> Path:
    key = (
        f"kubernetes-{pins['KUBERNETES_VERSION']}"
        f"_etcd-{pins['ETCD_VERSION']}_helm-{pins['HELM_VERSION']}"
    )
    return cache_dir() / "bin" / key


def state_dir() -> Path:
    explicit = os.environ.get("ZOMRO_CP_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    return cache_dir() / "run"


BINARIES = ("etcd", "kube-apiserver", "kube-controller-manager", "kubectl", "helm")


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def go_env(cgo: bool = False) -> dict[str, str]:
    """Go settings for reproducible, cache-friendly builds that never touch the repository."""
    env = dict(os.environ)
    root = cache_dir() / "go"
    env.setdefault("GOMODCACHE", str(root / "mod"))
    env.setdefault("GOCACHE", str(root / "build"))
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env["CGO_ENABLED"] = "1" if cgo else "0"
    # The wrappers' go directives are satisfied by the installed Go; never fetch a toolchain.
    env.setdefault("GOTOOLCHAIN", "local")
    return env


def stream(
    cmd: list[str],
    capture: bool = False,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    what: str = "",
) -> str:
    """Run a build tool with its progress on stderr (stdout is for our one result line), or
    its stdout captured; its failure stops us."""
    result = subprocess.run(
        cmd,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE if capture else sys.stderr,
        stderr=sys.stderr,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        where = f" in {cwd}" if cwd else ""
        fail(f"`{what or shlex.join(cmd)}` failed{where} (exit {result.returncode})")
    return result.stdout if capture else ""


def go(args: list[str], cwd: Path, capture: bool = False, cgo: bool = False) -> str:
    return stream(["go", *args], capture, cwd, go_env(cgo))


def module_info(path: str, version: str, workdir: Path) -> dict[str, str]:
    """Download one module and return `go mod download -json` facts (GoMod, Info, Dir...)."""
    out = go(["mod", "download", "-json", f"{path}@{version}"], cwd=workdir, capture=True)
    info: dict[str, str] = json.loads(out)
    if info.get("Error"):
        fail(f"{path}@{version}: {info['Error']}")
    return info


def mod_json(gomod: Path, workdir: Path) -> dict[str, Any]:
    out = go(["mod", "edit", "-json", str(gomod)], cwd=workdir, capture=True)
    parsed: dict[str, Any] = json.loads(out)
    return parsed


def release_time(info: dict[str, str]) -> str:
    """The module's publication time: a reproducible buildDate for the version stamps."""
    data = json.loads(Path(info["Info"]).read_text())
    return str(data.get("Time", "1970-01-01T00:00:00Z"))


def kubernetes_gomod(version: str, workdir: Path) -> tuple[str, dict[str, str]]:
    """A wrapper go.mod for k8s.io/kubernetes: each `./staging` replace becomes the published
    v0.Y.Z of that module, read from that exact version's own go.mod."""
    info = module_info("k8s.io/kubernetes", version, workdir)
    upstream = mod_json(Path(info["GoMod"]), workdir)
    go_line = str(upstream.get("Go") or "1.24.0")
    staging_version = "v0" + version[version.index(".") :]
    lines = [
        "// Generated by hack/control-plane from versions.env; do not edit.",
        "module zomro.local/controlplane/kubernetes",
        "",
        f"go {go_line}",
        "",
    ]
    for entry in upstream.get("GoDebug") or []:
        lines.append(f"godebug {entry['Key']}={entry['Value']}")
    lines += ["", f"require k8s.io/kubernetes {version}", "", "replace ("]
    replaces = upstream.get("Replace") or []
    count = 0
    for rep in replaces:
        old, new = rep["Old"], rep["New"]
        if not str(new.get("Path", "")).startswith("./staging/"):
            fail(f"k8s.io/kubernetes@{version} has an unexpected replace: {rep}")
        lines.append(f"\t{old['Path']} => {old['Path']} {staging_version}")
        count += 1
    lines.append(")")
    log(f"k8s.io/kubernetes {version}: {count} staging modules replaced by {staging_version}")
    return "\n".join(lines) + "\n", info


def simple_gomod(
    module: str, require: str, version: str, workdir: Path
) -> tuple[str, dict[str, str]]:
    info = module_info(require, version, workdir)
    upstream = mod_json(Path(info["GoMod"]), workdir)
    text = (
        "// Generated by hack/control-plane from versions.env; do not edit.\n"
        f"module {module}\n\ngo {upstream.get('Go') or '1.24.0'}\n\nrequire {require} {version}\n"
    )
    return text, info


def pinned_facts(gomod: Path, workdir: Path) -> tuple[Any, ...]:
    """What versions.env decides in a wrapper go.mod: go line, godebug, replaces, direct
    requires. The committed, tidied go.mod is used as is only when these match the generated."""
    data = mod_json(gomod, workdir)
    direct = sorted(
        (r["Path"], r["Version"]) for r in data.get("Require") or [] if not r.get("Indirect")
    )
    replaces = sorted(
        (r["Old"]["Path"], r["New"]["Path"], r["New"].get("Version", ""))
        for r in data.get("Replace") or []
    )
    return (data.get("Go"), json.dumps(data.get("GoDebug")), direct, replaces)


def prepare_module(name: str, gomod: str, pins_key: str) -> Path:
    """Copy a wrapper module to a work dir in the cache, so builds never dirty the repository.
    The committed go.mod/go.sum (written by `pin`) are used when they agree with versions.env;
    otherwise the go.mod generated from versions.env is, and Go resolves and checks the rest."""
    src = MODULES / name
    work = cache_dir() / "src" / f"{name}-{pins_key}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for item in src.glob("*.go"):
        shutil.copy2(item, work / item.name)
    (work / "go.mod").write_text(gomod)
    committed = src / "go.mod"
    if committed.exists() and (src / "go.sum").exists():
        if pinned_facts(committed, work) == pinned_facts(work / "go.mod", work):
            shutil.copy2(committed, work / "go.mod")
            shutil.copy2(src / "go.sum", work / "go.sum")
        else:
            log(f"{committed} does not match versions.env; run `hack/control-plane pin`")
    return work


def build_into(
    work: Path,
    packages: list[str],
    ldflags: list[str],
    dest: Path,
    tags: str = "",
    cgo: bool = False,
) -> None:
    """Build the packages into dest atomically: a half-built binary never looks cached."""
    tmp = dest / f".tmp-{os.getpid()}"
    tmp.mkdir(parents=True, exist_ok=True)
    flags = " ".join(["-s", "-w", *ldflags])
    start = time.monotonic()
    log(f"go build {' '.join(packages)} in {work} (minutes, the first time)")
    tag_args = ["-tags", tags] if tags else []
    go(
        ["build", "-trimpath", *tag_args, "-ldflags", flags, "-o", str(tmp) + "/", *packages],
        cwd=work,
        cgo=cgo,
    )
    built = sorted(tmp.iterdir())
    for binary in built:
        binary.rename(dest / binary.name)
    tmp.rmdir()
    names = ", ".join(b.name for b in built)
    log(f"built {names} in {time.monotonic() - start:.0f}s")


def kubernetes_ldflags(version: str, build_date: str) -> list[str]:
    major, minor = version.lstrip("v").split(".")[:2]
    flags = []
    for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        for key, value in (
            ("gitVersion", version),
            ("gitMajor", major),
            ("gitMinor", minor),
            ("gitTreeState", "clean"),
            ("buildDate", build_date),
        ):
            flags.append(f"-X {pkg}.{key}={value}")
    return flags


@contextlib.contextmanager
def locked(path: Path, holder: str = "another build") -> Iterator[None]:
    """One build (or one up/down per state dir) at a time: parallel runs wait, not race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{holder} holds {path}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def missing_binaries(dest: Path, names: tuple[str, ...] = BINARIES) -> list[str]:
    return [b for b in names if not os.access(dest / b, os.X_OK)]


WRAPPERS = {
    # wrapper dir: (module it requires, versions.env key); kubernetes has its own generator.
    "etcd": ("go.etcd.io/etcd/server/v3", "ETCD_VERSION"),
    "helm": ("helm.sh/helm/v3", "HELM_VERSION"),
    "containerd": ("github.com/containerd/containerd/v2", "CONTAINERD_VERSION"),
    "runc": ("github.com/opencontainers/runc", "RUNC_VERSION"),
    "actionlint": ("github.com/rhysd/actionlint", "ACTIONLINT_VERSION"),
    "promtool": ("github.com/prometheus/prometheus", "PROMETHEUS_VERSION"),
}


def generate_modules(
    pins: dict[str, str], names: tuple[str, ...] = ("kubernetes", *WRAPPERS)
) -> dict[str, tuple[str, dict[str, str]]]:
    """The named wrapper modules' go.mod as versions.env says (see prepare_module)."""
    scratch = Path(tempfile.mkdtemp(prefix="zomro-cp-gen-"))
    mods: dict[str, tuple[str, dict[str, str]]] = {}
    try:
        for name in names:
            if name == "kubernetes":
                mods[name] = kubernetes_gomod(pins["KUBERNETES_VERSION"], scratch)
            else:
                require, key = WRAPPERS[name]
                module = f"zomro.local/controlplane/{name}"
                mods[name] = simple_gomod(module, require, pins[key], scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return mods


def ensure_built(pins: dict[str, str]) -> Path:
    dest = bin_dir(pins)
    if not missing_binaries(dest):
        return dest
    if shutil.which("go") is None:
        fail("Go is needed to build the control plane once (https://go.dev/dl/); not on PATH")
    with locked(cache_dir() / "bin" / ".build.lock"):
        missing = missing_binaries(dest)
        if not missing:
            return dest
        dest.mkdir(parents=True, exist_ok=True)
        for stale in dest.glob(".tmp-*"):  # left by an interrupted build
            shutil.rmtree(stale, ignore_errors=True)
        log(f"building {', '.join(missing)} into {dest}")
        started = time.monotonic()
        mods = generate_modules(pins, ("kubernetes", "etcd", "helm"))
        key = dest.name
        kube_version = pins["KUBERNETES_VERSION"]
        if {"kube-apiserver", "kube-controller-manager", "kubectl"} & set(missing):
            gomod, info = mods["kubernetes"]
            work = prepare_module("kubernetes", gomod, key)
            build_into(
                work,
                [
                    "k8s.io/kubernetes/cmd/kube-apiserver",
                    "k8s.io/kubernetes/cmd/kube-controller-manager",
                    "k8s.io/kubernetes/cmd/kubectl",
                ],
                kubernetes_ldflags(kube_version, release_time(info)),
                dest,
            )
        if "etcd" in missing:
            gomod, _ = mods["etcd"]
            work = prepare_module("etcd", gomod, key)
            # etcd's version is a constant in go.etcd.io/etcd/api/v3/version, set by the module
            # version itself; `go build -o dir/ .` names the binary after the module: etcd.
            build_into(work, ["."], [], dest)
        if "helm" in missing:
            gomod, info = mods["helm"]
            work = prepare_module("helm", gomod, key)
            client_go = go(
                ["list", "-m", "-f", "{{.Version}}", "k8s.io/client-go"], cwd=work, capture=True
            )
            parts = client_go.strip().lstrip("v").split(".")
            k8s_major, k8s_minor = str(int(parts[0]) + 1), parts[1]
            helm_flags = [
                f"-X helm.sh/helm/v3/internal/version.version={pins['HELM_VERSION']}",
                "-X helm.sh/helm/v3/internal/version.metadata=",
                "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
            ]
            for pkg in ("helm.sh/helm/v3/pkg/lint/rules", "helm.sh/helm/v3/pkg/chartutil"):
                helm_flags += [
                    f"-X {pkg}.k8sVersionMajor={k8s_major}",
                    f"-X {pkg}.k8sVersionMinor={k8s_minor}",
                ]
            build_into(work, ["helm.sh/helm/v3/cmd/helm"], helm_flags, dest)
        still = missing_binaries(dest)
        if still:
            fail(f"build finished but {', '.join(still)} missing from {dest}")
        log(f"all binaries ready in {dest} ({time.monotonic() - started:.0f}s)")
    return dest


def tool_path(pins: dict[str, str], name: str) -> Path:
    """Where the single-binary Go tool ``name`` is (or will be) built: bin/<name>-<version>/."""
    _, key = WRAPPERS[name]
    return cache_dir() / "bin" / f"{name}-{pins[key]}" / name


def ensure_tool(pins: dict[str, str], name: str) -> str:
    """A single-binary Go tool (actionlint, promtool), built once into bin/<name>-<version>/."""
    require, _ = WRAPPERS[name]
    binary = tool_path(pins, name)
    dest = binary.parent
    if os.access(binary, os.X_OK):
        return str(binary)
    with locked(cache_dir() / "bin" / ".build.lock"):
        if not os.access(binary, os.X_OK):
            dest.mkdir(parents=True, exist_ok=True)
            gomod, _ = generate_modules(pins, (name,))[name]
            work = prepare_module(name, gomod, dest.name)
            build_into(work, [f"{require}/cmd/{name}"], [], dest)
    return str(binary)


def pin(names: tuple[str, ...]) -> None:
    """Rewrite the committed wrapper go.mod/go.sum files from versions.env (after a bump)."""
    pins = read_pins()
    for name, (gomod, _) in generate_modules(pins, names).items():
        work = prepare_module(name, gomod, "pin")
        (work / "go.mod").write_text(gomod)
        (work / "go.sum").unlink(missing_ok=True)
        go(["mod", "tidy"], cwd=work)
        shutil.copy2(work / "go.mod", MODULES / name / "go.mod")
        shutil.copy2(work / "go.sum", MODULES / name / "go.sum")
        shutil.rmtree(work)
        log(f"updated {MODULES / name}/go.mod and go.sum")


# ---------------------------------------------------------------------------------------------
# Run
# ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def openssl(*args: str, cwd: Path) -> None:
    result = subprocess.run(
        ["openssl", *args],
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        fail(f"openssl {args[0]} failed: {result.stderr.strip()}")


def run(argv: list[str], check: bool = True) -> int:
    """Run a helper command quietly; with check, its failure stops us with its output."""
    result = subprocess.run(
        argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False
    )
    if check and result.returncode != 0:
        fail(f"`{shlex.join(argv)}` failed (exit {result.returncode}): {result.stderr.strip()}")
    return result.returncode


def issue_cert(pki: Path, name: str, subject: str, usage: str, san: str = "") -> None:
    """<name>.key and <name>.crt, signed by the CA in pki, for one extended key usage."""
    ext = [
        "[req]",
        "distinguished_name=dn",
        "[dn]",
        "[ext]",
        "basicConstraints=CA:FALSE",
        "keyUsage=digitalSignature,keyEncipherment",
        f"extendedKeyUsage={usage}",
    ]
    if san:
        ext.append(f"subjectAltName={san}")
    (pki / f"{name}.cnf").write_text("\n".join(ext) + "\n")
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", f"{name}.key", cwd=pki)
    openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    openssl(
        "x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "3650", "-sha256", "-extfile", f"{name}.cnf",
        "-extensions", "ext", "-out", f"{name}.crt", cwd=pki,
    )  # fmt: skip
    (pki / f"{name}.key").chmod(0o600)


def make_certs(pki: Path, address: str) -> None:
    """A throwaway CA, the API server's serving cert (for `address`, localhost and the
    `kubernetes` Service's names and IP), and the service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    openssl("ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key", cwd=pki)
    openssl(
        "req", "-x509", "-new", "-key", "ca.key", "-sha256", "-days", "3650",
        "-subj", "/CN=zomro-control-plane-ca", "-out", "ca.crt", cwd=pki,
    )  # fmt: skip
    ips = sorted({"127.0.0.1", address, SERVICE_IP})
    names = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    names.append("kubernetes.default.svc.cluster.local")
    san = ",".join([*(f"IP:{ip}" for ip in ips), *(f"DNS:{n}" for n in names)])
    issue_cert(pki, "apiserver", "/CN=kube-apiserver", "serverAuth", san)
    openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    for key in pki.glob("*.key"):
        key.chmod(0o600)


def write_kubeconfig(path: Path, server: str, ca: Path, token: str = "", cert: str = "") -> None:
    """A kubeconfig with the CA inlined, so it can be copied or mounted as is; the user is the
    admin token, or the client certificate `cert` (.crt/.key beside the CA)."""
    import base64

    def inline(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    if cert:
        user = (
            f"    client-certificate-data: {inline(ca.parent / f'{cert}.crt')}\n"
            f"    client-key-data: {inline(ca.parent / f'{cert}.key')}"
        )
    else:
        user = f"    token: {token}"
    text = f"""apiVersion: v1
kind: Config
clusters:
- name: zomro-control-plane
  cluster:
    server: {server}
    certificate-authority-data: {inline(ca)}
users:
- name: zomro-admin
  user:
{user}
contexts:
- name: zomro-control-plane
  context:
    cluster: zomro-control-plane
    user: zomro-admin
    namespace: default
current-context: zomro-control-plane
"""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def spawn(
    name: str, argv: list[str], state: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    logfile = state / "logs" / f"{name}.log"
    with logfile.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the shell that ran `up`, is not hit by its Ctrl-C
            cwd=state,
            env=env,
        )
    log(f"{name} started (pid {proc.pid}), log: {logfile}")
    return proc


def pid_is_ours(pid: int, binary: str) -> bool:
    """Guard against pid reuse: only signal a process still running our binary."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, UnicodeDecodeError):
        return False
    state_field = stat.rsplit(")", 1)[-1].split()[0]
    return state_field != "Z" and cmdline == binary


def http_ok(url: str, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url)  # noqa: S310
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        # Only the http(s) URLs built in this file are ever opened.
        with urllib.request.urlopen(request, timeout=3, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


def http_get_json(url: str, context: ssl.SSLContext, token: str) -> dict[str, Any] | None:
    """The JSON body of a 200 answer, or None."""
    request = urllib.request.Request(url)  # noqa: S310
    request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=3, context=context) as response:  # noqa: S310
            body: dict[str, Any] = json.loads(response.read())
            return body if response.status == 200 else None
    except (urllib.error.URLError, OSError, ssl.SSLError, ValueError):
        return None


class StartError(Exception):
    """A start that failed; `retryable` when a process died (e.g. a port taken meanwhile)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def wait_for(
    what: str,
    check: Callable[[], bool],
    deadline: float,
    procs: dict[str, subprocess.Popen[bytes]],
    state: Path,
) -> None:
    """Poll until ready; if a process dies or time runs out, stop the rest and keep the logs."""
    while time.monotonic() < deadline:
        if check():
            return
        # Our own children: poll() is exact, where /proc/<pid>/cmdline reads empty for a moment
        # right after exec.
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = tail_log(state / "logs" / f"{name}.log")
                terminate(procs)
                raise StartError(
                    f"{name} exited while waiting for {what}; logs in {state / 'logs'}; "
                    f"last lines of {name}.log:\n{tail}",
                    retryable=True,
                )
        time.sleep(0.25)
    terminate(procs)
    raise StartError(f"timed out waiting for {what}; logs in {state / 'logs'}", retryable=False)


def terminate(procs: dict[str, subprocess.Popen[bytes]]) -> None:
    """Stop what this `up` started, newest first, keeping the state dir for its logs."""
    for proc in reversed(list(procs.values())):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def tail_log(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def write_state(state: Path, record: dict[str, Any]) -> None:
    fd = os.open(state / "state.json", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(record, handle, indent=2)


def load_state(state: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads((state / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def is_running(state: Path) -> dict[str, Any] | None:
    """The recorded control plane, if all its processes live and the API server is ready."""
    data = load_state(state)
    if not data:
        return None
    pids: dict[str, int] = data.get("pids", {})
    binaries: dict[str, str] = data.get("binaries", {})
    if not pids or not all(pid_is_ours(pid, binaries[name]) for name, pid in pids.items()):
        return None
    context = ssl.create_default_context(cafile=str(state / "pki" / "ca.crt"))
    if not http_ok(f"{data['server']}/readyz", context, str(data["token"])):
        return None
    return data


def stop_all(state: Path) -> None:
    data = load_state(state)
    if data and data.get("node"):
        from . import node

        node.stop_node(state)
    stop_processes(state)
    if state.exists():
        shutil.rmtree(state, ignore_errors=True)


def stop_pid(name: str, pid: int | None, binary: str) -> None:
    """TERM a recorded process (only if it still runs our binary), KILL it after 15 s."""
    if not pid or not pid_is_ours(pid, binary):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and pid_is_ours(pid, binary):
        time.sleep(0.1)
    if pid_is_ours(pid, binary):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    log(f"stopped {name} (pid {pid})")


def stop_processes(state: Path) -> None:
    data = load_state(state)
    if data:
        pids: dict[str, int] = data.get("pids", {})
        binaries: dict[str, str] = data.get("binaries", {})
        for name in ("kube-controller-manager", "kube-apiserver", "etcd"):
            stop_pid(name, pids.get(name), binaries.get(name, ""))


def up(with_node: bool) -> Path:
    """Start (or reuse) the control plane of the state dir; returns its kubeconfig."""
    pins = read_pins()
    state = state_dir()
    kubeconfig = state / "kubeconfig"
    dest = ensure_built(pins)
    node_bins = None
    if with_node:
        from . import node

        node_bins = node.ensure_node_built(pins)
    # Two `up`s at once on one state dir must not both start: the second waits, then reuses.
    with locked(state.parent / f".{state.name}.lock", "an `up` or `down` of this state dir"):
        running = is_running(state)
        if running and with_node and not running.get("node"):
            log("running without a node; restarting it with one")
            stop_all(state)
            running = None
        if running:
            log(f"already running at {running['server']} (logs in {state / 'logs'})")
        else:
            for attempt in (1, 2):
                try:
                    start(state, dest, pins, node_bins)
                    break
                except StartError as exc:
                    if attempt == 2 or not exc.retryable:
                        fail(str(exc))
                    log(f"{exc}\nretrying once with fresh ports")
    return kubeconfig


def start(state: Path, dest: Path, pins: dict[str, str], node_bins: Path | None) -> None:
    """Start etcd, kube-apiserver and kube-controller-manager in a fresh state dir, and the
    node (see node.py) when node_bins is given."""
    from . import node

    started = time.monotonic()
    kubeconfig = state / "kubeconfig"
    if state.exists():
        log(f"clearing stale state in {state}")
        stop_all(state)
    (state / "logs").mkdir(parents=True)
    state.chmod(0o700)
    record: dict[str, Any] = {"node": node_bins is not None}
    # Without a node everything is on loopback; a node cannot use loopback (the kubelet refuses
    # it, and pods must reach the API server), so its bridge's host side serves instead.
    address = "127.0.0.1"
    if node_bins is not None:
        node.claim_machine(state)
        write_state(state, record)  # from here on, `down` knows to undo the network
        record["sysctls"] = node.setup_network(state)
        write_state(state, record)
        address = node.NODE_IP
    pki = state / "pki"
    make_certs(pki, address)
    if node_bins is not None:
        node.make_node_certs(pki)
    token = secrets.token_hex(24)
    (pki / "tokens.csv").write_text(f'{token},zomro-admin,zomro-admin,"system:masters"\n')
    (pki / "tokens.csv").chmod(0o600)

    binaries = {
        name: str(dest / name) for name in ("etcd", "kube-apiserver", "kube-controller-manager")
    }
    pids: dict[str, int] = {}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    etcd_port, peer_port, api_port, kcm_port = (free_port() for _ in range(4))
    server = f"https://{address}:{api_port}"
    record.update(
        server=server, token=token, pids=pids, binaries=binaries, bin_dir=str(dest), versions=pins
    )

    def save(procs: dict[str, subprocess.Popen[bytes]]) -> None:
        pids.update({name: proc.pid for name, proc in procs.items()})
        write_state(state, record)

    etcd_url = f"http://127.0.0.1:{etcd_port}"
    peer_url = f"http://127.0.0.1:{peer_port}"
    procs["etcd"] = spawn(
        "etcd",
        [
            binaries["etcd"],
            "--name=zomro",
            f"--data-dir={state / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=zomro={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        state,
    )
    save(procs)
    deadline = time.monotonic() + READY_TIMEOUT
    wait_for("etcd", lambda: http_ok(f"{etcd_url}/health"), deadline, procs, state)

    procs["kube-apiserver"] = spawn(
        "kube-apiserver",
        [
            binaries["kube-apiserver"],
            f"--etcd-servers={etcd_url}",
            f"--bind-address={address}",
            f"--advertise-address={address}",
            f"--secure-port={api_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC",
            "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer={server}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
            "--allow-privileged=true",
            *(node.apiserver_flags(pki) if node_bins is not None else []),
        ],
        state,
    )
    save(procs)
    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    wait_for(
        "kube-apiserver /readyz",
        lambda: http_ok(f"{server}/readyz", context, token),
        deadline,
        procs,
        state,
    )
    write_kubeconfig(kubeconfig, server, pki / "ca.crt", token)

    controllers = CONTROLLERS + (node.NODE_CONTROLLERS if node_bins is not None else ())
    procs["kube-controller-manager"] = spawn(
        "kube-controller-manager",
        [
            binaries["kube-controller-manager"],
            f"--kubeconfig={kubeconfig}",
            f"--authentication-kubeconfig={kubeconfig}",
            f"--authorization-kubeconfig={kubeconfig}",
            "--bind-address=127.0.0.1",
            f"--secure-port={kcm_port}",
            f"--cert-dir={state / 'kcm-certs'}",
            "--leader-elect=false",
            f"--controllers={','.join(controllers)}",
            f"--service-account-private-key-file={pki / 'sa.key'}",
            f"--root-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CIDR}",
        ],
        state,
    )
    save(procs)
    insecure = ssl.create_default_context()
    insecure.check_hostname = False
    insecure.verify_mode = ssl.CERT_NONE  # the controller-manager's own throwaway serving cert
    wait_for(
        "kube-controller-manager /healthz",
        lambda: http_ok(f"https://127.0.0.1:{kcm_port}/healthz", insecure),
        deadline,
        procs,
        state,
    )
    if node_bins is not None:
        node.start_node(state, pins, node_bins, server, deadline, procs, binaries, save)
    log(f"ready at {server} in {time.monotonic() - started:.1f}s (logs in {state / 'logs'})")
