"""The two things kopf has no API for: reading a Secret, and writing status before a handler ends.

Both use the official client, which blocks: callers run them in a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import kubernetes

from zomro_backup_operator.resources import GROUP, PLURAL, VERSION


class Kube:
    def __init__(self, api_client: Any | None = None) -> None:
        if api_client is None:
            api_client = _load_client()
        self._core = kubernetes.client.CoreV1Api(api_client)
        self._custom = kubernetes.client.CustomObjectsApi(api_client)

    def read_secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        try:
            secret = self._core.read_namespaced_secret(name, namespace)
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return {str(key): str(value) for key, value in (secret.data or {}).items()}

    def patch_status(
        self, namespace: str, name: str, status: Mapping[str, Any], *, plural: str = PLURAL
    ) -> None:
        self._custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, plural, name, {"status": dict(status)}
        )


def _load_client() -> Any:
    configuration = kubernetes.client.Configuration()
    try:
        kubernetes.config.load_incluster_config(  # type: ignore[no-untyped-call]
            client_configuration=configuration
        )
    except kubernetes.config.ConfigException:
        # KUBECONFIG as it is now, not as it was when the client library was imported.
        kubernetes.config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=os.environ.get("KUBECONFIG") or None,
            client_configuration=configuration,
        )
    return kubernetes.client.ApiClient(configuration)
