#!/usr/bin/env python3
"""Benchmark the operator end to end: N BackupSchedules over M instances, applied at once.

Runs against a real kube-apiserver (a private `hack/control-plane` in its own state directory,
stopped afterwards, unless --kubeconfig names a running cluster) and a Zomro sandbox process with
one account owning M instances. Measures:

- time until every resource is Ready, and per resource apply -> Ready (p50/p95, from a watch),
- Zomro calls per created schedule (the sandbox's request log),
- while idle for several resync periods: Zomro calls per period (schedule and backup listings)
  and writes to the API server (MODIFIED events of the BackupSchedules on a watch),
- the operator's RSS (VmRSS, and VmHWM: the peak) from /proc,
- time to delete all (finalizers included, until the API server has none left).

Prints a table and, with --json PATH, writes every figure as JSON. With --repeat K it runs K
times, each on a fresh control plane and sandbox, and prints the spread of the main figures
(min, median, max): one run cannot show a change smaller than two runs of one code differ by.
Run it with the repo's venv:

    .venv/bin/python hack/bench --resources 200 --instances 20 --resync 20 --rps 10
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from devkit.launchers import control_plane, launcher_info, operator_command
from devkit.processes import free_port
from devkit.waiting import wait_for
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

import zomro_backup_operator
from zomro_backup_operator.resources import GROUP, PLURAL, VERSION, ready_at_generation
from zomro_backup_operator.sandbox.control import SandboxProcess, start_sandbox_process
from zomro_backup_operator.zomro.funcs import FUNC_BACKUPS, FUNC_SCHEDULES

REPO = Path(__file__).resolve().parents[1]
CRD = REPO / "crds" / "backupschedules.zomro.com.yaml"
USERNAME = "bench"
PASSWORD = "pw-bench-" + uuid.uuid4().hex[:12]
FIRST_INSTANCE = 9_000_001
DAY_NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]


def say(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- environment


@dataclass
class ControlPlane:
    kubeconfig: Path
    state_dir: Path | None
    """Set when this run started its own control plane (and must stop it)."""


def start_control_plane(args: argparse.Namespace) -> ControlPlane:
    if args.kubeconfig:
        return ControlPlane(Path(args.kubeconfig), None)
    state = Path(tempfile.mkdtemp(prefix="zomro-bench-cp-"))
    say(f"starting a private control plane in {state}")
    result = control_plane("up", state_dir=state, timeout=600)
    if result.returncode != 0:
        raise SystemExit(f"hack/control-plane up failed:\n{result.stderr}")
    return ControlPlane(state / "kubeconfig", state)


def stop_control_plane(plane: ControlPlane) -> None:
    if plane.state_dir is None:
        return
    control_plane("down", state_dir=plane.state_dir)
    shutil.rmtree(plane.state_dir, ignore_errors=True)


def instance_ids(count: int) -> list[str]:
    return [str(FIRST_INSTANCE + n) for n in range(count)]


def sandbox_config(instances: int) -> str:
    rows = [{"id": ident, "name": f"vps-{n}"} for n, ident in enumerate(instance_ids(instances))]
    return yaml.safe_dump(
        {
            "accounts": [{"username": USERNAME, "password": PASSWORD, "instances": rows}],
            "login_failures_before_block": 0,
            # A schedule whose time comes during the run would keep its instance busy with a
            # backup and refuse the deletions there for minutes (as Zomro would): that measures
            # the time of day the bench ran at, not the operator.
            "scheduled_backups_busy": False,
        }
    )


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback URL)
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def memory_kb(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, in kB."""
    out: dict[str, int] = {}
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


# --------------------------------------------------------------------------- the watch


