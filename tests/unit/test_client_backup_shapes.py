"""The client's backup operations on canned answers: the wire shapes Zomro may give (dates as an
array of one, sizes as strings, extra fields), its refusals, and which calls are sent how often."""

from __future__ import annotations

import datetime
import json

import httpx
import pytest
from test_client_shapes import INSTANCE, Answer, CannedZomro, doc, error, make

from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    BackupLimitError,
    BackupProtectedError,
    DailyBackupLimitError,
    InvalidValueError,
    MalformedResponseError,
    OperationInProgressError,
    UnknownOutcomeError,
    ZomroError,
)
from zomro_backup_operator.zomro.funcs import (
    FUNC_AUTH,
    FUNC_BACKUP_EDIT,
    FUNC_BACKUPS,
    FUNC_IMAGE_DELETE,
    FUNC_IMAGE_EDIT,
    FUNC_INSTANCE_EDIT,
)
from zomro_backup_operator.zomro.models import Backup

AUTO_ROW = {
    "id": {"$": "3001"},
    "name": {"$": "MyServer-2026-12-01"},
    "backup_type": {"$": "Auto"},
    "fleio_status": {"$": "ACTIVE"},
    "createdate": [{"$": "2026-12-01 02:01:07"}],
    "image_size": {"$": "1.37"},
    "protected": {"$": "off"},
    "fleio_id": {"$": "00000bb9-0000-4000-8000-0000004f6a1d"},
    "os_distro": {"$": "ubuntu"},
    "something_new": {"$": "ignored"},
}
MANUAL_ROW = {
    "id": {"$": "3002"},
    "name": {"$": "before upgrade"},
    "backup_type": {"$": "manual"},
    "fleio_status": {"$": "image_creating"},
    "createdate": {"$": "2026-12-01 10:15:00"},
    "image_size": {"$": "2,5"},
    "protected": {"$": "on"},
}
LISTING = {
    "elem": [AUTO_ROW, MANUAL_ROW],
    "p_elems": {"$": "2"},
    "manual_created_today": {"$": "1"},
    "manual_created_total": {"$": "7"},
    "backup_rotation": {"$": "5"},
    "cost": {"stat_cost": {"$": "0.0043"}},
}
DETAILS = {
    "elid": {"$": "3002"},
    "name": {"$": "before upgrade"},
    "fleio_status": {"$": "active"},
    "created": {"$": "2026-12-01 10:15:00"},
    "image_size": {"$": "2.50"},
    "backup_type": {"$": "manual"},
    "protected": {"$": "on"},
}
OK = doc({"ok": {"$": "ok"}})
GONE = error("missed", "elid", "The item '3002' does not exist")


def limit_refusal(text: str) -> httpx.Response:
    return error("value", json.dumps({"non_field_errors": [text]}), f"Invalid value: {text}")


# --- reads ----------------------------------------------------------------------------------


async def test_a_listing_gives_typed_backups_and_the_instances_figures() -> None:
    fake = CannedZomro({FUNC_BACKUPS: doc(LISTING)})
    async with make(fake) as zc:
        listing = await zc.list_backups(INSTANCE)
    assert listing.backups == (
        Backup(
            id="3001",
            name="MyServer-2026-12-01",
            backup_type="auto",
            status="active",
            created=datetime.datetime(2026, 12, 1, 2, 1, 7),
            size_gb=1.37,
            protected=False,
        ),
        Backup(
            id="3002",
            name="before upgrade",
            backup_type="manual",
            status="image_creating",
            created=datetime.datetime(2026, 12, 1, 10, 15),
            size_gb=2.5,
            protected=True,
        ),
    )
    assert [b.usable for b in listing.backups] == [True, False]
    assert (listing.rotation, listing.manual_created_today, listing.manual_created_total) == (
        5,
        1,
        7,
    )
    assert fake.calls[-1]["elid"] == INSTANCE


async def test_an_empty_listing_has_no_elem_and_no_backups() -> None:
    fake = CannedZomro({FUNC_BACKUPS: doc({"p_elems": {"$": "0"}})})
    async with make(fake) as zc:
        listing = await zc.list_backups(INSTANCE)
    assert listing.backups == ()
    assert listing.rotation is None


