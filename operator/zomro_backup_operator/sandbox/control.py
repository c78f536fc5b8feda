"""Driving a sandbox from tests: a sync client for ``/_sandbox/`` and a subprocess launcher.

The sync client is for a sandbox in another process (or thread). For a sandbox in the test's own
event loop use ``running_sandbox`` and its ``state``/``faults`` instead: a blocking call there
would wait on the very loop that must answer it.

The launcher (``start_sandbox_process``) stays in the wheel, not in tests/: ``hack/bench`` and
anyone scripting a trial run against the sandbox use it from the installed package
(docs/sandbox.md).
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from zomro_backup_operator.sandbox.server import CONTROL_PREFIX


class SandboxControlError(RuntimeError):
    """The control endpoint refused a request; the message is its answer."""


class SandboxControl:
    """A small synchronous client for a running sandbox's control endpoint."""

    def __init__(self, url: str, *, timeout: float = 10.0) -> None:
        self.url = url
        self._base = url.rstrip("/") + CONTROL_PREFIX
        self._http = httpx.Client(timeout=timeout)

    def __repr__(self) -> str:
        return f"SandboxControl({self.url!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> SandboxControl:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        # Writes always carry a JSON body: the control endpoint refuses any other kind.
        if body is None and method in ("POST", "PUT", "PATCH"):
            body = {}
        response = self._http.request(method, self._base + path, json=body)
        if response.status_code >= 400:
            raise SandboxControlError(f"{method} {path}: {response.status_code} {response.text}")
        return response.json()

    # --------------------------------------------------------------- reads

    def health(self) -> bool:
        try:
            return bool(self._call("GET", "/health").get("ok"))
        except (httpx.HTTPError, SandboxControlError):
            return False

    def state(self) -> dict[str, Any]:
        """Instances with their schedules and backups, as the sandbox holds them."""
        result: dict[str, Any] = self._call("GET", "/state")
        return result

    def schedules(self, instance_id: str) -> list[dict[str, Any]]:
        """The schedules of one instance (id, name, days as numbers, time, ...)."""
        schedules: list[dict[str, Any]] = self.state()["instances"][instance_id]["schedules"]
        return schedules

    def backups(self, instance_id: str) -> list[dict[str, Any]]:
        """The backups of one instance (id, name, backup_type, status, protected, created)."""
        backups: list[dict[str, Any]] = self.state()["instances"][instance_id]["backups"]
        return backups

    def requests(self) -> list[dict[str, Any]]:
        """The request log: time, func, account, outcome, duration of every API call."""
        records: list[dict[str, Any]] = self._call("GET", "/requests")
        return records

    def clear_requests(self) -> None:
        self._call("DELETE", "/requests")

    # --------------------------------------------------------------- faults and settings

    def faults(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "/faults")
        return result

    def set_faults(self, **faults: Any) -> dict[str, Any]:
        """Change the given faults, keep the others, e.g. ``set_faults(outage="503")``."""
        result: dict[str, Any] = self._call("PATCH", "/faults", faults)
        return result

    def clear_faults(self) -> None:
        self._call("DELETE", "/faults")

    def expire_sessions(self) -> int:
        return int(self._call("POST", "/expire-sessions")["expired"])

    def settings(self) -> dict[str, Any]:
        """``session_ttl``, ``scheduled_backups_busy``, ``same_minute_runs``."""
        result: dict[str, Any] = self._call("GET", "/settings")
        return result

    def set_settings(self, **settings: Any) -> dict[str, Any]:
        """Change the given settings, keep the others, e.g. ``set_settings(session_ttl=30)``."""
        result: dict[str, Any] = self._call("PUT", "/settings", settings)
        return result

    # --------------------------------------------------------------- the sandbox's clock

    def clock(self) -> datetime.datetime:
        """The sandbox clock's now, as an aware UTC time."""
        return _clock_time(self._call("GET", "/clock"))

    def set_clock(self, at: datetime.datetime) -> datetime.datetime:
        """Set the sandbox clock to an aware time; the runs up to it are made. Returns now."""
        if at.tzinfo is None:
            raise ValueError("set_clock needs an aware datetime: a naive one is ambiguous")
        return _clock_time(self._call("PUT", "/clock", {"at": at.isoformat()}))

    def advance_clock(self, seconds: float) -> datetime.datetime:
        """Move the sandbox clock ahead; the runs up to it are made. Returns now."""
        return _clock_time(self._call("POST", "/clock/advance", {"seconds": seconds}))

    def make_busy(self, instance_id: str, seconds: float) -> None:
        """Make the instance refuse edits with ``runningoperation`` for a while."""
        self._call("POST", f"/instances/{instance_id}/busy", {"seconds": seconds})

    def reset(self) -> None:
        """Back to the config's initial world: no schedules, backups, sessions or faults."""
        self._call("POST", "/reset")

    # --------------------------------------------------------------- behind the operator's back

    def add_schedule(
        self, instance_id: str, name: str, days: Sequence[int | str], time: str
    ) -> dict[str, Any]:
        """Create a schedule directly; ``days`` are numbers 0-6 (0 = Sunday) or English names."""
        body = {"instance_id": instance_id, "name": name, "days": list(days), "time": time}
        result: dict[str, Any] = self._call("POST", "/schedules", body)
        return result

    def remove_schedule(self, schedule_id: str) -> None:
        self._call("DELETE", f"/schedules/{schedule_id}")

    def edit_schedule(
        self,
        schedule_id: str,
        *,
        name: str | None = None,
        days: Sequence[int | str] | None = None,
        time: str | None = None,
    ) -> dict[str, Any]:
        body: dict[str, Any] = {}
        if name is not None:
            body["name"] = name
        if days is not None:
            body["days"] = list(days)
        if time is not None:
            body["time"] = time
        result: dict[str, Any] = self._call("PATCH", f"/schedules/{schedule_id}", body)
        return result

    def add_backup(
        self, instance_id: str, name: str, *, backup_type: str = "auto", protected: bool = False
    ) -> str:
        body = {
            "instance_id": instance_id,
            "name": name,
            "backup_type": backup_type,
            "protected": protected,
        }
        return str(self._call("POST", "/backups", body)["id"])

    def set_backup_protected(self, backup_id: str, protected: bool = True) -> dict[str, Any]:
        """Turn a backup's ``protected`` flag on or off behind the client's back."""
        result: dict[str, Any] = self._call(
            "PATCH", f"/backups/{backup_id}", {"protected": protected}
        )
        return result


