# ruff: noqa: RUF001 - the Russian texts of lang=ru are Cyrillic on purpose
"""BILLmanager's functions as Zomro serves them: parameters in, a ``{"doc": ...}`` document out.

Knows no HTTP: the server hands over the merged form fields and renders what comes back. Every
refusal is a ``doc.error`` (the HTTP status stays 200, as on the real service). Choices where the
sources are silent are the strict ones and are listed in docs/sandbox.md.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zomro_backup_operator.sandbox.faults import Faults
from zomro_backup_operator.sandbox.model import (
    DAY_NAMES_EN,
    DAY_NAMES_RU,
    Backup,
    Instance,
    SandboxState,
    Schedule,
)

Doc = dict[str, Any]

MAX_SCHEDULE_NAME = 60
MAX_BACKUP_NAME = 100
_TIME_RE = re.compile(r"([01][0-9]|2[0-3]):[0-5][0-9]")
_DAYS_RE = re.compile(r"[0-6](,[0-6])*")
_INT_RE = re.compile(r"[0-9]{1,9}")
SECRET_PARAMS = frozenset({"auth", "authinfo", "password", "passwd", "username"})
"""Never echoed in ``tparams`` nor logged."""

_MESSAGES: dict[str, tuple[str, str]] = {
    "badpassword": ("Invalid username or password", "Неверное имя пользователя или пароль"),
    "blocked_ip": (
        "Too many failed login attempts. Access is temporarily blocked",
        "Слишком много неудачных попыток входа. Доступ временно заблокирован",
    ),
    "access": (
        "Insufficient privileges to perform this operation",
        "Недостаточно прав для выполнения этой операции",
    ),
    "requestinprocess": (
        "Request in process. Please wait for the previous request to complete",
        "Запрос обрабатывается. Дождитесь завершения предыдущего запроса",
    ),
    "runningoperation": (
        "An operation is already running on this service. Try again later",
        "Над услугой уже выполняется операция. Повторите попытку позже",
    ),
    "missed_func": ("Could not find function '{0}'", "Не удалось найти функцию '{0}'"),
    "missed_elid": ("The item '{0}' does not exist", "Объект '{0}' не существует"),
    "value": ("Invalid value: {0}", "Неверное значение: {0}"),
    "protected": (
        "Backup '{0}' is protected and cannot be deleted",
        "Резервная копия '{0}' защищена от удаления",
    ),
}


def scalar(value: object) -> dict[str, str]:
    """Every scalar in a BILLmanager document is ``{"$": "text"}``."""
    return {"$": str(value)}


def language(params: Mapping[str, str]) -> str:
    """``en`` when asked for (or not asked at all, as in the seed); any other language is ``ru``."""
    lang = params.get("lang")
    return "en" if lang in (None, "", "en") else "ru"


class ApiError(Exception):
    """A refusal, rendered as ``doc.error``. ``message`` is already localised."""

    def __init__(self, type_: str, object_: str, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.type = type_
        self.object = object_
        self.message = message
        self.detail = detail


@dataclass
class ApiResult:
    """What the server renders and logs."""

    doc: Doc
    account: str | None
    outcome: str
    created_schedule: bool = False


class Api:
    """Dispatches ``func`` to its handler, after authentication."""

    def __init__(self, state: SandboxState, faults: Faults | None = None) -> None:
        self.state = state
        self.faults = faults or Faults()
        """Read for what the service does to names and when it lists new schedules."""
        self._funcs: dict[str, Callable[[_Call], Doc]] = {
            "instances": self._instances,
            "instances.edit": self._instance_edit,
            "instances.fleio_bckps": self._backups,
            "instances.fleio_bckps.edit": self._backup_edit,
            "instances.fleio_bckps.schedule": self._schedules,
            "instances.fleio_bckps.schedule.edit": self._schedule_edit,
            "instances.fleio_bckps.schedule.delete": self._schedule_delete,
            "image.edit": self._image_edit,
            "image.delete": self._image_delete,
            "keepalive": self._keepalive,
        }

    # ------------------------------------------------------------------ entry points

    def run_schedules(self) -> int:
        """Make the backups of every scheduled run up to the sandbox clock's now."""
        return self.state.catch_up(self.faults.take_backup_run)

    def handle(
        self, params: Mapping[str, str], client_ip: str, *, second_factor: bool = False
    ) -> ApiResult:
        """Serve one call. ``second_factor``: accounts ask for a one-time code at login, which
        an API call cannot give (the ``two_factor`` fault)."""
        lang = language(params)
        func = params.get("func", "")
        call = _Call(params=params, lang=lang, func=func, account="")
        try:
            if func == "auth":
                return self._auth(call, client_ip, second_factor=second_factor)
            call.account = self._authenticate(call, client_ip, second_factor=second_factor)
            handler = self._funcs.get(func)
            if handler is None:
                raise ApiError("missed", "func", call.msg("missed_func", func))
            doc = handler(call)
            return ApiResult(
                doc={"doc": {**self.meta(call), **doc}},
                account=call.account,
                outcome="ok",
                created_schedule=call.created,
            )
        except ApiError as error:
            return ApiResult(
                doc=self.error_doc(call, error),
                account=call.account or None,
                outcome=f"error:{error.type}:{error.object}",
            )

    def busy_session(self, params: Mapping[str, str]) -> ApiResult:
        """The refusal for a second call on a session whose first call is still in process."""
        call = _Call(params=params, lang=language(params), func=params.get("func", ""), account="")
        error = ApiError("access", "requestinprocess", call.msg("requestinprocess"))
        return ApiResult(
            doc=self.error_doc(call, error),
            account=None,
            outcome="error:access:requestinprocess",
        )

    def meta(self, call: _Call) -> Doc:
        """The attributes every document carries; clients must ignore what they do not need."""
        return {
            "$lang": call.lang,
            "$func": call.func,
            "$binary": "/billmgr",
            "$host": "https://api.zomro.com",
            "tparams": {
                key: scalar(value) for key, value in call.params.items() if key not in SECRET_PARAMS
            },
        }

    def error_doc(self, call: _Call, error: ApiError) -> Doc:
        return {
            "doc": {
                **self.meta(call),
                "error": {
                    "$type": error.type,
                    "$object": error.object,
                    "$lang": call.lang,
                    "msg": scalar(error.message),
                    "detail": scalar(error.detail or error.message),
                },
            }
        }

    # ------------------------------------------------------------------ authentication

    def _auth(self, call: _Call, client_ip: str, *, second_factor: bool) -> ApiResult:
        username = call.params.get("username", "")
        password = call.params.get("password", "")
        self._check_login(call, client_ip, username, password)
        if second_factor:
            # The login form again, now asking for the code: no session and no error.
            form = {"func": scalar("auth"), "username": scalar(username), "totp": scalar("")}
            doc = {"doc": {**self.meta(call), **form}}
            return ApiResult(doc=doc, account=username, outcome="totp:required")
        sid = self.state.open_session(username)
        doc = {"doc": {**self.meta(call), "auth": {"$id": sid, "$level": "16", "$": sid}}}
        return ApiResult(doc=doc, account=username, outcome="ok")

    def _check_login(self, call: _Call, client_ip: str, username: str, password: str) -> None:
        keys = (f"ip:{client_ip}", f"login:{username}")
        if self.state.login_blocked(keys):
            raise ApiError("auth", "blocked_ip", call.msg("blocked_ip"))
        if not username or not self.state.check_password(username, password):
            self.state.record_login_failure(keys)
            raise ApiError("auth", "badpassword", call.msg("badpassword"))

    def _authenticate(self, call: _Call, client_ip: str, *, second_factor: bool) -> str:
        authinfo = call.params.get("authinfo")
        if authinfo is not None:
            username, _, password = authinfo.partition(":")
            self._check_login(call, client_ip, username, password)
            if second_factor:
                raise ApiError("access", "", call.msg("access"))
            return username
        sid = call.params.get("auth", "")
        account = self.state.use_session(sid) if sid else None
        if account is None:
            raise ApiError("access", "", call.msg("access"))
        return account

    # ------------------------------------------------------------------ lookups

    def _instance(self, call: _Call, key: str) -> Instance:
        """The caller's instance named by ``key``; unknown and foreign ones are both ``access``."""
        instance = self.state.owned_instance(call.account, call.params.get(key, ""))
        if instance is None:
            raise ApiError("access", "", call.msg("access"))
        return instance

    def _not_busy(self, call: _Call, instance: Instance) -> None:
        if self.state.is_busy(instance):
            raise ApiError("value", "runningoperation", call.msg("runningoperation"))

    def _elids(self, call: _Call) -> list[str]:
        """``elid`` split the way BILLmanager joins several ids: ``", "`` exactly."""
        elid = call.params.get("elid", "")
        if not elid:
            raise ApiError("missed", "elid", call.msg("missed_elid", ""))
        return elid.split(", ")

    # ------------------------------------------------------------------ instances

    def _instances(self, call: _Call) -> Doc:
        rows = [
            {
                "id": scalar(i.id),
                "name": scalar(i.name),
                "ip": scalar(i.ip),
                "status": scalar(i.status),
                "os_distro": scalar(i.os_distro),
                "os_version": scalar(i.os_version),
            }
            for i in self.state.instances_of(call.account)
        ]
        return call.page(rows)

    def _instance_edit(self, call: _Call) -> Doc:
        instance = self._instance(call, "elid")
        if not call.confirmed:
            return {
                "elid": scalar(instance.id),
                "name": scalar(instance.name),
                "ip": scalar(instance.ip),
                "backup_rotation": scalar(instance.backup_rotation),
            }
        raw = call.params.get("backup_rotation")
        if raw is None:
            raise call.field_errors({"backup_rotation": ["This field is required."]})
        if not _INT_RE.fullmatch(raw) or not 1 <= int(raw) <= 10:
            raise call.field_errors({"backup_rotation": ["Ensure this value is between 1 and 10."]})
        self._not_busy(call, instance)
        self.state.set_rotation(instance.id, int(raw))
        return {"ok": scalar("ok")}

    # ------------------------------------------------------------------ backups

    def _backup_row(self, backup: Backup) -> Doc:
        created = self._created(backup)
        return {
            "id": scalar(backup.id),
            "name": scalar(backup.name),
            "backup_type": scalar(backup.backup_type),
            "fleio_status": scalar(backup.status(self.state.now())),
            "image_size": scalar(backup.image_size),
            # The panel copes with createdate as an array of one; scheduled rows come that way.
            "createdate": [scalar(created)] if backup.backup_type == "auto" else scalar(created),
            "protected": scalar("on" if backup.protected else "off"),
            "fleio_id": scalar(backup.fleio_id),
            "os_distro": scalar(self.state.instances[backup.instance_id].os_distro),
            "os_version": scalar(self.state.instances[backup.instance_id].os_version),
        }

    def _created(self, backup: Backup) -> str:
        """Zomro's clock: the provider's wall time, ``YYYY-MM-DD HH:MM:SS``."""
        return self.state.local(backup.created_at).strftime("%Y-%m-%d %H:%M:%S")

    def _backups(self, call: _Call) -> Doc:
        instance = self._instance(call, "elid")
        today, total = self.state.manual_counts(instance.id)
        rows = [self._backup_row(b) for b in self.state.backups_of(instance.id)]
        return {
            **call.page(rows),
            "manual_created_today": scalar(today),
            "manual_created_total": scalar(total),
            "backup_rotation": scalar(instance.backup_rotation),
            "cost": {"stat_cost": scalar("0.0043")},
        }

    def _backup_edit(self, call: _Call) -> Doc:
        instance = self._instance(call, "plid")
        today, total = self.state.manual_counts(instance.id)
        if not call.confirmed:
            return {
                "plid": scalar(instance.id),
                "name": scalar(""),
                "manual_created_today": scalar(today),
                "manual_created_total": scalar(total),
            }
        name = call.params.get("name")
        errors: dict[str, list[str]] = {}
        if name is None:
            errors["name"] = ["This field is required."]
        elif not name.strip():
            errors["name"] = ["This field may not be blank."]
        elif len(name.strip()) > MAX_BACKUP_NAME:
            errors["name"] = [f"Ensure this field has no more than {MAX_BACKUP_NAME} characters."]
        if errors:
            raise call.field_errors(errors)
        self._not_busy(call, instance)
        config = self.state.config
        if today >= config.manual_backups_per_day:
            raise call.field_errors(
                {
                    "non_field_errors": [
                        f"You can create at most {config.manual_backups_per_day} "
                        "manual backups per day."
                    ]
                }
            )
        if total >= config.manual_backups_total:
            raise call.field_errors(
                {
                    "non_field_errors": [
                        f"You can keep at most {config.manual_backups_total} manual backups."
                    ]
                }
            )
        assert name is not None
        self.state.add_backup(instance.id, name.strip(), duration=config.backup_duration)
        self.state.make_busy(instance.id, config.backup_duration)
        return {"ok": scalar("ok")}

    def _owned_backup(self, call: _Call, backup_id: str) -> Backup:
        backup = self.state.owned_backup(call.account, backup_id)
        if backup is None:
            raise ApiError("missed", "elid", call.msg("missed_elid", backup_id))
        return backup

    def _image_edit(self, call: _Call) -> Doc:
        backup = self._owned_backup(call, call.params.get("elid", ""))
        if call.confirmed:
            protected = call.params.get("protected")
            if protected is not None:
                if protected not in ("on", "off"):
                    raise call.field_errors({"protected": ["Select on or off."]})
                backup.protected = protected == "on"
                self.state.save()
            return {"ok": scalar("ok")}
        return {
            "elid": scalar(backup.id),
            "name": scalar(backup.name),
            "fleio_status": scalar(backup.status(self.state.now())),
            "created": scalar(self._created(backup)),
            "image_size": scalar(backup.image_size),
            "backup_type": scalar(backup.backup_type),
            "protected": scalar("on" if backup.protected else "off"),
            "instance_id": scalar(backup.instance_id),
        }

    def _image_delete(self, call: _Call) -> Doc:
        backups = [self._owned_backup(call, ident) for ident in self._elids(call)]
        for backup in backups:
            if backup.protected:
                raise ApiError("value", "protected", call.msg("protected", backup.id))
        self.state.remove_backups(b.id for b in backups)
        return {"ok": scalar("ok")}

    # ------------------------------------------------------------------ schedules

    def _schedule_row(self, schedule: Schedule, lang: str) -> Doc:
        return {
            "create_date": scalar(schedule.create_date),
            "id": scalar(schedule.id),
            "instance_id": scalar(schedule.instance_id),
            "name": scalar(schedule.name),
            "rotation_days": scalar(day_names(schedule.days, lang)),
            "rotation_time": scalar(schedule.time),
            "servername": scalar(self.state.instances[schedule.instance_id].name),
        }

    def _schedules(self, call: _Call) -> Doc:
        instance = self._instance(call, "elid")
        schedules = self.state.listed_schedules_of(instance.id)
        rows = [self._schedule_row(s, call.lang) for s in schedules]
        return call.page(rows)

    def _schedule_edit(self, call: _Call) -> Doc:
        instance = self._instance(call, "plid")
        schedule: Schedule | None = None
        elid = call.params.get("elid", "")
        if elid:
            schedule = self.state.owned_schedule(call.account, elid)
            if schedule is None or schedule.instance_id != instance.id:
                raise ApiError("missed", "elid", call.msg("missed_elid", elid))
        if not call.confirmed:
            return {
                "plid": scalar(instance.id),
                "elid": scalar(schedule.id if schedule else ""),
                "name": scalar(schedule.name if schedule else ""),
                "rotation_days": scalar(
                    ",".join(str(d) for d in schedule.days) if schedule else ""
                ),
                "rotation_time": scalar(schedule.time if schedule else ""),
            }
        name, days, time_ = validate_schedule(call)
        name = self.faults.stored_name(name)
        self._not_busy(call, instance)
        if schedule is None:
            delay = self.faults.listing_delay
            self.state.add_schedule(instance.id, name, days, time_, listing_delay=delay)
            call.created = True
        else:
            self.state.change_schedule(schedule.id, name=name, days=days, time_=time_)
        # The strict reading of the docs: no new id in the answer; clients list and match.
        return {"ok": scalar("ok")}

    def _schedule_delete(self, call: _Call) -> Doc:
        ids = self._elids(call)
        mode = self.faults.group_delete if len(ids) > 1 else None
        if mode == "refused":
            raise ApiError("value", "elid", call.msg("value", call.params["elid"]))
        if mode == "first":
            ids = ids[:1]
        if mode == "partial":  # one at a time, no transaction: what was deleted stays deleted
            for ident in ids:
                self._delete_schedules(call, [ident])
        else:
            self._delete_schedules(call, ids)
        return {"ok": scalar("ok")}

    def _delete_schedules(self, call: _Call, ids: list[str]) -> None:
        """All of them, or (one missing or its instance busy) none."""
        schedules: list[Schedule] = []
        for ident in ids:
            schedule = self.state.owned_schedule(call.account, ident)
            if schedule is None:
                raise ApiError("missed", "elid", call.msg("missed_elid", ident))
            schedules.append(schedule)
        for schedule in schedules:
            self._not_busy(call, self.state.instances[schedule.instance_id])
        self.state.remove_schedules(s.id for s in schedules)

    def _keepalive(self, call: _Call) -> Doc:
        return {}


