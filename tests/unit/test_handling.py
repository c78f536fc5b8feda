"""The Kubernetes-side handler work (handling.py) with a fake Kube, a fake Zomro and kopf's
own Patch: what goes into status, when an Event is posted, what the resync leaves alone."""

from __future__ import annotations

import base64
import datetime as dt
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import kopf
import pytest
from fake_zomro import FakeZomro
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import PROVIDER_ZONE, READ_AT

from zomro_backup_operator import handling
from zomro_backup_operator.claims import ClaimKey
from zomro_backup_operator.clock import Clock
from zomro_backup_operator.handling import HandlerCall
from zomro_backup_operator.kube import Kube, StatusChangedError
from zomro_backup_operator.runtime import ClientPool, Runtime
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.time_zones import parse_zone, provider_schedule
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
    versions: list[str | None] = field(default_factory=list)
    """The resourceVersion each status write was conditional on (None: unconditional)."""
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
    ) -> str:
        self.versions.append(resource_version)
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


async def test_the_intent_to_create_is_written_only_onto_the_status_it_was_decided_on(
    world: World,
) -> None:
    res = world.resource(resource_version="7")
    await handling.ensure(world.rt, res, retry=0)
    assert world.kube.versions == ["7"]


async def test_a_create_decided_on_a_status_changed_since_is_not_sent_and_writes_nothing(
    world: World,
) -> None:
    # Another operator on the namespace recorded its create of this resource first.
    world.kube.current = "8"
    res = world.resource(resource_version="7")
    with pytest.raises(kopf.TemporaryError) as raised:
        await handling.ensure(world.rt, res, retry=0)
    assert "Creating" in str(raised.value)
    assert world.zomro.calls == ["list_schedules"]
    assert world.zomro.schedules == {}
    assert world.kube.status_writes == []
    assert dict(res.patch) == {}  # its status is the winner's to write
    assert world.events == []


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


ZONED = {**SPEC, "days": ["Monday"], "time": "20:00", "timeZone": "America/New_York"}
"""Monday 20:00 in New York: Tuesday 03:00 in Kyiv in winter, 02:00 between the US and the EU
spring changes (8 to 29 March 2026), 03:00 again after."""


def _status_after(res: HandlerCall) -> dict[str, Any]:
    return {**res.status, **(res.patch.get("status") or {})}


async def test_a_time_zone_puts_the_converted_schedule_at_zomro_and_in_status(
    world: World,
) -> None:
    res = world.resource(spec=ZONED)
    await handling.ensure(world.rt, res, retry=0)

    [held] = world.zomro.schedules.values()
    assert (held.days, held.time) == (frozenset({Weekday.TUESDAY}), "03:00")
    status = res.patch["status"]
    assert status["providerDays"] == ["Tuesday"]
    assert status["providerTime"] == "03:00"
    assert status["nextRunTime"] == "2026-01-13T01:00:00Z"
    assert "(Monday at 20:00 America/New_York)" in _ready(status)["message"]


async def test_without_a_time_zone_status_shows_the_spec_and_the_next_run_on_zomros_clock(
    world: World,
) -> None:
    res = world.resource()
    await handling.ensure(world.rt, res, retry=0)

    [held] = world.zomro.schedules.values()
    assert (held.days, held.time) == (frozenset({Weekday.MONDAY}), "02:01")
    status = res.patch["status"]
    assert (status["providerDays"], status["providerTime"]) == (["Monday"], "02:01")
    assert status["nextRunTime"] == "2026-01-12T00:01:00Z"  # Monday 02:01 at UTC+2


async def test_an_unknown_time_zone_is_invalid_spec_and_zomro_is_never_asked(
    world: World,
) -> None:
    res = world.resource(spec={**SPEC, "timeZone": "Mars/Olympus_Mons"})
    with pytest.raises(kopf.PermanentError):
        await handling.ensure(world.rt, res, retry=0)
    ready = _ready(res.patch["status"])
    assert ready["reason"] == "InvalidSpec"
    assert "spec.timeZone" in ready["message"]
    assert world.zomro.calls == []


async def _synced_before_a_transition(world: World) -> tuple[dict[str, Any], dt.datetime]:
    """ZONED created on 1 March 2026: its status, and when its conversion changes next."""
    world.now = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    res = world.resource(spec=ZONED)
    await handling.ensure(world.rt, res, retry=0)
    status = _status_after(res)
    change = handling._changes_at(world.rt, world.resource(status, spec=ZONED))
    assert change is not None
    return status, change


