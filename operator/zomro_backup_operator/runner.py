"""``zomro-backup-operator run``: settings, logging, metrics, then kopf."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

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
    kopf.configure(
        debug=settings.log_level == "DEBUG",
        verbose=settings.log_level in ("DEBUG", "INFO"),
        quiet=settings.log_level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if settings.log_format == "json" else kopf.LogFormat.FULL,
        log_prefix=None,  # "[namespace/name]" before text lines; JSON lines carry it as a field
    )
    logging.getLogger().setLevel(settings.log_level)
    # httpx logs every request line at INFO; ours are logged by the client, secret-free, at DEBUG.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    registry = kopf.OperatorRegistry()
    handlers.register(registry, settings)
    metrics.serve(settings.metrics_port)
    kopf.run(
        registry=registry,
        standalone=standalone,
        clusterwide=not namespaces,
        namespaces=list(namespaces),
        liveness_endpoint=liveness,
    )
    return 0
