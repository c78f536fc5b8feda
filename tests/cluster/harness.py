"""Running the real operator process against the session's API server and a sandbox, and
waiting on conditions (never on fixed sleeps): `wait_for` and `free_port` are hack/devkit's,
re-exported here for the cluster tests."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import re
import signal
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn, Protocol, cast

import pytest
from devkit.launchers import operator_command
from devkit.processes import free_port as free_port
from devkit.waiting import wait_for as wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from zomro_backup_operator.failures import TRANSIENT_BACKOFF
from zomro_backup_operator.resources import GROUP, KIND, PLURAL, VERSION, ready_at_generation
from zomro_backup_operator.sandbox.control import SandboxProcess, start_sandbox_process
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULES

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "backupschedules.zomro.com.yaml"
API_VERSION = f"{GROUP}/{VERSION}"

RESYNC_SECONDS = 3
"""The operator's drift period in these tests."""
SETTLE_SECONDS = 8
"""How long after a lost create answer the operator waits for its listing (above the timeout)."""
USERNAME = "ops"
PASSWORD = "pw-Very-Secret-9f3c"
OTHER_USERNAME = "rival"
OTHER_PASSWORD = "pw-Rival-Secret-77aa"
INSTANCE = "5203773"
SECOND_INSTANCE = "7000001"
RIVAL_INSTANCE = "8000001"
SESSION_ID = re.compile(r"(?<![0-9a-f])[0-9a-f]{24}(?![0-9a-f])")
"""The sandbox's session ids: 24 hex digits."""

SANDBOX_CONFIG = f"""
accounts:
  - username: {USERNAME}
    password: {PASSWORD}
    instances:
      - {{id: "{INSTANCE}", name: MyServer}}
      - {{id: "{SECOND_INSTANCE}", name: Second}}
  - username: {OTHER_USERNAME}
    password: {OTHER_PASSWORD}
    instances:
      - {{id: "{RIVAL_INSTANCE}", name: Rival}}
login_failures_before_block: 0
# The sandbox's clock follows real time, so a schedule of some test whose time comes while the
# suite runs would make its instance refuse edits (runningoperation) for the run's duration: a
# failure that depends on the hour the suite runs at. Tests of that rule turn it on themselves.
scheduled_backups_busy: false
"""


def unavailable(what: str, reason: str) -> NoReturn:
    """``what`` cannot be had here: skip the test, but fail it under CI, where it must be."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{what} unavailable under CI: {reason}", pytrace=False)
    pytest.skip(f"{what} unavailable: {reason}")


@contextlib.contextmanager
def temporary_namespace(api: Any, stem: str) -> Iterator[str]:
    """A new namespace ``zt-<stem>-<random>``, deleted afterwards (without waiting for it)."""
    core = client.CoreV1Api(api)
    name = f"zt-{stem}-{uuid.uuid4().hex[:6]}"
    core.create_namespace(
        client.V1Namespace(
            metadata=client.V1ObjectMeta(name=name, labels={"zomro.test/owner": "pytest"})
        )
    )
    try:
        yield name
    finally:
        try:
            core.delete_namespace(name)
        except ApiException as exc:
            if exc.status != 404:
                raise


@contextlib.contextmanager
def sandbox_process(home: Path) -> Iterator[SandboxProcess]:
    """The sandbox as its own process with SANDBOX_CONFIG's accounts, its log in ``home``."""
    config = home / "config.yaml"
    config.write_text(SANDBOX_CONFIG)
    with start_sandbox_process(config=config, log_path=home / "sandbox.log") as process:
        yield process


def operator_env(api_url: str, **extra: str) -> dict[str, str]:
    """The operator's settings in these tests: the sandbox at ``api_url``, a short resync,
    DEBUG logs (which must hold no secret either), no metrics port, a quick timeout."""
    return {
        "ZOMRO_API_URL": api_url,
        "ZOMRO_RESYNC_SECONDS": str(RESYNC_SECONDS),
        # No backup check within a test unless it asks (test_backup_outcomes.py): its first
        # status write and listings would land in other tests' idle windows and call counts.
        "ZOMRO_BACKUP_CHECK_SECONDS": "3600",
        "ZOMRO_METRICS_PORT": "0",
        "ZOMRO_LOG_LEVEL": "DEBUG",
        "ZOMRO_MAX_REQUESTS_PER_SECOND": "50",
        "ZOMRO_TIMEOUT_SECONDS": "5",
        **extra,
    }


