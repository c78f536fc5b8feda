"""Pins and paths shared by the build and the run (the generic parts are hack/devkit's)."""

from __future__ import annotations

from pathlib import Path

from devkit import build
from devkit.build import cache_dir, locked
from devkit.console import fail, log

__all__ = ["bin_dir", "cache_dir", "fail", "locked", "log", "read_pins"]

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
PINS_FILE = HERE / "versions.env"
MODULE = HERE / "module"
PINS = {
    "ARGOCD_VERSION": ("v", "a vX.Y.Z version"),
    "GO_TOOLCHAIN": ("go1.", "a go1.N.M release"),
}
"""The pins versions.env must set, each with its prefix and the form wanted."""


def read_pins() -> dict[str, str]:
    return build.read_pins(PINS_FILE, PINS)


def bin_dir(pins: dict[str, str]) -> Path:
    """Versioned by everything that decides the binary: Argo CD's version and the toolchain."""
    return cache_dir() / "bin" / f"argocd-{pins['ARGOCD_VERSION']}_{pins['GO_TOOLCHAIN']}"
