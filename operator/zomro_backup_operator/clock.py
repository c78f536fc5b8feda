"""The operator's notion of "now": the wall clock, or the wall clock moved by a settable offset.

Everything that depends on the date (the provider schedule across daylight-saving transitions,
the next run, whether a backup is overdue) reads :meth:`Clock.now`, never ``datetime.now``, so
that tests can move the operator to any instant without waiting for it. The offset comes from a
file named by ``ZOMRO_CLOCK_OFFSET_FILE`` (a number of seconds, may be negative; a missing or
empty file means no offset), read again whenever it changes. Production leaves the setting unset
and gets the plain wall clock.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Final

OFFSET_POLL_SECONDS: Final = 1.0
"""With an offset file, how long a sleeper sleeps before it looks at the clock again (a jump of
the offset must wake it); without one, a sleeper sleeps the whole way."""


def _wall() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class ClockError(ValueError):
    """The offset file holds something other than a number of seconds."""


class Clock:
    """Aware UTC instants; ``wall`` is injectable for unit tests."""

    def __init__(
        self, offset_file: Path | None = None, *, wall: Callable[[], dt.datetime] = _wall
    ) -> None:
        self._offset_file = offset_file
        self._wall = wall
        self._stamp: tuple[int, int] | None = None
        self._offset = dt.timedelta()

    @property
    def poll_seconds(self) -> float | None:
        return OFFSET_POLL_SECONDS if self._offset_file is not None else None

    def now(self) -> dt.datetime:
        return self._wall() + self._current_offset()

    def seconds_until(self, instant: dt.datetime) -> float:
        return (instant - self.now()).total_seconds()

    async def sleep_until(
        self,
        instant: dt.datetime,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    ) -> bool:
        """Sleep until ``instant`` on this clock; ``sleep`` may end the wait early by returning a
        true value (kopf's ``stopped.wait``), and then this returns True too."""
        while (left := self.seconds_until(instant)) > 0:
            poll = self.poll_seconds
            if await sleep(left if poll is None else min(left, poll)):
                return True
        return False

    def _current_offset(self) -> dt.timedelta:
        if self._offset_file is None:
            return dt.timedelta()
        try:
            stat = os.stat(self._offset_file)
        except FileNotFoundError:
            self._stamp, self._offset = None, dt.timedelta()
            return self._offset
        stamp = (stat.st_mtime_ns, stat.st_size)
        if stamp != self._stamp:
            self._offset = _parse_offset(self._offset_file)
            self._stamp = stamp
        return self._offset


def _parse_offset(path: Path) -> dt.timedelta:
    text = path.read_text().strip()
    if not text:
        return dt.timedelta()
    try:
        return dt.timedelta(seconds=float(text))
    except (ValueError, OverflowError):
        raise ClockError(
            f"ZOMRO_CLOCK_OFFSET_FILE ({path}) must hold a number of seconds, got {text[:40]!r}"
        ) from None
