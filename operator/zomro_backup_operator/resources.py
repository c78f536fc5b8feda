"""The BackupSchedule resource as the operator reads it: typed views of spec, status, metadata."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from zomro_backup_operator.pending import PendingCreate
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday, is_object_id

GROUP = "zomro.com"
VERSION = "v1alpha1"
PLURAL = "backupschedules"
KIND = "BackupSchedule"
FINALIZER = "zomro.com/finalizer"
ADOPT_ANNOTATION = "zomro.com/schedule-id"

DeletionPolicy = Literal["Delete", "Orphan"]


class InvalidSpecError(ValueError):
    """The spec cannot be turned into a schedule; the message names the field."""


class InvalidStatusError(ValueError):
    """The status holds what the operator never writes (someone else wrote it); the message names
    the field. Nothing is sent to Zomro for such a resource until a person fixes it."""


_SHOWN = 24
"""At most this many characters of a value a user wrote are repeated in a message."""


def _shown(value: str) -> str:
    """A user's value, safe to repeat in status, Events and logs: bounded, one line."""
    text = value if len(value) <= _SHOWN else value[: _SHOWN - 1] + "…"
    return repr(text)


def _object_id(value: object, *, field: str, error: type[ValueError]) -> str:
    text = str(value)
    if not is_object_id(text):
        raise error(f"{field} must be 1-20 digits without a leading zero, got {_shown(text)}")
    return text


def secret_name(spec: Mapping[str, Any]) -> str | None:
    """``spec.credentialsSecretRef.name``; None when the resource names no Secret of its own."""
    secret = spec.get("credentialsSecretRef") or {}
    return (secret.get("name") or None) if isinstance(secret, Mapping) else None


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
        deleting: bool = False,
    ) -> Desired:
        """Read a resource; the API server's schema already checked most of this, but not all
        clusters run our schema version, so check again and name the field.

        ``deleting``: the adoption annotation is not read, so that a bad one cannot hold up the
        deletion (it only matters before a schedule is ours)."""
        instance_id = _object_id(
            spec.get("instanceId", ""), field="spec.instanceId", error=InvalidSpecError
        )
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
        adopt_id = None if deleting else (annotations.get(ADOPT_ANNOTATION) or "").strip() or None
        if adopt_id is not None:
            adopt_id = _object_id(
                adopt_id, field=f"annotation {ADOPT_ANNOTATION}", error=InvalidSpecError
            )
        return cls(
            namespace=namespace,
            name=name,
            generation=generation,
            instance_id=instance_id,
            schedule=schedule,
            deletion_policy=policy,
            adopt_id=adopt_id,
            secret_name=secret_name(spec),
        )


@dataclass(frozen=True)
class Observed:
    """What the resource's status says the operator last did."""

    schedule_id: str | None = None
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
        schedule_id = status.get("scheduleId")
        return cls(
            # Whoever can write status could put "14, 15" here, which Zomro reads as two ids.
            schedule_id=(
                _object_id(schedule_id, field="status.scheduleId", error=InvalidStatusError)
                if schedule_id
                else None
            ),
            pending=PendingCreate.from_status(pending),
            observed_generation=int(generation) if generation is not None else None,
            ready_reason=ready.get("reason"),
            schedule_name=status.get("scheduleName"),
        )


def ready_at_generation(body: Mapping[str, Any]) -> bool:
    """Whether a BackupSchedule says Ready=True for its current generation (the condition and
    status.observedGeneration both at metadata.generation): what a user waits for."""
    generation = (body.get("metadata") or {}).get("generation")
    status = body.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(
                condition.get("status") == "True"
                and condition.get("observedGeneration") == generation
                and status.get("observedGeneration") == generation
            )
    return False
