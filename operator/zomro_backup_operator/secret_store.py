"""Finding the Zomro credentials a resource should use, from Kubernetes Secrets.

A Secret is re-read at most every ``ttl`` seconds, so a rotated Secret is picked up within that
time, and read once however many resources ask for it at the same time: a restart over 10 000
resources asked for one Secret 10 000 times at once, and each handler waited for its own read
(docs/performance.md). The last good value of every Secret is kept in memory: a deletion whose
Secret is already gone (a whole namespace being deleted) can still remove its Zomro schedule.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from zomro_backup_operator.settings import SecretRef
from zomro_backup_operator.zomro.credentials import Credentials

SecretReader = Callable[[str, str], Mapping[str, str] | None]
"""Reads a Secret's ``data`` (base64 values) by namespace and name; None when it does not exist.
Blocking: it runs in a worker thread."""


class CredentialsError(Exception):
    """No usable credentials: no Secret named, Secret missing, or missing keys. No values inside."""


@dataclass
class _Entry:
    credentials: Credentials | None
    error: CredentialsError | None
    read_at: float


def parse_secret(ref: SecretRef, data: Mapping[str, str]) -> Credentials:
    """Turn a Secret's data into Credentials; errors name the keys, never the values."""

    def value(key: str) -> str | None:
        raw = data.get(key)
        if raw is None:
            return None
        try:
            text = base64.b64decode(raw, validate=True).decode("utf-8").strip()
        except (binascii.Error, UnicodeDecodeError):
            text = None
        if text is None:
            # Raised outside the except block: a UnicodeDecodeError holds the secret's bytes.
            raise CredentialsError(f"Secret {ref}: key {key!r} is not valid base64 UTF-8")
        return text or None

    username, password, token = value("username"), value("password"), value("token")
    if username and password:
        return Credentials(username=username, password=password)
    if token:
        return Credentials(token=token)
    # The keys it does hold are not named: the tenant may not be allowed to read the Secret.
    raise CredentialsError(f"Secret {ref} must hold keys 'username' and 'password', or 'token'")


class CredentialStore:
    """Credentials by Secret, re-read every ``ttl`` seconds; ``on_replaced`` is told of the old
    value whenever a Secret is found holding other credentials than before."""

    on_replaced: Callable[[Credentials], Awaitable[None]] | None = None

    def __init__(
        self,
        reader: SecretReader,
        *,
        default: SecretRef | None,
        ttl: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._reader = reader
        self._default = default
        self._ttl = ttl
        self._clock = clock
        self._entries: dict[SecretRef, _Entry] = {}
        self._last_good: dict[SecretRef, Credentials] = {}
        self._reading: dict[SecretRef, asyncio.Task[_Entry]] = {}

    def ref_for(self, namespace: str, secret_name: str | None) -> SecretRef:
        if secret_name:
            return SecretRef(namespace=namespace, name=secret_name)
        if self._default is None:
            raise CredentialsError(
                "spec.credentialsSecretRef is not set and the operator has no default "
                "(ZOMRO_CREDENTIALS_SECRET)"
            )
        return self._default

    async def get(self, ref: SecretRef, *, allow_last_known: bool = False) -> Credentials:
        """Current credentials of ``ref``. With ``allow_last_known``, a Secret that has since
        disappeared still yields the last value this process read from it."""
        entry = self._entries.get(ref)
        if entry is None or self._clock() - entry.read_at >= self._ttl:
            entry = await self._shared_read(ref)
        if entry.credentials is not None:
            return entry.credentials
        if allow_last_known and ref in self._last_good:
            return self._last_good[ref]
        assert entry.error is not None
        raise entry.error

    async def _shared_read(self, ref: SecretRef) -> _Entry:
        """The read of ``ref`` under way, else a new one: callers that come meanwhile share it.
        A caller cancelled while waiting leaves the read to the others."""
        reading = self._reading.get(ref)
        if reading is None:
            reading = self._reading[ref] = asyncio.create_task(
                self._read(ref), name=f"read of Secret {ref}"
            )
            reading.add_done_callback(lambda _: self._reading.pop(ref, None))
        return await asyncio.shield(reading)

    async def _read(self, ref: SecretRef) -> _Entry:
        entry = await self._parsed(ref)
        self._entries[ref] = entry
        return entry

    async def _parsed(self, ref: SecretRef) -> _Entry:
        data = await asyncio.to_thread(self._reader, ref.namespace, ref.name)
        now = self._clock()
        if data is None:
            return _Entry(None, CredentialsError(f"Secret {ref} not found"), now)
        try:
            credentials = parse_secret(ref, data)
        except CredentialsError as exc:
            return _Entry(None, exc, now)
        previous = self._last_good.get(ref)
        self._last_good[ref] = credentials
        if previous is not None and previous != credentials and self.on_replaced is not None:
            await self.on_replaced(previous)
        return _Entry(credentials, None, now)

    def in_use(self, fingerprint: str) -> bool:
        """Whether some Secret's last good value is the credential set with this fingerprint."""
        return any(c.fingerprint == fingerprint for c in self._last_good.values())
