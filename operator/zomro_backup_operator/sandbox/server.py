"""The sandbox over real HTTP: the API at ``/`` and a control endpoint under ``/_sandbox/``.

The API path behaves like Zomro's edge and BILLmanager behind it, faults included. The control
path is for tests and people trying failure modes; it is not subject to faults, so it keeps
answering during an outage. It has no authentication: it takes only JSON bodies (a web page in a
browser cannot send those to another site without the site's consent), and the sandbox warns when
it listens beyond loopback. For tests and demos, not production.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import socket
import struct
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from zomro_backup_operator.sandbox.api import Api
from zomro_backup_operator.sandbox.clock import Clock, SandboxClock
from zomro_backup_operator.sandbox.config import (
    ConfigError,
    SandboxConfig,
    default_config,
    load_config,
    same_minute_mode,
)
from zomro_backup_operator.sandbox.faults import FaultError, Faults
from zomro_backup_operator.sandbox.model import DAY_NAMES_EN, RequestRecord, SandboxState
from zomro_backup_operator.sandbox.render import error_page, hostile_answer, read_params, render

log = logging.getLogger("zomro_backup_operator.sandbox")

CONTROL_PREFIX = "/_sandbox"
_BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_REQUEST_LOG = 100_000


class Sandbox:
    """The emulated service: state, faults, and the aiohttp application serving them."""

    def __init__(
        self,
        config: SandboxConfig | None = None,
        *,
        state_file: Path | None = None,
        clock: Clock = time.time,
    ) -> None:
        self.config = config or default_config()
        self.clock = SandboxClock(clock)
        self.state = SandboxState(self.config, clock=self.clock, state_file=state_file)
        self.faults = Faults()
        self.faults.update(self.config.faults, self.state.now())
        self.api = Api(self.state, self.faults)
        self._in_process: set[str] = set()

    def __repr__(self) -> str:
        return f"Sandbox({self.state!r})"

    @property
    def calls_in_process(self) -> int:
        """API calls on a session that are being served right now."""
        return len(self._in_process)

    def set_faults(self, **faults: Any) -> None:
        """Change the given faults (the JSON form of ``/_sandbox/faults``), keep the others."""
        self.faults.update(faults, self.state.now())

    def app(self) -> web.Application:
        @web.middleware
        async def run_schedules_first(request: web.Request, handler: Handler) -> web.StreamResponse:
            # Runs are made lazily: every request, API or control, first sees those now due.
            self.api.run_schedules()
            return await handler(request)

        app = web.Application(
            client_max_size=1024 * 1024,
            middlewares=[_control_takes_json_only, run_schedules_first],
        )
        app.router.add_route("GET", "/", self.handle_api)
        app.router.add_route("POST", "/", self.handle_api)
        # The same API under /_via/<label>/: a test gives each client process its own base URL,
        # and the request log says which process sent what (test_leader_election_cluster.py).
        app.router.add_route("GET", "/_via/{client}/", self.handle_api)
        app.router.add_route("POST", "/_via/{client}/", self.handle_api)
        c = CONTROL_PREFIX
        app.router.add_get(f"{c}/health", self.c_health)
        app.router.add_get(f"{c}/state", self.c_state)
        app.router.add_get(f"{c}/faults", self.c_get_faults)
        app.router.add_put(f"{c}/faults", self.c_put_faults)
        app.router.add_patch(f"{c}/faults", self.c_patch_faults)
        app.router.add_delete(f"{c}/faults", self.c_clear_faults)
        app.router.add_get(f"{c}/settings", self.c_get_settings)
        app.router.add_put(f"{c}/settings", self.c_put_settings)
        app.router.add_post(f"{c}/expire-sessions", self.c_expire_sessions)
        app.router.add_get(f"{c}/requests", self.c_requests)
        app.router.add_delete(f"{c}/requests", self.c_clear_requests)
        app.router.add_post(f"{c}/reset", self.c_reset)
        app.router.add_post(f"{c}/schedules", self.c_add_schedule)
        app.router.add_patch(f"{c}/schedules/{{id}}", self.c_edit_schedule)
        app.router.add_delete(f"{c}/schedules/{{id}}", self.c_remove_schedule)
        app.router.add_post(f"{c}/backups", self.c_add_backup)
        app.router.add_patch(f"{c}/backups/{{id}}", self.c_edit_backup)
        app.router.add_get(f"{c}/clock", self.c_get_clock)
        app.router.add_put(f"{c}/clock", self.c_set_clock)
        app.router.add_post(f"{c}/clock/advance", self.c_advance_clock)
        app.router.add_post(f"{c}/instances/{{id}}/busy", self.c_busy)
        return app

    # ------------------------------------------------------------------ the API

    async def handle_api(self, request: web.Request) -> web.StreamResponse:
        started = time.monotonic()
        params = await read_params(request)
        func = params.get("func", "")
        faults = self.faults
        if faults.outage == "reset":
            return self._finish(request, started, params, None, "outage:reset", _reset(request))
        if faults.outage == "503":
            return self._finish(request, started, params, None, "outage:503", error_page(503))
        if faults.blocked(self.state.now()):
            status = faults.block_status or 460
            response = error_page(status)
            if faults.block_retry_after is not None:
                response.headers["Retry-After"] = str(faults.block_retry_after)
            return self._finish(request, started, params, None, f"http:{status}", response)
        if faults.should_error(func):
            response = error_page(faults.error_status)
            return self._finish(
                request, started, params, None, f"http:{faults.error_status}", response
            )
        if faults.hostile is not None and func != "auth":
            response = hostile_answer(faults.hostile)
            return self._finish(
                request, started, params, None, f"hostile:{faults.hostile}", response
            )

        sid = params.get("auth") if "authinfo" not in params else None
        if sid and sid in self._in_process:
            result = self.api.busy_session(params)
            return self._finish(
                request, started, params, None, result.outcome, render(result, params)
            )
        if sid:
            self._in_process.add(sid)
        try:
            if faults.latency > 0:
                await asyncio.sleep(faults.latency)
            result = self.api.handle(params, request.remote or "", second_factor=faults.two_factor)
            late = faults.take_late_create() if result.created_schedule else None
            if late is not None:
                seconds, drop = late
                if seconds > 0:
                    await asyncio.sleep(seconds)
                if drop:
                    outcome = "ok:dropped"
                    return self._finish(
                        request, started, params, result.account, outcome, _reset(request)
                    )
        finally:
            if sid:
                self._in_process.discard(sid)
        return self._finish(
            request, started, params, result.account, result.outcome, render(result, params)
        )

    def _finish(
        self,
        request: web.Request,
        started: float,
        params: Mapping[str, str],
        account: str | None,
        outcome: str,
        response: web.StreamResponse,
    ) -> web.StreamResponse:
        duration = time.monotonic() - started
        func = params.get("func", "")
        elid = params.get("elid")
        record = RequestRecord(
            time=self.state.now(),
            func=func,
            elids=0 if not elid else len(elid.split(", ")),
            account=account,
            outcome=outcome,
            duration=duration,
            client=request.match_info.get("client"),
        )
        self.state.requests.append(record)
        if len(self.state.requests) > MAX_REQUEST_LOG:
            del self.state.requests[: len(self.state.requests) - MAX_REQUEST_LOG]
        # func comes from the client: repr() keeps odd characters from forging log lines.
        log.info("api func=%r account=%s outcome=%s %.3fs", func, account or "-", outcome, duration)
        return response

    # ------------------------------------------------------------------ the control endpoint

    async def c_health(self, request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    async def c_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state.snapshot())

    async def c_get_faults(self, request: web.Request) -> web.Response:
        return web.json_response(self.faults.to_json(self.state.now()))

    async def c_put_faults(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        fresh = Faults(rng=self.faults.rng)
        try:
            fresh.update(body, self.state.now())
        except FaultError as exc:
            raise _bad_request(str(exc)) from exc
        for key, value in vars(fresh).items():
            setattr(self.faults, key, value)
        log.info("control faults replaced: %s", json.dumps(self.faults.to_json(self.state.now())))
        return web.json_response(self.faults.to_json(self.state.now()))

    async def c_patch_faults(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        try:
            self.faults.update(body, self.state.now())
        except FaultError as exc:
            raise _bad_request(str(exc)) from exc
        log.info("control faults changed: %s", json.dumps(self.faults.to_json(self.state.now())))
        return web.json_response(self.faults.to_json(self.state.now()))

    async def c_clear_faults(self, request: web.Request) -> web.Response:
        self.faults.clear()
        log.info("control faults cleared")
        return web.json_response(self.faults.to_json(self.state.now()))

    def _settings(self) -> dict[str, Any]:
        return {
            "session_ttl": self.state.session_ttl,
            "scheduled_backups_busy": self.state.scheduled_backups_busy,
            "same_minute_runs": self.state.same_minute_runs,
        }

    async def c_get_settings(self, request: web.Request) -> web.Response:
        return web.json_response(self._settings())

    async def c_put_settings(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        unknown = set(body) - set(self._settings())
        if unknown:
            raise _bad_request(f"unknown settings: {', '.join(sorted(unknown))}")
        ttl = body.get("session_ttl", self.state.session_ttl)
        if isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0:
            raise _bad_request("session_ttl must be a positive number of seconds")
        busy = body.get("scheduled_backups_busy", self.state.scheduled_backups_busy)
        if not isinstance(busy, bool):
            raise _bad_request("scheduled_backups_busy must be true or false")
        try:
            same_minute = same_minute_mode(
                body.get("same_minute_runs", self.state.same_minute_runs)
            )
        except ConfigError as exc:
            raise _bad_request(str(exc)) from exc
        self.state.session_ttl = float(ttl)
        self.state.scheduled_backups_busy = busy
        self.state.same_minute_runs = same_minute
        return web.json_response(self._settings())

    def _clock_json(self) -> dict[str, Any]:
        now = self.state.now()
        return {
            "now": now,
            "utc": datetime.datetime.fromtimestamp(now, datetime.UTC).isoformat(),
            "provider": self.state.local(now).isoformat(),
            "zone": self.config.provider_zone,
        }

    async def c_get_clock(self, request: web.Request) -> web.Response:
        return web.json_response(self._clock_json())

    async def c_set_clock(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        at = _instant(body.get("at"))
        self.clock.set(at)
        made = self.api.run_schedules()
        log.info("control set the clock to %s (%d scheduled backups made)", at, made)
        return web.json_response(self._clock_json())

    async def c_advance_clock(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        seconds = body.get("seconds")
        if (
            isinstance(seconds, bool)
            or not isinstance(seconds, int | float)
            or not 0 <= seconds < 10 * 366 * 86400
        ):
            raise _bad_request("seconds must be a non-negative number of seconds (under 10 years)")
        self.clock.advance(float(seconds))
        made = self.api.run_schedules()
        log.info("control advanced the clock %ss (%d scheduled backups made)", seconds, made)
        return web.json_response(self._clock_json())

    async def c_expire_sessions(self, request: web.Request) -> web.Response:
        count = self.state.expire_sessions()
        log.info("control expired %d sessions", count)
        return web.json_response({"expired": count})

    async def c_requests(self, request: web.Request) -> web.Response:
        return web.json_response([asdict(r) for r in self.state.requests])

    async def c_clear_requests(self, request: web.Request) -> web.Response:
        self.state.requests.clear()
        return web.json_response({"ok": True})

    async def c_reset(self, request: web.Request) -> web.Response:
        self.clock.reset()
        self.state.reset()
        self.faults.clear()
        self._in_process.clear()
        log.info("control reset")
        return web.json_response(self.state.snapshot())

    async def c_add_schedule(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        instance_id = str(body.get("instance_id", ""))
        if instance_id not in self.state.instances:
            raise _bad_request(f"unknown instance {instance_id!r}")
        name, days, time_ = _schedule_fields(body, require=True)
        assert name is not None
        assert days is not None
        assert time_ is not None
        schedule = self.state.add_schedule(instance_id, name, days, time_)
        log.info("control added schedule %s on %s", schedule.id, instance_id)
        return web.json_response(schedule.to_json(), status=201)

    async def c_edit_schedule(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        if ident not in self.state.schedules:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no schedule {ident}"}))
        body = await _json_body(request)
        name, days, time_ = _schedule_fields(body, require=False)
        schedule = self.state.change_schedule(ident, name=name, days=days, time_=time_)
        log.info("control changed schedule %s", ident)
        return web.json_response(schedule.to_json())

    async def c_remove_schedule(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        if ident not in self.state.schedules:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no schedule {ident}"}))
        self.state.remove_schedules([ident])
        log.info("control removed schedule %s", ident)
        return web.json_response({"removed": ident})

    async def c_add_backup(self, request: web.Request) -> web.Response:
        body = await _json_body(request)
        instance_id = str(body.get("instance_id", ""))
        if instance_id not in self.state.instances:
            raise _bad_request(f"unknown instance {instance_id!r}")
        backup_type = body.get("backup_type", "auto")
        if backup_type not in ("auto", "manual"):
            raise _bad_request("backup_type must be auto or manual")
        backup = self.state.add_backup(
            instance_id,
            str(body.get("name", f"auto-{self.state.today()}")),
            backup_type=backup_type,
            protected=bool(body.get("protected", False)),
        )
        return web.json_response({"id": backup.id}, status=201)

    async def c_edit_backup(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        backup = self.state.backups.get(ident)
        if backup is None:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no backup {ident}"}))
        body = await _json_body(request)
        unknown = set(body) - {"protected"}
        if unknown:
            raise _bad_request(f"unknown backup fields: {', '.join(sorted(unknown))}")
        protected = body.get("protected", backup.protected)
        if not isinstance(protected, bool):
            raise _bad_request("protected must be true or false")
        backup.protected = protected
        self.state.save()
        log.info("control set backup %s protected=%s", ident, protected)
        return web.json_response(self.state.backup_json(backup))

    async def c_busy(self, request: web.Request) -> web.Response:
        ident = request.match_info["id"]
        if ident not in self.state.instances:
            raise web.HTTPNotFound(text=json.dumps({"error": f"no instance {ident}"}))
        body = await _json_body(request)
        seconds = body.get("seconds", 30)
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
            raise _bad_request("seconds must be a non-negative number")
        self.state.make_busy(ident, float(seconds))
        return web.json_response({"instance_id": ident, "busy_seconds": seconds})


def _reset(request: web.Request) -> web.Response:
    """Drop the connection with a TCP reset and no answer at all."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return web.Response(status=503)  # never reaches the client: the connection is gone