@dataclass
class Seen:
    """What a watch on the namespace's BackupSchedules saw, with local monotonic times."""

    ready_at: dict[str, float] = field(default_factory=dict)
    gone_at: dict[str, float] = field(default_factory=dict)
    checked: set[str] = field(default_factory=set)
    """Resources whose backups the operator has checked once (BackupsHealthy in status)."""
    events: list[tuple[float, str, str, str]] = field(default_factory=list)
    """(time, type, name, resourceVersion) of every event."""
    changed: list[tuple[float, frozenset[str]]] = field(default_factory=list)
    """(time, what changed) of every MODIFIED event: status fields by name, else "metadata"."""
    last: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Each resource's body at its last event."""
    lock: threading.Lock = field(default_factory=threading.Lock)
    listed: threading.Event = field(default_factory=threading.Event)
    """Set once the watch has its starting resourceVersion."""

    def count(self, kind: str, since: float, until: float = float("inf")) -> int:
        with self.lock:
            return sum(1 for t, k, _, _ in self.events if k == kind and since <= t < until)

    def record(self, now: float, kind: str, body: dict[str, Any]) -> None:
        """One watch event (or, as LISTED, a resource as a list after a gap shows it)."""
        name = body["metadata"]["name"]
        with self.lock:
            self.events.append((now, kind, name, body["metadata"]["resourceVersion"]))
            before = self.last.get(name)
            if kind in ("MODIFIED", "LISTED") and before is not None:
                changed = what_changed(before, body)
                if changed:
                    self.changed.append((now, changed))
            self.last[name] = body
            if kind == "DELETED":
                self.gone_at.setdefault(name, now)
                return
            if name not in self.ready_at and ready_at_generation(body):
                self.ready_at[name] = now
            conditions = (body.get("status") or {}).get("conditions") or []
            if any(c.get("type") == "BackupsHealthy" for c in conditions):
                self.checked.add(name)

    def changes(self, since: float, until: float = float("inf")) -> dict[str, int]:
        """What the MODIFIED events in the window changed: how many changed each field."""
        with self.lock:
            counted = Counter(f for t, fields in self.changed if since <= t < until for f in fields)
        return dict(counted)

    def last_event(self) -> float:
        with self.lock:
            return self.events[-1][0] if self.events else 0.0


def watch_forever(api: client.ApiClient, namespace: str, seen: Seen, stop: threading.Event) -> None:
    custom = client.CustomObjectsApi(api)
    version = _list(custom, namespace)["metadata"]["resourceVersion"]
    seen.listed.set()
    while not stop.is_set():
        stream = watch.Watch()  # type: ignore[no-untyped-call]
        try:
            for event in stream.stream(  # type: ignore[no-untyped-call]
                custom.list_namespaced_custom_object,
                GROUP,
                VERSION,
                namespace,
                PLURAL,
                resource_version=version,
                timeout_seconds=300,
                # Bookmarks keep the version current, so that a new stream rarely starts from
                # one the watch cache has dropped (410, and a costly list of everything).
                allow_watch_bookmarks=True,
            ):
                body = event["object"]
                if event["type"] == "ERROR":
                    raise ApiException(status=body.get("code", 0), reason=body.get("message"))
                version = body["metadata"]["resourceVersion"]
                if event["type"] != "BOOKMARK":
                    seen.record(time.monotonic(), event["type"], body)
                if stop.is_set():
                    break
        except ApiException as exc:
            if exc.status == 410:  # too old (10 000 resources outrun the watch cache): list again
                version = relist(custom, namespace, seen)
            else:
                time.sleep(0.5)
        except Exception:  # a dropped stream: resume from the last version
            time.sleep(0.5)
        finally:
            stream.stop()  # type: ignore[no-untyped-call]


def relist(custom: client.CustomObjectsApi, namespace: str, seen: Seen) -> str:
    """After a gap in the watch: what the list shows counts as seen now (a Ready that fell in
    the gap is counted late, by the time of the list), and those gone as deleted now."""
    listed = _list(custom, namespace)
    now = time.monotonic()
    names = set()
    for body in listed["items"]:
        names.add(body["metadata"]["name"])
        seen.record(now, "LISTED", body)
    with seen.lock:
        gone = [name for name in seen.last if name not in names and name not in seen.gone_at]
    for name in gone:
        seen.record(now, "DELETED", {"metadata": {"name": name, "resourceVersion": ""}})
    return str(listed["metadata"]["resourceVersion"])


def what_changed(before: dict[str, Any], after: dict[str, Any]) -> frozenset[str]:
    """The status fields that differ between two versions of a resource, or "metadata" (the
    finalizer, kopf's annotations) or "spec" when those do."""
    old, new = before.get("status") or {}, after.get("status") or {}
    fields = {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}
    for part in ("spec", "metadata"):
        strip = ("resourceVersion", "managedFields", "generation")
        a = {k: v for k, v in (before.get(part) or {}).items() if k not in strip}
        b = {k: v for k, v in (after.get(part) or {}).items() if k not in strip}
        if a != b:
            fields.add(part)
    return frozenset(fields)