class Cluster:
    """Typed shortcuts over the official client for one test namespace."""

    def __init__(self, api: Any, namespace: str) -> None:
        self.namespace = namespace
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    def apply_secret(self, name: str = "zomro", **data: str) -> None:
        body = client.V1Secret(
            metadata=client.V1ObjectMeta(name=name),
            data={k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
        )
        try:
            self.core.create_namespaced_secret(self.namespace, body)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.replace_namespaced_secret(name, self.namespace, body)

    def create(
        self,
        name: str,
        *,
        days: list[str] | None = None,
        time: str = "02:01",
        instance: str = INSTANCE,
        schedule_name: str | None = "MySchedule",
        secret: str | None = "zomro",
        policy: str | None = None,
        annotations: dict[str, str] | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Create a BackupSchedule; ``extra`` are further spec fields (timeZone, suspend)."""
        spec: dict[str, Any] = {
            "instanceId": instance,
            "days": days or ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
            "time": time,
            **extra,
        }
        if schedule_name is not None:
            spec["scheduleName"] = schedule_name
        if secret is not None:
            spec["credentialsSecretRef"] = {"name": secret}
        if policy is not None:
            spec["deletionPolicy"] = policy
        body = {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec,
        }
        return cast(
            dict[str, Any],
            self.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, body
            ),
        )

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            result = cast(
                dict[str, Any],
                self.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.namespace, PLURAL, name
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return result

    def patch_spec(self, name: str, **spec: Any) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"spec": spec}
        )

    def delete(self, name: str) -> None:
        self.custom.delete_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL, name)

    def patch_status(self, name: str, status: dict[str, Any]) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, self.namespace, PLURAL, name, {"status": status}
        )

    def clear_finalizers(self, name: str) -> None:
        """Let the resource go without its operator (a test's cleanup when none runs)."""
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, name, {"metadata": {"finalizers": []}}
        )

    def ready(self, name: str) -> dict[str, Any] | None:
        """The Ready condition, if the resource has one."""
        body = self.get(name) or {}
        for condition in (body.get("status") or {}).get("conditions") or []:
            if condition.get("type") == "Ready":
                return dict(condition)
        return None

    def wait_ready(self, name: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until Ready=True at the resource's current generation; return the resource."""

        def probe() -> dict[str, Any] | None:
            body = self.get(name)
            return body if body is not None and ready_at_generation(body) else None

        return wait_for(f"{name} Ready=True", probe, timeout=timeout)

    def wait_reason(self, name: str, reason: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the Ready condition has ``reason``; return the condition."""

        def probe() -> dict[str, Any] | None:
            condition = self.ready(name)
            return condition if condition and condition.get("reason") == reason else None

        return wait_for(f"{name} Ready reason {reason}", probe, timeout=timeout)

    def wait_gone(self, name: str, *, timeout: float = 60.0) -> None:
        wait_for(f"{name} to be gone", lambda: self.get(name) is None, timeout=timeout)

    def events(self) -> list[Any]:
        return list(self.core.list_namespaced_event(self.namespace).items)

    def event_reasons(self, name: str) -> list[str]:
        return [e.reason for e in self.events() if e.involved_object.name == name]


class Finalizable(Protocol):
    """One kind's resources in the test's namespace, as the clean-up after a test sees them."""

    def delete(self, name: str) -> None: ...

    def wait_gone(self, name: str, *, timeout: float = 60.0) -> None: ...

    def clear_finalizers(self, name: str) -> None: ...


def finalize_left(
    resources: Finalizable,
    names: list[str],
    sandbox: SandboxProcess,
    operator: OperatorProcess,
) -> None:
    """Let the operator (started again if the test stopped it, Zomro without faults) finalize
    what a test left of ``names``, so that the namespace can go; strip the finalizer of what it
    cannot."""
    sandbox.control.clear_faults()
    if operator.process is None or operator.process.poll() is not None:
        operator.start()
    for name in names:
        resources.delete(name)
    for name in names:
        try:
            resources.wait_gone(name, timeout=30)
        except AssertionError:
            resources.clear_finalizers(name)


def finalize_with_an_operator_of_its_own(
    resources: Finalizable,
    names: list[str],
    sandbox: SandboxProcess,
    namespace: str,
    log_dir: Path,
    label: str = "cleanup",
) -> None:
    """:func:`finalize_left` by a standalone operator started for it, for tests whose own
    operators have stopped (or were never standalone)."""
    cleaner = OperatorProcess(
        namespace,
        operator_env(sandbox.url, ZOMRO_CREATE_SETTLE_SECONDS=str(SETTLE_SECONDS)),
        log_dir,
        label=label,
    )
    try:
        finalize_left(resources, names, sandbox, cleaner)
    finally:
        cleaner.stop()


def apply_spec(
    kubectl: Callable[..., subprocess.CompletedProcess[str]],
    namespace: str,
    spec: dict[str, Any],
    name: str = "bad",
) -> subprocess.CompletedProcess[str]:
    """``kubectl apply`` a BackupSchedule with this spec, as a user would; never raises."""
    manifest = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "BackupSchedule",
        "metadata": {"name": name},
        "spec": spec,
    }
    return kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest), check=False)


class OperatorProcess:
    """``zomro-backup-operator run`` in its own process, restartable and killable.

    ``standalone`` False: it takes part in leader election (see :func:`elected_operators`);
    ``label`` names its log files, so that several processes can share ``log_dir``."""

    def __init__(
        self,
        namespace: str,
        env: dict[str, str],
        log_dir: Path,
        *,
        standalone: bool = True,
        label: str = "operator",
    ) -> None:
        self.namespace = namespace
        self.env = env
        self.log_dir = log_dir
        self.standalone = standalone
        self.label = label
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.extra_args: list[str] = []

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"{self.label}-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                operator_command(
                    "-n", self.namespace, *self.extra_args, standalone=self.standalone
                ),
                env={**os.environ, **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no final patches, as in a node failure or OOM kill."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def restart_with(self, **env: str) -> None:
        """Stop, change these settings, start again."""
        self.stop()
        self.env.update(env)
        self.start()

    def set_clock(self, at: dt.datetime) -> None:
        """Move this operator's clock (its ``ZOMRO_CLOCK_OFFSET_FILE``) so that it reads ``at``."""
        path = Path(self.env["ZOMRO_CLOCK_OFFSET_FILE"])
        offset = (at - dt.datetime.now(dt.UTC)).total_seconds()
        written = path.with_name(path.name + ".new")
        written.write_text(f"{offset:.6f}\n")
        written.replace(path)  # the operator never reads half a number

    def send(self, sig: signal.Signals) -> None:
        """Send ``sig`` (SIGSTOP, SIGCONT, ...) to the running process."""
        assert self.process is not None, f"{self.label} never started"
        assert self.process.poll() is None, f"{self.label} is not running"
        self.process.send_signal(sig)

    @property
    def identity(self) -> str:
        """Its identity among the candidates (POD_ID), as the Lease's holder names it."""
        return self.env["POD_ID"]

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"{self.label}-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )


def lists_seen(control: Any) -> int:
    """How many schedule listings the sandbox has answered since its requests were cleared:
    the operator's drift checks."""
    return sum(1 for r in control.requests() if r["func"] == FUNC_SCHEDULES)


LEASE_DURATION = 4
"""Leader election in these tests: lease duration, renew deadline and retry period, seconds."""
RENEW_DEADLINE = 3
RETRY_PERIOD = 1


def elected_operators(
    namespace: str, sandbox_url: str, log_dir: Path, labels: tuple[str, ...] = ("a", "b")
) -> list[OperatorProcess]:
    """Operator processes (not started) that elect a leader through one Lease in ``namespace``.

    Each has its own identity (POD_ID ``op-<label>``) and reaches the sandbox through its own
    ``/_via/<label>/`` URL, so that the sandbox's request log tells which process sent what."""
    base = sandbox_url.rstrip("/")
    return [
        OperatorProcess(
            namespace,
            {
                **operator_env(
                    f"{base}/_via/{label}/", ZOMRO_CREATE_SETTLE_SECONDS=str(SETTLE_SECONDS)
                ),
                "POD_ID": f"op-{label}",
                "ZOMRO_LEASE_NAMESPACE": namespace,
                "ZOMRO_LEASE_DURATION_SECONDS": str(LEASE_DURATION),
                "ZOMRO_LEASE_RENEW_DEADLINE_SECONDS": str(RENEW_DEADLINE),
                "ZOMRO_LEASE_RETRY_PERIOD_SECONDS": str(RETRY_PERIOD),
            },
            log_dir,
            standalone=False,
            label=label,
        )
        for label in labels
    ]


def lease_holder(api: Any, namespace: str, name: str = "zomro-backup-operator") -> str | None:
    """Who holds the leader-election Lease now (None: nobody, or no Lease yet)."""
    try:
        lease = client.CoordinationV1Api(api).read_namespaced_lease(name, namespace)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    holder = lease.spec.holder_identity if lease.spec else None
    return str(holder) if holder else None


def worst_wait(failures: int) -> float:
    """The longest a resource can wait between its first and its next attempt after
    ``failures`` failures in a row (TRANSIENT_BACKOFF, before jitter draws it lower)."""
    first, cap = TRANSIENT_BACKOFF
    return sum(min(cap, first * 2.0**retry) for retry in range(failures))


# --- many resources at once (the chaos and rate-budget suites) ------------------------------

DAY_NUMBERS = {
    day: n
    for n, day in enumerate(
        ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
    )
}


def mass_spec(n: int, instance: str = INSTANCE) -> dict[str, Any]:
    """The n-th of many distinct specs: its own schedule name, days and time."""
    names = list(DAY_NUMBERS)
    return {
        "schedule_name": f"mass-{n:04d}",
        "days": sorted({names[(n + k) % 7] for k in range(1 + n % 4)}, key=names.index),
        "time": f"{n % 24:02d}:{(7 * n) % 60:02d}",
        "instance": instance,
    }


def create_many(cluster: Cluster, specs: dict[str, dict[str, Any]], *, threads: int = 8) -> None:
    """Create every resource {name: Cluster.create kwargs} at once, from several threads."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda item: cluster.create(item[0], **item[1]), specs.items()))


def delete_many(cluster: Cluster, names: list[str], *, threads: int = 8) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def delete(name: str) -> None:
        try:
            cluster.delete(name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(delete, names))


def list_bodies(cluster: Cluster) -> dict[str, dict[str, Any]]:
    listing = cast(
        dict[str, Any],
        cluster.custom.list_namespaced_custom_object(GROUP, VERSION, cluster.namespace, PLURAL),
    )
    return {item["metadata"]["name"]: item for item in listing["items"]}


def wait_all_ready(
    cluster: Cluster, names: list[str], *, timeout: float = 120.0
) -> dict[str, dict[str, Any]]:
    """Wait until every named resource is Ready at its generation; one list per poll."""

    def probe() -> dict[str, dict[str, Any]] | None:
        bodies = list_bodies(cluster)
        ready = {n: bodies[n] for n in names if n in bodies and ready_at_generation(bodies[n])}
        return ready if len(ready) == len(names) else None

    def pending() -> list[str]:
        bodies = list_bodies(cluster)
        return [n for n in names if n not in bodies or not ready_at_generation(bodies[n])]

    try:
        return wait_for(f"{len(names)} resources Ready", probe, timeout=timeout, interval=0.5)
    except AssertionError as exc:
        raise AssertionError(f"{exc}; not Ready: {pending()[:10]}") from None


def wait_all_gone(cluster: Cluster, names: list[str], *, timeout: float = 120.0) -> None:
    """Wait until none of the named resources exists (no finalizer left hanging)."""
    wait_for(
        f"{len(names)} resources to be gone",
        lambda: not set(names) & set(list_bodies(cluster)),
        timeout=timeout,
        interval=0.5,
    )


def check_invariants(
    cluster: Cluster,
    control: Any,
    operator: OperatorProcess,
    *,
    live: dict[str, dict[str, Any]],
    deleted: tuple[str, ...] | list[str] = (),
    instances: tuple[str, ...] = (INSTANCE, SECOND_INSTANCE),
) -> None:
    """The end state every chaos run must reach.

    ``live`` maps each resource that should exist to its Cluster.create kwargs (schedule_name,
    days, time, instance). Exactly one Zomro schedule per live resource, with its spec's values,
    recorded in its status; none with a deleted resource's name; nothing left in Terminating; no
    password or session id in the operator's logs, the namespace's Events or any status.
    """
    bodies = list_bodies(cluster)
    terminating = [n for n, b in bodies.items() if b["metadata"].get("deletionTimestamp")]
    assert not terminating, f"stuck in Terminating: {terminating}"
    assert set(bodies) == set(live), f"resources: {sorted(set(bodies) ^ set(live))}"
    held = {i: control.schedules(i) for i in instances}
    by_name: dict[str, list[dict[str, Any]]] = {}
    for rows in held.values():
        for row in rows:
            by_name.setdefault(str(row["name"]), []).append(row)
    for name, spec in live.items():
        rows = by_name.get(spec["schedule_name"], [])
        assert len(rows) == 1, f"{name}: {len(rows)} Zomro schedules named {spec['schedule_name']}"
        [row] = rows
        assert str(row["id"]) == bodies[name]["status"]["scheduleId"], name
        assert str(row["id"]) in {str(r["id"]) for r in held[spec["instance"]]}, name
        wanted_days = sorted(DAY_NUMBERS[d] for d in spec["days"])
        assert (sorted(row["days"]), row["time"]) == (wanted_days, spec["time"]), name
    total = sum(len(rows) for rows in held.values())
    assert total == len(live), f"{total} Zomro schedules for {len(live)} resources"
    for name in deleted:
        assert name not in bodies, f"{name} still exists"
    texts = {
        "logs": operator.logs(),
        "events": " ".join(f"{e.reason} {e.message}" for e in cluster.events()),
        "status": str([b.get("status") for b in bodies.values()]),
    }
    assert_no_secrets(texts)


def assert_no_secrets(texts: dict[str, str], *secrets: str) -> None:
    """No password (the sandbox's, and ``secrets``) and no session id in any of ``texts``, a
    mapping of where (logs, events, status) to what was read there."""
    for where, text in texts.items():
        for secret in (PASSWORD, *secrets):
            assert secret not in text, f"a password in {where}"
        assert not SESSION_ID.search(text), f"a session id in {where}"
