"""Two (and more) operator processes on one namespace, kept apart by the leader-election Lease.

Each process reaches the sandbox through its own URL, so the sandbox's request log says which
process sent each request. The figures printed (failover, handover) are measurements, not
assertions: run with ``-s`` to see them.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import (
    LEASE_DURATION,
    Cluster,
    OperatorProcess,
    assert_no_secrets,
    check_invariants,
    create_many,
    elected_operators,
    finalize_with_an_operator_of_its_own,
    lease_holder,
    list_bodies,
    mass_spec,
    wait_all_ready,
    wait_for,
)

from zomro_backup_operator.sandbox.control import SandboxProcess
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULE_EDIT


@pytest.fixture
def candidates(
    cluster: Cluster, sandbox: SandboxProcess, tmp_path: Path
) -> Iterator[list[OperatorProcess]]:
    """Four candidates (a, b, c, d; none started); afterwards a standalone operator finalizes
    whatever the test left."""
    sandbox.control.reset()
    processes = elected_operators(
        cluster.namespace, sandbox.url, tmp_path, labels=("a", "b", "c", "d")
    )
    try:
        yield processes
    finally:
        for process in processes:
            process.stop()
        finalize_with_an_operator_of_its_own(
            cluster, list(list_bodies(cluster)), sandbox, cluster.namespace, tmp_path
        )


def _leads(k8s_api: Any, cluster: Cluster, process: OperatorProcess, timeout: float = 60) -> float:
    """Wait until ``process`` holds the Lease; the seconds it took."""
    started = time.monotonic()
    wait_for(
        f"{process.label} to hold the Lease",
        lambda: lease_holder(k8s_api, cluster.namespace) == process.identity,
        timeout=timeout,
    )
    return time.monotonic() - started


def _standing_by(process: OperatorProcess) -> None:
    wait_for(f"{process.label} to stand by", lambda: "is a candidate" in process.logs())


def _leader_and_standby(
    k8s_api: Any, cluster: Cluster, candidates: list[OperatorProcess]
) -> tuple[OperatorProcess, OperatorProcess]:
    """The first candidate started and leading, then the second started and standing by."""
    leader, standby = candidates[:2]
    leader.start()
    _leads(k8s_api, cluster, leader)
    standby.start()
    _standing_by(standby)
    return leader, standby


def _senders(sandbox: SandboxProcess) -> list[str | None]:
    return [record.get("client") for record in sandbox.control.requests()]


def assert_one_sender_at_a_time(sandbox: SandboxProcess) -> list[str]:
    """Zomro heard from one process after another, never from two taking turns back and forth:
    the request log, in order, is one run per process. Returns the processes in that order."""
    runs: list[str] = []
    for sender in _senders(sandbox):
        assert sender is not None, "a request that came from none of the candidates"
        if not runs or runs[-1] != sender:
            assert sender not in runs, f"{sender} sent to Zomro again after {runs[-1]} took over"
            runs.append(sender)
    return runs


def test_killing_the_leader_mid_create_leaves_one_schedule_per_resource_after_takeover(
    k8s_api: Any,
    cluster: Cluster,
    sandbox: SandboxProcess,
    candidates: list[OperatorProcess],
) -> None:
    a, b = _leader_and_standby(k8s_api, cluster, candidates)
    specs = {f"mass-{n:02d}": mass_spec(n) for n in range(30)}

    create_many(cluster, specs)
    wait_for(
        "the leader's first creates",
        lambda: sum(r["func"] == FUNC_SCHEDULE_EDIT for r in sandbox.control.requests()) >= 5,
    )
    a.kill()
    failover = _leads(k8s_api, cluster, b, timeout=LEASE_DURATION * 10)

    wait_all_ready(cluster, list(specs))
    check_invariants(cluster, sandbox.control, b, live=specs)
    assert_no_secrets({"logs of a": a.logs()})
    assert assert_one_sender_at_a_time(sandbox) == ["a", "b"]
    print(f"\nfailover after SIGKILL: {failover:.1f}s (lease duration {LEASE_DURATION}s)")


def test_a_leader_stopped_past_its_lease_does_nothing_to_zomro_after_it_wakes(
    k8s_api: Any,
    cluster: Cluster,
    sandbox: SandboxProcess,
    candidates: list[OperatorProcess],
) -> None:
    a, b = _leader_and_standby(k8s_api, cluster, candidates)
    specs = {f"mass-{n:02d}": mass_spec(n) for n in range(10)}
    create_many(cluster, specs)
    wait_all_ready(cluster, list(specs))

    a.send(signal.SIGSTOP)
    failover = _leads(k8s_api, cluster, b, timeout=LEASE_DURATION * 10)
    changed = {name: {**spec, "time": "23:59"} for name, spec in specs.items()}
    for name in changed:
        cluster.patch_spec(name, time="23:59")
    wait_all_ready(cluster, list(changed))
    woke = time.time()
    if a.process is not None and a.process.poll() is None:
        a.send(signal.SIGCONT)
    assert a.process is not None
    wait_for("a to have exited", lambda: a.process is not None and a.process.poll() is not None)

    after = [r for r in sandbox.control.requests() if r.get("client") == "a" and r["time"] >= woke]
    assert after == [], "the old leader sent to Zomro after it woke"
    assert assert_one_sender_at_a_time(sandbox) == ["a", "b"]
    check_invariants(cluster, sandbox.control, b, live=changed)
    print(
        f"\ntakeover from a SIGSTOPped leader: {failover:.1f}s; "
        f"the stopped leader ended with exit status {a.process.returncode}"
    )


def test_a_rolling_restart_of_both_replicas_keeps_one_schedule_per_resource(
    k8s_api: Any,
    cluster: Cluster,
    sandbox: SandboxProcess,
    candidates: list[OperatorProcess],
) -> None:
    a, b = _leader_and_standby(k8s_api, cluster, candidates)
    c, d = candidates[2:]
    first = {f"mass-{n:02d}": mass_spec(n) for n in range(10)}
    create_many(cluster, first)
    wait_all_ready(cluster, list(first))

    # As a Deployment's RollingUpdate does it: a new Pod, then an old one goes (SIGTERM).
    c.start()
    _standing_by(c)
    stopped = time.monotonic()
    a.stop()
    wait_for(
        "b or c to take the released Lease",
        lambda: lease_holder(k8s_api, cluster.namespace) in (b.identity, c.identity),
    )
    handover = time.monotonic() - stopped
    second = {f"mass-{n:02d}": mass_spec(n) for n in range(10, 20)}
    create_many(cluster, second)
    d.start()
    _standing_by(d)
    b.stop()
    wait_for(
        "c or d to hold the Lease",
        lambda: lease_holder(k8s_api, cluster.namespace) in (c.identity, d.identity),
    )

    live = {**first, **second}
    wait_all_ready(cluster, list(live))
    check_invariants(cluster, sandbox.control, c, live=live)
    assert_no_secrets({"logs": "\n".join(p.logs() for p in (a, b, d))})
    assert_one_sender_at_a_time(sandbox)
    print(f"\nhandover on a clean stop of the leader (released Lease): {handover:.1f}s")
