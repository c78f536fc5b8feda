"""Pins (a versions.env beside each launcher), the shared cache and its locks, and running the
Go toolchain with its output on stderr."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from .console import fail, log


def read_pins(path: Path, required: dict[str, tuple[str, str]]) -> dict[str, str]:
    """KEY=VALUE lines of ``path`` (# comments); each ``required`` key must start with its
    prefix, else fail naming the form wanted: {"GO_TOOLCHAIN": ("go1.", "a go1.N.M release")}."""
    pins: dict[str, str] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip()
    for key, (prefix, form) in required.items():
        if not pins.get(key, "").startswith(prefix):
            fail(f"{path}: {key} must be set to {form}")
    return pins


def cache_dir() -> Path:
    """The cache root of every hack/ tool: binaries, Go's caches, state dirs."""
    explicit = os.environ.get("ZOMRO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser().resolve() / "zomro-backup-operator"


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


def go_env(*, cgo: bool = False, toolchain: str | None = None) -> dict[str, str]:
    """Go settings for reproducible, cache-friendly builds that never touch the repository.
    Without ``toolchain`` the installed Go builds (never a fetched one)."""
    env = dict(os.environ)
    root = cache_dir() / "go"
    env.setdefault("GOMODCACHE", str(root / "mod"))
    env.setdefault("GOCACHE", str(root / "build"))
    env["GOFLAGS"] = "-mod=mod -buildvcs=false"
    env["CGO_ENABLED"] = "1" if cgo else "0"
    if toolchain is None:
        env.setdefault("GOTOOLCHAIN", "local")
    else:
        env["GOTOOLCHAIN"] = toolchain
    return env


def stream(
    cmd: list[str],
    capture: bool = False,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    what: str = "",
) -> str:
    """Run a build tool with its progress on stderr (stdout is for the result line), or its
    stdout captured; its failure stops us."""
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
