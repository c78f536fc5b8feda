"""The operator's logging at ZOMRO_LOG_LEVEL=DEBUG: what the HTTP libraries know stays out."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.process

SESSION = "5e551on1d0f7e57"

# A real login over loopback with the operator's own logging set up: the server's answer sets a
# cookie holding the session id, as a web application's login may.
SCRIPT = textwrap.dedent(
    f"""
    import asyncio, logging
    from aiohttp import web
    from zomro_backup_operator.run_command import configure_logging
    from zomro_backup_operator.settings import Settings
    from zomro_backup_operator.zomro.client import ZomroClient
    from zomro_backup_operator.zomro.credentials import Credentials

    async def answer(request):
        response = web.json_response(
            {{"doc": {{"auth": {{"$id": "{SESSION}", "$": "{SESSION}"}}, "elem": []}}}}
        )
        response.set_cookie("billmgrses5", "{SESSION}")
        return response

    async def main():
        app = web.Application()
        app.router.add_post("/", answer)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        client = ZomroClient(
            Credentials(username="u", password="p"), base_url=f"http://127.0.0.1:{{port}}/"
        )
        async with client:
            await client.list_instances()
        logging.getLogger("zomro_backup_operator").debug("debug logging is on")
        await runner.cleanup()

    configure_logging(Settings.from_env())
    asyncio.run(main())
    """
)


def test_at_debug_level_no_http_library_logs_a_session_cookie() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "ZOMRO_LOG_LEVEL": "DEBUG", "ZOMRO_LOG_FORMAT": "text"},
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "debug logging is on" in output
    assert "instances -> ok" in output  # the client's own request line is there
    assert SESSION not in output
