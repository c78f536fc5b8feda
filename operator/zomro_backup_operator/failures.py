"""The one place where failures become a Ready reason and kopf's Temporary/PermanentError.

Retry delays grow exponentially with full jitter, honour what the server said (Retry-After),
and start long for failures a person must fix (credentials, instance), so that a broken
resource never spins in a hot loop.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import kopf

from zomro_backup_operator.kube import StatusChangedError
from zomro_backup_operator.reconcile import CreatePendingError, ReconcileError
from zomro_backup_operator.resources import InvalidSpecError, InvalidStatusError
from zomro_backup_operator.secret_store import CredentialsError
from zomro_backup_operator.zomro import errors as z
from zomro_backup_operator.zomro.backoff import RANDOM, Random
from zomro_backup_operator.zomro.backoff import delay as backoff_delay

TRANSIENT_BACKOFF = (5.0, 120.0)
"""(first, cap) seconds for failures that heal by themselves: Zomro down, throttled, busy."""
CREATING_BACKOFF = (2.0, 30.0)
"""(first, cap) seconds between looks for a create of ours in the listing: one cheap list each."""
NEEDS_PERSON_BACKOFF = (30.0, 900.0)
"""(first, cap) seconds for failures a person must fix: credentials, unknown instance, conflict."""

PROTECTED_BACKOFF = (10.0, 300.0)
"""(first, cap) seconds between deletions of a protected backup: a person unprotects it in the
panel, and the deletion should follow soon after."""


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    permanent: bool = False
    retry_after: float | None = None
    backoff: tuple[float, float] = TRANSIENT_BACKOFF

    def delay(self, retry: int, random: Random = RANDOM) -> float:
        """Seconds until the next attempt: the server's word if it gave one, else backoff."""
        first, cap = self.backoff
        jittered = backoff_delay(retry, first, cap, low=first, random=random)
        return max(self.retry_after or 0.0, jittered)

    def holding(self, what: str = "deletion") -> Failure:
        """The same failure, said of a removal (deletion, suspension) that waits until Zomro
        confirms it: never permanent, it holds until then."""
        return replace(
            self, message=f"{what} waits until Zomro confirms it: {self.message}", permanent=False
        )

    def to_kopf(self, retry: int) -> kopf.TemporaryError | kopf.PermanentError:
        if self.permanent:
            return kopf.PermanentError(f"{self.reason}: {self.message}")
        return kopf.TemporaryError(f"{self.reason}: {self.message}", delay=self.delay(retry))


def classify(exc: BaseException) -> Failure:
    """Name a failure for users. Messages come from our own error texts, which hold no secrets."""
    if isinstance(exc, InvalidSpecError):
        return Failure("InvalidSpec", str(exc), permanent=True)
    if isinstance(exc, InvalidStatusError):
        # Not permanent: once a person puts the status right, the next attempt proceeds.
        return Failure("InvalidStatus", str(exc), backoff=NEEDS_PERSON_BACKOFF)
    if isinstance(exc, CredentialsError):
        return Failure("CredentialsNotFound", str(exc), backoff=NEEDS_PERSON_BACKOFF)
    if isinstance(exc, StatusChangedError):  # another writer's create was recorded first
        return Failure(
            "Creating",
            "the resource changed while its create was being decided (a create of another "
            "operator on this namespace?); nothing was sent to Zomro, deciding again",
            backoff=CREATING_BACKOFF,
        )
    if isinstance(exc, CreatePendingError):  # heals by itself: look again soon
        return Failure(exc.reason, str(exc), retry_after=exc.retry_after, backoff=CREATING_BACKOFF)
    if isinstance(exc, ReconcileError):
        return Failure(exc.reason, str(exc), backoff=NEEDS_PERSON_BACKOFF)
    if isinstance(exc, z.InvalidValueError):
        fields = "; ".join(
            f"{field}: {', '.join(messages)}"
            for field, messages in sorted(exc.field_errors.items())
        )
        return Failure("InvalidSpec", f"Zomro refused the values: {fields or exc.message}", True)
    if isinstance(exc, z.AuthenticationError) and not exc.retryable:
        return Failure(
            "AuthFailed",
            f"Zomro refused the credentials: {exc.message}",
            backoff=NEEDS_PERSON_BACKOFF,
        )
    if isinstance(exc, z.AccessDeniedError):
        return Failure(
            "InstanceNotFound",
            f"the instance is unknown to Zomro or not owned by this account: {exc.message}",
            backoff=NEEDS_PERSON_BACKOFF,
        )
    if isinstance(exc, z.BackupProtectedError):
        return Failure(
            "Protected",
            f"the backup image is protected at Zomro; the deletion waits until it is "
            f"unprotected (in Zomro's panel): {exc.message}",
            backoff=PROTECTED_BACKOFF,
        )
    if isinstance(exc, z.BackupLimitError):
        return Failure(
            "BackupLimit",
            f"Zomro refuses more manual backups of the instance; delete some: {exc.message}",
            backoff=NEEDS_PERSON_BACKOFF,
        )
    if isinstance(exc, z.ZomroError):
        return Failure(
            "ZomroUnavailable",
            f"Zomro did not complete the request ({type(exc).__name__}): {exc.message}",
            retry_after=exc.retry_after,
        )
    return Failure("Error", f"unexpected {type(exc).__name__}; see the operator's log")
