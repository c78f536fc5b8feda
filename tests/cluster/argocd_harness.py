"""Argo CD for the cluster tests: `hack/argocd up` against the session's control plane, a
`file://` Git repository made by the test, and Applications read back from the API server."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import yaml
from harness import API_VERSION, INSTANCE, wait_for
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from zomro_backup_operator.resources import KIND

REPO = Path(__file__).resolve().parents[2]
HACK_ARGOCD = REPO / "hack" / "argocd"
ARGO_GROUP, ARGO_VERSION = "argoproj.io", "v1alpha1"
RESYNC_SECONDS = 5
"""The application controller's --app-resync in these tests: how often it compares again."""
SERVER_SIDE_DIFF = {"argocd.argoproj.io/compare-options": "ServerSideDiff=true"}


@dataclass(frozen=True)
class ArgoCD:
    """What `hack/argocd info` reports about the running Argo CD (and its control plane)."""

    namespace: str
    node: bool


def run_hack_argocd(
    command: str, env: dict[str, str], timeout: float
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(HACK_ARGOCD), command],
        env={**os.environ, **env, "ZOMRO_ARGOCD_RESYNC_SECONDS": str(RESYNC_SECONDS)},
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=timeout,
        check=False,
    )


def argocd_info(env: dict[str, str]) -> dict[str, Any]:
    result = run_hack_argocd("info", env, 60)
    assert result.returncode == 0, result.stderr
    info: dict[str, Any] = json.loads(result.stdout)
    return info


class GitRepo:
    """A Git repository on disk, served to Argo CD's repo server as a file:// URL."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True)
        self.git("init", "-q", "-b", "main")

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def git(self, *args: str) -> str:
        result = subprocess.run(
            ["git", "-c", "user.name=pytest", "-c", "user.email=pytest@example.invalid", *args],
            cwd=self.path,
            capture_output=True,
            text=True,
            stdin=subprocess.DEVNULL,
            timeout=60,
            check=False,
        )
        assert result.returncode == 0, f"git {' '.join(args)}: {result.stderr}"
        return result.stdout

    def write(self, relative: str, documents: list[dict[str, Any]]) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump_all(documents, sort_keys=False))

    def remove(self, relative: str) -> None:
        self.git("rm", "-q", relative)

    def commit(self, message: str) -> str:
        """Commit everything; return the new revision."""
        self.git("add", "-A")
        self.git("commit", "-q", "-m", message)
        return self.git("rev-parse", "HEAD").strip()


def write_schedule(
    repo: GitRepo, name: str, *, schedule_name: str, time: str, secret: str = "zomro"
) -> None:
    """schedules/NAME.yaml: a BackupSchedule as a user keeps it in Git, spec only."""
    body = {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "metadata": {"name": name},
        "spec": {
            "instanceId": INSTANCE,
            "scheduleName": schedule_name,
            "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
            "time": time,
            "credentialsSecretRef": {"name": secret},
        },
    }
    repo.write(f"schedules/{name}.yaml", [body])


class Applications:
    """Argo CD Applications in Argo CD's namespace, through the official client."""

    def __init__(self, api: Any, argocd: ArgoCD) -> None:
        self.custom = client.CustomObjectsApi(api)
        self.namespace = argocd.namespace
        self.created: list[str] = []

    def create(
        self,
        name: str,
        *,
        repo: GitRepo,
        path: str,
        namespace: str,
        annotations: dict[str, str] | None = None,
        helm: dict[str, Any] | None = None,
        cascade: bool = False,
    ) -> None:
        """An automated Application (prune, self-heal) as docs/install.md recommends; never
        any ignoreDifferences. ``cascade``: Argo CD's resources finalizer, so that deleting the
        Application deletes what it installed (as argocd/application.yaml has it)."""
        source: dict[str, Any] = {"repoURL": repo.url, "targetRevision": "main", "path": path}
        if helm is not None:
            source["helm"] = helm
        body = {
            "apiVersion": f"{ARGO_GROUP}/{ARGO_VERSION}",
            "kind": "Application",
            "metadata": {
                "name": name,
                "annotations": annotations or {},
                "finalizers": ["resources-finalizer.argocd.argoproj.io"] if cascade else [],
            },
            "spec": {
                "project": "default",
                "source": source,
                "destination": {"server": "https://kubernetes.default.svc", "namespace": namespace},
                "syncPolicy": {"automated": {"prune": True, "selfHeal": True}},
            },
        }
        self.custom.create_namespaced_custom_object(
            ARGO_GROUP, ARGO_VERSION, self.namespace, "applications", body
        )
        self.created.append(name)

    def get(self, name: str) -> dict[str, Any]:
        return cast(
            dict[str, Any],
            self.custom.get_namespaced_custom_object(
                ARGO_GROUP, ARGO_VERSION, self.namespace, "applications", name
            ),
        )

    def delete(self, name: str) -> None:
        try:
            self.custom.delete_namespaced_custom_object(
                ARGO_GROUP, ARGO_VERSION, self.namespace, "applications", name
            )
        except ApiException as exc:
            if exc.status != 404:
                raise

        def gone() -> bool:
            try:
                self.get(name)
            except ApiException as exc:
                return bool(exc.status == 404)
            return False

        wait_for(f"Application {name} to be gone", gone, timeout=120)

    def refresh(self, name: str) -> None:
        """Ask for a comparison now (Argo CD's refresh annotation), instead of the next resync."""
        self.custom.patch_namespaced_custom_object(
            ARGO_GROUP,
            ARGO_VERSION,
            self.namespace,
            "applications",
            name,
            {"metadata": {"annotations": {"argocd.argoproj.io/refresh": "normal"}}},
        )

    def wait(
        self, name: str, *, revision: str, sync: str, health: str, timeout: float = 120.0
    ) -> dict[str, Any]:
        """Wait until the Application is compared at ``revision`` with that sync and health
        status and no operation is running; return it."""

        def probe() -> dict[str, Any] | None:
            app = self.get(name)
            if summary(app) == (revision, sync, health) and not operation_running(app):
                return app
            return None

        try:
            return wait_for(f"{name} {sync}/{health} at {revision[:8]}", probe, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{exc}; now: {describe(self.get(name))}") from None


def summary(app: dict[str, Any]) -> tuple[str, str, str]:
    status = app.get("status") or {}
    sync = status.get("sync") or {}
    return (
        str(sync.get("revision", "")),
        str(sync.get("status", "")),
        str((status.get("health") or {}).get("status", "")),
    )


def operation_running(app: dict[str, Any]) -> bool:
    phase = ((app.get("status") or {}).get("operationState") or {}).get("phase")
    return phase == "Running"


def describe(app: dict[str, Any]) -> str:
    """Sync, health, conditions and every resource's state: what a failure needs to show."""
    status = app.get("status") or {}
    resources = [
        (r.get("kind"), r.get("name"), r.get("status"), (r.get("health") or {}).get("status"),
         (r.get("health") or {}).get("message"))
        for r in status.get("resources") or []
    ]  # fmt: skip
    operation = status.get("operationState") or {}
    return (
        f"{summary(app)} conditions={status.get('conditions')} resources={resources} "
        f"operation={operation.get('phase')}: {operation.get('message')}"
    )
