"""Schedules across time zones: what Zomro must hold, when that changes, next runs, zone names.

The oracles here do not reuse the module's logic: ``shown`` finds the instants at which a
zone's clock reads a given day and time from the zone's offsets alone, the transitions come
from scanning those offsets, and the hand-checked rows state their arithmetic in comments.
"""

from __future__ import annotations

import ast
import datetime as dt
import functools
import inspect
import re
from collections.abc import Iterable
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import examples

from zomro_backup_operator import time_zones
from zomro_backup_operator.time_zones import (
    DEFAULT_PROVIDER_ZONE,
    FIXED_UTC_PLUS_3,
    ZONE_NAME_MAX_LENGTH,
    ZONE_NAME_PATTERN,
    UnknownTimeZoneError,
    format_rfc3339,
    next_run,
    parse_zone,
    provider_schedule,
)
from zomro_backup_operator.zomro.models import Weekday

USER_ZONES = (
    "UTC",
    "Europe/Berlin",
    "Europe/London",
    "America/New_York",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Sydney",
)
PROVIDER_ZONES = (FIXED_UTC_PLUS_3, DEFAULT_PROVIDER_ZONE)
# Short names for the hand-checked tables.
P3, KYIV = FIXED_UTC_PLUS_3, DEFAULT_PROVIDER_ZONE
BERLIN, LONDON = "Europe/Berlin", "Europe/London"
NEW_YORK, SYDNEY = "America/New_York", "Australia/Sydney"
EVERY_DAY = frozenset(Weekday)
WORKDAYS = frozenset({Weekday.MONDAY, Weekday.TUESDAY, Weekday.WEDNESDAY, Weekday.THURSDAY})
SUN, MON, SAT = Weekday.SUNDAY, Weekday.MONDAY, Weekday.SATURDAY
# Wall times near the hours at which these zones change their clocks (01:00-04:00 local).
TIMES_NEAR_TRANSITIONS = ("00:30", "01:30", "02:30", "03:00", "03:30", "23:30")
YEARS_2026_2027 = (dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2028, 1, 1, tzinfo=dt.UTC))
HOUR, DAY = dt.timedelta(hours=1), dt.timedelta(days=1)


def zone(name: str) -> ZoneInfo:
    return parse_zone(name, "spec.timeZone")


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=dt.UTC)


def offset(zone_name: str, instant: dt.datetime) -> dt.timedelta:
    value = instant.astimezone(zone(zone_name)).utcoffset()
    assert value is not None
    return value


@functools.cache
def transitions(zone_name: str, start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, ...]:
    """The instants in [start, end) from which the zone's offset differs from the minute before."""
    found, instant = [], start
    while instant < end:
        if offset(zone_name, instant) != offset(zone_name, instant + HOUR):
            minute = next(
                instant + dt.timedelta(minutes=m)
                for m in range(1, 61)
                if offset(zone_name, instant + dt.timedelta(minutes=m))
                != offset(zone_name, instant)
            )
            found.append(minute)
        instant += HOUR
    return tuple(found)


def shown(
    zone_name: str, days: Iterable[Weekday], time: str, start: dt.datetime, end: dt.datetime
) -> set[dt.datetime]:
    """Every instant in [start, end) at which the zone's clock reads one of ``days`` at ``time``:
    each local date's wall time, minus each offset the zone has around then, kept if the clock
    does read it then (none in a skipped hour, two in a repeated one)."""
    hours, minutes = map(int, time.split(":"))
    offsets = {offset(zone_name, start + n * HOUR) for n in range(int((end - start) / HOUR) + 1)}
    found, day = set(), start.date() - 2 * DAY
    while day <= end.date() + 2 * DAY:
        wall = dt.datetime.combine(day, dt.time(hours, minutes))
        for off in offsets:
            instant = wall.replace(tzinfo=dt.UTC) - off
            local = instant.astimezone(zone(zone_name))
            if (
                start <= instant < end
                and local.replace(tzinfo=None) == wall
                and Weekday.from_name(local.strftime("%A")) in days
            ):
                found.add(instant)
        day += DAY
    return found


