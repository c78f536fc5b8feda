"""The BackupSchedule resource as the operator reads it: typed views of spec, status, metadata."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar
from zoneinfo import ZoneInfo

from zomro_backup_operator.pending import PendingCreate
from zomro_backup_operator.time_zones import (
    UnknownTimeZoneError,
    next_run,
    parse_zone,
    provider_schedule,
)
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday, is_object_id

GROUP = "zomro.com"
VERSION = "v1alpha1"
PLURAL = "backupschedules"
KIND = "BackupSchedule"
FINALIZER = "zomro.com/finalizer"
ADOPT_ANNOTATION = "zomro.com/schedule-id"

DeletionPolicy = Literal["Delete", "Orphan"]
DELETION_POLICIES: Final[tuple[DeletionPolicy, ...]] = ("Delete", "Orphan")
"""spec.deletionPolicy of a BackupSchedule; the first is the default."""

_Choice = TypeVar("_Choice", bound=str)


class InvalidSpecError(ValueError):
    """The spec cannot be turned into a schedule; the message names the field."""


class InvalidStatusError(ValueError):
    """The status holds what the operator never writes (someone else wrote it); the message names
    the field. Nothing is sent to Zomro for such a resource until a person fixes it."""


_SHOWN = 24
"""At most this many characters of a value a user wrote are repeated in a message."""


def _shown(value: str) -> str:
    """A user's value, safe to repeat in status, Events and logs: bounded, one line."""
    text = value if len(value) <= _SHOWN else value[: _SHOWN - 1] + "…"
    return repr(text)


def _object_id(value: object, *, field: str, error: type[ValueError]) -> str:
    text = str(value)
    if not is_object_id(text):
        raise error(f"{field} must be 1-20 digits without a leading zero, got {_shown(text)}")
    return text


def secret_name(spec: Mapping[str, Any]) -> str | None:
    """``spec.credentialsSecretRef.name``; None when the resource names no Secret of its own."""
    secret = spec.get("credentialsSecretRef") or {}
    return (secret.get("name") or None) if isinstance(secret, Mapping) else None


def spec_instance_id(spec: Mapping[str, Any]) -> str:
    """``spec.instanceId``, checked: every kind's spec names its instance so."""
    return _object_id(spec.get("instanceId", ""), field="spec.instanceId", error=InvalidSpecError)


def spec_choice(spec: Mapping[str, Any], key: str, choices: Sequence[_Choice]) -> _Choice:
    """``spec.<key>``, one of ``choices``; the first when the spec leaves it out."""
    value = spec.get(key) or choices[0]
    for choice in choices:
        if value == choice:
            return choice
    raise InvalidSpecError(f"spec.{key} must be {' or '.join(choices)}, got {value!r}")


@dataclass(frozen=True, kw_only=True)
class InstanceRequest:
    """What a resource of any of the operator's kinds names: itself, the instance it acts on and
    the Secret of that instance's account. Each kind's request adds what its spec asks for."""

    namespace: str
    name: str
    generation: int
    instance_id: str
    secret_name: str | None = None

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Timing:
    """When a schedule runs, and until when what Zomro holds for it stays right."""

    next_run: dt.datetime
    """The next run, in UTC: on the user's clock with spec.timeZone, else on Zomro's."""
    changes_at: dt.datetime | None = None
    """When the days and time Zomro must hold change (a daylight-saving transition of either
    zone moves the conversion); None without spec.timeZone, or when nothing changes within
    ``time_zones.CHANGE_HORIZON``."""