def _list(custom: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    """The namespace's BackupSchedules as the API server lists them (a list object)."""
    listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)
    assert isinstance(listed, dict)
    return listed


# --------------------------------------------------------------------------- the run


def body_for(n: int, instances: list[str]) -> dict[str, Any]:
    days = sorted({DAY_NAMES[(n + k) % 7] for k in range(1 + n % 5)}, key=DAY_NAMES.index)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BackupSchedule",
        "metadata": {"name": f"bench-{n:05d}"},
        "spec": {
            "instanceId": instances[n % len(instances)],
            "scheduleName": f"bench-{n:05d}",
            "days": days,
            "time": f"{n % 24:02d}:{n % 60:02d}",
            "credentialsSecretRef": {"name": "zomro"},
        },
    }


def schedules_held(sandbox: SandboxProcess, instances: list[str]) -> dict[str, list[Any]]:
    """Each instance's schedules at Zomro, from one read of the sandbox's state (a read per
    instance would send the whole state 500 times at 10 000)."""
    held = sandbox.control.state()["instances"]
    return {ident: list(held[ident]["schedules"]) for ident in instances}


def percentile(values: list[float], share: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(share * (len(ordered) - 1))))
    return ordered[index]


def funcs(records: list[dict[str, Any]]) -> dict[str, int]:
    return dict(Counter(str(r["func"]) for r in records))


def failures(records: list[dict[str, Any]]) -> dict[str, int]:
    """Calls that did not answer ``ok``, by func and outcome."""
    return dict(Counter(f"{r['func']} {r['outcome']}" for r in records if r["outcome"] != "ok"))


def at_once(
    action: Callable[[dict[str, Any]], None],
    bodies: list[dict[str, Any]],
    concurrency: int,
    what: str,
    done: Callable[[], bool],
    timeout: float,
) -> tuple[float, float]:
    """Apply ``action`` to every body from ``concurrency`` threads, then wait until ``done``.
    Returns when it started and how long applying took (monotonic seconds)."""
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(action, bodies))
    applied = time.monotonic() - started
    wait_for(what, done, timeout=timeout, interval=0.1)
    return started, applied


def profiled(command: list[str], args: argparse.Namespace, suffix: str = "") -> list[str]:
    """The operator's command, under pyinstrument (--profile) or memray (--memray) if asked,
    writing to the given path plus ``suffix``."""
    if args.profile:
        tool = ["pyinstrument", "--renderer", "text", "-o", f"{args.profile}{suffix}"]
    elif args.memray:
        # Aggregated: only what the high-water mark needs (hack/memory_peak.py); a full capture
        # of a run at 10 000 resources would take gigabytes.
        tool = ["memray", "run", "--aggregate", "--force", "--output", f"{args.memray}{suffix}"]
    else:
        return command
    return [sys.executable, "-m", *tool, "-m", "zomro_backup_operator", *command[3:]]