async def test_a_paged_listing_is_read_to_the_last_page() -> None:
    pages: list[Answer] = [
        doc({**LISTING, "elem": [AUTO_ROW], "p_cnt": {"$": "1"}}),
        doc({**LISTING, "elem": [MANUAL_ROW], "p_cnt": {"$": "1"}}),
    ]
    fake = CannedZomro({FUNC_BACKUPS: pages})
    async with make(fake) as zc:
        listing = await zc.list_backups(INSTANCE)
    assert [b.id for b in listing.backups] == ["3001", "3002"]
    assert fake.calls[-1]["p_num"] == "2"


async def test_a_listing_is_a_read_and_retried_after_a_server_error() -> None:
    answers: list[Answer] = [httpx.Response(502, text="<html>"), doc(LISTING)]
    fake = CannedZomro({FUNC_BACKUPS: answers})
    async with make(fake) as zc:
        listing = await zc.list_backups(INSTANCE)
    assert len(listing.backups) == 2
    assert fake.funcs.count(FUNC_BACKUPS) == 2


@pytest.mark.parametrize(
    ("change", "why"),
    [
        ({"id": {"$": "30 01"}}, "id"),
        ({"id": {"$": "²"}}, "id"),
        ({"id": None}, "id"),
        ({"fleio_status": None}, "fleio_status"),
    ],
)
async def test_a_row_without_a_well_formed_id_or_a_status_is_malformed(
    change: dict[str, object], why: str
) -> None:
    row = {key: value for key, value in {**AUTO_ROW, **change}.items() if value is not None}
    fake = CannedZomro({FUNC_BACKUPS: doc({**LISTING, "elem": [row]})})
    async with make(fake) as zc:
        with pytest.raises(MalformedResponseError, match=why):
            await zc.list_backups(INSTANCE)


@pytest.mark.parametrize(
    ("createdate", "expected"),
    [
        ("2026-12-01 02:01:07", datetime.datetime(2026, 12, 1, 2, 1, 7)),
        ([{"$": "2026-12-01 02:01:07"}], datetime.datetime(2026, 12, 1, 2, 1, 7)),
        (["2026-12-01T02:01"], datetime.datetime(2026, 12, 1, 2, 1)),
        ({"$": "2026-12-01 02:01:07+03:00"}, datetime.datetime(2026, 12, 1, 2, 1, 7)),
        ({"$": "2026-12-01"}, None),
        ({"$": "yesterday"}, None),
        ({"$": "2026-02-30 02:01:07"}, None),
        ([], None),
    ],
)
async def test_createdate_is_read_as_the_naive_time_zomro_listed(
    createdate: object, expected: datetime.datetime | None
) -> None:
    fake = CannedZomro({FUNC_BACKUPS: doc({"elem": [{**AUTO_ROW, "createdate": createdate}]})})
    async with make(fake) as zc:
        [backup] = (await zc.list_backups(INSTANCE)).backups
    assert backup.created == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [("1.37", 1.37), ("2,5", 2.5), ("3 GB", 3.0), (4, 4.0), ("", None), ("big", None)],
)
async def test_image_size_is_tolerated_as_a_string_or_a_number(
    size: object, expected: float | None
) -> None:
    row = {**AUTO_ROW, "image_size": {"$": size}}
    fake = CannedZomro({FUNC_BACKUPS: doc({"elem": [row]})})
    async with make(fake) as zc:
        [backup] = (await zc.list_backups(INSTANCE)).backups
    assert backup.size_gb == expected


async def test_a_foreign_instance_is_access_denied() -> None:
    fake = CannedZomro({FUNC_BACKUPS: error("access", "", "Insufficient privileges")})
    async with make(fake) as zc:
        with pytest.raises(AccessDeniedError):
            await zc.list_backups("999")


async def test_one_backup_is_read_with_image_edit_without_sok() -> None:
    fake = CannedZomro({FUNC_IMAGE_EDIT: doc(DETAILS)})
    async with make(fake) as zc:
        backup = await zc.get_backup("3002")
    assert backup is not None
    assert (backup.id, backup.status, backup.usable, backup.protected) == (
        "3002",
        "active",
        True,
        True,
    )
    assert backup.created == datetime.datetime(2026, 12, 1, 10, 15)
    assert fake.calls[-1]["elid"] == "3002"
    assert "sok" not in fake.calls[-1]


