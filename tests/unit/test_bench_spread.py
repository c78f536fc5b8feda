"""hack/bench's --repeat report: the spread of the figures over several runs."""

from __future__ import annotations

from typing import Any

import bench


def result(ready: float, peak_mb: float, restart: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "create": {"all_ready_seconds": ready, "zomro_calls_per_schedule": 1.25},
        "idle": {"zomro_calls_per_period": 40.0, "api_writes": 0},
        "delete": {"all_gone_seconds": 20.0},
        "memory_kb": {"after_create": {"VmHWM": 102_400}, "peak_rss_mb": peak_mb},
        "restart": restart or {},
    }


def test_the_spread_gives_min_median_max_and_range_of_each_figure() -> None:
    runs = [result(30.0, 130.0), result(50.0, 110.0), result(40.0, 170.0)]

    figures = bench.spread(runs)

    assert figures["all Ready (s)"] == {"min": 30.0, "median": 40.0, "max": 50.0, "range": 20.0}
    peak = figures["RSS peak of the last operator (MB)"]
    assert (peak["median"], peak["range"]) == (130.0, 60.0)
    assert figures["RSS peak through the creates (MB)"]["max"] == 100.0


def test_a_figure_only_some_runs_have_spreads_over_those_and_none_is_left_out() -> None:
    restarted = result(30.0, 130.0, {"all_confirmed_seconds": 12.0, "api_writes": 0})
    restarted["restart"]["memory_kb"] = {"VmHWM": 204_800}

    figures = bench.spread([restarted, result(40.0, 120.0)])

    assert figures["restart: all confirmed (s)"] == {
        "min": 12.0,
        "median": 12.0,
        "max": 12.0,
        "range": 0.0,
    }
    assert figures["restart: RSS peak (MB)"]["min"] == 200.0
    assert "restart: all confirmed (s)" not in bench.spread([result(40.0, 120.0)])


def test_the_spread_table_has_a_row_per_figure_under_the_number_of_runs() -> None:
    figures = bench.spread([result(30.0, 130.0), result(50.0, 110.0)])

    lines = bench.spread_table(figures, 2).splitlines()

    assert lines[0].startswith("over 2 runs")
    assert len(lines) == 1 + len(figures)
    assert any(line.startswith("all Ready (s)") and "20.00" in line for line in lines)