def launch_operator(
    command: list[str], env: dict[str, str], log_path: Path, liveness: str, *, append: bool = False
) -> subprocess.Popen[bytes]:
    with log_path.open("ab" if append else "wb") as log:
        operator = subprocess.Popen(
            command, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    wait_for("the operator's liveness endpoint", lambda: http_ok(liveness), timeout=60)
    return operator


def stop_operator(operator: subprocess.Popen[bytes], args: argparse.Namespace) -> None:
    """SIGTERM (SIGINT under a profiler, so that it writes its report), then wait."""
    if operator.poll() is not None:
        return
    operator.send_signal(signal.SIGINT if args.profile or args.memray else signal.SIGTERM)
    try:
        operator.wait(timeout=60)
    except subprocess.TimeoutExpired:
        operator.kill()
        operator.wait()


def confirmed(metrics_url: str) -> float:
    """How many BackupSchedules the operator has found Ready since it started (its gauge)."""
    try:
        with urllib.request.urlopen(metrics_url, timeout=2) as response:  # noqa: S310 (loopback)
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return 0.0
    for line in text.splitlines():
        if line.startswith('zomro_operator_schedules{ready="true"}'):
            return float(line.split()[-1])
    return 0.0


def api_client(kubeconfig: Path, pool: int) -> client.ApiClient:
    configuration = client.Configuration()
    config.load_kube_config(  # type: ignore[no-untyped-call]
        config_file=str(kubeconfig), client_configuration=configuration
    )
    configuration.connection_pool_maxsize = pool
    return client.ApiClient(configuration)


def run(args: argparse.Namespace) -> dict[str, Any]:
    source = source_version()  # before the operator starts from the working tree
    plane = start_control_plane(args)
    home = Path(tempfile.mkdtemp(prefix="zomro-bench-"))
    sandbox: SandboxProcess | None = None
    operator: subprocess.Popen[bytes] | None = None
    stop = threading.Event()
    namespace = f"zbench-{uuid.uuid4().hex[:6]}"
    api = api_client(plane.kubeconfig, args.concurrency + 4)
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    try:
        binary = Path(launcher_info()["bin_dir"]) / "kubectl"
        kubectl = [str(binary), f"--kubeconfig={plane.kubeconfig}"]
        subprocess.run([*kubectl, "apply", "-f", str(CRD)], check=True, capture_output=True)
        subprocess.run(
            [
                *kubectl,
                "wait",
                "--for=condition=Established",
                "--timeout=60s",
                "crd/backupschedules.zomro.com",
            ],
            check=True,
            capture_output=True,
        )
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace)))
        core.create_namespaced_secret(
            namespace,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="zomro"),
                string_data={"username": USERNAME, "password": PASSWORD},
            ),
        )
        (home / "sandbox.yaml").write_text(sandbox_config(args.instances))
        sandbox = start_sandbox_process(config=home / "sandbox.yaml", log_path=home / "sandbox.log")
        instances = instance_ids(args.instances)

        liveness = f"http://127.0.0.1:{free_port()}/healthz"
        metrics_port = free_port()
        env = {
            **os.environ,
            "KUBECONFIG": str(plane.kubeconfig),
            "ZOMRO_API_URL": sandbox.url,
            "ZOMRO_RESYNC_SECONDS": str(args.resync),
            "ZOMRO_BACKUP_CHECK_SECONDS": str(args.backup_check or args.resync),
            "ZOMRO_MAX_REQUESTS_PER_SECOND": str(args.rps),
            "ZOMRO_METRICS_PORT": str(metrics_port),
            "ZOMRO_LOG_LEVEL": args.log_level,
        }
        operator_log = home / "operator.log"
        command = operator_command("-n", namespace, f"--liveness={liveness}")
        operator = launch_operator(profiled(command, args), env, operator_log, liveness)
        say(f"operator pid {operator.pid} up; namespace {namespace}; sandbox {sandbox.url}")

        seen = Seen()
        watcher = threading.Thread(
            target=watch_forever, args=(api, namespace, seen, stop), daemon=True
        )
        watcher.start()
        # Listed: every create from now on has a later resourceVersion, so the watch sees it.
        wait_for("the watch to list the namespace", seen.listed.is_set, timeout=60)

        # ---- create -------------------------------------------------------------------
        sandbox.control.clear_requests()
        bodies = [body_for(n, instances) for n in range(args.resources)]
        applied_at: dict[str, float] = {}

        def create(body: dict[str, Any]) -> None:
            applied_at[body["metadata"]["name"]] = time.monotonic()
            custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)

        say(f"creating {args.resources} resources over {args.instances} instances")
        ready_timeout = args.ready_timeout or max(120.0, args.resources * 2.0 / args.rps * 3)
        started, applied = at_once(
            create,
            bodies,
            args.concurrency,
            "every resource to be Ready",
            lambda: len(seen.ready_at) >= args.resources,
            ready_timeout,
        )
        all_ready = max(seen.ready_at.values()) - started
        latencies = [seen.ready_at[name] - applied_at[name] for name in applied_at]
        create_requests = sandbox.control.requests()
        memory_after_create = memory_kb(operator.pid)
        held = schedules_held(sandbox, instances)
        remote_total = sum(len(rows) for rows in held.values())
        wanted = {b["spec"]["scheduleName"] for b in bodies}
        remote_names = Counter(row["name"] for rows in held.values() for row in rows)
        exact = remote_total == args.resources and all(remote_names[n] == 1 for n in wanted)
        say(f"all Ready in {all_ready:.1f}s; Zomro holds {remote_total} schedules")

        # ---- settle, then idle ------------------------------------------------------------
        wait_for(
            "every resource's first backup check",
            lambda: len(seen.checked) >= args.resources,
            timeout=ready_timeout,
        )
        quiet_for = 3.0
        wait_for(
            "the API server to go quiet after the creates",
            lambda: time.monotonic() - seen.last_event() >= quiet_for,
            timeout=120,
        )
        sandbox.control.clear_requests()
        idle_start = time.monotonic()
        say(f"idle for {args.idle_periods} resync periods of {args.resync:g}s")
        time.sleep(args.idle_periods * args.resync)  # the measuring window itself
        idle_end = time.monotonic()
        idle_requests = sandbox.control.requests()
        idle_writes = seen.count("MODIFIED", idle_start, idle_end)
        memory_after_idle = memory_kb(operator.pid)

        # ---- restart ------------------------------------------------------------------------
        restart: dict[str, Any] = {}
        if args.restart:
            stop_operator(operator, args)
            sandbox.control.clear_requests()
            say("restarting the operator over every synced resource")
            restart_start = time.monotonic()
            again = profiled(command, args, ".restart")
            operator = launch_operator(again, env, operator_log, liveness, append=True)
            metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
            wait_for(
                "the restarted operator to confirm every resource",
                lambda: confirmed(metrics_url) >= args.resources,
                timeout=ready_timeout,
                interval=0.2,
            )
            confirmed_at = time.monotonic()
            restart_requests = sandbox.control.requests()
            time.sleep(quiet_for)  # writes that the confirmations may still cause
            restart_lists = sum(1 for r in restart_requests if r["func"] == FUNC_SCHEDULES)
            restart = {
                "all_confirmed_seconds": round(confirmed_at - restart_start, 2),
                "zomro_calls": len(restart_requests),
                "zomro_calls_by_func": funcs(restart_requests),
                "schedule_lists_per_instance": round(restart_lists / args.instances, 2),
                "api_writes": seen.count("MODIFIED", restart_start),
                "api_writes_changed": seen.changes(restart_start),
                "memory_kb": memory_kb(operator.pid),
            }
            say(f"all confirmed {restart['all_confirmed_seconds']:.1f}s after the restart")

        # ---- delete ---------------------------------------------------------------------
        sandbox.control.clear_requests()
        say("deleting all")

        def delete(body: dict[str, Any]) -> None:
            custom.delete_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, body["metadata"]["name"]
            )

        started, _ = at_once(
            delete,
            bodies,
            args.concurrency,
            "every resource to be gone",
            lambda: len(seen.gone_at) >= args.resources,
            ready_timeout,
        )
        delete_all = max(seen.gone_at.values()) - started
        delete_requests = sandbox.control.requests()
        remote_left = sum(len(rows) for rows in schedules_held(sandbox, instances).values())
        memory_end = memory_kb(operator.pid)
        crashed = operator.poll() is not None
        log_text = operator_log.read_text(errors="replace")
        leaked = PASSWORD in log_text

        periods = args.idle_periods
        idle_lists = sum(1 for r in idle_requests if r["func"] == FUNC_SCHEDULES)
        idle_backup_lists = sum(1 for r in idle_requests if r["func"] == FUNC_BACKUPS)
        return {
            "settings": {
                "resources": args.resources,
                "instances": args.instances,
                "resync_seconds": args.resync,
                "backup_check_seconds": args.backup_check or args.resync,
                "max_requests_per_second": args.rps,
                "idle_periods": periods,
                "create_concurrency": args.concurrency,
                "log_level": args.log_level,
            },
            "source": source,
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
            },
            "create": {
                "apply_seconds": round(applied, 2),
                "all_ready_seconds": round(all_ready, 2),
                "ready_p50_seconds": round(percentile(latencies, 0.50), 2),
                "ready_p95_seconds": round(percentile(latencies, 0.95), 2),
                "ready_max_seconds": round(max(latencies), 2),
                "zomro_calls": len(create_requests),
                "zomro_calls_per_schedule": round(len(create_requests) / args.resources, 2),
                "zomro_calls_by_func": funcs(create_requests),
                "zomro_failures": failures(create_requests),
                "remote_schedules": remote_total,
                "exactly_one_each": exact,
            },
            "idle": {
                "seconds": round(idle_end - idle_start, 1),
                "zomro_calls": len(idle_requests),
                "zomro_calls_per_period": round(len(idle_requests) / periods, 1),
                "schedule_lists_per_period": round(idle_lists / periods, 1),
                "backup_lists_per_period": round(idle_backup_lists / periods, 1),
                "zomro_calls_by_func": funcs(idle_requests),
                "zomro_failures": failures(idle_requests),
                "api_writes": idle_writes,
                "api_writes_changed": seen.changes(idle_start, idle_end),
            },
            "delete": {
                "all_gone_seconds": round(delete_all, 2),
                "zomro_calls": len(delete_requests),
                "zomro_calls_by_func": funcs(delete_requests),
                "zomro_failures": failures(delete_requests),
                "remote_schedules_left": remote_left,
            },
            "memory_kb": {
                "after_create": memory_after_create,
                "after_idle": memory_after_idle,
                "end": memory_end,
                "peak_rss_mb": round(memory_end.get("VmHWM", 0) / 1024, 1),
            },
            "restart": restart,
            "operator": {"crashed": crashed, "password_in_log": leaked},
        }
    finally:
        stop.set()
        if operator is not None:
            stop_operator(operator, args)
        try:
            for item in _list(custom, namespace)["items"]:
                custom.patch_namespaced_custom_object(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    item["metadata"]["name"],
                    {"metadata": {"finalizers": []}},
                )
            core.delete_namespace(namespace)
        except Exception as exc:  # cleanup is best effort
            say(f"cleanup of {namespace}: {type(exc).__name__}")
        if sandbox is not None:
            sandbox.stop()
        api.close()  # type: ignore[no-untyped-call]
        if args.keep_logs:
            say(f"logs kept in {home}")
        else:
            shutil.rmtree(home, ignore_errors=True)
        stop_control_plane(plane)


