"""Faults while the operator works: crashes, a flaky Zomro, a restarting API server, an outage
during deletions, hostile answers. Every run ends with the same invariants
(``harness.check_invariants``): exactly one Zomro schedule per resource with its spec's values,
none for deleted ones, nothing stuck in Terminating, no secret in logs, Events or status.

Kept to a few minutes in ``make test``; the longer variants are ``slow`` (``make chaos``).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
from devkit.launchers import control_plane
from harness import (
    CRD,
    INSTANCE,
    PASSWORD,
    RESYNC_SECONDS,
    SECOND_INSTANCE,
    USERNAME,
    Cluster,
    OperatorProcess,
    check_invariants,
    create_many,
    delete_many,
    list_bodies,
    lists_seen,
    mass_spec,
    operator_env,
    wait_all_gone,
    wait_all_ready,
    wait_for,
    worst_wait,
)
from kubernetes import client, config

from zomro_backup_operator.resources import GROUP, PLURAL, VERSION
from zomro_backup_operator.sandbox.control import SandboxControl, SandboxProcess

REPO = Path(__file__).resolve().parents[2]


def specs_for(count: int, prefix: str = "c") -> dict[str, dict[str, Any]]:
    """``count`` distinct resources, alternating between the account's two instances."""
    return {
        f"{prefix}{n:03d}": mass_spec(n, INSTANCE if n % 2 else SECOND_INSTANCE)
        for n in range(count)
    }


def remote_count(control: SandboxControl) -> int:
    return len(control.schedules(INSTANCE)) + len(control.schedules(SECOND_INSTANCE))


def at_least(control: SandboxControl, count: int) -> Callable[[], bool]:
    return lambda: remote_count(control) >= count


def at_most(control: SandboxControl, count: int) -> Callable[[], bool]:
    return lambda: remote_count(control) <= count


def assert_running(operator: OperatorProcess) -> None:
    """The operator process is alive (it did not exit or crash)."""
    assert operator.process is not None
    assert operator.process.poll() is None, f"operator exited {operator.process.returncode}"


def kill_and_restart(operator: OperatorProcess) -> None:
    operator.kill()
    operator.start()


# --------------------------------------------------------------------------- crashes


def crash_during_create(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess, count: int, kills: int
) -> None:
    control = sandbox.control
    control.set_faults(latency=0.1)  # spreads the creates over seconds, so kills land inside
    specs = specs_for(count)
    create_many(cluster, specs)
    for k in range(1, kills + 1):
        threshold = count * k // (kills + 1)
        wait_for(f"{threshold} schedules at Zomro", at_least(control, threshold))
        kill_and_restart(operator)

    wait_all_ready(cluster, list(specs), timeout=120 + count)
    check_invariants(cluster, control, operator, live=specs)
    assert operator.starts == kills + 1


def crash_during_delete(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess, count: int, kills: int
) -> None:
    control = sandbox.control
    specs = specs_for(count)
    create_many(cluster, specs)
    wait_all_ready(cluster, list(specs), timeout=60 + count)
    control.set_faults(latency=0.1)

    delete_many(cluster, list(specs))
    for k in range(1, kills + 1):
        threshold = count - count * k // (kills + 1)
        wait_for(f"at most {threshold} schedules left", at_most(control, threshold))
        kill_and_restart(operator)

    wait_all_gone(cluster, list(specs), timeout=120 + count)
    check_invariants(cluster, control, operator, live={}, deleted=list(specs))


