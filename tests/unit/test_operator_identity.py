"""The operator has an identity among its peers even where its user has no name."""

from __future__ import annotations

import os

from zomro_backup_operator.run_command import ensure_identity


def _no_passwd_entry() -> str:
    # What getpass.getuser() raises for a numeric user (the image's 65532) without LOGNAME/USER.
    raise KeyError("getpwuid(): uid not found: 65532")


def test_a_user_without_a_passwd_entry_still_gets_an_identity() -> None:
    environ: dict[str, str] = {}
    identity = ensure_identity(environ, user=_no_passwd_entry)
    assert identity.startswith(f"uid{os.getuid()}@")
    assert environ["POD_ID"] == identity


def test_the_pods_name_given_by_the_chart_is_kept() -> None:
    environ = {"POD_ID": "zomro-backup-operator-7d9f-abcde"}
    assert ensure_identity(environ, user=_no_passwd_entry) == "zomro-backup-operator-7d9f-abcde"
    assert environ == {"POD_ID": "zomro-backup-operator-7d9f-abcde"}
