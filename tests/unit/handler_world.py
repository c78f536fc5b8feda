"""A fake cluster and a fake Zomro around the handler work: the ``World`` the unit tests of
handling.py, backup_checks.py and instance_loops.py run in (the ``world`` fixture is in
conftest.py)."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
from fake_zomro import FakeZomro
from support import READ_AT

from zomro_backup_operator import handling
from zomro_backup_operator.claims import ClaimKey
from zomro_backup_operator.clock import Clock
from zomro_backup_operator.handling import HandlerCall
from zomro_backup_operator.instance_loops import Tracked, changes_at
from zomro_backup_operator.kube import StatusChangedError
from zomro_backup_operator.runtime import ClientPool, Runtime
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.zomro.client import ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday

INSTANCE = "5203773"
SPEC = {
    "instanceId": INSTANCE,
    "days": ["Monday"],
    "time": "02:01",
    "credentialsSecretRef": {"name": "zomro"},
}
ZONED = {**SPEC, "days": ["Monday"], "time": "20:00", "timeZone": "America/New_York"}
"""Monday 20:00 in New York: Tuesday 03:00 in Kyiv in winter, 02:00 between the US and the EU
spring changes (8 to 29 March 2026), 03:00 again after."""


CREDENTIALS = Credentials(username="alice", password="s3cret-pass")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class FakeKube:
    """Secrets by (namespace, name), and every mid-handler status write."""

    secrets: dict[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    status_writes: list[Mapping[str, Any]] = field(default_factory=list)
    versions: list[str | None] = field(default_factory=list)
    """The resourceVersion each status write was conditional on (None: unconditional)."""
    uids: list[str | None] = field(default_factory=list)
    """The uid each status write was made onto (None: whatever object has the name)."""
    current: str = "7"
    """The resource's resourceVersion at the API server."""

    def read_secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.secrets.get((namespace, name))

    def patch_status(
        self,
        namespace: str,
        name: str,
        status: Mapping[str, Any],
        *,
        resource_version: str | None = None,
        uid: str | None = None,
    ) -> str:
        self.versions.append(resource_version)
        self.uids.append(uid)
        if resource_version not in (None, self.current):
            raise StatusChangedError(f"{namespace}/{name} is no longer at {resource_version}")
        self.status_writes.append(dict(status))
        self.current = str(int(self.current) + 1)
        return self.current


class FakePool(ClientPool):
    """Hands out the one fake Zomro for every credential set."""

    def __init__(self, settings: Settings, zomro: FakeZomro) -> None:
        super().__init__(settings)
        self.zomro = zomro

    def get(self, credentials: Credentials) -> ZomroClient:
        # FakeZomro has the methods the core calls (reconcile.ZomroApi), not the whole client.
        return cast(ZomroClient, self.zomro)


@dataclass
class World:
    zomro: FakeZomro = field(default_factory=FakeZomro)
    kube: FakeKube = field(default_factory=FakeKube)
    events: list[tuple[str, str, str]] = field(default_factory=list)
    now: dt.datetime = READ_AT
    """What the operator's clock reads."""
    rt: Runtime = field(init=False)

    def __post_init__(self) -> None:
        assert CREDENTIALS.username
        assert CREDENTIALS.password
        self.kube.secrets[("team", "zomro")] = {
            "username": _b64(CREDENTIALS.username),
            "password": _b64(CREDENTIALS.password),
        }
        settings = Settings.from_env({})
        built = Runtime.build(settings, kube=cast(Any, self.kube))
        self.rt = Runtime(
            settings=settings,
            kube=built.kube,
            credentials=built.credentials,
            clients=FakePool(settings, self.zomro),
            clock=Clock(wall=lambda: self.now),
        )

    def resource(
        self,
        status: Mapping[str, Any] | None = None,
        *,
        generation: int = 1,
        spec: Mapping[str, Any] = SPEC,
        claims: Mapping[ClaimKey, Iterable[str]] | None = None,
        resource_version: str | None = None,
    ) -> HandlerCall:
        """The resource as kopf hands it over; by default at the API server's current version."""
        return HandlerCall(
            body=kopf.Body({"metadata": {"namespace": "team", "name": "nightly"}}),
            uid="uid-1",
            namespace="team",
            name="nightly",
            generation=generation,
            spec=spec,
            status=dict(status or {}),
            annotations={},
            patch=kopf.Patch(),
            claims_index=claims or {},
            resource_version=resource_version or self.kube.current,
        )

    def tracked(
        self,
        status: Mapping[str, Any] | None = None,
        *,
        generation: int = 1,
        spec: Mapping[str, Any] = SPEC,
        name: str = "nightly",
        deleting: bool = False,
    ) -> Tracked:
        """The resource as the instance loops' index holds it, at the current version."""
        return Tracked(
            api_version="zomro.com/v1alpha1",
            kind="BackupSchedule",
            namespace="team",
            name=name,
            uid=f"uid-{name}",
            generation=generation,
            resource_version=self.kube.current,
            spec=spec,
            status=dict(status or {}),
            annotations={},
            deleting=deleting,
        )

    def listed(self, name: str = "nightly", at: str = "02:01") -> str:
        spec = ScheduleSpec(name=name, days=frozenset({Weekday.MONDAY}), time=at)
        return self.zomro.add(INSTANCE, spec).id


def status_after(res: HandlerCall) -> dict[str, Any]:
    return {**res.status, **(res.patch.get("status") or {})}


async def synced_before_a_transition(world: World) -> tuple[dict[str, Any], dt.datetime]:
    """ZONED created on 1 March 2026: its status, and when its conversion changes next."""
    world.now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    res = world.resource(spec=ZONED)
    await handling.ensure(world.rt, res, retry=0)
    status = status_after(res)
    change = changes_at(world.rt, world.tracked(status, spec=ZONED))
    assert change is not None
    return status, change
