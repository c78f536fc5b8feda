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
        help="serve a liveness endpoint, e.g. http://0.0.0.0:8080/healthz, and readiness on "
        "/readyz of the same port (both from the start, also on a standby)",
    )
    run.add_argument(
        "--standalone",
        action="store_true",
        help="do not take part in leader election (one replica only)",
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

    credentials = _credential_flags()
    doctor = sub.add_parser(
        "doctor",
        parents=[credentials],
        help="check a Zomro account's answers and recommend settings (read-only by default)",
        description="Log in, list instances and schedules, check every answer against what the "
        "operator expects, measure round trips and recommend settings. Changes nothing unless "
        "--write-test is given. Exit codes: 0 ok, 1 problems found, 2 usage, 3 login refused, "
        "4 Zomro unreachable, 5 blocked by Zomro's edge, 6 Kubernetes unreachable, "
        "130 interrupted.",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.add_argument(
        "--write-test",
        action="store_true",
        help="create, read, change and delete one schedule named zbo-doctor-* on --instance",
    )
    doctor.add_argument("--instance", type=_instance_id, default=None, help="instance id")

    importer = sub.add_parser(
        "import",
        parents=[credentials],
        help="print BackupSchedule manifests that adopt the account's existing schedules",
        description="List the account's schedules and print BackupSchedule manifests (YAML, "
        "ready for kubectl apply) that adopt them; schedules already claimed by a resource in "
        "the cluster are skipped and listed on stderr. Exit codes as for doctor.",
    )
    importer.add_argument(
        "--instance",
        type=_instance_id,
        action="append",
        default=[],
        dest="instances",
        help="only this instance (repeatable; default: all of the account's)",
    )
    importer.add_argument("-n", "--namespace", default=None, help="metadata.namespace to set")
    importer.add_argument(
        "--credentials-secret",
        metavar="NAME",
        default=None,
        help="spec.credentialsSecretRef.name to set (a Secret in the resources' namespace)",
    )
    importer.add_argument(
        "--deletion-policy",
        choices=("Orphan", "Delete"),
        default="Orphan",
        help="spec.deletionPolicy (default Orphan: deleting a manifest keeps the schedule)",
    )
    importer.add_argument(
        "--no-cluster",
        action="store_true",
        help="do not look for resources that already claim the schedules",
    )
    return parser


def _credential_flags() -> argparse.ArgumentParser:
    """Credentials as the operator takes them, for doctor and import."""
    flags = argparse.ArgumentParser(add_help=False)
    flags.add_argument(
        "--secret",
        metavar="NAMESPACE/NAME",
        default=None,
        help="read username/password or token from this Secret (default: ZOMRO_CREDENTIALS_SECRET)",
    )
    flags.add_argument("--username", default=None, help="Zomro login, with --password-stdin")
    flags.add_argument("--password-stdin", action="store_true", help="read the password from stdin")
    flags.add_argument("--token-stdin", action="store_true", help="read a session id from stdin")
    flags.add_argument(
        "--kubeconfig", metavar="FILE", default=None, help="kubeconfig (default: the current one)"
    )
    return flags


def _instance_id(value: str) -> str:
    if not value.isdigit():
        raise argparse.ArgumentTypeError(f"an instance id is digits, got {value!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command in ("doctor", "import"):
        from zomro_backup_operator.cli_tools import commands
        from zomro_backup_operator.cli_tools.access import CredentialSource

        source = CredentialSource(
            secret=args.secret,
            username=args.username,
            password_stdin=args.password_stdin,
            token_stdin=args.token_stdin,
            kubeconfig=args.kubeconfig,
        )
        if args.command == "doctor":
            if args.write_test and args.instance is None:
                parser.error("--write-test needs --instance")
            return commands.doctor(
                source,
                write_test_instance=args.instance if args.write_test else None,
                as_json=args.json,
            )
        return commands.import_schedules(
            source,
            instances=args.instances,
            namespace=args.namespace,
            secret_name=args.credentials_secret,
            deletion_policy=args.deletion_policy,
            check_cluster=not args.no_cluster,
        )
    if args.command == "sandbox":
        from zomro_backup_operator.sandbox.command import serve

        return serve(host=args.host, port=args.port, config=args.config, state=args.state)
    from zomro_backup_operator.run_command import run

    return run(
        namespaces=args.namespaces,
        all_namespaces=args.all_namespaces,
        liveness=args.liveness,
        standalone=args.standalone,
    )
