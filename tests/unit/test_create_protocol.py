"""The create protocol (docs/design.md) whatever Zomro does to a name and however late it lists a
new schedule: the pure plan, then the core with the real client against the sandbox in every
mode, retried the way kopf retries, across a simulated restart."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytest

from zomro_backup_operator.claims import ClaimKey, Claims
from zomro_backup_operator.instance_slot import InstanceSlot
from zomro_backup_operator.pending import PendingCreate
from zomro_backup_operator.reconcile import (
    CreatePendingError,
    Outcome,
    Plan,
    Remote,
    Removal,
    Step,
    ensure,
    plan,
    remove,
)
from zomro_backup_operator.resources import Desired, Observed
from zomro_backup_operator.sandbox import ManualClock, RunningSandbox
from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.errors import CreatedNotListedError, ZomroError
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULE_DELETE, FUNC_SCHEDULE_EDIT
from zomro_backup_operator.zomro.models import Schedule, ScheduleSpec, Weekday, may_be_stored_as

INSTANCE = "5203773"
WEEKDAYS = frozenset(Weekday(d) for d in range(1, 6))
SETTLE = 60.0


def desired(name: str = "nightly", schedule_name: str = "Nightly", time: str = "02:01") -> Desired:
    return Desired(
        namespace="team",
        name=name,
        generation=1,
        instance_id=INSTANCE,
        schedule=ScheduleSpec(name=schedule_name, days=WEEKDAYS, time=time),
    )


def row(ident: str, name: str, time: str = "02:01") -> Schedule:
    return Schedule(id=ident, instance_id=INSTANCE, name=name, days=WEEKDAYS, time=time)


def sent(name: str = "Nightly", *, at: float = 1000.0, known: Iterable[str] = ()) -> PendingCreate:
    spec = ScheduleSpec(name=name, days=WEEKDAYS, time="02:01")
    return PendingCreate.for_spec(spec, started_at=at, known_ids=list(known))


def decide(
    pending: PendingCreate | None,
    rows: list[Schedule],
    *,
    now: float = 1001.0,
    owners: Mapping[str, str] | None = None,
    in_flight: Mapping[str, str] | None = None,
) -> Plan:
    owners = owners or {}
    return plan(
        desired(),
        Observed(pending=pending),
        rows,
        owners.get,
        in_flight,
        now=now,
        settle=SETTLE,
    )


# --- the pure plan --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("what", "listed"),
    [
        ("trimmed", "Nightly"),
        ("whitespace collapsed", "Nightly Run"),
        ("lower case", "nightly run"),
        ("upper case", "NIGHTLY RUN"),
        ("cut to a shorter limit", "Nightly R"),
        ("all at once", "nightly r"),
    ],
)
def test_a_new_schedule_with_the_sent_days_and_a_name_zomro_made_of_ours_is_taken(
    what: str, listed: str
) -> None:
    decision = decide(sent(" Nightly  Run "), [row("14", listed)])
    assert (decision.step, decision.row) == (Step.ADOPT, row("14", listed)), what


def test_a_name_zomro_could_not_have_made_of_ours_is_not_taken() -> None:
    assert not may_be_stored_as("Nightly", "Weekly")
    assert not may_be_stored_as("Nightly", "Nightly2")
    assert decide(sent(), [row("14", "Weekly")], now=2000.0).step is Step.CREATE


def test_a_schedule_listed_before_the_create_was_sent_is_not_taken_as_what_it_made() -> None:
    decision = decide(sent(known=["14"]), [row("14", "nightly")], now=2000.0)
    assert decision.step is Step.CREATE


def test_a_new_schedule_with_other_days_or_time_is_not_taken() -> None:
    decision = decide(sent(), [row("14", "nightly", time="03:00")], now=2000.0)
    assert decision.step is Step.CREATE


def test_a_new_schedule_claimed_by_another_resource_is_not_taken() -> None:
    decision = decide(sent(), [row("14", "nightly")], owners={"14": "team/other"}, now=2000.0)
    assert decision.step is Step.CREATE


def test_an_accepted_create_that_no_listing_shows_yet_is_waited_for_however_long() -> None:
    decision = decide(sent().acknowledge(), [], now=1e9)
    assert (decision.step, decision.wait) == (Step.WAIT, None)


def test_a_lost_answer_is_waited_for_during_the_settle_window_then_counts_as_nothing_made() -> None:
    assert decide(sent(at=1000.0), [], now=1010.0) == Plan(Step.WAIT, wait=SETTLE - 10)
    assert decide(sent(at=1000.0), [], now=1000.0 + SETTLE).step is Step.CREATE


def test_a_create_of_ours_still_on_its_way_is_never_joined_by_a_second() -> None:
    decision = decide(None, [], in_flight={"Nightly": "team/nightly"})
    assert decision.step is Step.WAIT


def test_ambiguous_candidates_give_one_of_them_never_a_create() -> None:
    rows = [row("15", "nightly"), row("14", "nightly"), row("16", "NIGHTLY")]
    decision = decide(sent(), rows)
    assert (decision.step, decision.row) == (Step.ADOPT, row("14", "nightly"))


def test_the_exact_name_is_preferred_over_a_normalised_one() -> None:
    decision = decide(sent(), [row("14", "nightly"), row("15", "Nightly")])
    assert decision.row == row("15", "Nightly")


def test_the_pending_record_round_trips_through_status() -> None:
    record = sent(" Nightly ", known=["9", "14"]).acknowledge()
    status = record.to_status(lambda epoch: "1970-01-01T00:16:40Z")
    assert status["knownIds"] == ["9", "14"]
    assert PendingCreate.from_status(status) == record


# --- the core, the real client and the sandbox ----------------------------------------------


@dataclass
class Process:
    """One operator process: its client, slot and claims; status lives in ``Cluster``."""

    client: ZomroClient
    slot: InstanceSlot = field(default_factory=InstanceSlot)
    claims: Claims = field(default_factory=Claims)


@dataclass
class Cluster:
    """What the API server keeps across operator restarts: each resource's status."""

    clock: ManualClock
    status: dict[str, Observed] = field(default_factory=dict)
    index: dict[ClaimKey, list[str]] = field(default_factory=dict)

    def remote(self, process: Process) -> Remote:
        indexed: Mapping[ClaimKey, Iterable[str]] = self.index
        return Remote(
            process.client, process.slot, process.claims, indexed, 300.0, SETTLE, self.clock
        )

    async def reconcile(self, process: Process, want: Desired) -> Outcome | Exception:
        """One handler run, with status written as handling.py writes it."""

        async def record(pending: PendingCreate | None) -> None:
            self.status[want.key] = replace(self.status.get(want.key, Observed()), pending=pending)

        try:
            outcome = await ensure(
                want, self.status.get(want.key, Observed()), self.remote(process), record
            )
        except (ZomroError, CreatePendingError) as exc:
            return exc
        self.status[want.key] = Observed(
            schedule_id=outcome.schedule.id,
            observed_generation=want.generation,
            schedule_name=outcome.schedule.name,
        )
        self.index[(INSTANCE, outcome.schedule.id)] = [want.key]
        return outcome

    async def converge(self, process: Process, *wants: Desired, attempts: int = 30) -> None:
        """Retry every resource like kopf does (time passes between attempts) until all are done."""
        for _ in range(attempts):
            results = [await self.reconcile(process, want) for want in wants]
            if all(isinstance(result, Outcome) for result in results):
                return
            self.clock.advance(10.0)
        raise AssertionError(f"not converged: {results}")


