"""The sandbox's in-memory world: accounts, instances, sessions, schedules and backups.

Knows Zomro's rules (who owns what, session idle expiry, busy instances, backup limits) but not
HTTP. Time comes from an injected clock so tests can jump an hour without sleeping one. Day names
are our own table on purpose: the client has its own, so the two cannot share a bug.
"""

from __future__ import annotations

import datetime
import json
import os
import secrets
import tempfile
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from zomro_backup_operator.sandbox.clock import Clock
from zomro_backup_operator.sandbox.config import SandboxConfig
from zomro_backup_operator.sandbox.runs import run_times

RunFate = Callable[[str], tuple[str, float] | None]
"""Asked once per scheduled run with the instance id: None for a normal run, else the fault's
mode (``fail``, ``late``, ``skip``) and, for ``late``, its seconds."""

DAY_NAMES_EN = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
"""Index = Zomro's day number: the week starts on Sunday = 0."""

DAY_NAMES_RU = (
    "Воскресенье",
    "Понедельник",
    "Вторник",
    "Среда",
    "Четверг",
    "Пятница",
    "Суббота",
)

STATE_VERSION = 1


class ManualClock:
    """A clock that only moves when told to, for tests of expiry and busy periods."""

    def __init__(self, start: float = 1_721_800_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Instance:
    id: str
    name: str
    ip: str
    status: str
    owner: str
    backup_rotation: int
    os_distro: str
    os_version: str
    busy_until: float = 0.0
    manual_created: list[float] = field(default_factory=list)
    """When each manual backup was taken: today's count includes deleted ones."""


@dataclass
class Schedule:
    id: str
    instance_id: str
    name: str
    days: tuple[int, ...]
    time: str
    create_date: str
    listed_from: float = 0.0
    """Sandbox-clock time from which listings show it (a listing delay after a create)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "instance_id": self.instance_id,
            "name": self.name,
            "days": list(self.days),
            "day_names": [DAY_NAMES_EN[d] for d in self.days],
            "time": self.time,
            "create_date": self.create_date,
        }


@dataclass
class Backup:
    id: str
    instance_id: str
    name: str
    backup_type: str
    created_at: float
    ready_at: float
    image_size: str
    protected: bool
    fleio_id: str
    failed: bool = False

    def status(self, now: float) -> str:
        """Fleio's status: ``image_creating`` until the image is done, then ``active`` (or
        ``error`` for a run that fails)."""
        if now < self.ready_at:
            return "image_creating"
        return "error" if self.failed else "active"


@dataclass(frozen=True)
class PendingRun:
    """A scheduled run: its backup appears at ``due`` (its time, or later when late)."""

    due: float
    instance_id: str
    scheduled: float
    failed: bool = False


@dataclass
class Session:
    username: str
    last_used: float


@dataclass
class RequestRecord:
    """One line of the request log, for rate measurements. Never holds secrets."""

    time: float
    func: str
    account: str | None
    outcome: str
    duration: float = 0.0
    client: str | None = None
    """The label of the /_via/<label>/ URL the request came to, if any."""
    elids: int = 0
    """How many ids the call's ``elid`` named (several: a group operation)."""


