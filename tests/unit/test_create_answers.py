"""A create's answer handed over by its handler (create_answers.py): the outcome reaches status
and the Event as the handler would have written them, a failure is retried after its backoff,
and nothing is retried once kopf's handlers own the resource again."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, cast

import kopf
import pytest
from handler_world import CREDENTIALS, INSTANCE, SPEC, World, status_after

from zomro_backup_operator import handling
from zomro_backup_operator.create_answers import CreateAnswers
from zomro_backup_operator.handling import HandlerCall
from zomro_backup_operator.zomro.errors import OperationInProgressError


def _ready(status: Mapping[str, Any]) -> Mapping[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == "Ready")


def _never_waiting(world: World) -> None:
    world.rt.settings = dataclasses.replace(world.rt.settings, create_wait_seconds=0.0)


class Sleeps:
    """The hand-over's sleeps between retries, recorded and not slept."""

    def __init__(self) -> None:
        self.seconds: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.seconds.append(seconds)


async def _handed_over(world: World) -> CreateAnswers:
    """A create of the resource whose answer its handler handed over (not settled yet)."""
    _never_waiting(world)
    answers = CreateAnswers(world.rt, lambda res: None)
    await handling.ensure(world.rt, world.resource(), 0, answers)
    return answers


async def _settled(answers: CreateAnswers) -> None:
    while answers._tasks:
        await next(iter(answers._tasks))


async def test_an_answer_that_outlasts_the_wait_reaches_status_and_the_event_after_the_handler(
    world: World,
) -> None:
    _never_waiting(world)
    answers = CreateAnswers(world.rt, lambda res: None)
    res = world.resource()
    kopfs_patch = res.patch

    await handling.ensure(world.rt, res, 0, answers)

    assert dict(kopfs_patch) == {}  # the handler ended before the answer: nothing for kopf
    assert answers.pending == 1
    await _settled(answers)
    intent, outcome = world.kube.status_writes
    assert intent["pendingCreate"]["name"] == "nightly"
    [schedule_id] = world.zomro.schedules
    assert outcome["scheduleId"] == schedule_id
    assert outcome["pendingCreate"] is None
    assert _ready(outcome)["status"] == "True"
    assert world.kube.uids == [None, "uid-1"]  # the outcome only onto this very object
    assert [reason for _, reason, _ in world.events] == ["Created"]


async def test_an_answer_within_the_wait_goes_into_the_handlers_patch_as_before(
    world: World,
) -> None:
    answers = CreateAnswers(world.rt, lambda res: None)
    res = world.resource()

    await handling.ensure(world.rt, res, 0, answers)

    assert answers.pending == 0
    assert len(world.kube.status_writes) == 1  # the intent; the outcome is kopf's to write
    assert _ready(res.patch["status"])["status"] == "True"


async def test_a_refused_create_handed_over_is_retried_after_its_backoff_and_then_made(
    world: World,
) -> None:
    _never_waiting(world)
    sleeps = Sleeps()
    latest: list[HandlerCall] = []

    def current(res: HandlerCall) -> HandlerCall:
        # The index shows what was written so far, at the API server's version.
        status: dict[str, Any] = {}
        for write in world.kube.status_writes:
            status.update(write)
        latest.append(world.resource(status))
        return latest[-1]

    answers = CreateAnswers(world.rt, current, sleep=sleeps)
    world.zomro.fail["create_schedules"] = OperationInProgressError("busy")

    await handling.ensure(world.rt, world.resource(), 0, answers)
    await _settled(answers)

    refused = world.kube.status_writes[1]
    assert refused["pendingCreate"] is None  # nothing was made
    assert _ready(refused)["reason"] == "ZomroUnavailable"
    assert len(sleeps.seconds) == 1
    assert sleeps.seconds[0] >= 5.0
    assert world.zomro.batches == [["nightly"], ["nightly"]]
    [schedule_id] = world.zomro.schedules
    final = world.kube.status_writes[-1]
    assert final["scheduleId"] == schedule_id
    assert _ready(final)["status"] == "True"
    assert [reason for _, reason, _ in world.events] == ["ZomroUnavailable", "Created"]


async def test_a_failed_create_is_not_retried_once_the_resource_changed_or_went(
    world: World,
) -> None:
    _never_waiting(world)
    sleeps = Sleeps()
    answers = CreateAnswers(world.rt, lambda res: None, sleep=sleeps)
    world.zomro.fail["create_schedules"] = OperationInProgressError("busy")

    await handling.ensure(world.rt, world.resource(), 0, answers)
    await _settled(answers)

    assert len(sleeps.seconds) == 1
    assert world.zomro.batches == [["nightly"]]  # kopf's handler of the new generation decides


