"""Reading resources and settings: clear errors naming the field or variable."""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import PROVIDER_ZONE, READ_AT

from zomro_backup_operator.pending import PendingCreate
from zomro_backup_operator.resources import (
    Desired,
    InvalidSpecError,
    InvalidStatusError,
    Observed,
    ready_at_generation,
)
from zomro_backup_operator.secret_store import CredentialsError, CredentialStore, parse_secret
from zomro_backup_operator.settings import SecretRef, Settings, SettingsError
from zomro_backup_operator.time_zones import ZONE_NAME_MAX_LENGTH, ZONE_NAME_PATTERN
from zomro_backup_operator.zomro.models import ID_PATTERN, Weekday

REPO = Path(__file__).resolve().parents[2]

SPEC = {"instanceId": "5203773", "days": ["Monday", "Friday"], "time": "02:01"}


def read(
    spec: Mapping[str, object], annotations: dict[str, str] | None = None, name: str = "nightly"
) -> Desired:
    return Desired.from_resource(
        namespace="team",
        name=name,
        generation=3,
        spec=spec,
        annotations=annotations or {},
        at=READ_AT,
        provider_zone=PROVIDER_ZONE,
    )


def test_schedule_name_defaults_to_the_resource_name() -> None:
    desired = read(SPEC)
    assert desired.schedule.name == "nightly"
    assert desired.schedule.days == frozenset({Weekday.MONDAY, Weekday.FRIDAY})
    assert desired.deletion_policy == "Delete"


def test_the_adoption_annotation_is_read() -> None:
    assert read(SPEC, {"zomro.com/schedule-id": "14"}).adopt_id == "14"


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ({**SPEC, "instanceId": "abc"}, "spec.instanceId"),
        ({**SPEC, "days": ["Funday"]}, "spec.days"),
        ({**SPEC, "days": []}, "at least one day"),
        ({**SPEC, "time": "25:00"}, "HH:MM"),
        ({**SPEC, "deletionPolicy": "Keep"}, "spec.deletionPolicy"),
    ],
)
def test_bad_specs_are_refused_naming_the_field(spec: dict[str, object], field: str) -> None:
    with pytest.raises(InvalidSpecError, match=field):
        read(spec)


def test_a_long_resource_name_without_schedule_name_is_refused() -> None:
    with pytest.raises(InvalidSpecError, match="1-60"):
        read(SPEC, name="x" * 61)


def test_observed_status_reads_id_pending_intent_and_ready_reason() -> None:
    observed = Observed.from_status(
        {
            "scheduleId": "14",
            "pendingCreate": {"name": "MySchedule"},
            "observedGeneration": 2,
            "conditions": [{"type": "Ready", "status": "False", "reason": "Conflict"}],
        }
    )
    assert observed == Observed(
        schedule_id="14",
        pending=PendingCreate("MySchedule", 0.0),
        observed_generation=2,
        ready_reason="Conflict",
    )


def test_settings_have_the_documented_defaults() -> None:
    settings = Settings.from_env({})
    assert settings.api_url == "https://api.zomro.com/"
    assert settings.resync_seconds == 300
    assert settings.default_credentials is None
    assert (settings.backup_check_seconds, settings.backup_grace_seconds) == (600, 10800)


def test_settings_are_read_from_the_environment() -> None:
    settings = Settings.from_env(
        {
            "ZOMRO_CREDENTIALS_SECRET": "ops/zomro",
            "ZOMRO_RESYNC_SECONDS": "30",
            "ZOMRO_LOG_FORMAT": "JSON",
            "ZOMRO_BACKUP_CHECK_SECONDS": "60",
            "ZOMRO_BACKUP_GRACE_SECONDS": "7200",
        }
    )
    assert settings.default_credentials == SecretRef("ops", "zomro")
    assert settings.resync_seconds == 30
    assert settings.log_format == "json"
    assert (settings.backup_check_seconds, settings.backup_grace_seconds) == (60, 7200)


@pytest.mark.parametrize(
    ("env", "variable"),
    [
        ({"ZOMRO_CREDENTIALS_SECRET": "no-slash"}, "ZOMRO_CREDENTIALS_SECRET"),
        ({"ZOMRO_RESYNC_SECONDS": "soon"}, "ZOMRO_RESYNC_SECONDS"),
        ({"ZOMRO_RESYNC_SECONDS": "0"}, "ZOMRO_RESYNC_SECONDS"),
        ({"ZOMRO_BACKUP_CHECK_SECONDS": "0"}, "ZOMRO_BACKUP_CHECK_SECONDS"),
        ({"ZOMRO_BACKUP_GRACE_SECONDS": "later"}, "ZOMRO_BACKUP_GRACE_SECONDS"),
        ({"ZOMRO_API_URL": "ftp://x"}, "ZOMRO_API_URL"),
        ({"ZOMRO_LOG_FORMAT": "xml"}, "ZOMRO_LOG_FORMAT"),
    ],
)
def test_malformed_settings_name_the_variable(env: dict[str, str], variable: str) -> None:
    with pytest.raises(SettingsError, match=variable):
        Settings.from_env(env)


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


