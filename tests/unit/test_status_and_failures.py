"""Status is written only when it changes; failures map onto Ready reasons and kopf errors."""

from __future__ import annotations

import datetime as dt
import random
from typing import Any, cast

import kopf
import pytest

from zomro_backup_operator.backup_outcomes import AWAITING, Assessment, Expectations, Health
from zomro_backup_operator.failures import NEEDS_PERSON_BACKOFF, TRANSIENT_BACKOFF, classify
from zomro_backup_operator.reconcile import ConflictError
from zomro_backup_operator.resources import InvalidSpecError, Timing
from zomro_backup_operator.secret_store import CredentialsError
from zomro_backup_operator.status import SUSPENDED, Readiness, backup_changes, changes, synced
from zomro_backup_operator.zomro import errors as z
from zomro_backup_operator.zomro.models import Schedule, ScheduleSpec, Weekday

SCHEDULE = Schedule(
    id="14",
    instance_id="5203773",
    name="MySchedule",
    days=frozenset({Weekday.MONDAY, Weekday.FRIDAY}),
    time="02:01",
    server_name="MyServer",
)


def reconciled_status() -> dict[str, object]:
    status: dict[str, object] = {}
    status.update(
        changes(status, synced(SCHEDULE), 1, schedule=SCHEDULE, now="2026-01-01T00:00:00Z")
    )
    return status


def test_first_reconcile_writes_id_server_generation_and_ready() -> None:
    status = reconciled_status()

    assert status["scheduleId"] == "14"
    assert status["serverName"] == "MyServer"
    assert status["observedGeneration"] == 1
    assert status["lastSyncTime"] == "2026-01-01T00:00:00Z"
    [ready] = cast(list[dict[str, Any]], status["conditions"])
    assert ready["status"] == "True"
    assert ready["reason"] == "Synced"
    assert "Monday, Friday at 02:01" in ready["message"]


def test_an_idle_resync_writes_nothing() -> None:
    status = reconciled_status()

    assert changes(status, synced(SCHEDULE), 1, schedule=SCHEDULE, now="2026-01-02T00:00:00Z") == {}


