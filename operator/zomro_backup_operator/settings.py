"""Every operator setting, typed, read once from the environment and validated at start."""

from __future__ import annotations

import ipaddress
import os
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo

from zomro_backup_operator.time_zones import DEFAULT_PROVIDER_ZONE, UnknownTimeZoneError, parse_zone
from zomro_backup_operator.zomro.client import DEFAULT_BASE_URL

POD_NAMESPACE_FILE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
"""Where a Pod finds its own namespace (the service account's mount)."""

_SECRET_REF_RE = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?)/([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$")


class SettingsError(ValueError):
    """A setting is malformed; the message names the variable."""


@dataclass(frozen=True)
class SecretRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class Settings:
    api_url: str = DEFAULT_BASE_URL
    default_credentials: SecretRef | None = None
    resync_seconds: float = 300.0
    max_requests_per_second: float = 5.0
    max_in_flight: int = 1
    kube_connections: int = 32
    """HTTP connections kopf may hold to the API server for its requests, besides one for each
    watch stream (each TLS connection costs 256 KiB of buffer; kopf's own pool is unbounded)."""
    timeout_seconds: float = 30.0
    create_settle_seconds: float = 120.0
    """After a create whose answer was lost, how long it may take to show up in a listing."""
    create_wait_seconds: float = 5.0
    """How long a create's handler waits for Zomro's answer before handing it over (the
    outcome is then written by the operator itself, create_answers.py)."""
    backup_check_seconds: float = 600.0
    """How often each instance's backups are listed (docs/backups.md)."""
    backup_grace_seconds: float = 10800.0
    """How long after an expected run a missing (or unfinished) backup becomes overdue."""
    log_format: Literal["text", "json"] = "text"
    log_level: str = "INFO"
    metrics_port: int = 9090
    provider_zone: ZoneInfo = field(
        default_factory=lambda: parse_zone(DEFAULT_PROVIDER_ZONE, "ZOMRO_PROVIDER_TIMEZONE")
    )
    """The clock Zomro's schedule times and backup times are in (docs/time-zones.md)."""
    clock_offset_file: Path | None = None
    """For tests and demos: a file holding seconds by which the operator's clock is moved."""
    lease_namespace: str | None = None
    """Where the leader-election Lease lives; None outside a Pod unless set."""
    lease_name: str = "zomro-backup-operator"
    lease_duration_seconds: int = 15
    """How long a standby waits, after it last saw the Lease renewed, before it takes over."""
    lease_renew_deadline_seconds: float = 10.0
    """How long the leader acts after the start of its last successful renew (then it exits)."""
    lease_retry_period_seconds: float = 2.0
    """How often the leader renews, and a standby tries to acquire."""

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, pod_namespace_file: Path | None = None
    ) -> Settings:
        env = os.environ if env is None else env
        pod_namespace_file = pod_namespace_file or POD_NAMESPACE_FILE
        timeout = _number(env, "ZOMRO_TIMEOUT_SECONDS", 30.0, minimum=0.1)
        lease, renew, retry = _lease_durations(env)
        return cls(
            api_url=_url(
                env,
                "ZOMRO_API_URL",
                DEFAULT_BASE_URL,
                allow_http=_flag(env, "ZOMRO_ALLOW_INSECURE_HTTP"),
            ),
            default_credentials=_secret_ref(env, "ZOMRO_CREDENTIALS_SECRET"),
            resync_seconds=_number(env, "ZOMRO_RESYNC_SECONDS", 300.0, minimum=1.0),
            max_requests_per_second=_number(
                env, "ZOMRO_MAX_REQUESTS_PER_SECOND", 5.0, minimum=0.01
            ),
            max_in_flight=int(_number(env, "ZOMRO_MAX_IN_FLIGHT", 1, minimum=1, integer=True)),
            kube_connections=int(
                _number(env, "ZOMRO_KUBE_CONNECTIONS", 32, minimum=1, integer=True)
            ),
            timeout_seconds=timeout,
            create_settle_seconds=_number(
                env, "ZOMRO_CREATE_SETTLE_SECONDS", max(120.0, timeout), minimum=timeout
            ),
            create_wait_seconds=_number(env, "ZOMRO_CREATE_WAIT_SECONDS", 5.0, minimum=0.0),
            backup_check_seconds=_number(env, "ZOMRO_BACKUP_CHECK_SECONDS", 600.0, minimum=1.0),
            backup_grace_seconds=_number(env, "ZOMRO_BACKUP_GRACE_SECONDS", 10800.0, minimum=1.0),
            log_format=_choice(env, "ZOMRO_LOG_FORMAT", "text", ("text", "json")),  # type: ignore[arg-type]
            log_level=_choice(
                env, "ZOMRO_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR"), upper=True
            ),
            metrics_port=int(_number(env, "ZOMRO_METRICS_PORT", 9090, minimum=0, integer=True)),
            provider_zone=_zone(env, "ZOMRO_PROVIDER_TIMEZONE", DEFAULT_PROVIDER_ZONE),
            clock_offset_file=_path(env, "ZOMRO_CLOCK_OFFSET_FILE"),
            lease_namespace=(
                _name(env, "ZOMRO_LEASE_NAMESPACE") or _pod_namespace(pod_namespace_file)
            ),
            lease_name=_name(env, "ZOMRO_LEASE_NAME") or "zomro-backup-operator",
            lease_duration_seconds=lease,
            lease_renew_deadline_seconds=renew,
            lease_retry_period_seconds=retry,
        )


