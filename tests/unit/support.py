"""Helpers the unit tests share: a controllable clock with its sleep, the instant and provider
zone resources are read at, the seed schedule's wire row, client options without rate-limit
pauses, a property test's example count, and the secret-leak assertion (the shared fixtures are
in conftest.py)."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable, Iterable, Mapping

from hypothesis import settings

from zomro_backup_operator.time_zones import DEFAULT_PROVIDER_ZONE, parse_zone
from zomro_backup_operator.zomro.client import ClientOptions

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


FAST = ClientOptions(timeout=5.0, max_requests_per_second=1000.0)
"""Client options for tests: no rate-limit pause between requests, a timeout a test can wait."""

FULL_PROFILE_EXAMPLES = 100
"""Hypothesis's default ``max_examples``, the full profile's."""


def examples(full: int) -> int:
    """A property test's example count: ``full`` under Hypothesis's default profile (what CI's
    `make test` runs), scaled down by the ``unit`` profile that `make unit` loads (conftest.py)."""
    return max(1, full * settings().max_examples // FULL_PROFILE_EXAMPLES)


SEED_ROW = {
    "create_date": {"$": "2024-07-24"},
    "id": {"$": "14"},
    "instance_id": {"$": "5203773"},
    "name": {"$": "MySchedule"},
    "rotation_days": {"$": "Monday Tuesday Wednesday Thursday Friday Saturday "},
    "rotation_time": {"$": "02:01"},
    "servername": {"$": "MyServer"},
}
"""The default sandbox's seed schedule as Zomro lists it."""

CREATE_FIELDS = {
    "func": "instances.fleio_bckps.schedule.edit",
    "name": "MySchedule",
    "rotation_days": "1,2,3,4,5,6",
    "rotation_time": "02:01",
    "plid": "5203773",
    "sok": "ok",
}
"""The form of a create on the default sandbox's instance, as a client posts it."""


def assert_no_secrets(texts: Mapping[str, str] | Iterable[str], *secrets: str) -> None:
    """None of ``secrets`` (passwords, session ids, tokens) in any of ``texts``: what a log,
    an error, a repr or a report shows. A mapping names where each text was read."""
    named = texts.items() if isinstance(texts, Mapping) else enumerate(texts)
    for where, text in named:
        for number, secret in enumerate(secrets):
            assert secret not in text, f"secret #{number} in {where}: {text[:200]!r}"
