"""Reads of a Secret that many resources ask for at once (secret_store.py)."""

from __future__ import annotations

import asyncio
import base64
import threading
from collections.abc import Mapping

import pytest

from zomro_backup_operator.secret_store import CredentialStore
from zomro_backup_operator.settings import SecretRef

REF = SecretRef(namespace="team", name="zomro")


class SlowSecret:
    """A Secret reader that blocks (in its worker thread) until released, and counts its reads."""

    def __init__(self, token: str = "t0k3n") -> None:
        self.token = token
        self.reads = 0
        self.reading = threading.Event()
        self.release = threading.Event()
        self.fail: Exception | None = None

    def __call__(self, namespace: str, name: str) -> Mapping[str, str] | None:
        self.reads += 1
        self.reading.set()
        self.release.wait(timeout=5)
        if self.fail is not None:
            raise self.fail
        return {"token": base64.b64encode(self.token.encode()).decode()}


async def _until_reading(secret: SlowSecret) -> None:
    """Until a read has begun; the callers created with the first have all asked by then (they
    ran in the loop's pass that began it)."""
    assert await asyncio.to_thread(secret.reading.wait, 5)


async def test_resources_asking_at_once_share_one_read_of_their_secret() -> None:
    secret = SlowSecret()
    store = CredentialStore(secret, default=None)
    callers = [asyncio.create_task(store.get(REF)) for _ in range(300)]
    await _until_reading(secret)
    secret.release.set()

    got = await asyncio.gather(*callers)

    assert secret.reads == 1
    assert {credentials.token for credentials in got} == {"t0k3n"}


async def test_after_the_cache_time_callers_at_once_share_one_new_read() -> None:
    secret = SlowSecret()
    secret.release.set()
    now = [0.0]
    store = CredentialStore(secret, default=None, ttl=10, clock=lambda: now[0])
    await store.get(REF)
    secret.release.clear()
    secret.reading.clear()
    secret.token = "rotated"
    now[0] = 10.0

    callers = [asyncio.create_task(store.get(REF)) for _ in range(50)]
    await _until_reading(secret)
    secret.release.set()
    got = await asyncio.gather(*callers)

    assert secret.reads == 2
    assert {credentials.token for credentials in got} == {"rotated"}


async def test_a_caller_cancelled_while_waiting_leaves_the_read_to_the_others() -> None:
    secret = SlowSecret()
    store = CredentialStore(secret, default=None)
    first = asyncio.create_task(store.get(REF))
    await _until_reading(secret)
    second = asyncio.create_task(store.get(REF))
    await asyncio.sleep(0)  # the second asks

    first.cancel()
    secret.release.set()

    assert (await second).token == "t0k3n"
    with pytest.raises(asyncio.CancelledError):
        await first
    assert secret.reads == 1


async def test_a_failed_read_reaches_every_waiting_caller_and_the_next_one_reads_again() -> None:
    secret = SlowSecret()
    secret.fail = PermissionError("forbidden")
    store = CredentialStore(secret, default=None)
    callers = [asyncio.create_task(store.get(REF)) for _ in range(20)]
    await _until_reading(secret)
    secret.release.set()

    results = await asyncio.gather(*callers, return_exceptions=True)
    assert all(isinstance(result, PermissionError) for result in results)
    assert secret.reads == 1

    secret.fail = None
    assert (await store.get(REF)).token == "t0k3n"
    assert secret.reads == 2
