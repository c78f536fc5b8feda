"""The session of one credential set: logging in, renewing a refused session once, the memory of
a refused login, token mode, and the redaction of every secret the client knows.

:class:`SessionKeeper` is what :class:`~zomro_backup_operator.zomro.client.ZomroClient` sends
each logical call through; the HTTP request itself is ``transport.py``'s.
"""

from __future__ import annotations

import asyncio
import logging
import re
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from tenacity import AsyncRetrying

from zomro_backup_operator.zomro import wire
from zomro_backup_operator.zomro.credentials import AuthMode, Credentials
from zomro_backup_operator.zomro.errors import AuthenticationError, TokenExpiredError
from zomro_backup_operator.zomro.funcs import FUNC_AUTH, FUNC_INSTANCES
from zomro_backup_operator.zomro.transport import Budget, Transport, pauses

logger = logging.getLogger("zomro_backup_operator.zomro.client")


class Retrying(Protocol):
    """The client's retry policy for one call (``attempts`` None: as many as a read gets)."""

    def __call__(self, func: str, *, attempts: int | None = None) -> AsyncRetrying: ...


@dataclass(eq=False)
class _Session:
    """The current session id. Not a frozen value: never printed, compared by identity."""

    sid: str

    def __repr__(self) -> str:
        return "_Session(<redacted>)"


class SessionKeeper:
    """The session one client's calls share, and the logins that make it.

    One login at a time: concurrent callers that find no session, or the same one refused, wait
    for one login instead of sending their own. A login Zomro refused for good is answered from
    memory for ``login_refusal_memory`` seconds of ``clock``. With a token there is no login:
    the token is the session until Zomro refuses it.
    """

    def __init__(
        self,
        credentials: Credentials,
        transport: Transport,
        *,
        retrying: Retrying,
        clock: Callable[[], float],
        login_refusal_memory: float,
    ) -> None:
        self._credentials = credentials
        self._transport = transport
        self._retrying = retrying
        self._clock = clock
        self._login_refusal_memory = login_refusal_memory
        self._login_lock = asyncio.Lock()
        self._session: _Session | None = None
        if credentials.mode is AuthMode.TOKEN and credentials.token:
            self._session = _Session(credentials.token)
        self._retired_sids: list[str] = []
        self._login_refused: tuple[AuthenticationError, float] | None = None

    async def call(
        self,
        func: str,
        fields: Mapping[str, str],
        *,
        write: bool,
        budget: Budget | None = None,
    ) -> wire.Doc:
        """One logical call on the session, renewing an expired session once."""
        # Reads are retried as a whole; a write is not, so the login before it retries itself.
        session, fresh = await self._current(retry_login=write)
        doc, info = await self._transport.send(
            func, {**fields, "auth": session.sid}, write=write, budget=budget
        )
        if info is None:
            return doc
        if info.is_session_problem:
            if self._credentials.mode is AuthMode.TOKEN:
                await self._raise_for_token(func, info)
            elif not fresh:
                logger.debug("zomro %s: session refused, logging in again", func)
                session = await self._renew(session, retry_login=write)
                doc, info = await self._transport.send(
                    func, {**fields, "auth": session.sid}, write=write, budget=budget
                )
                if info is None:
                    return doc
        raise wire.to_exception(info, func=func)

    async def _raise_for_token(self, func: str, info: wire.ErrorInfo) -> None:
        """With a token there is nothing to renew: tell an expired token from a real refusal."""
        if not info.says_expired:
            probe_session, _ = await self._current()
            _, probe = await self._transport.send(
                FUNC_INSTANCES, {"auth": probe_session.sid}, write=False
            )
            if probe is None:
                raise wire.to_exception(info, func=func)
        raise TokenExpiredError(f"{func}: the session token is no longer valid; replace it")

    async def _current(self, *, retry_login: bool = False) -> tuple[_Session, bool]:
        """The session to use, logging in first if there is none; True if it is brand new."""
        session = self._session
        if session is not None:
            return session, False
        async with self._login_lock:
            if self._session is not None:
                return self._session, False
            self._session = await self._login(retried=retry_login)
            return self._session, True

    async def _renew(self, stale: _Session, *, retry_login: bool) -> _Session:
        """Replace a refused session, once for all callers that saw it refused."""
        async with self._login_lock:
            if self._session is not None and self._session is not stale:
                return self._session
            self._retire(stale)
            self._session = None
            self._session = await self._login(retried=retry_login)
            return self._session

    async def _login(self, *, retried: bool) -> _Session:
        refused = self._login_refused
        if refused is not None and self._clock() < refused[1]:
            # Zomro blocks an IP after repeated failed logins, and every tenant's logins leave
            # from the operator's one IP: a refused credential set is not tried again for a while.
            raise type(refused[0])(refused[0].message)
        username = self._credentials.username or ""
        password = self._credentials.password or ""
        # Logging in changes nothing at Zomro: when it serves a write (which is never repeated),
        # a failed login is retried here like a read.
        async for attempt in self._retrying(FUNC_AUTH, attempts=None if retried else 1):
            with attempt:
                doc, info = await self._transport.send(
                    FUNC_AUTH, {"username": username, "password": password}, write=False
                )
        if info is not None:
            error = wire.to_exception(info, func=FUNC_AUTH)
            if pauses(error):
                self._transport.pause(FUNC_AUTH, error)
            if isinstance(error, AuthenticationError) and not error.retryable:
                self._login_refused = (error, self._clock() + self._login_refusal_memory)
            raise error
        self._login_refused = None
        session = _Session(wire.parse_session_id(doc))
        if logger.isEnabledFor(logging.DEBUG):  # the fingerprint is slow to compute, on purpose
            logger.debug("zomro %s: new session for %s", FUNC_AUTH, self._credentials.fingerprint)
        return session

    def _retire(self, session: _Session) -> None:
        """Keep the last four old session ids only so that they can still be redacted."""
        self._retired_sids = [*self._retired_sids[-3:], session.sid]

    def redact(self, text: str) -> str:
        """Remove every secret this client knows from server text, also when the server echoed
        it URL-encoded (it came to Zomro as a form field) or in another case."""
        secrets = [*self._credentials.secrets(), *self._retired_sids]
        if self._session is not None:
            secrets.append(self._session.sid)
        forms = {
            form
            for secret in secrets
            if secret
            for form in (
                secret,
                urllib.parse.quote(secret, safe=""),
                urllib.parse.quote_plus(secret, safe=""),
            )
        }
        if not forms:
            return text
        # Longest first, so that a secret is never half replaced by a shorter one inside it.
        pattern = "|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True))
        return re.sub(pattern, "<redacted>", text, flags=re.IGNORECASE)
