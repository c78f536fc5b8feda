"""The Argo CD health check (argocd/.../health.lua), run with a full Lua 5.4 via lupa: fast,
but not Argo CD's gopher-lua (test_argocd_health_by_argocd.py is the proof).

The samples are in Argo CD's own `health_test.yaml` format, so the same files could be contributed
to Argo CD's resource_customizations as they are.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import lupa
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHECK_DIR = REPO / "argocd" / "resource_customizations" / "zomro.com" / "BackupSchedule"
HEALTH_LUA = CHECK_DIR / "health.lua"
ARGOCD_CM = REPO / "argocd" / "argocd-cm.yaml"
CM_KEY = "resource.customizations.health.zomro.com_BackupSchedule"
DEGRADED_REASONS = (
    "AuthFailed",
    "CredentialsNotFound",
    "InstanceNotFound",
    "InvalidSpec",
    "ZomroUnavailable",
    "Conflict",
)
BACKUP_DEGRADED_REASONS = ("BackupFailed", "BackupOverdue")


def health_of(obj: dict[str, Any], script: str | None = None) -> dict[str, str]:
    """Evaluate the health script the way Argo CD does: `obj` global in, `hs` table out, and
    for a terminating resource the script's `deletionMessage` as the message (Argo CD's
    gitops-engine does that; without one it says "Pending deletion"). Only a quick check: the
    proof is tests/process/test_argocd_health_by_argocd.py, which runs Argo CD's own code."""
    lua = lupa.LuaRuntime(unpack_returned_tuples=True)
    lua.globals().obj = lua.table_from(obj, recursive=True)
    result = lua.execute(script if script is not None else HEALTH_LUA.read_text())
    health = {str(k): str(v) for k, v in result.items()}
    deletion_message = health.pop("deletionMessage", None)
    if obj.get("metadata", {}).get("deletionTimestamp"):
        health["message"] = deletion_message or "Pending deletion"
    return health


def _cases() -> list[Any]:
    spec = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    return [
        pytest.param(case["inputPath"], case["healthStatus"], id=Path(case["inputPath"]).stem)
        for case in spec["tests"]
    ]


def _sample(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((CHECK_DIR / "testdata" / f"{name}.yaml").read_text())
    return loaded


@pytest.mark.parametrize(("input_path", "expected"), _cases())
def test_health_of_each_sample_matches_health_test_yaml(
    input_path: str, expected: dict[str, str]
) -> None:
    obj = yaml.safe_load((CHECK_DIR / input_path).read_text())
    assert health_of(obj) == expected


def test_samples_cover_every_health_state_and_every_failure_reason() -> None:
    spec = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    statuses = {case["healthStatus"]["status"] for case in spec["tests"]}
    assert statuses == {"Healthy", "Progressing", "Degraded", "Suspended"}
    degraded_reasons = {
        next(
            condition["reason"]
            for condition in yaml.safe_load((CHECK_DIR / case["inputPath"]).read_text())["status"][
                "conditions"
            ]
            if condition["status"] == "False"
        )
        for case in spec["tests"]
        if case["healthStatus"]["status"] == "Degraded"
    }
    assert degraded_reasons == {*DEGRADED_REASONS, *BACKUP_DEGRADED_REASONS}


def test_every_sample_file_is_used_by_health_test_yaml() -> None:
    spec = yaml.safe_load((CHECK_DIR / "health_test.yaml").read_text())
    used = {Path(case["inputPath"]).name for case in spec["tests"]}
    assert used == {p.name for p in (CHECK_DIR / "testdata").glob("*.yaml")}


def test_ready_true_is_healthy_only_once_the_current_generation_is_observed() -> None:
    obj = _sample("synced")
    assert health_of(obj)["status"] == "Healthy"
    newer = copy.deepcopy(obj)
    newer["metadata"]["generation"] += 1
    assert health_of(newer)["status"] == "Progressing"
    for condition in newer["status"]["conditions"]:
        condition["observedGeneration"] = newer["metadata"]["generation"]
    assert health_of(newer)["status"] == "Healthy"


@pytest.mark.parametrize("reason", DEGRADED_REASONS)
def test_each_failure_reason_at_the_current_generation_is_degraded_with_its_message(
    reason: str,
) -> None:
    obj = _sample("synced")
    obj["status"]["conditions"][0].update(status="False", reason=reason, message="what went wrong")
    assert health_of(obj) == {"status": "Degraded", "message": f"{reason}: what went wrong"}


def _with_backups(status: str, reason: str) -> dict[str, Any]:
    obj = _sample("synced")
    obj["status"]["conditions"].append(
        {"type": "BackupsHealthy", "status": status, "reason": reason, "message": "about backups"}
    )
    return obj


@pytest.mark.parametrize("reason", BACKUP_DEGRADED_REASONS)
def test_a_synced_schedule_whose_backups_fail_or_are_overdue_is_degraded(reason: str) -> None:
    assert health_of(_with_backups("False", reason)) == {
        "status": "Degraded",
        "message": f"{reason}: about backups",
    }


@pytest.mark.parametrize(
    ("status", "reason"),
    [("Unknown", "AwaitingFirstRun"), ("True", "BackupCompleted"), ("Unknown", "Suspended")],
)
def test_backups_not_failing_leave_a_synced_schedule_healthy(status: str, reason: str) -> None:
    assert health_of(_with_backups(status, reason))["status"] == "Healthy"


def test_a_schedule_that_is_not_ready_stays_degraded_by_its_own_reason_whatever_the_backups() -> (
    None
):
    obj = _with_backups("False", "BackupOverdue")
    obj["status"]["conditions"][0].update(status="False", reason="AuthFailed", message="denied")
    assert health_of(obj) == {"status": "Degraded", "message": "AuthFailed: denied"}


def test_a_failure_for_an_older_generation_waits_for_the_new_spec() -> None:
    obj = _sample("auth_failed")
    obj["metadata"]["generation"] += 1
    assert health_of(obj)["status"] == "Progressing"


@pytest.mark.parametrize("reason", ["Creating", "Deleting"])
def test_work_in_progress_reasons_are_progressing(reason: str) -> None:
    obj = _sample("synced")
    obj["status"]["conditions"][0].update(status="False", reason=reason)
    assert health_of(obj)["status"] == "Progressing"


def test_argocd_cm_snippet_embeds_health_lua_verbatim() -> None:
    config_map = yaml.safe_load(ARGOCD_CM.read_text())
    assert config_map["kind"] == "ConfigMap"
    assert config_map["metadata"] == {
        "name": "argocd-cm",
        "namespace": "argocd",
        "labels": {"app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"},
    }
    assert config_map["data"][CM_KEY] == HEALTH_LUA.read_text()


def test_argocd_cm_snippet_script_runs_like_the_file() -> None:
    script = yaml.safe_load(ARGOCD_CM.read_text())["data"][CM_KEY]
    for name in ("no_status", "synced", "auth_failed"):
        assert health_of(_sample(name), script) == health_of(_sample(name))
