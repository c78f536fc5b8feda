"""The one retry-delay formula: exponential with a cap, jittered by an injectable random source.

The client's read retries and throttle pauses and the operator's kopf retries (failures.py) all
use it; only their (first, cap) pairs and the low end of the jitter differ.
"""

from __future__ import annotations

import random as _random
from collections.abc import Callable

Random = Callable[[], float]
"""A source of floats in [0, 1), like ``random.random``; tests pass a fixed one."""

RANDOM: Random = _random.random
"""The default source: jitter needs no cryptographic strength."""

_MAX_DOUBLINGS = 16
"""2**16 times the first delay exceeds every cap in use; it also keeps the float finite."""


def ceiling(attempt: int, first: float, cap: float) -> float:
    """``first`` doubled ``attempt`` times (0 gives ``first``), never above ``cap``."""
    return min(cap, first * 2.0 ** min(max(attempt, 0), _MAX_DOUBLINGS))


def delay(
    attempt: int,
    first: float,
    cap: float,
    *,
    low: float = 0.0,
    random: Random = RANDOM,
) -> float:
    """A delay drawn evenly between ``low`` and ``ceiling(attempt, first, cap)``.

    ``low=0`` is full jitter; ``low=first`` never retries sooner than the first delay."""
    top = ceiling(attempt, first, cap)
    return low + random() * (top - low)
