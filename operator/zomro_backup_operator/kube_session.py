"""kopf's HTTP session to the API server, with a bounded connection pool.

kopf's own session has no bound: each concurrent request opens a TLS connection of its own, and
each holds a 256 KiB buffer (asyncio's SSL protocol) until it is closed. A mass apply of 2000
resources had about 280 open at once, 70 MiB of the operator's 264 MiB peak (memray,
docs/performance.md). Requests beyond the bound wait for a free connection; a watch stream holds
its connection for as long as it runs, so the bound is the watch streams plus
``ZOMRO_KUBE_CONNECTIONS``. With namespace patterns (globs) the number of streams is not known in
advance, and the pool stays unbounded.
"""

from __future__ import annotations

from collections.abc import Sequence

import aiohttp
import kopf

WATCHED_KINDS = 3
"""BackupSchedule, Backup and BackupRetention: one watch stream each per namespace."""


def connection_limit(namespaces: Sequence[str], requests: int) -> int | None:
    """The pool's bound for ``namespaces`` (empty: cluster-wide), or None when patterns make the
    number of watch streams unknown."""
    if any(char in name for name in namespaces for char in "*?[!"):
        return None
    return WATCHED_KINDS * max(len(namespaces), 1) + requests


def bounded_session(
    info: kopf.ConnectionInfo, limit: int | None
) -> kopf.ConnectionInfo | kopf.AiohttpSession:
    """The login's connection info, as a session whose pool holds at most ``limit``
    connections (None: kopf's own session, unbounded)."""
    if limit is None:
        return info
    session = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=limit, ssl=info.as_ssl_context()),
        headers=info.as_http_headers(),
        proxy=info.proxy_url,
        trust_env=info.trust_env,
    )
    return kopf.AiohttpSession(
        server=info.server,
        default_namespace=info.default_namespace,
        priority=info.priority,
        expiration=info.expiration,
        aiohttp_session=session,
    )