@pytest.fixture
async def process(sb: RunningSandbox) -> AsyncIterator[Process]:
    options = ClientOptions(timeout=2.0, max_requests_per_second=1000.0, read_attempts=1)
    client = ZomroClient(
        Credentials(username="demo", password="demo"), base_url=sb.url, options=options
    )
    yield Process(client)
    await client.aclose()


def creates_applied(sb: RunningSandbox) -> int:
    """Schedules Zomro ever made (ids are handed out one by one)."""
    return sb.state.next_schedule_id - sb.state.config.first_schedule_id


def writes_sent(sb: RunningSandbox) -> int:
    return sum(1 for r in sb.state.requests if r.func == FUNC_SCHEDULE_EDIT)


MODES: dict[str, tuple[dict[str, Any], str]] = {
    "trim": ({}, " Nightly "),
    "collapse": ({"names": {"collapse": True}}, "Nightly  run"),
    "lower": ({"names": {"case": "lower"}}, "Nightly"),
    "upper": ({"names": {"case": "upper"}}, "Nightly"),
    "cut": ({"names": {"cut": 10}}, "Nightly run of the server"),
    "listing delay": ({"listing_delay": 45}, "Nightly"),
    "everything": (
        {"names": {"collapse": True, "case": "upper", "cut": 12}, "listing_delay": 45},
        "  nightly   run of the server",
    ),
}


