"""Checks on Zomro's raw answers, against what the client expects: pure, read with the client's
own wire functions (the client copes with more than the docs promise; these say where)."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping

from zomro_backup_operator.cli_tools.raw_answers import RawAnswer
from zomro_backup_operator.cli_tools.report import Finding
from zomro_backup_operator.zomro import wire
from zomro_backup_operator.zomro.models import Weekday

INSTANCE_FIELDS = ("id", "name", "ip", "status")
SCHEDULE_FIELDS = (
    "create_date",
    "id",
    "instance_id",
    "name",
    "rotation_days",
    "rotation_time",
    "servername",
)
SCHEDULE_REQUIRED = ("id", "name", "rotation_days", "rotation_time")
_DAY_WORDS = [day.title for day in sorted(Weekday)]
_DOCUMENTED_DAYS = re.compile(rf"^(({'|'.join(_DAY_WORDS)}) )+$")
_HH_MM = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def check_list_answers(
    answers: list[RawAnswer],
    *,
    where: str,
    rows_received: int,
    known_fields: tuple[str, ...],
    required_fields: tuple[str, ...],
) -> list[Finding]:
    """Shape of one listing: rows in ``elem`` (absent when empty), paging, row fields."""
    docs = [doc for doc in (answer.doc() for answer in answers) if doc is not None]
    docs = [doc for doc in docs if "error" not in doc]
    if not docs:
        return []
    findings: list[Finding] = []
    first = docs[0]
    if "elem" not in first:
        findings.append(Finding("ok", where, "no rows, and no 'elem' key, as documented"))
    elif not wire.rows(first, func=where):
        findings.append(
            Finding("note", where, "an empty list came as an empty 'elem' (documented: no 'elem')")
        )
    elif not isinstance(first["elem"], list):
        findings.append(
            Finding("note", where, "'elem' is one object, not an array (the client copes)")
        )
    findings += _paging_findings(first, where, pages=len(docs), rows_received=rows_received)
    all_rows = [row for doc in docs for row in wire.rows(doc, func=where)]
    seen = {str(key) for row in all_rows for key in row}
    missing = [name for name in known_fields if name not in seen and all_rows]
    extra = sorted(seen - set(known_fields))
    required_missing = [name for name in missing if name in required_fields]
    if required_missing:
        findings.append(
            Finding("problem", where, f"rows lack fields the client needs: {required_missing}")
        )
    if set(missing) - set(required_missing):
        optional = [name for name in missing if name not in required_missing]
        findings.append(Finding("note", where, f"rows lack documented fields: {optional}"))
    if extra:
        more = f" and {len(extra) - 20} more" if len(extra) > 20 else ""
        findings.append(
            Finding("note", where, f"fields the client does not read: {extra[:20]}{more}")
        )
    bare = sorted(
        {str(key) for row in all_rows for key, value in row.items() if isinstance(value, str)}
    )
    if bare:
        findings.append(
            Finding("note", where, f"bare strings instead of {{'$': ...}} in fields {bare}")
        )
    return findings


def _paging_findings(
    doc: Mapping[str, object], where: str, *, pages: int, rows_received: int
) -> list[Finding]:
    total_text = wire.scalar(doc.get("p_elems"))
    if total_text is None:
        return [Finding("note", where, "no 'p_elems': the list's total cannot be cross-checked")]
    if not total_text.isdigit():
        return [Finding("problem", where, f"'p_elems' is not a number: {total_text[:20]!r}")]
    total = int(total_text)
    if total != rows_received:
        return [
            Finding(
                "problem",
                where,
                f"'p_elems' says {total} rows, the client received {rows_received} "
                f"in {pages} page(s)",
            )
        ]
    if pages > 1:
        size = wire.scalar(doc.get("p_cnt"))
        return [
            Finding("ok", where, f"paged ({pages} pages of p_cnt={size}); all {total} rows fetched")
        ]
    return []


def check_schedule_values(answers: list[RawAnswer], *, where: str) -> list[Finding]:
    """Raw ``rotation_days`` and ``rotation_time`` as Zomro lists them, against the docs."""
    findings: list[Finding] = []
    days_seen: set[str] = set()
    times_seen: set[str] = set()
    for answer in answers:
        doc = answer.doc()
        if doc is None or "error" in doc:
            continue
        for row in wire.rows(doc, func=where):
            days_seen.add(wire.scalar(row.get("rotation_days")) or "")
            times_seen.add(wire.scalar(row.get("rotation_time")) or "")
    odd_days = sorted(d for d in days_seen if not _DOCUMENTED_DAYS.fullmatch(d))
    good_days = sorted(d for d in days_seen if _DOCUMENTED_DAYS.fullmatch(d))
    if good_days:
        findings.append(
            Finding("ok", where, f"days as English names, e.g. {good_days[0]!r}, as documented")
        )
    findings += _odd_values(odd_days, "rotation_days", wire.parse_listed_days, where)
    odd_times = sorted(t for t in times_seen if not _HH_MM.fullmatch(t))
    findings += _odd_values(odd_times, "rotation_time", wire.normalize_time, where)
    return findings


def _odd_values(
    texts: list[str], name: str, parse: Callable[[str], object], where: str
) -> list[Finding]:
    """Values in an undocumented form: a note when the client still reads them, else a problem."""
    findings = []
    for text in texts[:3]:
        try:
            parse(text)
        except ValueError:
            findings.append(
                Finding("problem", where, f"{name} the client cannot read: {text[:60]!r}")
            )
        else:
            findings.append(
                Finding(
                    "note",
                    where,
                    f"{name} in an undocumented form (the client copes): {text[:60]!r}",
                )
            )
    return findings


def check_error_answers(answers: list[RawAnswer], *, where: str) -> list[Finding]:
    """A refusal's document: ``doc.error`` with ``$type``, ``$object`` and ``msg``."""
    for answer in answers:
        doc = answer.doc()
        if doc is None or "error" not in doc:
            continue
        error = doc["error"]
        if not isinstance(error, dict):
            return [Finding("problem", where, "'doc.error' is not an object")]
        keys = sorted(str(key) for key in error)
        missing = [key for key in ("$type", "$object", "msg") if key not in error]
        info = wire.read_error(doc)
        assert info is not None
        kind = f"$type={info.type!r} $object={info.object!r}"
        if missing:
            return [Finding("note", where, f"doc.error ({kind}) lacks {missing}; has {keys}")]
        return [Finding("ok", where, f"refusals come as HTTP 200 doc.error ({kind}), as expected")]
    return []
