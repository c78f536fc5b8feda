"""kopf's session to the API server: a pool bounded by the watch streams plus the requests."""

from __future__ import annotations

import kopf
import pytest

from zomro_backup_operator.kube_session import bounded_session, connection_limit
from zomro_backup_operator.settings import Settings


def test_the_bound_is_one_stream_per_kind_and_namespace_plus_the_requests() -> None:
    assert connection_limit([], 32) == 3 + 32  # cluster-wide: one stream per kind
    assert connection_limit(["team-a", "team-b"], 32) == 6 + 32
    assert Settings.from_env({"ZOMRO_KUBE_CONNECTIONS": "8"}).kube_connections == 8
    assert Settings.from_env({}).kube_connections == 32


@pytest.mark.parametrize("pattern", ["team-*", "team-?", "team-[ab]", "!kube-system"])
def test_namespace_patterns_leave_the_pool_unbounded(pattern: str) -> None:
    # How many namespaces, and so watch streams, a pattern matches is only known later: a bound
    # could leave a stream waiting for a connection that the others never give back.
    assert connection_limit(["team-a", pattern], 32) is None


async def test_the_session_keeps_the_logins_server_headers_and_bound() -> None:
    info = kopf.ConnectionInfo(
        server="https://127.0.0.1:6443", token="t0ken", default_namespace="team"
    )
    bounded = bounded_session(info, 35)
    assert isinstance(bounded, kopf.AiohttpSession)
    try:
        assert (bounded.server, bounded.default_namespace) == (info.server, "team")
        assert bounded.aiohttp_session.connector is not None
        assert bounded.aiohttp_session.connector.limit == 35
        assert bounded.aiohttp_session.headers["Authorization"] == "Bearer t0ken"
    finally:
        await bounded.aiohttp_session.close()
    assert bounded_session(info, None) is info  # kopf's own session
