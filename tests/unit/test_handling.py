"""The Kubernetes-side handler work (handling.py) with a fake Kube, a fake Zomro and kopf's
own Patch: what goes into status, when an Event is posted, what the resync leaves alone."""

from __future__ import annotations

import base64
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import pytest
from fake_zomro import FakeZomro

from zomro_backup_operator import handling
from zomro_backup_operator.claims import ClaimKey
from zomro_backup_operator.handling import HandlerCall
from zomro_backup_operator.runtime import ClientPool, Runtime
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.zomro.client import ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.errors import ServerError
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday

INSTANCE = "5203773"
SPEC = {
    "instanceId": INSTANCE,
    "days": ["Monday"],
    "time": "02:01",
    "credentialsSecretRef": {"name": "zomro"},
}
CREDENTIALS = Credentials(username="alice", password="s3cret-pass")


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


@dataclass
class FakeKube:
    """Secrets by (namespace, name), and every mid-handler status write."""

    secrets: dict[tuple[str, str], Mapping[str, str]] = field(default_factory=dict)
    status_writes: list[Mapping[str, Any]] = field(default_factory=list)

    def read_secret_data(self, namespace: str, name: str) -> Mapping[str, str] | None:
        return self.secrets.get((namespace, name))

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        self.status_writes.append(dict(status))


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
        )

    def resource(
        self,
        status: Mapping[str, Any] | None = None,
        *,
        generation: int = 1,
        spec: Mapping[str, Any] = SPEC,
        claims: Mapping[ClaimKey, Iterable[str]] | None = None,
    ) -> HandlerCall:
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
        )

    def listed(self, name: str = "nightly", at: str = "02:01") -> str:
        spec = ScheduleSpec(name=name, days=frozenset({Weekday.MONDAY}), time=at)
        return self.zomro.add(INSTANCE, spec).id


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> World:
    made = World()

    def event(_body: Any, *, type: str, reason: str, message: str) -> None:
        made.events.append((type, reason, message))

    monkeypatch.setattr(kopf, "event", event)
    return made


def _ready(patch: Mapping[str, Any]) -> Mapping[str, Any]:
    return next(c for c in patch["conditions"] if c["type"] == "Ready")


async def test_a_create_records_its_intent_before_zomro_and_its_id_in_the_handlers_patch(
    world: World,
) -> None:
    res = world.resource()
    await handling.ensure(world.rt, res, retry=0)

    [intent] = world.kube.status_writes
    assert intent["pendingCreate"]["name"] == "nightly"
    assert _ready(intent)["reason"] == "Creating"
    status = res.patch["status"]
    [schedule_id] = world.zomro.schedules
    assert status["scheduleId"] == schedule_id
    assert status["scheduleName"] == "nightly"
    assert status["pendingCreate"] is None
    assert status["observedGeneration"] == 1
    assert _ready(status)["status"] == "True"
    assert [(kind, reason) for kind, reason, _ in world.events] == [("Normal", "Created")]


async def test_a_failure_posts_its_warning_event_only_when_the_condition_changes(
    world: World,
) -> None:
    del world.kube.secrets[("team", "zomro")]
    first = world.resource()
    with pytest.raises(kopf.TemporaryError):
        await handling.ensure(world.rt, first, retry=0)
    assert _ready(first.patch["status"])["reason"] == "CredentialsNotFound"
    assert [(kind, reason) for kind, reason, _ in world.events] == [
        ("Warning", "CredentialsNotFound")
    ]

    again = world.resource(status=first.patch["status"])
    with pytest.raises(kopf.TemporaryError):
        await handling.ensure(world.rt, again, retry=1)
    assert "conditions" not in (again.patch.get("status") or {})
    assert len(world.events) == 1


@pytest.mark.parametrize(
    ("status", "generation", "deleting"),
    [
        ({"observedGeneration": 1}, 1, False),  # never reached Zomro
        ({"scheduleId": "14", "observedGeneration": 1}, 2, False),  # a handler is still due
        (
            {
                "scheduleId": "14",
                "observedGeneration": 1,
                "conditions": [{"type": "Ready", "status": "False", "reason": "InvalidSpec"}],
            },
            1,
            False,
        ),
        ({"scheduleId": "14", "observedGeneration": 1}, 1, True),
    ],
    ids=["no-schedule-id", "generation-behind", "invalid-spec", "deleting"],
)
async def test_the_resync_leaves_alone_what_a_handler_has_yet_to_finish(
    world: World, status: Mapping[str, Any], generation: int, deleting: bool
) -> None:
    res = world.resource(status, generation=generation)
    await handling.resync(world.rt, res, deleting=deleting)
    assert world.zomro.calls == []
    assert dict(res.patch) == {}
    assert world.events == []


async def test_the_resync_puts_back_a_schedule_changed_at_zomro_with_a_drift_event(
    world: World,
) -> None:
    schedule_id = world.listed(at="05:00")
    res = world.resource({"scheduleId": schedule_id, "observedGeneration": 1})
    await handling.resync(world.rt, res, deleting=False)
    assert world.zomro.schedules[schedule_id].time == "02:01"
    assert [reason for _, reason, _ in world.events] == ["DriftCorrected"]


async def test_a_deletion_zomro_cannot_confirm_says_that_the_deletion_waits(
    world: World,
) -> None:
    schedule_id = world.listed()
    world.zomro.fail["delete_schedule"] = ServerError("HTTP 503")
    res = world.resource({"scheduleId": schedule_id, "observedGeneration": 1})
    with pytest.raises(kopf.TemporaryError):
        await handling.remove(world.rt, res, retry=0)
    ready = _ready(res.patch["status"])
    assert ready["reason"] == "ZomroUnavailable"
    assert ready["message"].startswith("deletion waits until Zomro confirms it: ")
    assert schedule_id in world.zomro.schedules


async def test_a_schedule_gone_since_the_cached_listing_is_looked_up_again_and_recreated(
    world: World,
) -> None:
    stale = world.listed(at="05:00")
    slot = world.rt.slots.get(CREDENTIALS.fingerprint, INSTANCE)
    slot.listed.value, slot.listed.fetched_at = list(world.zomro.schedules.values()), time.time()
    del world.zomro.schedules[stale]  # removed at Zomro after our last listing

    res = world.resource({"scheduleId": stale, "observedGeneration": 1})
    await handling.ensure(world.rt, res, retry=0)

    assert world.zomro.calls.count("list_schedules") == 1  # the second look, not the cache
    assert "update_schedule" in world.zomro.calls
    [recreated] = world.zomro.schedules
    assert res.patch["status"]["scheduleId"] == recreated != stale
