"""The periodic checks, one loop per instance (instance_loops.py), on a fake clock: when a pass
comes, what it checks and writes, how many loops run, and what the index keeps of a resource."""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import replace
from typing import Any

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
from support import PROVIDER_ZONE

from zomro_backup_operator import handling, instance_loops
from zomro_backup_operator.instance_loops import InstanceLoops, Tracked
from zomro_backup_operator.time_zones import parse_zone, provider_schedule
from zomro_backup_operator.zomro.models import Schedule, Weekday


class Sleeper:
    """A wait that moves the world's wall clock and a monotonic clock together."""

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


class Index(dict[str, list[Tracked]]):
    """The ``by_instance`` index as the loops read it: instance id -> resources."""


class Run:
    """Instance loops on fake time: each wait moves the clocks and ages the instance's cached
    listings as much; after ``seconds`` in all the index is emptied, which ends every loop."""

    def __init__(self, world: World, index: Index, seconds: float) -> None:
        self.world, self.index, self.seconds = world, index, seconds
        self.sleeper = Sleeper(world)
        self.loops = InstanceLoops(
            world.rt, wait=self.wait, monotonic=lambda: self.sleeper.mono, spread=lambda a, b: b
        )
        self.slot = world.rt.slots.get(CREDENTIALS.fingerprint, INSTANCE)
        self.ended = asyncio.Event()

    async def wait(self, nudge: asyncio.Event, seconds: float) -> bool:
        await asyncio.sleep(0)
        if nudge.is_set():
            return True
        step = min(seconds, max(self.seconds - self.sleeper.slept, 0.0))
        await self.sleeper.wait(step)
        self.slot.listed.fetched_at -= step
        self.slot.backups_listed.fetched_at -= step
        if self.sleeper.slept >= self.seconds:
            self.index.clear()
            self.ended.set()
            return True
        return False

    async def until_done(self, *instances: str) -> None:
        for instance in instances:
            self.loops.watch({"instanceId": instance}, self.index, {})
        await self.ended.wait()
        await asyncio.gather(*self.loops.tasks())


async def test_a_pass_puts_back_a_schedule_changed_at_zomro_and_writes_its_status(
    world: World,
) -> None:
    res = world.resource()
    await handling.ensure(world.rt, res, retry=0)
    [schedule_id] = world.zomro.schedules
    world.zomro.schedules[schedule_id] = replace(world.zomro.schedules[schedule_id], time="05:00")
    world.kube.status_writes.clear()
    index = Index({INSTANCE: [world.tracked(status_after(res))]})

    # One resync period (300 s) and a little: exactly one drift pass.
    await Run(world, index, 310.0).until_done(INSTANCE)

    assert world.zomro.schedules[schedule_id].time == "02:01"
    assert [reason for _, reason, _ in world.events][-1] == "DriftCorrected"
    assert world.zomro.calls.count("update_schedule") == 1


async def three_synced(world: World) -> list[Tracked]:
    """Resources a, b and c on one instance, created and in sync, as the index holds them."""
    resources = []
    for name in ("a", "b", "c"):
        res = world.resource(spec={**SPEC, "scheduleName": name})
        res.name = name
        await handling.ensure(world.rt, res, retry=0)
        resources.append(world.tracked(status_after(res), spec=res.spec, name=name))
    return resources


async def test_an_idle_instance_costs_one_listing_per_period_and_no_writes(world: World) -> None:
    resources = await three_synced(world)
    world.zomro.calls.clear()
    world.kube.status_writes.clear()
    world.events.clear()

    # Three resync periods (3 x 300 s); the backup check (600 s) is left out of this count.
    world.rt.settings = replace(world.rt.settings, backup_check_seconds=10_000.0)
    await Run(world, Index({INSTANCE: resources}), 3 * 300.0 + 10).until_done(INSTANCE)

    assert world.zomro.calls == ["list_schedules"] * 3
    assert world.kube.status_writes == []
    assert world.events == []


