"""Every health check sample, through Argo CD's own code.

`argocd admin settings resource-overrides health` runs the health script from the argocd-cm we
ship the way the application controller does: gopher-lua (Lua 5.1), only the `base`, `table`,
`package` and a safe `os` library unless `useOpenLibs` is set, and gitops-engine's handling of
terminating resources. The binary is the one `hack/argocd build` makes (`make test` builds it);
under CI a missing binary fails these tests instead of skipping them.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from devkit.launchers import ARGOCD, launcher_info

pytestmark = pytest.mark.process

REPO = Path(__file__).resolve().parents[2]
ARGOCD_CM = REPO / "argocd" / "argocd-cm.yaml"
CUSTOMIZATIONS = REPO / "argocd" / "resource_customizations"
HEALTH_TESTS = sorted(CUSTOMIZATIONS.glob("*/*/health_test.yaml"))


@pytest.fixture(scope="module")
def argocd() -> Path:
    info = launcher_info(ARGOCD)
    if not info["built"]:
        reason = f"argocd is not built ({info['argocd']}); run `hack/argocd build` once"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(reason, pytrace=False)
        pytest.skip(reason)
    return Path(info["argocd"])


def _cases() -> list[Any]:
    cases = []
    for health_test in HEALTH_TESTS:
        kind = f"{health_test.parent.parent.name}/{health_test.parent.name}"
        for case in yaml.safe_load(health_test.read_text())["tests"]:
            sample = health_test.parent / case["inputPath"]
            cases.append(pytest.param(sample, case["healthStatus"], id=f"{kind}:{sample.stem}"))
    return cases


def argocd_health(argocd: Path, sample: Path) -> dict[str, str]:
    """STATUS and MESSAGE as Argo CD's health code reports them for ``sample``."""
    result = subprocess.run(
        [str(argocd), "admin", "settings", "resource-overrides", "health", str(sample),
         "--argocd-cm-path", str(ARGOCD_CM)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=60,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    fields = dict(line.split(": ", 1) for line in result.stdout.splitlines() if ": " in line)
    assert set(fields) == {"STATUS", "MESSAGE"}, result.stdout
    return {"status": fields["STATUS"], "message": fields["MESSAGE"]}


def test_there_is_a_health_test_yaml_for_the_backupschedule() -> None:
    assert CUSTOMIZATIONS / "zomro.com" / "BackupSchedule" / "health_test.yaml" in HEALTH_TESTS


@pytest.mark.parametrize(("sample", "expected"), _cases())
def test_argocd_gives_each_sample_the_expected_health(
    argocd: Path, sample: Path, expected: dict[str, str]
) -> None:
    assert argocd_health(argocd, sample) == expected


def test_the_health_scripts_need_no_open_libraries() -> None:
    """Without useOpenLibs Argo CD has no `string` or `math`: the samples above prove the
    scripts work so; this keeps anyone from switching the libraries on unnoticed."""
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    assert not [key for key in data if key.startswith("resource.customizations.useOpenLibs")]
