"""The Backup kind's core: the crash-safe request protocol, the phase mapping, the daily limit
across Zomro's day, and deletion by policy (manual_backup.py), against an in-memory Zomro."""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field, replace
from zoneinfo import ZoneInfo

import pytest

from zomro_backup_operator.manual_backup import (
    DAILY_MANUAL_LIMIT,
    BackupObserved,
    BackupRequest,
    Context,
    PendingBackup,
    Removal,
    next_provider_day,
    progress_of,
    remove,
    status_changes,
    take,
)
from zomro_backup_operator.reconcile import CreatePendingError
from zomro_backup_operator.resources import InvalidSpecError, InvalidStatusError
from zomro_backup_operator.zomro.errors import (
    BackupProtectedError,
    DailyBackupLimitError,
    UnknownOutcomeError,
)
from zomro_backup_operator.zomro.models import Backup, BackupListing

KYIV = ZoneInfo("Europe/Kyiv")
INSTANCE = "5203773"
NOON = dt.datetime(2026, 1, 15, 10, 0, tzinfo=dt.UTC)  # 12:00 in Kyiv (winter, UTC+2)


@dataclass(eq=False)
class BackupZomro:
    """Zomro's manual backups of one instance, with the limit and the lost answer injectable."""

    now: dt.datetime = NOON
    backups: dict[str, Backup] = field(default_factory=dict)
    taken_today: int = 0
    calls: list[str] = field(default_factory=list)
    lose_answer: bool = False
    """The next create is made but its answer lost (UnknownOutcomeError)."""
    refuse_daily: bool = False
    protected: set[str] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(900))

    def image(self, name: str, *, kind: str = "manual", status: str = "active") -> Backup:
        row = Backup(
            id=str(next(self._ids)),
            name=name,
            backup_type=kind,
            status=status,
            created=self.now.astimezone(KYIV).replace(tzinfo=None),
            size_gb=2.5,
            protected=False,
        )
        self.backups[row.id] = row
        return row

    async def list_backups(self, instance_id: str) -> BackupListing:
        self.calls.append("list_backups")
        return BackupListing(tuple(self.backups.values()), 3, self.taken_today, len(self.backups))

    async def get_backup(self, backup_id: str) -> Backup | None:
        self.calls.append("get_backup")
        return self.backups.get(backup_id)

    async def create_manual_backup(self, instance_id: str, name: str) -> None:
        self.calls.append("create_manual_backup")
        if self.refuse_daily or self.taken_today >= DAILY_MANUAL_LIMIT:
            raise DailyBackupLimitError("5 a day")
        self.taken_today += 1
        self.image(name, status="creating")
        if self.lose_answer:
            self.lose_answer = False
            raise UnknownOutcomeError("timed out")

    async def delete_backup(self, backup_id: str) -> None:
        self.calls.append("delete_backup")
        if backup_id in self.protected:
            raise BackupProtectedError(f"backup {backup_id} is protected")
        self.backups.pop(backup_id, None)


@dataclass
class Recorder:
    """status.pendingCreate as the handler writes it."""

    writes: list[PendingBackup | None] = field(default_factory=list)

    async def __call__(self, pending: PendingBackup | None) -> None:
        self.writes.append(pending)

    @property
    def current(self) -> PendingBackup | None:
        return self.writes[-1] if self.writes else None


def request(policy: str = "Retain") -> BackupRequest:
    return BackupRequest.from_resource(
        namespace="ns",
        name="before-upgrade",
        generation=1,
        spec={"instanceId": INSTANCE, "name": "before upgrade", "deletionPolicy": policy},
    )


def context(zomro: BackupZomro, *, claimed: frozenset[str] = frozenset()) -> Context:
    return Context(
        zomro=zomro,
        now=lambda: zomro.now,
        zone=KYIV,
        settle=120.0,
        free=lambda backup_id: backup_id not in claimed,
        recheck=300.0,
    )


async def test_a_new_backup_is_asked_for_once_with_the_intent_recorded_first() -> None:
    zomro, record = BackupZomro(), Recorder()
    progress = await take(request(), BackupObserved(), context(zomro), record)

    assert zomro.calls == ["list_backups", "create_manual_backup", "list_backups"]
    assert [w.acknowledged if w else None for w in record.writes] == [False, True]
    assert progress.phase == "InProgress"
    assert progress.backup is not None
    assert progress.backup.name == "before upgrade"
    assert progress.retry_in is not None


