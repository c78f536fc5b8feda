"""Zomro's wire format: documents, rows, errors and headers, including hostile input."""

from __future__ import annotations

import datetime
import json
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import SEED_ROW, examples

from zomro_backup_operator.zomro import wire
from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    AuthenticationError,
    InvalidValueError,
    LoginTemporarilyBlockedError,
    MalformedResponseError,
    NotFoundError,
    OperationInProgressError,
    ServerError,
    SessionExpiredError,
    ThrottledError,
    ZomroError,
)
from zomro_backup_operator.zomro.models import Instance, Schedule, Weekday, validate_time


def _body(doc: object) -> bytes:
    return json.dumps({"doc": doc}).encode()


def _error(type_: str, object_: str, msg: str = "text") -> dict[str, Any]:
    return {"error": {"$type": type_, "$object": object_, "msg": {"$": msg}}}


def test_the_seed_listing_parses_field_for_field() -> None:
    doc = wire.decode_document(_body({"elem": [SEED_ROW]}), func="list")
    (schedule,) = wire.parse_schedules(doc, instance_id="5203773")
    assert schedule == Schedule(
        id="14",
        instance_id="5203773",
        name="MySchedule",
        days=frozenset(Weekday(d) for d in range(1, 7)),
        time="02:01",
        server_name="MyServer",
        create_date=datetime.date(2024, 7, 24),
    )


def test_a_list_without_elem_is_empty() -> None:
    assert wire.parse_schedules({"p_elems": {"$": "0"}}, instance_id="1") == []


def test_a_single_object_instead_of_an_array_is_a_list_of_one() -> None:
    (schedule,) = wire.parse_schedules({"elem": SEED_ROW}, instance_id="5203773")
    assert schedule.id == "14"


def test_a_row_that_is_not_an_object_is_malformed() -> None:
    with pytest.raises(MalformedResponseError, match="row 1"):
        wire.parse_schedules({"elem": [SEED_ROW, "x"]}, instance_id="1")


@pytest.mark.parametrize("missing", ["id", "name", "rotation_days", "rotation_time"])
def test_a_row_without_a_required_field_is_malformed(missing: str) -> None:
    row = {key: value for key, value in SEED_ROW.items() if key != missing}
    with pytest.raises(MalformedResponseError, match=missing):
        wire.parse_schedules({"elem": [row]}, instance_id="1")


@pytest.mark.parametrize(
    ("listed", "expected"), [("02:01", "02:01"), ("2:01", "02:01"), ("23:59:00", "23:59")]
)
def test_listed_times_are_normalised_to_hh_mm(listed: str, expected: str) -> None:
    row = {**SEED_ROW, "rotation_time": {"$": listed}}
    (schedule,) = wire.parse_schedules({"elem": [row]}, instance_id="1")
    assert schedule.time == expected


@pytest.mark.parametrize("listed", ["24:00", "02:01:30", "noon", ""])
def test_unreadable_listed_times_are_malformed(listed: str) -> None:
    row = {**SEED_ROW, "rotation_time": {"$": listed}}
    with pytest.raises(MalformedResponseError, match="rotation days or time"):
        wire.parse_schedules({"elem": [row]}, instance_id="1")


def test_an_instance_id_missing_from_the_row_is_the_one_asked_for() -> None:
    row = {key: value for key, value in SEED_ROW.items() if key != "instance_id"}
    (schedule,) = wire.parse_schedules({"elem": [row]}, instance_id="77")
    assert schedule.instance_id == "77"


def test_instances_parse_with_optional_fields_absent() -> None:
    doc = {"elem": [{"id": {"$": "5203773"}, "name": {"$": "MyServer"}}, {"id": "9"}]}
    assert wire.parse_instances(doc) == [
        Instance(id="5203773", name="MyServer"),
        Instance(id="9", name=""),
    ]


