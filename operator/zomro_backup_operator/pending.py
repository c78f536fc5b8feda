"""The record of a create on its way to Zomro (``status.pendingCreate``), and how to recognise
the schedule it made in a listing, whatever Zomro did to the name.

Pure and typed: no I/O, no clock of its own. docs/design.md describes the protocol it serves.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from zomro_backup_operator.zomro.models import (
    Schedule,
    ScheduleSpec,
    Weekday,
    may_be_stored_as,
    numeric_order,
)


@dataclass(frozen=True)
class PendingCreate:
    """A create the operator decided to send: what it sent, when, and what the instance held.

    ``acknowledged`` is True once Zomro answered that it made the schedule: such a create is
    never sent again, however long the listing takes to show it. Records written by older
    versions carry only ``name`` and ``startedAt`` (``days``, ``time`` and ``known_ids`` None).
    """

    name: str
    started_at: float
    """Seconds since the epoch, just before the create was sent."""
    days: frozenset[Weekday] | None = None
    time: str | None = None
    known_ids: frozenset[str] | None = None
    """Ids the instance listed when the create was decided: the new schedule is not one of them."""
    acknowledged: bool = False

    @classmethod
    def for_spec(
        cls, spec: ScheduleSpec, *, started_at: float, known_ids: Sequence[str]
    ) -> PendingCreate:
        return cls(spec.name, started_at, spec.days, spec.time, frozenset(known_ids))

    def acknowledge(self) -> PendingCreate:
        return replace(self, acknowledged=True)

    def settles_in(self, now: float, settle: float) -> float:
        """Seconds until an unacknowledged create may be taken as never made (0 when it may)."""
        return max(0.0, self.started_at + settle - now)

    def made(self, row: Schedule) -> bool:
        """Could ``row`` be the schedule this create made? It must be new since the create, have
        the sent days and time, and a name Zomro could have made of the sent one (trimmed,
        inner whitespace collapsed, case changed, cut short)."""
        return (
            self.known_ids is not None
            and row.id not in self.known_ids
            and (row.days, row.time) == (self.days, self.time)
            and may_be_stored_as(self.name, row.name)
        )

    def candidates(self, rows: Sequence[Schedule], free: Callable[[str], bool]) -> list[Schedule]:
        """Unclaimed rows this create may have made, the likeliest first: the exact name, then the
        longest name kept, then the oldest id. Ties are indistinguishable to us: taking the first
        keeps every resource at one schedule without a second create."""
        found = [row for row in rows if free(row.id) and self.made(row)]
        return sorted(
            found,
            key=lambda row: (row.name != self.name, -len(row.name), *numeric_order(row.id)),
        )

    def to_status(self, iso: Callable[[float], str]) -> dict[str, Any]:
        """The status form; every key is always written, so a merge patch replaces it whole."""
        return {
            "name": self.name,
            "startedAt": iso(self.started_at),
            "days": [day.title for day in sorted(self.days or ())],
            "time": self.time,
            "knownIds": sorted(self.known_ids or (), key=numeric_order),
            "acknowledged": self.acknowledged,
        }

    @classmethod
    def from_status(cls, value: object) -> PendingCreate | None:
        """Read ``status.pendingCreate``; None when absent or without a name."""
        if not isinstance(value, Mapping) or not isinstance(value.get("name"), str):
            return None
        started = _epoch(value.get("startedAt"))
        days_raw, time_raw, ids_raw = value.get("days"), value.get("time"), value.get("knownIds")
        try:
            days = frozenset(Weekday.from_name(str(d)) for d in days_raw) if days_raw else None
        except (TypeError, ValueError):
            days = None
        complete = days is not None and isinstance(time_raw, str) and isinstance(ids_raw, list)
        return cls(
            name=value["name"],
            started_at=started,
            days=days if complete else None,
            time=time_raw if complete and isinstance(time_raw, str) else None,
            known_ids=frozenset(str(i) for i in ids_raw)
            if complete and isinstance(ids_raw, list)
            else None,
            acknowledged=value.get("acknowledged") is True,
        )


def _epoch(value: object) -> float:
    """An RFC 3339 time as epoch seconds; an unreadable one counts as long ago (0)."""
    if not isinstance(value, str):
        return 0.0
    try:
        parsed = datetime.datetime.fromisoformat(value)
    except ValueError:
        return 0.0
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()
