"""The BackupRetention kind's decision core: how many scheduled backups Zomro keeps for one
instance (``backup_rotation``), held at the spec and restored when changed in Zomro's panel.

Retention is per instance, so one BackupRetention per instance may hold it: the claims (the
schedules' mechanism, claims.py) under the key ``(instance id, ROTATION_CLAIM)`` decide, and
another resource naming the same instance gets ``Conflict``. Deleting the resource changes
nothing at Zomro.

Typed, with Zomro injected: no kopf, no Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol

from zomro_backup_operator.reconcile import ConflictError
from zomro_backup_operator.resources import (
    InstanceRequest,
    InvalidSpecError,
    secret_name,
    spec_instance_id,
)
from zomro_backup_operator.zomro.models import BackupListing, validate_backup_rotation

PLURAL: Final = "backupretentions"
KIND: Final = "BackupRetention"
ROTATION_CLAIM: Final = "backup_rotation"
"""The second half of the claim key a BackupRetention holds for its instance."""
LEFT_AS_IS: Final = "deleting this BackupRetention leaves Zomro's setting as it is"


@dataclass(frozen=True, kw_only=True)
class RetentionRequest(InstanceRequest):
    """What one BackupRetention asks for."""

    keep: int

    @classmethod
    def from_resource(
        cls, *, namespace: str, name: str, generation: int, spec: Mapping[str, Any]
    ) -> RetentionRequest:
        """Read a spec; the CRD's schema checked it already, but check again and name the field."""
        instance_id = spec_instance_id(spec)
        keep = spec.get("keep")
        try:
            if not isinstance(keep, int):
                raise ValueError(f"backup rotation must be an integer, got {keep!r}")
            validate_backup_rotation(keep)
        except ValueError as exc:
            raise InvalidSpecError(f"spec.keep: {exc}") from None
        return cls(
            namespace=namespace,
            name=name,
            generation=generation,
            instance_id=instance_id,
            keep=keep,
            secret_name=secret_name(spec),
        )


class RotationZomro(Protocol):
    """What the core needs of a Zomro client."""

    async def list_backups(self, instance_id: str) -> BackupListing: ...

    async def set_backup_rotation(self, instance_id: str, keep: int) -> None: ...


@dataclass(frozen=True)
class RotationOutcome:
    keep: int
    previous: int | None
    """What Zomro held before; equal to ``keep`` when nothing had to change."""

    @property
    def changed(self) -> bool:
        return self.previous != self.keep


def check_claim(request: RetentionRequest, owner: str | None) -> None:
    """Raise Conflict when another resource (``owner``) already holds the instance's retention."""
    if owner is not None:
        raise ConflictError(
            f"BackupRetention {owner} already sets how many backups instance "
            f"{request.instance_id} keeps; Zomro holds one setting per instance, so this "
            "resource changes nothing while that one exists"
        )


async def ensure_rotation(request: RetentionRequest, zomro: RotationZomro) -> RotationOutcome:
    """Make Zomro keep ``request.keep`` backups; send nothing when it already does."""
    current = (await zomro.list_backups(request.instance_id)).rotation
    if current != request.keep:
        await zomro.set_backup_rotation(request.instance_id, request.keep)
    return RotationOutcome(keep=request.keep, previous=current)
