"""The Backup kind's decision core: take one manual backup exactly once, follow it to an outcome,
and remove its image on deletion when asked to.

The protocol is the schedules' (docs/design.md): the intent (``status.pendingCreate``) is written
before Zomro is asked; an answer lost on the way is resolved by finding the new image in the
instance's listing (Zomro's answer carries no id either way), by name, type, creation time and
the ids listed before; a request Zomro acknowledged is never sent again. Zomro's 5-a-day limit
is a wait until Zomro's next day (its own clock's zone), with nothing sent before then.

Typed, with every effect injected: no kopf, no Kubernetes, no clock of its own.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final, Literal, NoReturn, Protocol
from zoneinfo import ZoneInfo

from zomro_backup_operator.reconcile import CreatePendingError
from zomro_backup_operator.resources import (
    InstanceRequest,
    InvalidSpecError,
    InvalidStatusError,
    secret_name,
    spec_choice,
    spec_instance_id,
)
from zomro_backup_operator.resources import _object_id as object_id
from zomro_backup_operator.status import Readiness, ready_changes
from zomro_backup_operator.time_zones import format_rfc3339 as rfc3339
from zomro_backup_operator.zomro.errors import (
    DailyBackupLimitError,
    UnknownOutcomeError,
    ZomroError,
)
from zomro_backup_operator.zomro.models import (
    Backup,
    BackupListing,
    may_be_stored_as,
    numeric_order,
    validate_backup_name,
)

PLURAL: Final = "backups"
KIND: Final = "Backup"
DAILY_MANUAL_LIMIT: Final = 5
"""Manual backups Zomro takes per instance and day (its panel says so; so does the sandbox)."""
DAY_TURN_MARGIN: Final = dt.timedelta(minutes=1)
"""After Zomro's midnight, how long to wait before asking again: the two clocks may differ a
little, and an early request would only be refused once more."""
CREATED_SKEW: Final = dt.timedelta(minutes=5)
"""How much earlier than our request a new image may say it was created (clock differences,
minute-rounded times) and still be taken for the one we asked for."""
POLL_SECONDS: Final = 10.0
"""How often a backup Zomro is taking is looked at: one cheap read each."""
FAILED_STATUSES: Final = frozenset({"error", "failed", "killed", "deleted", "deletion_in_progress"})
"""Fleio statuses of an image that will never become usable."""

Phase = Literal["Pending", "InProgress", "Completed", "Failed"]
DeletionPolicy = Literal["Retain", "Delete"]
DELETION_POLICIES: Final[tuple[DeletionPolicy, ...]] = ("Retain", "Delete")
"""spec.deletionPolicy of a Backup; the first is the default."""


@dataclass(frozen=True, kw_only=True)
class BackupRequest(InstanceRequest):
    """What one Backup asks for."""

    backup_name: str
    deletion_policy: DeletionPolicy = "Retain"

    @classmethod
    def from_resource(
        cls, *, namespace: str, name: str, generation: int, spec: Mapping[str, Any]
    ) -> BackupRequest:
        """Read a spec; the CRD's schema checked it already, but check again and name the field."""
        instance_id = spec_instance_id(spec)
        try:
            backup_name = validate_backup_name(str(spec.get("name") or ""))
        except ValueError as exc:
            raise InvalidSpecError(f"spec.name: {exc}") from None
        policy = spec_choice(spec, "deletionPolicy", DELETION_POLICIES)
        return cls(
            namespace=namespace,
            name=name,
            generation=generation,
            instance_id=instance_id,
            backup_name=backup_name,
            deletion_policy=policy,
            secret_name=secret_name(spec),
        )


