"""One HTTP request to Zomro: rate-limited, serialised, size-capped, and held back during the
throttle pause that every call of a credential set shares; failures below Zomro's document
become ZomroErrors (an unknown outcome for a write that may have been applied)."""

from __future__ import annotations

import asyncio
import functools
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx
from aiolimiter import AsyncLimiter

from zomro_backup_operator.zomro import backoff, wire
from zomro_backup_operator.zomro.errors import (
    LoginTemporarilyBlockedError,
    ServerError,
    ThrottledError,
    UnknownOutcomeError,
    WriteWithheldError,
    ZomroConnectionError,
    ZomroError,
    ZomroTimeoutError,
)
from zomro_backup_operator.zomro.models import parse_count

if TYPE_CHECKING:
    from zomro_backup_operator.zomro.client import ClientOptions, RequestHook

logger = logging.getLogger("zomro_backup_operator.zomro.client")


@dataclass
class Budget:
    """Bytes that one listing may still read, across all its pages."""

    remaining: int


class Transport:
    """The HTTP side of one client: its connection pool, rate limiter, in-flight bound and pause.

    ``redact`` removes the secrets of the session from error text Zomro echoes; ``may_write``,
    if given, is asked right before each write is sent (after every wait) and a False withholds
    it."""

    def __init__(
        self,
        *,
        base_url: str,
        options: ClientOptions,
        transport: httpx.AsyncBaseTransport | None,
        sleep: Callable[[float], Awaitable[None]],
        clock: Callable[[], float],
        on_request: RequestHook | None,
        redact: Callable[[str], str],
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self._options = options
        self._may_write = may_write
        self._sleep = sleep
        self._clock = clock
        self._on_request = on_request
        self._redact = redact
        self._http = httpx.AsyncClient(
            base_url=base_url,
            transport=transport,
            timeout=httpx.Timeout(options.timeout),
            follow_redirects=False,
            verify=tls_context(),
            # Identity keeps a compressed body from inflating past the size cap in one chunk.
            headers={"Accept": "application/json", "Accept-Encoding": "identity"},
        )
        # Capacity 1: requests are spaced evenly, never sent in bursts.
        self._limiter = AsyncLimiter(1, 1.0 / options.max_requests_per_second)
        self._in_flight = asyncio.Semaphore(options.max_in_flight)
        self._paused_until = 0.0
        self._throttle_streak = 0

    @property
    def base_url(self) -> str:
        """The endpoint, without any user, password or query it was given."""
        return str(self._http.base_url.copy_with(username=None, password=None, query=None))

    async def aclose(self) -> None:
        await self._http.aclose()

    @property
    def closed(self) -> bool:
        return self._http.is_closed

    async def send(
        self,
        func: str,
        fields: Mapping[str, str],
        *,
        write: bool,
        budget: Budget | None = None,
    ) -> tuple[wire.Doc, wire.ErrorInfo | None]:
        """One rate-limited, serialised HTTP request: Zomro's ``doc`` and its error, if any.

        Failures below Zomro's document (HTTP status, transport, body) raise here; for a write,
        those after the request may have been applied raise :class:`UnknownOutcomeError`.
        """
        data = {"func": func, "out": "json", "lang": "en", **fields}
        async with self._in_flight:
            await self._wait_while_paused(func)
            await self._limiter.acquire()
            if write and self._may_write is not None and not self._may_write():
                raise WriteWithheldError(f"{func}: not sent, this process may not write now")
            started = time.perf_counter()
            outcome = "interrupted"  # stays so only if the request is cancelled
            try:
                doc = await self._exchange(func, data, write=write, budget=budget)
                info = wire.read_error(doc, redact=self._redact)
                if info is not None:
                    outcome = type(wire.to_exception(info, func=func)).__name__
                else:
                    outcome = "ok"
                self._throttle_streak = 0
                return doc, info
            except ZomroError as exc:
                outcome = type(exc).__name__
                if pauses(exc):
                    self.pause(func, exc)
                raise
            finally:
                self._report(func, outcome, time.perf_counter() - started)

    async def _exchange(
        self, func: str, data: Mapping[str, str], *, write: bool, budget: Budget | None
    ) -> wire.Doc:
        try:
            async with asyncio.timeout(self._options.timeout):
                async with self._http.stream("POST", "", data=data) as response:
                    error = wire.status_error(response.status_code, response.headers, func=func)
                    if error is not None:
                        raise error
                    body = await self._read_body(response, func, budget)
            return wire.decode_document(body, func=func)
        except (ServerError, ZomroTimeoutError) as exc:
            # A 5xx, a gateway timeout or a garbled answer: the write may have been applied.
            if write:
                raise _unknown_outcome(func, "the answer was an error or unreadable") from exc
            raise
        except ZomroError:
            raise
        except (TimeoutError, httpx.HTTPError) as exc:
            failure = _transport_failure(func, exc, write=write)
        # Raised here, outside the except block: httpx's error holds the request, whose body
        # holds the password or session id, and it must not ride along as __context__.
        raise failure

    async def _read_body(self, response: httpx.Response, func: str, budget: Budget | None) -> bytes:
        cap = self._options.max_response_bytes
        if budget is not None and budget.remaining < cap:
            cap = budget.remaining
            too_big = f"{func}: listing larger than {self._options.max_listing_bytes} bytes"
        else:
            too_big = f"{func}: answer larger than {cap} bytes"
        declared = parse_count(response.headers.get("content-length", ""))
        if declared is not None and declared > cap:
            raise ServerError(too_big)
        body = bytearray()
        async for chunk in response.aiter_bytes():
            body += chunk
            if len(body) > cap:
                raise ServerError(too_big)
        if budget is not None:
            budget.remaining -= len(body)
        return bytes(body)

    def pause(self, func: str, exc: ZomroError) -> None:
        """Hold every call of this client until Zomro's retry-after (or a backoff) has passed."""
        self._throttle_streak += 1
        if exc.retry_after is None:
            exc.retry_after = backoff.ceiling(
                self._throttle_streak - 1,
                max(self._options.backoff_initial, 0.1),
                self._options.backoff_max,
            )
        until = self._clock() + exc.retry_after
        if until > self._paused_until:
            self._paused_until = until
        logger.debug("zomro %s: throttled, pausing all calls for %.1fs", func, exc.retry_after)

    async def _wait_while_paused(self, func: str) -> None:
        """Wait out a short pause; refuse at once (nothing sent) during a long one, so that a
        caller is not held for minutes and can schedule its own retry."""
        # Sleeps once per pause; sleeps again only if the pause was extended meanwhile, so an
        # injected sleep that does not pass time cannot make this spin.
        while True:
            until = self._paused_until
            remaining = until - self._clock()
            if remaining <= 0:
                return
            if remaining > self._options.backoff_max:
                raise ThrottledError(
                    f"{func}: not sent, Zomro asked this client to pause for {remaining:.0f}s more",
                    retry_after=remaining,
                )
            await self._sleep(remaining)
            if self._paused_until == until:
                return

    def _report(self, func: str, outcome: str, seconds: float) -> None:
        logger.debug("zomro %s -> %s in %.3fs", func, outcome, seconds)
        if self._on_request is None:
            return
        try:
            self._on_request(func, outcome, seconds)
        except Exception:
            logger.exception("zomro on_request hook failed")


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default certificate verification (its CA bundle, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR``), built once per process and shared by every client: built per client, it
    loads the whole CA bundle again each time (tens of milliseconds and its memory)."""
    return httpx.create_ssl_context()


def pauses(exc: ZomroError) -> bool:
    """Errors that concern the whole credential set, not one call."""
    return isinstance(exc, ThrottledError | LoginTemporarilyBlockedError)


def _transport_failure(
    func: str, exc: TimeoutError | httpx.HTTPError, *, write: bool
) -> ZomroError:
    """The error a failure below HTTP means; the original is not chained (it holds the request)."""
    if isinstance(exc, httpx.ConnectError):
        # Nothing was sent, so nothing was applied: safe to report as a plain failure.
        return ZomroConnectionError(f"{func}: cannot connect to Zomro")
    if isinstance(exc, httpx.ConnectTimeout | httpx.PoolTimeout):
        return ZomroTimeoutError(f"{func}: no connection to Zomro in time")
    if isinstance(exc, TimeoutError | httpx.TimeoutException):
        if write:
            return _unknown_outcome(func, "no answer in time")
        return ZomroTimeoutError(f"{func}: no answer from Zomro in time")
    if write:
        return _unknown_outcome(func, "the connection failed mid-request")
    return ZomroConnectionError(f"{func}: connection to Zomro failed ({type(exc).__name__})")


def _unknown_outcome(func: str, why: str) -> UnknownOutcomeError:
    return UnknownOutcomeError(
        f"{func}: {why}; the change may or may not have been applied, "
        "look at Zomro's state before trying again"
    )
