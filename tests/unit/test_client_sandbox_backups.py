"""The client's backup operations against the real sandbox over loopback HTTP: what a scheduled
run leaves, manual backups and their limits, deletes, protection and the rotation."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from zoneinfo import ZoneInfo

import pytest
from support import FakeTime

from zomro_backup_operator.sandbox import ManualClock, RunningSandbox, running_sandbox
from zomro_backup_operator.sandbox.config import AccountConfig, InstanceConfig, SandboxConfig
from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    BackupProtectedError,
    DailyBackupLimitError,
    OperationInProgressError,
)

KYIV = ZoneInfo("Europe/Kyiv")
MONDAY_NOON = datetime.datetime(2026, 11, 30, 12, 0, tzinfo=KYIV)
INSTANCE = "5203773"
CONFIG = SandboxConfig(
    accounts=(
        AccountConfig("alice", "alice-password", (InstanceConfig(INSTANCE, "MyServer"),)),
        AccountConfig("bob", "bob-password", (InstanceConfig("777", "Theirs"),)),
    ),
    backup_duration=0.0,
)
DAY = 86400.0


@pytest.fixture
async def sb() -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(CONFIG, clock=ManualClock(MONDAY_NOON.timestamp())) as sandbox:
        yield sandbox


@pytest.fixture
async def zc(sb: RunningSandbox) -> AsyncIterator[ZomroClient]:
    options = ClientOptions(timeout=5.0, max_requests_per_second=1000.0)
    credentials = Credentials(username="alice", password="alice-password")
    time = FakeTime()
    async with ZomroClient(
        credentials, base_url=sb.url, options=options, sleep=time.sleep, clock=time.clock
    ) as client:
        yield client


async def test_a_nights_scheduled_backup_is_listed_with_its_provider_time(
    sb: RunningSandbox, zc: ZomroClient
) -> None:
    sb.state.add_schedule(INSTANCE, "nightly", [2], "02:01")
    sb.set_clock(datetime.datetime(2026, 12, 1, 2, 2, tzinfo=KYIV))
    [running] = (await zc.list_backups(INSTANCE)).backups
    assert (running.backup_type, running.usable) == ("auto", False)
    sb.advance_clock(sb.state.config.scheduled_backup_duration)
    listing = await zc.list_backups(INSTANCE)
    [done] = listing.backups
    assert done.id == running.id
    assert done.usable
    assert done.created == datetime.datetime(2026, 12, 1, 2, 1)
    assert done.size_gb is not None
    assert listing.rotation == 3
    assert (listing.manual_created_today, listing.manual_created_total) == (0, 0)


async def test_a_failed_run_is_listed_as_not_usable(sb: RunningSandbox, zc: ZomroClient) -> None:
    sb.set_faults(backup_runs="fail")
    sb.state.add_schedule(INSTANCE, "nightly", [2], "02:01")
    sb.advance_clock(DAY)
    [failed] = (await zc.list_backups(INSTANCE)).backups
    assert (failed.status, failed.usable) == ("error", False)


async def test_a_manual_backup_is_listed_and_read_by_id(
    sb: RunningSandbox, zc: ZomroClient
) -> None:
    await zc.create_manual_backup(INSTANCE, "before upgrade")
    listing = await zc.list_backups(INSTANCE)
    [backup] = listing.backups
    assert (backup.name, backup.backup_type) == ("before upgrade", "manual")
    assert listing.manual_created_today == 1
    assert await zc.get_backup(backup.id) == backup
    assert await zc.get_backup("999999") is None


async def test_the_sixth_manual_backup_of_a_day_is_a_daily_limit_error(
    sb: RunningSandbox, zc: ZomroClient
) -> None:
    for n in range(5):
        await zc.create_manual_backup(INSTANCE, f"b{n}")
    with pytest.raises(DailyBackupLimitError):
        await zc.create_manual_backup(INSTANCE, "b5")
    sb.advance_clock(DAY)
    await zc.create_manual_backup(INSTANCE, "next day")


async def test_a_manual_backup_during_a_scheduled_run_is_operation_in_progress(
    sb: RunningSandbox, zc: ZomroClient
) -> None:
    sb.state.add_schedule(INSTANCE, "nightly", [2], "02:01")
    sb.set_clock(datetime.datetime(2026, 12, 1, 2, 2, tzinfo=KYIV))
    with pytest.raises(OperationInProgressError):
        await zc.create_manual_backup(INSTANCE, "now")
    assert [r.func for r in sb.state.requests].count("instances.fleio_bckps.edit") == 1


async def test_deleting_a_backup_twice_succeeds_both_times(
    sb: RunningSandbox, zc: ZomroClient
) -> None:
    backup = sb.state.add_backup(INSTANCE, "old")
    await zc.delete_backup(backup.id)
    await zc.delete_backup(backup.id)
    assert backup.id not in sb.state.backups


async def test_deleting_a_protected_backup_is_refused_with_backup_protected(
    sb: RunningSandbox, zc: ZomroClient
) -> None:
    backup = sb.state.add_backup(INSTANCE, "keep", protected=True)
    with pytest.raises(BackupProtectedError):
        await zc.delete_backup(backup.id)
    assert backup.id in sb.state.backups


async def test_the_rotation_is_set_and_read_back_from_the_listing(
    sb: RunningSandbox, zc: ZomroClient
) -> None:
    await zc.set_backup_rotation(INSTANCE, 7)
    assert (await zc.list_backups(INSTANCE)).rotation == 7
    assert sb.state.instances[INSTANCE].backup_rotation == 7


async def test_backups_of_another_accounts_instance_are_access_denied(zc: ZomroClient) -> None:
    with pytest.raises(AccessDeniedError):
        await zc.list_backups("777")
    with pytest.raises(AccessDeniedError):
        await zc.create_manual_backup("777", "theirs")
