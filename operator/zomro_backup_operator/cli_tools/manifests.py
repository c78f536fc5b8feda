"""BackupSchedule manifests that adopt existing Zomro schedules: pure, deterministic."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import yaml

from zomro_backup_operator.resources import ADOPT_ANNOTATION, GROUP, KIND, VERSION
from zomro_backup_operator.zomro.models import MAX_NAME_LENGTH, Schedule
from zomro_backup_operator.zomro.wire import clean_text

MAX_RESOURCE_NAME = 63
"""A DNS-1123 label: short enough for any tool that puts the name into a label."""
_NOT_NAME = re.compile(r"[^a-z0-9]+")

DeletionPolicy = Literal["Delete", "Orphan"]


class _Quoted(str):
    """A string always written in quotes: ``02:01`` and ids must never be read as numbers by a
    YAML 1.1 reader (``01:30`` is sexagesimal there)."""


class _Dumper(yaml.SafeDumper):
    pass


_Dumper.add_representer(
    _Quoted, lambda dumper, value: dumper.represent_scalar("tag:yaml.org,2002:str", value, '"')
)


def resource_name(schedule: Schedule) -> str:
    """``<name as a DNS-1123 label>-<id>``: the id keeps it unique and stable, so the same
    schedule gets the same name on every import, whatever else the account holds."""
    suffix = f"-{schedule.id.lower()}"
    ascii_name = unicodedata.normalize("NFKD", schedule.name).encode("ascii", "ignore").decode()
    stem = _NOT_NAME.sub("-", ascii_name.lower()).strip("-")
    stem = stem[: MAX_RESOURCE_NAME - len(suffix)].strip("-") or "schedule"
    return f"{stem}{suffix}"


def why_not_importable(schedule: Schedule) -> str | None:
    """The reason a schedule cannot become a valid BackupSchedule as it stands, or None."""
    if not 1 <= len(schedule.name) <= MAX_NAME_LENGTH:
        return f"its name has {len(schedule.name)} characters, the resource allows 1-60"
    if not schedule.days:
        return "it has no days"
    if not schedule.instance_id.isdigit() or not schedule.id.isdigit():
        return "its ids are not numbers"
    return None


@dataclass(frozen=True)
class ManifestOptions:
    namespace: str | None = None
    secret_name: str | None = None
    deletion_policy: DeletionPolicy = "Orphan"


def manifest(schedule: Schedule, options: ManifestOptions) -> dict[str, Any]:
    """The resource that adopts ``schedule`` and asks for exactly what Zomro holds (no write)."""
    metadata: dict[str, Any] = {"name": resource_name(schedule)}
    if options.namespace:
        metadata["namespace"] = options.namespace
    metadata["annotations"] = {ADOPT_ANNOTATION: _Quoted(schedule.id)}
    spec: dict[str, Any] = {
        "instanceId": _Quoted(schedule.instance_id),
        "scheduleName": schedule.name,
        "days": [day.title for day in sorted(schedule.days)],
        "time": _Quoted(schedule.time),
    }
    if options.secret_name:
        spec["credentialsSecretRef"] = {"name": options.secret_name}
    spec["deletionPolicy"] = options.deletion_policy
    return {"apiVersion": f"{GROUP}/{VERSION}", "kind": KIND, "metadata": metadata, "spec": spec}


def render(schedules: Iterable[Schedule], options: ManifestOptions) -> str:
    """Multi-document YAML, one resource per schedule, each under a comment naming its origin."""
    documents = []
    for schedule in schedules:
        # Zomro's text inside a comment: a line break in it would end the comment.
        server = f" ({clean_text(schedule.server_name)})" if schedule.server_name else ""
        body = yaml.dump(
            manifest(schedule, options), Dumper=_Dumper, sort_keys=False, allow_unicode=True
        )
        documents.append(
            f"# Zomro schedule {schedule.id} on instance {schedule.instance_id}{server}\n{body}"
        )
    return "---\n".join(documents)
