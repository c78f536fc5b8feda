"""The ``sandbox`` command: serve a sandbox until SIGINT/SIGTERM, warning when it listens
beyond loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
import sys
from pathlib import Path

from aiohttp import web

from zomro_backup_operator.sandbox.config import ConfigError, load_config
from zomro_backup_operator.sandbox.server import CONTROL_PREFIX, Sandbox, log, url_of


def serve(*, host: str, port: int, config: str | None, state: str | None) -> int:
    """The ``sandbox`` command: serve until SIGINT/SIGTERM. Prints the URL as its first line."""
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s"
    )
    try:
        cfg = load_config(config)
        sandbox = Sandbox(cfg, state_file=Path(state) if state else None)
    except (ConfigError, ValueError, OSError) as exc:
        print(f"sandbox: {exc}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(sandbox, host, port))
    except KeyboardInterrupt:
        return 0


def exposure_warning(addresses: list[str]) -> str | None:
    """What to say when the sandbox listens on any of ``addresses`` (bound IPs) beyond loopback."""
    exposed = [address for address in addresses if not _loopback(address)]
    if not exposed:
        return None
    return (
        f"WARNING: the sandbox listens on {', '.join(exposed)}, beyond loopback. Its "
        f"{CONTROL_PREFIX}/ control endpoint has no authentication: anyone who can reach it can "
        "read and change every schedule. It is for tests and demos, not production."
    )


def _loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


async def _serve(sandbox: Sandbox, host: str, port: int) -> int:
    runner = web.AppRunner(sandbox.app(), access_log=None, shutdown_timeout=1.0)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            print(f"sandbox: cannot listen on {host}:{port}: {exc}", file=sys.stderr)
            return 1
        bound_port = int(runner.addresses[0][1])
        print(url_of(host, bound_port), flush=True)
        warning = exposure_warning([str(address[0]) for address in runner.addresses])
        if warning is not None:
            print(warning, file=sys.stderr, flush=True)
            log.warning("%s", warning)
        log.info(
            "sandbox serving on %s with %d account(s); control at %s",
            url_of(host, bound_port),
            len(sandbox.config.accounts),
            url_of(host, bound_port).rstrip("/") + CONTROL_PREFIX + "/",
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        log.info("sandbox stopping")
        return 0
    finally:
        await runner.cleanup()
