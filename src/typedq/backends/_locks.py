"""Named locks with fencing tokens: the handle every backend returns from ``Queue.lock``.

A lock is held by one *owner* at a time until its deadline (the queue's clock plus
``ttl_s``); each acquisition gets a **fencing token**, a number strictly greater than
every token given for that lock name on that store before it (across owners, releases,
expiries and, for durable stores, restarts). An owner that acts on shared state checks
``is_held(token)`` first, and a store that can, checks the token inside its own
transition (``Queue.advance_schedule`` does), so a holder whose lock expired while it
was paused can never act after the next holder started.

The backends implement four atomic transitions (``Queue.acquire_lock``, ``renew_lock``,
``release_lock``, and the read ``lock_state``); :class:`Lock` is the handle on top:
validation, the token it holds, blocking acquisition and context-manager use.

A lock is scoped like a job: by the queue's name and its store (a SQLite file, a Redis
prefix, one ``JobQueue`` object). Expiry is judged by the queue's clock, not by the
store's: the clocks of the hosts sharing a lock must agree to within a small part of
``ttl_s`` (NTP), as for job leases.
"""

from __future__ import annotations

import math
import os
import secrets
import time
from types import TracebackType
from typing import Final, NamedTuple, Protocol, TypeGuard

from typedq._identity import HOST
from typedq.errors import ConfigError

__all__ = [
    "MAX_LOCK_NAME",
    "Lock",
    "LockState",
    "LockStore",
    "check_lock_args",
    "check_owner",
    "new_owner",
]

#: The longest lock name (and owner), in characters.
MAX_LOCK_NAME: Final = 200
#: Blocking acquisition polls the store: first after this long, doubling up to the longest.
_FIRST_POLL_S: Final = 0.005
_MAX_POLL_S: Final = 0.1


class LockState(NamedTuple):
    """Who holds a lock: the owner, the fencing token and the deadline (epoch seconds)."""

    name: str
    owner: str
    token: int
    expires_at: float


class LockStore(Protocol):
    """The lock transitions of a store (every ``Queue`` has them; see ``base.Queue``)."""

    def acquire_lock(self, name: str, *, owner: str, ttl_s: float) -> int | None:
        """Take the lock if free or expired; the new token, or None."""
        ...

    def renew_lock(self, name: str, *, token: int, ttl_s: float) -> bool:
        """Extend the lock if ``token`` holds it."""
        ...

    def release_lock(self, name: str, *, token: int) -> bool:
        """Free the lock if ``token`` holds it."""
        ...

    def lock_state(self, name: str) -> LockState | None:
        """Who holds the lock now."""
        ...


def new_owner() -> str:
    """A fresh owner id: ``host:pid:random``, never the same for two handles."""
    return f"{HOST}:{os.getpid()}:{secrets.token_hex(4)}"


