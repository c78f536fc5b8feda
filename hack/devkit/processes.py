"""The long-running processes a launcher starts (etcd, the API server, the node's daemons, Argo
CD's): spawning them with a log each, waiting for them to serve, recognising them later by pid,
and stopping them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .console import log
from .waiting import WaitTimeout, wait_for


def free_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def spawn(
    name: str, argv: list[str], state: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``argv`` in its own session, its output in ``state``/logs/``name``.log."""
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
    """Guard against pid reuse: only signal a live process still running our binary (by its
    executable: redis-server rewrites its command line, and is a link to redis-check-rdb)."""
    try:
        exe = os.readlink(f"/proc/{pid}/exe")
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z" and exe == os.path.realpath(binary)


def http_ok(url: str, context: ssl.SSLContext | None = None, token: str | None = None) -> bool:
    request = urllib.request.Request(url)  # noqa: S310
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        # Only the loopback (or node bridge) http(s) URLs the launchers build are ever opened.
        with urllib.request.urlopen(request, timeout=3, context=context) as response:  # noqa: S310
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError, ssl.SSLError):
        return False


class StartError(Exception):
    """A start that failed; `retryable` when a process died (e.g. a port taken meanwhile)."""

    def __init__(self, message: str, retryable: bool) -> None:
        super().__init__(message)
        self.retryable = retryable


def wait_started(
    what: str,
    check: Callable[[], bool],
    deadline: float,
    procs: dict[str, subprocess.Popen[bytes]],
    state: Path,
) -> None:
    """Wait until ``check`` holds; if a process dies or time runs out, stop the rest (keeping
    the logs) and raise StartError."""

    def probe() -> bool:
        if check():
            return True
        # Our own children: poll() is exact.
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = tail_log(state / "logs" / f"{name}.log")
                terminate(procs)
                raise StartError(
                    f"{name} exited while waiting for {what}; logs in {state / 'logs'}; "
                    f"last lines of {name}.log:\n{tail}",
                    retryable=True,
                )
        return False

    try:
        wait_for(what, probe, deadline=deadline, interval=0.25)
    except WaitTimeout:
        terminate(procs)
        raise StartError(
            f"timed out waiting for {what}; logs in {state / 'logs'}", retryable=False
        ) from None


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


def load_state(state: Path) -> dict[str, Any] | None:
    """The state dir's record (pids, binaries, ports...), or None."""
    try:
        data: dict[str, Any] = json.loads((state / "state.json").read_text())
    except (OSError, ValueError):
        return None
    return data


def stop_pid(name: str, pid: int | None, binary: str) -> None:
    """TERM a recorded process (only if it still runs our binary), KILL it after 15 s."""
    if not pid or not pid_is_ours(pid, binary):
        return
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    with contextlib.suppress(WaitTimeout):
        wait_for(f"{name} to exit", lambda: not pid_is_ours(pid, binary), timeout=15, interval=0.1)
    if pid_is_ours(pid, binary):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    log(f"stopped {name} (pid {pid})")
