"""What both tools share: credentials found the way the operator finds them, a client built from
the operator's settings, and exit codes that scripts can rely on."""

from __future__ import annotations

import contextlib
import enum
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any

import httpx

from zomro_backup_operator.secret_store import CredentialsError, parse_secret
from zomro_backup_operator.settings import SecretRef, Settings, SettingsError, parse_secret_ref
from zomro_backup_operator.zomro import ClientOptions, Credentials, ZomroClient
from zomro_backup_operator.zomro.client import RequestHook
from zomro_backup_operator.zomro.errors import (
    AuthenticationError,
    MalformedResponseError,
    ThrottledError,
    ZomroConnectionError,
    ZomroError,
    ZomroTimeoutError,
)


class ExitCode(enum.IntEnum):
    """Documented in the README; scripts branch on these."""

    OK = 0
    PROBLEMS = 1
    """It ran, and found something unexpected (or a write-test step failed)."""
    USAGE = 2
    """Bad flags, settings or credentials source (no Secret, no keys in it)."""
    LOGIN_REFUSED = 3
    """Zomro refused the login: wrong password, 2FA account, blocked login, expired token."""
    UNREACHABLE = 4
    """No usable answer: connection refused or reset, timeouts, 5xx."""
    BLOCKED = 5
    """Zomro's edge blocks this IP for now (HTTP 403/460/429): wait, do not retry in a loop."""
    KUBERNETES = 6
    """The cluster could not be asked (reading the Secret or the existing BackupSchedules)."""
    INTERRUPTED = 130
    """SIGINT or SIGTERM; anything the tool created was removed first."""


class ToolError(Exception):
    """Stops a tool with an exit code and a one-line message for stderr (never a secret)."""

    def __init__(self, code: ExitCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def exit_code_for(exc: ZomroError) -> ExitCode:
    """The one mapping from the client's error tree to the tools' exit codes."""
    if isinstance(exc, AuthenticationError):
        return ExitCode.LOGIN_REFUSED
    if isinstance(exc, ThrottledError):
        return ExitCode.BLOCKED
    if isinstance(exc, MalformedResponseError):
        return ExitCode.PROBLEMS
    if isinstance(exc, ZomroConnectionError | ZomroTimeoutError) or exc.retryable:
        return ExitCode.UNREACHABLE
    return ExitCode.PROBLEMS


@dataclass(frozen=True)
class CredentialSource:
    """How the user asked for credentials, from the command line."""

    secret: str | None = None
    username: str | None = None
    password_stdin: bool = False
    token_stdin: bool = False
    kubeconfig: str | None = None


@dataclass(frozen=True)
class FoundCredentials:
    credentials: Credentials
    where: str
    """Where they came from, e.g. ``Secret default/zomro`` or ``--username + stdin``."""


def find_credentials(
    source: CredentialSource, *, stdin: IO[str], env: Mapping[str, str] | None = None
) -> FoundCredentials:
    """Flags first, then ``--secret``, then ``ZOMRO_CREDENTIALS_SECRET`` (as the operator does)."""
    env = os.environ if env is None else env
    if source.password_stdin and source.token_stdin:
        raise ToolError(ExitCode.USAGE, "give --password-stdin or --token-stdin, not both")
    if source.password_stdin:
        if not source.username:
            raise ToolError(ExitCode.USAGE, "--password-stdin needs --username")
        password = _first_line(stdin, "--password-stdin")
        return FoundCredentials(
            Credentials(username=source.username, password=password), "--username, stdin"
        )
    if source.token_stdin:
        return FoundCredentials(Credentials(token=_first_line(stdin, "--token-stdin")), "stdin")
    if source.username:
        raise ToolError(ExitCode.USAGE, "--username needs --password-stdin")
    try:
        ref = parse_secret_ref("--secret", source.secret) if source.secret else None
        ref = ref or parse_secret_ref(
            "ZOMRO_CREDENTIALS_SECRET", env.get("ZOMRO_CREDENTIALS_SECRET", "")
        )
    except SettingsError as exc:
        raise ToolError(ExitCode.USAGE, str(exc)) from None
    if ref is None:
        raise ToolError(
            ExitCode.USAGE,
            "no credentials: give --secret NAMESPACE/NAME, --username with --password-stdin, "
            "--token-stdin, or set ZOMRO_CREDENTIALS_SECRET",
        )
    return FoundCredentials(_read_secret(ref, source.kubeconfig), f"Secret {ref}")


def _first_line(stdin: IO[str], flag: str) -> str:
    value = stdin.readline().rstrip("\r\n")
    if not value:
        raise ToolError(ExitCode.USAGE, f"{flag}: nothing was read from stdin")
    return value


def kube_api_client(kubeconfig: str | None) -> Any:
    """A Kubernetes ApiClient for ``kubeconfig`` (or the current one, as kubectl would)."""
    from kubernetes import config

    try:
        return config.new_client_from_config(  # type: ignore[no-untyped-call]
            config_file=kubeconfig or os.environ.get("KUBECONFIG") or None
        )
    except (config.ConfigException, OSError) as exc:
        raise ToolError(ExitCode.KUBERNETES, f"cannot load the kubeconfig: {exc}") from None


@contextlib.contextmanager
def kubernetes_errors(what: str) -> Iterator[None]:
    """Turn a failed Kubernetes call into a ToolError saying what could not be done."""
    from kubernetes.client import ApiException

    try:
        yield
    except ApiException as exc:
        # Its text holds the response body; the status says enough.
        raise ToolError(
            ExitCode.KUBERNETES, f"cannot {what}: HTTP {exc.status} {exc.reason}"
        ) from None
    except ToolError:
        raise
    except Exception as exc:  # urllib3's connection errors come in many classes
        raise ToolError(ExitCode.KUBERNETES, f"cannot {what}: {type(exc).__name__}") from None


def _read_secret(ref: SecretRef, kubeconfig: str | None) -> Credentials:
    from zomro_backup_operator.kube import Kube

    api = kube_api_client(kubeconfig)
    try:
        with kubernetes_errors(f"read Secret {ref}"):
            data = Kube(api).read_secret_data(ref.namespace, ref.name)
    finally:
        api.close()
    if data is None:
        raise ToolError(ExitCode.USAGE, f"Secret {ref} not found")
    try:
        return parse_secret(ref, data)
    except CredentialsError as exc:
        raise ToolError(ExitCode.USAGE, str(exc)) from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    try:
        return Settings.from_env(env)
    except SettingsError as exc:
        raise ToolError(ExitCode.USAGE, str(exc)) from None


def open_client(
    credentials: Credentials,
    settings: Settings,
    *,
    max_in_flight: int | None = None,
    max_requests_per_second: float | None = None,
    read_attempts: int = 2,
    transport: httpx.AsyncBaseTransport | None = None,
    on_request: RequestHook | None = None,
) -> ZomroClient:
    """A client tuned like the operator's, but quick to give up: a person is waiting."""
    options = ClientOptions(
        timeout=settings.timeout_seconds,
        max_requests_per_second=max_requests_per_second or settings.max_requests_per_second,
        max_in_flight=max_in_flight or settings.max_in_flight,
        read_attempts=read_attempts,
        backoff_max=5.0,
    )
    return ZomroClient(
        credentials,
        base_url=settings.api_url,
        options=options,
        transport=transport,
        on_request=on_request,
    )


def shown_url(url: str) -> str:
    """The endpoint as it may be printed: no user info, no query."""
    return str(httpx.URL(url).copy_with(username=None, password=None, query=None))
