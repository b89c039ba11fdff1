"""Private: waking the threads of one process that wait for a SQLite queue's jobs.

Another process cannot notify this one (SQLite has no notifications): a wait ends at its
timeout, at the next delayed job's due time, or when a thread of this process adds or
frees a job (:meth:`ReadySignal.wake`) or interrupts the waiters.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

__all__ = ["ReadySignal"]


class ReadySignal:
    """The waiters of one ``SQLiteQueue`` object, and the calls that wake them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._waiting = 0

    def wake(self) -> None:
        """Wake the waiters, if any (a job was added or freed here)."""
        if self._waiting:
            self.interrupt()

    def interrupt(self) -> None:
        """Wake every waiter."""
        with self._cond:
            self._generation += 1
            self._cond.notify_all()

    def wait(
        self,
        timeout_s: float,
        *,
        has_ready: Callable[[], bool],
        next_due: Callable[[], float | None],
        now: Callable[[], float],
    ) -> bool:
        """Block until a job may be ready, a wake-up, or ``timeout_s``; return ``has_ready()``.

        Args:
            timeout_s: the longest wait.
            has_ready: whether a job is ready now (read before and after waiting).
            next_due: when the next delayed job falls due, or None.
            now: the queue's clock.
        """
        with self._cond:
            self._waiting += 1
            generation = self._generation
        try:
            if has_ready():
                return True
            wait = timeout_s
            due = next_due()
            if due is not None:
                wait = min(wait, max(0.0, due - now()))
            if wait > 0:
                with self._cond:
                    self._cond.wait_for(lambda: self._generation != generation, wait)
            return has_ready()
        finally:
            with self._cond:
                self._waiting -= 1
