"""The sandbox's configuration and its exposure warning, without starting it (the sandbox as
its own process is in tests/process/test_sandbox_process.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from zomro_backup_operator.sandbox import Sandbox
from zomro_backup_operator.sandbox.command import exposure_warning
from zomro_backup_operator.sandbox.config import ConfigError, load_config, parse_config
from zomro_backup_operator.sandbox.faults import FaultError

INSTANCE = "5203773"


def test_the_example_config_loads_with_its_two_accounts() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "sandbox-config.yaml"
    config = load_config(example)
    assert [a.username for a in config.accounts] == ["demo", "other"]
    assert config.accounts[0].instances[0].id == INSTANCE
    assert config.session_ttl == 3600


@pytest.mark.parametrize(
    ("raw", "complaint"),
    [
        ({"accounts": [{"username": "a", "password": "p", "instances": [{"id": "x1"}]}]}, "id"),
        (
            {
                "accounts": [
                    {"username": "a", "password": "p", "instances": [{"id": 1, "name": "n"}]},
                    {"username": "b", "password": "p", "instances": [{"id": 1, "name": "m"}]},
                ]
            },
            "twice",
        ),
        ({"accounts": [{"username": "a:b", "password": "p"}]}, "username"),
        ({"session_ttl": 0}, "session_ttl"),
        ({"sesion_ttl": 10}, "unknown"),
        ({"faults": {"outage": "maybe"}}, "outage"),
    ],
)
def test_invalid_configs_are_refused_with_the_offending_entry_named(
    raw: dict[str, object], complaint: str
) -> None:
    with pytest.raises((ConfigError, FaultError), match=complaint):
        Sandbox(parse_config(raw))


@pytest.mark.parametrize("addresses", [["0.0.0.0"], ["127.0.0.1", "192.0.2.7"], ["::"]])  # noqa: S104
def test_the_sandbox_warns_loudly_when_it_listens_beyond_loopback(addresses: list[str]) -> None:
    # Judged on the addresses actually bound; not bound here, so no test exposes a sandbox.
    warning = exposure_warning(addresses)
    assert warning is not None
    assert warning.startswith("WARNING: the sandbox listens on")
    assert "no authentication" in warning
    assert "not production" in warning


@pytest.mark.parametrize("addresses", [["127.0.0.1"], ["::1", "127.0.0.1"], ["127.0.0.5"]])
def test_loopback_addresses_raise_no_exposure_warning(addresses: list[str]) -> None:
    assert exposure_warning(addresses) is None
