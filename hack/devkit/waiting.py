"""One way to wait: poll a condition until it holds or a deadline passes, then fail saying what
was awaited and what the last look showed. Never a fixed sleep in its place."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class WaitTimeout(AssertionError):
    """The condition did not hold in time. An AssertionError, so that a test that waits fails
    as a failed assertion, with the message."""


class _Deadline:
    """When a wait gives up, and the failure it gives up with."""

    def __init__(self, what: str, end: float) -> None:
        self.what, self.end, self.since = what, end, time.monotonic()

    def check(self, last: object) -> None:
        if time.monotonic() >= self.end:
            waited = time.monotonic() - self.since
            raise WaitTimeout(
                f"timed out after {waited:.0f}s waiting for {self.what}; last: {last!r}"
            )


def wait_for(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float = 60.0,
    deadline: float | None = None,
    interval: float = 0.2,
) -> T:
    """Call ``probe`` every ``interval`` seconds until it returns something truthy, and return
    that. After ``timeout`` seconds (or at ``deadline``, a time.monotonic() value, when given)
    raise WaitTimeout naming ``what`` and the last value seen. ``probe`` may raise to stop early
    (a process that died, say)."""
    limit = _Deadline(what, deadline if deadline is not None else time.monotonic() + timeout)
    while not (last := probe()):
        limit.check(last)
        time.sleep(interval)
    return last


async def wait_for_async(
    what: str,
    probe: Callable[[], T | None],
    *,
    timeout: float = 60.0,  # noqa: ASYNC109 (wait_for's signature: the failure names `what`)
    interval: float = 0.01,
) -> T:
    """wait_for inside an event loop: the same deadline and message, but it yields to the loop
    between looks (so that what it waits on can happen in the same loop)."""
    limit = _Deadline(what, time.monotonic() + timeout)
    while not (last := probe()):
        limit.check(last)
        await asyncio.sleep(interval)
    return last