@dataclass(frozen=True, kw_only=True)
class Desired(InstanceRequest):
    """What one BackupSchedule asks for. ``schedule`` is what Zomro must hold now, on its own
    clock: the spec's days and time, converted from spec.timeZone when that is set."""

    schedule: ScheduleSpec
    deletion_policy: DeletionPolicy = "Delete"
    adopt_id: str | None = None
    suspend: bool = False
    time_zone: str | None = None
    """spec.timeZone as written (None: the days and time are on Zomro's clock)."""
    wanted: ScheduleSpec | None = None
    """The spec's own days and time, when spec.timeZone converts them into ``schedule``."""
    timing: Timing | None = None
    """None while suspended or being deleted: nothing runs."""

    @classmethod
    def from_resource(
        cls,
        *,
        namespace: str,
        name: str,
        generation: int,
        spec: Mapping[str, Any],
        annotations: Mapping[str, str],
        at: dt.datetime,
        provider_zone: ZoneInfo,
        deleting: bool = False,
    ) -> Desired:
        """Read a resource at the instant ``at``, for Zomro's clock in ``provider_zone``; the API
        server's schema already checked most of this, but not all clusters run our schema
        version, so check again and name the field.

        ``deleting``: the adoption annotation and spec.timeZone are not read, so that a bad one
        cannot hold up the deletion (they only matter while a schedule runs). A suspended
        resource's spec.timeZone is not read either: nothing is sent to Zomro for it."""
        instance_id = spec_instance_id(spec)
        try:
            days = frozenset(Weekday.from_name(str(day)) for day in spec.get("days") or [])
        except ValueError as exc:
            raise InvalidSpecError(f"spec.days: {exc}") from None
        try:
            schedule = ScheduleSpec(
                name=str(spec.get("scheduleName") or name),
                days=days,
                time=str(spec.get("time", "")),
            )
        except ValueError as exc:
            raise InvalidSpecError(f"spec: {exc}") from None
        policy = spec_choice(spec, "deletionPolicy", DELETION_POLICIES)
        adopt_id = None if deleting else (annotations.get(ADOPT_ANNOTATION) or "").strip() or None
        if adopt_id is not None:
            adopt_id = _object_id(
                adopt_id, field=f"annotation {ADOPT_ANNOTATION}", error=InvalidSpecError
            )
        suspend = spec.get("suspend") is True
        zone_name = spec.get("timeZone") or None
        wanted: ScheduleSpec | None = None
        timing: Timing | None = None
        if not (deleting or suspend):
            schedule, wanted, timing = _on_zomros_clock(schedule, zone_name, at, provider_zone)
        return cls(
            namespace=namespace,
            name=name,
            generation=generation,
            instance_id=instance_id,
            schedule=schedule,
            deletion_policy=policy,
            adopt_id=adopt_id,
            secret_name=secret_name(spec),
            suspend=suspend,
            time_zone=str(zone_name) if zone_name is not None else None,
            wanted=wanted,
            timing=timing,
        )


def _on_zomros_clock(
    spec: ScheduleSpec, zone_name: object, at: dt.datetime, provider_zone: ZoneInfo
) -> tuple[ScheduleSpec, ScheduleSpec | None, Timing]:
    """(what Zomro must hold at ``at``, the spec's own schedule if converted, the timing)."""
    if zone_name is None:
        return spec, None, Timing(next_run(spec.days, spec.time, provider_zone, at))
    try:
        zone = parse_zone(str(zone_name), "spec.timeZone")
    except UnknownTimeZoneError:
        # The name is the user's own text, which may be anything an old schema let through.
        raise InvalidSpecError(
            f"spec.timeZone: unknown time zone {_shown(str(zone_name))} "
            "(an IANA name such as Europe/Berlin)"
        ) from None
    held = provider_schedule(spec.days, spec.time, zone, provider_zone, at)
    timing = Timing(next_run(spec.days, spec.time, zone, at), held.changes_at)
    return ScheduleSpec(name=spec.name, days=held.days, time=held.time), spec, timing


@dataclass(frozen=True)
class Observed:
    """What the resource's status says the operator last did."""

    schedule_id: str | None = None
    pending: PendingCreate | None = None
    observed_generation: int | None = None
    ready_reason: str | None = None
    schedule_name: str | None = None
    """The name as Zomro last listed it (or as last written)."""
    provider: tuple[frozenset[Weekday], str] | None = None
    """status.providerDays and providerTime: the days and time last written to Zomro."""

    @classmethod
    def from_status(cls, status: Mapping[str, Any]) -> Observed:
        pending = status.get("pendingCreate")
        ready: Mapping[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Ready"),
            {},
        )
        generation = status.get("observedGeneration")
        schedule_id = status.get("scheduleId")
        return cls(
            # Whoever can write status could put "14, 15" here, which Zomro reads as two ids.
            schedule_id=(
                _object_id(schedule_id, field="status.scheduleId", error=InvalidStatusError)
                if schedule_id
                else None
            ),
            pending=PendingCreate.from_status(pending),
            observed_generation=int(generation) if generation is not None else None,
            ready_reason=ready.get("reason"),
            schedule_name=status.get("scheduleName"),
            provider=_provider(status.get("providerDays"), status.get("providerTime")),
        )


def _provider(days: object, time: object) -> tuple[frozenset[Weekday], str] | None:
    if not isinstance(days, list) or not isinstance(time, str):
        return None
    try:
        return frozenset(Weekday.from_name(str(day)) for day in days), time
    except ValueError:
        return None


def ready_at_generation(body: Mapping[str, Any]) -> bool:
    """Whether a BackupSchedule says Ready=True for its current generation (the condition and
    status.observedGeneration both at metadata.generation): what a user waits for."""
    generation = (body.get("metadata") or {}).get("generation")
    status = body.get("status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return bool(
                condition.get("status") == "True"
                and condition.get("observedGeneration") == generation
                and status.get("observedGeneration") == generation
            )
    return False