def zomro_runs(
    days: frozenset[Weekday],
    time: str,
    user_zone: str,
    provider_zone: str,
    start: dt.datetime,
    end: dt.datetime,
) -> list[dt.datetime]:
    """When Zomro runs in [start, end) if the operator always holds what provider_schedule says
    and changes it exactly at ``changes_at``; Zomro's clock shows its (days, time) as any clock."""
    runs: list[dt.datetime] = []
    at = start
    while at < end:
        held = provider_schedule(days, time, zone(user_zone), zone(provider_zone), at)
        assert held.changes_at is None or held.changes_at > at
        until = end if held.changes_at is None else min(held.changes_at, end)
        runs += sorted(shown(provider_zone, held.days, held.time, at, until))
        at = until
    return runs


def by_offsets(
    days: frozenset[Weekday], time: str, user_zone: str, provider_zone: str, at: dt.datetime
) -> tuple[frozenset[Weekday], str]:
    """Plain arithmetic with both zones' offsets at ``at``: the value that holds away from any
    transition."""
    hours, minutes = map(int, time.split(":"))
    shifted = (
        hours * 60
        + minutes
        + (offset(provider_zone, at) - offset(user_zone, at)) // dt.timedelta(minutes=1)
    )
    shift, minute = divmod(shifted, 24 * 60)
    moved = frozenset(Weekday((int(day) + shift) % 7) for day in days)
    return moved, f"{minute // 60:02d}:{minute % 60:02d}"


# --- the transitions themselves ------------------------------------------------------------


def test_the_transitions_scanned_from_tzdata_are_the_ones_known_for_2026_and_2027() -> None:
    # EU: last Sunday of March and of October at 01:00 UTC (2026-03-29, 2026-10-25, 2027-03-28,
    # 2027-10-31). US: second Sunday of March 02:00 EST = 07:00 UTC, first Sunday of November
    # 02:00 EDT = 06:00 UTC. Sydney: first Sunday of April 03:00 AEDT = 16:00 UTC the day before,
    # first Sunday of October 02:00 AEST = 16:00 UTC the day before.
    eu = [utc(2026, 3, 29, 1), utc(2026, 10, 25, 1), utc(2027, 3, 28, 1), utc(2027, 10, 31, 1)]
    expected = {
        "UTC": [],
        "Asia/Kolkata": [],
        "Asia/Kathmandu": [],
        FIXED_UTC_PLUS_3: [],
        "Europe/Berlin": eu,
        "Europe/London": eu,
        DEFAULT_PROVIDER_ZONE: eu,
        "America/New_York": [
            utc(2026, 3, 8, 7),
            utc(2026, 11, 1, 6),
            utc(2027, 3, 14, 7),
            utc(2027, 11, 7, 6),
        ],
        "Australia/Sydney": [
            utc(2026, 4, 4, 16),
            utc(2026, 10, 3, 16),
            utc(2027, 4, 3, 16),
            utc(2027, 10, 2, 16),
        ],
    }
    assert {name: list(transitions(name, *YEARS_2026_2027)) for name in expected} == expected


# --- hand-checked conversions --------------------------------------------------------------


