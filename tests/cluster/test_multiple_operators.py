"""More than one operator on one cluster (docs/design.md, "More than one operator").

Sharding: two operators with disjoint namespaces (two Helm releases with disjoint
``watch.namespaces``, each with its own Lease) each reconcile their own namespace and never touch
the other's. Misconfiguration: two operators that both lead (two releases whose Leases differ)
on one namespace still give each resource exactly one Zomro schedule; two that share a Lease
(two replicas of one release) take turns. Each process reaches the sandbox through its own URL,
so the sandbox's request log says which one sent what.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from backup_kinds import Kind
from harness import (
    INSTANCE,
    OTHER_PASSWORD,
    OTHER_USERNAME,
    REPO,
    RIVAL_INSTANCE,
    SECOND_INSTANCE,
    USERNAME,
    Cluster,
    OperatorProcess,
    assert_no_secrets,
    check_invariants,
    create_many,
    delete_many,
    elected_operators,
    finalize_with_an_operator_of_its_own,
    lease_holder,
    list_bodies,
    lists_seen,
    mass_spec,
    temporary_namespace,
    wait_all_gone,
    wait_all_ready,
    wait_for,
)

from zomro_backup_operator.kube import Kube, StatusChangedError
from zomro_backup_operator.pending import PendingCreate
from zomro_backup_operator.sandbox.control import SandboxProcess
from zomro_backup_operator.status import iso
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULE_EDIT
from zomro_backup_operator.zomro.models import ScheduleSpec, Weekday

CHART = REPO / "helm" / "zomro-backup-operator"


def _cleanup(cluster: Cluster, sandbox: SandboxProcess, log_dir: Path) -> None:
    """A standalone operator finalizes whatever a test left in the cluster's namespace."""
    finalize_with_an_operator_of_its_own(
        cluster,
        list(list_bodies(cluster)),
        sandbox,
        cluster.namespace,
        log_dir,
        label=f"cleanup-{cluster.namespace}",
    )


def _leading(k8s_api: Any, process: OperatorProcess, lease_namespace: str, lease: str) -> None:
    wait_for(
        f"{process.label} to hold Lease {lease_namespace}/{lease}",
        lambda: lease_holder(k8s_api, lease_namespace, lease) == process.identity,
    )


WARM_UP: dict[str, Any] = {
    "schedule_name": "warm-up",
    "days": ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"],
    "time": "02:01",
    "instance": INSTANCE,
}
"""A resource created first, so that the test goes on only once every operator watches."""


def _seen_by_all(processes: list[OperatorProcess], name: str) -> None:
    """Wait until every process's kopf has indexed resource ``name``: its watch is up."""
    wait_for(
        f"every operator to have seen {name}",
        lambda: all(f"/{name}] Indexer" in process.logs() for process in processes),
    )


def _settled(sandbox: SandboxProcess) -> None:
    """A few more schedule listings (drift checks) pass, so that a late duplicate would show."""
    seen = lists_seen(sandbox.control)
    wait_for("three more listings", lambda: lists_seen(sandbox.control) >= seen + 3, timeout=60)


# --- sharding: disjoint namespaces ------------------------------------------------------------


@pytest.fixture
def second_cluster(k8s_api: Any, cluster: Cluster) -> Iterator[Cluster]:
    """A second namespace, with credentials of another Zomro account (the rival's)."""
    with temporary_namespace(k8s_api, "shard-b") as name:
        other = Cluster(k8s_api, name)
        other.apply_secret("zomro", username=OTHER_USERNAME, password=OTHER_PASSWORD)
        yield other


