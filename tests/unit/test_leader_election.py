"""Leader election: the fence, the official election's attempts over a Lease held in memory,
the write hooks of the Zomro client and of kube.py, the probes, and the lease settings."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from support import FakeTime
from test_client_shapes import SPEC, CannedZomro, doc

from zomro_backup_operator import run_command
from zomro_backup_operator.kube import Kube, StatusWriteWithheldError
from zomro_backup_operator.leader_election import Fence, Leadership
from zomro_backup_operator.probes import Health, health
from zomro_backup_operator.settings import Settings, SettingsError
from zomro_backup_operator.zomro.client import ClientOptions, ZomroClient
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.errors import WriteWithheldError
from zomro_backup_operator.zomro.funcs import FUNC_SCHEDULE_EDIT, FUNC_SCHEDULES

RENEW_DEADLINE = 10.0
SETTINGS = Settings(lease_namespace="ops")


# --- the fence ------------------------------------------------------------------------------


def test_the_fence_closes_at_the_renew_deadline_counted_from_the_start_of_the_renew() -> None:
    time = FakeTime(now=100.0)
    fence = Fence(RENEW_DEADLINE, time.clock)
    time.now = 104.0  # the renew's request took four seconds

    assert fence.renewed(started=100.0) == pytest.approx(6.0)
    time.now = 109.9
    assert fence.holds()
    time.now = 110.0
    assert not fence.holds()


def test_a_pause_past_the_renew_deadline_closes_the_fence_without_any_renew_failing() -> None:
    time = FakeTime(now=100.0)
    fence = Fence(RENEW_DEADLINE, time.clock)
    fence.renewed(started=100.0)

    time.now += 30.0  # SIGSTOP, a long GC pause: the monotonic clock runs on

    assert not fence.holds()


def test_an_older_renew_does_not_move_the_fence_back() -> None:
    time = FakeTime(now=100.0)
    fence = Fence(RENEW_DEADLINE, time.clock)
    fence.renewed(started=100.0)

    assert fence.renewed(started=95.0) == pytest.approx(10.0)


def test_a_lost_lease_never_reopens_the_fence() -> None:
    time = FakeTime(now=100.0)
    fence = Fence(RENEW_DEADLINE, time.clock)
    fence.renewed(started=100.0)
    fence.lose()

    assert fence.renewed(started=101.0) == 0.0
    assert not fence.holds()


# --- the official election over a Lease in memory --------------------------------------------


class FakeLeaseApi:
    """The Lease calls of CoordinationV1Api with the API server's optimistic concurrency: a
    replace whose resourceVersion is not the current one is a 409. ``during`` runs inside each
    call (to let time pass or to fail it)."""

    def __init__(self, time: FakeTime) -> None:
        self.time = time
        self.lease: Any = None  # a V1Lease
        self.version = 0
        self.answered_at: float | None = None
        self.during: Callable[[], None] = lambda: None

    def _answer(self, lease: client.V1Lease) -> client.V1Lease:
        self.during()
        self.answered_at = self.time.clock()
        return copy.deepcopy(lease)

    def _store(self, lease: client.V1Lease) -> client.V1Lease:
        self.version += 1
        stored = copy.deepcopy(lease)
        stored.metadata = client.V1ObjectMeta(name="lease", resource_version=str(self.version))
        self.lease = stored
        return self._answer(stored)

    def read_namespaced_lease(self, name: str, namespace: str) -> client.V1Lease:
        if self.lease is None:
            self.during()
            missing = ApiException(status=404, reason="Not Found")
            missing.body = '{"code": 404}'
            raise missing
        return self._answer(self.lease)

    def create_namespaced_lease(self, namespace: str, body: client.V1Lease) -> client.V1Lease:
        if self.lease is not None:
            raise ApiException(status=409, reason="AlreadyExists")
        return self._store(body)

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> client.V1Lease:
        assert self.lease is not None
        if body.metadata.resource_version != self.lease.metadata.resource_version:
            raise ApiException(status=409, reason="Conflict")
        return self._store(body)

    @property
    def holder(self) -> str | None:
        return self.lease.spec.holder_identity if self.lease is not None else None


class Candidate:
    """One Leadership over the shared fake Lease, with its alarm and exit recorded."""

    def __init__(self, api: FakeLeaseApi, identity: str) -> None:
        self.alarms: list[float] = []
        self.exits = 0
        self.leadership = Leadership(
            SETTINGS,
            identity,
            api,
            clock=api.time.clock,
            arm=self.alarms.append,
            on_lost=self._exit,
        )

    def _exit(self) -> None:
        self.exits += 1

    def attempt(self) -> bool:
        """One try to acquire or renew, as the election's loop makes it every retry period."""
        return bool(self.leadership._election.try_acquire_or_renew())


