"""``AsyncWorker``: up to ``concurrency`` jobs at once on one event loop.

An async worker is a :class:`~typedq.worker.Worker` (a thread, with the same registry
entry, leases, retries, dead letters, events and shutdown) whose thread runs one asyncio
event loop for as long as it lives, never one loop per job:

* it claims up to its free capacity at once (``Queue.claim_many`` with ``limit`` =
  ``concurrency`` minus the jobs it runs) and starts one task per job. An ``async def``
  handler runs on the loop; a plain function goes to the worker's thread pool
  (:data:`MAX_SYNC_THREADS` threads at most), so a blocking handler never stalls the
  loop;
* the storage is called from two threads of its own, never from the loop: one claims
  (and blocks in ``Queue.wait_ready`` when nothing is ready), one records outcomes. The
  completions that finished while the previous write ran are committed together in one
  ``Queue.complete_many`` (a group commit), each fenced by its lease token; a failure
  goes through the worker's retry policy (``fail`` with a retry time, or ``bury`` with
  its dead letter), exactly as in the thread worker;
* the lease of every running job is renewed by the lease keeper, as for a thread worker;
* ``timeout_seconds`` is enforced for an ``async def`` handler by cancelling its task:
  the handler sees ``asyncio.CancelledError`` where it awaits, and the job fails with a
  :class:`~typedq.errors.JobTimeoutError` and is retried per the policy. A plain function
  is timed as in the thread worker (a helper thread abandoned past the timeout);
* a handler that takes a :class:`~typedq.context.JobContext` gets one
  (``typedq.context.call_handler``), async or not. A cancel request, from this process
  (``request_cancel``) or from another one through the heartbeat (``lease_cancelled``),
  cancels the job's task: an ``async def`` handler gets ``asyncio.CancelledError`` where
  it awaits (a plain one sees ``ctx.cancelled``; its thread cannot be interrupted and
  its late result is dropped) and the job is recorded CANCELLED with its lease token.
  Progress and log lines an async handler reports are written from the loop, at most
  once every ``PROGRESS_INTERVAL_S`` per job, and at every heartbeat;
* ``stop()`` stops claiming; the running tasks finish (graceful stop drains them), their
  outcomes are committed, then the thread ends. :meth:`AsyncWorker.cancel_running`
  cancels the tasks still running (a shutdown past its grace period): their jobs go
  back to the queue (``Queue.release``), neither failed nor retried.

While completions cannot be written (the storage refuses them), the worker claims
nothing new and retries the write with a backoff, keeping their leases, as the thread
worker does.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from typedq._outage import is_outage
from typedq._validate import require_number
from typedq._worker_support import (
    call_with_timeout,
    describe_error,
    handler_is_async,
    run_handler,
)
from typedq.backends.base import Claim, Queue, WorkerInfo
from typedq.context import JobContext, accepts_context, call_handler
from typedq.errors import (
    JobCancelledError,
    JobNotFoundError,
    JobTimeoutError,
    NoHandlerError,
    StaleLeaseError,
)
from typedq.events import safe_call
from typedq.job import Job
from typedq.worker import Handler, Worker

__all__ = ["DEFAULT_CONCURRENCY", "MAX_CONCURRENCY", "MAX_SYNC_THREADS", "AsyncWorker"]

logger = logging.getLogger("typedq.worker")

#: The default ``concurrency`` of an async worker: jobs running at once on its loop.
DEFAULT_CONCURRENCY: Final = 100
#: The largest ``concurrency`` accepted.
MAX_CONCURRENCY: Final = 10_000
#: The most threads an async worker runs plain (sync) handlers in.
MAX_SYNC_THREADS: Final = 32
#: The most running job ids a registry entry lists.
MAX_LISTED_JOBS: Final = 100


class AsyncWorker(Worker):
    """A worker thread running up to ``concurrency`` jobs at once on one event loop.

    Args:
        queue: the queue to take jobs from.
        handlers: job type → handler (``async def`` or plain); read live.
        poll_interval: the longest wait, in seconds, before looking for work again.
        concurrency: the most jobs running at once (an int from 1 to
            :data:`MAX_CONCURRENCY`).
        **options: every keyword option of :class:`~typedq.worker.Worker`
            (``dead_letter_queue``, ``retry_policy``, ``lease_s``, ``heartbeat_s``,
            ``lease_keeper``, ``event_handler``, ``batch_size`` (the most completions
            committed in one write), ...).

    Raises:
        ConfigError: ``concurrency`` out of range, or an option as for ``Worker``.
    """

    def __init__(
        self,
        queue: Queue,
        handlers: Mapping[str, Handler],
        poll_interval: float = 0.1,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        **options: Any,
    ) -> None:
        require_number("concurrency", concurrency, minimum=1, maximum=MAX_CONCURRENCY, integer=True)
        super().__init__(queue, handlers, poll_interval, **options)
        self.concurrency = concurrency
        # job id -> (lease token, task); only the loop's thread changes it.
        self._tasks: dict[str, tuple[int, asyncio.Task[None]]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._kick: asyncio.Event | None = None
        self._done: list[tuple[Job, int, Any]] = []
        self._record_wake: asyncio.Event | None = None
        self._draining = False
        # Set while completions the storage refused are held (until one write succeeds):
        # nothing new is claimed meanwhile, as in the thread worker.
        self._holding = False
        # Jobs whose cancellation was asked for while they ran (cancel_job).
        self._cancelling: set[str] = set()
        # job id -> the context of its run (handlers that take one); only the loop's
        # thread changes it.
        self._contexts: dict[str, JobContext] = {}
        self._claim_thread: ThreadPoolExecutor | None = None
        self._record_thread: ThreadPoolExecutor | None = None
        self._sync_pool: ThreadPoolExecutor | None = None

    # -- control ------------------------------------------------------------------------

    def stop(self, wait: bool = False, timeout: float | None = None) -> bool:
        """Stop claiming; the running jobs finish, then the thread ends. Return whether it
        has ended (see ``Worker.stop``)."""
        self._stop_event.set()
        self._call_soon(self._wake_main)
        return super().stop(wait, timeout)

    def cancel_running(self) -> int:
        """Cancel every running task (from any thread); return how many were running.

        Their jobs go back to the queue (``Queue.release``): an interrupted job is not a
        failed attempt. Used by a shutdown whose grace period is over.
        """
        count = len(self._tasks)
        self._call_soon(self._cancel_all)
        return count

    def cancel_job(self, job_id: str) -> bool:
        """Cancel the task running ``job_id`` (from any thread); return whether this worker
        runs it.

        The handler gets ``asyncio.CancelledError`` where it awaits; the job is recorded
        CANCELLED with its lease token (``Queue.cancel``: its dependents fail in the same
        transition) and ``on_job_cancelled`` fires. A plain handler running in the thread
        pool cannot be interrupted: its job is recorded CANCELLED at once all the same,
        and the thread's late result is dropped.
        """
        if job_id not in self._tasks:
            return False
        ctx = self._contexts.get(job_id)
        if ctx is not None:
            ctx.request_cancel()  # a plain handler in the thread pool sees ctx.cancelled
        self._cancelling.add(job_id)
        self._call_soon(functools.partial(self._cancel_task, job_id))
        return True

    def request_cancel(self, job_id: str) -> bool:
        """The cancellation of ``job_id`` was requested (by the manager of this process):
        cancel its task at once (see :meth:`cancel_job`)."""
        return self.cancel_job(job_id)

    def lease_cancelled(self, queue: Queue, job_id: str) -> None:
        """A heartbeat's renewal reported a cancel request (``LeaseListener``)."""
        if queue is self.queue:
            self.cancel_job(job_id)

    def lease_beat(self) -> None:
        """A heartbeat (``LeaseListener``): store what the running handlers reported."""
        for ctx in list(self._contexts.values()):
            ctx.flush()

    def _cancel_task(self, job_id: str) -> None:
        entry = self._tasks.get(job_id)
        if entry is not None:
            entry[1].cancel()

    def _call_soon(self, callback: Any) -> None:
        loop = self._loop
        if loop is not None:
            # RuntimeError: the loop already closed, nothing runs any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(callback)

    def _wake_main(self) -> None:
        if self._kick is not None:
            self._kick.set()

    def _cancel_all(self) -> None:
        for _, task in list(self._tasks.values()):
            task.cancel()

    # -- registry and in-flight jobs ------------------------------------------------------

    def info(self, queue: str | None = None) -> WorkerInfo:
        """This worker's registry entry as of now, listing the jobs it runs."""
        entry = super().info(queue)
        entry.current = tuple(list(self._tasks)[:MAX_LISTED_JOBS])
        return entry

    def in_flight(self) -> list[tuple[str, int]]:
        """The (job id, lease token) of the jobs this worker runs and has not finished."""
        held = [(job_id, token) for job_id, (token, _) in list(self._tasks.items())]
        held += [(claim.job.job_id, claim.token) for claim in list(self._buffer)]
        return held

    # -- the loop -----------------------------------------------------------------------

    def _work(self) -> None:
        """Run one event loop until stopped and drained."""
        asyncio.run(self._main())

    async def _main(self) -> None:
        loop = asyncio.get_running_loop()
        self._kick = asyncio.Event()
        self._record_wake = asyncio.Event()
        name = self.worker_id
        self._claim_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{name}:claim")
        self._record_thread = ThreadPoolExecutor(1, thread_name_prefix=f"{name}:record")
        self._sync_pool = ThreadPoolExecutor(
            min(self.concurrency, MAX_SYNC_THREADS), thread_name_prefix=f"{name}:sync"
        )
        self._loop = loop
        recorder = loop.create_task(self._recorder())
        try:
            await self._claim_loop(loop)
            # Graceful stop: the running jobs finish (or are cancelled by cancel_running).
            running = [task for _, task in self._tasks.values()]
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            self._draining = True
            self._record_wake.set()
            await recorder
            self._loop = None
            self._claim_thread.shutdown(wait=False, cancel_futures=True)
            self._record_thread.shutdown(wait=True)
            self._sync_pool.shutdown(wait=False, cancel_futures=True)

    async def _claim_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        kick = self._kick
        assert kick is not None
        stopped = self._stop_event.is_set
        while not stopped():
            free = self.concurrency - len(self._tasks)
            if free <= 0 or self._holding:
                # Full, or completions wait to be written again: claim nothing new.
                kick.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(kick.wait(), self.poll_interval)
                continue
            claims = await loop.run_in_executor(self._claim_thread, self._claim_some, free)
            if stopped():
                # Stopped while claiming: these jobs were never started, give them back.
                self._buffer.extend(claims)
                await loop.run_in_executor(self._claim_thread, self.give_back_unstarted)
                return
            for claim in claims:
                self._launch(claim)

    def _claim_some(self, limit: int) -> list[Claim]:
        """Claim up to ``limit`` jobs (the claim thread); wait for work when none is ready."""
        queue = self.queue
        if self._stop_event.is_set() or self._holding:
            return []
        try:
            types = self.handlers.keys()
            claims = queue.claim_many(self.worker_id, lease_s=self.lease_s, limit=limit, job_types=types)
            if not claims:
                self._wait_for_work(types)
        except Exception as exc:
            self._claim_failed(exc)
            return []
        if self.outage.active:
            self.outage.ok()
        self._reconnect.reset()
        if claims:
            self._claimed_some()
        keeper = self.lease_keeper
        for job, token, _ in claims:
            keeper.add(queue, job.job_id, token)
        return claims

    def _launch(self, claim: Claim) -> None:
        job, token, _ = claim
        job_id = job.job_id
        task = asyncio.get_running_loop().create_task(self._run_job(job, token), name=f"job:{job_id}")
        self._tasks[job_id] = (token, task)

        def finished(_: asyncio.Task[None]) -> None:
            self._tasks.pop(job_id, None)
            self._cancelling.discard(job_id)
            self._contexts.pop(job_id, None)
            self._wake_main()

        task.add_done_callback(finished)

    async def _record(self, fn: Any, *args: Any) -> None:
        """Run one storage write on the record thread (never on the loop)."""
        await asyncio.get_running_loop().run_in_executor(self._record_thread, fn, *args)

    async def _run_job(self, job: Job, token: int) -> None:
        handler = self.handlers.get(job.job_type)
        if handler is None:
            # Not an attempt (nothing ran): straight to the dead-letter queue.
            await self._record(self._no_handler, job, token)
            return
        ctx: JobContext | None = None
        if accepts_context(handler) is not None:
            ctx = self._contexts[job.job_id] = JobContext(
                job, token=token, queue=self.queue, worker_id=self.worker_id, events=self.event_handler
            )
        keeper = self.lease_keeper
        if keeper.cancels_seen and keeper.cancel_seen(self.queue, job.job_id):  # asked before it started
            await self._record(self._record_failure, job, token, JobCancelledError(job.job_id, "cancelled"))
            return
        safe_call(self.event_handler.on_job_started, job, self.worker_id)
        try:
            try:
                result = await self._invoke(handler, job, ctx)
            finally:
                if ctx is not None:
                    ctx.flush()  # what it reported last is stored before its outcome
        except asyncio.CancelledError:
            if job.job_id in self._cancelling:
                self._cancelling.discard(job.job_id)
                why = JobCancelledError(job.job_id, "its task was cancelled while running")
                await self._record(self._record_failure, job, token, why)
                return
            if not self._stop_event.is_set():
                # Not ours (the handler's own cancellation): a failed attempt.
                await self._record(self._record_failure, job, token, asyncio.CancelledError("cancelled"))
                return
            # A shutdown past its grace period: give the job back, not failed.
            await self._record(self._give_back_one, job.job_id, token)
            return
        except BaseException as exc:  # a handler may raise anything, SystemExit too
            await self._record(self._record_failure, job, token, exc)
            return
        self._done.append((job, token, result))
        wake = self._record_wake
        if wake is not None:
            wake.set()

    async def _invoke(self, handler: Handler, job: Job, ctx: JobContext | None) -> Any:
        """Await an async handler (cancelled past ``timeout_seconds``) or run a plain one
        in the thread pool."""
        timeout = job.timeout_seconds
        if not handler_is_async(handler):
            loop = asyncio.get_running_loop()
            if timeout is None:
                return await loop.run_in_executor(self._sync_pool, run_handler, handler, job, ctx)
            name = f"{self.worker_id}:job:{job.job_id}"
            timed = functools.partial(
                call_with_timeout, handler, job, timeout, name, self.abandoned_threads, ctx=ctx
            )
            return await loop.run_in_executor(self._sync_pool, timed)
        if timeout is None:
            return await call_handler(handler, job, ctx)
        limit = asyncio.timeout(timeout)
        try:
            async with limit:
                return await call_handler(handler, job, ctx)
        except TimeoutError:
            if not limit.expired():
                raise  # the handler's own TimeoutError
            logger.error(
                "job %s (%s) exceeded its %ss timeout; its task was cancelled",
                job.job_id, job.job_type, timeout,
            )
            raise JobTimeoutError(job.job_id, timeout) from None

    # -- recording (the record thread) ------------------------------------------------------

    async def _recorder(self) -> None:
        """Commit the finished jobs' completions, those that finished during the previous
        write together (one ``complete_many``), until the worker has drained."""
        wake = self._record_wake
        assert wake is not None
        while True:
            await wake.wait()
            wake.clear()
            batch, self._done = self._done, []
            if batch or self._pending:
                await self._record(self._commit, batch)
            if self._pending and not self._stop_event.is_set():
                wake.set()  # the write failed (after its backoff): try again
            elif self._draining and not self._done:
                return

    def _commit(self, batch: list[tuple[Job, int, Any]]) -> None:
        """Write the held completions and ``batch``, ``batch_size`` at a time."""
        todo, self._pending = self._pending + batch, []
        step = self.batch_size
        for start in range(0, len(todo), step):
            self._pending = todo[start : start + step]
            self._pending_since = time.monotonic()
            self._flush()
            if self._pending:  # not written: held (leases kept) and retried by the recorder
                self._pending.extend(todo[start + step :])
                self._holding = True
                return
        self._holding = False
        self._wake_main_threadsafe()

    def _wake_main_threadsafe(self) -> None:
        self._call_soon(self._wake_main)

    def _record_failure(self, job: Job, token: int, exc: BaseException) -> None:
        self.lease_keeper.discard(self.queue, job.job_id)
        try:
            self._failed(job, token, exc)
        except Exception:
            # The lease expires and a reaper gives the job back: nothing is lost.
            logger.exception("worker %s could not record the outcome of job %s", self.worker_id, job.job_id)

    def _no_handler(self, job: Job, token: int) -> None:
        self.lease_keeper.discard(self.queue, job.job_id)
        exc = NoHandlerError(job.job_type, list(self.handlers))
        try:
            dead = self._bury(job, token, describe_error(exc), None)
        except Exception:
            logger.exception("worker %s could not record the outcome of job %s", self.worker_id, job.job_id)
            return
        if dead is not None:
            safe_call(self.event_handler.on_job_dead, dead)

    def _give_back_one(self, job_id: str, token: int) -> None:
        self.lease_keeper.discard(self.queue, job_id)
        try:
            self.queue.release(job_id, token=token)
        except (StaleLeaseError, JobNotFoundError):
            return  # already given back (by the shutdown) or taken over
        except Exception as exc:
            logger.warning(
                "could not give job %s back; it is rescued once its lease expires: %s", job_id, exc,
                exc_info=None if is_outage(exc) else exc,
            )
            return
        logger.warning("job %s given back: its task was cancelled by the shutdown", job_id)
