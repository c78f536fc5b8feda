"""One error tree for everything the Zomro client can raise.

Each class says whether repeating the same call later can help (``retryable``) and, when the
server said so, how long to wait (``retry_after``). Messages never hold secrets.
"""

from __future__ import annotations


class ZomroError(Exception):
    """Base of every error the Zomro client raises."""

    retryable: bool = False

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = retry_after


class AuthenticationError(ZomroError):
    """Login refused: bad username/password, a blocked IP or login, a token that no longer works."""


class LoginTemporarilyBlockedError(AuthenticationError):
    """Login refused for now (``blocklogon``: wait about 20 s)."""

    retryable = True


class SessionExpiredError(ZomroError):
    """The session id is no longer valid. The client renews it itself when it holds a password."""

    retryable = True


class TokenExpiredError(AuthenticationError, SessionExpiredError):
    """The session id given as a token no longer works. The client cannot renew it: a person must.

    It is both an authentication failure and an expired session, so either ``except`` catches it.
    """

    retryable = False


class AccessDeniedError(ZomroError):
    """The account may not touch this object, e.g. an instance not its own or that is unknown."""


class NotFoundError(ZomroError):
    """The object does not exist (any more)."""


class InvalidValueError(ZomroError):
    """Zomro refused the values sent. ``field_errors`` maps field names to messages when known."""

    def __init__(
        self,
        message: str,
        *,
        field_errors: dict[str, list[str]] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.field_errors = field_errors or {}


class OperationInProgressError(ZomroError):
    """Another operation runs on the instance (``runningoperation``) or the session is busy."""

    retryable = True


class BackupLimitError(ZomroError):
    """Zomro refuses another manual backup: the instance holds as many as it may (100 in all).

    Repeating the call cannot help until a person (or a retention policy) deletes manual backups.
    """


class DailyBackupLimitError(BackupLimitError):
    """Zomro refuses another manual backup today (5 a day): try again on the provider's next day."""


class BackupProtectedError(ZomroError):
    """Zomro refuses to delete a backup while its ``protected`` flag is on."""


class ThrottledError(ZomroError):
    """The edge blocks or rate-limits this client (HTTP 403, 460 or 429)."""

    retryable = True


class ServerError(ZomroError):
    """A 5xx answer, or a body that is not the JSON document Zomro promises."""

    retryable = True


class MalformedResponseError(ServerError):
    """A 200 answer whose JSON does not have the shape documented for this function."""


class ZomroConnectionError(ZomroError):
    """The endpoint could not be reached."""

    retryable = True


class ZomroTimeoutError(ZomroError):
    """No answer in time."""

    retryable = True


class WriteWithheldError(ZomroError):
    """A write not sent: the caller's write-permission hook refused it just before sending (for
    the operator: this process no longer holds the leader-election lease). Nothing was applied;
    whoever may write now can try again."""

    retryable = True


class UnknownOutcomeError(ZomroError):
    """A write was sent but its outcome is unknown (timeout, dropped connection, 5xx).

    Writes are never repeated blindly: the caller must look at Zomro's state before trying again.
    """

    retryable = True


class CreatedNotListedError(UnknownOutcomeError):
    """Zomro answered that it made a schedule, but no listing shows it (yet): its id is unknown.

    Unlike its base, the create is known to be applied: it must never be sent again; list the
    instance later to find the new schedule.
    """


class AmbiguousResultError(ZomroError):
    """A create succeeded but several schedules carry its name, so its id cannot be told.

    ``candidate_ids`` lists the schedules that could be the new one.
    """

    def __init__(
        self,
        message: str,
        *,
        candidate_ids: tuple[str, ...] = (),
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, retry_after=retry_after)
        self.candidate_ids = candidate_ids


def may_mean_gone(exc: ZomroError) -> bool:
    """Refusals of a change or delete that could mean "no such object", or do not say why:
    worth a read to find out before calling the object gone."""
    if isinstance(exc, InvalidValueError):
        return not exc.field_errors or "elid" in exc.field_errors
    return type(exc) is ZomroError or isinstance(exc, AccessDeniedError | NotFoundError)
