"""The sandbox's configuration: accounts, their instances, and the service's limits.

Read from a YAML or JSON file (JSON is YAML, so one loader serves both). Without a file the
sandbox holds the default account of the contract: ``demo`` / ``demo`` owning ``5203773``.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

DEFAULT_SESSION_TTL = 3600.0
"""Zomro ends a session one hour after its last request."""
DEFAULT_PROVIDER_ZONE = "Europe/Kyiv"
"""The zone whose wall clock schedules' days and times are read in (the panel's "GMT+3" that
moves with daylight saving)."""
DEFAULT_SCHEDULED_BACKUP_DURATION = 180.0
SAME_MINUTE_MODES = ("one", "each")
"""Two schedules of one instance at the same minute make one backup, or one backup each."""

_ID_RE = re.compile(r"^[1-9]\d{0,18}$")


class ConfigError(ValueError):
    """The configuration file cannot be used; the message names the offending entry."""


@dataclass(frozen=True)
class InstanceConfig:
    """A VPS instance as the sandbox starts with it."""

    id: str
    name: str
    ip: str = "192.0.2.10"
    status: str = "active"
    backup_rotation: int = 3
    os_distro: str = "ubuntu"
    os_version: str = "22.04"


@dataclass(frozen=True)
class AccountConfig:
    """A customer account: its login and the instances it owns."""

    username: str
    password: str
    instances: tuple[InstanceConfig, ...] = ()

    def __repr__(self) -> str:
        return f"AccountConfig(username={self.username!r}, instances={len(self.instances)})"


@dataclass(frozen=True)
class SandboxConfig:
    """Everything the sandbox needs to know before its first request."""

    accounts: tuple[AccountConfig, ...]
    session_ttl: float = DEFAULT_SESSION_TTL
    login_failures_before_block: int = 10
    """Failed logins from one IP (or for one login) before ``blocked_ip``; 0 disables it."""
    login_block_seconds: float = 600.0
    backup_duration: float = 5.0
    """How long a manual backup keeps its instance busy (``runningoperation``)."""
    scheduled_backup_duration: float = DEFAULT_SCHEDULED_BACKUP_DURATION
    """Sandbox-clock seconds a scheduled backup is in progress before it is ``active``."""
    scheduled_backups_busy: bool = True
    """A scheduled backup in progress makes its instance refuse edits (``runningoperation``)."""
    same_minute_runs: str = "one"
    provider_zone: str = DEFAULT_PROVIDER_ZONE
    manual_backups_per_day: int = 5
    manual_backups_total: int = 100
    first_schedule_id: int = 14
    first_backup_id: int = 3001
    faults: dict[str, Any] = field(default_factory=dict)


def default_config() -> SandboxConfig:
    """The contract's default: one account ``demo``/``demo`` with instance 5203773 ``MyServer``."""
    return SandboxConfig(
        accounts=(
            AccountConfig(
                username="demo",
                password="demo",  # noqa: S106 - the documented public demo login
                instances=(InstanceConfig(id="5203773", name="MyServer", ip="192.0.2.10"),),
            ),
        )
    )


def load_config(path: str | Path | None) -> SandboxConfig:
    """Read and check a config file; ``None`` gives the default config."""
    if path is None:
        return default_config()
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read sandbox config {path}: {exc}") from exc
    return parse_config(raw)


def parse_config(raw: Any) -> SandboxConfig:
    """Turn the loaded mapping into a config, refusing anything ambiguous."""
    if raw is None:
        return default_config()
    if not isinstance(raw, dict):
        raise ConfigError("the sandbox config must be a mapping")
    known = {
        "accounts",
        "session_ttl",
        "login_failures_before_block",
        "login_block_seconds",
        "backup_duration",
        "scheduled_backup_duration",
        "scheduled_backups_busy",
        "same_minute_runs",
        "provider_zone",
        "manual_backups_per_day",
        "manual_backups_total",
        "first_schedule_id",
        "first_backup_id",
        "faults",
    }
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"unknown config keys: {', '.join(map(str, unknown))}")
    accounts_raw = raw.get("accounts")
    accounts = default_config().accounts if accounts_raw is None else _accounts(accounts_raw)
    faults = raw.get("faults") or {}
    if not isinstance(faults, dict):
        raise ConfigError("faults must be a mapping")
    return SandboxConfig(
        accounts=accounts,
        session_ttl=_positive(raw, "session_ttl", DEFAULT_SESSION_TTL),
        login_failures_before_block=int(_non_negative(raw, "login_failures_before_block", 10)),
        login_block_seconds=_positive(raw, "login_block_seconds", 600.0),
        backup_duration=_non_negative(raw, "backup_duration", 5.0),
        scheduled_backup_duration=_non_negative(
            raw, "scheduled_backup_duration", DEFAULT_SCHEDULED_BACKUP_DURATION
        ),
        scheduled_backups_busy=_flag(raw, "scheduled_backups_busy", True),
        same_minute_runs=same_minute_mode(raw.get("same_minute_runs", "one")),
        provider_zone=provider_zone(raw.get("provider_zone", DEFAULT_PROVIDER_ZONE)),
        manual_backups_per_day=int(_non_negative(raw, "manual_backups_per_day", 5)),
        manual_backups_total=int(_non_negative(raw, "manual_backups_total", 100)),
        first_schedule_id=int(_positive(raw, "first_schedule_id", 14)),
        first_backup_id=int(_positive(raw, "first_backup_id", 3001)),
        faults=faults,
    )