def test_scalars_unwrap_dollar_objects_bare_strings_and_arrays_of_one() -> None:
    assert wire.scalar({"$": "a"}) == "a"
    assert wire.scalar("b") == "b"
    assert wire.scalar([{"$": "c"}]) == "c"
    assert wire.scalar({"x": "y"}) is None
    assert wire.scalar(True) is None


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"<html><body>502 Bad Gateway</body></html>", ServerError),
        (b"", ServerError),
        (b"\xff\xfe", ServerError),
        (b"[1, 2]", MalformedResponseError),
        (b'{"nodoc": 1}', MalformedResponseError),
        (b'{"doc": "text"}', MalformedResponseError),
        (b"[" * 100_000 + b"]" * 100_000, MalformedResponseError),
        (b'{"doc": {"n": ' + b"9" * 10_000 + b"}}", ServerError),
    ],
)
def test_bodies_that_are_not_a_zomro_document_raise_clear_errors(
    body: bytes, error: type[ZomroError]
) -> None:
    with pytest.raises(error):
        wire.decode_document(body, func="f")


def test_a_body_over_the_size_cap_is_refused_before_parsing() -> None:
    body = b'{"doc": {"x": "' + b"a" * wire.MAX_BODY_BYTES + b'"}}'
    with pytest.raises(ServerError, match="larger than"):
        wire.decode_document(body, func="f")


def test_the_session_id_comes_from_auth_id() -> None:
    doc = {"auth": {"$id": "7e0cb9825a87e4c1a150dc9b", "$level": "16", "$": "7e0cb9825a87"}}
    assert wire.parse_session_id(doc) == "7e0cb9825a87e4c1a150dc9b"


def test_a_session_id_of_odd_form_is_refused_without_echoing_it() -> None:
    with pytest.raises(MalformedResponseError) as caught:
        wire.parse_session_id({"auth": {"$id": "abc def\n"}})
    assert "abc" not in str(caught.value)


def test_a_login_answer_asking_for_a_second_factor_is_an_authentication_error() -> None:
    with pytest.raises(AuthenticationError, match="second factor"):
        wire.parse_session_id({"totp": {"$": "required"}})


def test_a_created_id_is_read_when_present() -> None:
    assert wire.parse_created_id({"ok": {}, "id": {"$": "15"}}) == "15"
    assert wire.parse_created_id({"ok": {}}) is None


@pytest.mark.parametrize(
    ("doc", "error"),
    [
        (_error("auth", "badpassword"), AuthenticationError),
        (_error("auth", "blocked_ip"), AuthenticationError),
        (_error("auth", "blockgeoip"), AuthenticationError),
        (_error("auth", "totp"), AuthenticationError),
        (_error("auth", "blocklogon"), LoginTemporarilyBlockedError),
        (_error("auth", ""), SessionExpiredError),
        (
            _error("access", "", "Insufficient privileges to perform this operation"),
            AccessDeniedError,
        ),
        (_error("value", "runningoperation"), OperationInProgressError),
        (
            _error("access", "requestinprocess", "Request in process. Please wait"),
            OperationInProgressError,
        ),
        (_error("missed", "elid", "The item '15' does not exist"), NotFoundError),
        (_error("value", "name"), InvalidValueError),
        (_error("weird", "thing"), ZomroError),
        ({"error": "just a string"}, ZomroError),
    ],
)
def test_each_zomro_error_maps_to_its_class(doc: dict[str, Any], error: type[ZomroError]) -> None:
    info = wire.read_error(doc)
    assert info is not None
    assert type(wire.to_exception(info, func="f")) is error


def test_field_errors_are_parsed_from_a_json_string_in_object() -> None:
    encoded = json.dumps({"rotation_time": ["Invalid time"], "name": "blank"})
    info = wire.read_error(_error("value", encoded, "Invalid value"))
    assert info is not None
    exc = wire.to_exception(info, func="f")
    assert isinstance(exc, InvalidValueError)
    assert exc.field_errors == {"rotation_time": ["Invalid time"], "name": ["blank"]}


def test_blocklogon_asks_to_wait_about_twenty_seconds() -> None:
    info = wire.read_error(_error("auth", "blocklogon"))
    assert info is not None
    assert wire.to_exception(info, func="auth").retry_after == pytest.approx(20)