async def _json_body(request: web.Request) -> dict[str, Any]:
    if not request.can_read_body:
        return {}
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad_request(f"body is not JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad_request("body must be a JSON object")
    return body


@web.middleware
async def _control_takes_json_only(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Refuse control writes that are not ``application/json``. A page in a browser may POST
    text/plain or a form to any site without asking (a "simple" request); JSON it may not."""
    if (
        request.path.startswith(CONTROL_PREFIX + "/")
        and request.method in _BODY_METHODS
        and request.content_type != "application/json"
    ):
        return web.json_response(
            {"error": "the control endpoint takes Content-Type: application/json only"},
            status=415,
        )
    return await handler(request)


def _instant(value: Any) -> float:
    """Epoch seconds, or an ISO 8601 time with its offset (a naive one is ambiguous)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        moment = float(value)
    elif isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value)
        except ValueError as exc:
            raise _bad_request(f"at is not an ISO 8601 time: {value!r}") from exc
        if parsed.tzinfo is None:
            raise _bad_request("at needs an offset (e.g. Z or +02:00): a naive time is ambiguous")
        moment = parsed.timestamp()
    else:
        raise _bad_request("at must be epoch seconds or an ISO 8601 time with an offset")
    if not 0 <= moment < 2**33:
        raise _bad_request("at is out of range")
    return moment


def _bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _schedule_fields(
    body: dict[str, Any], *, require: bool
) -> tuple[str | None, list[int] | None, str | None]:
    """Fields for seeding behind the operator's back: typed, but not the provider's rules."""
    name = body.get("name")
    days_raw = body.get("days")
    time_ = body.get("time")
    if require and (name is None or days_raw is None or time_ is None):
        raise _bad_request("name, days and time are required")
    if name is not None and not isinstance(name, str):
        raise _bad_request("name must be a string")
    if time_ is not None and not isinstance(time_, str):
        raise _bad_request("time must be a string")
    days: list[int] | None = None
    if days_raw is not None:
        if not isinstance(days_raw, list):
            raise _bad_request("days must be a list of numbers 0-6 or English day names")
        days = []
        for day in days_raw:
            if isinstance(day, int) and not isinstance(day, bool) and 0 <= day <= 6:
                days.append(day)
            elif isinstance(day, str) and day.capitalize() in DAY_NAMES_EN:
                days.append(DAY_NAMES_EN.index(day.capitalize()))
            else:
                raise _bad_request(f"not a day: {day!r}")
    return name, days, time_


# ---------------------------------------------------------------------- running it


@dataclass
class RunningSandbox:
    """A sandbox serving in this event loop (see :func:`running_sandbox`)."""

    url: str
    sandbox: Sandbox

    @property
    def state(self) -> SandboxState:
        return self.sandbox.state

    @property
    def faults(self) -> Faults:
        return self.sandbox.faults

    @property
    def clock(self) -> SandboxClock:
        """The sandbox's clock: ``set(epoch)`` and ``advance(seconds)`` it directly."""
        return self.sandbox.clock

    @property
    def control_url(self) -> str:
        return self.url.rstrip("/") + CONTROL_PREFIX

    def set_faults(self, **faults: Any) -> None:
        """E.g. ``sb.set_faults(outage="503", latency=0.2)``; see docs/sandbox.md."""
        self.sandbox.set_faults(**faults)

    def clear_faults(self) -> None:
        self.faults.clear()

    def set_clock(self, at: datetime.datetime) -> int:
        """Set the sandbox clock (an aware time) and make the runs now due; returns how many."""
        self.clock.set(at.timestamp())
        return self.sandbox.api.run_schedules()

    def advance_clock(self, seconds: float) -> int:
        """Move the sandbox clock ahead and make the runs now due; returns how many."""
        self.clock.advance(seconds)
        return self.sandbox.api.run_schedules()

    def expire_sessions(self) -> int:
        return self.state.expire_sessions()


def url_of(host: str, port: int) -> str:
    shown = f"[{host}]" if ":" in host else host
    return f"http://{shown}:{port}/"


@contextlib.asynccontextmanager
async def running_sandbox(
    config: SandboxConfig | str | Path | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    state_file: str | Path | None = None,
    clock: Clock = time.time,
) -> AsyncIterator[RunningSandbox]:
    """Serve a sandbox in the current event loop for the duration of the block.

    Use ``sb.state`` and ``sb.faults`` directly from the test; the sync control client would
    block this very loop.
    """
    cfg = config if isinstance(config, SandboxConfig) else load_config(config)
    sandbox = Sandbox(cfg, state_file=Path(state_file) if state_file else None, clock=clock)
    runner = web.AppRunner(sandbox.app(), access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_port = runner.addresses[0][1]
        yield RunningSandbox(url=url_of(host, int(bound_port)), sandbox=sandbox)
    finally:
        await runner.cleanup()
