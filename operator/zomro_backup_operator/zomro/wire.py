"""Zomro's wire format: turning an HTTP answer into a value or one error of the tree.

Everything here is pure (no I/O) so that it can be fed hostile input in property tests. Every
function either returns well-typed values or raises a :class:`ZomroError` subclass: bodies of the
wrong type, shape, size or depth never escape as ``KeyError``, ``TypeError`` or ``RecursionError``.
Messages carry no body content except Zomro's own error text, and the client redacts that.
"""

from __future__ import annotations

import datetime
import email.utils
import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    AuthenticationError,
    BackupLimitError,
    BackupProtectedError,
    DailyBackupLimitError,
    InvalidValueError,
    LoginTemporarilyBlockedError,
    MalformedResponseError,
    NotFoundError,
    OperationInProgressError,
    ServerError,
    SessionExpiredError,
    ThrottledError,
    ZomroError,
    ZomroTimeoutError,
)
from zomro_backup_operator.zomro.funcs import FUNC_BACKUP_EDIT, FUNC_IMAGE_DELETE, FUNC_SCHEDULES
from zomro_backup_operator.zomro.models import (
    Instance,
    Schedule,
    Weekday,
    parse_count,
    validate_time,
)

MAX_BODY_BYTES = 4 * 1024 * 1024
"""Zomro's answers for these functions are a few kilobytes; anything this big is not Zomro's."""

THROTTLE_STATUSES = frozenset({403, 429, 460})
"""Zomro's edge answers 403 or 460 when it blocks a client IP for a while; 429 is the usual one."""

LOGIN_BLOCK_SECONDS = 20.0
"""How long Zomro asks to wait after ``blocklogon``."""

MAX_RETRY_AFTER = 3600.0
"""A Retry-After beyond an hour is treated as an hour: the caller will ask again anyway."""

_DAY_NUMBERS = frozenset("0123456")
_MAX_MESSAGE = 300
MAX_SERVER_NAME = 100
"""Zomro's panel allows instance names of up to 100 characters; a longer ``servername`` is cut."""
_CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]+")
_SESSION_ID = re.compile(r"^[A-Za-z0-9._:~+/=-]{1,256}$")
_OBJECT_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_LOOSE_TIME = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")
_SESSION_HINTS = ("insufficient privileges", "session expired", "session has expired")
_BUSY_HINTS = ("request in process", "requestinprocess", "runningoperation")
_TWO_FACTOR_HINTS = ("2fa", "totp", "tfa", "otp", "two-factor", "two factor")
_REFUSED_LOGIN = frozenset({"badpassword", "blocked_ip", "blockgeoip", "blocked", "disabled"})
_VALUE_TYPES = frozenset({"value", "missed", "exists", "badvalue", "toolong", "tooshort", "range"})
_NOT_FOUND_TYPES = frozenset({"notfound", "not_found", "missing_object"})
_CODES = frozenset(
    {"auth", "access", "blocklogon", "elid", *_REFUSED_LOGIN, *_VALUE_TYPES, *_NOT_FOUND_TYPES}
)
"""Zomro's own error codes the mapping tells errors apart by. ``$type`` and ``$object`` equal to
one of them are kept as they are: a word of Zomro's says nothing of a secret, and redacting a
secret that happens to be part of it (the password "bad" in "badpassword") would change what
the error means."""
_DAY_LIMIT_HINTS = ("per day", "a day", "daily", "today", "24 hours")
_LIMIT_HINTS = ("at most", "limit", "maximum", "no more than", "exceed")
_SENT_BACKUP_FIELDS = frozenset({"name", "plid"})

Json = object
Doc = dict[str, object]


def clean_text(text: str, *, limit: int = _MAX_MESSAGE) -> str:
    """Make server text safe for one log line or message: no control characters, bounded."""
    text = _CONTROL_CHARS.sub(" ", text).strip()
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _no_redaction(text: str) -> str:
    return text


# --- the document ---------------------------------------------------------------------------


def decode_document(body: bytes, *, func: str) -> Doc:
    """Parse a 200 body into Zomro's ``doc`` object.

    Not JSON at all (an HTML error page, a truncated body) is a :class:`ServerError`; JSON without
    a ``doc`` object is a :class:`MalformedResponseError`.
    """
    if len(body) > MAX_BODY_BYTES:
        raise ServerError(f"{func}: answer larger than {MAX_BODY_BYTES} bytes")
    failure: ZomroError
    try:
        parsed: Json = json.loads(body)
    except RecursionError:
        failure = MalformedResponseError(f"{func}: answer nested too deeply")
    except ValueError:  # JSONDecodeError, UnicodeDecodeError, oversized integer literals
        failure = ServerError(f"{func}: answer is not JSON")
    else:
        return _doc_of(parsed, func=func)
    # Raised outside the except block: the decoder's error holds the body (a session id, say),
    # and ``from None`` would still keep it as __context__.
    raise failure


