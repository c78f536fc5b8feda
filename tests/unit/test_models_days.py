"""Day mapping between Zomro's request form (numbers) and its listing form (English names)."""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable

from hypothesis import given
from hypothesis import strategies as st

from zomro_backup_operator.zomro.models import Weekday, format_days
from zomro_backup_operator.zomro.wire import parse_listed_days

ZOMRO_WEEK = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")
ALL_SUBSETS = [
    frozenset(combo)
    for size in range(1, 8)
    for combo in itertools.combinations(list(Weekday), size)
]


_CASES: list[Callable[[str], str]] = [str.lower, str.upper, str.title, str.strip]


def _listing(days: frozenset[Weekday]) -> str:
    """How Zomro lists days: names in week order, each followed by a space."""
    return "".join(f"{ZOMRO_WEEK[int(day)]} " for day in sorted(days))


def test_every_day_has_zomros_number_and_name() -> None:
    assert [(int(day), day.title) for day in Weekday] == list(enumerate(ZOMRO_WEEK))


def test_every_subset_round_trips_through_request_and_listing_forms() -> None:
    assert len(ALL_SUBSETS) == 127
    for days in ALL_SUBSETS:
        sent = format_days(days)
        assert parse_listed_days(sent) == days
        assert parse_listed_days(_listing(days)) == days


def test_the_seeds_numbers_mean_monday_to_saturday() -> None:
    assert parse_listed_days("1,2,3,4,5,6") == parse_listed_days(
        "Monday Tuesday Wednesday Thursday Friday Saturday "
    )


@given(
    st.sampled_from(ALL_SUBSETS),
    st.randoms(use_true_random=False),
    st.lists(st.sampled_from([" ", "  ", "\t", "\n"]), min_size=8, max_size=8),
    st.sampled_from(_CASES),
)
def test_listing_parses_in_any_order_spacing_and_case(
    days: frozenset[Weekday], rnd: random.Random, gaps: list[str], case: Callable[[str], str]
) -> None:
    names = [ZOMRO_WEEK[int(day)] for day in days]
    rnd.shuffle(names)
    text = gaps[0] + "".join(case(name) + gaps[i + 1] for i, name in enumerate(names))
    assert parse_listed_days(text) == days


@given(st.lists(st.sampled_from(list(Weekday)), min_size=1, max_size=20))
def test_request_form_is_sorted_unique_numbers_whatever_the_input_order(
    days: list[Weekday],
) -> None:
    sent = format_days(days)
    numbers = [int(part) for part in sent.split(",")]
    assert numbers == sorted(set(numbers))
    assert {Weekday(n) for n in numbers} == set(days)
