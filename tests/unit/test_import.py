"""``import``: manifests that adopt existing schedules, named safely; run against the sandbox
over loopback HTTP (the cluster round trip is in tests/cluster/test_import_round_trip.py)."""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator

import pytest
import yaml
from support import PROVIDER_ZONE, READ_AT

from zomro_backup_operator.cli_tools import commands
from zomro_backup_operator.cli_tools.access import CredentialSource, ExitCode
from zomro_backup_operator.cli_tools.manifests import (
    ManifestOptions,
    render,
    resource_name,
    why_not_importable,
)
from zomro_backup_operator.resources import Desired
from zomro_backup_operator.sandbox import RunningSandbox, running_sandbox
from zomro_backup_operator.sandbox.config import AccountConfig, InstanceConfig, SandboxConfig
from zomro_backup_operator.zomro.models import Schedule, Weekday

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
INSTANCE, SECOND = "5203773", "7000001"
CONFIG = SandboxConfig(
    accounts=(
        AccountConfig(
            "alice",
            "alice-password",
            (InstanceConfig(INSTANCE, "MyServer"), InstanceConfig(SECOND, "Second")),
        ),
    ),
)


def schedule(name: str, schedule_id: str = "14", time: str = "02:01") -> Schedule:
    return Schedule(
        id=schedule_id,
        instance_id=INSTANCE,
        name=name,
        days=frozenset({Weekday.MONDAY, Weekday.SUNDAY}),
        time=time,
        server_name="MyServer",
    )


# --- names ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["MySchedule", "Nightly backup (DB)!", "Ночной бэкап", "---", "ä" * 60, "x" * 60, " a b "],
)
def test_resource_names_are_dns_labels_whatever_the_schedule_is_called(name: str) -> None:
    assert DNS_LABEL.fullmatch(resource_name(schedule(name)))


def test_two_schedules_with_one_name_get_different_resource_names() -> None:
    assert resource_name(schedule("Nightly", "14")) != resource_name(schedule("Nightly", "15"))


def test_the_same_schedule_gets_the_same_name_on_every_import() -> None:
    assert resource_name(schedule("Nightly backup", "14")) == "nightly-backup-14"


def test_a_name_longer_than_the_resource_allows_is_not_importable() -> None:
    assert why_not_importable(schedule("x" * 61)) is not None
    assert why_not_importable(schedule("x" * 60)) is None


# --- manifests --------------------------------------------------------------------------------


def test_a_manifest_asks_for_exactly_what_zomro_holds_and_adopts_it_by_id() -> None:
    options = ManifestOptions(namespace="backups", secret_name="zomro-credentials")
    text = render([schedule("Nightly", "14", time="01:30")], options)

    [body] = list(yaml.safe_load_all(text))
    assert body["metadata"] == {
        "name": "nightly-14",
        "namespace": "backups",
        "annotations": {"zomro.com/schedule-id": "14"},
    }
    assert body["spec"]["credentialsSecretRef"] == {"name": "zomro-credentials"}
    assert body["spec"]["deletionPolicy"] == "Orphan"
    desired = Desired.from_resource(
        namespace="backups",
        name=body["metadata"]["name"],
        generation=1,
        spec=body["spec"],
        annotations=body["metadata"]["annotations"],
        at=READ_AT,
        provider_zone=PROVIDER_ZONE,
    )
    assert desired.adopt_id == "14"
    assert schedule("Nightly", "14", time="01:30").matches(desired.schedule)


def test_times_and_ids_are_quoted_so_no_yaml_reader_takes_them_for_numbers() -> None:
    text = render([schedule("n", "14", time="01:30")], ManifestOptions())
    assert 'time: "01:30"' in text
    assert 'instanceId: "5203773"' in text
    assert 'zomro.com/schedule-id: "14"' in text


def test_a_server_name_with_a_line_break_cannot_add_yaml_to_the_output() -> None:
    hostile = Schedule(
        id="14",
        instance_id=INSTANCE,
        name="n",
        days=frozenset({Weekday.MONDAY}),
        time="02:01",
        server_name="box)\napiVersion: v1\nkind: Secret\n---\n#",
    )

    documents = list(yaml.safe_load_all(render([hostile], ManifestOptions())))

    assert [d["kind"] for d in documents] == ["BackupSchedule"]


def test_several_schedules_become_separate_documents() -> None:
    text = render([schedule("a", "14"), schedule("b", "15")], ManifestOptions())
    assert [d["metadata"]["name"] for d in yaml.safe_load_all(text)] == ["a-14", "b-15"]


# --- the command against the sandbox ----------------------------------------------------------


@pytest.fixture
async def sb(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RunningSandbox]:
    async with running_sandbox(config=CONFIG) as sandbox:
        monkeypatch.setenv("ZOMRO_API_URL", sandbox.url)
        monkeypatch.setenv("ZOMRO_MAX_REQUESTS_PER_SECOND", "200")
        sandbox.state.add_schedule(INSTANCE, "MySchedule", [1, 2, 3, 4, 5], "02:01")
        sandbox.state.add_schedule(SECOND, "Weekend", [0, 6], "23:45")
        yield sandbox


async def run_import(*instances: str, password: str = "alice-password") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await asyncio.to_thread(
        commands.import_schedules,
        CredentialSource(username="alice", password_stdin=True),
        instances=list(instances),
        namespace="backups",
        secret_name="zomro",
        deletion_policy="Orphan",
        check_cluster=False,
        stdin=io.StringIO(password + "\n"),
        out=out,
        err=err,
    )
    return code, out.getvalue(), err.getvalue()


def adopted(text: str) -> list[tuple[str, str, str]]:
    return [
        (
            d["spec"]["instanceId"],
            d["metadata"]["annotations"]["zomro.com/schedule-id"],
            d["spec"]["scheduleName"],
        )
        for d in yaml.safe_load_all(text)
    ]


async def test_import_prints_a_manifest_for_every_schedule_of_the_account(
    sb: RunningSandbox,
) -> None:
    code, out, err = await run_import()

    assert code == ExitCode.OK
    assert adopted(out) == [(INSTANCE, "14", "MySchedule"), (SECOND, "15", "Weekend")]
    assert "2 of 2 schedule(s) written" in err
    assert not {r.func for r in sb.state.requests} & {
        "instances.fleio_bckps.schedule.edit",
        "instances.fleio_bckps.schedule.delete",
    }


async def test_import_of_one_instance_lists_only_that_instance(sb: RunningSandbox) -> None:
    _, out, _ = await run_import(SECOND)

    assert adopted(out) == [(SECOND, "15", "Weekend")]


async def test_a_schedule_the_resource_cannot_hold_is_skipped_and_named_on_stderr(
    sb: RunningSandbox,
) -> None:
    sb.state.add_schedule(INSTANCE, "L" * 80, [1], "03:00")

    code, out, err = await run_import(INSTANCE)

    assert code == ExitCode.PROBLEMS
    assert [a[1] for a in adopted(out)] == ["14"]
    assert "skipped schedule 16" in err
    assert "1-60" in err


async def test_import_with_a_wrong_password_prints_nothing_and_exits_login_refused(
    sb: RunningSandbox,
) -> None:
    code, out, err = await run_import(password="wrong")

    assert code == ExitCode.LOGIN_REFUSED
    assert out == ""
    assert "Invalid username or password" in err