@pytest.mark.parametrize(
    ("days", "time", "user_zone", "provider_zone", "at", "expected_days", "expected_time"),
    [
        # Sunday 23:30 UTC is Monday 02:30 at UTC+3, all year.
        ({SUN}, "23:30", "UTC", P3, utc(2026, 1, 5), {MON}, "02:30"),
        ({SUN}, "23:30", "UTC", P3, utc(2026, 7, 5), {MON}, "02:30"),
        # London in winter is UTC+0: Monday 01:00 is 01:00 UTC, 04:00 at UTC+3.
        ({MON}, "01:00", LONDON, P3, utc(2026, 1, 5), {MON}, "04:00"),
        # In summer (BST, +1) it is 00:00 UTC, 03:00 at UTC+3.
        ({MON}, "01:00", LONDON, P3, utc(2026, 7, 5), {MON}, "03:00"),
        # Kyiv (+2/+3) and London (+0/+1) change on the same instant: always two hours apart.
        ({MON}, "01:00", LONDON, KYIV, utc(2026, 1, 5), {MON}, "03:00"),
        ({MON}, "01:00", LONDON, KYIV, utc(2026, 7, 5), {MON}, "03:00"),
        # Berlin workdays 02:30: winter (+1) 01:30 UTC = 04:30 at +3; summer (+2) 03:30.
        (WORKDAYS, "02:30", BERLIN, P3, utc(2026, 2, 1), WORKDAYS, "04:30"),
        (WORKDAYS, "02:30", BERLIN, P3, utc(2026, 8, 1), WORKDAYS, "03:30"),
        # New York Friday 22:00: EST (-5) is Saturday 03:00 UTC = 06:00 at +3; EDT (-4) 05:00.
        ({Weekday.FRIDAY}, "22:00", NEW_YORK, P3, utc(2026, 1, 5), {SAT}, "06:00"),
        ({Weekday.FRIDAY}, "22:00", NEW_YORK, P3, utc(2026, 7, 5), {SAT}, "05:00"),
        # Kolkata (+05:30) Monday 01:00 is Sunday 19:30 UTC: 22:30 at +3, 21:30 / 22:30 in Kyiv.
        ({MON}, "01:00", "Asia/Kolkata", P3, utc(2026, 1, 5), {SUN}, "22:30"),
        ({MON}, "01:00", "Asia/Kolkata", KYIV, utc(2026, 1, 5), {SUN}, "21:30"),
        ({MON}, "01:00", "Asia/Kolkata", KYIV, utc(2026, 7, 5), {SUN}, "22:30"),
        # Kathmandu (+05:45) Monday 01:00 is Sunday 19:15 UTC: 22:15 at +3.
        ({MON}, "01:00", "Asia/Kathmandu", P3, utc(2026, 7, 5), {SUN}, "22:15"),
        # Kathmandu Sunday and Monday 04:00 is 22:15 UTC the day before: 01:15 at +3, same days.
        ({SUN, MON}, "04:00", "Asia/Kathmandu", P3, utc(2026, 7, 5), {SUN, MON}, "01:15"),
        # Sydney Monday 01:00: January AEDT (+11) is Sunday 14:00 UTC = 17:00 at +3 = 16:00 Kyiv
        # (+2); July AEST (+10) is Sunday 15:00 UTC = 18:00 at +3 = 18:00 Kyiv (+3).
        ({MON}, "01:00", SYDNEY, P3, utc(2026, 1, 5), {SUN}, "17:00"),
        ({MON}, "01:00", SYDNEY, P3, utc(2026, 7, 5), {SUN}, "18:00"),
        ({MON}, "01:00", SYDNEY, KYIV, utc(2026, 1, 5), {SUN}, "16:00"),
        ({MON}, "01:00", SYDNEY, KYIV, utc(2026, 7, 5), {SUN}, "18:00"),
    ],
)
def test_a_weekly_time_converts_to_the_providers_clock_with_days_moving_across_midnight(
    days: set[Weekday],
    time: str,
    user_zone: str,
    provider_zone: str,
    at: dt.datetime,
    expected_days: set[Weekday],
    expected_time: str,
) -> None:
    held = provider_schedule(days, time, zone(user_zone), zone(provider_zone), at)
    assert (held.days, held.time) == (frozenset(expected_days), expected_time)