@pytest.mark.parametrize("mode", list(MODES))
async def test_one_resource_makes_exactly_one_schedule_in_every_mode(
    mode: str, sb: RunningSandbox, process: Process, clock: ManualClock
) -> None:
    faults, name = MODES[mode]
    sb.set_faults(**faults)
    cluster = Cluster(clock)
    want = desired(schedule_name=name)

    await cluster.converge(process, want)
    await cluster.reconcile(process, want)  # takes note of the name as Zomro keeps it
    writes = writes_sent(sb)
    for _ in range(3):  # later resyncs, each with a fresh listing, write nothing
        clock.advance(400.0)
        assert isinstance(await cluster.reconcile(process, want), Outcome)

    held = sb.state.schedules_of(INSTANCE)
    assert len(held) == 1, [s.name for s in held]
    assert cluster.status[want.key].schedule_id == held[0].id
    assert len(sb.state.schedules) == 1
    assert writes_sent(sb) == writes


async def test_an_accepted_create_is_never_sent_again_while_the_listing_lags(
    sb: RunningSandbox, process: Process, clock: ManualClock
) -> None:
    sb.set_faults(listing_delay=10 * SETTLE)
    cluster = Cluster(clock)
    want = desired()

    first = await cluster.reconcile(process, want)
    assert isinstance(first, CreatePendingError)
    assert cluster.status[want.key].pending is not None
    assert cluster.status[want.key].pending.acknowledged  # type: ignore[union-attr]
    for _ in range(15):  # far beyond the settle window
        clock.advance(SETTLE / 2)
        assert isinstance(await cluster.reconcile(process, want), CreatePendingError)
    restarted = Process(process.client)  # the status is the memory, not the process
    clock.advance(10 * SETTLE)
    outcome = await cluster.reconcile(restarted, want)

    assert isinstance(outcome, Outcome)
    assert len(sb.state.schedules) == 1
    assert creates_applied(sb) == 1


async def test_a_lost_answer_and_a_late_listing_heal_after_a_restart_without_a_duplicate(
    sb: RunningSandbox, process: Process, clock: ManualClock
) -> None:
    # Zomro applies the create, the connection drops, and the listing shows it only 40 s later;
    # the operator then dies and a new process takes over from status alone.
    sb.set_faults(late_create={"drop": True, "count": 1}, listing_delay=40, names={"case": "lower"})
    cluster = Cluster(clock)
    want = desired()

    lost = await cluster.reconcile(process, want)
    assert isinstance(lost, ZomroError)
    assert not isinstance(lost, CreatedNotListedError)
    clock.advance(20)
    restarted = Process(process.client)
    waiting = await cluster.reconcile(restarted, want)
    assert isinstance(waiting, CreatePendingError)
    assert waiting.retry_after is not None
    await cluster.converge(restarted, want)

    assert len(sb.state.schedules) == 1
    assert creates_applied(sb) == 1


