"""What the client logs in with, kept out of every repr, log line and message."""

from __future__ import annotations

import enum
import hashlib
from dataclasses import dataclass, field
from functools import cached_property

_FINGERPRINT_SALT = b"zomro-backup-operator/credentials-fingerprint/v1"
# Stretching makes a fingerprint seen in a log useless for testing password guesses cheaply,
# while a credential set is fingerprinted only once per Credentials object (cached).
_FINGERPRINT_ROUNDS = 20_000


class AuthMode(enum.Enum):
    """How the client authenticates: its own renewable session, or a session id given to it."""

    PASSWORD = "password"  # noqa: S105 - a mode name, not a secret
    TOKEN = "token"  # noqa: S105 - a mode name, not a secret


@dataclass(frozen=True)
class Credentials:
    """A Zomro credential set: ``username`` + ``password`` (renewable session) or a ``token``.

    ``token`` is a session id used as is; when both forms are present the password wins, because
    the client can renew a session it logged in to itself.
    """

    username: str | None = None
    password: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if not (self.username and self.password) and not self.token:
            raise ValueError("Zomro credentials need a username and a password, or a token")

    @property
    def mode(self) -> AuthMode:
        """Which way the client authenticates with this set."""
        return AuthMode.PASSWORD if self.username and self.password else AuthMode.TOKEN

    @cached_property
    def fingerprint(self) -> str:
        """A stable, non-reversible short id of this credential set, for cache keys and logs."""
        material = "\0".join((self.username or "", self.password or "", self.token or ""))
        digest = hashlib.pbkdf2_hmac(
            "sha256", material.encode("utf-8"), _FINGERPRINT_SALT, _FINGERPRINT_ROUNDS
        )
        return digest.hex()[:16]

    def secrets(self) -> tuple[str, ...]:
        """The values that must never appear in any output."""
        return tuple(value for value in (self.password, self.token) if value)
