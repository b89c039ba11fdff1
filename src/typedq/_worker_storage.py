"""The worker's handling of a failing storage: completions it could not record, claims
it could not make, and jobs to give back when it stops (a mixin of ``Worker``).

A storage outage (``typedq._outage``) is logged once per outage. A completion the storage
refused is held, its lease kept renewed, and written again after a jittered exponential
backoff: the worker's write backoff for a busy or refusing storage, its reconnect
backoff for one that cannot be reached. A claim that failed waits the reconnect backoff.
Jobs given back at stop stop at the first storage failure (``give_back``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from typedq._outage import Backoff, Outage, is_outage
from typedq._worker_support import give_back
from typedq.backends.base import Claim, Queue
from typedq.errors import BackendUnavailableError
from typedq.job import Job
from typedq.leases import LeaseKeeper

__all__ = ["StorageFailures"]

logger = logging.getLogger("typedq.worker")


class StorageFailures:
    """What ``Worker`` does when its queue fails; ``Worker`` sets every attribute below."""

    queue: Queue
    lease_keeper: LeaseKeeper
    worker_id: str
    outage: Outage
    _reconnect: Backoff
    _write_backoff: Backoff
    _stop_event: threading.Event
    _buffer: deque[Claim]
    _pending: list[tuple[Job, int, Any]]
    _pending_since: float

    def _claim_failed(self, exc: Exception) -> None:
        """A claim (or the wait for work) failed: log it, wait the reconnect backoff."""
        if is_outage(exc):
            self.outage.failed(exc, f"claim from {self.queue.name!r}")
        else:
            logger.exception(
                "worker %s could not claim from %r; backing off", self.worker_id, self.queue.name
            )
        self._stop_event.wait(self._reconnect.next())

    def _written(self) -> None:
        """A write succeeded: the next failure backs off from the start again."""
        self._write_backoff.reset()
        self._reconnect.reset()
        if self.outage.active:
            self.outage.ok()

    def _hold_unrecorded(self, pending: list[tuple[Job, int, Any]], exc: Exception, *, wait: bool) -> None:
        """Keep completions the storage refused: leases renewed, the write retried later."""
        unreachable = isinstance(exc, BackendUnavailableError)
        backoff = (self._reconnect if unreachable else self._write_backoff).next()
        if is_outage(exc):
            self.outage.failed(exc, f"record {len(pending)} completion(s) (their leases are kept)")
        else:
            logger.error(
                "worker %s could not record %d completion(s); keeping their leases and retrying in %.2f s",
                self.worker_id, len(pending), backoff, exc_info=exc,
            )
        keeper = self.lease_keeper
        for job, token, _ in pending:
            keeper.add(self.queue, job.job_id, token)
        if not self._pending:
            self._pending_since = time.monotonic()
        self._pending[:0] = pending
        if wait:
            self._stop_event.wait(backoff)

    def _give_back_unrecorded(self) -> None:
        """At stop: give back the jobs whose completions could not be recorded."""
        pending, self._pending = self._pending, []
        held = [(job.job_id, token) for job, token, _ in pending]
        for job_id in give_back(self.queue, self.lease_keeper, held, self.worker_id):
            logger.warning("job %s given back: its completion could not be recorded", job_id)

    def give_back_unstarted(self) -> list[str]:
        """Release the jobs this worker claimed but has not started; return their ids.

        Safe from any thread (each claim is taken from the buffer once): the worker
        calls it when it stops, and a caller giving up on a stuck worker may call it
        too, so those jobs run elsewhere at once instead of after their lease.
        """
        held: list[tuple[str, int]] = []
        while True:
            try:
                job, token, _ = self._buffer.popleft()
            except IndexError:
                break
            held.append((job.job_id, token))
        return give_back(self.queue, self.lease_keeper, held, self.worker_id)
