"""Prometheus metrics. Names are documented in docs/metrics.md."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "zomro_operator_reconciles",
    "Reconciliations by result (synced, created, updated, adopted, recreated, deleted, "
    "orphaned, error).",
    ["result"],
)
ZOMRO_REQUESTS = Counter(
    "zomro_operator_zomro_requests",
    "Requests sent to Zomro by function and outcome.",
    ["func", "outcome"],
)
ZOMRO_LATENCY = Histogram(
    "zomro_operator_zomro_request_duration_seconds",
    "Zomro request latency by function.",
    ["func"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
SCHEDULES = Gauge("zomro_operator_schedules", "BackupSchedules by Ready state.", ["ready"])
DRIFT_CORRECTIONS = Counter(
    "zomro_operator_drift_corrections",
    "Zomro schedules restored after a change behind the operator's back, by kind "
    "(removed, changed).",
    ["kind"],
)

LEADER = Gauge(
    "zomro_operator_leader",
    "1 while this replica holds the leader-election Lease (or runs --standalone), else 0.",
)


def observe_request(func: str, outcome: str, seconds: float) -> None:
    ZOMRO_REQUESTS.labels(func=func, outcome=outcome).inc()
    ZOMRO_LATENCY.labels(func=func).observe(seconds)


class ReadyTracker:
    """Keeps the schedules gauge equal to the resources' last known Ready states."""

    def __init__(self) -> None:
        self._ready: dict[str, bool] = {}

    def set(self, key: str, ready: bool) -> None:
        self._ready[key] = ready
        self._publish()

    def drop(self, key: str) -> None:
        self._ready.pop(key, None)
        self._publish()

    def _publish(self) -> None:
        ready = sum(self._ready.values())
        SCHEDULES.labels(ready="true").set(ready)
        SCHEDULES.labels(ready="false").set(len(self._ready) - ready)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