def test_two_operators_on_disjoint_namespaces_each_reconcile_only_their_own(
    k8s_api: Any,
    cluster: Cluster,
    second_cluster: Cluster,
    sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    sandbox.control.reset()
    [a] = elected_operators(cluster.namespace, sandbox.url, tmp_path, labels=("a",))
    [b] = elected_operators(second_cluster.namespace, sandbox.url, tmp_path, labels=("b",))
    shards = {a: cluster, b: second_cluster}
    specs = {
        a: {f"a-{n:02d}": {**mass_spec(n), "schedule_name": f"a-{n:02d}"} for n in range(10)},
        b: {
            f"b-{n:02d}": {**mass_spec(n, RIVAL_INSTANCE), "schedule_name": f"b-{n:02d}"}
            for n in range(10)
        },
    }
    try:
        for process, shard in shards.items():
            process.start()
            # Its own Lease, in its own namespace, as each Helm release has.
            _leading(k8s_api, process, shard.namespace, "zomro-backup-operator")
        for process, shard in shards.items():
            create_many(shard, specs[process])
        for process, shard in shards.items():
            wait_all_ready(shard, list(specs[process]))
        _settled(sandbox)

        for process, shard in shards.items():
            bodies = list_bodies(shard)
            assert set(bodies) == set(specs[process])
            instance = INSTANCE if process is a else RIVAL_INSTANCE
            held = {str(row["id"]) for row in sandbox.control.schedules(instance)}
            assert {body["status"]["scheduleId"] for body in bodies.values()} == held
        # Zomro heard from each operator only with its own namespace's credentials ...
        accounts = {
            (record.get("client"), record.get("account"))
            for record in sandbox.control.requests()
            if record.get("account")
        }
        assert accounts == {("a", USERNAME), ("b", OTHER_USERNAME)}
        # ... and neither operator so much as named the other's namespace.
        assert second_cluster.namespace not in a.logs()
        assert cluster.namespace not in b.logs()
        assert_no_secrets({"logs": a.logs() + b.logs()}, OTHER_PASSWORD)
    finally:
        for process in shards:
            process.stop()
        for shard in shards.values():
            _cleanup(shard, sandbox, tmp_path)


def test_two_releases_of_the_chart_on_disjoint_namespaces_coexist(
    cluster: Cluster, second_cluster: Cluster, helm: Any, kubectl: Any
) -> None:
    releases = {"shard-a": cluster.namespace, "shard-b": second_cluster.namespace}
    try:
        for release, namespace in releases.items():
            # Each release runs in, and watches, its own namespace (there is no node: the Pods
            # stay Pending, which is all this needs).
            helm(
                "install",
                release,
                str(CHART),
                "-n",
                namespace,
                "--set",
                f"watch.namespaces={{{namespace}}}",
            )
        cluster_scoped = json.loads(
            kubectl("get", "clusterroles,clusterrolebindings", "-o", "json").stdout
        )["items"]
        for release, namespace in releases.items():
            ours = sorted(
                f"{item['kind']}/{item['metadata']['name']}"
                for item in cluster_scoped
                if (item["metadata"].get("annotations") or {}).get("meta.helm.sh/release-name")
                == release
            )
            fullname = f"{release}-zomro-backup-operator"
            assert ours == [
                f"ClusterRole/{fullname}",
                f"ClusterRole/{fullname}-edit",
                f"ClusterRole/{fullname}-view",
                f"ClusterRoleBinding/{fullname}",
            ]
            role = json.loads(
                kubectl(
                    "get", "role", f"{fullname}-leader-election", "-n", namespace, "-o", "json"
                ).stdout
            )
            named = [rule for rule in role["rules"] if rule.get("resourceNames")]
            assert named == [
                {
                    "apiGroups": ["coordination.k8s.io"],
                    "resources": ["leases"],
                    "resourceNames": [fullname],
                    "verbs": ["get", "update"],
                }
            ]
            deployment = json.loads(
                kubectl("get", "deployment", fullname, "-n", namespace, "-o", "json").stdout
            )
            [container] = deployment["spec"]["template"]["spec"]["containers"]
            assert f"--namespace={namespace}" in container["args"]
            assert {"name": "ZOMRO_LEASE_NAME", "value": fullname} in container["env"]
        # The same release name twice would clash on the cluster-scoped names: Helm refuses it.
        clash = helm(
            "install",
            "shard-a",
            str(CHART),
            "-n",
            second_cluster.namespace,
            check=False,
        )
        assert clash.returncode != 0
        assert "exists and cannot be imported into the current release" in clash.stderr
    finally:
        for release, namespace in releases.items():
            helm("uninstall", release, "-n", namespace, check=False)


# --- misconfiguration: two operators on one namespace -----------------------------------------

REFUSED = "the resource changed while its create was being decided"
"""What an operator says when the intent to create it wrote was refused (failures.classify)."""

MISCONFIGURED_SETTLE_SECONDS = 30
"""The settle window of two operators on one namespace: longer than a create waits in either's
queue here (about 5 s)."""

FAULTS: dict[str, dict[str, Any]] = {
    # Every answer takes a while: both operators decide on each resource before either has
    # recorded its create, so that they race for the intent write.
    "slow answers": {"latency": 0.15},
    # Zomro lists new schedules late, and the answer to one create is lost.
    "late listings and a lost answer": {
        "listing_delay": 2,
        "late_create": {"drop": True, "count": 1},
    },
}


def test_the_api_server_refuses_an_intent_written_onto_a_status_that_changed_since(
    k8s_api: Any, cluster: Cluster
) -> None:
    decided_on = cluster.create("raced")["metadata"]["resourceVersion"]
    kube = Kube(k8s_api)

    def intent(started_at: float) -> dict[str, Any]:
        pending = PendingCreate.for_spec(
            ScheduleSpec("MySchedule", frozenset({Weekday.MONDAY}), "02:01"),
            started_at=started_at,
            known_ids=[],
        )
        return {"pendingCreate": pending.to_status(iso)}

    # Two operators decided to create on the same status: the first write wins ...
    kube.patch_status(cluster.namespace, "raced", intent(1000.0), resource_version=decided_on)
    # ... and the second is refused, whatever it holds.
    with pytest.raises(StatusChangedError):
        kube.patch_status(cluster.namespace, "raced", intent(2000.0), resource_version=decided_on)

    body = cluster.get("raced")
    assert body is not None
    assert body["status"]["pendingCreate"]["startedAt"] == iso(1000.0)


@pytest.mark.parametrize("faults", list(FAULTS))
def test_two_leading_operators_on_one_namespace_make_one_schedule_per_resource(
    faults: str,
    k8s_api: Any,
    cluster: Cluster,
    sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    sandbox.control.reset()
    # Two releases in other namespaces both told to watch this one: each has a Lease of its own,
    # so both lead.
    processes = elected_operators(cluster.namespace, sandbox.url, tmp_path)
    for process in processes:
        process.env["ZOMRO_LEASE_NAME"] = f"release-{process.label}"
        # A create of one operator may wait in its queue behind the others' (batches at the
        # rate limit) before it is sent: the other takes it as lost only after the settle
        # window, which must be longer than that wait (docs/design.md).
        process.env["ZOMRO_CREATE_SETTLE_SECONDS"] = str(MISCONFIGURED_SETTLE_SECONDS)
    specs = {f"mass-{n:02d}": mass_spec(n, (INSTANCE, SECOND_INSTANCE)[n % 2]) for n in range(30)}
    try:
        for process in processes:
            process.start()
        for process in processes:
            _leading(k8s_api, process, cluster.namespace, f"release-{process.label}")
        cluster.create("warm-up", **WARM_UP)
        _seen_by_all(processes, "warm-up")
        sandbox.control.set_faults(**FAULTS[faults])

        create_many(cluster, specs)
        wait_all_ready(cluster, list(specs), timeout=180)
        _settled(sandbox)

        a, b = processes
        check_invariants(cluster, sandbox.control, a, live={**specs, "warm-up": WARM_UP})
        assert_no_secrets({"logs of b": b.logs()})
        sent = [
            r.get("client") for r in sandbox.control.requests() if r["func"] == FUNC_SCHEDULE_EDIT
        ]
        refused = [p.logs().count(f"failed temporarily: Creating: {REFUSED}") for p in processes]
        print(
            f"\ncreates sent by (a, b): {[sent.count(p.label) for p in processes]}; "
            f"intents refused (a, b): {refused}"
        )

        # Both delete: the second finds the schedule gone, which counts as deleted.
        names = [*specs, "warm-up"]
        delete_many(cluster, names)
        wait_all_gone(cluster, names)
        assert [sandbox.control.schedules(i) for i in (INSTANCE, SECOND_INSTANCE)] == [[], []]
    finally:
        for process in processes:
            process.stop()
        sandbox.control.clear_faults()
        _cleanup(cluster, sandbox, tmp_path)


def test_two_operators_sharing_a_lease_on_one_namespace_take_turns(
    k8s_api: Any,
    cluster: Cluster,
    sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    sandbox.control.reset()
    processes = elected_operators(cluster.namespace, sandbox.url, tmp_path)
    specs = {f"mass-{n:02d}": mass_spec(n) for n in range(30)}
    try:
        for process in processes:
            process.start()
        wait_for(
            "one of them to lead",
            lambda: lease_holder(k8s_api, cluster.namespace) in {p.identity for p in processes},
        )
        create_many(cluster, specs)
        wait_all_ready(cluster, list(specs))
        _settled(sandbox)

        holder = lease_holder(k8s_api, cluster.namespace)
        [leader] = [process for process in processes if process.identity == holder]
        check_invariants(cluster, sandbox.control, leader, live=specs)
        senders = {record.get("client") for record in sandbox.control.requests()}
        assert senders == {leader.label}, f"Zomro heard from {senders}"
        # Alone on the namespace, the leader's intents are never refused: no extra retries.
        assert REFUSED not in leader.logs()
    finally:
        for process in processes:
            process.stop()
        _cleanup(cluster, sandbox, tmp_path)


def test_two_leading_operators_on_one_namespace_take_one_image_per_backup(
    k8s_api: Any,
    cluster: Cluster,
    sandbox: SandboxProcess,
    tmp_path: Path,
) -> None:
    sandbox.control.reset()
    processes = elected_operators(cluster.namespace, sandbox.url, tmp_path)
    for process in processes:
        process.env["ZOMRO_LEASE_NAME"] = f"release-{process.label}"
    backups = Kind(cluster, "Backup", "backups")
    try:
        for process in processes:
            process.start()
        for process in processes:
            _leading(k8s_api, process, cluster.namespace, f"release-{process.label}")
        backups.create("warm-up", {"instanceId": INSTANCE, "name": "warm-up"})
        _seen_by_all(processes, "warm-up")
        backups.create("now", {"instanceId": SECOND_INSTANCE, "name": "now"})

        ids = {
            name: backups.wait(
                name, "Completed", lambda s: s.get("phase") == "Completed", timeout=180
            )["backupId"]
            for name in ("warm-up", "now")
        }

        images = [
            image
            for instance in (INSTANCE, SECOND_INSTANCE)
            for image in sandbox.control.backups(instance)
            if image["backup_type"] == "manual"
        ]
        assert sorted(str(image["id"]) for image in images) == sorted(ids.values())
    finally:
        for process in processes:
            process.stop()
        finalize_with_an_operator_of_its_own(
            backups, backups.names(), sandbox, cluster.namespace, tmp_path, "cleanup-backups"
        )