REF = SecretRef("team", "zomro")


def test_a_secret_with_username_and_password_gives_a_renewable_login() -> None:
    credentials = parse_secret(REF, {"username": b64("demo"), "password": b64("s3cret")})
    assert (credentials.username, credentials.password) == ("demo", "s3cret")


def test_a_secret_with_only_a_token_gives_token_credentials() -> None:
    assert parse_secret(REF, {"token": b64("abc123")}).token == "abc123"


def test_a_secret_without_usable_keys_names_the_keys_but_no_values() -> None:
    with pytest.raises(CredentialsError, match="'username' and 'password', or 'token'") as info:
        parse_secret(REF, {"username": b64("demo-user-name")})
    assert "demo-user-name" not in str(info.value)


async def test_a_deleted_secret_still_serves_deletions_with_its_last_known_value() -> None:
    secrets: dict[tuple[str, str], dict[str, str]] = {
        ("team", "zomro"): {"username": b64("demo"), "password": b64("demo")}
    }
    now = [0.0]
    store = CredentialStore(
        lambda ns, n: secrets.get((ns, n)), default=None, ttl=10, clock=lambda: now[0]
    )
    assert (await store.get(REF)).username == "demo"

    del secrets[("team", "zomro")]
    now[0] = 11.0

    with pytest.raises(CredentialsError, match="not found"):
        await store.get(REF)
    assert (await store.get(REF, allow_last_known=True)).username == "demo"


async def test_a_rotated_secret_is_picked_up_after_the_cache_time() -> None:
    secrets = {("team", "zomro"): {"token": b64("old")}}
    now = [0.0]
    store = CredentialStore(
        lambda ns, n: secrets.get((ns, n)), default=None, ttl=10, clock=lambda: now[0]
    )
    assert (await store.get(REF)).token == "old"

    secrets[("team", "zomro")] = {"token": b64("new")}
    now[0] = 5.0
    assert (await store.get(REF)).token == "old"
    now[0] = 10.0
    assert (await store.get(REF)).token == "new"


def test_without_a_secret_ref_or_default_the_error_says_what_to_set() -> None:
    store = CredentialStore(lambda ns, n: None, default=None)
    with pytest.raises(CredentialsError, match="ZOMRO_CREDENTIALS_SECRET"):
        store.ref_for("team", None)


@pytest.mark.parametrize("value", ["05203773", "²", "5203773²", "٥٢٠", "1" * 21, " 5203773", "0"])
def test_an_instance_id_must_be_plain_digits_without_a_leading_zero(value: str) -> None:
    # A leading zero made "05203773" a different claim key than "5203773"; "²" passes isdigit().
    with pytest.raises(InvalidSpecError, match=r"spec.instanceId must be 1-20 digits"):
        read({**SPEC, "instanceId": value})


@pytest.mark.parametrize("value", ["14, 15", "14,15", "²", "014", "1" * 21])
def test_a_malformed_schedule_id_in_status_is_refused_before_it_can_reach_zomro(
    value: str,
) -> None:
    with pytest.raises(InvalidStatusError, match=r"status\.scheduleId"):
        Observed.from_status({"scheduleId": value})


@pytest.mark.parametrize("value", ["14, 15", "²", "x" * 100_000])
def test_a_malformed_adoption_annotation_is_refused_and_never_echoed_in_full(value: str) -> None:
    with pytest.raises(InvalidSpecError, match=r"annotation zomro\.com/schedule-id") as caught:
        read(SPEC, {"zomro.com/schedule-id": value})
    assert len(str(caught.value)) < 200


def test_the_adoption_annotation_is_ignored_on_deletion() -> None:
    desired = Desired.from_resource(
        namespace="team",
        name="nightly",
        generation=3,
        spec=SPEC,
        annotations={"zomro.com/schedule-id": "not-an-id" * 1000},
        at=READ_AT,
        provider_zone=PROVIDER_ZONE,
        deleting=True,
    )
    assert desired.adopt_id is None


def test_a_secret_without_usable_keys_does_not_list_the_keys_it_holds() -> None:
    with pytest.raises(CredentialsError) as info:
        parse_secret(REF, {"ssh-private-key-of-team-b": b64("x"), "user": b64("demo")})
    assert "ssh-private-key-of-team-b" not in str(info.value)
    assert "'user'" not in str(info.value)


def test_a_secret_value_that_is_not_utf8_leaves_no_trace_of_its_bytes() -> None:
    raw = base64.b64encode(b"\xffsecret-bytes").decode()
    with pytest.raises(CredentialsError) as info:
        parse_secret(REF, {"username": b64("demo"), "password": raw})
    assert info.value.__context__ is None


@pytest.mark.parametrize(
    "url",
    ["http://127.0.0.1:8808/", "http://localhost:8808/", "http://[::1]:8808/", "http://127.1.2.3/"],
)
def test_plain_http_to_a_loopback_address_is_accepted(url: str) -> None:
    assert Settings.from_env({"ZOMRO_API_URL": url}).api_url == url