async def test_resumed_resources_are_confirmed_at_once_on_one_listing(world: World) -> None:
    # A restart resumes every resource; those in sync are confirmed by their instance's loop,
    # at once rather than after its first period (0.5-1 of it), and on one listing.
    resources = await three_synced(world)
    drifted = next(s for s in world.zomro.schedules.values() if s.name == "b")
    world.zomro.schedules[drifted.id] = replace(drifted, time="05:00")
    world.zomro.calls.clear()
    world.kube.status_writes.clear()
    run = Run(world, Index({INSTANCE: resources}), 10.0)  # ends long before the first period
    run.slot.listed.fetched_at -= 1_000.0  # the listing is old: the restart lists again

    run.loops.watch({"instanceId": INSTANCE}, run.index, {})
    for tracked in resources[:2]:
        run.loops.confirm(tracked.spec, tracked.uid)
    run.loops.confirm({"instanceId": "5203774"}, "uid-elsewhere")  # no loop there: nothing
    await run.until_done()

    assert world.zomro.calls == ["list_schedules", "update_schedule"]
    assert world.zomro.schedules[drifted.id].time == "02:01"
    assert [reason for _, reason, _ in world.events][-1] == "DriftCorrected"
    assert world.kube.status_writes == []  # its status already said 02:01
    assert run.loops.running == frozenset()


async def test_the_loop_moves_the_schedule_at_the_transition_and_writes_its_status(
    world: World,
) -> None:
    status, change = await synced_before_a_transition(world)
    world.now = change - dt.timedelta(seconds=10)
    world.kube.status_writes.clear()
    index = Index({INSTANCE: [world.tracked(status, spec=ZONED)]})

    # Ends 50 s after the transition: long before a drift period (300 s) could end.
    await Run(world, index, 60.0).until_done(INSTANCE)

    [write] = world.kube.status_writes
    assert write["providerTime"] == "02:00"
    assert world.zomro.calls.count("update_schedule") == 1
    assert [reason for _, reason, _ in world.events][-1] == "ScheduleShifted"


async def test_the_backup_check_runs_every_check_period_and_writes_what_it_found(
    world: World,
) -> None:
    res = world.resource()
    await handling.ensure(world.rt, res, retry=0)
    world.kube.status_writes.clear()
    index = Index({INSTANCE: [world.tracked(status_after(res))]})

    # One backup-check period (600 s) and a little.
    await Run(world, index, 610.0).until_done(INSTANCE)

    assert world.zomro.calls.count("list_backups") == 1
    [write] = world.kube.status_writes  # the first check's finding: no run was due yet
    assert [c["type"] for c in write["conditions"]] == ["Ready", "BackupsHealthy"]


async def test_one_loop_runs_per_instance_and_ends_with_its_last_resource(world: World) -> None:
    other = "5203774"
    index = Index(
        {
            INSTANCE: [world.tracked(name="a"), world.tracked(name="b")],
            other: [world.tracked(spec={**SPEC, "instanceId": other}, name="c")],
        }
    )
    run = Run(world, index, 1_000.0)
    for name in ("a", "b", "a"):
        run.loops.watch({"instanceId": INSTANCE, "name": name}, index, {})
    run.loops.watch({"instanceId": other}, index, {})
    run.loops.watch({}, index, {})  # a spec without an instance starts nothing

    assert run.loops.running == {INSTANCE, other}
    await run.until_done()
    assert run.loops.running == frozenset()
    assert world.zomro.calls == []  # no resource had reached Zomro: nothing to check


async def test_a_resource_whose_check_fails_leaves_the_others_checked(world: World) -> None:
    good = world.resource()
    await handling.ensure(world.rt, good, retry=0)
    [schedule_id] = world.zomro.schedules
    world.zomro.schedules[schedule_id] = replace(world.zomro.schedules[schedule_id], time="05:00")
    # A status edited by hand: the drift check reports InvalidStatus and goes on to the next.
    broken = world.tracked({"scheduleId": "not-an-id", "observedGeneration": 1}, name="broken")
    index = Index({INSTANCE: [broken, world.tracked(status_after(good))]})

    await Run(world, index, 310.0).until_done(INSTANCE)

    assert world.zomro.schedules[schedule_id].time == "02:01"
    assert [reason for _, reason, _ in world.events][-2:] == ["InvalidStatus", "DriftCorrected"]


async def drifted(world: World) -> tuple[Tracked, str]:
    """A synced resource whose schedule was then changed at Zomro (a drift pass changes it)."""
    res = world.resource()
    await handling.ensure(world.rt, res, retry=0)
    [schedule_id] = world.zomro.schedules
    world.zomro.schedules[schedule_id] = replace(world.zomro.schedules[schedule_id], time="05:00")
    world.zomro.calls.clear()
    world.kube.status_writes.clear()
    return world.tracked(status_after(res)), schedule_id


