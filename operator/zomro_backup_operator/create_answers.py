"""Creates whose answer outlasts their handler, and handler calls that wait their turn.

Zomro's answer to a create is the listing after it, which tells the new schedule's id; with
many creates queued on one credential set it comes after all of them (each instance's batch
shares one listing). A create's handler waits for it at most ZOMRO_CREATE_WAIT_SECONDS, then
hands it over here and ends: kopf keeps about 40 KB for every handler under way (its worker,
the body, the cause, the patch), which a mass apply of 10 000 held until the last listing
(docs/performance.md). Here the answer's outcome is written to status as the handler would have
(``handling.conclude``: the id, Ready, the Event), and a failure is retried after its backoff,
through ``handling.ensure`` as kopf would, with the status it writes put there by this module.

A handler whose instance has another decision under way (a mass apply: every resource of the
instance waits for the instance's lock, and for its intent write) is deferred here too: the
same call runs in the background, in its turn, and the handler ends at once.

A retry stops once the resource is gone, being deleted, or has a newer generation: kopf's
handlers own it then. The intent written before the create (status.pendingCreate) keeps all of
this crash-safe: after a restart, the resume handler finds the create's schedule.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections import Counter
from collections.abc import Callable, Coroutine
from typing import Any

import kopf
import kubernetes

from zomro_backup_operator import handling
from zomro_backup_operator.handling import Answer, HandlerCall
from zomro_backup_operator.runtime import Runtime

logger = logging.getLogger(__name__)

WRITE_RETRY_SECONDS = 5.0
"""After a failed write of an outcome, when to decide again."""

Latest = Callable[[HandlerCall], HandlerCall | None]
"""The resource as kopf's index holds it now, at the same generation; None when it is gone,
being deleted, or changed (kopf's handlers take it from there)."""


class CreateAnswers:
    """The answers handed over by create handlers, each awaited in a task of its own."""

    def __init__(self, rt: Runtime, latest: Latest, *, sleep: Any = asyncio.sleep) -> None:
        self._rt = rt
        self._latest = latest
        self._sleep = sleep
        self._tasks: set[asyncio.Task[None]] = set()
        self._context: contextvars.Context | None = None
        self._held: Counter[tuple[str, int]] = Counter()
        """(uid, generation) of the answers awaited and the calls deferred now (not counting
        the retries after them)."""

    def take(self, answer: Answer) -> None:
        self._hold(answer.res)
        self._spawn(self._complete(answer), answer.res.key)

    def defer(self, res: HandlerCall, retry: int, turn: asyncio.Lock) -> None:
        self._hold(res)
        self._spawn(self._deferred(res, retry, turn), res.key)

    def awaits(self, uid: str, generation: int) -> bool:
        return self._held[uid, generation] > 0

    @property
    def pending(self) -> int:
        return len(self._tasks)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def _spawn(self, work: Coroutine[Any, Any, None], key: str) -> None:
        # A task inherits its creator's context, and a handler's holds kopf's cause (the whole
        # body) for as long as the task runs. All tasks here share the first hand-over's copy:
        # one cause kept, and kopf's Event queue, which kopf.event needs, reachable.
        if self._context is None:
            self._context = contextvars.copy_context()
        task = asyncio.create_task(
            work, name=f"answer to the create of {key}", context=self._context
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _hold(self, res: HandlerCall) -> None:
        self._held[res.uid, res.generation] += 1

    def _release(self, res: HandlerCall) -> None:
        self._held[res.uid, res.generation] -= 1
        if self._held[res.uid, res.generation] <= 0:
            del self._held[res.uid, res.generation]

    async def _complete(self, answer: Answer) -> None:
        try:
            async with answer.lease:
                delay = await self._written(answer.res, handling.conclude(self._rt, answer))
        finally:
            self._release(answer.res)
        await self._retried(answer.res, answer.retry, delay)

    async def _deferred(self, res: HandlerCall, retry: int, turn: asyncio.Lock) -> None:
        try:
            async with turn:
                pass  # the decisions under way first
            # The resource as it is now: the handler's own end (kopf's patch) moved its version,
            # on which the intent to create is written.
            latest = self._latest(res)
            if latest is None:
                return
            delay = await self._written(
                latest, handling.ensure(self._rt, latest, retry, answers=self)
            )
        finally:
            self._release(res)
        await self._retried(latest, retry, delay)

    async def _retried(self, res: HandlerCall, retry: int, delay: float | None) -> None:
        while delay is not None:
            await self._sleep(delay)
            retry += 1
            latest = self._latest(res)
            if latest is None:
                return
            res = latest
            delay = await self._written(res, handling.ensure(self._rt, res, retry, answers=self))

    async def _written(self, res: HandlerCall, work: Coroutine[Any, Any, None]) -> float | None:
        """Runs a handler's work and writes the status it put into its patch, as kopf would;
        returns the seconds until it is to be tried again (None: done)."""
        patch = res.patch  # a hand-over during the work gives the call a patch of its own
        delay: float | None = None
        try:
            await work
        except kopf.TemporaryError as exc:
            delay = exc.delay if exc.delay is not None else 60.0
        except kopf.PermanentError:
            pass
        except Exception:  # not one of ours: the resume handler looks again after a restart
            logger.exception("Completing the create of %s failed", res.key)
        status = dict(patch.get("status") or {})
        if not status:
            return delay
        try:
            await asyncio.to_thread(
                self._rt.kube.patch_status, res.namespace, res.name, status, uid=res.uid
            )
        except kubernetes.client.ApiException as exc:
            if exc.status in (404, 409, 422):  # gone, or another resource of that name now
                return None
            logger.warning("Writing the outcome of the create of %s failed", res.key, exc_info=True)
        except Exception:
            logger.warning("Writing the outcome of the create of %s failed", res.key, exc_info=True)
        else:
            return delay
        # Decided again from the resource as it is then: the schedule made is found and adopted.
        return max(delay or 0.0, WRITE_RETRY_SECONDS)


def of(memo: Any) -> CreateAnswers:
    answers = memo.answers
    assert isinstance(answers, CreateAnswers)
    return answers
