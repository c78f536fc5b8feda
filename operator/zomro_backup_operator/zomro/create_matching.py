"""Telling a create's new row from the listing that follows it (Zomro's create answer carries no
id): new since the create, not taken by another create of the batch, and its name or one Zomro
could have made of it."""

from __future__ import annotations

from collections.abc import Sequence

from zomro_backup_operator.zomro.errors import AmbiguousResultError, CreatedNotListedError
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULE_EDIT
from zomro_backup_operator.zomro.models import Schedule, ScheduleSpec, may_be_stored_as


def match_created(
    listed: Sequence[Schedule],
    spec: ScheduleSpec,
    known_before: frozenset[str] | None,
    taken: set[str],
) -> Schedule:
    """Tell a create's new row from the listing: an id not seen before the create and not matched
    to another create of the batch, and its name, or (with the sent days and time) a name Zomro
    could have made of it (trimmed, whitespace collapsed, case changed, cut short). The exact
    name is preferred; an exact days/time match breaks ties between exact names."""
    new = [
        schedule
        for schedule in listed
        if schedule.id not in taken and (known_before is None or schedule.id not in known_before)
    ]
    candidates = [schedule for schedule in new if schedule.name == spec.name]
    if len(candidates) > 1:
        exact = [schedule for schedule in candidates if schedule.matches(spec)]
        if len(exact) == 1:
            return exact[0]
    if not candidates:
        candidates = [
            schedule
            for schedule in new
            if (schedule.days, schedule.time) == (spec.days, spec.time)
            and may_be_stored_as(spec.name, schedule.name)
        ]
    if len(candidates) == 1:
        return candidates[0]
    if not candidates:
        raise CreatedNotListedError(
            f"{FUNC_SCHEDULE_EDIT}: Zomro accepted the create but lists no new schedule "
            "with its name yet; list the instance later, do not create it again"
        )
    ids = tuple(sorted(schedule.id for schedule in candidates))
    raise AmbiguousResultError(
        f"{FUNC_SCHEDULE_EDIT}: created, but {len(ids)} new schedules could be it "
        f"(ids {', '.join(ids)})",
        candidate_ids=ids,
    )