@dataclass
class _Call:
    """One API call being served: its fields, language and the authenticated account."""

    params: Mapping[str, str]
    lang: str
    func: str
    account: str
    created: bool = False

    @property
    def confirmed(self) -> bool:
        """``sok`` applies a form; without it an ``.edit`` only reads."""
        return bool(self.params.get("sok"))

    def msg(self, key: str, *args: str) -> str:
        en, ru = _MESSAGES[key]
        return (en if self.lang == "en" else ru).format(*args)

    def field_errors(self, errors: dict[str, list[str]]) -> ApiError:
        """Zomro's backup functions put a JSON *string* of field errors in ``$object``."""
        encoded = json.dumps(errors, ensure_ascii=False)
        summary = "; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items())
        return ApiError("value", encoded, self.msg("value", summary), encoded)

    def page(self, rows: list[Doc]) -> Doc:
        """A list document: rows in ``elem`` (absent when empty), paging by p_num/p_cnt."""
        total = len(rows)
        p_cnt_raw = self.params.get("p_cnt", "")
        p_num_raw = self.params.get("p_num", "")
        doc: Doc = {"p_elems": scalar(total)}
        if _INT_RE.fullmatch(p_cnt_raw) and int(p_cnt_raw) > 0:
            p_cnt = int(p_cnt_raw)
            p_num = int(p_num_raw) if _INT_RE.fullmatch(p_num_raw) and int(p_num_raw) > 0 else 1
            rows = rows[(p_num - 1) * p_cnt : p_num * p_cnt]
            doc["p_num"] = scalar(p_num)
            doc["p_cnt"] = scalar(p_cnt)
        if rows:
            doc["elem"] = rows
        return doc


