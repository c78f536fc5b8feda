"""The async Zomro API client: the schedule operations, reads, writes, retries and paging.

One HTTP request (rate limit, in-flight bound, throttle pause, size caps) is ``transport.py``'s;
the session, its logins and the redaction of secrets are ``session.py``'s; telling a create's new
row from the listing is ``create_matching.py``'s.

One client per credential set, shared by every caller using that set: it holds the session, the
rate limiter and the throttle pause, so all of them apply to the account as Zomro sees it.

Reads retry retryable errors with capped exponential backoff and full jitter. Writes are sent at
most once (plus one repeat after a refused, expired session, which Zomro did not apply): when their
outcome is unknown they raise :class:`UnknownOutcomeError` and the caller looks before it leaps.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Final

import httpx
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt

from zomro_backup_operator.zomro import backoff, wire
from zomro_backup_operator.zomro.backup_operations import BackupOperations
from zomro_backup_operator.zomro.create_matching import match_created
from zomro_backup_operator.zomro.credentials import Credentials
from zomro_backup_operator.zomro.errors import (
    CreatedNotListedError,
    NotFoundError,
    UnknownOutcomeError,
    ZomroError,
    may_mean_gone,
)
from zomro_backup_operator.zomro.funcs import (
    FUNC_INSTANCES,
    FUNC_SCHEDULE_DELETE,
    FUNC_SCHEDULE_EDIT,
    FUNC_SCHEDULES,
)
from zomro_backup_operator.zomro.models import (
    Instance,
    Schedule,
    ScheduleSpec,
    format_days,
)
from zomro_backup_operator.zomro.session import SessionKeeper
from zomro_backup_operator.zomro.transport import Budget, Transport, pauses

logger = logging.getLogger(__name__)

DEFAULT_BASE_URL: Final = "https://api.zomro.com/"


MAX_PAGES: Final = 100
"""A list longer than this many pages is not one this client asked for."""

RequestHook = Callable[[str, str, float], None]
"""Called after every HTTP request with (func, outcome, seconds); outcome is ``ok`` or an error
class name, so it suits a metrics label."""


@dataclass(frozen=True)
class ClientOptions:
    """Tuning of one client; the defaults are gentle on Zomro.

    ``timeout`` bounds each HTTP request as a whole (connect to last body byte);
    ``max_requests_per_second`` spaces every request evenly, logins included; ``max_in_flight``
    bounds concurrent requests on the session (Zomro refuses a second one "in process");
    ``read_attempts`` and ``backoff_*`` drive read retries and throttle pauses without a
    Retry-After; ``max_response_bytes`` caps what is read of any answer, and
    ``max_listing_bytes`` what one listing reads across all its pages.
    """

    timeout: float = 30.0
    max_requests_per_second: float = 5.0
    max_in_flight: int = 1
    read_attempts: int = 4
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    max_response_bytes: int = wire.MAX_BODY_BYTES
    max_listing_bytes: int = 4 * wire.MAX_BODY_BYTES
    login_refusal_memory: float = 300.0
    """Seconds during which a refused login is answered from memory, not sent again."""

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.max_requests_per_second <= 0:
            raise ValueError("timeout and max_requests_per_second must be positive")
        if self.max_in_flight < 1 or self.read_attempts < 1:
            raise ValueError("max_in_flight and read_attempts must be at least 1")
        if self.backoff_initial < 0 or self.backoff_max < self.backoff_initial:
            raise ValueError("backoff needs 0 <= backoff_initial <= backoff_max")
        if self.max_response_bytes < 1024 or self.max_listing_bytes < 1024:
            raise ValueError("max_response_bytes and max_listing_bytes must be at least 1024")


class ZomroClient(BackupOperations):
    """Typed access to Zomro's backup schedules and backups for one credential set.

    ``transport`` is the test seam (a MockTransport, or a real one wrapped); ``sleep`` and
    ``clock`` (monotonic seconds) are what retries and throttle pauses wait with, and ``random``
    jitters the retries, so tests can control time; ``on_request(func, outcome, seconds)`` is
    called after every HTTP request; ``may_write()`` is asked right before each write request is
    sent, and a False withholds it (:class:`WriteWithheldError`, nothing sent).
    """

    def __init__(
        self,
        credentials: Credentials,
        *,
        base_url: str = DEFAULT_BASE_URL,
        options: ClientOptions | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        on_request: RequestHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        random: backoff.Random = backoff.RANDOM,
        may_write: Callable[[], bool] | None = None,
    ) -> None:
        self._credentials = credentials
        self._options = options or ClientOptions()
        self._sleep = sleep
        self._random = random
        self._transport = Transport(
            base_url=base_url,
            options=self._options,
            transport=transport,
            sleep=sleep,
            clock=clock,
            on_request=on_request,
            redact=self._redact,
            may_write=may_write,
        )
        self._sessions = SessionKeeper(
            credentials,
            self._transport,
            retrying=self._retrying,
            clock=clock,
            login_refusal_memory=self._options.login_refusal_memory,
        )
        self._known_ids: dict[str, frozenset[str]] = {}
        # False once a group delete was seen to fall short (see delete_schedules).
        self._group_deletes = True

    def __repr__(self) -> str:
        return (
            f"ZomroClient(base_url={self._transport.base_url!r}, "
            f"credentials={self._credentials.fingerprint}, "
            f"mode={self._credentials.mode.value})"
        )

    @property
    def fingerprint(self) -> str:
        """The credential set this client serves, as a non-secret id."""
        return self._credentials.fingerprint

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._transport.aclose()

    @property
    def closed(self) -> bool:
        return self._transport.closed

    async def __aenter__(self) -> ZomroClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- operations -----------------------------------------------------------------------

    async def list_instances(self) -> list[Instance]:
        """The account's VPS instances."""
        doc = await self._read_list(FUNC_INSTANCES, {})
        return wire.parse_instances(doc)

    async def list_schedules(self, instance_id: str) -> list[Schedule]:
        """All backup schedules of one instance (an unknown or foreign instance: access denied)."""
        doc = await self._read_list(FUNC_SCHEDULES, {"elid": instance_id})
        schedules = wire.parse_schedules(doc, instance_id=instance_id)
        # Remembered so that a create can tell its own new row from rows that were there before.
        self._known_ids[instance_id] = frozenset(schedule.id for schedule in schedules)
        return schedules

    async def get_schedule(self, instance_id: str, schedule_id: str) -> Schedule | None:
        """One schedule, found by listing (Zomro has no single-schedule read); None if absent."""
        for schedule in await self.list_schedules(instance_id):
            if schedule.id == schedule_id:
                return schedule
        return None

    async def create_schedule(self, instance_id: str, spec: ScheduleSpec) -> Schedule:
        """Create a schedule and return it with its new id.

        Costs one write and, when Zomro's answer carries no id, one list. Ids seen by the last
        listing of this instance are excluded when matching by name.
        """
        [result] = await self.create_schedules(instance_id, [spec])
        if isinstance(result, ZomroError):
            raise result
        return result

    async def create_schedules(
        self,
        instance_id: str,
        specs: Sequence[ScheduleSpec],
        more: Callable[[], Sequence[ScheduleSpec]] = tuple,
    ) -> list[Schedule | ZomroError]:
        """Create several schedules on one instance and learn all their ids with one listing.

        Zomro's create answer carries no id, so each create alone costs a write and a list;
        a batch costs one write each and a single list. Once ``specs`` are sent, ``more`` is
        asked for creates that came up meanwhile; they join the batch, until it has none.
        Results come in the order the specs were sent: the new Schedule (as Zomro lists it,
        its name perhaps changed), or the error of that create (a write is never repeated).
        :class:`CreatedNotListedError` and :class:`AmbiguousResultError` mean Zomro made the
        schedule: never send it again.
        """
        known_before = self._known_ids.get(instance_id)
        results: list[Schedule | ZomroError | None] = []
        sent: list[ScheduleSpec] = []
        while batch := list(specs if not sent else more()):
            for spec in batch:
                sent.append(spec)
                try:
                    results.append(await self._send_create(instance_id, spec))
                except ZomroError as exc:
                    results.append(exc)
        specs = sent
        if all(result is not None for result in results):
            return [result for result in results if result is not None]
        try:
            listed = await self.list_schedules(instance_id)
        except ZomroError as exc:
            lost = CreatedNotListedError(
                f"{FUNC_SCHEDULE_EDIT}: applied, but listing to find the new id failed; "
                "list the instance before trying again"
            )
            lost.__cause__ = exc
            return [lost if result is None else result for result in results]
        taken = {result.id for result in results if isinstance(result, Schedule)}
        final: list[Schedule | ZomroError] = []
        for spec, result in zip(specs, results, strict=True):
            if result is None:
                try:
                    result = match_created(listed, spec, known_before, taken)
                    taken.add(result.id)
                except ZomroError as exc:
                    result = exc
            final.append(result)
        return final

    async def _send_create(self, instance_id: str, spec: ScheduleSpec) -> Schedule | None:
        """One create write: the new Schedule when the answer names its id, else None."""
        doc = await self._write(
            FUNC_SCHEDULE_EDIT,
            {
                "plid": instance_id,
                "name": spec.name,
                "rotation_days": format_days(spec.days),
                "rotation_time": spec.time,
                "sok": "ok",
            },
        )
        try:
            new_id = wire.parse_created_id(doc)
        except ZomroError as exc:
            raise CreatedNotListedError(
                f"{FUNC_SCHEDULE_EDIT}: applied, but the new id in the answer is unreadable; "
                "list the instance before trying again"
            ) from exc
        if new_id is None:
            return None
        return Schedule(
            id=new_id, instance_id=instance_id, name=spec.name, days=spec.days, time=spec.time
        )

    async def update_schedule(self, instance_id: str, schedule_id: str, spec: ScheduleSpec) -> None:
        """Change a schedule in place. A schedule that is gone (confirmed by listing): NotFound."""
        try:
            await self._write(
                FUNC_SCHEDULE_EDIT,
                {
                    "elid": schedule_id,
                    "plid": instance_id,
                    "name": spec.name,
                    "rotation_days": format_days(spec.days),
                    "rotation_time": spec.time,
                    "sok": "ok",
                },
            )
        except ZomroError as exc:
            if may_mean_gone(exc) and await self._confirmed_absent(instance_id, schedule_id):
                raise NotFoundError(
                    f"{FUNC_SCHEDULE_EDIT}: schedule {schedule_id} no longer exists"
                ) from exc
            raise

    async def delete_schedules(
        self, instance_id: str, schedule_ids: Sequence[str]
    ) -> list[ZomroError | None]:
        """Delete several schedules of one instance: one result per id, None once it is gone.

        BILLmanager takes several ids in one ``elid`` (joined with ``", "``), and one call then
        deletes them all. Whether Zomro's schedule delete honours that is unverified, so a group
        call is always followed by a listing, and only what that listing no longer shows counts
        as deleted, whatever the answer said. Ids still listed are deleted one at a time. A group
        Zomro acknowledged but did not carry out in full, or refused for good while every id in
        it existed, makes this client delete one at a time from then on.
        """
        if len(schedule_ids) < 2 or not self._group_deletes:
            return [await self._delete_one(instance_id, sid) for sid in schedule_ids]
        refusal: ZomroError | None = None
        try:
            await self._write(FUNC_SCHEDULE_DELETE, {"elid": ", ".join(schedule_ids)})
        except ZomroError as exc:
            refusal = exc
        try:
            listed = {schedule.id for schedule in await self.list_schedules(instance_id)}
        except ZomroError as exc:  # what the group did is unknown: each caller looks again
            return [exc for _ in schedule_ids]
        left = [sid for sid in schedule_ids if sid in listed]
        if left and (refusal is None or (not refusal.retryable and left == list(schedule_ids))):
            self._group_deletes = False
            logger.info(
                "zomro %s: a group of %d ids left %d listed; deleting one at a time from now on",
                FUNC_SCHEDULE_DELETE,
                len(schedule_ids),
                len(left),
            )
        results: dict[str, ZomroError | None] = dict.fromkeys(schedule_ids)
        for sid in left:
            results[sid] = await self._delete_one(instance_id, sid)
        return [results[sid] for sid in schedule_ids]

    async def _delete_one(self, instance_id: str, schedule_id: str) -> ZomroError | None:
        try:
            await self.delete_schedule(instance_id, schedule_id)
        except ZomroError as exc:
            return exc
        return None

    async def delete_schedule(self, instance_id: str, schedule_id: str) -> None:
        """Delete a schedule. One already gone counts as deleted, once a listing confirms it."""
        try:
            await self._write(FUNC_SCHEDULE_DELETE, {"elid": schedule_id})
        except ZomroError as exc:
            if may_mean_gone(exc) and await self._confirmed_absent(instance_id, schedule_id):
                logger.debug("zomro %s: schedule already gone", FUNC_SCHEDULE_DELETE)
                return
            raise

    # --- create and delete helpers --------------------------------------------------------

    async def _confirmed_absent(self, instance_id: str, schedule_id: str) -> bool:
        """True only when a listing shows the schedule is not there."""
        try:
            return await self.get_schedule(instance_id, schedule_id) is None
        except ZomroError:
            return False

    # --- reads and writes -----------------------------------------------------------------

    async def _read_list(self, func: str, fields: Mapping[str, str]) -> wire.Doc:
        """A list read. If Zomro paged it (``p_cnt`` set, ``p_elems`` above the rows received),
        the remaining pages are fetched too and the rows merged, each id once. All pages together
        read at most ``max_listing_bytes``: an endpoint cannot grow memory page after page."""
        budget = Budget(self._options.max_listing_bytes)
        doc = await self._read(func, fields, budget=budget)
        page = wire.paging(doc)
        if page is None:
            return doc
        total, page_size = page
        rows = wire.rows(doc, func=func)
        if len(rows) >= total or page_size <= 0:
            return doc
        pages = min(-(-total // page_size), MAX_PAGES)
        for number in range(2, pages + 1):
            more = await self._read(
                func, {**fields, "p_cnt": str(page_size), "p_num": str(number)}, budget=budget
            )
            rows += wire.rows(more, func=func)
        seen: set[str] = set()
        merged: list[dict[str, object]] = []
        for row in rows:
            key = wire.scalar(row.get("id")) or f"#{len(merged)}"
            if key not in seen:
                seen.add(key)
                merged.append(row)
        return {**doc, "elem": merged}

    async def _read(
        self, func: str, fields: Mapping[str, str], *, budget: Budget | None = None
    ) -> wire.Doc:
        """An idempotent call, retried with capped exponential backoff and full jitter."""
        async for attempt in self._retrying(func):
            with attempt:
                return await self._sessions.call(func, fields, write=False, budget=budget)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _retrying(self, func: str, *, attempts: int | None = None) -> AsyncRetrying:
        return AsyncRetrying(
            stop=stop_after_attempt(attempts or self._options.read_attempts),
            wait=self._retry_delay,
            retry=retry_if_exception(self._worth_retrying),
            sleep=self._sleep,
            before_sleep=lambda state: logger.debug(
                "zomro %s: attempt %d failed, retrying", func, state.attempt_number
            ),
            reraise=True,
        )

    async def _write(self, func: str, fields: Mapping[str, str]) -> wire.Doc:
        """A call that changes state: sent once; an unknown outcome raises, never repeats."""
        doc = await self._sessions.call(func, fields, write=True)
        if not wire.is_acknowledged(doc):
            raise UnknownOutcomeError(
                f"{func}: the answer neither confirms nor refuses the change; "
                "look at Zomro's state before trying again"
            )
        return doc

    def _worth_retrying(self, exc: BaseException) -> bool:
        if not isinstance(exc, ZomroError) or not exc.retryable:
            return False
        # A wait longer than our own longest backoff is the caller's to schedule, not ours.
        return exc.retry_after is None or exc.retry_after <= self._options.backoff_max

    def _retry_delay(self, state: RetryCallState) -> float:
        delay = backoff.delay(
            state.attempt_number - 1,
            self._options.backoff_initial,
            self._options.backoff_max,
            random=self._random,
        )
        exc = state.outcome.exception() if state.outcome is not None else None
        # Throttles pause the whole client: that pause is waited in _send, not added here.
        if isinstance(exc, ZomroError) and exc.retry_after is not None and not pauses(exc):
            delay = max(delay, exc.retry_after)
        return delay

    def _redact(self, text: str) -> str:
        """The transport's redaction: the session keeper knows every secret of this client."""
        return self._sessions.redact(text)
