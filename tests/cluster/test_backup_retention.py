"""The BackupRetention kind against the real API server and the sandbox: the rotation set and
held against changes in the panel, one resource per instance, and a deletion that leaves it."""

from __future__ import annotations

import asyncio
from typing import Any

from backup_kinds import Kind, retentions  # noqa: F401  (the fixture)
from harness import INSTANCE, PASSWORD, USERNAME, wait_for

from zomro_backup_operator.sandbox.control import SandboxProcess
from zomro_backup_operator.zomro.client import ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials


def rotation(sandbox: SandboxProcess, instance: str = INSTANCE) -> int | None:
    value = sandbox.control.state()["instances"][instance]["backup_rotation"]
    return None if value is None else int(value)


def synced(status: dict[str, Any]) -> bool:
    return any(
        c.get("type") == "Ready" and c.get("status") == "True"
        for c in status.get("conditions") or []
    )


def change_in_the_panel(sandbox: SandboxProcess, keep: int) -> None:
    """What a person does in Zomro's panel: the same API call, with the same account."""

    async def change() -> None:
        credentials = Credentials(username=USERNAME, password=PASSWORD)
        async with ZomroClient(credentials, base_url=sandbox.url) as client:
            await client.set_backup_rotation(INSTANCE, keep)

    asyncio.run(change())


def test_the_rotation_is_set_and_a_change_in_the_panel_is_undone_within_the_resync_period(
    retentions: Kind,  # noqa: F811
    sandbox: SandboxProcess,
) -> None:
    retentions.create("keep-seven", {"instanceId": INSTANCE, "keep": 7})
    status = retentions.wait("keep-seven", "Ready", synced)
    assert rotation(sandbox) == 7
    assert status["rotation"] == 7
    assert "leaves Zomro's setting as it is" in retentions.ready("keep-seven")["message"]

    change_in_the_panel(sandbox, 2)

    wait_for("the rotation restored", lambda: rotation(sandbox) == 7, timeout=30)
    wait_for(
        "a DriftCorrected event",
        lambda: "DriftCorrected" in retentions.event_reasons("keep-seven"),
        timeout=30,
    )


def test_a_second_retention_for_the_same_instance_gets_conflict_until_the_first_goes(
    retentions: Kind,  # noqa: F811
    sandbox: SandboxProcess,
) -> None:
    retentions.create("first", {"instanceId": INSTANCE, "keep": 4})
    retentions.wait("first", "Ready", synced)
    retentions.create("second", {"instanceId": INSTANCE, "keep": 9})

    condition = retentions.wait_reason("second", "Conflict")

    assert "first" in condition["message"]
    assert rotation(sandbox) == 4
    assert not retentions.status("second").get("instanceId")

    retentions.delete("first")
    retentions.wait_gone("first")
    retentions.wait("second", "Ready after the first is gone", synced, timeout=60)
    assert rotation(sandbox) == 9


def test_deleting_a_retention_leaves_zomros_setting_as_it_is(
    retentions: Kind,  # noqa: F811
    sandbox: SandboxProcess,
) -> None:
    retentions.create("keep-three", {"instanceId": INSTANCE, "keep": 3})
    retentions.wait("keep-three", "Ready", synced)

    retentions.delete("keep-three")
    retentions.wait_gone("keep-three")

    assert rotation(sandbox) == 3
    assert "LeftAsIs" in retentions.event_reasons("keep-three")
