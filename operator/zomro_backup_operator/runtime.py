"""Everything the handlers share, built once at start-up and kept in kopf's memo."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any

from zomro_backup_operator import metrics
from zomro_backup_operator.claims import Claims
from zomro_backup_operator.clock import Clock
from zomro_backup_operator.instance_slot import InstanceSlot, Slots
from zomro_backup_operator.kube import Kube
from zomro_backup_operator.secret_store import CredentialStore
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials


class ClientPool:
    """One Zomro client (session, rate limit, throttle pause) per credential set.

    A client whose credential set is no longer in use (its Secret was rotated) is retired: it
    leaves the pool at once and is closed as soon as no handler holds a lease on it.
    ``may_write`` is every client's write-permission hook (the leader-election fence)."""

    def __init__(self, settings: Settings, may_write: Callable[[], bool] | None = None) -> None:
        self._settings = settings
        self._may_write = may_write
        self._options = ClientOptions(
            timeout=settings.timeout_seconds,
            max_requests_per_second=settings.max_requests_per_second,
            max_in_flight=settings.max_in_flight,
        )
        self._clients: dict[str, ZomroClient] = {}
        self._leases: Counter[ZomroClient] = Counter()
        self._retired: set[ZomroClient] = set()

    def get(self, credentials: Credentials) -> ZomroClient:
        client = self._clients.get(credentials.fingerprint)
        if client is None:
            client = ZomroClient(
                credentials,
                base_url=self._settings.api_url,
                options=self._options,
                on_request=metrics.observe_request,
                may_write=self._may_write,
            )
            self._clients[credentials.fingerprint] = client
        return client

    @contextlib.asynccontextmanager
    async def lease(self, credentials: Credentials) -> AsyncIterator[ZomroClient]:
        """The pool's client for ``credentials``, kept open until the lease ends."""
        client = self.get(credentials)
        self._leases[client] += 1
        try:
            yield client
        finally:
            self._leases[client] -= 1
            if not self._leases[client]:
                del self._leases[client]
                if client in self._retired:
                    self._retired.discard(client)
                    await client.aclose()

    async def retire(self, fingerprint: str) -> None:
        """Take the credential set's client out of the pool; close it once nobody leases it."""
        client = self._clients.pop(fingerprint, None)
        if client is None:
            return
        if self._leases[client]:
            self._retired.add(client)
        else:
            del self._leases[client]
            await client.aclose()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)


class Recent:
    """A bounded set of recently seen keys (oldest forgotten first)."""

    def __init__(self, size: int = 10_000) -> None:
        self._size = size
        self._keys: dict[str, None] = {}

    def add(self, key: str) -> None:
        self._keys.pop(key, None)
        self._keys[key] = None
        if len(self._keys) > self._size:
            del self._keys[next(iter(self._keys))]

    def __contains__(self, key: object) -> bool:
        return key in self._keys


@dataclass
class Runtime:
    settings: Settings
    kube: Kube
    credentials: CredentialStore
    clients: ClientPool
    clock: Clock = field(default_factory=Clock)
    slots: Slots = field(default_factory=Slots)
    claims: Claims = field(default_factory=Claims)
    ready: metrics.ReadyTracker = field(default_factory=metrics.ReadyTracker)
    backups: metrics.BackupTracker = field(default_factory=metrics.BackupTracker)
    deleted: Recent = field(default_factory=Recent)
    """uids whose deletion this process completed: kopf may run the deletion handler once more
    on an event that was already queued when the finalizer came off."""

    @classmethod
    def build(
        cls,
        settings: Settings,
        kube: Kube | None = None,
        *,
        may_write: Callable[[], bool] | None = None,
    ) -> Runtime:
        """``may_write`` (the leader-election fence) is asked before every Zomro write and every
        status write that goes through ``kube``; None: always allowed (``--standalone``)."""
        kube = kube or Kube(may_write=may_write)
        runtime = cls(
            settings=settings,
            kube=kube,
            credentials=CredentialStore(
                kube.read_secret_data, default=settings.default_credentials
            ),
            clients=ClientPool(settings, may_write),
            clock=Clock(settings.clock_offset_file),
        )
        runtime.clock.now()  # a malformed offset file fails the start, naming the setting
        runtime.credentials.on_replaced = runtime.retire
        return runtime

    @contextlib.asynccontextmanager
    async def zomro(
        self, namespace: str, secret_name: str | None, instance_id: str, *, deleting: bool
    ) -> AsyncIterator[tuple[ZomroClient, InstanceSlot]]:
        """The client for a resource's credentials (leased until the block ends) and the slot of
        its instance under them. ``deleting``: a Secret since removed still yields the credentials
        last read from it, so that a deletion can finish."""
        ref = self.credentials.ref_for(namespace, secret_name)
        credentials = await self.credentials.get(ref, allow_last_known=deleting)
        async with self.clients.lease(credentials) as client:
            yield client, self.slots.get(credentials.fingerprint, instance_id)

    async def retire(self, replaced: Credentials) -> None:
        """A Secret now holds other credentials: unless another Secret still holds the old ones,
        drop their HTTP client (closed when its last handler is done) and their idle slots."""
        if self.credentials.in_use(replaced.fingerprint):
            return
        self.slots.retire(replaced.fingerprint)
        await self.clients.retire(replaced.fingerprint)


def of(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime
