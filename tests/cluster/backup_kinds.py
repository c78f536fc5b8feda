"""Shortcuts for the Backup and BackupRetention kinds in the cluster tests, and the fixtures that
let the operator finalize what a test left of them (harness.py has BackupSchedule's)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from harness import Cluster, OperatorProcess, finalize_left, wait_for
from kubernetes.client.exceptions import ApiException

from zomro_backup_operator.resources import GROUP, VERSION
from zomro_backup_operator.sandbox.control import SandboxProcess


class Kind:
    """One plural of zomro.com in the test's namespace."""

    def __init__(self, cluster: Cluster, kind: str, plural: str) -> None:
        self.cluster = cluster
        self.kind = kind
        self.plural = plural

    def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        body = {
            "apiVersion": f"{GROUP}/{VERSION}",
            "kind": self.kind,
            "metadata": {"name": name},
            "spec": {"credentialsSecretRef": {"name": "zomro"}, **spec},
        }
        return cast(
            dict[str, Any],
            self.cluster.custom.create_namespaced_custom_object(
                GROUP, VERSION, self.cluster.namespace, self.plural, body
            ),
        )

    def get(self, name: str) -> dict[str, Any] | None:
        try:
            return cast(
                dict[str, Any],
                self.cluster.custom.get_namespaced_custom_object(
                    GROUP, VERSION, self.cluster.namespace, self.plural, name
                ),
            )
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def names(self) -> list[str]:
        listing = cast(
            dict[str, Any],
            self.cluster.custom.list_namespaced_custom_object(
                GROUP, VERSION, self.cluster.namespace, self.plural
            ),
        )
        return [item["metadata"]["name"] for item in listing["items"]]

    def status(self, name: str) -> dict[str, Any]:
        return dict((self.get(name) or {}).get("status") or {})

    def ready(self, name: str) -> dict[str, Any]:
        for condition in self.status(name).get("conditions") or []:
            if condition.get("type") == "Ready":
                return dict(condition)
        return {}

    def delete(self, name: str) -> None:
        self.cluster.custom.delete_namespaced_custom_object(
            GROUP, VERSION, self.cluster.namespace, self.plural, name
        )

    def wait(
        self,
        name: str,
        what: str,
        probe: Callable[[dict[str, Any]], bool],
        *,
        timeout: float = 60.0,
    ) -> dict[str, Any]:
        """Wait until ``probe(status)`` holds; return the status."""

        def look() -> dict[str, Any] | None:
            status = self.status(name)
            return status if probe(status) else None

        return wait_for(f"{self.kind} {name}: {what}", look, timeout=timeout)

    def wait_reason(self, name: str, reason: str, *, timeout: float = 60.0) -> dict[str, Any]:
        """Wait until the Ready condition has ``reason``; return the condition."""
        wait_for(
            f"{self.kind} {name} Ready reason {reason}",
            lambda: self.ready(name).get("reason") == reason,
            timeout=timeout,
        )
        return self.ready(name)

    def wait_gone(self, name: str, *, timeout: float = 60.0) -> None:
        wait_for(f"{self.kind} {name} to be gone", lambda: self.get(name) is None, timeout=timeout)

    def clear_finalizers(self, name: str) -> None:
        """Let the resource go without its operator."""
        self.cluster.custom.patch_namespaced_custom_object(
            GROUP,
            VERSION,
            self.cluster.namespace,
            self.plural,
            name,
            {"metadata": {"finalizers": []}},
        )

    def event_reasons(self, name: str) -> list[str]:
        return [
            e.reason
            for e in self.cluster.events()
            if e.involved_object.name == name and e.involved_object.kind == self.kind
        ]


@pytest.fixture
def backups(cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess) -> Iterator[Kind]:
    kind = Kind(cluster, "Backup", "backups")
    yield kind
    _finalize(kind, operator, sandbox)


@pytest.fixture
def retentions(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> Iterator[Kind]:
    kind = Kind(cluster, "BackupRetention", "backupretentions")
    yield kind
    _finalize(kind, operator, sandbox)


def _finalize(kind: Kind, operator: OperatorProcess, sandbox: SandboxProcess) -> None:
    """Unprotect the images a test protected, then let the operator finalize what it left."""
    for instance in sandbox.control.state()["instances"].values():
        for backup in instance["backups"]:
            if backup["protected"]:
                sandbox.control.set_backup_protected(backup["id"], False)
    finalize_left(kind, kind.names(), sandbox, operator)
