"""Typed values exchanged with Zomro, and the provider's own validation rules."""

from __future__ import annotations

import datetime
import enum
import re
from collections.abc import Iterable
from dataclasses import dataclass

MAX_NAME_LENGTH = 60
"""Zomro's panel allows 100 characters but Fleio's model behind it holds 60: safe either way."""

_TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")

ID_PATTERN = "^[1-9][0-9]{0,19}$"
"""A Zomro object id (instance, schedule): ASCII digits, no leading zero, at most 20. The CRD's
``spec.instanceId`` carries the same pattern."""
_ID_RE = re.compile(ID_PATTERN)
_COUNT_RE = re.compile(r"[0-9]{1,18}")


def is_object_id(value: str) -> bool:
    """True for a well-formed Zomro id. Not ``str.isdigit``: that accepts "²" and other digits."""
    return _ID_RE.fullmatch(value) is not None


def parse_count(value: str) -> int | None:
    """A non-negative decimal count (ASCII digits only, at most 18), or None."""
    return int(value) if _COUNT_RE.fullmatch(value) else None


class Weekday(enum.IntEnum):
    """A day as Zomro numbers it: the week starts on Sunday = 0."""

    SUNDAY = 0
    MONDAY = 1
    TUESDAY = 2
    WEDNESDAY = 3
    THURSDAY = 4
    FRIDAY = 5
    SATURDAY = 6

    @property
    def title(self) -> str:
        """The English name Zomro prints and the CRD uses, e.g. ``Monday``."""
        return self.name.capitalize()

    @classmethod
    def from_name(cls, name: str) -> Weekday:
        """Parse an English day name, case-insensitively; raise ValueError otherwise."""
        try:
            return cls[name.strip().upper()]
        except KeyError:
            raise ValueError(f"not a day name: {name!r}") from None


def format_days(days: Iterable[Weekday]) -> str:
    """Zomro's request form: comma-joined day numbers in week order, e.g. ``"1,2,3"``."""
    return ",".join(str(int(day)) for day in sorted(set(days)))


def validate_time(value: str) -> str:
    """Check Zomro's ``HH:MM`` 24-hour format; raise ValueError otherwise."""
    if not _TIME_RE.fullmatch(value):
        raise ValueError(f"time must be HH:MM on a 24-hour clock, got {value!r}")
    return value


def validate_name(value: str) -> str:
    """Check the schedule name fits what Zomro stores; raise ValueError otherwise."""
    if not 1 <= len(value) <= MAX_NAME_LENGTH:
        raise ValueError(f"name must be 1-{MAX_NAME_LENGTH} characters, got {len(value)}")
    return value


def name_key(name: str) -> str:
    """A name folded the ways Zomro may change it: whitespace trimmed and collapsed, case."""
    return " ".join(name.split()).casefold()


def may_be_stored_as(sent: str, listed: str) -> bool:
    """True when ``listed`` could be what Zomro made of the name ``sent``: the same once trimmed,
    whitespace collapsed and case folded, or a cut of it (a shorter length limit)."""
    sent_key, listed_key = name_key(sent), name_key(listed)
    return bool(listed_key) and sent_key.startswith(listed_key)


def numeric_order(value: str) -> tuple[int, str]:
    """Sort key for ids: numerically when digits, others first."""
    return (int(value) if is_object_id(value) else -1, value)


@dataclass(frozen=True)
class ScheduleSpec:
    """What a schedule should be: the three fields Zomro lets us set."""

    name: str
    days: frozenset[Weekday]
    time: str

    def __post_init__(self) -> None:
        validate_name(self.name)
        validate_time(self.time)
        if not self.days:
            raise ValueError("at least one day is required")


@dataclass(frozen=True)
class Schedule:
    """A schedule as Zomro lists it."""

    id: str
    instance_id: str
    name: str
    days: frozenset[Weekday]
    time: str
    server_name: str | None = None
    create_date: datetime.date | None = None

    @property
    def spec(self) -> ScheduleSpec:
        return ScheduleSpec(name=self.name, days=self.days, time=self.time)

    def matches(self, spec: ScheduleSpec) -> bool:
        """True when Zomro holds exactly this spec."""
        return (self.name, self.days, self.time) == (spec.name, spec.days, spec.time)


@dataclass(frozen=True)
class Instance:
    """A VPS instance of the account."""

    id: str
    name: str
    ip: str | None = None
    status: str | None = None


MAX_BACKUP_NAME_LENGTH = 100
"""Zomro's panel allows manual backup names of up to 100 characters."""
MIN_BACKUP_ROTATION = 1
MAX_BACKUP_ROTATION = 10
"""``backup_rotation``: how many scheduled backups an instance keeps, 1..10."""


def validate_backup_name(value: str) -> str:
    """Check a manual backup's name fits what Zomro takes; raise ValueError otherwise."""
    if not value.strip() or len(value) > MAX_BACKUP_NAME_LENGTH:
        raise ValueError(
            f"backup name must be 1-{MAX_BACKUP_NAME_LENGTH} characters and not blank, "
            f"got {len(value)}"
        )
    return value


def validate_backup_rotation(value: int) -> int:
    """Check a ``backup_rotation`` is one Zomro takes (1..10); raise ValueError otherwise."""
    if isinstance(value, bool) or not MIN_BACKUP_ROTATION <= value <= MAX_BACKUP_ROTATION:
        raise ValueError(
            f"backup rotation must be {MIN_BACKUP_ROTATION}..{MAX_BACKUP_ROTATION}, got {value!r}"
        )
    return value


@dataclass(frozen=True)
class Backup:
    """A backup image of an instance, as Zomro lists it (``instances.fleio_bckps``)."""

    id: str
    name: str
    backup_type: str
    """Lowercased: ``auto`` (made by a schedule) or ``manual``; otherwise as Zomro says."""
    status: str
    """Fleio's status, lowercased: ``active`` is usable; others mean in progress or failed."""
    created: datetime.datetime | None
    """Naive, in Zomro's own clock (the provider's local time), as listed; None if not given."""
    size_gb: float | None
    protected: bool

    @property
    def usable(self) -> bool:
        """True when the image is complete and can be restored from."""
        return self.status == "active"


@dataclass(frozen=True)
class BackupListing:
    """An instance's backups and the per-instance figures the same answer carries."""

    backups: tuple[Backup, ...]
    rotation: int | None
    """``backup_rotation``: how many scheduled backups the instance keeps."""
    manual_created_today: int | None
    manual_created_total: int | None
