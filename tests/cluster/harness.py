"""Running the real operator process against the session's API server and a sandbox, and
waiting on conditions (never on fixed sleeps)."""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client
from kubernetes.client.exceptions import ApiException

GROUP, VERSION, PLURAL = "zomro.com", "v1alpha1", "backupschedules"
REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "backupschedules.zomro.com.yaml"

RESYNC_SECONDS = 3
"""The operator's drift period in these tests."""
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
"""

T = TypeVar("T")


def wait_for(
    what: str, probe: Callable[[], T | None], *, timeout: float = 60.0, interval: float = 0.2
) -> T:
    """Poll ``probe`` until it returns something truthy; fail naming ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}; last: {last!r}")


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
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "instanceId": instance,
            "days": days or ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
            "time": time,
        }
        if schedule_name is not None:
            spec["scheduleName"] = schedule_name
        if secret is not None:
            spec["credentialsSecretRef"] = {"name": secret}
        if policy is not None:
            spec["deletionPolicy"] = policy
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": "BackupSchedule",
            "metadata": {"name": name, "annotations": annotations or {}},
            "spec": spec,
        }
        result: dict[str, Any] = self.custom.create_namespaced_custom_object(
            GROUP, VERSION, self.namespace, PLURAL, body
        )
        return result

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.custom.get_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, name
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
            body = self.get(name) or {}
            generation = body.get("metadata", {}).get("generation")
            condition = self.ready(name) or {}
            status = body.get("status") or {}
            if (
                condition.get("status") == "True"
                and condition.get("observedGeneration") == generation
                and status.get("observedGeneration") == generation
            ):
                return body
            return None

        return wait_for(f"{name} Ready=True", probe, timeout=timeout)

    def wait_reason(self, name: str, reason: str, *, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(
            f"{name} Ready reason {reason}",
            lambda: (c := self.ready(name)) and c.get("reason") == reason and c,
            timeout=timeout,
        )

    def wait_gone(self, name: str, *, timeout: float = 60.0) -> None:
        wait_for(f"{name} to be gone", lambda: self.get(name) is None, timeout=timeout)

    def events(self) -> list[Any]:
        return list(self.core.list_namespaced_event(self.namespace).items)

    def event_reasons(self, name: str) -> list[str]:
        return [e.reason for e in self.events() if e.involved_object.name == name]


class OperatorProcess:
    """``zomro-backup-operator run`` in its own process, restartable and killable."""

    def __init__(self, namespace: str, env: dict[str, str], log_dir: Path) -> None:
        self.namespace = namespace
        self.env = env
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.extra_args: list[str] = []

    @property
    def log_path(self) -> Path:
        return self.log_dir / f"operator-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "zomro_backup_operator",
                    "run",
                    "--standalone",
                    "-n",
                    self.namespace,
                    *self.extra_args,
                ],
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

    def logs(self) -> str:
        return "\n".join(
            (self.log_dir / f"operator-{n}.log").read_text(errors="replace")
            for n in range(1, self.starts + 1)
        )
