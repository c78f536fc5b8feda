"""The release workflow publishes what the chart and the kustomize base install by default, and
publishes it the way users can trust: on a version tag, tested first, multi-arch, with
provenance and an SBOM. (`make actionlint`, part of `make test`, checks its syntax and
expressions.)"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOW = REPO / ".github" / "workflows" / "release.yml"

pytestmark = pytest.mark.packaging


def _workflow() -> dict[Any, Any]:
    data: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return data


def _step(job: dict[str, Any], action: str) -> dict[str, Any]:
    steps: list[dict[str, Any]] = job["steps"]
    (step,) = [s for s in steps if str(s.get("uses", "")).startswith(action + "@")]
    return step


def test_the_chart_and_kustomize_defaults_point_at_the_published_image() -> None:
    image = _workflow()["env"]["IMAGE"]
    values = yaml.safe_load((REPO / "helm" / "zomro-backup-operator" / "values.yaml").read_text())
    assert values["image"]["repository"] == image
    kustomization = yaml.safe_load((REPO / "deploy" / "kustomization.yaml").read_text())
    (entry,) = kustomization["images"]
    assert entry["newName"] == image


def test_the_release_runs_on_version_tags_only_after_the_tests_pass() -> None:
    workflow = _workflow()
    # PyYAML reads the `on:` key as the boolean True.
    trigger = workflow[True]
    assert trigger == {"push": {"tags": ["v*.*.*"]}}
    jobs = workflow["jobs"]
    assert ".ci/run" in " ".join(str(s.get("run", "")) for s in jobs["test"]["steps"])
    assert "test" in jobs["image"]["needs"]
    assert "image" in jobs["chart"]["needs"]


def test_the_image_is_multi_arch_with_provenance_and_an_sbom() -> None:
    job = _workflow()["jobs"]["image"]
    build = _step(job, "docker/build-push-action")["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["push"] is True
    assert build["provenance"] == "mode=max"
    assert build["sbom"] is True
    attest = _step(job, "actions/attest-build-provenance")["with"]
    assert attest["push-to-registry"] is True
    assert job["permissions"]["id-token"] == "write"


def test_the_chart_is_pushed_as_an_oci_artifact_at_the_tag_version() -> None:
    workflow = _workflow()
    assert workflow["env"]["CHARTS"].startswith("oci://")
    script = " ".join(str(s.get("run", "")) for s in workflow["jobs"]["chart"]["steps"])
    assert 'helm package helm/zomro-backup-operator --version "$VERSION"' in script
    assert 'helm push "zomro-backup-operator-$VERSION.tgz" "$CHARTS"' in script
