"""The Kubernetes-side handler work (handling.py) with a fake Kube, a fake Zomro and kopf's
own Patch: what goes into status, when an Event is posted, what the resync leaves alone."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Mapping
from typing import Any

import kopf
import pytest
from handler_world import (
    CREDENTIALS,
    INSTANCE,
    SPEC,
    ZONED,
    World,
    status_after,
    synced_before_a_transition,
)
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from zomro_backup_operator import handling
from zomro_backup_operator.kube import Kube, StatusChangedError
from zomro_backup_operator.zomro.errors import ServerError
from zomro_backup_operator.zomro.models import Weekday


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
    world.zomro.fail["delete_schedules"] = ServerError("HTTP 503")
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


async def test_the_drift_check_after_a_transition_moves_the_schedule_with_an_event(
    world: World,
) -> None:
    status, change = await synced_before_a_transition(world)

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

    moved = world.resource(status_after(res), spec={**ZONED, "timeZone": "UTC"}, generation=2)
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

    suspended = world.resource(status_after(res), spec={**SPEC, "suspend": True}, generation=2)
    await handling.ensure(world.rt, suspended, retry=0)
    assert world.zomro.schedules == {}
    status = suspended.patch["status"]
    assert status["scheduleId"] is None
    assert status["nextRunTime"] is None
    assert _ready(status)["reason"] == "Suspended"

    resumed = world.resource(status_after(suspended), spec=SPEC, generation=3)
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
    idle = world.resource(status_after(suspended), spec={**SPEC, "suspend": True})
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
        **status_after(world.resource(spec={**SPEC, "suspend": True})),
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

    await handling.remove(world.rt, world.resource(status_after(suspended)), retry=0)

    assert len(world.zomro.calls) == calls
    assert "uid-1" in world.rt.deleted


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


async def test_only_a_resource_in_sync_at_its_generation_is_settled(world: World) -> None:
    res = world.resource()
    await handling.ensure(world.rt, res, retry=0)
    synced = status_after(res)
    assert world.resource(synced).settled()

    recreating = {"name": "nightly", "startedAt": "2026-12-01T10:00:00Z", "days": ["Monday"]}
    unsettled = [
        world.resource(synced, generation=2),  # a spec newer than the status
        world.resource({k: v for k, v in synced.items() if k != "scheduleId"}),
        world.resource({**synced, "pendingCreate": recreating}),  # a recreate under way
        world.resource({**synced, "scheduleId": "14, 15"}),  # not a status the operator wrote
        world.resource(synced, spec={**SPEC, "suspend": True}),
        world.resource(
            {**synced, "conditions": [{"type": "Ready", "status": "False", "reason": "AuthFailed"}]}
        ),
    ]
    assert [candidate.settled() for candidate in unsettled] == [False] * len(unsettled)