@pytest.mark.parametrize(
    ("time", "user_zone", "provider_zone", "at", "before", "changes_at", "after"),
    [
        # Berlin daily 03:30 at UTC+3, autumn 2026 (Berlin +2 -> +1 on Sunday 25 Oct 01:00 UTC).
        # Saturday's run is 01:30 UTC (04:30 at +3); Sunday's is 02:30 UTC (05:30 at +3).
        # 05:30 last fires on Saturday 02:30 UTC; 04:30 would next fire Sunday 01:30 UTC. The
        # span Sat 02:30 - Sun 01:30 has its middle at Saturday 14:00 UTC.
        ("03:30", BERLIN, P3, utc(2026, 10, 20), "04:30", utc(2026, 10, 24, 14), "05:30"),
        # Berlin daily 03:00, spring 2026: Sunday's run (03:00 CEST) is the very instant of the
        # transition, 01:00 UTC, so changing at the transition would leave no time at all.
        # Saturday's run is 02:00 UTC (05:00 at +3); 04:00 at +3 last fired Saturday 01:00 UTC.
        # Span Sat 02:00 - Sun 01:00 UTC: middle Saturday 13:30 UTC.
        ("03:00", BERLIN, P3, utc(2026, 3, 20), "05:00", utc(2026, 3, 28, 13, 30), "04:00"),
        # Berlin daily 02:30, spring 2026: Sunday has no 02:30, so no run (CronJob's rule).
        # Saturday 01:30 UTC (04:30 at +3), then Monday 00:30 UTC (03:30 at +3). 04:30 would fire
        # Sunday 01:30 UTC and 03:30 Sunday 00:30 UTC: the span is Sun 00:30 - 01:30, middle 01:00.
        ("02:30", BERLIN, P3, utc(2026, 3, 20), "04:30", utc(2026, 3, 29, 1), "03:30"),
        # Berlin daily 02:30, autumn 2026: 02:30 happens twice on Sunday (00:30 and 01:30 UTC),
        # both run (CronJob's rule): 03:30 at +3 for the first, 04:30 for the second.
        ("02:30", BERLIN, P3, utc(2026, 10, 20), "03:30", utc(2026, 10, 25, 1), "04:30"),
        # UTC daily 00:30 in Kyiv, autumn 2026: Sunday 00:30 UTC is 03:30 EEST, inside Kyiv's
        # repeated hour (04:00 EEST -> 03:00 EET at 01:00 UTC). 03:30 would fire again at 01:30
        # UTC, so the change to 02:30 comes before: middle of 00:30 - 01:30 UTC.
        ("00:30", "UTC", KYIV, utc(2026, 10, 20), "03:30", utc(2026, 10, 25, 1), "02:30"),
        # UTC daily 01:30 in Kyiv, spring 2026: Saturday 03:30 EET, Sunday 04:30 EEST. 04:30 last
        # fired Saturday 02:30 UTC; 03:30 next exists Monday. Span Sat 02:30 - Sun 01:30 UTC.
        ("01:30", "UTC", KYIV, utc(2026, 3, 20), "03:30", utc(2026, 3, 28, 14), "04:30"),
        # New York daily 01:30, autumn 2026: 01:30 EDT = 05:30 UTC and 01:30 EST = 06:30 UTC on
        # Sunday 1 Nov, both run: 08:30 then 09:30 at +3, changing at 06:00 UTC between them.
        ("01:30", NEW_YORK, P3, utc(2026, 10, 28), "08:30", utc(2026, 11, 1, 6), "09:30"),
    ],
)
def test_the_value_changes_once_in_the_middle_of_the_safe_span_around_a_transition(
    time: str,
    user_zone: str,
    provider_zone: str,
    at: dt.datetime,
    before: str,
    changes_at: dt.datetime,
    after: str,
) -> None:
    user, provider = zone(user_zone), zone(provider_zone)
    held = provider_schedule(EVERY_DAY, time, user, provider, at)
    assert (held.time, held.changes_at) == (before, changes_at)
    assert (
        provider_schedule(EVERY_DAY, time, user, provider, changes_at - dt.timedelta(seconds=1))
        == held
    )
    assert provider_schedule(EVERY_DAY, time, user, provider, changes_at).time == after


@pytest.mark.parametrize(
    ("user_zone", "provider_zone"),
    [
        ("UTC", P3),
        ("Asia/Kolkata", P3),
        ("Asia/Kathmandu", P3),
        (BERLIN, KYIV),
        (LONDON, KYIV),
    ],
)
def test_zones_that_keep_their_distance_never_need_an_update(
    user_zone: str, provider_zone: str
) -> None:
    # Neither zone changes, or both change on the same instant by the same hour (EU rules).
    held = provider_schedule(
        WORKDAYS, "02:30", zone(user_zone), zone(provider_zone), utc(2026, 1, 1)
    )
    assert held.changes_at is None


# --- every transition of 2026 and 2027 -----------------------------------------------------


def _transition_rows() -> list[tuple[str, str, dt.datetime]]:
    return [
        (user, provider, instant)
        for user in USER_ZONES
        for provider in PROVIDER_ZONES
        for instant in sorted(
            set(transitions(user, *YEARS_2026_2027)) | set(transitions(provider, *YEARS_2026_2027))
        )
    ]


@pytest.mark.parametrize(("user_zone", "provider_zone", "transition"), _transition_rows())
def test_across_every_transition_zomro_runs_exactly_when_the_users_clock_says(
    user_zone: str, provider_zone: str, transition: dt.datetime
) -> None:
    user, provider = zone(user_zone), zone(provider_zone)
    week_before, week_after = transition - 3 * DAY, transition + 3 * DAY
    for days in (EVERY_DAY, WORKDAYS):
        for time in TIMES_NEAR_TRANSITIONS:
            wanted = sorted(shown(user_zone, days, time, week_before, week_after))
            assert (
                zomro_runs(days, time, user_zone, provider_zone, week_before, week_after) == wanted
            )
            # Away from the transition the value is plain offset arithmetic.
            for at in (week_before, week_after):
                held = provider_schedule(days, time, user, provider, at)
                assert (held.days, held.time) == by_offsets(
                    days, time, user_zone, provider_zone, at
                )
    # For a daily schedule the change (if any) comes within a day of the transition.
    held = provider_schedule(EVERY_DAY, "02:30", user, provider, week_before)
    if by_offsets(EVERY_DAY, "02:30", user_zone, provider_zone, week_after)[1] != held.time:
        assert held.changes_at is not None
        assert abs(held.changes_at - transition) <= DAY


