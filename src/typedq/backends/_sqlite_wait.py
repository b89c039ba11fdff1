"""Private: waking the threads of one process that wait for jobs in a SQLite file.

SQLite has no notifications. A wait ends at its timeout, at the next delayed job's due
time (read again after every commit of another connection, so a delayed job another
process adds ends the wait when it falls due, not at the next poll), when a thread of
this process adds or frees a job (:meth:`ReadySignal.wake`) or interrupts the waiters,
or when another connection (another process, or another queue object of this one)
commits. The last is seen by polling a counter that changes with
every commit of another connection (``PRAGMA data_version``, read from the WAL index in
shared memory: no page is read) every :data:`WATCH_S` seconds.

The queue objects of one process on one file share one :class:`ReadySignal`
(:func:`signal_for`), so a process polls once per file, however many queues and worker
threads it has: one waiting thread, the *watcher*, polls; the others sleep until it
wakes them, and one of them takes over when it leaves. A commit wakes every waiter of
the file, and each looks for its own queue's ready jobs.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Final

__all__ = ["WATCH_S", "ReadySignal", "signal_for"]

#: How often the watching thread looks for other connections' commits, seconds: the
#: longest a waiting worker takes to see a job another process added (idle, a process
#: wakes this often per file; under 1 % of a core here).
WATCH_S: Final = 0.01


class ReadySignal:
    """The waiters of this process for the jobs of one file (every queue object on it),
    and the calls that wake them."""

    def __init__(self, watch_s: float = WATCH_S) -> None:
        self._cond = threading.Condition()
        self._generation = 0
        self._waiting = 0
        self._watched = False  # a waiting thread polls for other connections' commits
        self._watch_s = watch_s

    def wake(self) -> None:
        """Wake the waiters, if any (a job was added or freed in this process)."""
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
        version: Callable[[], int],
    ) -> bool:
        """Block until a job may be ready, a wake-up, or ``timeout_s``; return ``has_ready()``.

        Args:
            timeout_s: the longest wait.
            has_ready: whether a job is ready now (read before and after waiting).
            next_due: when the next delayed job falls due, or None.
            now: the queue's clock.
            version: a number that changes whenever another connection commits, read
                on this thread's connection (``PRAGMA data_version``).
        """
        with self._cond:
            self._waiting += 1
            generation = self._generation
        try:
            if has_ready():
                return True
            limit = time.monotonic() + timeout_s

            def until_due() -> float:
                """The deadline: ``timeout_s`` from the start, or the next due time if sooner."""
                due = next_due()
                if due is None:
                    return limit
                return min(limit, time.monotonic() + max(0.0, due - now()))

            deadline = until_due()
            while (left := deadline - time.monotonic()) > 0:
                with self._cond:
                    if self._generation != generation:
                        break
                    if self._watched:
                        # Another thread watches: sleep until it (or this process) wakes
                        # the waiters, or until it leaves and this thread may take over.
                        self._cond.wait_for(lambda: self._generation != generation or not self._watched, left)
                        continue
                    self._watched = True
                try:
                    if self._watch(generation, deadline, has_ready, version, until_due):
                        return True
                finally:
                    with self._cond:
                        self._watched = False
                        self._cond.notify_all()
                break
            return has_ready()
        finally:
            with self._cond:
                self._waiting -= 1

    def _watch(
        self,
        generation: int,
        deadline: float,
        has_ready: Callable[[], bool],
        version: Callable[[], int],
        until_due: Callable[[], float],
    ) -> bool:
        """Poll ``version`` until a commit makes a job of this waiter ready (True), a
        wake-up or the deadline (False). After another connection's commit the deadline
        is read again (``until_due``): a delayed job another process added that falls due
        sooner ends the wait at its due time, not at the next poll."""
        # The counter is read before looking for a ready job: a commit after the look
        # changes it, so none falls between the two.
        seen = version()
        if has_ready():
            return True
        while (left := deadline - time.monotonic()) > 0:
            with self._cond:
                if self._generation == generation:
                    self._cond.wait(min(left, self._watch_s))
                if self._generation != generation:
                    return False
            current = version()
            if current != seen:
                seen = current
                # Another connection committed: every waiter on the file looks for its
                # own ready jobs (this one can tell only for its own queue).
                with self._cond:
                    self._generation += 1
                    generation = self._generation
                    self._cond.notify_all()
                if has_ready():
                    return True
                deadline = until_due()
        return False


_signals: weakref.WeakValueDictionary[tuple[int, str], ReadySignal] = weakref.WeakValueDictionary()
_signals_lock = threading.Lock()


def _after_fork() -> None:
    global _signals_lock
    _signals_lock = threading.Lock()  # another thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork)


def signal_for(path: str) -> ReadySignal:
    """The signal shared by this process's queue objects on the file at ``path``.

    Keyed by process too: a child made by ``fork()`` gets its own (the parent's may be
    held by threads that do not exist in the child).
    """
    key = (os.getpid(), path)
    with _signals_lock:
        signal = _signals.get(key)
        if signal is None:
            signal = _signals[key] = ReadySignal()
        return signal
