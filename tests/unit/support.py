"""Helpers the unit tests share: a controllable clock with its sleep."""

from __future__ import annotations

import asyncio
from collections.abc import Callable


class FakeTime:
    """An injected clock and sleep: sleeping records the delay and moves the clock only."""

    def __init__(self, now: float = 10_000.0) -> None:
        self.now = now
        self.sleeps: list[float] = []
        self.on_sleep: Callable[[float], None] | None = None

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(seconds)
        await asyncio.sleep(0)