def _doc_of(parsed: Json, *, func: str) -> Doc:
    if not isinstance(parsed, dict):
        raise MalformedResponseError(f"{func}: answer is not a JSON object")
    doc = parsed.get("doc")
    if not isinstance(doc, dict):
        raise MalformedResponseError(f"{func}: answer has no 'doc' object")
    return doc


def scalar(value: Json) -> str | None:
    """Unwrap Zomro's ``{"$": "value"}``; a bare string or an array of one is accepted too."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("$")
    if isinstance(value, str):
        return value
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    return None


def rows(doc: Mapping[str, object], *, func: str) -> list[dict[str, object]]:
    """The rows of a list answer: no ``elem`` is an empty list, a single object a list of one."""
    elem = doc.get("elem")
    if elem is None:
        return []
    if isinstance(elem, dict):
        elem = [elem]
    if not isinstance(elem, list):
        raise MalformedResponseError(f"{func}: 'elem' is neither a list nor an object")
    result: list[dict[str, object]] = []
    for index, row in enumerate(elem):
        if not isinstance(row, dict):
            raise MalformedResponseError(f"{func}: row {index} is not an object")
        result.append(row)
    return result


def paging(doc: Mapping[str, object]) -> tuple[int, int] | None:
    """``(p_elems, p_cnt)`` when the answer says it is one page of a longer list, else None."""
    total = parse_count(scalar(doc.get("p_elems")) or "")
    size = parse_count(scalar(doc.get("p_cnt")) or "")
    if total is None or size is None or total >= 10**9 or size >= 10**9:
        return None
    return total, size


def _required(row: Mapping[str, object], key: str, *, func: str, index: int) -> str:
    value = scalar(row.get(key))
    if value is None:
        raise MalformedResponseError(f"{func}: row {index} has no {key!r}")
    return value


def _object_id(value: str, *, what: str, func: str) -> str:
    value = value.strip()
    if not _OBJECT_ID.fullmatch(value):
        raise MalformedResponseError(f"{func}: {what} is not a plausible id")
    return value


# --- values ---------------------------------------------------------------------------------


def parse_listed_days(text: str) -> frozenset[Weekday]:
    """Parse ``rotation_days`` as listed: English names (any order or spacing) or day numbers."""
    days: set[Weekday] = set()
    for word in re.split(r"[\s,]+", text):
        if not word:
            continue
        if word in _DAY_NUMBERS:
            days.add(Weekday(int(word)))
        else:
            days.add(Weekday.from_name(word))
    return frozenset(days)


def normalize_time(text: str) -> str:
    """Bring a listed time to ``HH:MM`` (``2:01`` and ``02:01:00`` are read as ``02:01``)."""
    match = _LOOSE_TIME.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a time: {text!r}")
    hours, minutes, seconds = match.groups()
    if seconds not in (None, "00"):
        raise ValueError(f"a schedule time has no seconds: {text!r}")
    return validate_time(f"{int(hours):02d}:{minutes}")


def _date(text: str | None) -> datetime.date | None:
    if not text:
        return None
    try:
        return datetime.date.fromisoformat(text.strip()[:10])
    except ValueError:
        return None


def parse_schedule(row: Mapping[str, object], *, instance_id: str, index: int = 0) -> Schedule:
    """One row of ``instances.fleio_bckps.schedule``."""
    func = FUNC_SCHEDULES
    schedule_id = _object_id(
        _required(row, "id", func=func, index=index), what=f"row {index} id", func=func
    )
    listed_instance = scalar(row.get("instance_id"))
    name = _required(row, "name", func=func, index=index)
    days_text = _required(row, "rotation_days", func=func, index=index)
    server_name = clean_text(scalar(row.get("servername")) or "", limit=MAX_SERVER_NAME)
    time_text = _required(row, "rotation_time", func=func, index=index)
    try:
        days = parse_listed_days(days_text)
        time = normalize_time(time_text)
    except ValueError:
        raise MalformedResponseError(
            f"{func}: row {index} has unreadable rotation days or time"
        ) from None
    return Schedule(
        id=schedule_id,
        instance_id=(listed_instance or instance_id).strip(),
        name=name,
        days=days,
        time=time,
        server_name=server_name or None,
        create_date=_date(scalar(row.get("create_date"))),
    )


def parse_schedules(doc: Mapping[str, object], *, instance_id: str) -> list[Schedule]:
    """All rows of a schedule list."""
    func = FUNC_SCHEDULES
    return [
        parse_schedule(row, instance_id=instance_id, index=index)
        for index, row in enumerate(rows(doc, func=func))
    ]


def parse_instances(doc: Mapping[str, object]) -> list[Instance]:
    """All rows of ``instances``."""
    result: list[Instance] = []
    for index, row in enumerate(rows(doc, func="instances")):
        instance_id = _object_id(
            _required(row, "id", func="instances", index=index),
            what=f"row {index} id",
            func="instances",
        )
        name = scalar(row.get("name")) or scalar(row.get("servername")) or ""
        result.append(
            Instance(
                id=instance_id,
                name=name,
                ip=scalar(row.get("ip")),
                status=scalar(row.get("status")),
            )
        )
    return result


def parse_session_id(doc: Mapping[str, object]) -> str:
    """The session id in a ``func=auth`` answer: ``doc.auth.$id`` (or ``doc.auth.$``)."""
    auth = doc.get("auth")
    sid: str | None = None
    if isinstance(auth, dict):
        sid = scalar(auth.get("$id")) or scalar(auth)
    elif isinstance(auth, str):
        sid = auth
    if sid is None:
        keys = " ".join(str(key).lower() for key in doc)
        if any(hint in keys for hint in _TWO_FACTOR_HINTS):
            raise AuthenticationError(
                "auth: the account asks for a second factor, which unattended API use cannot give"
            )
        raise MalformedResponseError("auth: answer holds no session id")
    if not _SESSION_ID.fullmatch(sid):
        # Never echo it: it might be a real session id with an odd character in it.
        raise MalformedResponseError("auth: session id in the answer has an unexpected form")
    return sid


def parse_created_id(doc: Mapping[str, object]) -> str | None:
    """The new object's id when a create answer carries it (``doc.id.$``), else None."""
    value = scalar(doc.get("id"))
    if value is None or not value.strip():
        return None
    return _object_id(value, what="new id", func="create")


