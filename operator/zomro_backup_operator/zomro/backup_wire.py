"""The wire form of Zomro's backup functions: a backups listing and one backup's details.

Pure, like ``wire``: values or a :class:`ZomroError`. Strict about what a backup is useless
without (a well-formed id and a status) and tolerant of what nobody has verified: ``createdate``
as a string or an array of one, sizes as strings with a comma or a unit, extra fields, a missing
name or type. A present but unreadable date or size is None rather than a failed listing.
"""

from __future__ import annotations

import datetime
import math
import re
from collections.abc import Mapping

from zomro_backup_operator.zomro.errors import MalformedResponseError
from zomro_backup_operator.zomro.funcs import FUNC_BACKUPS, FUNC_IMAGE_EDIT
from zomro_backup_operator.zomro.models import Backup, BackupListing, is_object_id, parse_count
from zomro_backup_operator.zomro.wire import rows, scalar

_SIZE_RE = re.compile(r"^\s*([0-9]{1,12}(?:[.,][0-9]{1,9})?)\s*(?:gb|gib)?\s*$", re.I)
_DATETIME_RE = re.compile(r"^(\d{4}-\d{2}-\d{2})[ T](\d{1,2}):(\d{2})(?::(\d{2}))?")


def parse_created(text: str | None) -> datetime.datetime | None:
    """``YYYY-MM-DD HH:MM[:SS]`` (or with a ``T``), naive, as listed; anything else is None.

    A date alone is None: it cannot say whether a backup belongs to a run at 02:00 or 23:00.
    An offset after the time is ignored: the wall time is what Zomro listed.
    """
    if not text:
        return None
    match = _DATETIME_RE.match(text.strip())
    if match is None:
        return None
    day, hours, minutes, seconds = match.groups()
    try:
        date = datetime.date.fromisoformat(day)
        return datetime.datetime.combine(
            date, datetime.time(int(hours), int(minutes), int(seconds or 0))
        )
    except ValueError:
        return None


def parse_size_gb(text: str | None) -> float | None:
    """``image_size`` in GB: ``"1.37"``, ``"1,37"``, ``"2 GB"``; anything else is None."""
    if not text:
        return None
    match = _SIZE_RE.fullmatch(text)
    if match is None:
        return None
    size = float(match.group(1).replace(",", "."))
    return size if math.isfinite(size) else None


def _lowered(value: object) -> str:
    return (scalar(value) or "").strip().lower()


def parse_backup(
    row: Mapping[str, object], *, func: str, index: int = 0, backup_id: str | None = None
) -> Backup:
    """One backup: a row of ``instances.fleio_bckps``, or the form of ``image.edit``.

    ``backup_id`` is the id asked for, used when a form does not repeat it.
    """
    raw_id = scalar(row.get("id")) or scalar(row.get("elid")) or backup_id
    if raw_id is None:
        raise MalformedResponseError(f"{func}: row {index} has no 'id'")
    if not is_object_id(raw_id.strip()):
        raise MalformedResponseError(f"{func}: row {index} id is not a plausible id")
    status = _lowered(row.get("fleio_status"))
    if not status:
        raise MalformedResponseError(f"{func}: row {index} has no 'fleio_status'")
    created = scalar(row.get("createdate")) or scalar(row.get("created"))
    return Backup(
        id=raw_id.strip(),
        name=scalar(row.get("name")) or "",
        backup_type=_lowered(row.get("backup_type")),
        status=status,
        created=parse_created(created),
        size_gb=parse_size_gb(scalar(row.get("image_size"))),
        protected=_lowered(row.get("protected")) == "on",
    )


def _count(doc: Mapping[str, object], key: str) -> int | None:
    return parse_count((scalar(doc.get(key)) or "").strip())


def parse_backup_listing(doc: Mapping[str, object]) -> BackupListing:
    """All rows of ``instances.fleio_bckps`` and the instance's figures beside them."""
    func = FUNC_BACKUPS
    backups = tuple(
        parse_backup(row, func=func, index=index) for index, row in enumerate(rows(doc, func=func))
    )
    return BackupListing(
        backups=backups,
        rotation=_count(doc, "backup_rotation"),
        manual_created_today=_count(doc, "manual_created_today"),
        manual_created_total=_count(doc, "manual_created_total"),
    )


def parse_backup_details(doc: Mapping[str, object], *, backup_id: str) -> Backup:
    """The form ``image.edit`` answers without ``sok``: one backup's fields at the top level."""
    backup = parse_backup(doc, func=FUNC_IMAGE_EDIT, backup_id=backup_id)
    if backup.id != backup_id:
        raise MalformedResponseError(f"{FUNC_IMAGE_EDIT}: the answer is about another backup")
    return backup