async def test_a_lost_answer_is_found_in_the_listing_and_never_asked_again() -> None:
    zomro, record = BackupZomro(lose_answer=True), Recorder()
    with pytest.raises(CreatePendingError):
        await take(request(), BackupObserved(), context(zomro), record)
    assert record.current is not None
    assert not record.current.acknowledged

    zomro.now += dt.timedelta(seconds=5)
    progress = await take(request(), BackupObserved(pending=record.current), context(zomro), record)

    assert zomro.calls.count("create_manual_backup") == 1
    assert len(zomro.backups) == 1
    assert progress.backup is not None
    assert progress.backup.id in zomro.backups


async def test_an_acknowledged_request_not_yet_listed_waits_instead_of_asking_again() -> None:
    zomro = BackupZomro()
    pending = PendingBackup("before upgrade", NOON - dt.timedelta(hours=1), frozenset(), True)
    with pytest.raises(CreatePendingError, match="which it accepted"):
        await take(request(), BackupObserved(pending=pending), context(zomro), Recorder())
    assert "create_manual_backup" not in zomro.calls


async def test_an_unanswered_request_still_unlisted_after_the_settle_time_is_sent_again() -> None:
    zomro, record = BackupZomro(), Recorder()
    pending = PendingBackup("before upgrade", NOON - dt.timedelta(seconds=121), frozenset())
    await take(request(), BackupObserved(pending=pending), context(zomro), record)
    assert zomro.calls.count("create_manual_backup") == 1


async def test_the_image_found_is_neither_listed_before_nor_claimed_nor_scheduled() -> None:
    zomro = BackupZomro()
    old = zomro.image("before upgrade")
    theirs = zomro.image("before upgrade")
    zomro.image("before upgrade", kind="auto")
    mine = zomro.image("before upgrade")
    pending = PendingBackup("before upgrade", NOON, frozenset({old.id}))

    found = pending.find(tuple(zomro.backups.values()), KYIV, lambda i: i != theirs.id)

    assert found == mine


def test_an_image_created_well_before_the_request_is_not_taken_for_it() -> None:
    zomro = BackupZomro(now=NOON - dt.timedelta(hours=2))
    earlier = zomro.image("before upgrade")
    assert not PendingBackup("before upgrade", NOON, frozenset()).made(earlier, KYIV)


@pytest.mark.parametrize(
    ("status", "phase", "reason"),
    [
        ("active", "Completed", "Completed"),
        ("creating", "InProgress", "InProgress"),
        ("queued", "InProgress", "InProgress"),
        ("error", "Failed", "BackupFailed"),
        ("deletion_in_progress", "Failed", "BackupFailed"),
    ],
)
def test_the_phase_follows_the_images_state(status: str, phase: str, reason: str) -> None:
    row = BackupZomro().image("b", status=status)
    progress = progress_of(row, request(), KYIV)
    assert (progress.phase, progress.reason) == (phase, reason)
    assert (progress.retry_in is None) == (phase != "InProgress")


def test_an_image_removed_behind_the_operators_back_fails_the_backup() -> None:
    progress = progress_of(None, request(), KYIV)
    assert (progress.phase, progress.reason, progress.retry_in) == ("Failed", "BackupGone", None)


async def test_the_daily_limit_waits_for_zomros_next_day_without_asking() -> None:
    zomro, record = BackupZomro(taken_today=DAILY_MANUAL_LIMIT), Recorder()
    progress = await take(request(), BackupObserved(), context(zomro), record)

    assert "create_manual_backup" not in zomro.calls
    assert (progress.phase, progress.reason) == ("Pending", "DailyLimit")
    assert progress.retry_at == dt.datetime(2026, 1, 15, 22, 1, tzinfo=dt.UTC)  # 00:01 Kyiv
    assert "at most 5 manual backups" in progress.message
    assert progress.retry_in == 300.0  # looks at the clock again within the resync period


async def test_a_daily_limit_refusal_clears_the_intent_and_waits() -> None:
    zomro, record = BackupZomro(refuse_daily=True), Recorder()
    progress = await take(request(), BackupObserved(), context(zomro), record)
    assert progress.reason == "DailyLimit"
    assert record.current is None


async def test_while_the_day_has_not_turned_nothing_is_sent_and_after_it_the_backup_is_taken() -> (
    None
):
    zomro = BackupZomro(taken_today=DAILY_MANUAL_LIMIT)
    waiting = BackupObserved(retry_after=dt.datetime(2026, 1, 15, 22, 1, tzinfo=dt.UTC))

    still = await take(request(), waiting, context(zomro), Recorder())
    assert zomro.calls == []
    assert still.reason == "DailyLimit"

    zomro.now, zomro.taken_today = dt.datetime(2026, 1, 15, 22, 2, tzinfo=dt.UTC), 0
    progress = await take(request(), waiting, context(zomro), Recorder())
    assert "create_manual_backup" in zomro.calls
    assert progress.phase == "InProgress"
    assert progress.retry_at is None


