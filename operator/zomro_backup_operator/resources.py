"""The BackupSchedule resource as the operator reads it: typed views of spec, status, metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from zomro_backup_operator.pending import PendingCreate
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday

GROUP = "zomro.com"
VERSION = "v1alpha1"
PLURAL = "backupschedules"
KIND = "BackupSchedule"
FINALIZER = "zomro.com/finalizer"
ADOPT_ANNOTATION = "zomro.com/schedule-id"

DeletionPolicy = Literal["Delete", "Orphan"]


class InvalidSpecError(ValueError):
    """The spec cannot be turned into a schedule; the message names the field."""


@dataclass(frozen=True)
class Desired:
    """What one BackupSchedule asks for."""

    namespace: str
    name: str
    generation: int
    instance_id: str
    schedule: ScheduleSpec
    deletion_policy: DeletionPolicy = "Delete"
    adopt_id: str | None = None
    secret_name: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def from_resource(
        cls,
        *,
        namespace: str,
        name: str,
        generation: int,
        spec: Mapping[str, Any],
        annotations: Mapping[str, str],
    ) -> Desired:
        """Read a resource; the API server's schema already checked most of this, but not all
        clusters run our schema version, so check again and name the field."""
        instance_id = str(spec.get("instanceId", ""))
        if not instance_id.isdigit():
            raise InvalidSpecError(f"spec.instanceId must be digits, got {instance_id!r}")
        try:
            days = frozenset(Weekday.from_name(str(day)) for day in spec.get("days") or [])
        except ValueError as exc:
            raise InvalidSpecError(f"spec.days: {exc}") from None
        try:
            schedule = ScheduleSpec(
                name=str(spec.get("scheduleName") or name),
                days=days,
                time=str(spec.get("time", "")),
            )
        except ValueError as exc:
            raise InvalidSpecError(f"spec: {exc}") from None
        policy: DeletionPolicy
        match spec.get("deletionPolicy") or "Delete":
            case "Delete":
                policy = "Delete"
            case "Orphan":
                policy = "Orphan"
            case other:
                raise InvalidSpecError(
                    f"spec.deletionPolicy must be Delete or Orphan, got {other!r}"
                )
        adopt_id = (annotations.get(ADOPT_ANNOTATION) or "").strip() or None
        if adopt_id is not None and not adopt_id.isdigit():
            raise InvalidSpecError(
                f"annotation {ADOPT_ANNOTATION} must be digits, got {adopt_id!r}"
            )
        secret = spec.get("credentialsSecretRef") or {}
        return cls(
            namespace=namespace,
            name=name,
            generation=generation,
            instance_id=instance_id,
            schedule=schedule,
            deletion_policy=policy,
            adopt_id=adopt_id,
            secret_name=(secret.get("name") or None) if isinstance(secret, Mapping) else None,
        )


@dataclass(frozen=True)
class Observed:
    """What the resource's status says the operator last did."""

    schedule_id: str | None = None
    server_name: str | None = None
    pending: PendingCreate | None = None
    observed_generation: int | None = None
    ready_reason: str | None = None
    schedule_name: str | None = None
    """The name as Zomro last listed it (or as last written)."""

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Observed:
        pending = status.get("pendingCreate")
        ready: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"),
            {},
        )
        generation = status.get("observedGeneration")
        return cls(
            schedule_id=str(status["scheduleId"]) if status.get("scheduleId") else None,
            server_name=status.get("serverName"),
            pending=PendingCreate.from_status(pending),
            observed_generation=int(generation) if generation is not None else None,
            ready_reason=ready.get("reason"),
            schedule_name=status.get("scheduleName"),
        )