def is_acknowledged(doc: Mapping[str, object]) -> bool:
    """True when a write answer says it was applied (``doc.ok`` or a new ``doc.id``)."""
    return "ok" in doc or scalar(doc.get("id")) is not None


# --- errors ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class ErrorInfo:
    """Zomro's ``doc.error``, unwrapped: every text field redacted, then cleaned."""

    type: str
    object: str
    message: str
    detail: str = ""
    field_errors: dict[str, list[str]] = field(default_factory=dict)

    @property
    def is_session_problem(self) -> bool:
        """True when the error may mean the session is gone (Zomro says ``access`` for that)."""
        if self.object in _REFUSED_LOGIN or self.object == "blocklogon" or self.is_busy:
            return False
        if self.type in ("access", "auth"):
            return True
        text = self.message.lower()
        return any(hint in text for hint in _SESSION_HINTS)

    @property
    def is_busy(self) -> bool:
        """The session or the instance is busy with another request or operation."""
        text = f"{self.object} {self.message} {self.detail}".lower().replace(" ", "")
        return any(hint.replace(" ", "") in text for hint in _BUSY_HINTS)

    @property
    def says_expired(self) -> bool:
        """True when the text itself says the session expired (not just "access")."""
        text = f"{self.message} {self.detail}".lower()
        return "expired" in text or (self.type == "auth" and self.object not in _REFUSED_LOGIN)


def _field_errors(text: str, safe: Callable[[str], str]) -> dict[str, list[str]]:
    """Zomro's backup functions put ``{"field": ["message", ...]}`` as a JSON string in $object."""
    if not text.lstrip().startswith("{"):
        return {}
    try:
        parsed: Json = json.loads(text)
    except (ValueError, RecursionError):
        return {}
    if not isinstance(parsed, dict):
        return {}
    result: dict[str, list[str]] = {}
    for name, value in parsed.items():
        items = value if isinstance(value, list) else [value]
        texts = [safe(item) for item in items if isinstance(item, str)]
        result[safe(str(name))] = texts or ["invalid value"]
    return result