@dataclass
class SandboxState:
    """The whole emulated service. One event loop drives it, so no locks."""

    config: SandboxConfig
    clock: Clock = time.time
    state_file: Path | None = None
    session_ttl: float = 0.0
    instances: dict[str, Instance] = field(default_factory=dict)
    schedules: dict[str, Schedule] = field(default_factory=dict)
    backups: dict[str, Backup] = field(default_factory=dict)
    sessions: dict[str, Session] = field(default_factory=dict)
    login_failures: dict[str, list[float]] = field(default_factory=dict)
    requests: list[RequestRecord] = field(default_factory=list)
    next_schedule_id: int = 0
    next_backup_id: int = 0
    scheduled_backups_busy: bool = True
    same_minute_runs: str = "one"
    evaluated_until: float = 0.0
    """Scheduled runs up to this sandbox-clock time have been made (or queued when late)."""
    pending_runs: list[PendingRun] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.zone = ZoneInfo(self.config.provider_zone)
        self._passwords = {a.username: a.password for a in self.config.accounts}
        self._initial()
        if self.state_file is not None and self.state_file.exists():
            self._load(self.state_file)

    def __repr__(self) -> str:
        return (
            f"SandboxState(instances={len(self.instances)}, schedules={len(self.schedules)}, "
            f"sessions={len(self.sessions)})"
        )

    # ----------------------------------------------------------------- lifecycle

    def reset(self) -> None:
        """Back to the configuration's initial world: no schedules, backups or sessions."""
        self._initial()
        self.save()

    def _initial(self) -> None:
        self.session_ttl = self.config.session_ttl
        self.scheduled_backups_busy = self.config.scheduled_backups_busy
        self.same_minute_runs = self.config.same_minute_runs
        self.evaluated_until = self.now()
        self.pending_runs = []
        self.instances = {
            i.id: Instance(
                id=i.id,
                name=i.name,
                ip=i.ip,
                status=i.status,
                owner=account.username,
                backup_rotation=i.backup_rotation,
                os_distro=i.os_distro,
                os_version=i.os_version,
            )
            for account in self.config.accounts
            for i in account.instances
        }
        self.schedules = {}
        self.backups = {}
        self.sessions = {}
        self.login_failures = {}
        self.requests = []
        self.next_schedule_id = self.config.first_schedule_id
        self.next_backup_id = self.config.first_backup_id

    def now(self) -> float:
        return self.clock()

    def local(self, moment: float) -> datetime.datetime:
        """A sandbox-clock time on the provider's wall clock (``provider_zone``)."""
        return datetime.datetime.fromtimestamp(moment, self.zone)

    def today(self) -> str:
        """The provider's calendar date, as ``YYYY-MM-DD``."""
        return self.local(self.now()).date().isoformat()

    # ----------------------------------------------------------------- accounts and sessions

    def check_password(self, username: str, password: str) -> bool:
        expected = self._passwords.get(username)
        return expected is not None and secrets.compare_digest(
            expected.encode("utf-8"), password.encode("utf-8")
        )

    def login_blocked(self, keys: Iterable[str]) -> bool:
        """True when too many recent failures came from this IP or for this login."""
        limit = self.config.login_failures_before_block
        if limit <= 0:
            return False
        since = self.now() - self.config.login_block_seconds
        return any(
            sum(1 for t in self.login_failures.get(k, []) if t > since) >= limit for k in keys
        )

    def record_login_failure(self, keys: Iterable[str]) -> None:
        since = self.now() - self.config.login_block_seconds
        for key in keys:
            recent = [t for t in self.login_failures.get(key, []) if t > since]
            recent.append(self.now())
            self.login_failures[key] = recent

    def open_session(self, username: str) -> str:
        sid = secrets.token_hex(12)
        self.sessions[sid] = Session(username=username, last_used=self.now())
        return sid

    def use_session(self, sid: str) -> str | None:
        """The session's account, refreshing its idle timer; None when unknown or expired."""
        session = self.sessions.get(sid)
        if session is None:
            return None
        if self.now() - session.last_used >= self.session_ttl:
            del self.sessions[sid]
            return None
        session.last_used = self.now()
        return session.username

    def expire_sessions(self) -> int:
        count = len(self.sessions)
        self.sessions.clear()
        return count

    # ----------------------------------------------------------------- instances

    def instances_of(self, username: str) -> list[Instance]:
        return sorted(
            (i for i in self.instances.values() if i.owner == username), key=lambda i: int(i.id)
        )

    def owned_instance(self, username: str, instance_id: str) -> Instance | None:
        instance = self.instances.get(instance_id)
        return instance if instance is not None and instance.owner == username else None

    def is_busy(self, instance: Instance) -> bool:
        return self.now() < instance.busy_until

    def make_busy(self, instance_id: str, seconds: float) -> None:
        instance = self.instances[instance_id]
        instance.busy_until = max(instance.busy_until, self.now() + seconds)

    # ----------------------------------------------------------------- schedules

    def schedules_of(self, instance_id: str) -> list[Schedule]:
        return sorted(
            (s for s in self.schedules.values() if s.instance_id == instance_id),
            key=lambda s: int(s.id),
        )

    def listed_schedules_of(self, instance_id: str) -> list[Schedule]:
        """What a listing shows: new schedules only once their listing delay has passed."""
        now = self.now()
        return [s for s in self.schedules_of(instance_id) if s.listed_from <= now]

    def owned_schedule(self, username: str, schedule_id: str) -> Schedule | None:
        schedule = self.schedules.get(schedule_id)
        if schedule is None or self.owned_instance(username, schedule.instance_id) is None:
            return None
        return schedule

    def add_schedule(
        self,
        instance_id: str,
        name: str,
        days: Iterable[int],
        time_: str,
        *,
        listing_delay: float = 0.0,
    ) -> Schedule:
        schedule = Schedule(
            id=str(self.next_schedule_id),
            instance_id=instance_id,
            name=name,
            days=tuple(sorted(set(days))),
            time=time_,
            create_date=self.today(),
            listed_from=self.now() + listing_delay,
        )
        self.next_schedule_id += 1
        self.schedules[schedule.id] = schedule
        self.save()
        return schedule

    def change_schedule(
        self,
        schedule_id: str,
        *,
        name: str | None = None,
        days: Iterable[int] | None = None,
        time_: str | None = None,
    ) -> Schedule:
        schedule = self.schedules[schedule_id]
        if name is not None:
            schedule.name = name
        if days is not None:
            schedule.days = tuple(sorted(set(days)))
        if time_ is not None:
            schedule.time = time_
        self.save()
        return schedule

    def remove_schedules(self, schedule_ids: Iterable[str]) -> None:
        for schedule_id in schedule_ids:
            self.schedules.pop(schedule_id, None)
        self.save()

    # ----------------------------------------------------------------- backups

    def backups_of(self, instance_id: str) -> list[Backup]:
        return sorted(
            (b for b in self.backups.values() if b.instance_id == instance_id),
            key=lambda b: int(b.id),
        )

    def owned_backup(self, username: str, backup_id: str) -> Backup | None:
        backup = self.backups.get(backup_id)
        if backup is None or self.owned_instance(username, backup.instance_id) is None:
            return None
        return backup

    def manual_counts(self, instance_id: str) -> tuple[int, int]:
        """Manual backups of the instance taken today (provider date; deleted ones count too,
        the stricter reading) and those it holds now."""
        today = self.today()
        taken = self.instances[instance_id].manual_created
        made_today = sum(1 for t in taken if self.local(t).date().isoformat() == today)
        held = sum(1 for b in self.backups_of(instance_id) if b.backup_type == "manual")
        return made_today, held

    def add_backup(
        self,
        instance_id: str,
        name: str,
        *,
        backup_type: str = "manual",
        duration: float = 0.0,
        protected: bool = False,
    ) -> Backup:
        backup = self._make_backup(
            instance_id,
            name,
            backup_type=backup_type,
            at=self.now(),
            duration=duration,
            protected=protected,
        )
        self.save()
        return backup

    def _make_backup(
        self,
        instance_id: str,
        name: str,
        *,
        backup_type: str,
        at: float,
        duration: float,
        protected: bool = False,
        failed: bool = False,
    ) -> Backup:
        ident = self.next_backup_id
        self.next_backup_id += 1
        backup = Backup(
            id=str(ident),
            instance_id=instance_id,
            name=name,
            backup_type=backup_type,
            created_at=at,
            ready_at=at + duration,
            image_size=f"{1 + (ident % 7) * 0.37:.2f}",
            protected=protected,
            fleio_id=f"{ident:08x}-0000-4000-8000-{int(instance_id):012x}",
            failed=failed,
        )
        self.backups[backup.id] = backup
        if backup_type == "manual":
            self.instances[instance_id].manual_created.append(at)
        else:
            self._rotate(instance_id)
        return backup

    # ----------------------------------------------------------------- scheduled runs

    def catch_up(self, fate: RunFate) -> int:
        """Make the backups of every scheduled run since the last call, in time order, each
        created at its run time (a late one at its time plus the delay). Returns how many.

        Called before every request, so that jumping the clock a day ahead makes that day's
        backups at once. A clock set back in time runs nothing until it passes the runs made.
        """
        now = self.now()
        since = self.evaluated_until
        if now <= since:
            self.evaluated_until = now
            return 0
        runs = list(self.pending_runs)
        # Runs are at whole minutes (zone offsets are whole minutes): none unless one was crossed.
        if now // 60 > since // 60:
            runs += self._new_runs(since, now, fate)
        runs.sort(key=lambda run: (run.due, int(run.instance_id)))
        self.pending_runs = [run for run in runs if run.due > now]
        made = 0
        for run in runs:
            if run.due <= now:
                self._scheduled_backup(run)
                made += 1
        self.evaluated_until = now
        if made:
            self.save()
        return made

    def _new_runs(self, since: float, now: float, fate: RunFate) -> list[PendingRun]:
        """The runs whose time falls in ``(since, now]``, as the faults decide them (asked in
        time order, so that a counted fault takes the earliest runs)."""
        schedules_at: dict[tuple[float, int], int] = {}
        for schedule in self.schedules.values():
            for instant in run_times(schedule.days, schedule.time, self.zone, since, now):
                key = (instant, int(schedule.instance_id))
                schedules_at[key] = schedules_at.get(key, 0) + 1
        found: list[PendingRun] = []
        for (instant, instance_number), count in sorted(schedules_at.items()):
            instance_id = str(instance_number)
            for _ in range(1 if self.same_minute_runs == "one" else count):
                decided = fate(instance_id)
                mode, delay = decided if decided is not None else ("", 0.0)
                if mode == "skip":
                    continue
                due = instant + delay if mode == "late" else instant
                found.append(PendingRun(due, instance_id, instant, failed=mode == "fail"))
        return found

    def _scheduled_backup(self, run: PendingRun) -> Backup:
        instance = self.instances[run.instance_id]
        duration = self.config.scheduled_backup_duration
        name = f"{instance.name} {self.local(run.scheduled):%Y-%m-%d %H:%M}"
        backup = self._make_backup(
            instance.id, name, backup_type="auto", at=run.due, duration=duration, failed=run.failed
        )
        if self.scheduled_backups_busy:
            instance.busy_until = max(instance.busy_until, backup.ready_at)
        return backup

    def _rotate(self, instance_id: str) -> None:
        """Scheduled backups beyond the instance's ``backup_rotation`` are overwritten."""
        keep = self.instances[instance_id].backup_rotation
        autos = [b for b in self.backups_of(instance_id) if b.backup_type == "auto"]
        for old in autos[: max(0, len(autos) - keep)]:
            del self.backups[old.id]

    def remove_backups(self, backup_ids: Iterable[str]) -> None:
        for backup_id in backup_ids:
            self.backups.pop(backup_id, None)
        self.save()

    def set_rotation(self, instance_id: str, rotation: int) -> None:
        self.instances[instance_id].backup_rotation = rotation
        self._rotate(instance_id)
        self.save()

    # ----------------------------------------------------------------- views and persistence

    def backup_json(self, backup: Backup) -> dict[str, Any]:
        """A backup as the control endpoint shows it."""
        return {
            "id": backup.id,
            "name": backup.name,
            "backup_type": backup.backup_type,
            "status": backup.status(self.now()),
            "protected": backup.protected,
            "created": self.local(backup.created_at).strftime("%Y-%m-%d %H:%M:%S"),
            "created_at": backup.created_at,
        }

    def snapshot(self) -> dict[str, Any]:
        """What ``GET /_sandbox/state`` shows: instances with their schedules and backups."""
        return {
            "instances": {
                i.id: {
                    "name": i.name,
                    "account": i.owner,
                    "ip": i.ip,
                    "backup_rotation": i.backup_rotation,
                    "busy": self.is_busy(i),
                    "schedules": [s.to_json() for s in self.schedules_of(i.id)],
                    "backups": [self.backup_json(b) for b in self.backups_of(i.id)],
                }
                for i in sorted(self.instances.values(), key=lambda i: int(i.id))
            },
            "sessions": len(self.sessions),
            "session_ttl": self.session_ttl,
        }

    def save(self) -> None:
        """Write the data a restart must keep (not sessions), atomically."""
        if self.state_file is None:
            return
        data = {
            "version": STATE_VERSION,
            "next_schedule_id": self.next_schedule_id,
            "next_backup_id": self.next_backup_id,
            "schedules": [asdict(s) for s in self.schedules.values()],
            "backups": [asdict(b) for b in self.backups.values()],
            "backup_rotation": {i.id: i.backup_rotation for i in self.instances.values()},
            "manual_created": {i.id: i.manual_created for i in self.instances.values()},
        }
        target = self.state_file
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(data, handle, ensure_ascii=False, indent=1)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def _load(self, path: Path) -> None:
        try:
            self._load_data(json.loads(path.read_text(encoding="utf-8")), path)
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"sandbox state file {path} is not usable: {exc!r}") from exc

    def _load_data(self, data: Any, path: Path) -> None:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported sandbox state version in {path}")
        self.schedules = {}
        for raw in data.get("schedules", []):
            raw["days"] = tuple(raw["days"])
            schedule = Schedule(**raw)
            self.schedules[schedule.id] = schedule
        self.backups = {}
        for raw in data.get("backups", []):
            backup = Backup(**raw)
            self.backups[backup.id] = backup
        for instance_id, rotation in data.get("backup_rotation", {}).items():
            if instance_id in self.instances:
                self.instances[instance_id].backup_rotation = int(rotation)
        for instance_id, taken in data.get("manual_created", {}).items():
            if instance_id in self.instances:
                self.instances[instance_id].manual_created = [float(t) for t in taken]
        self.next_schedule_id = max(self.next_schedule_id, int(data["next_schedule_id"]))
        self.next_backup_id = max(self.next_backup_id, int(data["next_backup_id"]))
