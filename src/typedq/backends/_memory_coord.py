"""Coordination state of the in-memory queue: named locks, their fence counters, and
the queue's schedules.

The state lives in the ``JobQueue`` object and under its one lock: a lock of a memory
queue is shared by the threads that use that object, and by nothing else (another
``JobQueue``, another process, has locks of its own). Fence counters live as long as
the object. Schedules are kept as their definition JSON and state, like the durable
backends keep them, so a caller's later change to a payload dict never reaches them.
"""

from __future__ import annotations

import threading
from typing import Any

from typedq.backends._locks import Lock, LockState, check_lock_args, check_owner
from typedq.backends._schedules import ScheduleEntry, stored_definition
from typedq.clock import Clock
from typedq.errors import ScheduleNotFoundError

__all__ = ["MemoryCoordination"]


class MemoryCoordination:
    """Named locks of one ``JobQueue`` object; its lock guards them."""

    _lock: threading.Lock
    _clock: Clock
    _name: str

    def _init_coordination(self) -> None:
        self._held: dict[str, LockState] = {}
        self._fences: dict[str, int] = {}
        # name -> [definition JSON, next_run_at, last_run_at, paused]
        self._schedules: dict[str, list[Any]] = {}

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

    # -- schedules ----------------------------------------------------------------------

    def put_schedule(self, entry: ScheduleEntry) -> ScheduleEntry:
        """Store a schedule; see :meth:`Queue.put_schedule`."""
        definition = stored_definition(entry)
        with self._lock:
            row = self._schedules.get(entry.name)
            if row is None:
                row = [definition, entry.next_run_at, entry.last_run_at, entry.paused]
                self._schedules[entry.name] = row
            elif row[0] != definition:
                row[0], row[1] = definition, entry.next_run_at
            return ScheduleEntry.from_stored(*row)

    def get_schedule(self, name: str) -> ScheduleEntry:
        """The schedule ``name``; see :meth:`Queue.get_schedule`."""
        with self._lock:
            row = self._schedules.get(name)
            if row is None:
                raise ScheduleNotFoundError(name, queue=self._name)
            return ScheduleEntry.from_stored(*row)

    def list_schedules(self) -> list[ScheduleEntry]:
        """Every schedule, by name; see :meth:`Queue.list_schedules`."""
        with self._lock:
            rows = [self._schedules[name] for name in sorted(self._schedules)]
            return [ScheduleEntry.from_stored(*row) for row in rows]

    def remove_schedule(self, name: str) -> bool:
        """Delete a schedule; see :meth:`Queue.remove_schedule`."""
        with self._lock:
            return self._schedules.pop(name, None) is not None

    def pause_schedule(self, name: str, *, paused: bool, next_run_at: float | None = None) -> ScheduleEntry:
        """Pause or resume a schedule; see :meth:`Queue.pause_schedule`."""
        with self._lock:
            row = self._schedules.get(name)
            if row is None:
                raise ScheduleNotFoundError(name, queue=self._name)
            row[3] = bool(paused)
            if next_run_at is not None:
                row[1] = next_run_at
            return ScheduleEntry.from_stored(*row)

    def advance_schedule(
        self,
        name: str,
        *,
        expected: float,
        next_run_at: float | None,
        last_run_at: float | None,
        fence: tuple[str, int] | None = None,
    ) -> bool:
        """Compare-and-set a schedule's state; see :meth:`Queue.advance_schedule`."""
        with self._lock:
            if fence is not None:
                held = self._held.get(fence[0])
                if held is None or held.token != fence[1] or held.expires_at <= self._clock.now():
                    return False
            row = self._schedules.get(name)
            if row is None or row[1] != expected:
                return False
            row[1], row[2] = next_run_at, last_run_at
            return True
