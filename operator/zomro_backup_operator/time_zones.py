"""Weekly schedules across time zones: what Zomro must hold so backups run when the user meant.

Pure and cluster-free (the standard library's ``zoneinfo`` fed by the ``tzdata`` package). The
rules, and why they are what they are, are in docs/time-zones.md:

- a wanted run happens whenever the user's clock shows the wanted day and time, as Kubernetes
  CronJob does: a time skipped by a spring-forward gap does not run that day, a time repeated
  by a fall-back fold runs twice; Zomro's clock is assumed to behave the same way;
- Zomro can hold one (days, time) on its clock, so where the conversion changes the operator
  changes it once, in the middle of the span in which neither the old nor the new value would
  make Zomro run at a time not wanted (``ProviderSchedule.changes_at``).

All instants taken are aware; all instants returned are in UTC.
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib.resources
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final, NamedTuple
from zoneinfo import ZoneInfo

from zomro_backup_operator.zomro.models import Weekday, validate_time

UTC: Final = dt.UTC

DEFAULT_PROVIDER_ZONE: Final = "Europe/Kyiv"
"""Zomro's clock as we read its panel: "GMT+3", moving with daylight saving (docs/time-zones.md)."""

FIXED_UTC_PLUS_3: Final = "Etc/GMT-3"
"""The IANA name of a clock fixed at UTC+3 (the sign of ``Etc/GMT`` names is inverted)."""

ZONE_NAME_PATTERN: Final = r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$"
"""The shape of an IANA zone name, for the CRD's admission check (every tzdata name matches)."""

ZONE_NAME_MAX_LENGTH: Final = 64
"""Room to spare: the longest tzdata name has 32 characters."""

CHANGE_HORIZON: Final = dt.timedelta(days=400)
"""How far ahead ``provider_schedule`` looks for the next change (else ``changes_at`` is None)."""

_LOOKBACK: Final = dt.timedelta(days=15)
_ONE_DAY: Final = dt.timedelta(days=1)


class UnknownTimeZoneError(ValueError):
    """A zone name that tzdata does not know; the message names the field it came from."""

    def __init__(self, field: str, name: str) -> None:
        super().__init__(
            f"{field}: unknown time zone {name!r} (an IANA name such as Europe/Berlin)"
        )
        self.field = field
        self.name = name


@dataclass(frozen=True)
class ProviderSchedule:
    """What Zomro must hold now, on its own clock, and until when.

    ``changes_at`` is the instant from which ``provider_schedule`` gives a different value: the
    operator must send that value at (or soon after) ``changes_at``, and before the next run.
    None when nothing changes within ``CHANGE_HORIZON``.
    """

    days: frozenset[Weekday]
    time: str
    changes_at: dt.datetime | None


class _Weekly(NamedTuple):
    days: frozenset[Weekday]
    minute: int  # after midnight


def parse_zone(name: str, field: str) -> ZoneInfo:
    """The zone of an IANA name, read from the tzdata package; ``UnknownTimeZoneError`` otherwise.

    Only tzdata's names count, so the host's own zone files (and names such as ``localtime``,
    which mean whatever the host is set to) play no part.
    """
    if name not in _tzdata_names():
        raise UnknownTimeZoneError(field, name)
    return _load_zone(name)


def next_run(days: Iterable[Weekday], time: str, zone: ZoneInfo, after: dt.datetime) -> dt.datetime:
    """The first run strictly after ``after`` of a weekly schedule on ``zone``'s clock, in UTC."""
    after = _aware_utc(after, "after")
    return next(run for run in _runs(_weekly(days, time), zone, after) if run > after)


def provider_schedule(
    days: Iterable[Weekday],
    time: str,
    user_zone: ZoneInfo,
    provider_zone: ZoneInfo,
    at: dt.datetime,
) -> ProviderSchedule:
    """The (days, time) on the provider's clock that Zomro must hold at ``at`` so that it runs
    exactly when the user's clock shows one of ``days`` at ``time``, and when that changes.

    Each wanted run is converted on its own: its day and time on the provider's clock, the
    other days moved by as many days as it moved. Between two runs whose conversions differ
    the value changes once, at the middle of the span that is after both the earlier run and
    the new value's last firing before the later run, and before both the later run and the old
    value's next firing after the earlier run (so neither value fires unwanted).
    """
    wanted = _weekly(days, time)
    at = _aware_utc(at, "at")
    converted = (
        (run, _on_provider_clock(run, wanted, user_zone, provider_zone))
        for run in _runs(wanted, user_zone, at - _LOOKBACK)
    )
    earlier, old = next(converted)
    while True:
        later, new = next(converted)
        if later >= at and old != new:
            switch = _switch_instant(earlier, old, later, new, provider_zone)
            if switch > at:
                return _provider_schedule(old, switch)
        elif earlier > at + CHANGE_HORIZON:
            return _provider_schedule(old, None)
        earlier, old = later, new