def _lease_durations(env: Mapping[str, str]) -> tuple[int, float, float]:
    """controller-runtime's three durations and the rules the official elector holds them to."""
    lease = int(_number(env, "ZOMRO_LEASE_DURATION_SECONDS", 15, minimum=2, integer=True))
    renew = _number(env, "ZOMRO_LEASE_RENEW_DEADLINE_SECONDS", 10.0, minimum=1.0)
    retry = _number(env, "ZOMRO_LEASE_RETRY_PERIOD_SECONDS", 2.0, minimum=1.0)
    if renew >= lease:
        raise SettingsError(
            f"ZOMRO_LEASE_RENEW_DEADLINE_SECONDS ({renew:g}) must be below "
            f"ZOMRO_LEASE_DURATION_SECONDS ({lease})"
        )
    if renew <= 1.2 * retry:
        raise SettingsError(
            f"ZOMRO_LEASE_RENEW_DEADLINE_SECONDS ({renew:g}) must be above 1.2 x "
            f"ZOMRO_LEASE_RETRY_PERIOD_SECONDS ({retry:g})"
        )
    return lease, renew, retry


_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")


def _name(env: Mapping[str, str], name: str) -> str | None:
    """A Kubernetes object or namespace name (None when unset)."""
    value = _raw(env, name)
    if value is not None and (len(value) > 253 or not _NAME_RE.fullmatch(value)):
        raise SettingsError(
            f"{name} must be a Kubernetes name (lower case, digits, - and .), got {value!r}"
        )
    return value


def _pod_namespace(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _raw(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name, "").strip()
    return value or None


def _url(env: Mapping[str, str], name: str, default: str, *, allow_http: bool) -> str:
    value = _raw(env, name) or default
    if not value.startswith(("http://", "https://")):
        raise SettingsError(f"{name} must be an http(s) URL, got {value!r}")
    if value.startswith("http://") and not allow_http and not _is_loopback(value):
        # Plain HTTP would carry the password and the session id in the clear.
        raise SettingsError(
            f"{name} must use https:// unless its host is a loopback address, got {value!r}; "
            "set ZOMRO_ALLOW_INSECURE_HTTP=true to allow plain http (e.g. a sandbox in the cluster)"
        )
    return value


def _is_loopback(url: str) -> bool:
    try:
        host = urllib.parse.urlsplit(url).hostname or ""
    except ValueError:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _zone(env: Mapping[str, str], name: str, default: str) -> ZoneInfo:
    try:
        return parse_zone(_raw(env, name) or default, name)
    except UnknownTimeZoneError as exc:
        raise SettingsError(str(exc)) from None


def _path(env: Mapping[str, str], name: str) -> Path | None:
    value = _raw(env, name)
    return None if value is None else Path(value)


def _flag(env: Mapping[str, str], name: str) -> bool:
    value = (_raw(env, name) or "false").lower()
    if value not in ("true", "false"):
        raise SettingsError(f"{name} must be true or false, got {value!r}")
    return value == "true"


def _secret_ref(env: Mapping[str, str], name: str) -> SecretRef | None:
    value = _raw(env, name)
    if value is None:
        return None
    match = _SECRET_REF_RE.fullmatch(value)
    if not match:
        raise SettingsError(f"{name} must be 'namespace/name', got {value!r}")
    return SecretRef(namespace=match.group(1), name=match.group(3))


def _number(
    env: Mapping[str, str], name: str, default: float, *, minimum: float, integer: bool = False
) -> float:
    value = _raw(env, name)
    if value is None:
        return default
    try:
        number = int(value) if integer else float(value)
    except ValueError:
        kind = "an integer" if integer else "a number"
        raise SettingsError(f"{name} must be {kind}, got {value!r}") from None
    if number < minimum:
        raise SettingsError(f"{name} must be at least {minimum:g}, got {value!r}")
    return number


def _choice(
    env: Mapping[str, str],
    name: str,
    default: str,
    choices: tuple[str, ...],
    *,
    upper: bool = False,
) -> str:
    value = _raw(env, name) or default
    value = value.upper() if upper else value.lower()
    if value not in choices:
        raise SettingsError(f"{name} must be one of {', '.join(choices)}, got {value!r}")
    return value


def parse_secret_ref(name: str, value: str) -> SecretRef | None:
    """``namespace/name`` as ``ZOMRO_CREDENTIALS_SECRET`` takes it (None when empty); errors name
    ``name``, the variable or flag it came from."""
    return _secret_ref({name: value}, name)
