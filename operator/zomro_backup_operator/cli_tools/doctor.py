"""``zomro-backup-operator doctor``: check a real account's answers against what the client
expects, measure round trips, and recommend settings. Read-only unless ``--write-test``.

The checks read the raw answers (kept by :class:`AnswerRecorder`) with the client's own wire
functions; the calls themselves go through :class:`ZomroClient`'s public methods, so what is
checked is what the operator would do.
"""

from __future__ import annotations

import asyncio
import json
import math
import signal
import statistics
import sys
import threading
from collections.abc import Coroutine
from typing import IO, Any

import httpx

from zomro_backup_operator.cli_tools.access import (
    ExitCode,
    FoundCredentials,
    exit_code_for,
    open_client,
    shown_url,
)
from zomro_backup_operator.cli_tools.answer_checks import (
    INSTANCE_FIELDS,
    SCHEDULE_FIELDS,
    SCHEDULE_REQUIRED,
    check_error_answers,
    check_list_answers,
    check_schedule_values,
)
from zomro_backup_operator.cli_tools.raw_answers import AnswerRecorder, RawAnswer
from zomro_backup_operator.cli_tools.report import Recommendation, Report
from zomro_backup_operator.cli_tools.write_test import WriteTest
from zomro_backup_operator.settings import Settings
from zomro_backup_operator.zomro import ZomroClient, wire
from zomro_backup_operator.zomro.credentials import AuthMode
from zomro_backup_operator.zomro.errors import (
    AccessDeniedError,
    ServerError,
    ZomroError,
)
from zomro_backup_operator.zomro.funcs import FUNC_AUTH, FUNC_INSTANCES, FUNC_SCHEDULES
from zomro_backup_operator.zomro.models import Instance

PROBE_INSTANCE = "0"
"""An instance id no account owns: listing it shows how Zomro words a refusal."""


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
        names = ", ".join(f"{i.id} {wire.clean_text(i.name)}" for i in instances[:10]) or "none"
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
        entry: dict[str, Any] = {"id": instance.id, "name": wire.clean_text(instance.name)}
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