@dataclass(frozen=True)
class PendingBackup:
    """A manual backup the operator decided to ask for: its name, when, and what was listed."""

    name: str
    started_at: dt.datetime
    """Aware, on the operator's clock, just before the request was sent."""
    known_ids: frozenset[str]
    acknowledged: bool = False

    def acknowledge(self) -> PendingBackup:
        return replace(self, acknowledged=True)

    def settles_in(self, now: dt.datetime, settle: float) -> float:
        """Seconds until an unacknowledged request may be taken as never made (0 when it may)."""
        return max(0.0, (self.started_at - now).total_seconds() + settle)

    def made(self, row: Backup, zone: ZoneInfo) -> bool:
        """Could ``row`` be the image this request made? A manual backup not listed before,
        created (on Zomro's clock, in ``zone``) no earlier than the request, under a name Zomro
        could have made of ours."""
        if row.id in self.known_ids or row.backup_type != "manual":
            return False
        if not may_be_stored_as(self.name, row.name):
            return False
        if row.created is None:
            return True
        created = row.created.replace(tzinfo=zone)
        return created >= self.started_at - CREATED_SKEW

    def find(
        self, rows: Sequence[Backup], zone: ZoneInfo, free: Callable[[str], bool]
    ) -> Backup | None:
        """The unclaimed image this request made, the likeliest first: the exact name, then the
        earliest created (then the lowest id)."""
        found = [row for row in rows if free(row.id) and self.made(row, zone)]
        found.sort(
            key=lambda row: (
                row.name != self.name,
                row.created or dt.datetime.max,
                *numeric_order(row.id),
            )
        )
        return found[0] if found else None

    def to_status(self) -> dict[str, Any]:
        """The status form; every key is always written, so a merge patch replaces it whole."""
        return {
            "name": self.name,
            "startedAt": rfc3339(self.started_at),
            "knownIds": sorted(self.known_ids, key=numeric_order),
            "acknowledged": self.acknowledged,
        }

    @classmethod
    def from_status(cls, value: object) -> PendingBackup | None:
        if not isinstance(value, Mapping):
            return None
        name, ids = value.get("name"), value.get("knownIds")
        started = parse_rfc3339(value.get("startedAt"))
        if not isinstance(name, str) or not isinstance(ids, list) or started is None:
            raise InvalidStatusError(
                "status.pendingCreate must hold name, startedAt and knownIds as the operator "
                "writes them"
            )
        return cls(name, started, frozenset(str(i) for i in ids), value.get("acknowledged") is True)


@dataclass(frozen=True)
class BackupObserved:
    """What the Backup's status says the operator last did."""

    backup_id: str | None = None
    pending: PendingBackup | None = None
    phase: Phase | None = None
    retry_after: dt.datetime | None = None

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> BackupObserved:
        backup_id = status.get("backupId")
        phase = status.get("phase")
        return cls(
            backup_id=(
                object_id(backup_id, field="status.backupId", error=InvalidStatusError)
                if backup_id
                else None
            ),
            pending=PendingBackup.from_status(status.get("pendingCreate")),
            phase=phase if phase in ("Pending", "InProgress", "Completed", "Failed") else None,
            retry_after=parse_rfc3339(status.get("retryAfter")),
        )


@dataclass(frozen=True)
class Progress:
    """Where a Backup stands after one look: what status should say and when to look again."""

    phase: Phase
    reason: str
    message: str
    backup: Backup | None = None
    """The image, once found; its id goes into status.backupId."""
    retry_in: float | None = None
    """Seconds until the next look; None once the outcome is final."""
    retry_at: dt.datetime | None = None
    """With reason DailyLimit: when Zomro's next day starts (nothing is sent before then)."""

    @property
    def ready(self) -> bool:
        return self.phase == "Completed"


class BackupZomro(Protocol):
    """What the core needs of a Zomro client."""

    async def list_backups(self, instance_id: str) -> BackupListing: ...

    async def get_backup(self, backup_id: str) -> Backup | None: ...

    async def create_manual_backup(self, instance_id: str, name: str) -> None: ...

    async def delete_backup(self, backup_id: str) -> None: ...