async def test_the_drift_check_after_a_transition_moves_the_schedule_with_an_event(
    world: World,
) -> None:
    status, change = await _synced_before_a_transition(world)

    world.now = change - dt.timedelta(minutes=1)
    before = world.resource(status, spec=ZONED)
    await handling.resync(world.rt, before, deleting=False)
    # Not yet: Zomro holds what it must until changes_at (only the next run moved on).
    assert set(before.patch.get("status") or {}) <= {"nextRunTime"}
    assert world.zomro.calls.count("update_schedule") == 0

    world.now = change
    after = world.resource(status, spec=ZONED)
    await handling.resync(world.rt, after, deleting=False)

    [held] = world.zomro.schedules.values()
    assert (held.days, held.time) == (frozenset({Weekday.TUESDAY}), "02:00")
    assert after.patch["status"]["providerTime"] == "02:00"
    assert [reason for _, reason, _ in world.events] == ["Created", "ScheduleShifted"]


async def test_a_change_of_time_zone_changes_the_same_schedule_in_place(world: World) -> None:
    res = world.resource(spec=ZONED)
    await handling.ensure(world.rt, res, retry=0)
    [schedule_id] = world.zomro.schedules

    moved = world.resource(_status_after(res), spec={**ZONED, "timeZone": "UTC"}, generation=2)
    await handling.ensure(world.rt, moved, retry=0)

    [held] = world.zomro.schedules.values()
    assert held.id == schedule_id
    assert (held.days, held.time) == (frozenset({Weekday.MONDAY}), "22:00")
    assert [reason for _, reason, _ in world.events] == ["Created", "Updated"]


async def test_suspending_removes_the_schedule_and_resuming_creates_it_once(
    world: World,
) -> None:
    res = world.resource()
    await handling.ensure(world.rt, res, retry=0)

    suspended = world.resource(_status_after(res), spec={**SPEC, "suspend": True}, generation=2)
    await handling.ensure(world.rt, suspended, retry=0)
    assert world.zomro.schedules == {}
    status = suspended.patch["status"]
    assert status["scheduleId"] is None
    assert status["nextRunTime"] is None
    assert _ready(status)["reason"] == "Suspended"

    resumed = world.resource(_status_after(suspended), spec=SPEC, generation=3)
    await handling.ensure(world.rt, resumed, retry=0)
    assert world.zomro.calls.count("create_schedules") == 2
    [held] = world.zomro.schedules
    assert resumed.patch["status"]["scheduleId"] == held
    assert [reason for _, reason, _ in world.events] == ["Created", "Suspended", "Created"]


async def test_a_suspended_resources_drift_check_asks_zomro_nothing_when_nothing_is_recorded(
    world: World,
) -> None:
    suspended = world.resource(spec={**SPEC, "suspend": True})
    await handling.ensure(world.rt, suspended, retry=0)
    idle = world.resource(_status_after(suspended), spec={**SPEC, "suspend": True})
    world.listed()  # a schedule with the resource's name, which it never made: not its own

    await handling.resync(world.rt, idle, deleting=False)

    assert world.zomro.calls == []
    assert dict(idle.patch) == {}


async def test_a_suspended_resources_drift_check_removes_what_an_interrupted_resume_made(
    world: World,
) -> None:
    # A resume recorded its create and died; the resource was suspended again meanwhile.
    resumed = world.resource()
    await handling.ensure(world.rt, resumed, retry=0)
    [intent] = world.kube.status_writes
    status = {
        **_status_after(world.resource(spec={**SPEC, "suspend": True})),
        "pendingCreate": intent["pendingCreate"],
        "observedGeneration": 1,
        "conditions": [{"type": "Ready", "status": "False", "reason": "Suspended"}],
    }
    again = world.resource(status, spec={**SPEC, "suspend": True})

    await handling.resync(world.rt, again, deleting=False)

    assert world.zomro.schedules == {}
    assert again.patch["status"]["pendingCreate"] is None


async def test_a_suspended_resource_is_deleted_without_asking_zomro(world: World) -> None:
    suspended = world.resource(spec={**SPEC, "suspend": True})
    await handling.ensure(world.rt, suspended, retry=0)
    calls = len(world.zomro.calls)

    await handling.remove(world.rt, world.resource(_status_after(suspended)), retry=0)

    assert len(world.zomro.calls) == calls
    assert "uid-1" in world.rt.deleted


