"""Coordination state of the in-memory queue: named locks and their fence counters.

The state lives in the ``JobQueue`` object and under its one lock: a lock of a memory
queue is shared by the threads that use that object, and by nothing else (another
``JobQueue``, another process, has locks of its own). Fence counters live as long as
the object.
"""

from __future__ import annotations

import threading

from typedq.backends._locks import Lock, LockState, check_lock_args, check_owner
from typedq.clock import Clock

__all__ = ["MemoryCoordination"]


class MemoryCoordination:
    """Named locks of one ``JobQueue`` object; its lock guards them."""

    _lock: threading.Lock
    _clock: Clock

    def _init_coordination(self) -> None:
        self._held: dict[str, LockState] = {}
        self._fences: dict[str, int] = {}

    def lock(self, name: str, ttl_s: float) -> Lock:
        """A handle on lock ``name`` of this queue object; see :meth:`Queue.lock`."""
        return Lock(self, name, ttl_s)

    def acquire_lock(self, name: str, *, owner: str, ttl_s: float) -> int | None:
        """Take the lock if free or expired; see :meth:`Queue.acquire_lock`."""
        check_lock_args(name, ttl_s)
        check_owner(owner)
        with self._lock:
            now = self._clock.now()
            held = self._held.get(name)
            if held is not None and held.expires_at > now:
                return None
            token = self._fences[name] = self._fences.get(name, 0) + 1
            self._held[name] = LockState(name, owner, token, now + ttl_s)
            return token

    def renew_lock(self, name: str, *, token: int, ttl_s: float) -> bool:
        """Extend the lock if ``token`` holds it; see :meth:`Queue.renew_lock`."""
        check_lock_args(name, ttl_s)
        with self._lock:
            now = self._clock.now()
            held = self._held.get(name)
            if held is None or held.token != token or held.expires_at <= now:
                return False
            self._held[name] = held._replace(expires_at=now + ttl_s)
            return True

    def release_lock(self, name: str, *, token: int) -> bool:
        """Free the lock if ``token`` holds it; see :meth:`Queue.release_lock`."""
        with self._lock:
            held = self._held.get(name)
            if held is None or held.token != token:
                return False
            del self._held[name]
            return held.expires_at > self._clock.now()

    def lock_state(self, name: str) -> LockState | None:
        """Who holds the lock now; see :meth:`Queue.lock_state`."""
        with self._lock:
            held = self._held.get(name)
            if held is None or held.expires_at <= self._clock.now():
                return None
            return held