# --- the property --------------------------------------------------------------------------

ALL_TRANSITIONS = sorted(
    {
        instant
        for name in USER_ZONES + PROVIDER_ZONES
        for instant in transitions(name, *YEARS_2026_2027)
    }
)


@st.composite
def starts(draw: st.DrawFn) -> dt.datetime:
    """Any minute of 2026-2027, or one within a week before a transition of either kind."""
    if draw(st.booleans()):
        transition = draw(st.sampled_from(ALL_TRANSITIONS))
        return transition - dt.timedelta(minutes=draw(st.integers(0, 7 * 24 * 60)))
    return YEARS_2026_2027[0] + dt.timedelta(minutes=draw(st.integers(0, 102 * 7 * 24 * 60)))


@settings(max_examples=examples(150), deadline=None)
@given(
    days=st.frozensets(st.sampled_from(list(Weekday)), min_size=1),
    hour=st.integers(0, 23),
    minute=st.sampled_from([0, 1, 15, 29, 30, 45, 59]),
    user_zone=st.sampled_from(USER_ZONES),
    provider_zone=st.sampled_from(PROVIDER_ZONES),
    start=starts(),
)
def test_every_wanted_instant_of_the_week_maps_to_exactly_one_zomro_run(
    days: frozenset[Weekday],
    hour: int,
    minute: int,
    user_zone: str,
    provider_zone: str,
    start: dt.datetime,
) -> None:
    time, end = f"{hour:02d}:{minute:02d}", start + 8 * DAY
    # "Wanted" is CronJob's rule: each instant the user's clock reads a wanted day and time,
    # so a skipped time gives none that day and a repeated one two.
    wanted = sorted(shown(user_zone, days, time, start, end))
    runs = zomro_runs(days, time, user_zone, provider_zone, start, end)
    assert runs == wanted
    assert next_run(days, time, zone(user_zone), start - dt.timedelta(seconds=1)) == min(
        shown(user_zone, days, time, start, start + 15 * DAY)
    )


# --- the user's own gap and fold, and next runs --------------------------------------------


@pytest.mark.parametrize(
    ("days", "time", "zone_name", "after", "expected"),
    [
        # Berlin skips 02:00-03:00 on 29 Mar 2026: no 02:30 that day, next is Monday 02:30 CEST.
        (EVERY_DAY, "02:30", "Europe/Berlin", utc(2026, 3, 28, 12), utc(2026, 3, 30, 0, 30)),
        # 03:00 CEST on that Sunday exists: it is the transition instant, 01:00 UTC.
        (EVERY_DAY, "03:00", "Europe/Berlin", utc(2026, 3, 28, 12), utc(2026, 3, 29, 1)),
        # Berlin repeats 02:00-03:00 on 25 Oct 2026: 02:30 CEST (00:30 UTC), then 02:30 CET.
        (EVERY_DAY, "02:30", "Europe/Berlin", utc(2026, 10, 24, 12), utc(2026, 10, 25, 0, 30)),
        (EVERY_DAY, "02:30", "Europe/Berlin", utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 1, 30)),
        (EVERY_DAY, "02:30", "Europe/Berlin", utc(2026, 10, 25, 1, 30), utc(2026, 10, 26, 1, 30)),
        # A weekly Sunday 02:30 in New York skipped on 8 Mar 2026 comes a week later (EDT, -4).
        ({SUN}, "02:30", "America/New_York", utc(2026, 3, 7), utc(2026, 3, 15, 6, 30)),
        # Without a user zone the provider's clock is used: Monday 02:30 at +3 is 23:30 UTC Sunday.
        ({MON}, "02:30", FIXED_UTC_PLUS_3, utc(2026, 1, 1), utc(2026, 1, 4, 23, 30)),
        # Kyiv in July (+3): the same; in January (+2) it is 00:30 UTC Monday.
        ({MON}, "02:30", DEFAULT_PROVIDER_ZONE, utc(2026, 7, 1), utc(2026, 7, 5, 23, 30)),
        ({MON}, "02:30", DEFAULT_PROVIDER_ZONE, utc(2026, 1, 1), utc(2026, 1, 5, 0, 30)),
        # Strictly after: a run at exactly `after` is not the next one.
        ({MON}, "02:30", FIXED_UTC_PLUS_3, utc(2026, 1, 4, 23, 30), utc(2026, 1, 11, 23, 30)),
    ],
)
def test_next_run_follows_cronjobs_rule_for_skipped_and_repeated_times(
    days: set[Weekday], time: str, zone_name: str, after: dt.datetime, expected: dt.datetime
) -> None:
    assert next_run(days, time, zone(zone_name), after) == expected


