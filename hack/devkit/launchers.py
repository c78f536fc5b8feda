"""Running the hack/ launchers as commands, the way the tests and hack/bench drive them: output
captured, no stdin, the exit code left to the caller; ZOMRO_CP_STATE_DIR set when a private
state dir is named."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

HACK = Path(__file__).resolve().parents[1]
CONTROL_PLANE = HACK / "control-plane"
ARGOCD = HACK / "argocd"


def run_launcher(
    launcher: Path, *args: str, state_dir: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if state_dir is not None:
        env["ZOMRO_CP_STATE_DIR"] = str(state_dir)
    return subprocess.run(
        [str(launcher), *args],
        env=env,
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def control_plane(
    *args: str, state_dir: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """`hack/control-plane ARGS...` (of ``state_dir``'s control plane, else the environment's)."""
    return run_launcher(CONTROL_PLANE, *args, state_dir=state_dir, timeout=timeout)


def launcher_info(launcher: Path = CONTROL_PLANE) -> dict[str, Any]:
    """The JSON facts of `LAUNCHER info` (bin dir, whether built, ...); raises if it fails."""
    result = run_launcher(launcher, "info", timeout=60)
    if result.returncode != 0:
        raise RuntimeError(f"{launcher.name} info failed: {result.stderr.strip()}")
    info: dict[str, Any] = json.loads(result.stdout)
    return info


def cli(*args: str) -> list[str]:
    """`zomro-backup-operator ARGS...` from this interpreter's environment (the repo's venv)."""
    return [sys.executable, "-m", "zomro_backup_operator", *args]


def operator_command(*args: str, standalone: bool = True) -> list[str]:
    """`zomro-backup-operator run [--standalone] ARGS...`: the operator as the tests and the
    benchmark start it, outside a Pod (standalone unless it is to take part in leader election)."""
    return cli("run", *(["--standalone"] if standalone else []), *args)


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run `zomro-backup-operator ARGS...` to its end: output captured, no stdin, the exit code
    left to the caller."""
    return subprocess.run(
        cli(*args),
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )
