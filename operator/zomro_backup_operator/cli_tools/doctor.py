"""``zomro-backup-operator doctor``: check a real account's answers against what the client
expects, measure round trips, and recommend settings. Read-only unless ``--write-test``.

The checks read the raw answers (kept by :class:`AnswerRecorder`) with the client's own wire
functions; the calls themselves go through :class:`ZomroClient`'s public methods, so what is
checked is what the operator would do.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import math
import re
import secrets
import signal
import statistics
import sys
import threading
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass, field
from typing import IO, Any, Literal

import httpx

from zomro_backup_operator.cli_tools.access import (
    ExitCode,
    FoundCredentials,
    exit_code_for,
    open_client,
    shown_url,
)
from zomro_backup_operator.cli_tools.raw_answers import AnswerRecorder, RawAnswer
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.zomro import ZomroClient, wire
from zomro_backup_operator.zomro.client import (
    FUNC_AUTH,
    FUNC_INSTANCES,
    FUNC_SCHEDULE_EDIT,
    FUNC_SCHEDULES,
)
from zomro_backup_operator.zomro.credentials import AuthMode
from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    ServerError,
    ZomroError,
)
from zomro_backup_operator.zomro.models import Instance, Schedule, ScheduleSpec, Weekday

MARK = "zbo-doctor-"
"""The name prefix of the write test's schedule: anything so named is the doctor's own."""
PROBE_INSTANCE = "0"
"""An instance id no account owns: listing it shows how Zomro words a refusal."""

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

Level = Literal["ok", "note", "problem"]


@dataclass
class Finding:
    """One line of the report: what was checked, and how it came out."""

    level: Level
    where: str
    message: str


@dataclass
class Recommendation:
    variable: str
    value: str | None
    """None: no value can be recommended from what was seen."""
    why: str


@dataclass
class Report:
    api_url: str
    credentials: str
    mode: str
    findings: list[Finding] = field(default_factory=list)
    write_test: list[Finding] = field(default_factory=list)
    round_trips: dict[str, list[float]] = field(default_factory=dict)
    recommendations: list[Recommendation] = field(default_factory=list)
    instances: list[dict[str, Any]] = field(default_factory=list)
    fatal: ExitCode | None = None
    interrupted: str | None = None
    provider_clock: str | None = None
    """What the answers told of the provider's clock, if anything."""
    concurrency: Literal["refused", "served", "failed", "unknown"] = "unknown"
    """Two calls at once on one session: what Zomro did."""

    def add(self, level: Level, where: str, message: str) -> None:
        self.findings.append(Finding(level, where, message))

    @property
    def exit_code(self) -> ExitCode:
        if self.interrupted:
            return ExitCode.INTERRUPTED
        if self.fatal is not None:
            return self.fatal
        if any(f.level == "problem" for f in [*self.findings, *self.write_test]):
            return ExitCode.PROBLEMS
        return ExitCode.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "api_url": self.api_url,
            "credentials": self.credentials,
            "mode": self.mode,
            "exit_code": int(self.exit_code),
            "interrupted": self.interrupted,
            "instances": self.instances,
            "findings": [asdict(f) for f in self.findings],
            "write_test": [asdict(f) for f in self.write_test] or None,
            "round_trips": {
                func: _stats(times) for func, times in sorted(self.round_trips.items())
            },
            "recommendations": [asdict(r) for r in self.recommendations],
        }

    def render(self) -> str:
        lines = [
            f"zomro-backup-operator doctor: {self.api_url} "
            f"(credentials: {self.credentials}, {self.mode})",
            "",
        ]
        sections = (
            ("Worked", [f for f in self.findings if f.level == "ok"]),
            ("Unexpected", [f for f in self.findings if f.level != "ok"]),
            ("Write test", self.write_test),
        )
        for title, findings in sections:
            if not findings:
                continue
            lines.append(title)
            lines += [f"  {f.level:<8}{f.where}: {f.message}" for f in findings]
            lines.append("")
        if self.round_trips:
            lines.append("Round trips (seconds)")
            for func, times in sorted(self.round_trips.items()):
                s = _stats(times)
                lines.append(
                    f"  {func:<40}{s['calls']:>3} call{'s' if s['calls'] > 1 else ' '}  "
                    f"median {s['median']:.3f}  "
                    f"max {s['max']:.3f}"
                )
            lines.append("")
        if self.recommendations:
            lines.append("Recommended settings")
            for r in self.recommendations:
                setting = f"{r.variable}={r.value}" if r.value is not None else r.variable
                lines.append(f"  {setting:<36}{r.why}")
            lines.append("")
        problems = sum(f.level == "problem" for f in [*self.findings, *self.write_test])
        notes = sum(f.level == "note" for f in [*self.findings, *self.write_test])
        ending = f"interrupted by {self.interrupted}; " if self.interrupted else ""
        lines.append(
            f"Result: {ending}{problems} problem(s), {notes} note(s) (exit {int(self.exit_code)})"
        )
        return "\n".join(lines) + "\n"


def _stats(times: list[float]) -> dict[str, Any]:
    return {
        "calls": len(times),
        "median": round(statistics.median(times), 4),
        "max": round(max(times), 4),
    }


# --- checks on raw answers (pure) -----------------------------------------------------------


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
        findings.append(Finding("note", where, f"fields the client does not read: {extra}"))
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


# --- the run ---------------------------------------------------------------------------------


_HINTS = {
    ExitCode.LOGIN_REFUSED: "check the username and password (or token); an account with "
    "two-factor login cannot be used by the API unattended; repeated failures block the IP",
    ExitCode.BLOCKED: "Zomro's edge blocks this IP for now: wait before trying again, "
    "do not retry in a loop",
    ExitCode.UNREACHABLE: "check ZOMRO_API_URL and that this machine can reach it; "
    "Zomro may be down",
    ExitCode.PROBLEMS: "Zomro answered HTTP 200 with something that is not its JSON document: "
    "a proxy or a changed API",
}


class _Timings:
    """The client's ``on_request`` hook: seconds per function."""

    def __init__(self, report: Report) -> None:
        self._report = report

    def __call__(self, func: str, outcome: str, seconds: float) -> None:
        self._report.round_trips.setdefault(func, []).append(seconds)


class Doctor:
    def __init__(
        self,
        found: FoundCredentials,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        err: IO[str] = sys.stderr,
    ) -> None:
        self._found = found
        self._settings = settings
        self._transport = transport
        self._err = err
        mode = found.credentials.mode
        self.report = Report(
            api_url=shown_url(settings.api_url),
            credentials=found.where,
            mode="password login" if mode is AuthMode.PASSWORD else "session token",
        )
        self._recorder = AnswerRecorder(transport)
        self._cleaning = False

    def _say(self, text: str) -> None:
        print(f"doctor: {text}", file=self._err, flush=True)

    async def run(self, write_test_instance: str | None = None) -> Report:
        client = open_client(
            self._found.credentials,
            self._settings,
            max_in_flight=1,
            transport=self._recorder,
            on_request=_Timings(self.report),
        )
        async with client:
            instances = await self._instances(client)
            if instances is not None:
                for instance in instances:
                    await self._schedules(client, instance)
                await self._refusal(client)
                await self._concurrency()
                if write_test_instance is not None:
                    await WriteTest(client, self.report, self._recorder, self._say).run(
                        write_test_instance
                    )
        if self.report.fatal is None:
            self._recommend()
        return self.report

    def _fail(self, step: str, exc: ZomroError, answers: list[RawAnswer]) -> None:
        """A step that stops the run: say why, and pick the exit code."""
        code = exit_code_for(exc)
        if isinstance(exc, ServerError) and answers and answers[-1].status == 200:
            # HTTP 200 with a body that is not Zomro's document: Zomro answered, oddly.
            code = ExitCode.PROBLEMS
        self.report.fatal = code
        self.report.add("problem", step, exc.message)
        hint = _HINTS.get(code)
        if hint is not None:
            wait = f" (Zomro asked for {exc.retry_after:.0f}s)" if exc.retry_after else ""
            self.report.add("note", "what to do", hint + wait)

    async def _instances(self, client: ZomroClient) -> list[Instance] | None:
        mark = len(self._recorder.answers)
        try:
            instances = await client.list_instances()
        except ZomroError as exc:
            answers = self._recorder.answers[mark:]
            step = "login" if answers and answers[-1].func == FUNC_AUTH else FUNC_INSTANCES
            self._fail(step, exc, answers)
            return None
        if self._found.credentials.mode is AuthMode.PASSWORD:
            self.report.add("ok", "login", "a session was opened (func=auth)")
        else:
            self.report.add("ok", "login", "the session token is accepted")
        names = ", ".join(f"{i.id} {i.name}" for i in instances[:10]) or "none"
        self.report.add("ok", FUNC_INSTANCES, f"{len(instances)} listed ({names})")
        self.report.findings += check_list_answers(
            self._recorder.since(mark, FUNC_INSTANCES),
            where=FUNC_INSTANCES,
            rows_received=len(instances),
            known_fields=INSTANCE_FIELDS,
            required_fields=("id",),
        )
        if not instances:
            self.report.add("note", FUNC_INSTANCES, "the account has no instances")
        return instances

    async def _schedules(self, client: ZomroClient, instance: Instance) -> None:
        where = f"{FUNC_SCHEDULES} {instance.id}"
        mark = len(self._recorder.answers)
        entry: dict[str, Any] = {"id": instance.id, "name": instance.name}
        self.report.instances.append(entry)
        try:
            schedules = await client.list_schedules(instance.id)
        except ZomroError as exc:
            entry["error"] = exc.message
            self.report.add("problem", where, exc.message)
            return
        entry["schedules"] = len(schedules)
        self.report.add("ok", where, f"{len(schedules)} listed")
        answers = self._recorder.since(mark, FUNC_SCHEDULES)
        self.report.findings += check_list_answers(
            answers,
            where=where,
            rows_received=len(schedules),
            known_fields=SCHEDULE_FIELDS,
            required_fields=SCHEDULE_REQUIRED,
        )
        self.report.findings += check_schedule_values(answers, where=where)
        foreign = sorted({s.instance_id for s in schedules} - {instance.id})
        if foreign:
            self.report.add("problem", where, f"rows name other instances: {foreign}")

    async def _refusal(self, client: ZomroClient) -> None:
        """List an instance no account owns (a read): how does Zomro say no?"""
        where = f"{FUNC_SCHEDULES} (an unknown instance)"
        mark = len(self._recorder.answers)
        try:
            await client.list_schedules(PROBE_INSTANCE)
        except AccessDeniedError:
            self.report.add("ok", where, "refused as access denied, as the client expects")
        except ZomroError as exc:
            self.report.add("note", where, f"refused, but not as 'access': {exc.message}")
        else:
            self.report.add("note", where, "answered without a refusal (expected: access denied)")
        self.report.findings += check_error_answers(
            self._recorder.since(mark, FUNC_SCHEDULES), where=where
        )

    async def _concurrency(self) -> None:
        """Two listings at once on one session: does Zomro serve both, or refuse one?"""
        recorder = AnswerRecorder(self._transport)
        client = open_client(
            self._found.credentials,
            self._settings,
            max_in_flight=2,
            max_requests_per_second=100.0,
            read_attempts=1,
            transport=recorder,
        )
        async with client:
            try:
                await client.list_instances()  # logs in first, alone
            except ZomroError:
                return
            mark = len(recorder.answers)
            results = await asyncio.gather(
                client.list_instances(), client.list_instances(), return_exceptions=True
            )
        pair = recorder.since(mark, FUNC_INSTANCES)[:2]
        refused = [r for r in results if isinstance(r, ZomroError)]
        busy = any(
            (info := wire.read_error(doc)) is not None and info.is_busy
            for doc in (answer.doc() for answer in pair)
            if doc is not None
        )
        if busy:
            self.report.concurrency = "refused"
        elif refused:
            self.report.concurrency = "failed"
        elif len(pair) == 2 and pair[0].overlaps(pair[1]):
            self.report.concurrency = "served"

    def _recommend(self) -> None:
        recs = self.report.recommendations
        concurrent = self.report.concurrency
        if concurrent == "refused":
            recs.append(
                Recommendation(
                    "ZOMRO_MAX_IN_FLIGHT",
                    "1",
                    "Zomro refused a second call on one session ('request in process')",
                )
            )
        elif concurrent == "served":
            recs.append(
                Recommendation(
                    "ZOMRO_MAX_IN_FLIGHT",
                    "2",
                    "Zomro served two calls on one session at once; 1 (the default) is safest",
                )
            )
        else:
            recs.append(
                Recommendation(
                    "ZOMRO_MAX_IN_FLIGHT",
                    "1",
                    "two calls at once could not be tried (or did not overlap): keep the default",
                )
            )
        times = [t for ts in self.report.round_trips.values() for t in ts]
        if times:
            slowest = max(times)
            timeout = max(self._settings.timeout_seconds, math.ceil(slowest * 5))
            recs.append(
                Recommendation(
                    "ZOMRO_TIMEOUT_SECONDS",
                    f"{timeout:g}",
                    f"the slowest answer took {slowest:.2f}s",
                )
            )
            median = statistics.median(times)
            cap = 1.0 / median if median > 0 else math.inf
            rate = self._settings.max_requests_per_second
            why = (
                f"one call at a time at a median {median:.3f}s allows about {cap:.0f} req/s"
                if math.isfinite(cap)
                else "answers were instant"
            )
            recs.append(Recommendation("ZOMRO_MAX_REQUESTS_PER_SECOND", f"{rate:g}", why))
        recs.append(
            Recommendation(
                "ZOMRO_PROVIDER_TIMEZONE",
                None,
                self.report.provider_clock
                or "cannot be told from these answers (they carry no time of day); "
                "set it to the zone of the times Zomro's panel shows",
            )
        )


class WriteTest:
    """Create one marked schedule, read it back, change it, delete it; always clean up."""

    def __init__(
        self,
        client: ZomroClient,
        report: Report,
        recorder: AnswerRecorder,
        say: Callable[[str], None],
    ) -> None:
        self._client = client
        self._report = report
        self._recorder = recorder
        self._say = say
        self.name = f"{MARK}{secrets.token_hex(4)}"
        self._first = ScheduleSpec(self.name, frozenset({Weekday.WEDNESDAY}), "03:17")
        self._second = ScheduleSpec(
            self.name, frozenset({Weekday.THURSDAY, Weekday.SATURDAY}), "04:28"
        )

    def _step(self, level: Level, step: str, message: str) -> None:
        self._report.write_test.append(Finding(level, step, message))
        self._say(f"write test: {step}: {message}")

    async def run(self, instance_id: str) -> None:
        self._say(f"write test on instance {instance_id} with schedule {self.name!r}")
        done = False
        try:
            done = await self._steps(instance_id)
        except ZomroError as exc:
            self._step("problem", "stopped", exc.message)
        finally:
            if not done:
                await self._clean_up(instance_id)

    async def _steps(self, instance_id: str) -> bool:
        client = self._client
        mark = len(self._recorder.answers)
        created = await client.create_schedule(instance_id, self._first)
        answers = self._recorder.since(mark, FUNC_SCHEDULE_EDIT)
        carried = any(
            doc is not None and wire.parse_created_id(doc) is not None
            for doc in (a.doc() for a in answers)
        )
        how = "the answer carried it" if carried else "found by listing (the answer had no id)"
        self._step("ok", "create", f"id {created.id}, {how}")
        await self._expect(instance_id, created.id, self._first, "read back")
        await client.update_schedule(instance_id, created.id, self._second)
        self._step("ok", "change", f"days and time changed on id {created.id}")
        await self._expect(instance_id, created.id, self._second, "read back after change")
        await client.delete_schedule(instance_id, created.id)
        self._step("ok", "delete", f"id {created.id} deleted")
        left = [s for s in await client.list_schedules(instance_id) if s.name == self.name]
        if left:
            self._step("problem", "confirm deleted", f"still listed: {[s.id for s in left]}")
            return False
        self._step("ok", "confirm deleted", "no longer listed")
        return True

    async def _expect(
        self, instance_id: str, schedule_id: str, spec: ScheduleSpec, step: str
    ) -> None:
        mark = len(self._recorder.answers)
        listed = await self._client.list_schedules(instance_id)
        mine = [s for s in listed if s.name == self.name]
        held = next((s for s in mine if s.id == schedule_id), None)
        if held is None:
            self._step("problem", step, f"id {schedule_id} is not listed")
            return
        if len(mine) > 1:
            self._step("problem", step, f"{len(mine)} schedules carry the name: a duplicate")
        if not held.matches(spec):
            self._step("problem", step, f"Zomro holds {_describe(held)}, not {_describe(spec)}")
            return
        raw_days = self._raw_days(mark, schedule_id)
        self._step("ok", step, f"{_describe(held)}; listed days {raw_days!r}")
        if step == "read back" and held.create_date is not None:
            self._clock(held)

    def _raw_days(self, mark: int, schedule_id: str) -> str:
        for answer in self._recorder.since(mark, FUNC_SCHEDULES):
            doc = answer.doc()
            for row in wire.rows(doc or {}, func=FUNC_SCHEDULES):
                if wire.scalar(row.get("id")) == schedule_id:
                    return wire.scalar(row.get("rotation_days")) or ""
        return ""

    def _clock(self, held: Schedule) -> None:
        """A create date that is not today's UTC date tells which side of UTC the provider is."""
        assert held.create_date is not None
        today = datetime.datetime.now(datetime.UTC).date()
        if held.create_date == today:
            return
        side = "ahead of" if held.create_date > today else "behind"
        self._report.findings.append(
            Finding(
                "note",
                "clock",
                f"the new schedule's create_date {held.create_date} is not UTC's {today}: "
                f"the provider's clock is {side} UTC",
            )
        )
        self._report.provider_clock = (
            f"the provider's date is {side} UTC's: set the zone the panel's times are in"
        )

    async def _clean_up(self, instance_id: str) -> None:
        """Delete every schedule carrying this run's marked name, even after an interruption."""
        self._say(f"cleaning up: deleting schedules named {self.name!r}")
        try:
            mine = [
                s for s in await self._client.list_schedules(instance_id) if s.name == self.name
            ]
            for schedule in mine:
                await self._client.delete_schedule(instance_id, schedule.id)
            left = [
                s for s in await self._client.list_schedules(instance_id) if s.name == self.name
            ]
        except ZomroError as exc:
            self._step(
                "problem",
                "clean up",
                f"{exc.message}; delete the schedule named {self.name!r} on instance "
                f"{instance_id} by hand",
            )
            return
        if left:
            self._step("problem", "clean up", f"still listed: {[s.id for s in left]}")
        elif mine:
            self._step("ok", "clean up", f"removed {[s.id for s in mine]}")
        else:
            self._step("ok", "clean up", "nothing was left at Zomro")


def _describe(value: Schedule | ScheduleSpec) -> str:
    days = ",".join(day.title for day in sorted(value.days))
    return f"{days} {value.time}"


# --- the command -----------------------------------------------------------------------------


def run_doctor(
    found: FoundCredentials,
    settings: Settings,
    *,
    write_test_instance: str | None,
    as_json: bool,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    doctor = Doctor(found, settings, err=err)
    report = asyncio.run(_interruptible(doctor.run(write_test_instance), doctor.report, err))
    if as_json:
        json.dump(report.to_json(), out, indent=2)
        out.write("\n")
    else:
        out.write(report.render())
    out.flush()
    return int(report.exit_code)


async def _interruptible(work: Coroutine[Any, Any, Report], report: Report, err: IO[str]) -> Report:
    """Run ``work``; SIGINT or SIGTERM cancel it, so its ``finally`` blocks clean up. A second
    signal during the clean-up is ignored: leaving a schedule behind is worse than waiting."""
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)

    def interrupt(name: str) -> None:
        if report.interrupted is None:
            report.interrupted = name
            print(f"doctor: {name}: stopping, cleaning up first", file=err, flush=True)
            task.cancel()
        else:
            print(f"doctor: {name}: still cleaning up", file=err, flush=True)

    # Signals reach only the main thread (tests run the command in a worker thread).
    signals = (
        (signal.SIGINT, signal.SIGTERM)
        if threading.current_thread() is threading.main_thread()
        else ()
    )
    for sig in signals:
        loop.add_signal_handler(sig, interrupt, sig.name)
    try:
        return await task
    except asyncio.CancelledError:
        return report
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