class Sleeper:
    """kopf's ``stopped.wait`` against a fake wall clock and monotonic time, moved together."""

    def __init__(self, world: World, *, stop_after: float | None = None) -> None:
        self.world = world
        self.mono = 0.0
        self.stop_after = stop_after
        self.slept = 0.0

    async def wait(self, seconds: float) -> bool:
        self.mono += seconds
        self.slept += seconds
        self.world.now += dt.timedelta(seconds=seconds)
        return self.stop_after is not None and self.slept >= self.stop_after


async def test_the_drift_check_wakes_at_the_transition_when_it_comes_before_the_period(
    world: World,
) -> None:
    sleeper = Sleeper(world)
    change = world.now + dt.timedelta(seconds=40)

    stopped = await handling.sleep_until_next_pass(
        world.rt.clock, 300.0, change, sleeper.wait, monotonic=lambda: sleeper.mono
    )

    assert not stopped
    assert world.now == change


async def test_the_drift_check_wakes_after_one_period_without_a_transition(world: World) -> None:
    sleeper = Sleeper(world)
    far = world.now + dt.timedelta(days=30)
    for change in (None, far):
        sleeper.slept = 0.0
        await handling.sleep_until_next_pass(
            world.rt.clock, 300.0, change, sleeper.wait, monotonic=lambda: sleeper.mono
        )
        assert sleeper.slept == pytest.approx(300.0)


async def test_moving_the_operators_clock_back_does_not_hold_the_drift_check_up(
    world: World,
) -> None:
    sleeper = Sleeper(world)
    base = sleeper.wait

    async def jump_back_then_sleep(seconds: float) -> bool:
        if sleeper.slept == 0.0:
            world.now -= dt.timedelta(days=3)
        return await base(min(seconds, 1.0))

    await handling.sleep_until_next_pass(
        world.rt.clock, 300.0, None, jump_back_then_sleep, monotonic=lambda: sleeper.mono
    )
    assert sleeper.slept == pytest.approx(300.0)


async def test_a_stopped_daemon_ends_its_wait(world: World) -> None:
    sleeper = Sleeper(world, stop_after=10.0)
    assert await handling.sleep_until_next_pass(
        world.rt.clock, 300.0, None, sleeper.wait, monotonic=lambda: sleeper.mono
    )


def test_the_transition_the_daemon_waits_for_is_the_one_the_conversion_gives(
    world: World,
) -> None:
    held = provider_schedule(
        frozenset({Weekday.MONDAY}),
        "20:00",
        parse_zone("America/New_York", "spec.timeZone"),
        PROVIDER_ZONE,
        world.now,
    )
    assert handling._changes_at(world.rt, world.resource(spec=ZONED)) == held.changes_at
    assert handling._changes_at(world.rt, world.resource()) is None


async def test_the_drift_loop_moves_the_schedule_at_the_transition_and_writes_its_status(
    world: World,
) -> None:
    status, change = await _synced_before_a_transition(world)
    world.now = change - dt.timedelta(seconds=10)
    world.kube.status_writes.clear()
    # Stops 50 s after the transition: long before a drift period (150-300 s) could end.
    sleeper = Sleeper(world, stop_after=60.0)

    await handling.keep_in_step(
        world.rt, lambda: (world.resource(status, spec=ZONED), False), sleeper.wait
    )

    [write] = world.kube.status_writes
    assert write["providerTime"] == "02:00"
    assert world.zomro.calls.count("update_schedule") == 1
    assert [reason for _, reason, _ in world.events][-1] == "ScheduleShifted"


def test_a_conditional_status_write_names_the_version_and_a_conflict_says_it_changed() -> None:
    sent: list[Mapping[str, Any]] = []

    class Custom:
        def patch_namespaced_custom_object_status(self, *args: Any) -> Mapping[str, Any]:
            body = args[-1]
            sent.append(body)
            if body["metadata"]["resourceVersion"] != "8":
                raise ApiException(status=409, reason="Conflict")
            return {"metadata": {"resourceVersion": "9"}}

    kube = Kube(client.ApiClient())
    kube._custom = Custom()  # type: ignore[assignment]

    assert kube.patch_status("team", "nightly", {"a": 1}, resource_version="8") == "9"
    with pytest.raises(StatusChangedError):
        kube.patch_status("team", "nightly", {"a": 2}, resource_version="7")
    assert sent == [
        {"status": {"a": 1}, "metadata": {"resourceVersion": "8"}},
        {"status": {"a": 2}, "metadata": {"resourceVersion": "7"}},
    ]
