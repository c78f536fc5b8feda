"""The decision core against an in-memory Zomro: every branch of create, change, adopt, drift,
conflict and removal, without a cluster."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Iterable, Mapping

import pytest
from fake_zomro import FakeZomro

from zomro_backup_operator import instance_slot
from zomro_backup_operator.claims import ClaimKey, Claims
from zomro_backup_operator.instance_slot import InstanceSlot
from zomro_backup_operator.pending import PendingCreate
from zomro_backup_operator.reconcile import (
    Action,
    AdoptionError,
    ConflictError,
    Remote,
    Removal,
    ensure,
    remove,
    suspend,
)
from zomro_backup_operator.resources import Desired, Observed
from zomro_backup_operator.runtime import Recent
from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    ServerError,
    UnknownOutcomeError,
)
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday

INSTANCE = "5203773"
WEEKDAYS = frozenset(Weekday(d) for d in range(1, 6))


def spec(
    name: str = "MySchedule", time: str = "02:01", days: frozenset[Weekday] = WEEKDAYS
) -> ScheduleSpec:
    return ScheduleSpec(name=name, days=days, time=time)


def desired(
    name: str = "nightly",
    schedule: ScheduleSpec | None = None,
    *,
    adopt_id: str | None = None,
    policy: str = "Delete",
) -> Desired:
    return Desired(
        namespace="team",
        name=name,
        generation=1,
        instance_id=INSTANCE,
        schedule=schedule or spec(),
        deletion_policy=policy,  # type: ignore[arg-type]
        adopt_id=adopt_id,
    )


def legacy_pending(name: str) -> PendingCreate:
    """The record of a create of ``name`` whose answer never came (as older versions wrote it)."""
    return PendingCreate(name=name, started_at=0.0)


class World:
    """One Zomro, one slot, one claims registry, one kopf index: what one operator process has."""

    def __init__(self) -> None:
        self.zomro = FakeZomro()
        self.slot = InstanceSlot()
        self.claims = Claims()
        self.index: dict[ClaimKey, list[str]] = {}
        self.pending: list[str] = []

    def remote(self, max_age: float = 300.0) -> Remote:
        indexed: Mapping[ClaimKey, Iterable[str]] = self.index
        return Remote(self.zomro, self.slot, self.claims, indexed, max_age)

    async def record_pending(self, pending: PendingCreate | None) -> None:
        if pending is not None:
            self.pending.append(pending.name)


@pytest.fixture
def world() -> World:
    return World()


async def test_a_new_resource_creates_exactly_one_schedule_after_recording_its_intent(
    world: World,
) -> None:
    outcome = await ensure(desired(), Observed(), world.remote(), world.record_pending)

    assert outcome.action is Action.CREATED
    assert [s.name for s in world.zomro.schedules.values()] == ["MySchedule"]
    assert world.pending == ["MySchedule"]
    assert world.zomro.calls == ["list_schedules", "create_schedules"]
    assert world.claims.owner(INSTANCE, outcome.schedule.id, {}) == "team/nightly"


async def test_a_schedule_in_step_with_its_spec_is_left_alone(world: World) -> None:
    held = world.zomro.add(INSTANCE, spec())

    outcome = await ensure(
        desired(), Observed(schedule_id=held.id), world.remote(), world.record_pending
    )

    assert outcome.action is Action.SYNCED
    assert world.zomro.calls == ["list_schedules"]


async def test_a_changed_spec_changes_the_same_schedule_in_place(world: World) -> None:
    held = world.zomro.add(INSTANCE, spec())
    new = spec(name="Renamed", time="03:30", days=frozenset({Weekday.SUNDAY}))

    outcome = await ensure(
        desired(schedule=new), Observed(schedule_id=held.id), world.remote(), world.record_pending
    )

    assert outcome.action is Action.UPDATED
    assert outcome.previous is not None
    assert outcome.previous.time == "02:01"
    assert list(world.zomro.schedules) == [held.id]
    assert world.zomro.schedules[held.id].spec == new


async def test_a_schedule_removed_behind_our_back_is_recreated(world: World) -> None:
    outcome = await ensure(
        desired(), Observed(schedule_id="99"), world.remote(), world.record_pending
    )

    assert outcome.action is Action.RECREATED
    assert outcome.previous_id == "99"
    assert len(world.zomro.schedules) == 1
    assert world.claims.owner(INSTANCE, "99", {(INSTANCE, "99"): ["team/nightly"]}) is None


async def test_a_schedule_made_since_the_last_listing_is_kept_not_recreated(world: World) -> None:
    # The instance's listing is cached; then another operator on the namespace creates this
    # resource's schedule and records it in status.
    await ensure(
        desired("other", spec(name="other")), Observed(), world.remote(), world.record_pending
    )
    made = world.zomro.add(INSTANCE, spec())

    outcome = await ensure(
        desired(), Observed(schedule_id=made.id), world.remote(), world.record_pending
    )

    assert outcome.action is Action.SYNCED
    assert outcome.schedule.id == made.id
    assert len(world.zomro.schedules) == 2
    assert world.zomro.calls.count("list_schedules") == 2  # the cached one, then a fresh one


async def test_an_unclaimed_schedule_with_our_name_is_adopted_not_duplicated(world: World) -> None:
    existing = world.zomro.add(INSTANCE, spec(time="05:00"))

    outcome = await ensure(desired(), Observed(), world.remote(), world.record_pending)

    assert outcome.action is Action.ADOPTED
    assert outcome.schedule.id == existing.id
    assert world.zomro.schedules[existing.id].time == "02:01"
    assert "create_schedules" not in world.zomro.calls


async def test_a_create_whose_answer_was_lost_is_found_by_its_recorded_name_after_a_rename(
    world: World,
) -> None:
    # A crash after Zomro created "Old" but before status recorded its id; since then the
    # user renamed the schedule. The recorded intent still finds it: no second schedule.
    lost = world.zomro.add(INSTANCE, spec(name="Old"))
    observed = Observed(pending=legacy_pending("Old"))

    outcome = await ensure(
        desired(schedule=spec(name="New")), observed, world.remote(), world.record_pending
    )

    assert outcome.schedule.id == lost.id
    assert list(world.zomro.schedules) == [lost.id]
    assert world.zomro.schedules[lost.id].name == "New"


async def test_an_unknown_create_outcome_heals_on_the_next_attempt_without_a_duplicate(
    world: World,
) -> None:
    def lose_answer(_: object) -> None:
        raise UnknownOutcomeError("create: timed out after sending")

    world.zomro.after_create = lose_answer
    with pytest.raises(UnknownOutcomeError):
        await ensure(desired(), Observed(), world.remote(), world.record_pending)
    world.zomro.after_create = None

    outcome = await ensure(
        desired(),
        Observed(pending=legacy_pending("MySchedule")),
        world.remote(),
        world.record_pending,
    )

    assert outcome.action is Action.ADOPTED
    assert len(world.zomro.schedules) == 1


async def test_a_name_taken_by_another_resource_is_a_conflict(world: World) -> None:
    theirs = world.zomro.add(INSTANCE, spec())
    world.index[(INSTANCE, theirs.id)] = ["team/other"]

    with pytest.raises(ConflictError, match="team/other"):
        await ensure(desired(), Observed(), world.remote(), world.record_pending)
    assert len(world.zomro.schedules) == 1


async def test_two_resources_racing_for_one_name_cannot_both_claim_it(world: World) -> None:
    # The first claims the schedule; the index has not seen its status yet.
    await ensure(desired("first"), Observed(), world.remote(), world.record_pending)

    with pytest.raises(ConflictError, match="team/first"):
        await ensure(desired("second"), Observed(), world.remote(), world.record_pending)
    assert len(world.zomro.schedules) == 1


async def test_the_adoption_annotation_takes_over_that_schedule_and_brings_it_to_spec(
    world: World,
) -> None:
    world.zomro.add(INSTANCE, spec(name="Decoy"))
    target = world.zomro.add(INSTANCE, spec(name="Legacy", time="04:00"))

    outcome = await ensure(
        desired(adopt_id=target.id), Observed(), world.remote(), world.record_pending
    )

    assert outcome.action is Action.ADOPTED
    assert outcome.schedule.id == target.id
    assert world.zomro.schedules[target.id].spec == spec()
    assert len(world.zomro.schedules) == 2


async def test_adopting_a_schedule_the_instance_does_not_have_fails_clearly(world: World) -> None:
    with pytest.raises(AdoptionError, match="no such schedule"):
        await ensure(desired(adopt_id="777"), Observed(), world.remote(), world.record_pending)
    assert world.zomro.schedules == {}


async def test_adopting_a_schedule_claimed_by_another_resource_is_a_conflict(world: World) -> None:
    theirs = world.zomro.add(INSTANCE, spec(name="Theirs"))
    world.index[(INSTANCE, theirs.id)] = ["team/other"]

    with pytest.raises(ConflictError):
        await ensure(desired(adopt_id=theirs.id), Observed(), world.remote(), world.record_pending)


async def test_resources_on_one_instance_share_one_listing_per_period(world: World) -> None:
    for name in ("a", "b", "c"):
        await ensure(
            desired(name, spec(name=name)), Observed(), world.remote(), world.record_pending
        )

    assert world.zomro.calls.count("list_schedules") == 1
    assert world.zomro.batches == [["a"], ["b"], ["c"]]


async def test_an_expired_listing_is_fetched_again(world: World) -> None:
    held = world.zomro.add(INSTANCE, spec())
    await ensure(desired(), Observed(schedule_id=held.id), world.remote(), world.record_pending)
    await ensure(
        desired(), Observed(schedule_id=held.id), world.remote(max_age=0.0), world.record_pending
    )

    assert world.zomro.calls.count("list_schedules") == 2


async def test_deleting_with_delete_policy_removes_the_zomro_schedule(world: World) -> None:
    held = world.zomro.add(INSTANCE, spec())

    result = await remove(desired(), Observed(schedule_id=held.id), world.claims, _connect(world))

    assert result == (Removal.DELETED, held.id)
    assert world.zomro.schedules == {}


async def test_deleting_with_orphan_policy_keeps_the_zomro_schedule_and_calls_nothing(
    world: World,
) -> None:
    held = world.zomro.add(INSTANCE, spec())

    async def no_connect() -> Remote:
        raise AssertionError("Orphan must not need Zomro or credentials")

    result = await remove(
        desired(policy="Orphan"), Observed(schedule_id=held.id), world.claims, no_connect
    )

    assert result == (Removal.ORPHANED, held.id)
    assert held.id in world.zomro.schedules


async def test_deleting_a_resource_whose_create_was_never_recorded_removes_what_it_made(
    world: World,
) -> None:
    made = world.zomro.add(INSTANCE, spec())

    result = await remove(
        desired(), Observed(pending=legacy_pending("MySchedule")), world.claims, _connect(world)
    )

    assert result == (Removal.DELETED, made.id)
    assert world.zomro.schedules == {}


async def test_deleting_a_resource_that_never_reached_zomro_needs_nothing(world: World) -> None:
    async def no_connect() -> Remote:
        raise AssertionError("nothing to delete: no credentials needed")

    assert await remove(desired(), Observed(), world.claims, no_connect) == (Removal.NOTHING, None)


async def test_deletion_counts_a_vanished_instance_as_done_only_when_the_account_confirms(
    world: World,
) -> None:
    world.zomro.instances = {}
    result = await remove(desired(), Observed(schedule_id="14"), world.claims, _connect(world))
    assert result == (Removal.INSTANCE_GONE, "14")


async def test_deletion_refused_for_an_instance_the_account_still_has_keeps_waiting(
    world: World,
) -> None:
    held = world.zomro.add(INSTANCE, spec())
    world.zomro.fail["delete_schedules"] = AccessDeniedError("Insufficient privileges")

    with pytest.raises(AccessDeniedError):
        await remove(desired(), Observed(schedule_id=held.id), world.claims, _connect(world))
    assert held.id in world.zomro.schedules


def _connect(world: World):  # type: ignore[no-untyped-def]
    async def connect() -> Remote:
        return world.remote()

    return connect


async def test_creates_queued_while_a_batch_is_at_zomro_join_it_up_to_the_cap(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = [f"s{n}" for n in range(7)]
    for cap, batches in ((100, 1), (3, 3)):
        monkeypatch.setattr(instance_slot, "MAX_BATCH", cap)
        world.zomro.batches.clear()
        created = await asyncio.gather(
            *(
                ensure(
                    desired(f"{name}-{cap}", spec(name=f"{name}-{cap}")),
                    Observed(),
                    world.remote(),
                    world.record_pending,
                )
                for name in names
            )
        )
        assert len({outcome.schedule.id for outcome in created}) == len(names)
        # One listing after each batch tells the ids: one batch, or as many as the cap makes.
        assert len(world.zomro.batches) == batches
        assert max(len(batch) for batch in world.zomro.batches) <= cap


async def test_creates_on_one_instance_arriving_together_share_one_batch(world: World) -> None:
    names = [f"s{n}" for n in range(6)]

    outcomes = await asyncio.gather(
        *(
            ensure(desired(name, spec(name=name)), Observed(), world.remote(), world.record_pending)
            for name in names
        )
    )

    assert sorted(o.schedule.name for o in outcomes) == names
    assert len({o.schedule.id for o in outcomes}) == len(names)
    assert len(world.zomro.batches) < len(names)
    assert sorted(n for batch in world.zomro.batches for n in batch) == names
    for outcome in outcomes:
        owner = world.claims.owner(INSTANCE, outcome.schedule.id, {})
        assert owner == f"team/{outcome.schedule.name}"


async def test_two_resources_creating_one_name_at_once_make_one_schedule(world: World) -> None:
    results = await asyncio.gather(
        ensure(desired("first"), Observed(), world.remote(), world.record_pending),
        ensure(desired("second"), Observed(), world.remote(), world.record_pending),
        return_exceptions=True,
    )

    assert len(world.zomro.schedules) == 1
    assert sum(isinstance(r, ConflictError) for r in results) == 1


async def test_a_lost_answer_in_a_batch_fails_only_that_create(world: World) -> None:
    def lose(created: object) -> None:
        if getattr(created, "name", "") == "b":
            raise UnknownOutcomeError("create: answer lost")

    world.zomro.after_create = lose

    results = await asyncio.gather(
        *(
            ensure(desired(n, spec(name=n)), Observed(), world.remote(), world.record_pending)
            for n in ("a", "b", "c")
        ),
        return_exceptions=True,
    )

    assert [type(r).__name__ for r in results] == ["Outcome", "UnknownOutcomeError", "Outcome"]
    world.zomro.after_create = None
    healed = await ensure(
        desired("b", spec(name="b")),
        Observed(pending=legacy_pending("b")),
        world.remote(),
        world.record_pending,
    )
    assert healed.action is Action.ADOPTED
    assert len(world.zomro.schedules) == 3


def test_the_record_of_finished_deletions_is_bounded_and_forgets_the_oldest() -> None:
    recent = Recent(size=2)
    for uid in ("a", "b", "c"):
        recent.add(uid)

    assert "a" not in recent
    assert "b" in recent
    assert "c" in recent


@pytest.mark.parametrize("forger_sorts_first", [True, False])
async def test_a_status_naming_another_resources_schedule_is_a_conflict_and_writes_nothing(
    world: World, forger_sorts_first: bool
) -> None:
    # Someone set this resource's status.scheduleId to the id another resource holds.
    theirs = world.zomro.add(INSTANCE, spec(name="Theirs", time="05:05"))
    me, other = ("team/a", "team/z") if forger_sorts_first else ("team/z", "team/a")
    world.index[(INSTANCE, theirs.id)] = sorted([me, other])
    forged = Observed(schedule_id=theirs.id)

    with pytest.raises(ConflictError, match=other):
        await ensure(desired(me.split("/")[1]), forged, world.remote(), world.record_pending)
    with pytest.raises(ConflictError, match=other):
        await remove(desired(me.split("/")[1]), forged, world.claims, _connect(world))

    assert world.zomro.schedules[theirs.id] == theirs
    assert "update_schedule" not in world.zomro.calls
    assert "delete_schedules" not in world.zomro.calls


async def test_suspending_with_orphan_policy_still_removes_the_zomro_schedule(world: World) -> None:
    held = world.zomro.add(INSTANCE, spec())

    result = await suspend(desired(policy="Orphan"), Observed(schedule_id=held.id), _connect(world))

    assert result == (Removal.DELETED, held.id)
    assert world.zomro.schedules == {}


async def test_suspending_removes_what_a_recreate_made_after_the_old_schedule_vanished(
    world: World,
) -> None:
    # The schedule was removed behind our back; the recreate was recorded, then the process died.
    made = world.zomro.add(INSTANCE, spec())
    observed = Observed(schedule_id="99", pending=legacy_pending("MySchedule"))

    result = await suspend(desired(), observed, _connect(world))

    assert result == (Removal.DELETED, made.id)
    assert world.zomro.schedules == {}


async def test_suspending_a_resource_with_nothing_recorded_asks_zomro_nothing(world: World) -> None:
    world.zomro.add(INSTANCE, spec())  # our name, but never ours: left alone

    async def no_connect() -> Remote:
        raise AssertionError("nothing recorded: nothing of ours can be at Zomro")

    assert await suspend(desired(), Observed(), no_connect) == (Removal.NOTHING, None)
    assert len(world.zomro.schedules) == 1


async def _remove_all(world: World, names: list[str]) -> list[object]:
    held = {name: world.zomro.add(INSTANCE, spec(name=name)) for name in names}
    for name, schedule in held.items():
        world.claims.claim(INSTANCE, schedule.id, f"team/{name}")
    return await asyncio.gather(
        *(
            remove(
                desired(name), Observed(schedule_id=held[name].id), world.claims, _connect(world)
            )
            for name in names
        ),
        return_exceptions=True,
    )


async def test_deletes_on_one_instance_arriving_together_go_in_fewer_calls_up_to_the_cap(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    for cap, calls in ((100, 1), (4, 2)):
        monkeypatch.setattr(instance_slot, "MAX_BATCH", cap)
        world.zomro.deletes.clear()
        names = [f"s{n}-{cap}" for n in range(7)]

        results = await _remove_all(world, names)

        assert [result[0] for result in results] == [Removal.DELETED] * len(names)  # type: ignore[index]
        assert world.zomro.schedules == {}
        assert len(world.zomro.deletes) == calls
        assert max(len(ids) for ids in world.zomro.deletes) <= cap
        deleted = sorted(i for ids in world.zomro.deletes for i in ids)
        assert deleted == sorted(result[1] for result in results)  # type: ignore[index]
        assert all(world.claims.owner(INSTANCE, i, {}) is None for i in deleted)


async def test_a_failed_group_delete_fails_every_resource_in_it_and_keeps_schedules_and_claims(
    world: World,
) -> None:
    world.zomro.fail["delete_schedules"] = ServerError("Internal error")
    names = ["a", "b", "c"]
    world.slot.listed.value = []  # a listing from before, which the failure must not be trusted

    results = await _remove_all(world, names)

    assert all(isinstance(result, ServerError) for result in results)
    assert len(world.zomro.deletes) == 1
    assert len(world.zomro.schedules) == len(names)
    owners = {world.claims.owner(INSTANCE, s.id, {}) for s in world.zomro.schedules.values()}
    assert owners == {f"team/{name}" for name in names}
    # The failure dropped the slot's listing: the retry looks again before it decides.
    assert world.slot.listed.value is None


async def test_one_schedule_queued_twice_is_named_once_and_both_waiters_learn_it_is_gone(
    world: World,
) -> None:
    held = world.zomro.add(INSTANCE, spec())
    delete_many = functools.partial(world.zomro.delete_schedules, INSTANCE)

    first = world.slot.submit_delete(held.id, delete_many)
    second = world.slot.submit_delete(held.id, delete_many)
    await asyncio.gather(asyncio.shield(first), asyncio.shield(second))

    assert world.zomro.deletes == [[held.id]]
    assert world.slot.idle
