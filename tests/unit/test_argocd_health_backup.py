"""The Argo CD health check of Backup (argocd/.../Backup/health.lua), with lupa as for the
BackupSchedule's; test_argocd_health_by_argocd.py runs the same samples through Argo CD itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from test_argocd_health import ARGOCD_CM, health_of

REPO = Path(__file__).resolve().parents[2]
CHECK_DIR = REPO / "argocd" / "resource_customizations" / "zomro.com" / "Backup"
HEALTH_LUA = CHECK_DIR / "health.lua"
CM_KEY = "resource.customizations.health.zomro.com_Backup"


def _cases() -> list[Any]:
    spec = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    return [
        pytest.param(case["inputPath"], case["healthStatus"], id=Path(case["inputPath"]).stem)
        for case in spec["tests"]
    ]


@pytest.mark.parametrize(("input_path", "expected"), _cases())
def test_health_of_each_backup_sample_matches_health_test_yaml(
    input_path: str, expected: dict[str, str]
) -> None:
    obj = yaml.safe_load((CHECK_DIR / input_path).read_text())
    assert health_of(obj, HEALTH_LUA.read_text()) == expected


def test_every_phase_and_the_protected_deletion_have_a_sample() -> None:
    spec = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    samples = [
        yaml.safe_load((CHECK_DIR / case["inputPath"]).read_text()) for case in spec["tests"]
    ]
    phases = {(s.get("status") or {}).get("phase") for s in samples}
    assert phases >= {"Pending", "InProgress", "Completed", "Failed"}
    used = {case["inputPath"] for case in spec["tests"]}
    assert used == {f"testdata/{p.name}" for p in (CHECK_DIR / "testdata").glob("*.yaml")}


def test_argocd_cm_snippet_embeds_the_backup_health_lua_verbatim() -> None:
    data = yaml.safe_load(ARGOCD_CM.read_text())["data"]
    assert data[CM_KEY] == HEALTH_LUA.read_text()