async def test_an_outcome_whose_write_failed_is_decided_again_and_the_schedule_adopted(
    world: World,
) -> None:
    _never_waiting(world)
    sleeps = Sleeps()
    writes = world.kube.patch_status

    failed: list[bool] = []

    def flaky(*args: Any, **kwargs: Any) -> str:
        if len(world.kube.status_writes) == 1 and not failed:
            failed.append(True)
            raise ConnectionError("the API server went away")
        return writes(*args, **kwargs)

    world.kube.patch_status = flaky  # type: ignore[method-assign]

    def current(res: HandlerCall) -> HandlerCall:
        return world.resource(world.kube.status_writes[0])

    answers = CreateAnswers(world.rt, current, sleep=sleeps)
    await handling.ensure(world.rt, world.resource(), 0, answers)
    await _settled(answers)

    assert sleeps.seconds == [5.0]
    [schedule_id] = world.zomro.schedules  # found again, never made twice
    assert world.kube.status_writes[-1]["scheduleId"] == schedule_id
    assert world.zomro.batches == [["nightly"]]


def test_a_handlers_view_keeps_no_reference_to_kopfs_body() -> None:
    raw: dict[str, Any] = {
        "apiVersion": "zomro.com/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {
            "namespace": "team",
            "name": "nightly",
            "uid": "uid-1",
            "generation": 1,
            "managedFields": [{"manager": "kubectl"}] * 50,
        },
        "spec": dict(SPEC),
        "status": {},
    }
    body = kopf.Body(cast(kopf.RawBody, raw))
    kwargs = {
        "body": body,
        "meta": body.meta,
        "spec": body.spec,
        "status": body.status,
        "uid": "uid-1",
        "namespace": "team",
        "name": "nightly",
        "patch": kopf.Patch(),
        "claims": {},
    }

    res = HandlerCall.from_kopf(kwargs, "claims")

    assert dict(res.body) == {
        "apiVersion": "zomro.com/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {"namespace": "team", "name": "nightly", "uid": "uid-1"},
    }
    assert type(res.spec) is dict
    assert res.spec == SPEC
    assert status_after(res) == {}


async def test_the_handler_run_again_while_its_answer_is_awaited_ends_without_a_retry(
    world: World,
) -> None:
    # kopf runs a new resource's handler again on a watch event older than its own last patch
    # when the watch lags: that run must not hold a kopf worker in retries until the answer.
    answers = await _handed_over(world)
    again = world.resource(world.kube.status_writes[0])

    await handling.ensure(world.rt, again, 0, answers, may_defer=True)

    assert dict(again.patch) == {}
    await _settled(answers)
    assert world.zomro.batches == [["nightly"]]
    assert [reason for _, reason, _ in world.events] == ["Created"]
    assert not answers.awaits("uid-1", 1)


async def test_a_run_for_a_newer_generation_waits_for_the_older_create_with_kopfs_retry(
    world: World,
) -> None:
    answers = await _handed_over(world)
    changed = world.resource(world.kube.status_writes[0], generation=2)

    with pytest.raises(kopf.TemporaryError, match="Creating"):
        await handling.ensure(world.rt, changed, 0, answers, may_defer=True)
    await _settled(answers)


async def test_a_handler_whose_instance_is_busy_deciding_runs_later_in_the_background(
    world: World,
) -> None:
    answers = CreateAnswers(world.rt, lambda res: world.resource())  # the index, now
    slot = world.rt.slots.get(CREDENTIALS.fingerprint, INSTANCE)
    res = world.resource()
    kopfs_patch = res.patch

    async with slot.lock:  # another resource's decision on the instance
        await handling.ensure(world.rt, res, 0, answers, may_defer=True)
        assert world.zomro.calls == []
        assert answers.awaits("uid-1", 1)
        world.kube.current = "8"  # kopf's patch at the handler's end
    await _settled(answers)

    assert dict(kopfs_patch) == {}
    assert world.kube.versions[0] == "8"  # decided on the resource as it was in its turn
    intent, outcome = world.kube.status_writes
    assert intent["pendingCreate"]["name"] == "nightly"
    assert outcome["scheduleId"] == next(iter(world.zomro.schedules))
    assert [reason for _, reason, _ in world.events] == ["Created"]
    assert not answers.awaits("uid-1", 1)