def test_a_new_failure_reason_updates_the_condition_and_its_transition_time() -> None:
    status = reconciled_status()

    patch = changes(
        status, Readiness(False, "ZomroUnavailable", "down"), 1, now="2026-01-03T00:00:00Z"
    )

    [ready] = patch["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "ZomroUnavailable")
    assert ready["lastTransitionTime"] == "2026-01-03T00:00:00Z"
    assert "scheduleId" not in patch


def test_a_different_message_with_the_same_status_keeps_the_transition_time() -> None:
    status = reconciled_status()
    status.update(
        changes(status, Readiness(False, "ZomroUnavailable", "a"), 1, now="2026-01-03T00:00:00Z")
    )

    patch = changes(status, Readiness(False, "AuthFailed", "b"), 1, now="2026-01-04T00:00:00Z")

    assert patch["conditions"][0]["lastTransitionTime"] == "2026-01-03T00:00:00Z"


def test_a_recorded_create_intent_is_cleared_once_the_id_is_known() -> None:
    status = {"pendingCreate": {"name": "MySchedule", "startedAt": "x"}}

    patch = changes(
        status,
        synced(SCHEDULE),
        1,
        schedule=SCHEDULE,
        clear_pending=True,
        now="2026-01-05T00:00:00Z",
    )

    assert patch["pendingCreate"] is None


@pytest.mark.parametrize(
    ("exc", "reason", "permanent"),
    [
        (InvalidSpecError("spec.time: bad"), "InvalidSpec", True),
        (
            z.InvalidValueError("bad", field_errors={"rotation_time": ["Invalid time"]}),
            "InvalidSpec",
            True,
        ),
        (CredentialsError("Secret team/zomro not found"), "CredentialsNotFound", False),
        (z.AuthenticationError("Invalid username or password"), "AuthFailed", False),
        (z.AccessDeniedError("not yours"), "InstanceNotFound", False),
        (ConflictError("taken"), "Conflict", False),
        (z.ServerError("HTTP 502"), "ZomroUnavailable", False),
        (z.ThrottledError("HTTP 460", retry_after=42), "ZomroUnavailable", False),
        (z.LoginTemporarilyBlockedError("blocklogon", retry_after=20), "ZomroUnavailable", False),
        (z.ZomroConnectionError("refused"), "ZomroUnavailable", False),
        (RuntimeError("boom"), "Error", False),
    ],
)
def test_each_failure_has_a_reason_and_a_retry_kind(
    exc: Exception, reason: str, permanent: bool
) -> None:
    failure = classify(exc)

    assert failure.reason == reason
    assert failure.permanent is permanent
    error = failure.to_kopf(retry=0)
    assert isinstance(error, kopf.PermanentError if permanent else kopf.TemporaryError)


def test_zomro_field_errors_are_named_in_the_message() -> None:
    failure = classify(z.InvalidValueError("bad", field_errors={"rotation_time": ["Invalid time"]}))
    assert "rotation_time: Invalid time" in failure.message


def test_unexpected_errors_do_not_leak_their_text_into_status() -> None:
    failure = classify(RuntimeError("password=hunter2"))
    assert "hunter2" not in failure.message


def test_retry_after_from_the_server_is_honoured() -> None:
    failure = classify(z.ThrottledError("HTTP 429", retry_after=120))
    assert failure.delay(retry=0, random=random.Random(1).random) >= 120


def test_backoff_grows_with_retries_and_stays_under_its_cap() -> None:
    failure = classify(z.ServerError("HTTP 503"))
    rng = random.Random(7)
    first, cap = TRANSIENT_BACKOFF
    delays = [failure.delay(retry=n, random=rng.random) for n in range(30)]

    assert all(first <= d <= cap for d in delays)
    assert max(delays[20:]) > max(delays[:2])


def test_failures_a_person_must_fix_never_retry_fast() -> None:
    failure = classify(CredentialsError("Secret team/zomro not found"))
    assert (
        min(failure.delay(retry=0, random=random.Random(s).random) for s in range(50))
        >= NEEDS_PERSON_BACKOFF[0]
    )


def test_a_new_next_run_alone_is_written_without_moving_last_sync_time() -> None:
    first = Timing(next_run=dt.datetime(2026, 1, 5, 0, 1, tzinfo=dt.UTC))
    status: dict[str, object] = {}
    status.update(changes(status, synced(SCHEDULE), 1, schedule=SCHEDULE, timing=first, now="T1"))
    assert status["nextRunTime"] == "2026-01-05T00:01:00Z"
    assert status["providerDays"] == ["Monday", "Friday"]
    assert status["providerTime"] == "02:01"

    after_the_run = Timing(next_run=dt.datetime(2026, 1, 9, 0, 1, tzinfo=dt.UTC))
    patch = changes(status, synced(SCHEDULE), 1, schedule=SCHEDULE, timing=after_the_run, now="T2")
    assert patch == {"nextRunTime": "2026-01-09T00:01:00Z"}
    status.update(patch)
    assert (
        changes(status, synced(SCHEDULE), 1, schedule=SCHEDULE, timing=after_the_run, now="T3")
        == {}
    )


def test_suspension_clears_what_zomro_held_and_says_suspended() -> None:
    status = reconciled_status()
    status["pendingCreate"] = {"name": "MySchedule"}

    patch = changes(status, SUSPENDED, 2, suspended=True, now="2026-01-03T00:00:00Z")

    assert patch["scheduleId"] is None
    assert patch["pendingCreate"] is None
    assert patch["providerDays"] is None
    assert patch["providerTime"] is None
    assert patch["observedGeneration"] == 2
    assert "lastSyncTime" not in patch
    [ready] = patch["conditions"]
    assert (ready["status"], ready["reason"]) == ("False", "Suspended")
    status.update(patch)
    assert changes(status, SUSPENDED, 2, suspended=True, now="2026-01-04T00:00:00Z") == {}


def test_a_converted_schedule_says_both_clocks_in_ready() -> None:
    wanted = ScheduleSpec(name="MySchedule", days=frozenset({Weekday.SUNDAY}), time="20:00")
    readiness = synced(SCHEDULE, wanted, "America/New_York")
    assert readiness.message.endswith(
        "runs Monday, Friday at 02:01 on Zomro's clock (Sunday at 20:00 America/New_York)"
    )


def test_the_ready_and_backups_healthy_conditions_never_overwrite_each_other() -> None:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    status = reconciled_status()
    assessment = Assessment(
        health=Health("Unknown", AWAITING, "the first run is due at ..."),
        expectations=Expectations(SCHEDULE.days, SCHEDULE.time, now),
        last_backup=None,
        last_successful=None,
    )
    status.update(backup_changes(status, assessment, 1, now=now))
    kinds = [c["type"] for c in cast(list[dict[str, Any]], status["conditions"])]
    assert kinds == ["Ready", "BackupsHealthy"]

    failing = changes(
        status, Readiness(False, "ZomroUnavailable", "down"), 1, now="2026-01-02T00:00:00Z"
    )
    by_kind = {c["type"]: c for c in failing["conditions"]}
    assert by_kind["Ready"]["reason"] == "ZomroUnavailable"
    assert by_kind["BackupsHealthy"]["reason"] == AWAITING
    assert backup_changes(status, assessment, 1, now=now) == {}
