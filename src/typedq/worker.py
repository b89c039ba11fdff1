"""``Worker``: the specification's worker thread.

A worker loops until stopped: it claims the best ready job from its queue (with a lease),
runs the handler registered for the job's type with the job's payload, and records the
outcome through the queue protocol:

* success: ``complete`` with the handler's return value;
* failure (any exception, ``SystemExit`` and ``KeyboardInterrupt`` included, or a
  timeout): when ``retry_count < max_retries`` and the policy retries the error, ``fail``
  with a retry time from the :class:`~typedq.retry.RetryPolicy` (the job's own, stored
  with it; else its type's, ``failure_rules``; else the worker's), or from the
  handler's :class:`~typedq.retry.Retry`; otherwise (a
  :class:`~typedq.errors.PermanentError` too) ``bury``: DEAD, with a copy put into the
  dead-letter queue in the same transition (``Queue.bury(dead_letter=...)``), so a crash
  can never leave a dead job without its dead letter. Every retry and dead letter is
  logged with the job's id, type, retry count and error;
* a final failure (the job is DEAD) then calls its type's ``on_failure`` and the
  worker's ``on_dead`` callback, once each, with the job and the error, after the burial
  is recorded: a callback that raises is logged and changes nothing;
* a handler unregistered between the claim and the run: DEAD at once with a
  ``NoHandlerError`` (never dropped).

A worker claims only jobs of the types it has handlers for (``Queue.claim`` with
``job_types``): jobs of other types wait for workers that handle them, so a worker of an
older or newer deploy never buries them. It registers itself in its queue's worker
registry (``Queue.register_worker``) when it starts, renews the entry every heartbeat
(with its counters and current job) and removes it when it stops.

A completion the queue could not record (the storage failed: a held write lock, a full
disk) is not dropped: the worker keeps renewing the job's lease and retries the write with
a jittered exponential backoff (capped at :data:`WRITE_BACKOFF_MAX_S`), claiming nothing
new meanwhile. When it stops, it tries once more and then gives the jobs back
(``Queue.release``); what it could not give back is rescued once the leases expire.

Batches: while its jobs are quick (handlers under :data:`BATCH_WINDOW_S` on average), a
worker claims up to ``batch_size`` jobs at once and records their completions together
with one ``Queue.complete_many`` (a group commit: one transaction on SQLite instead of
one per job). A completion is still committed before it is reported (event, stats,
waiters): it is held only while the worker's other claimed jobs run, never longer than
:data:`FLUSH_AFTER_S` before the next job starts, and never across a job of a type that
is slow (or not yet seen): those are committed first. The batch shrinks to one as soon
as jobs take longer than the window, so a ready job never waits behind a slow batch.
(The one case left: a job of a quick type that suddenly runs long holds the completions
of the few quick jobs before it in its batch until it ends; their leases are renewed
meanwhile.) Jobs claimed but not started when the worker stops are given back
(``Queue.release``: not counted as a failure).

No lock is held while a handler runs. When nothing is ready the worker blocks in
``queue.wait_ready`` until a job is added, the next delayed job falls due, or
``poll_interval`` passes: it never spins.

An ``async def`` handler run by a thread worker gets an event loop of its own for each
job (``asyncio.run``); the manager runs a queue whose handlers are all ``async def`` with
:class:`~typedq.aworker.AsyncWorker` instead, many jobs at once on one loop.

Each run gets a :class:`~typedq.context.JobContext`, handed to a handler that takes one
(``typedq.context.call_handler``): progress and log lines it reports are stored with the
job, and it learns that its job's cancellation was requested, from this process at once
(``Worker.request_cancel``) or from any other within one heartbeat (the lease keeper's
``Queue.renew_lease`` reports it). A handler that stops raises
:class:`~typedq.errors.JobCancelledError` and the job is recorded CANCELLED. One that is
still running ``cancel_grace_s`` later is forced: the worker records the job CANCELLED
itself (fenced by the lease token), refuses the handler's late outcome, and reports the
thread in ``Worker.cancel_overdue`` (a worker process is then replaced).

A handler with ``timeout_seconds`` runs in a helper thread the worker waits on; past the
timeout the job fails with :class:`~typedq.errors.JobTimeoutError`. Python cannot kill
a thread, so the helper is abandoned, reported in ``Worker.abandoned_threads``, and its
late result is discarded.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final

from typedq._identity import HOST, new_worker_id, stop_pid
from typedq._outage import Backoff, Outage, is_outage
from typedq._queue_group import members
from typedq._timefmt import when
from typedq._validate import require_number
from typedq._worker_failures import call_failure_callbacks, policy_of
from typedq._worker_metrics import WorkerMetrics
from typedq._worker_storage import StorageFailures
from typedq._worker_support import (
    VERSION,
    call_with_timeout,
    describe_error,
    format_traceback,
    run_handler,
)
from typedq.backends.base import Claim, Completion, Queue, WorkerInfo
from typedq.clock import Clock
from typedq.context import JobContext, accepts_context
from typedq.errors import (
    DeserializationError,
    JobCancelledError,
    JobNotFoundError,
    NoHandlerError,
    PayloadValidationError,
    PayloadVersionError,
    PermanentError,
    SerializationError,
    StaleLeaseError,
)
from typedq.events import EventHandler, safe_call
from typedq.job import Job
from typedq.leases import LeaseKeeper, check_lease_settings
from typedq.retry import FailureCallback, FailureRules, Retry, RetryPolicy

__all__ = [
    "DEFAULT_DLQ_MAX",
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
#: replayed after a deploy that knows its payload (or, for a handler's PermanentError,
#: after whatever it says is fixed).
_PERMANENT = (PayloadVersionError, PayloadValidationError, DeserializationError, PermanentError)

#: A worker claims more than one job at a time only while its handlers take less than this
#: on average (seconds): a batch then holds about this much work (``batch_size`` caps
#: it). A job type whose handler takes this long is "slow". Handler time, not the whole
#: cycle: waiting for the write lock or the CPU (other worker processes) must not shrink
#: the batches, which would only add transactions under load.
BATCH_WINDOW_S: Final = 0.01
#: The longest a finished job's completion waits for its batch before being committed.
FLUSH_AFTER_S: Final = 0.01
#: The default ``batch_size``: the most jobs claimed, or completions committed, at once.
DEFAULT_BATCH_SIZE: Final = 250
#: The default ``dlq_max``: the most dead letters a dead-letter queue keeps.
DEFAULT_DLQ_MAX: Final = 10_000
#: The default ``cancel_grace_s``: how long a running job's handler has to stop after its
#: cancellation was requested before the worker records it CANCELLED itself.
DEFAULT_CANCEL_GRACE_S: Final = 10.0
#: Weight of the latest job in the running average of job durations.
_EWMA: Final = 0.2
#: The first and the longest wait before writing completions again after a failed write.
WRITE_BACKOFF_MIN_S: Final = 0.05
WRITE_BACKOFF_MAX_S: Final = 2.0
#: The bounds of the first and the longest wait before calling the storage again after it
#: could not be reached (claims, and completions to write): doubled after each failure,
#: each wait drawn from 5-100 % of its bound, so workers that lost the storage together
#: (a restart, an outage) spread their attempts over seconds, not in lockstep.
RECONNECT_MIN_S: Final = 2.0
RECONNECT_MAX_S: Final = 4.0
#: The first and the longest wait before claiming again when, on a queue with a limit
#: (a claim policy's concurrency limit or rate), a claim took nothing though the wait
#: before it found jobs of the worker's types ready: doubled each time it happens again
#: in a row, each wait drawn from 50-100 % of its bound (never longer than the poll
#: interval). Without it the queue reports the jobs the limit holds back ready at once,
#: and the worker claims in a hot loop until the limit lifts.
HELD_BACK_MIN_S: Final = 0.002
HELD_BACK_MAX_S: Final = 0.05


@dataclass
class WorkerStats:
    """Counters a worker keeps; only its own thread writes them."""

    completed: int = 0
    failed: int = 0
    retried: int = 0
    dead: int = 0
    stale: int = 0


class Worker(StorageFailures, threading.Thread):
    """A thread that runs jobs from one queue.

    Args:
        queue: the queue to take jobs from.
        handlers: job type → handler; read live, so handlers added later are seen.
        poll_interval: the longest wait, in seconds, before looking for work again.
        dead_letter_queue: where a copy of each dead job is put, in the transition that
            buries it (the manager's dead-letter queue: a queue of the same store as
            ``queue``), or None.
        dlq_max: the most dead letters ``dead_letter_queue`` keeps; the oldest beyond
            are dropped as a job is buried (None: no limit).
        base_delay: the retry backoff unit, when ``retry_policy`` is not given.
        worker_id: a readable prefix for the id; the id always adds host, pid and a
            random part, so two workers never share one.
        event_handler: lifecycle callbacks, or None.
        retry_policy: the backoff; ``RetryPolicy(base_delay=base_delay)`` by default.
        lease_s: how long a claim is leased before a reaper may give it back.
        heartbeat_s: how often the lease of a running job is renewed.
        lease_keeper: a shared keeper; the worker runs its own when None.
        clock: the clock for retry times; the queue's by default.
        cancel_grace_s: how long a running job's handler has to stop once its
            cancellation was requested (it sees ``ctx.cancelled``) before the worker
            records the job CANCELLED itself and refuses its late result (None: never).
        batch_size: the most jobs claimed at once and completions committed together
            while jobs are quick (see the module docstring); 1 claims and completes one
            job at a time.
        failure_rules: job type → its retry policy and ``on_failure`` callback; read
            live, like ``handlers``.
        on_dead: called once per job that dies here, with the job and the error.

    Raises:
        ConfigError: an interval is not positive, ``lease_s <= 2 × heartbeat_s``,
            ``batch_size`` is not an int from 1 to 1000, ``dlq_max`` not None or an int
            >= 1, or ``dead_letter_queue`` is not another queue of ``queue``'s store
            (``Queue.check_dead_letter``).
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
        batch_size: int = DEFAULT_BATCH_SIZE,
        dlq_max: int | None = DEFAULT_DLQ_MAX,
        failure_rules: Mapping[str, FailureRules] | None = None,
        on_dead: FailureCallback | None = None,
        cancel_grace_s: float | None = DEFAULT_CANCEL_GRACE_S,
    ) -> None:
        require_number("poll_interval", poll_interval, minimum=0, strict=True)
        require_number("cancel_grace_s", cancel_grace_s, minimum=0, allow_none=True)
        require_number("batch_size", batch_size, minimum=1, maximum=1000, integer=True)
        require_number("dlq_max", dlq_max, minimum=1, integer=True, allow_none=True)
        check_lease_settings(lease_s, heartbeat_s)
        if dead_letter_queue is not None:
            queue.check_dead_letter(dead_letter_queue)
        self.worker_id = new_worker_id(worker_id)
        super().__init__(name=self.worker_id, daemon=True)
        self.queue = queue
        self.handlers = handlers
        self.poll_interval = float(poll_interval)
        self.dead_letter_queue = dead_letter_queue
        self.dlq_max = dlq_max
        self.retry_policy = retry_policy or RetryPolicy(base_delay=base_delay)
        self.failure_rules: Mapping[str, FailureRules] = {} if failure_rules is None else failure_rules
        self.on_dead = on_dead
        self.event_handler = event_handler or EventHandler()
        self.lease_s = float(lease_s)
        self.clock = clock or queue.clock
        self._own_keeper = lease_keeper is None
        self.lease_keeper = lease_keeper or LeaseKeeper(lease_s=lease_s, heartbeat_s=heartbeat_s)
        self.stats = WorkerStats()
        self.metrics = WorkerMetrics()
        self._wait_s = 0.0  # the queue wait of the attempt running now
        self.batch_size = batch_size
        self.current_job_id: str | None = None
        self.abandoned_threads: list[threading.Thread] = []
        self.cancel_grace_s = cancel_grace_s
        #: Threads of handlers that ignored a cancel past ``cancel_grace_s``: their jobs
        #: were recorded CANCELLED ("cancel requested, still running"), their late
        #: results are refused; dropped once the handler returns. A worker process is
        #: replaced while one is alive.
        self.cancel_overdue: list[threading.Thread] = []
        self._ctx: JobContext | None = None
        # The job running now and its token, and the lock of a context made late.
        self._running: tuple[Job, int] | None = None
        self._ctx_lock = threading.Lock()
        # Handler -> whether it takes a JobContext (accepts_context, read once).
        self._takes_context: dict[Handler, bool] = {}
        self._stop_event = threading.Event()
        # Claimed, not started yet; finished, completion not yet committed.
        self._buffer: deque[Claim] = deque()
        self._pending: list[tuple[Job, int, Any]] = []
        self._pending_since = 0.0
        # Running averages of handler durations (seconds): over every job (None before
        # the first) and per job type.
        self._avg_run_s: float | None = None
        self._by_type: dict[str, float] = {}
        self._current: tuple[str, int] | None = None
        self._write_backoff = Backoff(WRITE_BACKOFF_MIN_S, WRITE_BACKOFF_MAX_S)
        self._reconnect = Backoff(RECONNECT_MIN_S, RECONNECT_MAX_S, low=0.05)
        # The last wait for work found jobs ready (see _wait_for_work).
        self._saw_ready = False
        self._held_back = Backoff(HELD_BACK_MIN_S, HELD_BACK_MAX_S)
        # One warning per storage outage, not one per attempt.
        self.outage = Outage(logger, f"worker {self.worker_id}")
        self.started_at: float | None = None

    # -- control ------------------------------------------------------------------------

    def stop(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Ask the worker to exit after its current job; return whether it has exited.

        Args:
            wait: join the thread (up to ``timeout`` seconds).
            timeout: how long to wait when ``wait`` is true (None: no limit).
        """
        self._stop_event.set()
        try:
            self.queue.interrupt()
        except Exception as exc:  # the storage is down: a blocked wait ends at its timeout
            logger.debug("worker %s could not interrupt its queue's waiters: %s", self.worker_id, exc)
        if wait and self.is_alive() and threading.current_thread() is not self:
            self.join(timeout)
        return not self.is_alive()

    def cancel_running(self) -> int:
        """Interrupt the running handlers; return how many were interrupted.

        A thread worker cannot: Python cannot interrupt a thread, so this returns 0 (the
        ``AsyncWorker`` cancels its tasks).
        """
        return 0

    @property
    def stopping(self) -> bool:
        """Whether ``stop()`` was called."""
        return self._stop_event.is_set()

    # -- the loop -----------------------------------------------------------------------

    def info(self, queue: str | None = None) -> WorkerInfo:
        """This worker's registry entry as of now, with the figures of ``queue`` (one of
        a queue group's queues) or of every queue it serves (None)."""
        current = self._current
        return WorkerInfo(
            worker_id=self.worker_id,
            queue=self.queue.name,
            host=HOST,
            pid=os.getpid(),
            job_types=tuple(sorted(self.handlers)),
            version=VERSION,
            started_at=self.clock.now() if self.started_at is None else self.started_at,
            last_seen=self.clock.now(),
            ttl_s=self.lease_s,
            stop_pid=stop_pid(),
            jobs_done=self.stats.completed,
            jobs_failed=self.stats.failed,
            current=() if current is None else (current[0],),
            metrics=self.metrics.snapshot(queue),
        )

    def _register(self) -> None:
        for queue in members(self.queue):
            queue.register_worker(self.info(queue.name))

    def _unregister(self) -> None:
        """Leave every registry, with the figures up to now (not as of the last heartbeat)."""
        for queue in members(self.queue):
            queue.unregister_worker(self.worker_id, final=self.info(queue.name))

    def run(self) -> None:
        """Claim and run jobs until stopped."""
        self.started_at = self.clock.now()
        try:
            self._register()
        except Exception as exc:
            if is_outage(exc):
                self.outage.failed(exc, "register (the heartbeat will retry)")
            else:
                logger.exception("worker %s could not register; the heartbeat will retry", self.worker_id)
        self.lease_keeper.keep_entry(self.worker_id, self._register)
        self.lease_keeper.listen(self)
        if self._own_keeper:
            self.lease_keeper.start()
        try:
            self._work()
        finally:
            try:
                self._flush(wait=False)
                self._give_back_unrecorded()
                self.give_back_unstarted()
            finally:
                self.lease_keeper.drop_entry(self.worker_id)
                self.lease_keeper.unlisten(self)
                if self._own_keeper:
                    self.lease_keeper.stop()
                try:
                    self._unregister()
                except Exception as exc:
                    logger.warning(
                        "worker %s could not unregister; its entry will go stale: %s", self.worker_id, exc,
                        exc_info=None if is_outage(exc) else exc,
                    )

    def _work(self) -> None:
        """The loop between registering and cleaning up: claim and run jobs until stopped
        (``AsyncWorker`` runs an event loop here instead)."""
        buffer = self._buffer
        stopped = self._stop_event.is_set
        execute = self._execute
        monotonic = time.monotonic
        while not stopped():
            if not buffer:
                if self._pending:
                    self._flush()
                    if self._pending:  # the write failed: retry it before claiming more
                        continue
                if not self._claim():
                    continue
            try:
                claimed = buffer.popleft()
            except IndexError:  # given back meanwhile by give_back_unstarted()
                continue
            if self._pending and (
                monotonic() - self._pending_since >= FLUSH_AFTER_S
                or self._by_type.get(claimed.job.job_type, BATCH_WINDOW_S) >= BATCH_WINDOW_S
            ):
                # Held completions never wait for a job that may be slow.
                self._flush()
            execute(claimed)

    def _claim_limit(self) -> int:
        """How many jobs to claim now: more only while jobs are quick (the batch window)."""
        avg = self._avg_run_s
        if self.batch_size == 1 or avg is None or avg >= BATCH_WINDOW_S:
            return 1
        return min(self.batch_size, int(BATCH_WINDOW_S / max(avg, 1e-6)))

    def _claim(self) -> bool:
        """Fill the buffer with newly claimed jobs; return whether any was claimed.

        When none is ready it waits (``wait_ready``) before returning False. When the
        queue fails it waits a jittered exponential backoff (:data:`RECONNECT_MIN_S` to
        :data:`RECONNECT_MAX_S`) before the run loop claims again; a storage outage is
        logged once, when it starts, and once more when the storage answers again.
        """
        queue = self.queue
        try:
            limit = self._claim_limit()
            types = self.handlers.keys()
            if limit == 1:
                one = queue.claim(self.worker_id, lease_s=self.lease_s, job_types=types)
                claims = [] if one is None else [one]
            else:
                claims = queue.claim_many(self.worker_id, lease_s=self.lease_s, limit=limit, job_types=types)
            if not claims:
                self._wait_for_work(types)
        except Exception as exc:
            self._claim_failed(exc)
            return False
        if self.outage.active:
            self.outage.ok()
        self._reconnect.reset()
        if not claims:
            return False
        self._claimed_some()
        keeper = self.lease_keeper
        for job, token, _ in claims:
            keeper.add(queue, job.job_id, token)
        self._buffer.extend(claims)
        return True

    def _wait_for_work(self, types: Collection[str]) -> None:
        """After a claim that took nothing: wait for a job of this worker's ``types``.

        When the wait before that claim found such jobs ready and a claim policy of the
        queue has a limit, the limit holds them back: it first waits :attr:`_held_back`'s
        growing backoff, since the queue would report them ready at once again. (Without
        a limit, the jobs went to other workers first: the wait blocks for the next.)
        """
        if self._saw_ready and self._limited():
            self._stop_event.wait(min(self._held_back.next(), self.poll_interval))
        self._saw_ready = self.queue.wait_ready(self.poll_interval, types)
        if not self._saw_ready:
            self._held_back.reset()

    def _limited(self) -> bool:
        """Whether a claim policy of the worker's queue (of one of a group's) has a limit
        that may hold ready jobs back (read each time: a policy may be set at any time)."""
        for queue in members(self.queue):
            policy = queue.claim_policy
            if policy is not None and policy.holds_back:
                return True
        return False

    def _claimed_some(self) -> None:
        """A claim took jobs: the next empty claim waits for work without a backoff."""
        if self._saw_ready:
            self._saw_ready = False
            self._held_back.reset()

    def in_flight(self) -> list[tuple[str, int]]:
        """The (job id, lease token) of the jobs this worker holds and has not finished.

        The job running now and those claimed but not started; not those whose handler
        finished and whose completion waits to be committed (the worker commits them).
        """
        held = [(claim.job.job_id, claim.token) for claim in list(self._buffer)]
        current = self._current
        if current is not None:
            held.insert(0, current)
        return held

    def _flush(self, *, wait: bool = True) -> None:
        """Commit the held completions in one ``complete_many``, then report each.

        When the storage fails, nothing of the batch was written: the completions are
        held again, their leases renewed again, and (with ``wait``) the worker waits a
        jittered, growing backoff before the run loop retries.
        """
        pending, self._pending = self._pending, []
        if not pending:
            return
        queue = self.queue
        keeper = self.lease_keeper
        for job, _, _ in pending:
            # Renewals stop before the commit, as for a single completion: a heartbeat
            # right after it would find the lease gone and report it lost.
            keeper.discard(queue, job.job_id)
        try:
            outcomes = queue.complete_many([Completion(job.job_id, tok, res) for job, tok, res in pending])
        except Exception as exc:
            self._hold_unrecorded(pending, exc, wait=wait)
            return
        self._written()
        events = self.event_handler
        for (job, token, result), outcome in zip(pending, outcomes, strict=True):
            if isinstance(outcome, Job):
                self.stats.completed += 1
                self.metrics.count(job.queue, job.job_type, "completed")
                safe_call(events.on_job_completed, outcome, result)
            elif isinstance(outcome, SerializationError):
                try:
                    self._failed(job, token, outcome)
                except Exception:
                    logger.exception(
                        "worker %s could not record the failure of job %s", self.worker_id, job.job_id
                    )
            elif isinstance(outcome, StaleLeaseError | JobNotFoundError):
                self.stats.stale += 1
                logger.warning("result of job %s discarded: %s", job.job_id, outcome)
            else:
                logger.error("completion of job %s refused: %s", job.job_id, outcome)

    def _execute(self, claimed: Claim) -> None:
        job, token, _ = claimed
        job_id = job.job_id
        queue = self.queue
        keeper = self.lease_keeper
        self.current_job_id = job_id
        self._current = (job_id, token)
        released = False  # renewals of this job's lease stopped (or handed to _flush)
        try:
            handler = self.handlers.get(job.job_type)
            if handler is None:
                # Not an attempt (nothing ran): straight to the dead-letter queue.
                exc = NoHandlerError(job.job_type, list(self.handlers))
                dead = self._bury(job, token, describe_error(exc), None)
                if dead is not None:
                    safe_call(self.event_handler.on_job_dead, dead)
                    self._final_failure(dead, exc)
                return
            ctx = self._start(handler, job, token)
            safe_call(self.event_handler.on_job_started, job, self.worker_id)
            self._wait_s = self._waited(job)
            started = time.perf_counter()
            try:
                if ctx is None and job.timeout_seconds is None:
                    result = run_handler(handler, job)
                else:
                    result = self._call(handler, job, ctx)
            except BaseException as exc:  # a handler may raise anything, SystemExit too
                self._timed(job, started)
                keeper.discard(queue, job_id)
                released = True
                if self._ctx is None or not self._refused_late(exc):
                    self._failed(job, token, exc)
                return
            self._timed(job, started)
            released = True
            if self._ctx is not None and self._refused_late(None):
                return
            if self._buffer or self._pending:
                # More claimed jobs wait, or completions are held: commit this one with
                # theirs, in one transaction (the flush stops its renewals; the run loop
                # flushes as soon as the buffer is empty).
                if not self._pending:
                    self._pending_since = time.monotonic()
                self._pending.append((job, token, result))
                return
            keeper.discard(queue, job_id)
            self._complete(job, token, result)
        except Exception:
            # Storage failed while recording the outcome: the lease expires and a reaper
            # gives the job back, so nothing is lost; the worker carries on.
            logger.exception("worker %s could not record the outcome of job %s", self.worker_id, job_id)
        finally:
            if not released:
                keeper.discard(queue, job_id)
            self.current_job_id = None
            self._current = None
            self._running = None
            self._ctx = None

    def _waited(self, job: Job) -> float:
        """Seconds ``job`` waited in the queue: from when it was due to now."""
        due = job.scheduled_at if job.scheduled_at is not None else job.created_at
        return self.clock.now() - due

    def _start(self, handler: Handler, job: Job, token: int) -> JobContext | None:
        """Mark the job running; return its context when the handler takes one.

        A context only for a handler that takes one (or once a cancel arrives): the hot
        path of a handler without one builds nothing.
        """
        self._running = (job, token)
        takes = self._takes_context.get(handler)
        if takes is None:
            takes = self._takes_context[handler] = accepts_context(handler) is not None
        ctx = self._context(job, token) if takes else None
        keeper = self.lease_keeper
        if keeper.cancels_seen and keeper.cancel_seen(self.queue, job.job_id):  # asked while buffered
            self.request_cancel(job.job_id)
        return ctx

    def _context(self, job: Job, token: int) -> JobContext:
        """The context of this run; its lease renewals tell it of a cancel request and
        store its progress."""
        ctx = self._ctx = JobContext(
            job, token=token, queue=self.queue, worker_id=self.worker_id, events=self.event_handler
        )
        ctx.thread = self  # a timeout's helper thread replaces it (call_with_timeout)
        return ctx

    def _call(self, handler: Handler, job: Job, ctx: JobContext | None) -> Any:
        """Run the handler, in a helper thread when the job has a timeout."""
        timeout = job.timeout_seconds
        if timeout is None:
            return run_handler(handler, job, ctx)
        name = f"{self.worker_id}:job:{job.job_id}"
        return call_with_timeout(handler, job, timeout, name, self.abandoned_threads, ctx=ctx)

    def _refused_late(self, exc: BaseException | None) -> bool:
        """Store what the run's handler reported, and tell whether its outcome comes after
        its cancellation was forced (then it is refused: the job is CANCELLED already)."""
        ctx = self._ctx
        if ctx is None:
            return False
        ctx.flush()
        if not ctx.forced:
            return False
        if ctx.thread is self and self in self.cancel_overdue:
            self.cancel_overdue.remove(self)  # the handler returned: nothing runs any more
        self.lease_keeper.discard(self.queue, ctx.job_id)
        self.stats.stale += 1
        logger.warning(
            "late %s of job %s refused: the job was cancelled while it ran",
            "result" if exc is None else f"failure ({describe_error(exc)})", ctx.job_id,
        )
        return True

    # -- cancellation of the running job ------------------------------------------------

    def lease_cancelled(self, queue: Queue, job_id: str) -> None:
        """The lease keeper's renewal reported a cancel request (``LeaseListener``)."""
        if queue is self.queue:
            self.request_cancel(job_id)  # a job not started yet is told when it starts

    def lease_beat(self) -> None:
        """A heartbeat (``LeaseListener``): store what the running handler reported."""
        ctx = self._ctx
        if ctx is not None:
            ctx.flush()

    def request_cancel(self, job_id: str) -> bool:
        """Tell the running handler of ``job_id`` that its cancellation was requested
        (the manager does, in the process that cancels; other processes learn it from
        their next heartbeat). Returns whether this worker runs that job."""
        with self._ctx_lock:
            ctx = self._ctx
            if ctx is None:
                running = self._running
                if running is None or running[0].job_id != job_id:
                    return False
                # The handler takes no context: one is made now, for the forced cancel.
                ctx = self._context(*running)
        if ctx.job_id != job_id:
            return False
        self._cancel_requested(ctx)
        return True

    def _cancel_requested(self, ctx: JobContext) -> None:
        """The running job's cancellation was requested: tell its handler, and force it
        after ``cancel_grace_s``."""
        if not ctx.request_cancel():
            return
        grace = self.cancel_grace_s
        logger.warning(
            "job %s (%s): cancellation requested; its handler has %s to stop",
            ctx.job_id, ctx.job.job_type, "unlimited time" if grace is None else f"{grace:g}s",
        )
        if grace is not None:
            timer = threading.Timer(grace, self._force_cancel, (ctx,))
            timer.daemon = True
            timer.name = f"{self.worker_id}:cancel:{ctx.job_id}"
            timer.start()

    def _force_cancel(self, ctx: JobContext) -> None:
        """The grace period passed and the handler still runs: record the job CANCELLED
        (fenced by its lease token: nothing happens if it ended meanwhile) and refuse
        its late result. Python cannot kill the thread: it is reported in
        ``cancel_overdue`` (a worker process is replaced while it lives)."""
        if self._ctx is not ctx or ctx.forced:
            return
        ctx.forced = True
        queue = self.queue
        try:
            queue.cancel(ctx.job_id, token=ctx.token)
        except (StaleLeaseError, JobNotFoundError):
            return  # it ended (or was given to another worker) meanwhile
        except Exception:
            ctx.forced = False
            logger.exception("could not record the forced cancellation of job %s", ctx.job_id)
            return
        self.lease_keeper.discard(queue, ctx.job_id)
        thread = ctx.thread
        if thread is not None:
            self.cancel_overdue.append(thread)
        logger.error(
            "job %s (%s): cancel requested, still running after %gs; recorded CANCELLED and its "
            "late result will be refused (Python cannot kill the thread %s)",
            ctx.job_id, ctx.job.job_type, self.cancel_grace_s or 0.0, None if thread is None else thread.name,
        )
        try:
            cancelled = queue.get_job(ctx.job_id)
        except Exception:
            cancelled = ctx.job
        safe_call(self.event_handler.on_job_cancelled, cancelled)

    def _complete(self, job: Job, token: int, result: Any) -> None:
        """Record one success at once (``Queue.complete``), then report it.

        When the storage fails, the completion is held and retried like a batch's.
        """
        try:
            done = self.queue.complete(job.job_id, token=token, result=result)
        except StaleLeaseError as exc:
            self.stats.stale += 1
            logger.warning("result of job %s discarded: %s", job.job_id, exc)
            return
        except SerializationError as exc:
            self._failed(job, token, exc)
            return
        except Exception as exc:
            self._hold_unrecorded([(job, token, result)], exc, wait=True)
            return
        self._written()
        self.stats.completed += 1
        self.metrics.count(job.queue, job.job_type, "completed")
        safe_call(self.event_handler.on_job_completed, done, result)

    def _timed(self, job: Job, started: float) -> None:
        """Fold one handler's duration into the running averages."""
        took = time.perf_counter() - started
        job_type = job.job_type
        self.metrics.observe(job.queue, job_type, wait_s=self._wait_s, run_s=took)
        avg = self._avg_run_s
        self._avg_run_s = took if avg is None else avg + _EWMA * (took - avg)
        by_type = self._by_type
        typed = by_type.get(job_type)
        by_type[job_type] = took if typed is None else typed + _EWMA * (took - typed)

    # -- failures -----------------------------------------------------------------------

    def _failed(self, job: Job, token: int, exc: BaseException) -> None:
        if isinstance(exc, JobCancelledError):
            self._cancelled(job, token, exc)
            return
        error = describe_error(exc)
        trace = format_traceback(exc)
        events = self.event_handler
        policy = self.policy_for(job)
        retry_number = job.retry_count + 1
        delay: float | None = None
        if policy.should_retry(job.retry_count, job.max_retries) and not isinstance(exc, _PERMANENT):
            if isinstance(exc, Retry):
                delay = exc.in_s
            elif policy.retries(exc):
                try:
                    delay = policy.delay(retry_number, exc)
                except Exception:
                    logger.exception("retry policy of job %s failed; the job is retried at once", job.job_id)
                    delay = 0.0
        if delay is None:
            dead = self._bury(job, token, error, trace)
            if dead is not None:
                self.stats.failed += 1
                self.metrics.count(job.queue, job.job_type, "failed")
                safe_call(events.on_job_failed, dead, exc)
                safe_call(events.on_job_dead, dead)
                self._final_failure(dead, exc)
            return
        retry_at = self.clock.now() + delay
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
        self.metrics.count(job.queue, job.job_type, "failed")
        self.metrics.count(job.queue, job.job_type, "retried")
        logger.warning(
            "job %s (%s) failed; retry %d of %d at %s: %s",
            job.job_id, job.job_type, retry_number, job.max_retries, when(retry_at, self.clock.now()), error,
        )
        safe_call(events.on_job_failed, updated, exc)
        safe_call(events.on_job_retried, updated, retry_at)

    def policy_for(self, job: Job) -> RetryPolicy:
        """The retry policy of ``job``: its own (stored with it), its type's, or the worker's."""
        return policy_of(job, self.failure_rules, self.retry_policy)

    def _final_failure(self, dead: Job, exc: BaseException) -> None:
        """The job died here: its type's ``on_failure`` and ``on_dead``, isolated."""
        call_failure_callbacks(dead, exc, self.failure_rules, self.on_dead)

    def _cancelled(self, job: Job, token: int, exc: JobCancelledError) -> None:
        """The handler stopped because cancellation was requested: record CANCELLED.

        ``Queue.cancel`` with the lease token: fenced, and the dependents fail in the
        same transition.
        """
        queue = self.queue
        try:
            queue.cancel(job.job_id, token=token)
        except StaleLeaseError as stale:
            self.stats.stale += 1
            logger.warning("cancellation of job %s not recorded: %s", job.job_id, stale)
            return
        self.metrics.count(job.queue, job.job_type, "cancelled")
        logger.warning("job %s (%s) cancelled while running: %s", job.job_id, job.job_type, exc)
        safe_call(self.event_handler.on_job_cancelled, queue.get_job(job.job_id))

    def _bury(self, job: Job, token: int, error: str, trace: str | None) -> Job | None:
        """Move the job to DEAD with its dead letter, in one transition; return it, or
        None when the lease was already lost (then nothing was written).

        Whoever sees the job DEAD finds it in the dead-letter queue (and can replay it
        at once): both happen in one transition.
        """
        try:
            dead = self.queue.bury(
                job.job_id, token=token, error=error, traceback=trace,
                dead_letter=self.dead_letter_queue, dlq_max=self.dlq_max,
            )
        except StaleLeaseError as stale:
            self.stats.stale += 1
            logger.warning("death of job %s not recorded: %s", job.job_id, stale)
            return None
        self.stats.dead += 1
        self.metrics.count(job.queue, job.job_type, "dead")
        logger.error(
            "job %s (%s) is dead after %d retries and moved to the dead-letter queue: %s",
            job.job_id, job.job_type, dead.retry_count, error,
        )
        return dead