def day_names(days: tuple[int, ...], lang: str) -> str:
    """Zomro's listing form: names in week order from Sunday, each followed by a space."""
    table = DAY_NAMES_EN if lang == "en" else DAY_NAMES_RU
    return "".join(f"{table[d]} " for d in sorted(days))


def validate_schedule(call: _Call) -> tuple[str, tuple[int, ...], str]:
    """The provider's checks of a schedule form, all fields at once, like a DRF serializer."""
    errors: dict[str, list[str]] = {}
    raw_name = call.params.get("name")
    name = ""
    if raw_name is None:
        errors["name"] = ["This field is required."]
    else:
        name = raw_name.strip()  # DRF trims surrounding whitespace before storing
        if not name:
            errors["name"] = ["This field may not be blank."]
        elif len(name) > MAX_SCHEDULE_NAME:
            errors["name"] = [f"Ensure this field has no more than {MAX_SCHEDULE_NAME} characters."]
    raw_days = call.params.get("rotation_days")
    days: tuple[int, ...] = ()
    if raw_days is None:
        errors["rotation_days"] = ["This field is required."]
    elif raw_days == "":
        errors["rotation_days"] = ["Select at least one day."]
    elif not _DAYS_RE.fullmatch(raw_days):
        errors["rotation_days"] = ["Invalid day"]
    else:
        numbers = [int(d) for d in raw_days.split(",")]
        if len(set(numbers)) != len(numbers):
            errors["rotation_days"] = ["Invalid day"]
        days = tuple(sorted(numbers))
    raw_time = call.params.get("rotation_time")
    if raw_time is None:
        errors["rotation_time"] = ["This field is required."]
    elif not _TIME_RE.fullmatch(raw_time):
        errors["rotation_time"] = ["Invalid time"]
    if errors:
        raise call.field_errors(errors)
    assert raw_time is not None
    return name, days, raw_time
