"""The BackupRetention kind's core: the rotation held at spec.keep, drift corrected, one
resource per instance (retention.py with the shared claims)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import pytest

from zomro_backup_operator.backup_handling import release_retention
from zomro_backup_operator.claims import Claims
from zomro_backup_operator.handling import ResourceCall
from zomro_backup_operator.reconcile import ConflictError
from zomro_backup_operator.resources import InvalidSpecError
from zomro_backup_operator.retention import (
    ROTATION_CLAIM,
    RetentionRequest,
    check_claim,
    ensure_rotation,
)
from zomro_backup_operator.runtime import Runtime
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.zomro.models import BackupListing

INSTANCE = "5203773"


@dataclass(eq=False)
class RotationZomro:
    rotation: int | None = 3
    calls: list[str] = field(default_factory=list)

    async def list_backups(self, instance_id: str) -> BackupListing:
        self.calls.append("list_backups")
        return BackupListing((), self.rotation, 0, 0)

    async def set_backup_rotation(self, instance_id: str, keep: int) -> None:
        self.calls.append(f"set_backup_rotation {keep}")
        self.rotation = keep


def request(keep: int = 7, name: str = "keep-seven") -> RetentionRequest:
    return RetentionRequest.from_resource(
        namespace="ns", name=name, generation=1, spec={"instanceId": INSTANCE, "keep": keep}
    )


async def test_the_rotation_is_set_to_keep() -> None:
    zomro = RotationZomro(rotation=3)
    outcome = await ensure_rotation(request(7), zomro)
    assert zomro.rotation == 7
    assert (outcome.previous, outcome.keep, outcome.changed) == (3, 7, True)


async def test_a_rotation_already_right_sends_nothing() -> None:
    zomro = RotationZomro(rotation=7)
    outcome = await ensure_rotation(request(7), zomro)
    assert zomro.calls == ["list_backups"]
    assert not outcome.changed


async def test_a_rotation_changed_in_the_panel_is_restored() -> None:
    zomro = RotationZomro(rotation=7)
    await ensure_rotation(request(7), zomro)
    zomro.rotation = 1  # a person changed it in Zomro's panel
    outcome = await ensure_rotation(request(7), zomro)
    assert zomro.rotation == 7
    assert outcome.previous == 1


def test_a_second_resource_for_the_same_instance_is_in_conflict() -> None:
    claims = Claims()
    first, second = request(name="first"), request(name="second")
    indexed = {(INSTANCE, ROTATION_CLAIM): ["ns/first"]}  # what the index knows after a restart

    check_claim(first, claims.owner(INSTANCE, ROTATION_CLAIM, indexed, first.key))
    with pytest.raises(ConflictError, match="ns/first already sets"):
        check_claim(second, claims.owner(INSTANCE, ROTATION_CLAIM, indexed, second.key))

    claims.release(INSTANCE, ROTATION_CLAIM, first.key)  # the first one was deleted
    check_claim(second, claims.owner(INSTANCE, ROTATION_CLAIM, indexed, second.key))


@pytest.mark.parametrize("keep", [0, 11, "5", True])
def test_keep_outside_zomros_range_is_named(keep: object) -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.keep"):
        RetentionRequest.from_resource(
            namespace="ns", name="r", generation=1, spec={"instanceId": INSTANCE, "keep": keep}
        )


def runtime() -> Runtime:
    unused = cast(Any, None)  # releasing a claim needs neither the cluster nor Zomro
    return Runtime(Settings(), kube=unused, credentials=unused, clients=unused)


def call(name: str, status: dict[str, Any]) -> ResourceCall:
    return ResourceCall(
        body=kopf.Body({"metadata": {"namespace": "ns", "name": name}}),
        uid=f"uid-{name}",
        namespace="ns",
        name=name,
        generation=1,
        spec={"instanceId": INSTANCE, "keep": 9},
        status=status,
        patch=kopf.Patch(),
        claims_index={},
    )


async def test_deleting_a_retention_in_conflict_leaves_the_holders_claim() -> None:
    rt = runtime()
    await release_retention(rt, call("second", {}))  # in Conflict: it never held the instance

    indexed = {(INSTANCE, ROTATION_CLAIM): ["ns/first"]}
    assert rt.claims.owner(INSTANCE, ROTATION_CLAIM, indexed, "ns/third") == "ns/first"


async def test_deleting_a_retention_whose_attempts_all_failed_frees_the_instance() -> None:
    rt = runtime()
    rt.claims.claim(INSTANCE, ROTATION_CLAIM, "ns/first")  # claimed, then Zomro refused
    await release_retention(rt, call("first", {}))

    assert rt.claims.owner(INSTANCE, ROTATION_CLAIM, {}, "ns/second") is None