def test_an_expired_session_is_a_session_problem_but_a_busy_one_is_not() -> None:
    expired = wire.read_error(_error("access", "", "Insufficient privileges to perform"))
    busy = wire.read_error(_error("access", "requestinprocess", "Request in process"))
    refused = wire.read_error(_error("auth", "badpassword"))
    assert expired is not None
    assert expired.is_session_problem
    assert busy is not None
    assert not busy.is_session_problem
    assert refused is not None
    assert not refused.is_session_problem


def test_server_text_is_stripped_of_control_characters_and_bounded() -> None:
    info = wire.read_error(_error("value", "name", "line\r\nforged" + "x" * 1000))
    assert info is not None
    assert "\n" not in info.message
    assert len(info.message) <= 300


def _without(secret: str) -> Callable[[str], str]:
    return lambda text: text.replace(secret, "<redacted>")


def test_redaction_removes_secrets_from_every_echoed_field_type_included() -> None:
    doc = {
        "error": {
            "$type": "sid123",
            "$object": "sid123",
            "msg": {"$": "bad sid123"},
            "detail": {"$": "sid123!"},
        }
    }
    info = wire.read_error(doc, redact=_without("sid123"))
    fields = wire.read_error(
        _error("value", json.dumps({"sid123": ["sid123"]}), "x"), redact=_without("sid123")
    )
    assert "sid123" not in repr(info) + repr(fields)


def test_a_secret_inside_one_of_zomros_codes_leaves_the_error_its_meaning() -> None:
    # The password "bad" is part of the code "badpassword": redacting it there made the refused
    # login a session problem, retried four times instead of remembered as refused.
    doc = _error("auth", "badpassword", "Wrong password: bad")
    info = wire.read_error(doc, redact=_without("bad"))
    assert info is not None
    assert (info.type, info.object) == ("auth", "badpassword")
    assert "bad" not in info.message
    assert isinstance(wire.to_exception(info, func="auth"), AuthenticationError)


def test_a_secret_is_redacted_before_cleaning_can_change_it() -> None:
    secret = "pa\tss-word"  # cleaning would turn the tab into a space, and the match would fail
    info = wire.read_error(_error("auth", "", f"bad {secret}"), redact=_without(secret))
    assert info is not None
    assert "ss-word" not in info.message


def test_a_secret_is_redacted_before_truncation_can_cut_it_in_half() -> None:
    secret = "TopSecretPassword42"
    message = "x" * 290 + secret
    info = wire.read_error(_error("auth", "", message), redact=_without(secret))
    assert info is not None
    assert "TopSecret" not in info.message


@pytest.mark.parametrize(
    ("header", "expected"),
    [("7", 7.0), ("0", 0.0), ("2.5", 2.5), ("999999", wire.MAX_RETRY_AFTER), ("-3", None)],
)
def test_retry_after_in_seconds(header: str, expected: float | None) -> None:
    assert wire.parse_retry_after(header) == expected


def test_retry_after_as_an_http_date() -> None:
    now = datetime.datetime(2024, 7, 24, 12, 0, 0, tzinfo=datetime.UTC)
    assert wire.parse_retry_after("Wed, 24 Jul 2024 12:00:30 GMT", now=now) == 30.0
    assert wire.parse_retry_after("Wed, 24 Jul 2024 11:00:00 GMT", now=now) == 0.0
    assert wire.parse_retry_after("soon", now=now) is None


@pytest.mark.parametrize("status", [403, 460, 429])
def test_edge_blocks_are_throttles_with_their_retry_after(status: int) -> None:
    error = wire.status_error(status, {"retry-after": "12"}, func="f")
    assert isinstance(error, ThrottledError)
    assert error.retry_after == 12.0


def test_a_5xx_is_a_server_error_and_2xx_is_none() -> None:
    assert isinstance(wire.status_error(502, {}, func="f"), ServerError)
    assert wire.status_error(200, {}, func="f") is None


