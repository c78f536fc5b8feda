"""Helpers the unit tests share: a controllable clock with its sleep, a free loopback port, and
the instant and provider zone resources are read at."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
from collections.abc import Callable

from zomro_backup_operator.time_zones import DEFAULT_PROVIDER_ZONE, parse_zone

READ_AT = dt.datetime(2026, 1, 7, 12, 0, tzinfo=dt.UTC)
"""A Wednesday in winter, away from any daylight-saving transition."""
PROVIDER_ZONE = parse_zone(DEFAULT_PROVIDER_ZONE, "ZOMRO_PROVIDER_TIMEZONE")


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


def free_port() -> int:
    """A loopback port nothing listens on (just now)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
