"""Everything the handlers share, built once at start-up and kept in kopf's memo."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from zomro_backup_operator import metrics
from zomro_backup_operator.credentials import CredentialStore
from zomro_backup_operator.kube import Kube
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.state import Claims, Recent, Slots
from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials


class ClientPool:
    """One Zomro client (session, rate limit, throttle pause) per credential set."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._options = ClientOptions(
            timeout=settings.timeout_seconds,
            max_requests_per_second=settings.max_requests_per_second,
            max_in_flight=settings.max_in_flight,
        )
        self._clients: dict[str, ZomroClient] = {}

    def get(self, credentials: Credentials) -> ZomroClient:
        client = self._clients.get(credentials.fingerprint)
        if client is None:
            client = ZomroClient(
                credentials,
                base_url=self._settings.api_url,
                options=self._options,
                on_request=metrics.observe_request,
            )
            self._clients[credentials.fingerprint] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), {}
        await asyncio.gather(*(client.aclose() for client in clients), return_exceptions=True)


@dataclass
class Runtime:
    settings: Settings
    kube: Kube
    credentials: CredentialStore
    clients: ClientPool
    slots: Slots = field(default_factory=Slots)
    claims: Claims = field(default_factory=Claims)
    ready: metrics.ReadyTracker = field(default_factory=metrics.ReadyTracker)
    deleted: Recent = field(default_factory=Recent)
    """uids whose deletion this process completed: kopf may run the deletion handler once more
    on an event that was already queued when the finalizer came off."""

    @classmethod
    def build(cls, settings: Settings, kube: Kube | None = None) -> Runtime:
        kube = kube or Kube()
        return cls(
            settings=settings,
            kube=kube,
            credentials=CredentialStore(
                kube.read_secret_data, default=settings.default_credentials
            ),
            clients=ClientPool(settings),
        )


def of(memo: Any) -> Runtime:
    runtime = memo.runtime
    assert isinstance(runtime, Runtime)
    return runtime
