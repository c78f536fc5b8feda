"""The sandbox's own clock: it starts at the base clock's time and flows with it, and tests can
set it to an instant or move it ahead, so that a night of scheduled backups costs no waiting."""

from __future__ import annotations

import math
import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Seconds since the epoch, like :func:`time.time`."""


class SandboxClock:
    """The base clock (real time by default) plus an offset that :meth:`set` and :meth:`advance`
    change. Callable like a :data:`Clock`."""

    def __init__(self, base: Clock = time.time) -> None:
        self._base = base
        self._offset = 0.0

    def __call__(self) -> float:
        return self._base() + self._offset

    def __repr__(self) -> str:
        return f"SandboxClock(offset={self._offset:+.3f}s)"

    def set(self, at: float) -> None:
        """From now on the clock reads ``at`` and flows on from there (also backwards in time)."""
        if not math.isfinite(at):
            raise ValueError("the clock needs a finite time")
        self._offset = at - self._base()

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` ahead (never back: use :meth:`set` for that)."""
        if not math.isfinite(seconds) or seconds < 0:
            raise ValueError("the clock advances by a finite, non-negative number of seconds")
        self._offset += seconds

    def reset(self) -> None:
        """Back to the base clock's time."""
        self._offset = 0.0
