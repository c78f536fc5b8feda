"""``zomro-backup-operator run``: settings, logging, metrics, probes, the Lease, then kopf."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable, MutableMapping, Sequence

import kopf

from zomro_backup_operator import handlers, kube, metrics
from zomro_backup_operator.kube_session import connection_limit
from zomro_backup_operator.leader_election import Leadership, TimedLeaseApi
from zomro_backup_operator.probes import Probes
from zomro_backup_operator.settings import Settings, SettingsError


def run(
    *,
    namespaces: Sequence[str],
    all_namespaces: bool,
    liveness: str | None,
    standalone: bool,
) -> int:
    if namespaces and all_namespaces:
        print("zomro-backup-operator: use either -n/--namespace or -A, not both", file=sys.stderr)
        return 2
    try:
        settings = Settings.from_env()
    except SettingsError as exc:
        print(f"zomro-backup-operator: {exc}", file=sys.stderr)
        return 2
    if not standalone and settings.lease_namespace is None:
        print(
            "zomro-backup-operator: ZOMRO_LEASE_NAMESPACE must be set outside a Pod: the "
            "namespace of the leader-election Lease (or run a single operator with --standalone)",
            file=sys.stderr,
        )
        return 2
    configure_logging(settings)
    identity = ensure_identity(os.environ)
    leadership = None
    if not standalone:
        # The dead man's switch of leader election is SIGALRM's default action: process exit.
        signal.signal(signal.SIGALRM, signal.SIG_DFL)
        lease_api = TimedLeaseApi(kube.load_client(), settings.lease_renew_deadline_seconds / 2)
        leadership = Leadership(settings, identity, lease_api)
    registry = kopf.OperatorRegistry()
    handlers.register(
        registry,
        settings,
        leadership.may_write if leadership else None,
        kube_connections=connection_limit(namespaces, settings.kube_connections),
    )
    metrics.serve(settings.metrics_port)
    try:
        with contextlib.suppress(asyncio.CancelledError):
            asyncio.run(
                operate(registry, namespaces=namespaces, liveness=liveness, leadership=leadership)
            )
    finally:
        # The loop and its worker threads are done: nothing of this process writes any more.
        if leadership is not None:
            metrics.LEADER.set(0)
            leadership.release()
    return 0


async def operate(
    registry: kopf.OperatorRegistry,
    *,
    namespaces: Sequence[str],
    liveness: str | None,
    leadership: Leadership | None,
) -> None:
    """Serve the probes, wait for the Lease (unless standalone), then run kopf until stopped.

    A standby runs none of kopf: no watch, no handler, no write, until it holds the Lease."""
    probes = Probes(leadership)
    if liveness:
        await probes.start(liveness)
    try:
        if leadership is None or await _lead(leadership):
            metrics.LEADER.set(1)
            await kopf.operator(
                registry=registry,
                standalone=True,  # the Lease, not kopf's peering, keeps replicas apart
                clusterwide=not namespaces,
                namespaces=list(namespaces),
                ready_flag=probes.operating,
            )
    finally:
        await probes.stop()


async def _lead(leadership: Leadership) -> bool:
    """Wait until this process holds the Lease (True) or is told to stop first (False)."""
    loop = asyncio.get_running_loop()
    leading, stopping = asyncio.Event(), asyncio.Event()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stopping.set)

    def on_leading() -> None:  # called in the election's thread
        loop.call_soon_threadsafe(leading.set)

    leadership.start(on_leading)
    waits = [asyncio.ensure_future(event.wait()) for event in (leading, stopping)]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
        for sig in signals:  # kopf sets its own
            loop.remove_signal_handler(sig)
    if not leading.is_set():
        logger.info("leader election: stopped while standing by")
        return False
    return True


logger = logging.getLogger(__name__)


def ensure_identity(
    environ: MutableMapping[str, str], user: Callable[[], str] = getpass.getuser
) -> str:
    """The operator's identity among its peers, in ``POD_ID`` (kopf's own source for it).

    The chart and deploy/ set ``POD_ID`` to the Pod's name. Without it kopf asks the passwd
    database for the user's name, and the image's numeric user has no entry there: kopf then
    fails at start (``docker run`` of the image, a Pod without ``POD_ID``). The numeric uid
    stands in for a user the database does not know.
    """
    if not environ.get("POD_ID"):
        try:
            name = user()
        except (KeyError, OSError):
            name = f"uid{os.getuid()}"
        environ["POD_ID"] = f"{name}@{socket.gethostname()}/{os.getpid()}"
    return environ["POD_ID"]


def configure_logging(settings: Settings) -> None:
    """kopf's log format at the configured level, with the HTTP libraries kept quiet."""
    kopf.configure(
        debug=settings.log_level == "DEBUG",
        verbose=settings.log_level in ("DEBUG", "INFO"),
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=None,  # "[namespace/name]" before text lines; JSON lines carry it as a field
    )
    logging.getLogger().setLevel(settings.log_level)
    # httpx logs every request line at INFO, and httpcore every response header at DEBUG (a
    # Set-Cookie session id among them). The client logs its own calls, secret-free, at DEBUG.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)
