"""The Zomro request budget, measured where Zomro would see it: the sandbox's request log.

A burst of changes on one credential set never exceeds ZOMRO_MAX_REQUESTS_PER_SECOND, and a
460 with Retry-After holds back every resource on that credential set, not just the one whose
call was refused.
"""

from __future__ import annotations

from typing import Any

import pytest
from harness import (
    INSTANCE,
    SECOND_INSTANCE,
    USERNAME,
    Cluster,
    OperatorProcess,
    create_many,
    list_bodies,
    mass_spec,
    wait_all_ready,
    wait_for,
)

from zomro_backup_operator.sandbox.control import SandboxProcess

RATE = 10.0
"""Requests per second the operator is given in these tests."""
JITTER = 0.05
"""Seconds a request's arrival may move between leaving the client and the sandbox's clock."""


def arrivals(records: list[dict[str, Any]], account: str | None = USERNAME) -> list[float]:
    """When each request reached the sandbox (its log stamps the end; duration is the rest)."""
    return sorted(
        float(r["time"]) - float(r["duration"])
        for r in records
        if account is None or r["account"] in (account, None)
    )


def busiest_second(starts: list[float]) -> int:
    """The most requests that arrived within any one-second window."""
    best, left = 0, 0
    for right, start in enumerate(starts):
        while start - starts[left] >= 1.0 - JITTER:
            left += 1
        best = max(best, right - left + 1)
    return best


def burst(cluster: Cluster, count: int) -> dict[str, dict[str, Any]]:
    """``count`` resources over the account's two instances, created at once."""
    specs = {
        f"r{n:04d}": mass_spec(n, INSTANCE if n % 2 else SECOND_INSTANCE) for n in range(count)
    }
    create_many(cluster, specs)
    return specs


def patch_all(cluster: Cluster, names: list[str], time: str) -> None:
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda name: cluster.patch_spec(name, time=time), names))


def assert_within_budget(records: list[dict[str, Any]], *, changes: int) -> None:
    starts = arrivals(records)
    # Every change costs at least one call: a budget that let them through faster would show.
    assert len(starts) >= changes
    peak = busiest_second(starts)
    assert peak <= RATE + 1, f"{peak} requests within one second (limit {RATE:g}/s)"
    span = starts[-1] - starts[0]
    assert span >= (len(starts) - 1) / RATE - 1.0, f"{len(starts)} requests in {span:.1f}s"


def run_burst(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess, count: int
) -> None:
    operator.restart_with(ZOMRO_MAX_REQUESTS_PER_SECOND=str(RATE), ZOMRO_RESYNC_SECONDS="600")
    timeout = count * 3 / RATE + 60

    specs = burst(cluster, count)
    wait_all_ready(cluster, list(specs), timeout=timeout)
    assert_within_budget(sandbox.control.requests(), changes=count)

    sandbox.control.clear_requests()
    patch_all(cluster, list(specs), time="05:55")
    bodies = wait_all_ready(cluster, list(specs), timeout=timeout)
    assert_within_budget(sandbox.control.requests(), changes=count)
    held = sandbox.control.schedules(INSTANCE) + sandbox.control.schedules(SECOND_INSTANCE)
    assert len(held) == count
    assert {s["time"] for s in held} == {"05:55"}
    assert {b["status"]["scheduleId"] for b in bodies.values()} == {str(s["id"]) for s in held}


def test_a_burst_of_a_hundred_creates_and_changes_stays_within_the_rate_limit(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    run_burst(cluster, operator, sandbox, 100)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_burst_of_a_thousand_changes_stays_within_the_rate_limit(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    run_burst(cluster, operator, sandbox, 500)  # 500 creates, then 500 changes


def test_a_460_with_retry_after_holds_back_every_resource_on_the_credential_set(
    cluster: Cluster, operator: OperatorProcess, sandbox: SandboxProcess
) -> None:
    retry_after = 8
    operator.restart_with(ZOMRO_RESYNC_SECONDS="600")  # no drift checks in the window
    specs = burst(cluster, 12)
    wait_all_ready(cluster, list(specs))

    sandbox.control.clear_requests()
    sandbox.control.set_faults(block={"status": 460, "seconds": 4, "retry_after": retry_after})
    patch_all(cluster, list(specs), time="04:44")
    bodies = wait_all_ready(cluster, list(specs), timeout=90)

    records = sandbox.control.requests()
    refused = [r for r in records if r["outcome"] == "http:460"]
    assert len(refused) == 1, f"{len(refused)} requests refused: every caller kept sending"
    refused_at = float(refused[0]["time"])
    later = [t for t in arrivals(records, account=None) if t > refused_at]
    assert later, "nothing was sent after the block"
    assert min(later) >= refused_at + retry_after - 0.5, (
        f"a request went out {min(later) - refused_at:.1f}s after a {retry_after}s Retry-After"
    )
    # The held-back changes were on both instances, and all of them then got through.
    assert {specs[name]["instance"] for name in bodies} == {INSTANCE, SECOND_INSTANCE}
    held = sandbox.control.schedules(INSTANCE) + sandbox.control.schedules(SECOND_INSTANCE)
    assert {s["time"] for s in held} == {"04:44"}
    assert wait_for(
        "a ZomroUnavailable event for the refused change",
        lambda: any(e.reason == "ZomroUnavailable" for e in cluster.events()),
        timeout=30,
    )
    assert len(list_bodies(cluster)) == len(specs)