async def test_a_resource_whose_deletion_has_begun_is_never_checked_again(world: World) -> None:
    member, schedule_id = await drifted(world)
    run = Run(world, Index({INSTANCE: [member]}), 310.0)

    assert not await run.loops.hold(member.uid)  # no check was under way
    await run.until_done(INSTANCE)

    assert world.zomro.calls == []
    assert world.zomro.schedules[schedule_id].time == "05:00"


async def test_a_pass_reads_each_resource_afresh_and_leaves_one_being_deleted_alone(
    world: World,
) -> None:
    member, schedule_id = await drifted(world)
    index = Index({INSTANCE: [member]})
    run = Run(world, index, 310.0)
    deleting = replace(member, deleting=True)
    original = run.loops.members

    def members_then_deleted(instance_id: str) -> list[Tracked]:
        listed = original(instance_id)  # what the pass starts with: not being deleted yet
        index[INSTANCE] = [deleting]  # the deletion's watch event, indexed meanwhile
        return listed

    run.loops.members = members_then_deleted  # type: ignore[method-assign]
    await run.until_done(INSTANCE)

    assert world.zomro.calls == []
    assert world.zomro.schedules[schedule_id].time == "05:00"


async def test_the_deletion_waits_for_a_check_of_the_resource_under_way(world: World) -> None:
    member, schedule_id = await drifted(world)
    started, listing = asyncio.Event(), asyncio.Event()
    real_list = world.zomro.list_schedules

    async def slow_list(instance_id: str) -> list[Schedule]:
        started.set()
        await listing.wait()
        return await real_list(instance_id)

    world.zomro.list_schedules = slow_list  # type: ignore[method-assign]
    run = Run(world, Index({INSTANCE: [member]}), 310.0)
    run.loops.watch({"instanceId": INSTANCE}, run.index, {})
    await started.wait()  # the drift pass has begun its check

    held = asyncio.ensure_future(run.loops.hold(member.uid))
    await asyncio.sleep(0)
    assert not held.done()  # the deletion may not start while the check runs
    listing.set()
    assert await held  # and then it is told to look again at what the check wrote
    assert world.zomro.schedules[schedule_id].time == "02:01"
    await run.until_done()


async def test_a_checks_status_is_not_written_over_a_change_made_meanwhile(world: World) -> None:
    res = world.resource()
    await handling.ensure(world.rt, res, retry=0)
    world.kube.status_writes.clear()
    member = world.tracked(status_after(res))
    world.kube.current = "99"  # a handler wrote the resource after the index read it

    # One backup-check period: its first finding would be written (see above), but not now.
    await Run(world, Index({INSTANCE: [member]}), 610.0).until_done(INSTANCE)

    assert world.zomro.calls.count("list_backups") == 1
    assert world.kube.status_writes == []  # the next pass decides on what status says then


async def test_stopping_the_loops_cancels_every_loop(world: World) -> None:
    index = Index({INSTANCE: [world.tracked()]})
    loops = InstanceLoops(world.rt)  # real waits: only the cancellation ends them
    loops.watch({"instanceId": INSTANCE}, index, {})
    assert loops.running == {INSTANCE}
    await loops.aclose()
    assert loops.running == frozenset()


def test_the_index_keeps_what_the_checks_need_and_not_the_body() -> None:
    body: dict[str, Any] = {
        "apiVersion": "zomro.com/v1alpha1",
        "kind": "BackupSchedule",
        "metadata": {
            "namespace": "team",
            "name": "nightly",
            "uid": "u-1",
            "generation": 3,
            "deletionTimestamp": "2026-12-01T00:00:00Z",
            "managedFields": [{"manager": "kubectl", "fieldsV1": {"f:spec": {}}}],
            "annotations": {
                "kubectl.kubernetes.io/last-applied-configuration": "{" + "x" * 4000 + "}",
                "zomro.com/schedule-id": "14",
            },
        },
        "spec": SPEC,
        "status": {"scheduleId": "14"},
    }
    [(instance, tracked)] = (instance_loops.index_entry(body) or {}).items()
    assert instance == INSTANCE
    assert tracked.annotations == {"zomro.com/schedule-id": "14"}
    assert (tracked.generation, tracked.deleting, tracked.status) == (3, True, {"scheduleId": "14"})
    assert "managedFields" not in str(tracked)
    assert tracked.call({}).body["metadata"] == {
        "namespace": "team",
        "name": "nightly",
        "uid": "u-1",
    }
    assert instance_loops.index_entry({**body, "spec": {"days": ["Monday"]}}) is None