def provider_zone(value: Any) -> str:
    """An IANA zone name the system knows; raise ConfigError otherwise."""
    if not isinstance(value, str) or not value:
        raise ConfigError("provider_zone must be an IANA time zone name")
    try:
        zoneinfo.ZoneInfo(value)
    except (ValueError, zoneinfo.ZoneInfoNotFoundError) as exc:
        raise ConfigError(f"provider_zone {value!r} is not a known time zone") from exc
    return value


def same_minute_mode(value: Any) -> str:
    """``one`` or ``each``; raise ConfigError otherwise."""
    if value not in SAME_MINUTE_MODES:
        raise ConfigError(f"same_minute_runs must be one of {', '.join(SAME_MINUTE_MODES)}")
    return str(value)


def _flag(raw: dict[str, Any], key: str, default: bool) -> bool:
    value = raw.get(key, default)
    if not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false")
    return value


def _number(raw: dict[str, Any], key: str, default: float) -> float:
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{key} must be a number")
    return float(value)


def _positive(raw: dict[str, Any], key: str, default: float) -> float:
    value = _number(raw, key, default)
    if value <= 0:
        raise ConfigError(f"{key} must be positive")
    return value


def _non_negative(raw: dict[str, Any], key: str, default: float) -> float:
    value = _number(raw, key, default)
    if value < 0:
        raise ConfigError(f"{key} must not be negative")
    return value


def _accounts(raw: Any) -> tuple[AccountConfig, ...]:
    if not isinstance(raw, list) or not raw:
        raise ConfigError("accounts must be a non-empty list")
    accounts: list[AccountConfig] = []
    usernames: set[str] = set()
    instance_ids: set[str] = set()
    for index, entry in enumerate(raw):
        where = f"accounts[{index}]"
        if not isinstance(entry, dict):
            raise ConfigError(f"{where} must be a mapping")
        username = entry.get("username")
        password = entry.get("password")
        if not isinstance(username, str) or not username or ":" in username:
            raise ConfigError(f"{where}.username must be a non-empty string without ':'")
        if not isinstance(password, str) or not password:
            raise ConfigError(f"{where}.password must be a non-empty string")
        if username in usernames:
            raise ConfigError(f"{where}.username {username!r} appears twice")
        usernames.add(username)
        instances: list[InstanceConfig] = []
        for j, inst in enumerate(entry.get("instances") or []):
            instance = _instance(inst, f"{where}.instances[{j}]")
            if instance.id in instance_ids:
                raise ConfigError(f"instance id {instance.id} appears twice")
            instance_ids.add(instance.id)
            instances.append(instance)
        accounts.append(AccountConfig(username, password, tuple(instances)))
    return tuple(accounts)


def _instance(raw: Any, where: str) -> InstanceConfig:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where} must be a mapping")
    ident = str(raw.get("id", ""))
    if not _ID_RE.fullmatch(ident):
        raise ConfigError(f"{where}.id must be a positive number, got {ident!r}")
    name = raw.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name must be a non-empty string")
    rotation = raw.get("backup_rotation", 3)
    if isinstance(rotation, bool) or not isinstance(rotation, int) or not 1 <= rotation <= 10:
        raise ConfigError(f"{where}.backup_rotation must be 1..10")
    return InstanceConfig(
        id=ident,
        name=name,
        ip=str(raw.get("ip", "192.0.2.10")),
        status=str(raw.get("status", "active")),
        backup_rotation=rotation,
        os_distro=str(raw.get("os_distro", "ubuntu")),
        os_version=str(raw.get("os_version", "22.04")),
    )