def test_next_run_is_in_utc_whatever_zone_after_is_given_in() -> None:
    after = dt.datetime(2026, 1, 1, 12, tzinfo=zone("Asia/Kolkata"))
    run = next_run({MON}, "02:30", zone(FIXED_UTC_PLUS_3), after)
    assert run.tzinfo is dt.UTC


# --- status formatting, inputs -------------------------------------------------------------


def test_rfc3339_is_utc_to_the_second_with_a_z() -> None:
    instant = dt.datetime(2026, 3, 29, 3, 0, 59, 999999, tzinfo=zone("Europe/Berlin"))
    assert format_rfc3339(instant) == "2026-03-29T01:00:59Z"


def test_naive_instants_are_refused_rather_than_read_as_the_hosts_time() -> None:
    with pytest.raises(ValueError, match="aware"):
        format_rfc3339(dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        next_run({MON}, "02:30", zone("UTC"), dt.datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        provider_schedule({MON}, "02:30", zone("UTC"), zone("UTC"), dt.datetime(2026, 1, 1))


@pytest.mark.parametrize(("days", "time"), [(set(), "02:30"), ({MON}, "2:30"), ({MON}, "24:00")])
def test_a_schedule_needs_a_day_and_an_hh_mm_time(days: set[Weekday], time: str) -> None:
    with pytest.raises(ValueError, match=r"day|time"):
        provider_schedule(days, time, zone("UTC"), zone("UTC"), utc(2026, 1, 1))


# --- zone names ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["Europe/Berln", "europe/berlin", "", "Europe", "localtime", " UTC"]
)
def test_an_unknown_zone_is_refused_with_the_field_named(name: str) -> None:
    with pytest.raises(UnknownTimeZoneError, match=r"^spec\.timeZone: unknown time zone") as caught:
        parse_zone(name, "spec.timeZone")
    assert (caught.value.field, caught.value.name) == ("spec.timeZone", name)


def test_a_zone_is_read_from_tzdata_under_its_own_name() -> None:
    assert str(parse_zone("America/New_York", "spec.timeZone")) == "America/New_York"


def test_every_tzdata_name_fits_the_crd_pattern() -> None:
    names = time_zones._tzdata_names()
    assert len(names) > 500
    assert all(re.fullmatch(ZONE_NAME_PATTERN, name) for name in names)
    assert max(map(len, names)) <= ZONE_NAME_MAX_LENGTH


@pytest.mark.parametrize(
    "name",
    ["", "/etc/localtime", "../etc/passwd", "Europe/", "Europe//Berlin", " UTC", "Europe/Berlin\n"],
)
def test_the_crd_pattern_refuses_what_cannot_be_a_zone_name(name: str) -> None:
    assert not re.fullmatch(ZONE_NAME_PATTERN, name)


def test_the_default_provider_zone_is_gmt_plus_3_in_summer_and_moves_with_daylight_saving() -> None:
    assert offset(DEFAULT_PROVIDER_ZONE, utc(2026, 7, 1)) == 3 * HOUR
    assert offset(DEFAULT_PROVIDER_ZONE, utc(2026, 1, 1)) == 2 * HOUR
    assert offset(FIXED_UTC_PLUS_3, utc(2026, 1, 1)) == offset(FIXED_UTC_PLUS_3, utc(2026, 7, 1))


def test_the_time_zone_core_imports_nothing_of_kubernetes_or_the_zomro_client() -> None:
    tree = ast.parse(inspect.getsource(time_zones))
    imported = {
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    operator_modules = {
        name for name in imported if name and name.startswith("zomro_backup_operator")
    }
    assert operator_modules == {"zomro_backup_operator.zomro.models"}
    assert not {name for name in imported if name and name.split(".")[0] in {"kopf", "kubernetes"}}
