"""The operator's clock: the wall clock, moved by the offset file when one is set."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import pytest

from zomro_backup_operator.clock import OFFSET_POLL_SECONDS, Clock, ClockError
from zomro_backup_operator.settings import Settings, SettingsError

NOON = dt.datetime(2026, 3, 29, 12, 0, tzinfo=dt.UTC)


def fixed_wall(at: dt.datetime = NOON) -> Clock:
    return Clock(wall=lambda: at)


def test_without_an_offset_file_the_clock_is_the_wall_clock() -> None:
    clock = fixed_wall()
    assert clock.now() == NOON
    assert clock.poll_seconds is None


def test_the_offset_file_moves_the_clock_and_is_read_again_when_it_changes(tmp_path: Path) -> None:
    offset = tmp_path / "offset"
    clock = Clock(offset, wall=lambda: NOON)
    assert clock.now() == NOON  # no file yet: no offset
    offset.write_text("3600\n")
    assert clock.now() == NOON + dt.timedelta(hours=1)
    offset.write_text("-86400.5")
    os.utime(offset, ns=(1, 1))  # seen even when the rewrite leaves an older mtime
    assert clock.now() == NOON - dt.timedelta(days=1, seconds=0.5)
    offset.unlink()
    assert clock.now() == NOON
    assert clock.poll_seconds == OFFSET_POLL_SECONDS


def test_a_malformed_offset_file_is_an_error_naming_the_setting(tmp_path: Path) -> None:
    offset = tmp_path / "offset"
    offset.write_text("tomorrow")
    with pytest.raises(ClockError, match="ZOMRO_CLOCK_OFFSET_FILE"):
        Clock(offset).now()


def test_the_setting_names_the_offset_file() -> None:
    assert Settings.from_env({}).clock_offset_file is None
    settings = Settings.from_env({"ZOMRO_CLOCK_OFFSET_FILE": "/tmp/offset"})
    assert settings.clock_offset_file == Path("/tmp/offset")


async def test_a_sleeper_wakes_when_the_offset_jumps_past_its_instant(tmp_path: Path) -> None:
    offset = tmp_path / "offset"
    clock = Clock(offset, wall=lambda: NOON)
    naps: list[float] = []

    async def nap(seconds: float) -> bool:
        naps.append(seconds)
        if len(naps) == 3:
            offset.write_text("7200")  # someone moves the clock two hours ahead
        return False

    stopped = await clock.sleep_until(NOON + dt.timedelta(hours=1), nap)
    assert not stopped
    assert naps == [OFFSET_POLL_SECONDS] * 3


async def test_a_sleep_ended_early_says_so() -> None:
    async def stopped_wait(seconds: float) -> bool:
        return True

    assert await fixed_wall().sleep_until(NOON + dt.timedelta(minutes=5), stopped_wait)
    assert not await fixed_wall().sleep_until(NOON - dt.timedelta(minutes=5), stopped_wait)


async def test_without_an_offset_file_a_sleeper_sleeps_the_whole_way() -> None:
    naps: list[float] = []

    async def nap(seconds: float) -> bool:
        naps.append(seconds)
        return True

    await fixed_wall().sleep_until(NOON + dt.timedelta(minutes=5), nap)
    assert naps == [300.0]


def test_the_provider_zone_defaults_to_kyiv_and_an_unknown_one_names_the_setting() -> None:
    assert Settings.from_env({}).provider_zone.key == "Europe/Kyiv"
    assert Settings.from_env({"ZOMRO_PROVIDER_TIMEZONE": "Etc/GMT-3"}).provider_zone.key == (
        "Etc/GMT-3"
    )
    with pytest.raises(SettingsError, match="ZOMRO_PROVIDER_TIMEZONE: unknown time zone"):
        Settings.from_env({"ZOMRO_PROVIDER_TIMEZONE": "Mars/Olympus"})
