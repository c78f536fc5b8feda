"""Zomro's answers as they came over the wire, kept for the doctor to check their shapes.

A transport wrapped around the real one, so the client is used unchanged through its public
``transport`` seam. The login's answer (it holds the session id) is never kept, and nothing of
the requests is kept but their ``func``: they carry passwords and session ids.
"""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import httpx

from zomro_backup_operator.zomro import wire
from zomro_backup_operator.zomro.errors import ZomroError
from zomro_backup_operator.zomro.transport import tls_context

_NOT_KEPT = "auth"


@dataclass
class RawAnswer:
    """One HTTP exchange: the function called, the status, the body as the client read it."""

    func: str
    started: float
    finished: float | None = None
    status: int | None = None
    body: bytearray = field(default_factory=bytearray, repr=False)

    def doc(self) -> wire.Doc | None:
        """The body parsed with the client's own decoder; None when it is not Zomro's JSON."""
        if self.status != 200 or self.func == _NOT_KEPT:
            return None
        try:
            return wire.decode_document(bytes(self.body), func=self.func)
        except ZomroError:
            return None

    def overlaps(self, other: RawAnswer) -> bool:
        """True when both requests were in flight at the same moment."""
        if self.finished is None or other.finished is None:
            return False
        return self.started < other.finished and other.started < self.finished


class AnswerRecorder(httpx.AsyncBaseTransport):
    """Passes every request to ``inner`` and records what came back."""

    def __init__(self, inner: httpx.AsyncBaseTransport | None = None) -> None:
        self._inner = inner or httpx.AsyncHTTPTransport(verify=tls_context())
        self.answers: list[RawAnswer] = []

    def since(self, mark: int, func: str) -> list[RawAnswer]:
        """The answers to ``func`` recorded after ``mark`` (an earlier length of ``answers``)."""
        return [answer for answer in self.answers[mark:] if answer.func == func]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        answer = RawAnswer(func=_func_of(request), started=time.monotonic())
        self.answers.append(answer)
        try:
            response = await self._inner.handle_async_request(request)
        except BaseException:
            answer.finished = time.monotonic()
            raise
        answer.status = response.status_code
        return httpx.Response(
            status_code=response.status_code,
            headers=response.headers,
            stream=_Tee(response.stream, answer),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Tee(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream | httpx.SyncByteStream, answer: RawAnswer):
        self._inner = inner
        self._answer = answer

    async def __aiter__(self) -> AsyncIterator[bytes]:
        assert isinstance(self._inner, httpx.AsyncByteStream)
        async for chunk in self._inner:
            if self._answer.func != _NOT_KEPT and len(self._answer.body) <= wire.MAX_BODY_BYTES:
                self._answer.body += chunk
            yield chunk

    async def aclose(self) -> None:
        self._answer.finished = time.monotonic()
        assert isinstance(self._inner, httpx.AsyncByteStream)
        await self._inner.aclose()


def _func_of(request: httpx.Request) -> str:
    """The ``func`` form field of a request the client sent (urlencoded); nothing else is read."""
    try:
        fields = urllib.parse.parse_qs(request.content.decode("utf-8", "replace"))
    except httpx.RequestNotRead:
        return ""
    return (fields.get("func") or [""])[0]
