"""The two things kopf has no API for: reading a Secret, and writing status before a handler ends.

Both use the official client, which blocks: callers run them in a worker thread.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

import kubernetes

from zomro_backup_operator.resources import GROUP, PLURAL, VERSION


class StatusWriteWithheldError(RuntimeError):
    """A status write not sent: ``may_write`` refused it (this process no longer leads)."""


class StatusChangedError(RuntimeError):
    """A conditional status write refused: the resource changed since the version it named."""


class Kube:
    """``may_write``, if given, is asked right before each write is sent; False withholds it."""

    def __init__(
        self, api_client: Any | None = None, *, may_write: Callable[[], bool] | None = None
    ) -> None:
        if api_client is None:
            api_client = load_client()
        self._may_write = may_write
        self._api = api_client
        self._custom = kubernetes.client.CustomObjectsApi(api_client)

    def read_secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        """The Secret's ``data`` (base64 values), None if there is no such Secret.

        Through the client's generic call, not ``CoreV1Api``: that class's module alone is
        17 MiB of the operator's heap (tracemalloc), for this one read."""
        request = self._api.param_serialize(
            method="GET",
            resource_path="/api/v1/namespaces/{namespace}/secrets/{name}",
            path_params={"namespace": namespace, "name": name},
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        try:
            answer = self._api.call_api(*request)
            answer.read()
            secret: Any = self._api.response_deserialize(answer, {"200": "object"}).data
        except kubernetes.client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = secret.get("data") or {}
        return {str(key): str(value) for key, value in data.items()}

    def patch_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        plural: str = PLURAL,
        resource_version: str | None = None,
        uid: str | None = None,
    ) -> str:
        """Merge ``status`` into the resource's; returns its new resourceVersion. With
        ``resource_version``, only if the resource is still at that version (the API server's
        optimistic concurrency), else StatusChangedError; with ``uid`` instead, only onto that
        object, never onto one made since with its name (an ApiException, 422, then)."""
        if self._may_write is not None and not self._may_write():
            raise StatusWriteWithheldError(
                f"status of {namespace}/{name} not written: this process may not write now"
            )
        body: Any = {"status": dict(status)}
        options: dict[str, Any] = {}
        if uid is not None:
            # The status subresource ignores metadata in a merge patch: a JSON patch's test is
            # what refuses another object. Each field is replaced whole, as a merge patch of
            # these fields does, and a null is pruned (no status field of the CRD is nullable).
            body = [{"op": "test", "path": "/metadata/uid", "value": uid}] + [
                {"op": "add", "path": f"/status/{_pointer(key)}", "value": value}
                for key, value in status.items()
            ]
            options["_content_type"] = "application/json-patch+json"
        elif resource_version is not None:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            written: Any = self._custom.patch_namespaced_custom_object_status(
                GROUP, VERSION, namespace, plural, name, body, **options
            )
        except kubernetes.client.ApiException as exc:
            if exc.status == 409 and resource_version is not None:
                raise StatusChangedError(
                    f"status of {namespace}/{name} not written: the resource changed since "
                    f"version {resource_version}"
                ) from exc
            raise
        return str(written["metadata"]["resourceVersion"])


def _pointer(key: str) -> str:
    return key.replace("~", "~0").replace("/", "~1")


def load_client() -> Any:
    """An ApiClient of its own: in-cluster config inside a Pod, else the current kubeconfig."""
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
