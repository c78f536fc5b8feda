"""``zomro-backup-operator run``: settings, logging, metrics, then kopf."""

from __future__ import annotations

import getpass
import logging
import os
import socket
import sys
from collections.abc import Callable, MutableMapping, Sequence

import kopf

from zomro_backup_operator import handlers, metrics
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
    configure_logging(settings)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    metrics.serve(settings.metrics_port)
    ensure_identity(os.environ)
    kopf.run(
        registry=registry,
        standalone=standalone,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness,
    )
    return 0


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