async def test_a_backup_zomro_says_does_not_exist_is_none() -> None:
    async with make(CannedZomro({FUNC_IMAGE_EDIT: GONE})) as zc:
        assert await zc.get_backup("3002") is None


async def test_details_about_another_backup_are_malformed() -> None:
    fake = CannedZomro({FUNC_IMAGE_EDIT: doc({**DETAILS, "elid": {"$": "4000"}})})
    async with make(fake) as zc:
        with pytest.raises(MalformedResponseError):
            await zc.get_backup("3002")


# --- manual backups -------------------------------------------------------------------------


async def test_a_manual_backup_is_one_write_with_the_instance_and_name() -> None:
    fake = CannedZomro({FUNC_BACKUP_EDIT: OK})
    async with make(fake) as zc:
        await zc.create_manual_backup(INSTANCE, "before upgrade")
    call = fake.calls[-1]
    assert (call["plid"], call["name"], call["sok"]) == (INSTANCE, "before upgrade", "ok")
    assert "elid" not in call


async def test_a_manual_backup_with_an_unknown_outcome_is_never_sent_again() -> None:
    fake = CannedZomro({FUNC_BACKUP_EDIT: httpx.Response(502, text="<html>")})
    async with make(fake) as zc:
        with pytest.raises(UnknownOutcomeError):
            await zc.create_manual_backup(INSTANCE, "before upgrade")
    assert fake.funcs.count(FUNC_BACKUP_EDIT) == 1


@pytest.mark.parametrize(
    "text",
    [
        "You can create at most 5 manual backups per day.",
        "Daily limit of manual backups reached",
        "Manual backup limit for today exceeded",
    ],
)
async def test_the_daily_limit_refusal_is_its_own_error_and_not_retried(text: str) -> None:
    fake = CannedZomro({FUNC_BACKUP_EDIT: limit_refusal(text)})
    async with make(fake) as zc:
        with pytest.raises(DailyBackupLimitError) as caught:
            await zc.create_manual_backup(INSTANCE, "one more")
    assert not caught.value.retryable
    assert fake.funcs.count(FUNC_BACKUP_EDIT) == 1


async def test_the_total_limit_refusal_is_a_backup_limit_but_not_the_daily_one() -> None:
    text = "You can keep at most 100 manual backups."
    async with make(CannedZomro({FUNC_BACKUP_EDIT: limit_refusal(text)})) as zc:
        with pytest.raises(BackupLimitError) as caught:
            await zc.create_manual_backup(INSTANCE, "one more")
    assert not isinstance(caught.value, DailyBackupLimitError)


async def test_a_refused_name_stays_an_invalid_value_even_when_it_speaks_of_a_limit() -> None:
    refusal = error(
        "value",
        '{"name": ["Ensure this field has no more than 100 characters."]}',
        "Invalid value",
    )
    async with make(CannedZomro({FUNC_BACKUP_EDIT: refusal})) as zc:
        with pytest.raises(InvalidValueError) as caught:
            await zc.create_manual_backup(INSTANCE, "x")
    assert "name" in caught.value.field_errors


async def test_a_busy_instance_refuses_a_manual_backup_with_a_retryable_error() -> None:
    busy = error("value", "runningoperation", "An operation is already running")
    async with make(CannedZomro({FUNC_BACKUP_EDIT: busy})) as zc:
        with pytest.raises(OperationInProgressError) as caught:
            await zc.create_manual_backup(INSTANCE, "now")
    assert caught.value.retryable


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
async def test_a_name_zomro_would_refuse_is_refused_before_sending(name: str) -> None:
    fake = CannedZomro({})
    async with make(fake) as zc:
        with pytest.raises(ValueError, match="backup name"):
            await zc.create_manual_backup(INSTANCE, name)
    assert fake.calls == []


# --- deleting -------------------------------------------------------------------------------