async def test_the_wait_ends_at_the_transition_when_it_comes_before_the_period(
    world: World,
) -> None:
    sleeper = Sleeper(world)
    change = world.now + dt.timedelta(seconds=40)

    stopped = await instance_loops.sleep_until_next_pass(
        world.rt.clock, 300.0, change, sleeper.wait, monotonic=lambda: sleeper.mono
    )

    assert not stopped
    assert world.now == change


async def test_the_wait_lasts_one_period_without_a_transition(world: World) -> None:
    sleeper = Sleeper(world)
    far = world.now + dt.timedelta(days=30)
    for change in (None, far):
        sleeper.slept = 0.0
        await instance_loops.sleep_until_next_pass(
            world.rt.clock, 300.0, change, sleeper.wait, monotonic=lambda: sleeper.mono
        )
        assert sleeper.slept == pytest.approx(300.0)


async def test_moving_the_operators_clock_back_does_not_hold_the_next_pass_up(
    world: World,
) -> None:
    sleeper = Sleeper(world)
    base = sleeper.wait

    async def jump_back_then_sleep(seconds: float) -> bool:
        if sleeper.slept == 0.0:
            world.now -= dt.timedelta(days=3)
        return await base(min(seconds, 1.0))

    await instance_loops.sleep_until_next_pass(
        world.rt.clock, 300.0, None, jump_back_then_sleep, monotonic=lambda: sleeper.mono
    )
    assert sleeper.slept == pytest.approx(300.0)


async def test_a_nudge_ends_the_wait(world: World) -> None:
    sleeper = Sleeper(world, stop_after=10.0)
    assert await instance_loops.sleep_until_next_pass(
        world.rt.clock, 300.0, None, sleeper.wait, monotonic=lambda: sleeper.mono
    )


async def test_a_loop_converts_each_resource_once_until_its_spec_or_the_instant_changes(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    converted: list[str] = []
    real = instance_loops.changes_at

    def counting(rt: Any, member: Tracked) -> dt.datetime | None:
        converted.append(member.name)
        return real(rt, member)

    monkeypatch.setattr(instance_loops, "changes_at", counting)
    index = Index({INSTANCE: [world.tracked(spec=ZONED, name="a"), world.tracked(name="b")]})
    run = Run(world, index, 3 * 300.0 + 10)
    for _ in range(5):  # five handler calls nudge the loop before it sleeps on
        run.loops.watch({"instanceId": INSTANCE}, index, {})
    await run.until_done(INSTANCE)

    assert sorted(converted) == ["a", "b"]  # three passes and five nudges: once each


def test_a_conversion_is_made_again_when_the_spec_the_instant_or_the_clock_says_so(
    world: World,
) -> None:
    known: dict[str, Any] = {}
    zoned = world.tracked(spec=ZONED)
    first = instance_loops._next_changes(world.rt, [zoned], known)[zoned.uid]
    assert first is not None
    kept = known[zoned.uid]

    instance_loops._next_changes(world.rt, [zoned], known)
    assert known[zoned.uid] is kept  # nothing changed: not converted again
    for moved, member in (
        (dt.timedelta(), replace(zoned, generation=2)),  # a new spec
        (first - world.now, zoned),  # the instant has come
        (-dt.timedelta(days=30), zoned),  # the clock went back
    ):
        world.now += moved
        before = known[member.uid]
        instance_loops._next_changes(world.rt, [member], known)
        assert known[member.uid] is not before
    instance_loops._next_changes(world.rt, [], known)
    assert known == {}  # resources gone from the instance are forgotten


def test_the_transition_a_loop_waits_for_is_the_one_the_conversion_gives(world: World) -> None:
    held = provider_schedule(
        frozenset({Weekday.MONDAY}),
        "20:00",
        parse_zone("America/New_York", "spec.timeZone"),
        PROVIDER_ZONE,
        world.now,
    )
    assert instance_loops.changes_at(world.rt, world.tracked(spec=ZONED)) == held.changes_at
    assert instance_loops.changes_at(world.rt, world.tracked()) is None
    suspended = world.tracked(spec={**ZONED, "suspend": True})
    assert instance_loops.changes_at(world.rt, suspended) is None
    assert instance_loops.changes_at(world.rt, world.tracked(spec=ZONED, deleting=True)) is None
