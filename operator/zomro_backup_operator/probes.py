"""The kubelet's probes, served by the operator itself from the moment it starts: a standby runs
no kopf, so kopf's own liveness endpoint would not exist there.

``--liveness http://HOST:PORT/PATH`` serves liveness on PATH and readiness on ``/readyz`` of the
same port. Both answer JSON with ``role`` (``leader``, ``standby`` or ``standalone``), so that
either tells whether this replica leads. They run in the operator's event loop: a loop that no
longer answers fails them.

- liveness: 200 unless the process is wedged (for a standby: its election thread has died);
- readiness: 200 while the replica is fit for its role: a leader (or a standalone operator) once
  kopf has started, a standby while the API server answers its Lease requests (it could take
  over). A healthy standby is Ready on purpose (docs/design.md: with "Ready = leads" a rollout
  never completes and a PodDisruptionBudget never lets the leader be evicted).
"""

from __future__ import annotations

import asyncio
import urllib.parse
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web

READINESS_PATH = "/readyz"


class Candidate(Protocol):
    """What the probes ask of leader election (leader_election.Leadership)."""

    @property
    def leading(self) -> bool: ...

    @property
    def alive(self) -> bool: ...

    @property
    def in_contact(self) -> bool: ...


@dataclass(frozen=True)
class Health:
    live: bool
    ready: bool
    role: str


def health(candidate: Candidate | None, *, operating: bool) -> Health:
    """The probes' answer; ``operating``: kopf has started (its startup handlers are done)."""
    if candidate is None:
        return Health(live=True, ready=operating, role="standalone")
    if candidate.leading:
        return Health(live=True, ready=operating, role="leader")
    alive = candidate.alive
    return Health(live=alive, ready=alive and candidate.in_contact, role="standby")


class Probes:
    """The probe server; ``operating`` is set once kopf has started."""

    def __init__(self, candidate: Candidate | None) -> None:
        self._candidate = candidate
        self.operating = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def start(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.port:
            raise ValueError(f"--liveness must be http://HOST:PORT/PATH, got {url!r}")
        app = web.Application()
        app.router.add_get(parts.path or "/", self._liveness)
        app.router.add_get(READINESS_PATH, self._readiness)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, parts.hostname or "0.0.0.0", parts.port).start()  # noqa: S104

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def _health(self) -> Health:
        return health(self._candidate, operating=self.operating.is_set())

    async def _liveness(self, request: web.Request) -> web.Response:
        state = self._health()
        return web.json_response({"role": state.role}, status=200 if state.live else 503)

    async def _readiness(self, request: web.Request) -> web.Response:
        state = self._health()
        return web.json_response(
            {"role": state.role, "ready": state.ready}, status=200 if state.ready else 503
        )
