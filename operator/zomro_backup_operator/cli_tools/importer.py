"""``zomro-backup-operator import``: the account's schedules as BackupSchedule manifests on
stdout; schedules a resource in the cluster already claims are skipped and listed on stderr."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, cast

from zomro_backup_operator.cli_tools.access import (
    ExitCode,
    FoundCredentials,
    ToolError,
    exit_code_for,
    kube_api_client,
    kubernetes_errors,
    open_client,
)
from zomro_backup_operator.cli_tools.manifests import (
    ManifestOptions,
    render,
    resource_name,
    why_not_importable,
)
from zomro_backup_operator.resources import ADOPT_ANNOTATION, GROUP, PLURAL, VERSION
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.zomro.errors import ZomroError
from zomro_backup_operator.zomro.models import Schedule


@dataclass(frozen=True)
class ClusterView:
    """What the cluster already holds: schedule ids claimed, and resource names taken."""

    claims: dict[str, str]
    """Schedule id -> ``namespace/name`` of the resource that has (or asks for) it."""
    names: frozenset[str]
    """``namespace/name`` of every BackupSchedule."""
    namespace: str
    """Where the manifests land when they name no namespace: the kubeconfig's default."""


def read_cluster(kubeconfig: str | None, namespace: str | None) -> ClusterView:
    """Every BackupSchedule in the cluster: ``status.scheduleId`` and the adoption annotation."""
    from kubernetes import client, config
    from kubernetes.client import ApiException

    default_namespace = namespace or _context_namespace(kubeconfig, config)
    api = kube_api_client(kubeconfig)
    try:
        with kubernetes_errors("list BackupSchedules"):
            try:
                listing = cast(
                    dict[str, Any],
                    client.CustomObjectsApi(api).list_cluster_custom_object(GROUP, VERSION, PLURAL),
                )
            except ApiException as exc:
                if exc.status != 404:
                    raise
                # The CRD is not installed: nothing can be claimed.
                return ClusterView({}, frozenset(), default_namespace)
    finally:
        api.close()
    claims: dict[str, str] = {}
    names: set[str] = set()
    for item in listing.get("items") or []:
        meta = item.get("metadata") or {}
        key = f"{meta.get('namespace')}/{meta.get('name')}"
        names.add(key)
        for schedule_id in (
            (item.get("status") or {}).get("scheduleId"),
            (meta.get("annotations") or {}).get(ADOPT_ANNOTATION),
        ):
            if schedule_id:
                claims.setdefault(str(schedule_id).strip(), key)
    return ClusterView(claims, frozenset(names), default_namespace)


def _context_namespace(kubeconfig: str | None, config: Any) -> str:
    try:
        _, active = config.list_kube_config_contexts(
            config_file=kubeconfig or os.environ.get("KUBECONFIG") or None
        )
    except (config.ConfigException, OSError):
        return "default"
    return str((active or {}).get("context", {}).get("namespace") or "default")


def has_kubeconfig(kubeconfig: str | None) -> bool:
    if kubeconfig:
        return True
    paths = os.environ.get("KUBECONFIG", "").split(os.pathsep)
    return any(Path(p).is_file() for p in paths if p) or (Path.home() / ".kube/config").is_file()


async def list_account(
    found: FoundCredentials, settings: Settings, instances: Sequence[str], err: IO[str]
) -> tuple[list[Schedule], bool]:
    """Every schedule of the named instances (all the account's when none); False if one failed."""
    complete = True
    found_schedules: list[Schedule] = []
    async with open_client(found.credentials, settings) as client:
        ids = list(instances) or [i.id for i in await client.list_instances()]
        for instance_id in ids:
            try:
                found_schedules += await client.list_schedules(instance_id)
            except ZomroError as exc:
                if exit_code_for(exc) in (ExitCode.LOGIN_REFUSED, ExitCode.BLOCKED):
                    raise
                print(f"import: instance {instance_id}: {exc.message}", file=err)
                complete = False
    found_schedules.sort(key=lambda s: (int(s.instance_id), int(s.id)))
    return found_schedules, complete


def run_import(
    found: FoundCredentials,
    settings: Settings,
    *,
    instances: Sequence[str],
    options: ManifestOptions,
    kubeconfig: str | None,
    check_cluster: bool,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    view: ClusterView | None = None
    if check_cluster and has_kubeconfig(kubeconfig):
        view = read_cluster(kubeconfig, options.namespace)
    elif check_cluster:
        print("import: no kubeconfig; existing claims in a cluster were not checked", file=err)
    try:
        schedules, complete = asyncio.run(list_account(found, settings, instances, err))
    except ZomroError as exc:
        raise ToolError(exit_code_for(exc), exc.message) from None
    chosen: list[Schedule] = []
    for schedule in schedules:
        where = f"schedule {schedule.id} {schedule.name!r} on instance {schedule.instance_id}"
        reason = why_not_importable(schedule)
        if reason is not None:
            print(f"import: skipped {where}: {reason}", file=err)
            complete = False
            continue
        if view is not None:
            claimed_by = view.claims.get(schedule.id)
            if claimed_by is not None:
                print(f"import: skipped {where}: already claimed by {claimed_by}", file=err)
                continue
            taken = f"{options.namespace or view.namespace}/{resource_name(schedule)}"
            if taken in view.names:
                print(f"import: skipped {where}: a resource {taken} exists", file=err)
                complete = False
                continue
        chosen.append(schedule)
    out.write(render(chosen, options))
    out.flush()
    print(f"import: {len(chosen)} of {len(schedules)} schedule(s) written", file=err)
    return int(ExitCode.OK if complete else ExitCode.PROBLEMS)
