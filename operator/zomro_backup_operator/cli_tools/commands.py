"""The two commands as the console script calls them: find credentials and settings, run, and
turn a stop into a message on stderr and an exit code."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import IO

from zomro_backup_operator.cli_tools.access import (
    CredentialSource,
    FoundCredentials,
    ToolError,
    find_credentials,
    load_settings,
)
from zomro_backup_operator.cli_tools.manifests import DeletionPolicy, ManifestOptions
from zomro_backup_operator.settings import Settings


def _guarded(
    name: str,
    source: CredentialSource,
    work: Callable[[FoundCredentials, Settings], int],
    stdin: IO[str],
    err: IO[str],
) -> int:
    try:
        settings = load_settings()
        found = find_credentials(source, stdin=stdin)
        return work(found, settings)
    except ToolError as exc:
        print(f"{name}: {exc.message}", file=err)
        return int(exc.code)


def doctor(
    source: CredentialSource,
    *,
    write_test_instance: str | None,
    as_json: bool,
    stdin: IO[str] = sys.stdin,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    from zomro_backup_operator.cli_tools.doctor import run_doctor

    return _guarded(
        "doctor",
        source,
        lambda found, settings: run_doctor(
            found,
            settings,
            write_test_instance=write_test_instance,
            as_json=as_json,
            out=out,
            err=err,
        ),
        stdin,
        err,
    )


def import_schedules(
    source: CredentialSource,
    *,
    instances: Sequence[str],
    namespace: str | None,
    secret_name: str | None,
    deletion_policy: DeletionPolicy,
    check_cluster: bool,
    stdin: IO[str] = sys.stdin,
    out: IO[str] = sys.stdout,
    err: IO[str] = sys.stderr,
) -> int:
    from zomro_backup_operator.cli_tools.importer import run_import

    options = ManifestOptions(
        namespace=namespace, secret_name=secret_name, deletion_policy=deletion_policy
    )
    return _guarded(
        "import",
        source,
        lambda found, settings: run_import(
            found,
            settings,
            instances=instances,
            options=options,
            kubeconfig=source.kubeconfig,
            check_cluster=check_cluster,
            out=out,
            err=err,
        ),
        stdin,
        err,
    )
