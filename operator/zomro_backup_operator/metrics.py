"""Prometheus metrics. Names are documented in docs/metrics.md."""

from __future__ import annotations

import contextlib

from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter(
    "zomro_operator_reconciles",
    "Reconciliations by result (synced, created, updated, adopted, recreated, deleted, "
    "orphaned, suspended, error).",
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

BACKUPS = Counter(
    "zomro_operator_backups",
    "Backup resources by outcome (completed, failed, daily_limit: waiting for Zomro's next day; "
    "on deletion: deleted, retained, nothing).",
    ["result"],
)
ROTATION_CORRECTIONS = Counter(
    "zomro_operator_rotation_corrections",
    "Zomro backup rotations (BackupRetention) restored after a change behind the operator's back.",
)
BACKUP_LABELS = ["namespace", "name", "instance"]
LAST_SUCCESSFUL_BACKUP = Gauge(
    "zomro_operator_last_successful_backup_timestamp_seconds",
    "When the newest usable backup attributed to the BackupSchedule was created (Unix time).",
    BACKUP_LABELS,
)
BACKUP_OVERDUE = Gauge(
    "zomro_operator_backup_overdue",
    "1 while the BackupSchedule's BackupsHealthy condition is False with reason BackupOverdue.",
    BACKUP_LABELS,
)
BACKUP_FAILED = Gauge(
    "zomro_operator_backup_failed",
    "1 while the BackupSchedule's BackupsHealthy condition is False with reason BackupFailed.",
    BACKUP_LABELS,
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
        self._count = 0
        """How many of ``_ready`` are True (kept as it changes: counting them again on every
        change would cost N^2 over a mass apply of N)."""

    def set(self, key: str, ready: bool) -> None:
        self._count += int(ready) - int(self._ready.get(key, False))
        self._ready[key] = ready
        self._publish()

    def drop(self, key: str) -> None:
        self._count -= int(self._ready.pop(key, False))
        self._publish()

    def _publish(self) -> None:
        SCHEDULES.labels(ready="true").set(self._count)
        SCHEDULES.labels(ready="false").set(len(self._ready) - self._count)


class BackupTracker:
    """The per-schedule backup series: set by each check, removed with the resource."""

    def __init__(self) -> None:
        self._labels: dict[str, tuple[str, str, str]] = {}

    def set(
        self,
        namespace: str,
        name: str,
        instance: str,
        *,
        last_successful: float | None,
        overdue: bool,
        failed: bool,
    ) -> None:
        labels = (namespace, name, instance)
        key = f"{namespace}/{name}"
        if self._labels.get(key, labels) != labels:
            self.drop(key)
        self._labels[key] = labels
        if last_successful is not None:
            LAST_SUCCESSFUL_BACKUP.labels(*labels).set(last_successful)
        BACKUP_OVERDUE.labels(*labels).set(int(overdue))
        BACKUP_FAILED.labels(*labels).set(int(failed))

    def drop(self, key: str) -> None:
        labels = self._labels.pop(key, None)
        if labels is None:
            return
        for gauge in (LAST_SUCCESSFUL_BACKUP, BACKUP_OVERDUE, BACKUP_FAILED):
            with contextlib.suppress(KeyError):  # never set (no successful backup yet)
                gauge.remove(*labels)


def serve(port: int) -> None:
    if port:
        start_http_server(port)