@pytest.mark.parametrize(
    ("now", "turn"),
    [
        # Winter (UTC+2): Kyiv's midnight is 22:00 UTC, whether it is still the same UTC day...
        (dt.datetime(2026, 1, 15, 21, 59, tzinfo=dt.UTC), dt.datetime(2026, 1, 15, 22, 1)),
        # ...or already past Kyiv's midnight while UTC is still on the 15th.
        (dt.datetime(2026, 1, 15, 22, 30, tzinfo=dt.UTC), dt.datetime(2026, 1, 16, 22, 1)),
        # Summer (UTC+3): 21:00 UTC.
        (dt.datetime(2026, 7, 1, 12, 0, tzinfo=dt.UTC), dt.datetime(2026, 7, 1, 21, 1)),
        # The night the clocks go forward (29 March 2026, 03:00 -> 04:00): midnight is UTC+2.
        (dt.datetime(2026, 3, 28, 12, 0, tzinfo=dt.UTC), dt.datetime(2026, 3, 28, 22, 1)),
    ],
)
def test_the_provider_day_turns_at_midnight_in_zomros_zone(
    now: dt.datetime, turn: dt.datetime
) -> None:
    assert next_provider_day(now, KYIV) == turn.replace(tzinfo=dt.UTC)


async def test_deleting_with_retain_leaves_the_image() -> None:
    zomro = BackupZomro()
    row = zomro.image("before upgrade")
    removal = await remove(request("Retain"), BackupObserved(backup_id=row.id), context(zomro))
    assert removal == (Removal.RETAINED, row.id)
    assert zomro.calls == []


async def test_deleting_with_delete_removes_the_image_and_a_protected_one_refuses() -> None:
    zomro = BackupZomro()
    row = zomro.image("before upgrade")
    zomro.protected.add(row.id)
    with pytest.raises(BackupProtectedError):
        await remove(request("Delete"), BackupObserved(backup_id=row.id), context(zomro))
    assert row.id in zomro.backups

    zomro.protected.clear()
    removal = await remove(request("Delete"), BackupObserved(backup_id=row.id), context(zomro))
    assert removal == (Removal.DELETED, row.id)
    assert zomro.backups == {}


async def test_deleting_a_backup_whose_id_was_never_recorded_finds_its_image_first() -> None:
    zomro = BackupZomro()
    row = zomro.image("before upgrade")
    pending = PendingBackup("before upgrade", NOON, frozenset(), True)
    removal = await remove(request("Delete"), BackupObserved(pending=pending), context(zomro))
    assert removal == (Removal.DELETED, row.id)


def test_completed_status_holds_id_size_and_completion_time_and_clears_the_intent() -> None:
    row = BackupZomro().image("before upgrade")
    progress = progress_of(row, request(), KYIV)
    patch = status_changes(
        {"pendingCreate": {"name": "x"}}, progress, 1, now="2026-01-15T10:00:05Z", zone=KYIV
    )
    assert patch["phase"] == "Completed"
    assert (patch["backupId"], patch["size"]) == (row.id, 2.5)
    assert patch["completionTime"] == "2026-01-15T10:00:00Z"
    assert patch["pendingCreate"] is None
    assert patch["conditions"][0]["status"] == "True"
    assert status_changes({**patch}, progress, 1, now="2026-01-15T10:01:00Z", zone=KYIV) == {}


def test_a_spec_zomro_would_refuse_is_named() -> None:
    with pytest.raises(InvalidSpecError, match=r"spec\.deletionPolicy"):
        BackupRequest.from_resource(
            namespace="ns",
            name="b",
            generation=1,
            spec={"instanceId": INSTANCE, "name": "b", "deletionPolicy": "Orphan"},
        )
    with pytest.raises(InvalidSpecError, match=r"spec\.name"):
        BackupRequest.from_resource(
            namespace="ns", name="b", generation=1, spec={"instanceId": INSTANCE, "name": "x" * 101}
        )


def test_a_status_the_operator_never_writes_is_refused() -> None:
    with pytest.raises(InvalidStatusError, match=r"status\.backupId"):
        BackupObserved.from_status({"backupId": "14, 15"})
    with pytest.raises(InvalidStatusError, match=r"status\.pendingCreate"):
        BackupObserved.from_status({"pendingCreate": {"name": "b"}})


def test_the_intent_record_reads_back_as_written() -> None:
    pending = PendingBackup("b", NOON, frozenset({"9", "10"}), True)
    assert PendingBackup.from_status(pending.to_status()) == pending
    assert replace(pending, acknowledged=False).acknowledge() == pending