@pytest.mark.parametrize(
    "url", ["http://api.zomro.com/", "http://10.0.0.5:8808/", "http://localhost.evil.com/"]
)
def test_plain_http_elsewhere_is_refused_naming_the_variable_and_the_setting(url: str) -> None:
    with pytest.raises(SettingsError, match=r"ZOMRO_API_URL.*ZOMRO_ALLOW_INSECURE_HTTP"):
        Settings.from_env({"ZOMRO_API_URL": url})


def test_plain_http_elsewhere_is_accepted_when_explicitly_allowed() -> None:
    env = {"ZOMRO_API_URL": "http://zomro-sandbox:8808/", "ZOMRO_ALLOW_INSECURE_HTTP": "true"}
    assert Settings.from_env(env).api_url == "http://zomro-sandbox:8808/"
    with pytest.raises(SettingsError, match="ZOMRO_ALLOW_INSECURE_HTTP must be true or false"):
        Settings.from_env({**env, "ZOMRO_ALLOW_INSECURE_HTTP": "yes"})


def test_the_crd_and_the_operator_agree_on_what_an_instance_id_is() -> None:
    crd = yaml.safe_load((REPO / "crds" / "backupschedules.zomro.com.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["instanceId"]["pattern"] == ID_PATTERN


def test_ready_counts_only_at_the_current_generation() -> None:
    def body(condition_generation: int, status_generation: int) -> dict[str, Any]:
        ready = {"type": "Ready", "status": "True", "observedGeneration": condition_generation}
        status = {"observedGeneration": status_generation, "conditions": [ready]}
        return {"metadata": {"generation": 2}, "status": status}

    assert ready_at_generation(body(2, 2))
    assert not ready_at_generation(body(1, 2))
    assert not ready_at_generation(body(2, 1))
    assert not ready_at_generation({"metadata": {"generation": 2}})


def test_a_time_zone_converts_days_and_time_to_zomros_clock_and_keeps_the_spec_as_wanted() -> None:
    # Monday 20:00 in New York (UTC-5 in January) is Tuesday 01:00 UTC, 03:00 in Kyiv (UTC+2).
    desired = read({**SPEC, "days": ["Monday"], "time": "20:00", "timeZone": "America/New_York"})
    assert (desired.schedule.days, desired.schedule.time) == (frozenset({Weekday.TUESDAY}), "03:00")
    assert desired.wanted is not None
    assert (desired.wanted.days, desired.wanted.time) == (frozenset({Weekday.MONDAY}), "20:00")
    assert desired.time_zone == "America/New_York"
    assert desired.timing is not None
    assert desired.timing.next_run == dt.datetime(2026, 1, 13, 1, 0, tzinfo=dt.UTC)
    assert desired.timing.changes_at is not None  # New York moves on 8 March, Kyiv on 29 March


def test_without_a_time_zone_the_spec_goes_to_zomro_as_written_and_runs_on_zomros_clock() -> None:
    desired = read(SPEC)  # Monday, Friday 02:01
    assert (desired.schedule.days, desired.schedule.time) == (
        frozenset({Weekday.MONDAY, Weekday.FRIDAY}),
        "02:01",
    )
    assert desired.wanted is None
    assert desired.timing is not None
    # Friday 9 January 02:01 in Kyiv (UTC+2), after Wednesday noon UTC.
    assert desired.timing.next_run == dt.datetime(2026, 1, 9, 0, 1, tzinfo=dt.UTC)
    assert desired.timing.changes_at is None


def test_an_unknown_time_zone_is_an_invalid_spec_naming_the_field() -> None:
    with pytest.raises(
        InvalidSpecError, match=r"^spec\.timeZone: unknown time zone 'Europe/Berln'"
    ):
        read({**SPEC, "timeZone": "Europe/Berln"})


def test_a_suspended_or_deleted_resource_never_needs_its_time_zone() -> None:
    bad = {**SPEC, "timeZone": "Europe/Berln"}
    suspended = read({**bad, "suspend": True})
    assert suspended.suspend
    assert suspended.timing is None
    deleting = Desired.from_resource(
        namespace="team",
        name="nightly",
        generation=3,
        spec=bad,
        annotations={},
        at=READ_AT,
        provider_zone=PROVIDER_ZONE,
        deleting=True,
    )
    assert deleting.timing is None


def test_the_crd_checks_a_time_zones_shape_as_the_operator_documents_it() -> None:
    crd = yaml.safe_load((REPO / "crds" / "backupschedules.zomro.com.yaml").read_text())
    spec = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert spec["properties"]["timeZone"]["pattern"] == ZONE_NAME_PATTERN
    assert spec["properties"]["timeZone"]["maxLength"] == ZONE_NAME_MAX_LENGTH
    assert spec["properties"]["suspend"] == {**spec["properties"]["suspend"], "default": False}


def test_observed_status_reads_what_zomro_was_last_given() -> None:
    observed = Observed.from_status({"providerDays": ["Tuesday"], "providerTime": "03:00"})
    assert observed.provider == (frozenset({Weekday.TUESDAY}), "03:00")
    assert (
        Observed.from_status({"providerDays": ["Someday"], "providerTime": "03:00"}).provider
        is None
    )