def format_rfc3339(instant: dt.datetime) -> str:
    """``2026-03-29T01:00:00Z``: an aware instant in UTC, to the second, for status fields."""
    return _aware_utc(instant, "instant").strftime("%Y-%m-%dT%H:%M:%SZ")


def _switch_instant(
    earlier: dt.datetime, old: _Weekly, later: dt.datetime, new: _Weekly, zone: ZoneInfo
) -> dt.datetime:
    """The middle of the span in which Zomro can move from ``old`` to ``new`` without a run
    that is not wanted (not empty for any zone tested; were it empty, the result would still
    lie between the two runs)."""
    start = earlier
    for firing in _runs(new, zone, earlier):
        if firing >= later:
            break
        start = firing
    end = min(later, next(firing for firing in _runs(old, zone, earlier) if firing > earlier))
    return start + (end - start) / 2


def _on_provider_clock(
    run: dt.datetime, wanted: _Weekly, user_zone: ZoneInfo, provider_zone: ZoneInfo
) -> _Weekly:
    """The wanted schedule as the provider's clock must hold it for this run."""
    here, there = run.astimezone(user_zone), run.astimezone(provider_zone)
    shift = (there.date() - here.date()).days
    return _Weekly(_shifted(wanted.days, shift), there.hour * 60 + there.minute)


@functools.cache
def _shifted(days: frozenset[Weekday], shift: int) -> frozenset[Weekday]:
    """``days`` moved by ``shift`` days (cached: every run of a schedule asks it again)."""
    return frozenset(Weekday((int(day) + shift) % 7) for day in days)


def _runs(weekly: _Weekly, zone: ZoneInfo, start: dt.datetime) -> Iterator[dt.datetime]:
    """Every instant from ``start`` on at which ``zone``'s clock shows the schedule, in order."""
    day = start.astimezone(zone).date() - _ONE_DAY
    numbers = {int(weekday) for weekday in weekly.days}  # Sunday 0, as isoweekday() % 7
    while True:
        if day.isoweekday() % 7 in numbers:
            yield from (run for run in _instants(day, weekly.minute, zone) if run >= start)
        day += _ONE_DAY


def _instants(day: dt.date, minute: int, zone: ZoneInfo) -> list[dt.datetime]:
    """The instants at which ``zone``'s clock shows this wall time: none in a gap, two in a fold."""
    wall = dt.datetime.combine(day, dt.time(minute // 60, minute % 60))
    first, second = (wall.replace(tzinfo=zone, fold=fold).astimezone(UTC) for fold in (0, 1))
    if first == second:
        # Both folds agree only away from a transition (in a gap or a fold they differ), so the
        # clock shows this wall time once: the common case, which needs no check.
        return [first]
    return sorted(c for c in (first, second) if c.astimezone(zone).replace(tzinfo=None) == wall)


def _weekly(days: Iterable[Weekday], time: str) -> _Weekly:
    hours, minutes = validate_time(time).split(":")
    weekly = _Weekly(frozenset(days), int(hours) * 60 + int(minutes))
    if not weekly.days:
        raise ValueError("at least one day is required")
    return weekly


def _provider_schedule(weekly: _Weekly, changes_at: dt.datetime | None) -> ProviderSchedule:
    hours, minutes = divmod(weekly.minute, 60)
    return ProviderSchedule(weekly.days, f"{hours:02d}:{minutes:02d}", changes_at)


def _aware_utc(instant: dt.datetime, name: str) -> dt.datetime:
    if instant.utcoffset() is None:
        raise ValueError(f"{name} must be an aware datetime, got {instant!r}")
    return instant.astimezone(UTC)


@functools.cache
def _tzdata_names() -> frozenset[str]:
    listing = importlib.resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8")
    return frozenset(listing.split())


@functools.cache
def _load_zone(name: str) -> ZoneInfo:
    data = importlib.resources.files("tzdata").joinpath("zoneinfo", *name.split("/"))
    with data.open("rb") as stream:
        return ZoneInfo.from_file(stream, key=name)