def source_version() -> str:
    """The commit the operator ran from, with -dirty when the working tree had changes: that of
    the package this process imports, as the operator does (PYTHONPATH may name a worktree)."""
    package = Path(zomro_backup_operator.__file__).resolve().parent
    result = subprocess.run(
        ["git", "-C", str(package), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


# --------------------------------------------------------------------------- the report

TARGETS_NOTE = "targets apply at 200 resources / 20 instances"


def table(result: dict[str, Any]) -> str:
    s, c, i, d, m = (result[k] for k in ("settings", "create", "idle", "delete", "memory_kb"))
    rate = f"{s['resync_seconds']:g} s, {s['max_requests_per_second']:g} req/s"
    latency = f"{c['ready_p50_seconds']:.1f} s / {c['ready_p95_seconds']:.1f} s"
    idle_calls = f"{i['zomro_calls_per_period']:.1f}"
    rows = [
        ("resources / instances", f"{s['resources']} / {s['instances']}", ""),
        ("resync period, rate limit", rate, ""),
        ("all Ready", f"{c['all_ready_seconds']:.1f} s", "<= 60 s"),
        ("apply -> Ready p50 / p95", latency, ""),
        ("Zomro calls per created schedule", f"{c['zomro_calls_per_schedule']:.2f}", "<= 3"),
        ("exactly one schedule each", str(c["exactly_one_each"]), "True"),
        ("idle Zomro calls per period", idle_calls, f"<= {2 * s['instances']}"),
        (
            "  of which schedule lists",
            f"{i['schedule_lists_per_period']:.1f}",
            f"<= {s['instances']}",
        ),
        ("  of which backup lists", f"{i['backup_lists_per_period']:.1f}", f"<= {s['instances']}"),
        ("idle writes to the API server", str(i["api_writes"]), "0"),
        ("operator RSS peak (VmHWM)", f"{m['peak_rss_mb']:.0f} MB", "<= 200 MB"),
        ("delete all", f"{d['all_gone_seconds']:.1f} s", "<= 60 s"),
        ("schedules left after delete", str(d["remote_schedules_left"]), "0"),
    ]
    r = result["restart"]
    if r:
        rows[-2:-2] = [
            ("restart: all confirmed", f"{r['all_confirmed_seconds']:.1f} s", ""),
            (
                "restart: schedule lists per instance",
                f"{r['schedule_lists_per_instance']:.2f}",
                "<= 1",
            ),
            ("restart: Zomro calls", str(r["zomro_calls"]), ""),
            ("restart: writes to the API server", str(r["api_writes"]), "0"),
            ("restart: RSS peak", f"{r['memory_kb'].get('VmHWM', 0) / 1024:.0f} MB", ""),
        ]
    width = max(len(r[0]) for r in rows)
    value_width = max(len(r[1]) for r in rows)
    lines = [f"{'measure':<{width}}  {'value':<{value_width}}  target ({TARGETS_NOTE})"]
    lines += [f"{a:<{width}}  {b:<{value_width}}  {t}" for a, b, t in rows]
    return "\n".join(lines)


def _mb(memory: dict[str, int]) -> float | None:
    return round(memory["VmHWM"] / 1024, 1) if "VmHWM" in memory else None


SPREAD_FIGURES: dict[str, Callable[[dict[str, Any]], float | None]] = {
    "all Ready (s)": lambda r: r["create"]["all_ready_seconds"],
    "Zomro calls per created schedule": lambda r: r["create"]["zomro_calls_per_schedule"],
    "RSS peak through the creates (MB)": lambda r: _mb(r["memory_kb"]["after_create"]),
    "idle Zomro calls per period": lambda r: r["idle"]["zomro_calls_per_period"],
    "idle writes to the API server": lambda r: r["idle"]["api_writes"],
    "restart: all confirmed (s)": lambda r: (r["restart"] or {}).get("all_confirmed_seconds"),
    "restart: writes to the API server": lambda r: (r["restart"] or {}).get("api_writes"),
    "restart: RSS peak (MB)": lambda r: _mb((r["restart"] or {}).get("memory_kb", {})),
    "delete all (s)": lambda r: r["delete"]["all_gone_seconds"],
    "RSS peak of the last operator (MB)": lambda r: r["memory_kb"]["peak_rss_mb"],
}
"""What ``--repeat`` reports the spread of; a figure a run lacks (no restart) is left out."""


def spread(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Each figure's min, median, max and range over the runs that have it."""
    figures: dict[str, dict[str, float]] = {}
    for name, read in SPREAD_FIGURES.items():
        values = sorted(v for v in map(read, results) if v is not None)
        if values:
            low, high = values[0], values[-1]
            median = statistics.median(values)
            figures[name] = {"min": low, "median": median, "max": high, "range": high - low}
    return figures


def spread_table(figures: dict[str, dict[str, float]], runs: int) -> str:
    width = max((len(name) for name in figures), default=0)
    lines = [f"{f'over {runs} runs':<{width}}  {'min':>9}  {'median':>9}  {'max':>9}  {'range':>9}"]
    for name, f in figures.items():
        cells = "  ".join(f"{f[k]:>9.2f}" for k in ("min", "median", "max", "range"))
        lines.append(f"{name:<{width}}  {cells}")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--resources", type=int, default=200, help="N BackupSchedules")
    parser.add_argument("--instances", type=int, default=20, help="M instances, one account")
    parser.add_argument("--resync", type=float, default=20.0, help="ZOMRO_RESYNC_SECONDS")
    parser.add_argument(
        "--rps", type=float, default=10.0, help="ZOMRO_MAX_REQUESTS_PER_SECOND (operator: 5)"
    )
    parser.add_argument(
        "--backup-check",
        type=float,
        default=0.0,
        help="ZOMRO_BACKUP_CHECK_SECONDS (0: the resync period, so a period holds one of each)",
    )
    parser.add_argument("--idle-periods", type=int, default=3, help="resync periods to idle")
    parser.add_argument("--concurrency", type=int, default=16, help="parallel API calls to apply")
    parser.add_argument("--ready-timeout", type=float, default=0.0, help="seconds; 0: derived")
    parser.add_argument("--log-level", default="INFO", help="ZOMRO_LOG_LEVEL of the operator")
    parser.add_argument("--kubeconfig", help="use this running cluster instead of a private one")
    parser.add_argument("--json", metavar="PATH", help="write the figures here as JSON")
    parser.add_argument("--profile", metavar="PATH", help="run the operator under pyinstrument")
    parser.add_argument(
        "--memray", metavar="PATH", help="run the operator under memray (its capture file)"
    )
    parser.add_argument(
        "--no-restart",
        dest="restart",
        action="store_false",
        help="skip restarting the operator over the synced resources before the deletes",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the operator/sandbox logs")
    parser.add_argument(
        "--repeat", type=int, default=1, help="run K times and print the spread of the figures"
    )
    args = parser.parse_args()
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    results: list[dict[str, Any]] = []
    for number in range(1, args.repeat + 1):
        if args.repeat > 1:
            say(f"run {number} of {args.repeat}")
        results.append(run(args))
        print(table(results[-1]))
    report: dict[str, Any] = results[0]
    if args.repeat > 1:
        figures = spread(results)
        print(spread_table(figures, len(results)))
        report = {"runs": results, "spread": figures}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        say(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