def _check_text(field: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_LOCK_NAME:
        raise ConfigError(field, value, f"a non-empty string of at most {MAX_LOCK_NAME} characters")


def check_owner(owner: object) -> None:
    """Refuse an owner that is not a non-empty string of at most :data:`MAX_LOCK_NAME` chars.

    Raises:
        ConfigError: naming the field ``owner``.
    """
    _check_text("owner", owner)


def _finite(value: object) -> TypeGuard[float]:
    """Whether ``value`` is a finite int or float (not a bool)."""
    return not isinstance(value, bool) and isinstance(value, int | float) and math.isfinite(value)


def check_lock_args(name: object, ttl_s: object) -> None:
    """Refuse a bad lock name or time to live.

    Raises:
        ConfigError: naming ``name`` (not a non-empty string of at most
            :data:`MAX_LOCK_NAME` characters) or ``ttl_s`` (not a finite number > 0).
    """
    _check_text("name", name)
    if not _finite(ttl_s) or ttl_s <= 0:
        raise ConfigError("ttl_s", ttl_s, "a finite number of seconds > 0")


class Lock:
    """A handle on the named lock ``name`` of a queue's store.

    Many handles (in many threads, processes or hosts) may point at one lock; the store
    decides who holds it. A handle remembers the token it last acquired (``token``),
    which :meth:`renew`, :meth:`release` and :meth:`is_held` use when given none.

    Args:
        store: the queue whose store keeps the lock.
        name: the lock's name (1-200 characters).
        ttl_s: how long an acquisition or renewal holds it (seconds, > 0).

    Raises:
        ConfigError: a bad ``name`` or ``ttl_s``.
    """

    def __init__(self, store: LockStore, name: str, ttl_s: float) -> None:
        check_lock_args(name, ttl_s)
        self._store = store
        self._name = name
        self._ttl_s = float(ttl_s)
        self._owner = new_owner()
        self._token: int | None = None

    @property
    def name(self) -> str:
        """The lock's name."""
        return self._name

    @property
    def ttl_s(self) -> float:
        """How long each acquisition or renewal holds the lock."""
        return self._ttl_s

    @property
    def owner(self) -> str:
        """The owner this handle acquires as when given none."""
        return self._owner

    @property
    def token(self) -> int | None:
        """The fencing token this handle acquired last (None when it holds none)."""
        return self._token

    def __repr__(self) -> str:
        return f"Lock({self._name!r}, ttl_s={self._ttl_s:g}, token={self._token!r})"

    def acquire(
        self, owner: str | None = None, *, blocking: bool = False, timeout_s: float | None = None
    ) -> int | None:
        """Take the lock when it is free or expired; return the new fencing token, or None.

        Not re-entrant: a lock held (even by this handle) is not free.

        Args:
            owner: who takes it (default: this handle's :attr:`owner`).
            blocking: wait until it can be taken (the store is polled, 5 ms doubling
                to 100 ms apart), at most ``timeout_s`` seconds (None: no limit).
            timeout_s: with ``blocking``, the longest wait (seconds, >= 0).

        Raises:
            ConfigError: a bad ``owner`` or ``timeout_s``.
        """
        who = self._owner if owner is None else owner
        check_owner(who)
        if timeout_s is not None and (not _finite(timeout_s) or timeout_s < 0):
            raise ConfigError("timeout_s", timeout_s, "None or a finite number of seconds >= 0")
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        pause = _FIRST_POLL_S
        while True:
            token = self._store.acquire_lock(self._name, owner=who, ttl_s=self._ttl_s)
            if token is not None:
                self._token = token
                return token
            if not blocking:
                return None
            left = math.inf if deadline is None else deadline - time.monotonic()
            if left <= 0:
                return None
            time.sleep(min(pause, left))
            pause = min(pause * 2, _MAX_POLL_S)

    def _given(self, token: int | None) -> int | None:
        return self._token if token is None else token

    def renew(self, token: int | None = None) -> bool:
        """Extend the lock by ``ttl_s`` from now if ``token`` (default: this handle's)
        still holds it; False when it was lost (expired, or taken by another)."""
        given = self._given(token)
        if given is None:
            return False
        held = self._store.renew_lock(self._name, token=given, ttl_s=self._ttl_s)
        if not held and given == self._token:
            self._token = None
        return held

    def release(self, token: int | None = None) -> bool:
        """Free the lock if ``token`` (default: this handle's) holds it; False when it
        no longer did (a stale token changes nothing)."""
        given = self._given(token)
        if given is None:
            return False
        if given == self._token:
            self._token = None
        return self._store.release_lock(self._name, token=given)

    def is_held(self, token: int | None = None) -> bool:
        """Whether ``token`` (default: this handle's) holds the lock now; one read.

        A holder checks this before it acts. The answer may turn stale at once (the
        deadline passes); stores that can also check the token in the transition
        that acts.
        """
        given = self._given(token)
        if given is None:
            return False
        state = self._store.lock_state(self._name)
        return state is not None and state.token == given

    def holder(self) -> LockState | None:
        """Who holds the lock now (None when it is free or expired)."""
        return self._store.lock_state(self._name)

    def __enter__(self) -> Lock:
        """Acquire the lock, waiting as long as it takes; return the handle."""
        self.acquire(blocking=True)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Release the lock (if this handle still holds it)."""
        self.release()
