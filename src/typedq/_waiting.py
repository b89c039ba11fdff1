"""Private: waiting for jobs to end, driven by the workers' events instead of polling.

``JobQueueManager.wait_for_completion`` used to read every id it waited for on every poll:
waiting on 20,000 ids cost 20,000 reads a poll, and on SQLite it slowed the drain it
waited for to 0.36× of the same drain measured by completion events. Here:

* the manager's workers get :class:`NotifyingEvents` in front of the application's
  event handler: when a job ends in this process (completed, dead, cancelled), every
  waiter holding its id drops it, and the waiter whose last id it was wakes at once;
* a waiter reads the ids that no event accounted for (jobs that ended in another process,
  before the wait, or without an event: dependents of a failed job) in the order given,
  each once after it ended: a poll reads ids from the first one not known to have ended
  and stops at the first that is still running. Polls are 1 ms apart at first, then
  doubling up to :data:`MAX_POLL_S`.

So waiting costs one read per poll plus at most one read per job, not one read per job
per poll.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from typing import Any, Final

from typedq.events import EventHandler
from typedq.job import TERMINAL_STATUSES, Job, JobProgress, JobStatus

__all__ = ["MAX_POLL_S", "CompletionWaiters", "NotifyingEvents", "wait_for_jobs"]

#: The longest pause between two reads of a waiter's first unfinished job, seconds.
MAX_POLL_S: Final = 0.05
_FIRST_POLL_S: Final = 0.001


class _Waiter:
    """The ids one ``wait_for_completion`` call still waits for."""

    __slots__ = ("remaining", "woken")

    def __init__(self, ids: Iterable[str]) -> None:
        self.remaining = set(ids)
        self.woken = threading.Event()

    def ended(self, job_id: str) -> None:
        remaining = self.remaining
        if job_id in remaining:
            remaining.discard(job_id)
            if not remaining:
                self.woken.set()


class CompletionWaiters:
    """The waiters of one manager, told by the event path when a job ended."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Replaced, never changed in place: ended() reads it without the lock.
        self._waiters: tuple[_Waiter, ...] = ()

    def ended(self, job_id: str) -> None:
        """A job ended in this process (its new status is committed)."""
        for waiter in self._waiters:
            waiter.ended(job_id)

    def add(self, ids: Iterable[str]) -> _Waiter:
        """Register a waiter for ``ids``; remove it with :meth:`remove`."""
        waiter = _Waiter(ids)
        with self._lock:
            self._waiters = (*self._waiters, waiter)
        return waiter

    def remove(self, waiter: _Waiter) -> None:
        """Forget a waiter."""
        with self._lock:
            self._waiters = tuple(w for w in self._waiters if w is not waiter)


class NotifyingEvents(EventHandler):
    """Forwards every event to ``inner``, then tells ``waiters`` about jobs that ended.

    Args:
        inner: the application's event handler.
        waiters: the manager's waiters.
    """

    def __init__(self, inner: EventHandler, waiters: CompletionWaiters) -> None:
        self.inner = inner
        self._ended = waiters.ended

    def _after(self, job: Job) -> None:
        if job.status in TERMINAL_STATUSES:
            self._ended(job.job_id)

    def on_job_submitted(self, job: Job) -> None:
        """Forwarded."""
        self.inner.on_job_submitted(job)

    def on_job_started(self, job: Job, worker_id: str) -> None:
        """Forwarded."""
        self.inner.on_job_started(job, worker_id)

    def on_job_completed(self, job: Job, result: Any) -> None:
        """Forwarded; the job ended."""
        try:
            self.inner.on_job_completed(job, result)
        finally:
            self._ended(job.job_id)

    def on_job_failed(self, job: Job, error: BaseException | str) -> None:
        """Forwarded; the job ended if it is DEAD (not when it will be retried)."""
        try:
            self.inner.on_job_failed(job, error)
        finally:
            self._after(job)

    def on_job_retried(self, job: Job, next_scheduled_at: float) -> None:
        """Forwarded."""
        self.inner.on_job_retried(job, next_scheduled_at)

    def on_job_dead(self, job: Job) -> None:
        """Forwarded; the job ended."""
        try:
            self.inner.on_job_dead(job)
        finally:
            self._ended(job.job_id)

    def on_job_progress(self, job: Job, progress: JobProgress) -> None:
        """Forwarded."""
        self.inner.on_job_progress(job, progress)

    def on_job_cancelled(self, job: Job) -> None:
        """Forwarded; the job ended."""
        try:
            self.inner.on_job_cancelled(job)
        finally:
            self._ended(job.job_id)


def wait_for_jobs(
    waiters: CompletionWaiters,
    job_ids: Iterable[str],
    status_of: Callable[[str], JobStatus],
    timeout: float | None,
) -> bool:
    """Wait until every job of ``job_ids`` has ended, or ``timeout`` seconds.

    Args:
        waiters: the manager's waiters (its workers' events shrink the set).
        job_ids: the ids to wait for.
        status_of: reads one job's status; raises ``JobNotFoundError`` for an unknown id.
        timeout: the longest wait, or None.

    Returns:
        True when every job ended, False at the timeout.
    """
    order = list(job_ids)  # a repeated id is read once: the first time removes it
    deadline = None if timeout is None else time.monotonic() + timeout
    waiter = waiters.add(order)
    remaining = waiter.remaining
    try:
        position = 0
        pause = _FIRST_POLL_S
        while True:
            if not remaining:
                return True
            # From the first id not known to have ended: read each until one still runs.
            while position < len(order):
                job_id = order[position]
                if job_id in remaining:
                    if status_of(job_id) not in TERMINAL_STATUSES:
                        break
                    remaining.discard(job_id)
                position += 1
            if position == len(order):
                return True  # every id read or removed by an event
            if deadline is None:
                wait = pause
            else:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                wait = min(pause, left)
            waiter.woken.wait(wait)
            pause = min(pause * 2, MAX_POLL_S)
    finally:
        waiters.remove(waiter)