def _clock_time(answer: dict[str, Any]) -> datetime.datetime:
    return datetime.datetime.fromtimestamp(float(answer["now"]), datetime.UTC)


class SandboxProcess:
    """A sandbox in its own process; stop it with :meth:`stop` or a ``with`` block."""

    def __init__(self, process: subprocess.Popen[str], url: str, log_path: Path) -> None:
        self.process = process
        self.url = url
        self.log_path = log_path
        self.control = SandboxControl(url)

    def __repr__(self) -> str:
        return f"SandboxProcess(pid={self.process.pid}, url={self.url!r})"

    def __enter__(self) -> SandboxProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log(self) -> str:
        """What the sandbox wrote to stderr so far (request log lines, never secrets)."""
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self, timeout: float = 10.0) -> int:
        """Terminate (then kill) the process; return its exit code."""
        self.control.close()
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def start_sandbox_process(
    *,
    config: str | Path | None = None,
    state: str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    log_path: str | Path | None = None,
    startup_timeout: float = 30.0,
    python: str = sys.executable,
    env: dict[str, str] | None = None,
) -> SandboxProcess:
    """Run ``python -m zomro_backup_operator sandbox`` and wait for the URL on its first line."""
    args = [python, "-m", "zomro_backup_operator", "sandbox", "--host", host, "--port", str(port)]
    if config is not None:
        args += ["--config", str(config)]
    if state is not None:
        args += ["--state", str(state)]
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix="zomro-sandbox-", suffix=".log")
        os.close(fd)
        log_path = name
    log_file = Path(log_path)
    with log_file.open("ab") as stderr:
        process = subprocess.Popen(
            args,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
            env={**os.environ, **(env or {})},
        )
    first_line: list[str] = []
    reader = threading.Thread(
        target=lambda: first_line.append(process.stdout.readline() if process.stdout else ""),
        daemon=True,
    )
    reader.start()
    reader.join(startup_timeout)
    url = first_line[0].strip() if first_line else ""
    if not url.startswith("http"):
        process.kill()
        process.wait()
        raise RuntimeError(
            f"sandbox did not print its URL within {startup_timeout}s "
            f"(exit code {process.poll()}); its log: {log_file.read_text(errors='replace')[-2000:]}"
        )
    sandbox = SandboxProcess(process, url, log_file)
    deadline = time.monotonic() + startup_timeout
    while not sandbox.control.health():
        if time.monotonic() > deadline or process.poll() is not None:
            sandbox.stop()
            raise RuntimeError(f"sandbox at {url} does not answer its control endpoint")
        time.sleep(0.05)
    return sandbox
