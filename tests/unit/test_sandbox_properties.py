"""Properties of the sandbox's schedule rules, driven straight through its API dispatcher."""

from __future__ import annotations

import json
import re
import string

from hypothesis import given, settings
from hypothesis import strategies as st
from support import examples

from zomro_backup_operator.sandbox.api import Api
from zomro_backup_operator.sandbox.config import default_config
from zomro_backup_operator.sandbox.model import ManualClock, SandboxState

INSTANCE = "5203773"
NAMES = ["Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"]
VALID_DAYS = re.compile(r"[0-6](,[0-6])*")


def fresh_api() -> Api:
    return Api(SandboxState(default_config(), clock=ManualClock()))


def create(api: Api, **fields: str) -> dict[str, object]:
    params = {
        "func": "instances.fleio_bckps.schedule.edit",
        "authinfo": "demo:demo",
        "out": "json",
        "plid": INSTANCE,
        "name": "p",
        "rotation_days": "1",
        "rotation_time": "02:01",
        "sok": "ok",
        **fields,
    }
    doc: dict[str, object] = api.handle(params, "127.0.0.1").doc["doc"]
    return doc


@settings(max_examples=examples(200), deadline=None)
@given(st.lists(st.integers(0, 6), min_size=1, max_size=7, unique=True))
def test_any_set_of_days_in_any_order_lists_as_those_names_in_week_order(days: list[int]) -> None:
    api = fresh_api()
    assert "ok" in create(api, rotation_days=",".join(map(str, days)))
    listed = api.handle(
        {"func": "instances.fleio_bckps.schedule", "authinfo": "demo:demo", "elid": INSTANCE},
        "127.0.0.1",
    ).doc["doc"]["elem"][0]["rotation_days"]["$"]
    assert listed.endswith(" ")
    assert listed.split() == [NAMES[d] for d in sorted(days)]


@settings(max_examples=examples(300), deadline=None)
@given(st.text(alphabet=string.digits + ", ;-\n\t" + "٣", max_size=16))
def test_rotation_days_is_accepted_exactly_when_it_is_a_comma_list_of_distinct_0_to_6(
    text: str,
) -> None:
    api = fresh_api()
    doc = create(api, rotation_days=text)
    numbers = text.split(",")
    valid = bool(VALID_DAYS.fullmatch(text)) and len(set(numbers)) == len(numbers)
    if valid:
        assert "ok" in doc
    else:
        error = doc["error"]
        assert isinstance(error, dict)
        assert error["$type"] == "value"
        assert "rotation_days" in json.loads(error["$object"])
        assert api.state.schedules == {}


@settings(max_examples=examples(300), deadline=None)
@given(
    st.one_of(
        st.from_regex(r"\A[0-9]{1,3}:[0-9]{1,3}\Z"),
        st.from_regex(r"\A([01][0-9]|2[0-3]):[0-5][0-9]\Z"),
        st.text(max_size=8),
    )
)
def test_rotation_time_is_accepted_exactly_when_it_is_hh_mm_on_a_24_hour_clock(text: str) -> None:
    api = fresh_api()
    doc = create(api, rotation_time=text)
    valid = re.fullmatch(r"([01][0-9]|2[0-3]):[0-5][0-9]", text, flags=re.ASCII) is not None
    assert ("ok" in doc) == valid
