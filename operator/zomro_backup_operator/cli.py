"""The console script: argument parsing only; the work lives in the modules it calls."""

from __future__ import annotations

import argparse
from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="zomro-backup-operator",
        description="Keep Zomro VPS backup schedules in step with BackupSchedule resources.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the operator against the current cluster")
    run.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        dest="namespaces",
        help="watch this namespace (repeatable)",
    )
    run.add_argument(
        "-A",
        "--all-namespaces",
        action="store_true",
        help="watch all namespaces (the default when no -n is given)",
    )
    run.add_argument(
        "--liveness",
        metavar="URL",
        default=None,
        help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz",
    )
    run.add_argument(
        "--standalone", action="store_true", help="do not take part in peering (single replica)"
    )

    sandbox = sub.add_parser(
        "sandbox",
        help="serve an emulated Zomro API (for tests and demos, not production)",
        description=(
            "Serve an emulated Zomro API, for tests and demos, not production: its /_sandbox/ "
            "control endpoint has no authentication, so keep it on loopback."
        ),
    )
    sandbox.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default 127.0.0.1; anything else is warned about)",
    )
    sandbox.add_argument("--port", type=int, default=8808)
    sandbox.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="YAML or JSON file with accounts and instances",
    )
    sandbox.add_argument(
        "--state",
        metavar="FILE",
        default=None,
        help="keep the sandbox's data in this file across restarts",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "sandbox":
        from zomro_backup_operator.sandbox.server import serve

        return serve(host=args.host, port=args.port, config=args.config, state=args.state)
    from zomro_backup_operator.runner import run

    return run(
        namespaces=args.namespaces,
        all_namespaces=args.all_namespaces,
        liveness=args.liveness,
        standalone=args.standalone,
    )
