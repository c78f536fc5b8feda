"""The zomro_operator_schedules gauge follows the last Ready state of each resource."""

from __future__ import annotations

from prometheus_client import REGISTRY

from zomro_backup_operator.metrics import ReadyTracker


def gauge() -> tuple[float | None, float | None]:
    def sample(ready: str) -> float | None:
        return REGISTRY.get_sample_value("zomro_operator_schedules", {"ready": ready})

    return sample("true"), sample("false")


def test_the_schedules_gauge_counts_each_resources_last_ready_state() -> None:
    tracker = ReadyTracker()
    tracker.set("team/a", True)
    tracker.set("team/b", True)
    tracker.set("team/c", False)
    assert gauge() == (2, 1)

    tracker.set("team/a", True)  # the same state again counts once
    tracker.set("team/b", False)
    tracker.set("team/c", True)
    assert gauge() == (2, 1)

    tracker.drop("team/a")
    tracker.drop("team/b")
    tracker.drop("team/unknown")
    assert gauge() == (1, 0)
