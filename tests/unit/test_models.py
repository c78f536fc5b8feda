import pytest

from zomro_backup_operator.zomro.models import (
    ScheduleSpec,
    Weekday,
    format_days,
    validate_time,
)
from zomro_backup_operator.zomro.wire import parse_listed_days


def test_sunday_is_day_zero_as_zomro_numbers_the_week() -> None:
    assert int(Weekday.SUNDAY) == 0
    assert int(Weekday.MONDAY) == 1
    assert int(Weekday.SATURDAY) == 6


def test_listing_form_with_trailing_space_parses_to_the_same_set() -> None:
    listed = "Monday Tuesday Wednesday Thursday Friday Saturday "
    assert parse_listed_days(listed) == frozenset(Weekday(d) for d in range(1, 7))


def test_request_form_is_sorted_comma_list_of_numbers() -> None:
    days = {Weekday.FRIDAY, Weekday.SUNDAY, Weekday.MONDAY}
    assert format_days(days) == "0,1,5"


@pytest.mark.parametrize("bad", ["24:00", "2:01", "02:60", "0201", "", "02:01 "])
def test_times_outside_hh_mm_24h_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="HH:MM"):
        validate_time(bad)


def test_a_name_over_sixty_characters_is_refused() -> None:
    with pytest.raises(ValueError, match="1-60"):
        ScheduleSpec(name="x" * 61, days=frozenset({Weekday.MONDAY}), time="02:01")