async def test_a_create_refused_with_a_server_error_is_sent_again_only_after_the_window(
    sb: RunningSandbox, process: Process, clock: ManualClock
) -> None:
    sb.set_faults(error_rate=1.0, error_funcs=[FUNC_SCHEDULE_EDIT])
    cluster = Cluster(clock)
    want = desired()

    lost = await cluster.reconcile(process, want)
    assert isinstance(lost, ZomroError)
    assert lost.retry_after == SETTLE  # the next look is due when the window ends, not sooner
    sb.set_faults(error_rate=0.0)
    clock.advance(SETTLE - 1)
    assert isinstance(await cluster.reconcile(process, want), CreatePendingError)
    assert not sb.state.schedules
    clock.advance(1)
    assert isinstance(await cluster.reconcile(process, want), Outcome)

    assert len(sb.state.schedules) == 1


async def test_two_resources_whose_names_zomro_folds_together_get_one_schedule_each(
    sb: RunningSandbox, process: Process, clock: ManualClock
) -> None:
    sb.set_faults(names={"case": "lower"}, listing_delay=30)
    cluster = Cluster(clock)
    first, second = desired("a", "Nightly"), desired("b", "NIGHTLY")

    await cluster.converge(process, first, second)

    ids = {cluster.status[w.key].schedule_id for w in (first, second)}
    assert len(ids) == 2
    assert set(sb.state.schedules) == ids


async def test_deleting_a_resource_whose_accepted_create_is_not_listed_yet_waits_for_it(
    sb: RunningSandbox, process: Process, clock: ManualClock
) -> None:
    sb.set_faults(listing_delay=100)
    cluster = Cluster(clock)
    want = desired()
    await cluster.reconcile(process, want)

    async def connect() -> Remote:
        return cluster.remote(process)

    with pytest.raises(CreatePendingError):
        await remove(want, cluster.status[want.key], process.claims, connect)
    clock.advance(100)
    removal, schedule_id = await remove(want, cluster.status[want.key], process.claims, connect)

    assert removal is Removal.DELETED
    assert schedule_id is not None
    assert not sb.state.schedules


@pytest.mark.parametrize("group_mode", [None, "first", "partial", "refused"])
async def test_resources_deleted_together_remove_exactly_their_schedules_in_every_group_mode(
    group_mode: str | None, sb: RunningSandbox, process: Process, clock: ManualClock
) -> None:
    cluster = Cluster(clock)
    wants = [desired(f"r{n}", f"Nightly {n}") for n in range(5)]
    await cluster.converge(process, *wants)
    foreign = sb.state.add_schedule(INSTANCE, "Not ours", [1], "04:00")
    sb.set_faults(group_delete=group_mode)
    sb.state.requests.clear()

    async def connect() -> Remote:
        return cluster.remote(process)

    removals = await asyncio.gather(
        *(remove(want, cluster.status[want.key], process.claims, connect) for want in wants)
    )

    assert [removal for removal, _ in removals] == [Removal.DELETED] * len(wants)
    assert {schedule_id for _, schedule_id in removals} == {
        cluster.status[want.key].schedule_id for want in wants
    }
    assert [schedule.id for schedule in sb.state.schedules_of(INSTANCE)] == [foreign.id]
    deletes = [r for r in sb.state.requests if r.func == FUNC_SCHEDULE_DELETE]
    if group_mode is None:  # Zomro honours groups: fewer calls than resources
        assert len(deletes) < len(wants)


def held(listed: str, *, recorded: str | None, generation: int = 1) -> Step:
    observed = Observed(schedule_id="14", observed_generation=generation, schedule_name=recorded)
    return plan(desired(), observed, [row("14", listed)], lambda _: None).step


def test_a_name_in_the_form_zomro_gives_it_is_not_rewritten_on_every_resync() -> None:
    assert held("nightly", recorded="nightly") is Step.KEEP
    assert held("nightly", recorded="Nightly") is Step.KEEP  # what we wrote, as Zomro keeps it


def test_a_name_changed_behind_our_back_or_in_the_spec_is_still_written() -> None:
    assert held("NIGHTLY", recorded="nightly") is Step.UPDATE
    assert held("nightly", recorded="nightly", generation=0) is Step.UPDATE
    assert held("Weekly", recorded="Weekly") is Step.UPDATE