def test_repeated_sigkills_during_a_mass_create_leave_exactly_one_schedule_each(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    crash_during_create(cluster, operator, sandbox, count=30, kills=3)


def test_repeated_sigkills_during_a_mass_delete_leave_no_schedule_behind(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    crash_during_delete(cluster, operator, sandbox, count=30, kills=3)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_mass_delete_while_the_drift_checks_run_leaves_no_schedule_behind(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    # The drift checks pass every RESYNC_SECONDS; at 5 requests a second the deletions take
    # several passes, and a pass's listing waits behind them, so that checks of resources whose
    # deletion has begun are due all along (a check that read a resource before its deletion
    # would recreate the schedule the deletion had just removed).
    control = sandbox.control
    specs = specs_for(60, prefix="d")
    create_many(cluster, specs)
    wait_all_ready(cluster, list(specs), timeout=120)
    control.clear_requests()
    operator.restart_with(ZOMRO_MAX_REQUESTS_PER_SECOND="5")
    # Two listings when it starts (one per instance), two more at its first drift pass.
    wait_for("a drift pass of the restarted operator", lambda: lists_seen(control) >= 4)

    delete_many(cluster, list(specs))

    wait_all_gone(cluster, list(specs), timeout=180)
    check_invariants(cluster, control, operator, live={}, deleted=list(specs))


def test_many_sigkills_during_a_large_create_and_delete(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    crash_during_create(cluster, operator, sandbox, count=150, kills=8)
    sandbox.control.clear_faults()
    names = list(list_bodies(cluster))
    delete_many(cluster, names)
    wait_all_gone(cluster, names, timeout=300)
    crash_during_delete(cluster, operator, sandbox, count=150, kills=8)


# --------------------------------------------------------------------------- a flaky Zomro


class SessionExpirer:
    """Ends every sandbox session every ``every`` seconds, in a thread, for at most ``limit``."""

    def __init__(self, control: SandboxControl, every: float, limit: float) -> None:
        self.control = control
        self.every = every
        self.limit = limit
        self.expired = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.wait(self.every) and time.monotonic() < deadline:
            self.expired += self.control.expire_sessions()

    def __enter__(self) -> SessionExpirer:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


def flaky_zomro_run(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess, count: int, limit: float
) -> None:
    control = sandbox.control
    control.set_faults(error_rate=0.3, latency=0.05)
    specs = specs_for(count)
    with SessionExpirer(control, every=2.0, limit=limit) as expirer:
        create_many(cluster, specs)
        wait_all_ready(cluster, list(specs), timeout=limit)

        changed = list(specs)[: count // 4]
        deleted = list(specs)[count // 4 : count // 2]
        for name in changed:
            cluster.patch_spec(name, time="03:33", days=["Sunday"])
            specs[name] = {**specs[name], "time": "03:33", "days": ["Sunday"]}
        delete_many(cluster, deleted)
        live = {name: spec for name, spec in specs.items() if name not in deleted}
        wait_all_gone(cluster, deleted, timeout=limit)
        wait_all_ready(cluster, list(live), timeout=limit)
    assert expirer.expired > 0, "no session was ever expired"
    assert any(r["outcome"].startswith("http:5") for r in control.requests())
    check_invariants(cluster, control, operator, live=live, deleted=deleted)


@pytest.mark.timeout(900)
def test_server_errors_latency_and_expiring_sessions_still_converge(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    # At 30 % errors about a third of the attempts fail; six in a row (about 1 in 1000 per
    # resource and phase) must still fit, which 180 s did not once the backoff reached its cap.
    flaky_zomro_run(cluster, operator, sandbox, count=16, limit=worst_wait(6) + 60)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_long_flaky_zomro_run_still_converges(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    flaky_zomro_run(cluster, operator, sandbox, count=80, limit=600)


def test_a_zomro_outage_during_mass_deletion_holds_the_finalizers_then_completes(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    control = sandbox.control
    specs = specs_for(10)
    create_many(cluster, specs)
    wait_all_ready(cluster, list(specs))
    control.set_faults(outage="reset")

    delete_many(cluster, list(specs))

    def all_waiting() -> bool:
        bodies = list_bodies(cluster)
        return len(bodies) == len(specs) and all(
            any(
                c.get("reason") == "ZomroUnavailable" and "deletion waits" in c.get("message", "")
                for c in (b.get("status") or {}).get("conditions") or []
            )
            for b in bodies.values()
        )

    wait_for("every deletion to wait for Zomro", all_waiting, timeout=60)
    assert remote_count(control) == len(specs)  # nothing was lost while Zomro was down
    control.clear_faults()

    wait_all_gone(cluster, list(specs), timeout=120)
    check_invariants(cluster, control, operator, live={}, deleted=list(specs))


# --------------------------------------------------------------------------- the API server


@dataclass
class PrivatePlane:
    """A control plane of this test's own, so that restarting its API server disturbs no other."""

    state: Path
    kubeconfig: Path
    api: Any
    restarted: subprocess.Popen[bytes] | None = None

    def apiserver_pid(self) -> int:
        if self.restarted is not None:
            return self.restarted.pid
        pid: int = json.loads((self.state / "state.json").read_text())["pids"]["kube-apiserver"]
        return pid

    def api_ready(self) -> bool:
        try:
            # The custom resource's path, not just any: it is served last after a start.
            client.CustomObjectsApi(self.api).list_cluster_custom_object(
                GROUP, VERSION, PLURAL, limit=1, _request_timeout=3
            )
        except Exception:
            return False
        return True

    def restart_apiserver(self, while_down: Callable[[], None]) -> None:
        """Stop kube-apiserver (etcd keeps the data), run ``while_down``, start it again with
        the same command line."""
        pid = self.apiserver_pid()
        argv = [a.decode() for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
        # SIGTERM closes the listener at once, but a graceful exit waits a minute for open
        # requests; once it refuses connections, SIGKILL ends the wait (etcd keeps the data).
        os.kill(pid, signal.SIGTERM)
        wait_for("the API server to refuse", lambda: not self.api_ready(), timeout=30)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
        if self.restarted is not None:
            self.restarted.wait(timeout=30)
        wait_for("kube-apiserver to exit", lambda: not _alive(pid), timeout=30)
        while_down()
        with (self.state / "logs" / "kube-apiserver.log").open("ab") as log:
            self.restarted = subprocess.Popen(
                argv,
                cwd=self.state,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_for("kube-apiserver to serve again", self.api_ready, timeout=120, interval=0.5)


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


@pytest.fixture
def private_plane(tmp_path_factory: pytest.TempPathFactory, kubectl: Any) -> Iterator[PrivatePlane]:
    state = tmp_path_factory.mktemp("private-cp")
    result = control_plane("up", state_dir=state, timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    kubeconfig = state / "kubeconfig"
    api = config.new_client_from_config(config_file=str(kubeconfig))  # type: ignore[no-untyped-call]
    plane = PrivatePlane(state, kubeconfig, api)
    try:
        kubectl(f"--kubeconfig={kubeconfig}", "apply", "-f", str(CRD))
        kubectl(
            f"--kubeconfig={kubeconfig}",
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            "crd/backupschedules.zomro.com",
        )
        yield plane
    finally:
        api.close()
        if plane.restarted is not None and plane.restarted.poll() is None:
            plane.restarted.kill()
        control_plane("down", state_dir=state)


def test_the_api_server_restarting_under_the_operator_loses_nothing(
    private_plane: PrivatePlane, sandbox: SandboxProcess, tmp_path: Path
) -> None:
    control = sandbox.control
    control.reset()
    namespace = "zt-apiserver-restart"
    client.CoreV1Api(private_plane.api).create_namespace(
        client.V1Namespace(metadata=client.V1ObjectMeta(name=namespace))
    )
    cluster = Cluster(private_plane.api, namespace)
    cluster.apply_secret("zomro", username=USERNAME, password=PASSWORD)
    operator = OperatorProcess(
        namespace,
        operator_env(sandbox.url, KUBECONFIG=str(private_plane.kubeconfig)),
        tmp_path,
    )
    operator.start()
    try:
        specs = specs_for(8, prefix="a")
        create_many(cluster, specs)
        bodies = wait_all_ready(cluster, list(specs))
        removed = bodies["a000"]["status"]["scheduleId"]

        def while_down() -> None:
            # Drift behind the operator's back while it cannot write status: it must neither
            # crash nor create a schedule it cannot record.
            control.remove_schedule(removed)
            control.clear_requests()
            wait_for(
                "drift checks to go on while the API server is down",
                lambda: lists_seen(control) >= 2,
                timeout=RESYNC_SECONDS * 10,
            )
            assert_running(operator)

        private_plane.restart_apiserver(while_down)

        more = specs_for(12, prefix="a")
        fresh = {name: spec for name, spec in more.items() if name not in specs}
        create_many(cluster, fresh)
        deleted = ["a001", "a002", "a003"]
        delete_many(cluster, deleted)
        live = {n: s for n, s in {**specs, **fresh}.items() if n not in deleted}
        wait_all_gone(cluster, deleted)
        wait_all_ready(cluster, list(live), timeout=90)
        wait_for(
            "the removed schedule to be recreated and recorded",
            lambda: (b := cluster.get("a000")) and b["status"]["scheduleId"] != removed,
            timeout=RESYNC_SECONDS * 10,
        )
        assert_running(operator)
        assert operator.starts == 1
        check_invariants(cluster, control, operator, live=live, deleted=deleted)
    finally:
        try:  # let the operator finalize what is left; the control plane goes anyway
            delete_many(cluster, list(list_bodies(cluster)))
            wait_all_gone(cluster, list(list_bodies(cluster)), timeout=60)
        finally:
            operator.stop()


# --------------------------------------------------------------------------- hostile answers


HTML_PAGE = b"<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
HUGE_BYTES = 64 * 1024 * 1024

HOSTILE: dict[str, tuple[int, str, bytes]] = {
    "malformed-json": (200, "application/json", b'{"doc": {"elem": [{"id": {"$": "1'),
    "wrong-types": (200, "application/json", b'{"doc": {"elem": [{"id": [1, 2], "name": 7}]}}'),
    "html-error-page": (502, "text/html", HTML_PAGE),
    "html-with-200": (200, "text/html", HTML_PAGE),
    "huge-body": (200, "application/json", b""),  # streamed: 64 MiB, no Content-Length
}
"""Mode -> (status, content type, body) for every call except the login."""


class HostileZomro:
    """A tiny HTTP server that logs in properly, then answers every call with ``mode``."""

    def __init__(self) -> None:
        self.mode = "malformed-json"
        self.calls = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                form = parse_qs(self.rfile.read(length).decode(errors="replace"))
                outer.calls += 1
                if form.get("func") == ["auth"]:
                    sid = secrets.token_hex(12)
                    self._send(
                        200,
                        "application/json",
                        json.dumps({"doc": {"auth": {"$id": sid, "$": sid}}}).encode(),
                    )
                    return
                status, kind, body = HOSTILE[outer.mode]
                if outer.mode == "huge-body":
                    self._stream_huge()
                else:
                    self._send(status, kind, body)

            def _send(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _stream_huge(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Connection", "close")
                self.end_headers()
                chunk = b'{"doc": {"elem": [' + b'{"id": {"$": "1"}},' * 4096
                try:
                    for _ in range(HUGE_BYTES // len(chunk)):
                        self.wfile.write(chunk)
                except OSError:
                    pass  # the client stopped reading at its cap: what we hope for
                self.close_connection = True

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HostileZomro:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def test_hostile_answers_give_zomro_unavailable_without_crashing_or_growing(
    cluster: Cluster, tmp_path: Path
) -> None:
    with HostileZomro() as hostile:
        operator = OperatorProcess(
            cluster.namespace,
            {
                "ZOMRO_API_URL": hostile.url,
                "ZOMRO_RESYNC_SECONDS": str(RESYNC_SECONDS),
                "ZOMRO_METRICS_PORT": "0",
                "ZOMRO_LOG_LEVEL": "DEBUG",
                "ZOMRO_MAX_REQUESTS_PER_SECOND": "50",
                "ZOMRO_TIMEOUT_SECONDS": "10",
            },
            tmp_path,
        )
        operator.start()
        try:
            for mode in HOSTILE:
                hostile.mode = mode
                name = f"hostile-{mode}"
                cluster.create(name, schedule_name=name)
                condition = cluster.wait_reason(name, "ZomroUnavailable", timeout=60)
                message = condition["message"]
                assert condition["status"] == "False"
                assert message.startswith("Zomro did not complete the request"), message
                assert len(message) < 300, message
                assert "<html" not in message
                assert '"doc"' not in message
                assert_running(operator)

            assert operator.process is not None
            assert peak_rss_mb(operator.process.pid) < 200
            assert operator.starts == 1
            for name, body in list_bodies(cluster).items():
                reasons = [c["reason"] for c in body["status"]["conditions"]]
                assert reasons == ["ZomroUnavailable"], (name, reasons)
            logs = operator.logs()
            assert PASSWORD not in logs
            names = list(list_bodies(cluster))
            delete_many(cluster, names)  # never reached Zomro: nothing to ask it
            wait_all_gone(cluster, names, timeout=60)
        finally:
            operator.stop()