@dataclass(frozen=True)
class Context:
    """Everything a decision reads besides the resource: Zomro, the clock, claims, settings."""

    zomro: BackupZomro
    now: Callable[[], dt.datetime]
    zone: ZoneInfo
    """Zomro's own clock's zone: its day bounds the daily limit, its times are in it."""
    settle: float
    """After an unanswered request, seconds the new image may take to appear in a listing."""
    free: Callable[[str], bool]
    """Whether a backup id is claimed by no other Backup resource."""
    recheck: float
    """Upper bound on a wait without a look at the clock (the daily limit): the resync period."""


RecordPending = Callable[[PendingBackup | None], Awaitable[None]]
"""Writes status.pendingCreate durably (None clears it) before the core goes on."""


def next_provider_day(now: dt.datetime, zone: ZoneInfo) -> dt.datetime:
    """The first instant (UTC) of the day after ``now``'s day on Zomro's clock, plus a margin."""
    local = now.astimezone(zone)
    midnight = dt.datetime.combine(local.date() + dt.timedelta(days=1), dt.time(), tzinfo=zone)
    return midnight.astimezone(dt.UTC) + DAY_TURN_MARGIN


def progress_of(row: Backup | None, request: BackupRequest, zone: ZoneInfo) -> Progress:
    """The phase an image is in, as Zomro shows it (None: it is gone)."""
    where = f"on instance {request.instance_id}"
    if row is None:
        return Progress(
            "Failed",
            "BackupGone",
            f"the backup image {where} was removed outside the operator; a Backup is taken "
            "once: create a new Backup for a new image",
        )
    if row.usable:
        size = f", {row.size_gb:g} GB" if row.size_gb is not None else ""
        return Progress(
            "Completed",
            "Completed",
            f"Zomro backup {row.id} {row.name!r} {where} is usable{size}",
            row,
        )
    if row.status in FAILED_STATUSES:
        return Progress(
            "Failed",
            "BackupFailed",
            f"Zomro backup {row.id} {row.name!r} {where} ended in state {row.status!r}; a Backup "
            "is taken once: create a new Backup to try again",
            row,
        )
    return Progress(
        "InProgress",
        "InProgress",
        f"Zomro is taking backup {row.id} {row.name!r} {where} (state {row.status!r})",
        row,
        retry_in=POLL_SECONDS,
    )


def daily_limit(request: BackupRequest, now: dt.datetime, ctx: Context) -> Progress:
    retry_at = next_provider_day(now, ctx.zone)
    return Progress(
        "Pending",
        "DailyLimit",
        f"Zomro takes at most {DAILY_MANUAL_LIMIT} manual backups of instance "
        f"{request.instance_id} a day and has taken them today; asking again after its day "
        f"turns, at {rfc3339(retry_at)}",
        retry_in=_bounded(retry_at, now, ctx.recheck),
        retry_at=retry_at,
    )


async def take(
    request: BackupRequest, observed: BackupObserved, ctx: Context, record: RecordPending
) -> Progress:
    """One step towards the backup: ask for it (once), find it, follow it."""
    if observed.backup_id is not None:
        return progress_of(await ctx.zomro.get_backup(observed.backup_id), request, ctx.zone)
    now = ctx.now()
    if observed.retry_after is not None and now < observed.retry_after and observed.pending is None:
        # Waiting for Zomro's day to turn: a look at the clock only, nothing sent.
        return replace(
            daily_limit(request, now, ctx),
            retry_at=observed.retry_after,
            retry_in=_bounded(observed.retry_after, now, ctx.recheck),
        )
    listing = await ctx.zomro.list_backups(request.instance_id)
    pending = observed.pending
    if pending is not None:
        found = pending.find(listing.backups, ctx.zone, ctx.free)
        if found is not None:
            return progress_of(found, request, ctx.zone)
        wait = pending.settles_in(now, ctx.settle)
        if pending.acknowledged or wait > 0:
            _still_creating(request, pending, wait)
    if (listing.manual_created_today or 0) >= DAILY_MANUAL_LIMIT:
        if pending is not None:
            await record(None)
        return daily_limit(request, now, ctx)
    return await _create(request, listing, ctx, record)


