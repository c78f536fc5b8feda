"""When schedules run: a schedule's days and ``HH:MM`` read on the provider's wall clock.

Pure, so that midnight, week and daylight-saving edges are easy to test. A wall time that
daylight saving skips runs at the instant Python maps it to with ``fold=0`` (an hour later by
the wall clock); a wall time that happens twice runs once, at its first occurrence.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterable
from zoneinfo import ZoneInfo

_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):([0-5][0-9])")
_ONE_DAY = datetime.timedelta(days=1)


def zomro_day(date: datetime.date) -> int:
    """Zomro's day number: Sunday = 0 ... Saturday = 6."""
    return date.isoweekday() % 7


def run_times(
    days: Iterable[int], time_: str, zone: ZoneInfo, after: float, until: float
) -> list[float]:
    """The instants (epoch seconds) in ``(after, until]`` at which the schedule runs, in order.

    A time that is not ``HH:MM`` (one planted through the control endpoint) never runs.
    """
    match = _TIME_RE.fullmatch(time_)
    if match is None or until <= after:
        return []
    wall = datetime.time(int(match.group(1)), int(match.group(2)))
    wanted = set(days)
    day = datetime.datetime.fromtimestamp(after, zone).date()
    last = datetime.datetime.fromtimestamp(until, zone).date()
    found: list[float] = []
    while day <= last:
        if zomro_day(day) in wanted:
            instant = datetime.datetime.combine(day, wall, tzinfo=zone).timestamp()
            if after < instant <= until:
                found.append(instant)
        day += _ONE_DAY
    return found
