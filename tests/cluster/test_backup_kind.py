"""The Backup kind against the real API server and the sandbox: one image per resource whatever
happens, the daily limit across Zomro's day, deletion by policy and a protected image."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from backup_kinds import Kind, backups  # noqa: F401  (the fixture)
from harness import INSTANCE, Cluster, OperatorProcess, wait_for
from kubernetes.client.exceptions import ApiException

from zomro_backup_operator.sandbox.control import SandboxProcess

REPO = Path(__file__).resolve().parents[2]
KYIV = ZoneInfo("Europe/Kyiv")
CREATE_FUNC = "instances.fleio_bckps.edit"


def manual_images(sandbox: SandboxProcess, instance: str = INSTANCE) -> list[dict[str, Any]]:
    return [b for b in sandbox.control.backups(instance) if b["backup_type"] == "manual"]


def creates_sent(sandbox: SandboxProcess) -> int:
    return sum(1 for r in sandbox.control.requests() if r["func"] == CREATE_FUNC)


def completed(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Completed"


def test_a_backup_is_taken_once_and_completes_with_its_id_size_and_time(
    backups: Kind,  # noqa: F811
    sandbox: SandboxProcess,
) -> None:
    backups.create("before-upgrade", {"instanceId": INSTANCE, "name": "before upgrade"})

    status = backups.wait("before-upgrade", "Completed", completed)

    images = manual_images(sandbox)
    assert [image["id"] for image in images] == [status["backupId"]]
    assert images[0]["name"] == "before upgrade"
    assert status["size"] > 0
    assert status["completionTime"].endswith("Z")
    assert "pendingCreate" not in status or status["pendingCreate"] is None
    assert backups.ready("before-upgrade")["status"] == "True"
    assert creates_sent(sandbox) == 1
    assert "Completed" in backups.event_reasons("before-upgrade")


def test_sigkill_while_the_backup_is_asked_for_leaves_exactly_one_image(
    backups: Kind,  # noqa: F811
    operator: OperatorProcess,
    sandbox: SandboxProcess,
) -> None:
    sandbox.control.set_faults(latency=2.0)  # every answer takes 2 s: the kill lands mid-request
    backups.create("crash", {"instanceId": INSTANCE, "name": "crash test"})
    backups.wait("crash", "the intent recorded", lambda s: bool(s.get("pendingCreate")))
    operator.kill()
    sandbox.control.clear_faults()
    operator.start()

    status = backups.wait("crash", "Completed", completed, timeout=90)

    assert [image["id"] for image in manual_images(sandbox)] == [status["backupId"]]
    # The request the killed process sent was applied; the restarted one found its image in the
    # listing instead of asking again.
    assert creates_sent(sandbox) == 1


def test_the_daily_limit_waits_with_its_reason_and_the_backup_follows_when_the_day_turns(
    backups: Kind,  # noqa: F811
    operator: OperatorProcess,
    sandbox: SandboxProcess,
) -> None:
    for n in range(5):  # today's five, taken in the panel
        sandbox.control.add_backup(INSTANCE, f"panel {n}", backup_type="manual")
    backups.create("sixth", {"instanceId": INSTANCE, "name": "sixth"})

    condition = backups.wait_reason("sixth", "DailyLimit")
    status = backups.status("sixth")
    assert status["phase"] == "Pending"
    assert "at most 5 manual backups" in condition["message"]
    retry_after = dt.datetime.fromisoformat(status["retryAfter"])
    today = sandbox.control.clock().astimezone(KYIV).date()
    assert retry_after.astimezone(KYIV).date() == today + dt.timedelta(days=1)
    assert creates_sent(sandbox) == 0  # the listing told; nothing was sent to be refused

    # Zomro's day turns, on both clocks.
    turned = retry_after + dt.timedelta(minutes=1)
    try:
        sandbox.control.set_clock(turned)
        operator.set_clock(turned)

        status = backups.wait("sixth", "Completed", completed, timeout=90)
    finally:
        sandbox.control.set_clock(dt.datetime.now(dt.UTC))

    assert creates_sent(sandbox) == 1
    assert status.get("retryAfter") is None
    assert status["backupId"] in {image["id"] for image in manual_images(sandbox)}


def test_a_protected_image_holds_the_deletion_with_a_clear_reason_until_unprotected(
    backups: Kind,  # noqa: F811
    sandbox: SandboxProcess,
) -> None:
    backups.create(
        "guarded", {"instanceId": INSTANCE, "name": "guarded", "deletionPolicy": "Delete"}
    )
    backup_id = backups.wait("guarded", "Completed", completed)["backupId"]
    sandbox.control.set_backup_protected(backup_id)

    backups.delete("guarded")
    condition = backups.wait_reason("guarded", "Protected")

    assert "protected" in condition["message"]
    assert "unprotected" in condition["message"]
    assert backups.get("guarded") is not None
    assert backup_id in {image["id"] for image in manual_images(sandbox)}

    sandbox.control.set_backup_protected(backup_id, False)
    backups.wait_gone("guarded", timeout=90)
    assert manual_images(sandbox) == []


def test_deleting_with_retain_leaves_the_image(
    backups: Kind,  # noqa: F811
    sandbox: SandboxProcess,
) -> None:
    backups.create("kept", {"instanceId": INSTANCE, "name": "kept"})  # Retain is the default
    backup_id = backups.wait("kept", "Completed", completed)["backupId"]

    backups.delete("kept")
    backups.wait_gone("kept")

    assert [image["id"] for image in manual_images(sandbox)] == [backup_id]


def test_the_spec_cannot_change_and_names_zomro_refuses_never_reach_it(
    backups: Kind,  # noqa: F811
) -> None:
    backups.create("fixed", {"instanceId": INSTANCE, "name": "fixed"})
    with pytest.raises(ApiException, match="spec is immutable"):
        backups.cluster.custom.patch_namespaced_custom_object(
            "zomro.com", "v1alpha1", backups.cluster.namespace, "backups", "fixed",
            {"spec": {"name": "changed"}},
        )  # fmt: skip
    for name, message in (("x" * 101, "100"), (" padded", "whitespace")):
        with pytest.raises(ApiException, match=message):
            backups.create("refused", {"instanceId": INSTANCE, "name": name})


def test_the_readme_back_up_now_one_liner_backs_up_the_schedules_instance(
    backups: Kind,  # noqa: F811
    cluster: Cluster,
    sandbox: SandboxProcess,
) -> None:
    readme = (REPO / "README.md").read_text()
    found = re.search(r"<!-- backup-now -->\n```sh\n(.*?)```", readme, re.DOTALL)
    assert found, "the README's back-up-now block is gone"
    cluster.create("nightly", schedule_name="Nightly", secret="zomro")
    in_namespace = f'kubectl() {{ command kubectl -n "{cluster.namespace}" "$@"; }}\n'
    subprocess.run(["bash", "-c", in_namespace + found.group(1)], check=True, capture_output=True)

    name = wait_for("a Backup made from the schedule", lambda: next(iter(backups.names()), None))
    assert name.startswith("nightly-now-")
    body = backups.get(name) or {}
    assert body["spec"]["instanceId"] == INSTANCE
    assert body["spec"]["credentialsSecretRef"] == {"name": "zomro"}
    backups.wait(name, "Completed", completed)


def test_kubectl_explains_both_kinds_and_lists_them_with_their_columns_and_category(
    backups: Kind,  # noqa: F811
    kubectl: Any,
) -> None:
    ns = ["-n", backups.cluster.namespace]
    assert "1-100 characters" in " ".join(kubectl("explain", "backup.spec.name").stdout.split())
    assert "Retain (the" in " ".join(
        kubectl("explain", "backup.spec.deletionPolicy").stdout.split()
    )
    explained = " ".join(kubectl("explain", "backupretention.spec.keep").stdout.split())
    assert "1-10" in explained
    assert "leaves Zomro's setting" in " ".join(
        kubectl("explain", "backupretention").stdout.split()
    )
    backups.create("listed", {"instanceId": INSTANCE, "name": "listed"})
    backups.wait("listed", "Completed", completed)

    header, row = kubectl("get", "zbk", *ns).stdout.splitlines()
    assert header.split()[:6] == ["NAME", "INSTANCE", "BACKUP", "NAME", "PHASE", "BACKUP"]
    assert row.split()[:2] == ["listed", INSTANCE]
    assert "Completed" in row.split()
    assert "backup.zomro.com/listed" in kubectl("get", "zomro", "-o", "name", *ns).stdout
    kubectl("get", "zbr", *ns)  # the short name is known