@pytest.fixture
def api() -> FakeLeaseApi:
    return FakeLeaseApi(FakeTime(now=1000.0))


def test_the_candidate_that_acquires_the_lease_may_write_until_its_renew_deadline(
    api: FakeLeaseApi,
) -> None:
    a = Candidate(api, "op-a")

    assert a.attempt()
    assert api.holder == "op-a"
    assert a.leadership.may_write()
    assert a.alarms == [RENEW_DEADLINE]  # the dead man's switch, at the fence's deadline
    api.time.now += RENEW_DEADLINE
    assert not a.leadership.may_write()


def test_a_second_candidate_neither_acquires_nor_writes_while_the_lease_is_held(
    api: FakeLeaseApi,
) -> None:
    a, b = Candidate(api, "op-a"), Candidate(api, "op-b")
    a.attempt()

    assert not b.attempt()
    assert api.holder == "op-a"
    assert not b.leadership.may_write()
    assert not b.leadership.leading


def test_a_slow_renew_arms_the_alarm_for_what_remains_from_its_start(api: FakeLeaseApi) -> None:
    a = Candidate(api, "op-a")
    a.attempt()

    def slow() -> None:
        api.time.now += 2.0

    api.during = slow
    assert a.attempt()  # a read and a replace: four seconds

    assert a.alarms[-1] == pytest.approx(RENEW_DEADLINE - 4.0)


def test_a_leader_that_sees_another_holder_closes_its_fence_and_exits(api: FakeLeaseApi) -> None:
    a = Candidate(api, "op-a")
    a.attempt()
    assert api.lease is not None
    api.lease.spec.holder_identity = "op-b"  # taken over while a was paused

    assert not a.attempt()
    assert not a.leadership.may_write()
    assert a.exits == 1


def test_a_failing_api_server_is_a_failed_attempt_and_the_fence_lapses(api: FakeLeaseApi) -> None:
    a = Candidate(api, "op-a")
    a.attempt()

    def unreachable() -> None:
        raise ConnectionRefusedError

    api.during = unreachable
    assert not a.attempt()
    assert a.leadership.may_write()
    api.time.now += RENEW_DEADLINE
    assert not a.leadership.may_write()


def test_a_released_lease_goes_to_the_standby_at_its_next_try(api: FakeLeaseApi) -> None:
    a, b = Candidate(api, "op-a"), Candidate(api, "op-b")
    a.attempt()
    b.attempt()

    a.leadership.release()

    assert not a.leadership.may_write()
    assert a.alarms[-1] == 0.0  # disarmed
    assert not a.attempt()  # never renews after its release
    assert b.attempt()
    assert api.holder == "op-b"
    assert a.exits == 0


def test_releasing_a_lease_held_by_another_changes_nothing(api: FakeLeaseApi) -> None:
    a, b = Candidate(api, "op-a"), Candidate(api, "op-b")
    b.attempt()
    version = api.version

    a.leadership.release()

    assert (api.holder, api.version) == ("op-b", version)


# --- the write hooks --------------------------------------------------------------------------


def fenced(
    handler: Callable[[httpx.Request], httpx.Response], may_write: Callable[[], bool]
) -> ZomroClient:
    return ZomroClient(
        Credentials(username="u", password="p-secret"),
        base_url="https://api.zomro.test/",
        options=ClientOptions(max_requests_per_second=1000.0),
        transport=httpx.MockTransport(handler),
        may_write=may_write,
    )


async def test_a_write_the_hook_refuses_is_not_sent_and_reads_still_are() -> None:
    fake = CannedZomro({FUNC_SCHEDULES: doc({"elem": []}), FUNC_SCHEDULE_EDIT: doc({"ok": {}})})

    async with fenced(fake, lambda: False) as zc:
        with pytest.raises(WriteWithheldError):
            await zc.create_schedule("5203773", SPEC)
        await zc.list_schedules("5203773")

    assert FUNC_SCHEDULE_EDIT not in fake.funcs
    assert FUNC_SCHEDULES in fake.funcs


async def test_the_hook_is_asked_right_before_sending_each_write() -> None:
    happened: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        func = parse_qs(request.content.decode())["func"][0]
        happened.append(f"sent {func}")
        if func == "auth":
            return doc({"auth": {"$id": "0f3a9c2b7d1e4f5a6b7c8d9e"}})
        return doc({"ok": {}, "id": {"$": "14"}})

    def may_write() -> bool:
        happened.append("asked")
        return True

    async with fenced(handler, may_write) as zc:
        await zc.create_schedule("5203773", SPEC)

    assert happened == ["sent auth", "asked", f"sent {FUNC_SCHEDULE_EDIT}"]


