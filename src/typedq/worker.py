"""``Worker``: the specification's worker thread.

A worker loops until stopped: it claims the best ready job from its queue (with a lease),
runs the handler registered for the job's type with the job's payload, and records the
outcome through the queue protocol:

* success: ``complete`` with the handler's return value;
* failure (any exception, ``SystemExit`` and ``KeyboardInterrupt`` included, or a
  timeout): when ``retry_count < max_retries``, ``fail`` with a retry time from the
  :class:`~typedq.retry.RetryPolicy`; otherwise ``bury`` (DEAD) and a copy goes to the
  dead-letter queue. Every retry and dead letter is logged with the job's id, type,
  retry count and error;
* no handler for the type: DEAD at once with a ``NoHandlerError`` (never dropped).

No lock is held while a handler runs. When nothing is ready the worker blocks in
``queue.wait_ready`` until a job is added, the next delayed job falls due, or
``poll_interval`` passes: it never spins.

A handler with ``timeout_seconds`` runs in a helper thread the worker waits on; past the
timeout the job fails with :class:`~typedq.errors.JobTimeoutError`. Python cannot kill
a thread, so the helper is abandoned, reported in ``Worker.abandoned_threads``, and its
late result is discarded.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import traceback as tb_module
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from typedq._identity import new_worker_id
from typedq._validate import require_number
from typedq.backends.base import Claim, Queue
from typedq.clock import Clock
from typedq.errors import (
    DeserializationError,
    JobTimeoutError,
    NoHandlerError,
    PayloadValidationError,
    PayloadVersionError,
    SerializationError,
    StaleLeaseError,
)
from typedq.events import EventHandler, safe_call
from typedq.job import MAX_TRACEBACK, TRACEBACK_KEY, Job, JobStatus
from typedq.leases import LeaseKeeper, check_lease_settings
from typedq.retry import RetryPolicy

__all__ = [
    "Handler",
    "Worker",
    "WorkerStats",
    "describe_error",
    "new_worker_id",
]

logger = logging.getLogger("typedq.worker")

#: A handler takes a job's payload and returns its result. A handler object with a true
#: ``takes_job`` attribute is given the whole ``Job`` instead (the typed API's wrappers).
Handler = Callable[[Any], Any]

#: Failures that no retry can fix: the job goes to the dead-letter queue at once, to be
#: replayed after a deploy that knows its payload.
_PERMANENT = (PayloadVersionError, PayloadValidationError, DeserializationError)

def describe_error(exc: BaseException) -> str:
    """Return ``"Type: message"`` for an exception, even one whose ``__str__`` raises."""
    try:
        text = str(exc)
    except Exception:
        text = f"<unprintable {type(exc).__name__}>"
    name = type(exc).__name__
    return f"{name}: {text}" if text else name


def _format_traceback(exc: BaseException) -> str | None:
    try:
        return "".join(tb_module.format_exception(exc))
    except Exception:
        return None


@dataclass
class WorkerStats:
    """Counters a worker keeps; only its own thread writes them."""

    completed: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    stale: int = 0


class Worker(threading.Thread):
    """A thread that runs jobs from one queue.

    Args:
        queue: the queue to take jobs from.
        handlers: job type → handler; read live, so handlers added later are seen.
        poll_interval: the longest wait, in seconds, before looking for work again.
        dead_letter_queue: where a copy of each dead job is put (the manager's
            dead-letter ``JobQueue``), or None.
        base_delay: the retry backoff unit, when ``retry_policy`` is not given.
        worker_id: a readable prefix for the id; the id always adds host, pid and a
            random part, so two workers never share one.
        event_handler: lifecycle callbacks, or None.
        retry_policy: the backoff; ``RetryPolicy(base_delay=base_delay)`` by default.
        lease_s: how long a claim is leased before a reaper may give it back.
        heartbeat_s: how often the lease of a running job is renewed.
        lease_keeper: a shared keeper; the worker runs its own when None.
        clock: the clock for retry times; the queue's by default.

    Raises:
        ConfigError: an interval is not positive, or ``lease_s <= 2 × heartbeat_s``.
    """

    def __init__(
        self,
        queue: Queue,
        handlers: Mapping[str, Handler],
        poll_interval: float = 0.1,
        *,
        dead_letter_queue: Queue | None = None,
        base_delay: float = 1.0,
        worker_id: str | None = None,
        event_handler: EventHandler | None = None,
        retry_policy: RetryPolicy | None = None,
        lease_s: float = 30.0,
        heartbeat_s: float = 10.0,
        lease_keeper: LeaseKeeper | None = None,
        clock: Clock | None = None,
    ) -> None:
        require_number("poll_interval", poll_interval, minimum=0, strict=True)
        check_lease_settings(lease_s, heartbeat_s)
        self.worker_id = new_worker_id(worker_id)
        super().__init__(name=self.worker_id, daemon=True)
        self.queue = queue
        self.handlers = handlers
        self.poll_interval = float(poll_interval)
        self.dead_letter_queue = dead_letter_queue
        self.retry_policy = retry_policy or RetryPolicy(base_delay=base_delay)
        self.event_handler = event_handler or EventHandler()
        self.lease_s = float(lease_s)
        self.clock = clock or queue.clock
        self._own_keeper = lease_keeper is None
        self.lease_keeper = lease_keeper or LeaseKeeper(lease_s=lease_s, heartbeat_s=heartbeat_s)
        self.stats = WorkerStats()
        self.current_job_id: str | None = None
        self.abandoned_threads: list[threading.Thread] = []
        self._stop_event = threading.Event()

    # -- control ------------------------------------------------------------------------

    def stop(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Ask the worker to exit after its current job; return whether it has exited.

        Args:
            wait: join the thread (up to ``timeout`` seconds).
            timeout: how long to wait when ``wait`` is true (None: no limit).
        """
        self._stop_event.set()
        self.queue.interrupt()
        if wait and self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        return not self.is_alive()

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stop_event.is_set()

    # -- the loop -----------------------------------------------------------------------

    def run(self) -> None:
        """Claim and run jobs until stopped."""
        if self._own_keeper:
            self.lease_keeper.start()
        queue = self.queue
        claim = queue.claim
        worker_id = self.worker_id
        lease_s = self.lease_s
        stopped = self._stop_event.is_set
        execute = self._execute
        try:
            while not stopped():
                try:
                    claimed = claim(worker_id, lease_s=lease_s)
                    if claimed is None:
                        queue.wait_ready(self.poll_interval)
                        continue
                except Exception:
                    logger.exception("worker %s could not claim from %r; backing off", worker_id, queue.name)
                    self._stop_event.wait(self.poll_interval)
                    continue
                execute(claimed)
        finally:
            if self._own_keeper:
                self.lease_keeper.stop()

    def _execute(self, claimed: Claim) -> None:
        job, token, _ = claimed
        job_id = job.job_id
        queue = self.queue
        self.current_job_id = job_id
        try:
            handler = self.handlers.get(job.job_type)
            if handler is None:
                # Not an attempt (nothing ran): straight to the dead-letter queue.
                exc = NoHandlerError(job.job_type, list(self.handlers))
                dead = self._bury(job, token, describe_error(exc), None)
                if dead is not None:
                    safe_call(self.event_handler.on_job_dead, dead)
                return
            events = self.event_handler
            safe_call(events.on_job_started, job, self.worker_id)
            keeper = self.lease_keeper
            keeper.add(queue, job_id, token)
            try:
                timeout = job.timeout_seconds
                if timeout is None:
                    result = handler(job) if getattr(handler, "takes_job", False) else handler(job.payload)
                else:
                    result = self._call_with_timeout(handler, job, timeout)
            except BaseException as exc:  # a handler may raise anything, SystemExit too
                keeper.discard(queue, job_id)
                self._failed(job, token, exc)
                return
            keeper.discard(queue, job_id)
            try:
                done = queue.complete(job_id, token=token, result=result)
            except StaleLeaseError as exc:
                self.stats.stale += 1
                logger.warning("result of job %s discarded: %s", job_id, exc)
                return
            except SerializationError as exc:
                self._failed(job, token, exc)
                return
            self.stats.completed += 1
            safe_call(events.on_job_completed, done, result)
        except Exception:
            # Storage failed while recording the outcome: the lease expires and a reaper
            # gives the job back, so nothing is lost; the worker carries on.
            logger.exception("worker %s could not record the outcome of job %s", self.worker_id, job_id)
        finally:
            self.current_job_id = None

    def _call_with_timeout(self, handler: Handler, job: Job, timeout: float) -> Any:
        outcome: list[tuple[bool, Any]] = []
        done = threading.Event()

        def target() -> None:
            try:
                arg = job if getattr(handler, "takes_job", False) else job.payload
                outcome.append((True, handler(arg)))
            except BaseException as exc:  # handed back to the worker thread
                outcome.append((False, exc))
            finally:
                done.set()

        helper = threading.Thread(target=target, name=f"{self.worker_id}:job:{job.job_id}", daemon=True)
        helper.start()
        if not done.wait(timeout):
            self.abandoned_threads.append(helper)
            logger.error(
                "job %s (%s) exceeded its %ss timeout; its thread %s keeps running "
                "(Python threads cannot be killed) and its result will be discarded",
                job.job_id, job.job_type, timeout, helper.name,
            )
            raise JobTimeoutError(job.job_id, timeout)
        ok, value = outcome[0]
        if ok:
            return value
        raise value

    # -- failures -----------------------------------------------------------------------

    def _failed(self, job: Job, token: int, exc: BaseException) -> None:
        error = describe_error(exc)
        trace = _format_traceback(exc)
        events = self.event_handler
        if isinstance(exc, _PERMANENT) or not self.retry_policy.should_retry(
            job.retry_count, job.max_retries
        ):
            dead = self._bury(job, token, error, trace)
            if dead is not None:
                self.stats.failed += 1
                safe_call(events.on_job_failed, dead, exc)
                safe_call(events.on_job_dead, dead)
            return
        retry_number = job.retry_count + 1
        retry_at = self.clock.now() + self.retry_policy.delay(retry_number)
        try:
            updated = self.queue.fail(
                job.job_id, token=token, error=error, retry_at=retry_at, traceback=trace
            )
        except StaleLeaseError as stale:
            self.stats.stale += 1
            logger.warning("failure of job %s not recorded: %s", job.job_id, stale)
            return
        self.stats.failed += 1
        self.stats.retried += 1
        logger.warning(
            "job %s (%s) failed; retry %d of %d at %.3f: %s",
            job.job_id, job.job_type, retry_number, job.max_retries, retry_at, error,
        )
        safe_call(events.on_job_failed, updated, exc)
        safe_call(events.on_job_retried, updated, retry_at)

    def _bury(self, job: Job, token: int, error: str, trace: str | None) -> Job | None:
        """Move the job to DEAD; return it, or None when the lease was already lost.

        The dead-letter copy is stored *before* the job turns DEAD, so whoever sees the
        job DEAD finds it in the dead-letter queue (and can replay it at once).
        """
        dlq = self.dead_letter_queue
        if dlq is not None:
            snapshot = Job.from_dict(job.to_dict())
            snapshot.status = JobStatus.DEAD
            snapshot.error = error
            snapshot.lease_until = None
            snapshot.finished_at = self.clock.now()
            if trace is not None:
                snapshot.metadata[TRACEBACK_KEY] = trace[-MAX_TRACEBACK:]
            _put_dead_letter(dlq, snapshot)
        try:
            dead = self.queue.bury(job.job_id, token=token, error=error, traceback=trace)
        except StaleLeaseError as stale:
            if dlq is not None:
                with contextlib.suppress(KeyError):
                    dlq.delete(job.job_id)
            self.stats.stale += 1
            logger.warning("death of job %s not recorded: %s", job.job_id, stale)
            return None
        self.stats.dead += 1
        logger.error(
            "job %s (%s) is dead after %d retries and moved to the dead-letter queue: %s",
            job.job_id, job.job_type, dead.retry_count, error,
        )
        return dead


def send_to_dead_letter(dead_letter_queue: Queue | None, dead: Job) -> None:
    """Put a snapshot of a DEAD job into the dead-letter queue (replacing an older one)."""
    if dead_letter_queue is not None:
        _put_dead_letter(dead_letter_queue, Job.from_dict(dead.to_dict()))


def _put_dead_letter(dead_letter_queue: Queue, snapshot: Job) -> None:
    with contextlib.suppress(KeyError):
        dead_letter_queue.delete(snapshot.job_id)
    dead_letter_queue.enqueue(snapshot)
