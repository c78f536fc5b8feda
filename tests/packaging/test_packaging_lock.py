"""requirements.lock, what the image installs with --require-hashes, stays in step with
pyproject.toml; the check needs no network (hack/lock --check)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]

# Not in `make unit` (seconds): `make packaging` and `make test` run these.
pytestmark = pytest.mark.packaging
LOCK = REPO / "requirements.lock"


def _pins() -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) for every requirement in the lock."""
    joined = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    pins: dict[str, tuple[str, list[str]]] = {}
    for line in joined.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        requirement, *options = line.split()
        name, _, version = requirement.partition("==")
        assert version, f"not pinned with ==: {line}"
        hashes = [option for option in options if option.startswith("--hash=sha256:")]
        pins[canonicalize_name(name)] = (version, hashes)
    return pins


def _check(repo: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(repo / "hack" / "lock"), "--check"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_lock_is_current_with_pyprojects_dependencies() -> None:
    result = _check(REPO)
    assert result.returncode == 0, result.stderr


def test_every_dependency_is_pinned_inside_its_range_and_every_pin_has_hashes() -> None:
    pins = _pins()
    for line in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]:
        requirement = Requirement(line)
        version, _ = pins[canonicalize_name(requirement.name)]
        assert requirement.specifier.contains(version), (line, version)
    for name, (_, hashes) in pins.items():
        assert hashes, f"{name} has no hash"


def test_the_check_fails_when_a_dependency_changes_without_a_new_lock(tmp_path: Path) -> None:
    (tmp_path / "hack").mkdir()
    shutil.copy2(REPO / "hack" / "lock", tmp_path / "hack" / "lock")
    shutil.copy2(LOCK, tmp_path / "requirements.lock")
    pyproject = (REPO / "pyproject.toml").read_text()
    (tmp_path / "pyproject.toml").write_text(pyproject.replace('"httpx>=0.27"', '"httpx>=0.28"'))

    result = _check(tmp_path)

    assert result.returncode == 1
    assert "make lock" in result.stderr
