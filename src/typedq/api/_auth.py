"""Bearer-token authentication of the REST API: admin tokens and read-only tokens.

Every route but ``/healthz`` (and the dashboard's static page, which holds no data)
needs ``Authorization: Bearer TOKEN``. A read-only token may call the reading routes
(``GET``); a mutating route (``POST``, ``PUT``, ``DELETE``) needs an admin token. A
missing or unknown token gets 401 (with ``WWW-Authenticate: Bearer``), a read-only token
on a mutating route 403. Tokens are compared in constant time (``hmac.compare_digest``
against every configured token, without stopping at the first match).
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Final

from typedq.errors import ConfigError

__all__ = ["ADMIN_ENV", "MIN_TOKEN_LENGTH", "READ_ENV", "Access", "Tokens"]

#: Environment variables holding the tokens (several may be given, comma-separated).
ADMIN_ENV: Final = "TYPEDQ_API_TOKEN"
READ_ENV: Final = "TYPEDQ_API_READ_TOKEN"
#: The shortest token accepted.
MIN_TOKEN_LENGTH: Final = 16


class Access(Enum):
    """What a request may do."""

    NONE = 0
    READ = 1
    ADMIN = 2


def _split(value: str | None) -> tuple[str, ...]:
    return tuple(part.strip() for part in (value or "").split(",") if part.strip())


@dataclass(frozen=True)
class Tokens:
    """The accepted tokens.

    Raises:
        ConfigError: a token is shorter than :data:`MIN_TOKEN_LENGTH`, or both lists
            share a token.
    """

    admin: tuple[str, ...] = ()
    read: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field, tokens in (("admin", self.admin), ("read", self.read)):
            for token in tokens:
                if len(token) < MIN_TOKEN_LENGTH:
                    raise ConfigError(
                        f"tokens.{field}", "<hidden>", f"tokens of at least {MIN_TOKEN_LENGTH} characters"
                    )
        if set(self.admin) & set(self.read):
            raise ConfigError("tokens.read", "<hidden>", "read-only tokens that are not also admin tokens")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Tokens:
        """The tokens of :data:`ADMIN_ENV` and :data:`READ_ENV` (comma-separated lists)."""
        env = os.environ if environ is None else environ
        return cls(admin=_split(env.get(ADMIN_ENV)), read=_split(env.get(READ_ENV)))

    @classmethod
    def of(cls, admin: Iterable[str] = (), read: Iterable[str] = ()) -> Tokens:
        """Tokens from any iterables."""
        return cls(admin=tuple(admin), read=tuple(read))

    @property
    def empty(self) -> bool:
        """Whether no token is configured."""
        return not self.admin and not self.read

    def check(self, presented: str | None) -> Access:
        """The access ``presented`` grants, compared in constant time with every token."""
        if not presented:
            return Access.NONE
        given = presented.encode()
        admin = read = False
        for token in self.admin:
            admin |= hmac.compare_digest(given, token.encode())
        for token in self.read:
            read |= hmac.compare_digest(given, token.encode())
        if admin:
            return Access.ADMIN
        return Access.READ if read else Access.NONE