def read_error(
    doc: Mapping[str, object], *, redact: Callable[[str], str] = _no_redaction
) -> ErrorInfo | None:
    """``doc.error`` unwrapped, or None when the answer is not an error.

    ``redact`` removes secrets from each echoed text before it is cleaned and cut: cleaning first
    could change a secret (a tab in a password) or cut it in half, and the rest would leak.
    """
    if "error" not in doc:
        return None
    error = doc["error"]
    if not isinstance(error, dict):
        return ErrorInfo(type="", object="", message="error of unexpected shape")

    def safe(text: str) -> str:
        return clean_text(redact(text))

    def code(text: str) -> str:
        cleaned = clean_text(text)
        return cleaned if cleaned.lower() in _CODES else safe(text)

    raw_object = scalar(error.get("$object")) or ""
    field_errors = _field_errors(raw_object, safe)
    return ErrorInfo(
        type=code(scalar(error.get("$type")) or "").lower(),
        object="" if field_errors else code(raw_object),
        message=safe(scalar(error.get("msg")) or ""),
        detail=safe(scalar(error.get("detail")) or ""),
        field_errors=field_errors,
    )


def to_exception(info: ErrorInfo, *, func: str) -> ZomroError:
    """The one mapping from Zomro's ``doc.error`` to the error tree."""
    what = "/".join(part for part in (info.type, info.object) if part) or "error"
    text = info.message or info.detail or "no message"
    message = f"{func}: {text} ({what})"
    obj = info.object.lower()
    lowered = f"{info.message} {info.detail}".lower()
    if info.is_busy:
        return OperationInProgressError(message)
    backup_refusal = _backup_refusal(info, func=func, message=message)
    if backup_refusal is not None:
        return backup_refusal
    if info.field_errors:
        return InvalidValueError(message, field_errors=info.field_errors)
    if obj == "blocklogon":
        return LoginTemporarilyBlockedError(message, retry_after=LOGIN_BLOCK_SECONDS)
    if obj in _REFUSED_LOGIN or any(hint in obj for hint in _TWO_FACTOR_HINTS):
        return AuthenticationError(message)
    if info.type == "auth":
        return SessionExpiredError(message)
    if info.type == "access":
        return AccessDeniedError(message)
    if info.type in _NOT_FOUND_TYPES or obj in _NOT_FOUND_TYPES:
        return NotFoundError(message)
    if info.type == "missed" and obj == "elid" and "not exist" in lowered:
        # BILLmanager names an unknown object id this way ("The item '15' does not exist").
        return NotFoundError(message)
    if info.type in _VALUE_TYPES:
        field_errors = {info.object: [text]} if info.object else {}
        return InvalidValueError(message, field_errors=field_errors)
    return ZomroError(message)


def _backup_refusal(info: ErrorInfo, *, func: str, message: str) -> ZomroError | None:
    """The refusals only backup writes get: a protected image, the manual backup limits.

    Their exact form at Zomro is unverified, so they are told by meaning: a delete refused
    naming protection; a manual backup refused for no field that was sent (a DRF
    ``non_field_errors``, say) with a text about a limit, per day or in all.
    """
    texts = [info.object, info.message, info.detail]
    texts += [f"{name} {' '.join(messages)}" for name, messages in info.field_errors.items()]
    text = " ".join(texts).lower()
    if func == FUNC_IMAGE_DELETE and "protect" in text:
        return BackupProtectedError(message)
    if func != FUNC_BACKUP_EDIT or set(info.field_errors) & _SENT_BACKUP_FIELDS:
        return None
    if not any(hint in text for hint in _LIMIT_HINTS):
        return None
    if any(hint in text for hint in _DAY_LIMIT_HINTS):
        return DailyBackupLimitError(message)
    return BackupLimitError(message)


# --- HTTP level -----------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime.datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta seconds or an HTTP date), bounded."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 64:
        return None
    seconds: float
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=datetime.UTC)
        current = now or datetime.datetime.now(datetime.UTC)
        seconds = (when - current).total_seconds()
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def status_error(
    status: int, headers: Mapping[str, str], *, func: str, now: datetime.datetime | None = None
) -> ZomroError | None:
    """The error an HTTP status means before the body is looked at, or None for 2xx."""
    if 200 <= status < 300:
        return None
    if status in THROTTLE_STATUSES:
        retry_after = parse_retry_after(headers.get("retry-after"), now=now)
        return ThrottledError(
            f"{func}: Zomro's edge throttles or blocks this client (HTTP {status})",
            retry_after=retry_after,
        )
    if status in (408, 504):
        return ZomroTimeoutError(f"{func}: gateway timeout (HTTP {status})")
    if status >= 500:
        return ServerError(f"{func}: server error (HTTP {status})")
    return ZomroError(f"{func}: unexpected HTTP status {status}")