async def test_deleting_a_backup_sends_its_id_once() -> None:
    fake = CannedZomro({FUNC_IMAGE_DELETE: OK})
    async with make(fake) as zc:
        await zc.delete_backup("3002")
    assert [call["elid"] for call in fake.calls if call["func"] == FUNC_IMAGE_DELETE] == ["3002"]


async def test_deleting_a_backup_already_gone_succeeds_once_a_read_confirms_it() -> None:
    fake = CannedZomro({FUNC_IMAGE_DELETE: GONE, FUNC_IMAGE_EDIT: GONE})
    async with make(fake) as zc:
        await zc.delete_backup("3002")
    assert fake.funcs == [FUNC_AUTH, FUNC_IMAGE_DELETE, FUNC_IMAGE_EDIT]


async def test_a_delete_refused_for_a_backup_that_still_exists_is_not_success() -> None:
    fake = CannedZomro(
        {FUNC_IMAGE_DELETE: GONE, FUNC_IMAGE_EDIT: doc({**DETAILS, "protected": "off"})}
    )
    async with make(fake) as zc:
        with pytest.raises(ZomroError) as caught:
            await zc.delete_backup("3002")
    assert not isinstance(caught.value, BackupProtectedError)


async def test_a_delete_refused_for_protection_is_backup_protected_and_not_retried() -> None:
    refusal = error("value", "protected", "Backup '3002' is protected and cannot be deleted")
    fake = CannedZomro({FUNC_IMAGE_DELETE: refusal})
    async with make(fake) as zc:
        with pytest.raises(BackupProtectedError) as caught:
            await zc.delete_backup("3002")
    assert not caught.value.retryable
    assert fake.funcs.count(FUNC_IMAGE_DELETE) == 1


async def test_a_vague_delete_refusal_of_a_protected_backup_is_backup_protected() -> None:
    fake = CannedZomro({FUNC_IMAGE_DELETE: error("", "", "refused"), FUNC_IMAGE_EDIT: doc(DETAILS)})
    async with make(fake) as zc:
        with pytest.raises(BackupProtectedError):
            await zc.delete_backup("3002")


async def test_a_delete_with_an_unknown_outcome_raises_it() -> None:
    fake = CannedZomro({FUNC_IMAGE_DELETE: httpx.Response(502, text="<html>")})
    async with make(fake) as zc:
        with pytest.raises(UnknownOutcomeError):
            await zc.delete_backup("3002")
    assert fake.funcs.count(FUNC_IMAGE_DELETE) == 1


# --- rotation -------------------------------------------------------------------------------


async def test_setting_the_rotation_edits_the_instance() -> None:
    fake = CannedZomro({FUNC_INSTANCE_EDIT: OK})
    async with make(fake) as zc:
        await zc.set_backup_rotation(INSTANCE, 7)
    call = fake.calls[-1]
    assert (call["elid"], call["backup_rotation"], call["sok"]) == (INSTANCE, "7", "ok")


async def test_a_rotation_with_an_unknown_outcome_is_sent_once_more() -> None:
    answers: list[Answer] = [httpx.Response(502, text="<html>"), OK]
    fake = CannedZomro({FUNC_INSTANCE_EDIT: answers})
    async with make(fake) as zc:
        await zc.set_backup_rotation(INSTANCE, 7)
    assert fake.funcs.count(FUNC_INSTANCE_EDIT) == 2


async def test_a_rotation_whose_outcome_stays_unknown_raises_after_two_sends() -> None:
    fake = CannedZomro({FUNC_INSTANCE_EDIT: httpx.Response(502, text="<html>")})
    async with make(fake) as zc:
        with pytest.raises(UnknownOutcomeError):
            await zc.set_backup_rotation(INSTANCE, 7)
    assert fake.funcs.count(FUNC_INSTANCE_EDIT) == 2


@pytest.mark.parametrize("keep", [0, 11, -1])
async def test_a_rotation_out_of_range_is_refused_before_sending(keep: int) -> None:
    fake = CannedZomro({})
    async with make(fake) as zc:
        with pytest.raises(ValueError, match="rotation"):
            await zc.set_backup_rotation(INSTANCE, keep)
    assert fake.calls == []