def test_a_status_write_the_hook_refuses_is_not_sent() -> None:
    sent: list[Any] = []

    class Custom:
        def patch_namespaced_custom_object_status(self, *args: Any) -> None:
            sent.append(args)

    kube = Kube(client.ApiClient(), may_write=lambda: False)
    kube._custom = Custom()  # type: ignore[assignment]

    with pytest.raises(StatusWriteWithheldError):
        kube.patch_status("team", "nightly", {"pendingCreate": None})
    assert sent == []


# --- the probes -------------------------------------------------------------------------------


class Standing:
    def __init__(self, *, leading: bool, alive: bool = True, in_contact: bool = True) -> None:
        self.leading, self.alive, self.in_contact = leading, alive, in_contact


@pytest.mark.parametrize(
    ("candidate", "operating", "expected"),
    [
        (None, True, Health(live=True, ready=True, role="standalone")),
        (Standing(leading=True), False, Health(live=True, ready=False, role="leader")),
        (Standing(leading=True), True, Health(live=True, ready=True, role="leader")),
        (Standing(leading=False), False, Health(live=True, ready=True, role="standby")),
        (
            Standing(leading=False, in_contact=False),
            False,
            Health(live=True, ready=False, role="standby"),
        ),
        (
            Standing(leading=False, alive=False),
            False,
            Health(live=False, ready=False, role="standby"),
        ),
    ],
)
def test_a_healthy_standby_is_alive_and_ready_and_says_it_stands_by(
    candidate: Standing | None, operating: bool, expected: Health
) -> None:
    assert health(candidate, operating=operating) == expected


# --- the settings -----------------------------------------------------------------------------


def test_lease_settings_default_to_controller_runtimes_durations_and_the_pods_namespace(
    tmp_path: Path,
) -> None:
    namespace_file = tmp_path / "namespace"
    namespace_file.write_text("zomro-system\n")

    settings = Settings.from_env({}, pod_namespace_file=namespace_file)

    assert settings.lease_namespace == "zomro-system"
    assert settings.lease_name == "zomro-backup-operator"
    assert (
        settings.lease_duration_seconds,
        settings.lease_renew_deadline_seconds,
        settings.lease_retry_period_seconds,
    ) == (15, 10.0, 2.0)


def test_the_lease_namespace_setting_wins_over_the_pods_and_is_none_outside_a_pod(
    tmp_path: Path,
) -> None:
    absent = tmp_path / "absent"
    assert Settings.from_env({}, pod_namespace_file=absent).lease_namespace is None
    env = {"ZOMRO_LEASE_NAMESPACE": "ops", "ZOMRO_LEASE_NAME": "zbo-blue"}
    settings = Settings.from_env(env, pod_namespace_file=absent)
    assert (settings.lease_namespace, settings.lease_name) == ("ops", "zbo-blue")


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ZOMRO_LEASE_NAMESPACE": "Not_A_Name"}, "ZOMRO_LEASE_NAMESPACE"),
        ({"ZOMRO_LEASE_NAME": "a/b"}, "ZOMRO_LEASE_NAME"),
        ({"ZOMRO_LEASE_DURATION_SECONDS": "1.5"}, "ZOMRO_LEASE_DURATION_SECONDS"),
        ({"ZOMRO_LEASE_RENEW_DEADLINE_SECONDS": "15"}, "ZOMRO_LEASE_RENEW_DEADLINE_SECONDS"),
        ({"ZOMRO_LEASE_RETRY_PERIOD_SECONDS": "9"}, "ZOMRO_LEASE_RETRY_PERIOD_SECONDS"),
        ({"ZOMRO_LEASE_RETRY_PERIOD_SECONDS": "0.5"}, "ZOMRO_LEASE_RETRY_PERIOD_SECONDS"),
    ],
)
def test_malformed_lease_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def test_run_outside_a_pod_without_a_lease_namespace_says_which_setting_to_set(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("ZOMRO_LEASE_NAMESPACE", raising=False)
    monkeypatch.setattr("zomro_backup_operator.settings.POD_NAMESPACE_FILE", Path("/nonexistent"))

    code = run_command.run(namespaces=[], all_namespaces=False, liveness=None, standalone=False)

    assert code == 2
    assert "ZOMRO_LEASE_NAMESPACE" in capsys.readouterr().err