async def _create(
    request: BackupRequest, listing: BackupListing, ctx: Context, record: RecordPending
) -> Progress:
    pending = PendingBackup(
        request.backup_name, ctx.now(), frozenset(row.id for row in listing.backups)
    )
    await record(pending)  # durable before Zomro is asked
    try:
        await ctx.zomro.create_manual_backup(request.instance_id, request.backup_name)
    except DailyBackupLimitError:
        await record(None)
        return daily_limit(request, ctx.now(), ctx)
    except UnknownOutcomeError:
        # The record stays: the next look searches the listing before anything is sent again.
        _still_creating(request, pending, ctx.settle)
    except ZomroError:
        await record(None)  # refused: nothing was made
        raise
    pending = pending.acknowledge()
    await record(pending)
    found = pending.find(
        (await ctx.zomro.list_backups(request.instance_id)).backups, ctx.zone, ctx.free
    )
    if found is None:
        _still_creating(request, pending, 0.0)
    return progress_of(found, request, ctx.zone)


def _still_creating(request: BackupRequest, pending: PendingBackup, wait: float) -> NoReturn:
    where = f"backup {pending.name!r} of instance {request.instance_id}"
    if pending.acknowledged:
        raise CreatePendingError(f"waiting until Zomro lists {where}, which it accepted")
    raise CreatePendingError(
        f"Zomro's answer to the request for {where} was lost; waiting until it is listed "
        "before asking again",
        retry_after=wait or None,
    )


class Removal(enum.Enum):
    DELETED = "deleted"
    RETAINED = "retained"
    NOTHING = "nothing"


async def remove(
    request: BackupRequest, observed: BackupObserved, ctx: Context
) -> tuple[Removal, str | None]:
    """On deletion: with Delete, delete the image (Zomro refuses while it is protected, which
    propagates as BackupProtectedError); with Retain, leave it. Returns what was done and to
    which backup id."""
    backup_id = observed.backup_id
    if request.deletion_policy == "Retain":
        return (Removal.RETAINED, backup_id) if backup_id else (Removal.NOTHING, None)
    if backup_id is None and observed.pending is not None:
        pending = observed.pending
        listing = await ctx.zomro.list_backups(request.instance_id)
        found = pending.find(listing.backups, ctx.zone, ctx.free)
        if found is None:
            wait = pending.settles_in(ctx.now(), ctx.settle)
            if pending.acknowledged or wait > 0:
                _still_creating(request, pending, wait)
            return Removal.NOTHING, None
        backup_id = found.id
    if backup_id is None:
        return Removal.NOTHING, None
    await ctx.zomro.delete_backup(backup_id)
    return Removal.DELETED, backup_id


def status_changes(
    current: Mapping[str, Any],
    progress: Progress,
    generation: int,
    *,
    now: str,
    zone: ZoneInfo,
) -> dict[str, Any]:
    """The status fields to patch so that status says ``progress``; empty when it already does."""
    wanted: dict[str, Any] = {"phase": progress.phase, "observedGeneration": generation}
    row = progress.backup
    if row is not None:
        wanted["backupId"] = row.id
        wanted["backupName"] = row.name
        if row.size_gb is not None:
            wanted["size"] = row.size_gb
        if current.get("pendingCreate") is not None:
            wanted["pendingCreate"] = None
        if progress.phase == "Completed" and row.created is not None:
            wanted["completionTime"] = rfc3339(row.created.replace(tzinfo=zone))
        elif progress.phase == "Completed" and current.get("completionTime") is None:
            wanted["completionTime"] = now
    if progress.retry_at is not None:
        wanted["retryAfter"] = rfc3339(progress.retry_at)
    elif current.get("retryAfter") is not None:
        wanted["retryAfter"] = None
    patch = {key: value for key, value in wanted.items() if current.get(key) != value}
    readiness = Readiness(progress.ready, progress.reason, progress.message)
    patch.update(ready_changes(current, readiness, generation, now))
    return patch


def parse_rfc3339(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=dt.UTC)


def _bounded(until: dt.datetime, now: dt.datetime, cap: float) -> float:
    return max(1.0, min((until - now).total_seconds(), cap))