# --- property tests -------------------------------------------------------------------------

_json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20)
)
_json = st.recursive(
    _json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=30,
)
_field_names = st.sampled_from(
    [
        "id",
        "name",
        "rotation_days",
        "rotation_time",
        "instance_id",
        "create_date",
        "servername",
        "ip",
        "status",
        "$",
        "$id",
        "$type",
        "$object",
        "msg",
    ]
)
_rowish = st.dictionaries(
    _field_names,
    _json | st.builds(lambda v: {"$": v}, st.text(max_size=30)),
    max_size=8,
)
_docish = st.dictionaries(
    st.sampled_from(["elem", "error", "auth", "id", "ok", "p_elems", "totp"]),
    _json | _rowish | st.lists(_rowish, max_size=3),
    max_size=4,
)


def _parse_everything(doc: dict[str, object]) -> None:
    """Every parser on one document: each returns valid values or raises a ZomroError."""
    for call in (
        lambda: wire.parse_schedules(doc, instance_id="1"),
        lambda: wire.parse_instances(doc),
        lambda: wire.parse_session_id(doc),
        lambda: wire.parse_created_id(doc),
        lambda: wire.is_acknowledged(doc),
    ):
        try:
            result = call()
        except ZomroError:
            continue
        if isinstance(result, list):
            for item in result:
                if isinstance(item, Schedule):
                    assert item.id
                    assert isinstance(item.name, str)
                    assert validate_time(item.time) == item.time
                    assert all(isinstance(day, Weekday) for day in item.days)
                else:
                    assert isinstance(item, Instance)
                    assert item.id
    info = wire.read_error(doc)
    if info is not None:
        assert isinstance(wire.to_exception(info, func="f"), ZomroError)
        assert isinstance(info.is_session_problem, bool)


@settings(max_examples=examples(300), deadline=None)
@given(_docish)
def test_any_document_parses_to_valid_models_or_a_zomro_error(doc: dict[str, object]) -> None:
    _parse_everything(doc)


@settings(max_examples=examples(200), deadline=None)
@given(st.binary(max_size=200) | st.builds(lambda v: json.dumps(v).encode(), _json))
def test_any_body_decodes_to_a_document_or_a_zomro_error(body: bytes) -> None:
    try:
        doc = wire.decode_document(body, func="f")
    except ZomroError:
        return
    assert isinstance(doc, dict)
    _parse_everything(doc)


@settings(max_examples=examples(100), deadline=None)
@given(st.text(max_size=80), st.text(max_size=40))
def test_any_error_object_and_message_map_to_a_zomro_error(obj: str, msg: str) -> None:
    info = wire.read_error(_error("value", obj, msg))
    assert info is not None
    assert isinstance(wire.to_exception(info, func="f"), ZomroError)


@given(st.text(max_size=40))
def test_any_retry_after_header_is_a_bounded_number_or_none(header: str) -> None:
    value = wire.parse_retry_after(header)
    assert value is None or 0.0 <= value <= wire.MAX_RETRY_AFTER


def test_a_servername_from_zomro_is_cleaned_and_bounded_before_it_reaches_status() -> None:
    row = {**SEED_ROW, "servername": {"$": "evil\r\nname" + "x" * 5000}}
    (schedule,) = wire.parse_schedules({"elem": [row]}, instance_id="5203773")
    assert schedule.server_name is not None
    assert "\n" not in schedule.server_name
    assert len(schedule.server_name) <= wire.MAX_SERVER_NAME


@pytest.mark.parametrize("text", ["²", "٣", "1²"])
def test_unicode_digits_are_not_day_numbers(text: str) -> None:
    with pytest.raises(ValueError, match="day"):
        wire.parse_listed_days(text)


def test_unicode_digits_are_not_paging_counts() -> None:
    assert wire.paging({"p_elems": {"$": "²"}, "p_cnt": {"$": "2"}}) is None
    assert wire.paging({"p_elems": {"$": "5"}, "p_cnt": {"$": "2"}}) == (5, 2)
