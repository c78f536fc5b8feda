"""Pins, cache paths, logging and locks shared by the build and the run."""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PINS_FILE = HERE / "versions.env"
MODULE = HERE / "module"
PIN_KEYS = ("ARGOCD_VERSION", "GO_TOOLCHAIN")


def log(message: str) -> None:
    """Progress goes to stderr: stdout is reserved for the `export` lines."""
    print(f"argocd: {message}", file=sys.stderr, flush=True)


def fail(message: str) -> NoReturn:
    log(f"error: {message}")
    raise SystemExit(1)


def read_pins() -> dict[str, str]:
    pins: dict[str, str] = {}
    for raw in PINS_FILE.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            pins[key.strip()] = value.strip()
    if not pins.get("ARGOCD_VERSION", "").startswith("v"):
        fail(f"{PINS_FILE}: ARGOCD_VERSION must be set to a vX.Y.Z version")
    if not pins.get("GO_TOOLCHAIN", "").startswith("go1."):
        fail(f"{PINS_FILE}: GO_TOOLCHAIN must be set to a go1.N.M release")
    return pins


def cache_dir() -> Path:
    """The same cache root as hack/control-plane's."""
    explicit = os.environ.get("ZOMRO_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser().resolve()
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg).expanduser().resolve() / "zomro-backup-operator"


def bin_dir(pins: dict[str, str]) -> Path:
    """Versioned by everything that decides the binary: Argo CD's version and the toolchain."""
    return cache_dir() / "bin" / f"argocd-{pins['ARGOCD_VERSION']}_{pins['GO_TOOLCHAIN']}"


@contextlib.contextmanager
def locked(path: Path, holder: str) -> Iterator[None]:
    """One build (or one up/down per state dir) at a time: parallel runs wait, not race."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log(f"{holder} holds {path}; waiting for it")
            fcntl.flock(handle, fcntl.LOCK_EX)
        yield
