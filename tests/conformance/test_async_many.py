"""B5 (RELIABILITY.md §4b): one ``AsyncWorker`` runs 200 ``async def`` jobs at once on its
event loop while 50 plain jobs run in its thread pool, on every backend.

The handlers meet at one barrier. An async handler waits until all 200 async handlers are
in flight *and* the sync pool is full of plain handlers blocked in their threads; a plain
handler waits until that moment too. So the test passes only if 200 coroutines really ran
at once, the plain handlers ran in the pool's threads (not the loop's), and the loop kept
running (starting async jobs, running the barrier's check) while every pool thread was
blocked. Then all 250 jobs must end COMPLETED with their results, and the shutdown must
leave nothing behind: no warning ("coroutine ... was never awaited" and the like are
recorded, the collector run after the worker ended), no error logged by asyncio ("Task
was destroyed but it is pending!", "Task exception was never retrieved"), no task of the
loop still pending or cancelled by ``asyncio.run``'s clean-up.

The barrier's timeouts only bound a failure; nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import warnings
from typing import Any

import pytest

from typedq.aworker import MAX_SYNC_THREADS, AsyncWorker
from typedq.backends.base import Queue
from typedq.events import EventHandler
from typedq.job import Job, JobStatus

pytestmark = pytest.mark.timeout(60)

ASYNC_JOBS = 200
SYNC_JOBS = 50
#: Plain handlers blocked at once when the barrier opens: as many as the pool has threads.
SYNC_AT_ONCE = min(SYNC_JOBS, MAX_SYNC_THREADS)
#: How long a handler waits at the barrier before its job fails (bounds a failure only).
BARRIER_S = 10.0


def coroutine_name(task: asyncio.Task[Any]) -> str:
    """The qualified name of the coroutine ``task`` runs."""
    return str(getattr(task.get_coro(), "__qualname__", ""))


class Barrier:
    """Where the 250 handlers meet; ``async_in`` and ``sync_in`` count the handlers
    waiting at it (a handler that gave up leaves the count). ``check`` runs on the loop's
    thread only."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.async_in = 0
        self.sync_in = 0
        self.async_peak = 0
        self.sync_peak = 0
        self.loop: asyncio.AbstractEventLoop | None = None
        self.loop_thread: int | None = None
        self.released = asyncio.Event()  # bound to the worker's loop on first wait
        self.gate = threading.Event()  # the same moment, for the pool's threads
        self.at_release: tuple[int, int] | None = None
        self.loop_tasks: set[asyncio.Task[Any]] = set()
        self.sync_threads: list[tuple[int, str]] = []
        self.left_pending: list[str] | None = None

    def describe(self) -> str:
        with self.lock:
            return (
                f"at most {self.async_peak} of {ASYNC_JOBS} async and {self.sync_peak} of "
                f"{SYNC_AT_ONCE} plain handlers were in flight at once"
            )

    def check(self) -> None:
        """Open the barrier once 200 async and a full pool of plain handlers wait at it."""
        with self.lock:
            ready = self.async_in >= ASYNC_JOBS and self.sync_in >= SYNC_AT_ONCE
            counts = (self.async_in, self.sync_in)
        if ready and not self.released.is_set():
            self.at_release = counts
            # Every task of the loop, to check after shutdown that each one ended; and
            # what is still pending when the worker's main coroutine returns, before
            # asyncio.run cancels it.
            self.loop_tasks = asyncio.all_tasks()
            for task in self.loop_tasks:
                if coroutine_name(task) == "AsyncWorker._main":
                    task.add_done_callback(self.note_leftovers)
            self.released.set()
            self.gate.set()

    def note_leftovers(self, main: asyncio.Task[Any]) -> None:
        """The main task ended: note the loop's other tasks that have not."""
        left = asyncio.all_tasks(main.get_loop()) - {main}
        self.left_pending = sorted(f"{t.get_name()} ({coroutine_name(t)})" for t in left)

    async def run_async(self, payload: dict[str, Any]) -> dict[str, int]:
        with self.lock:
            self.loop = asyncio.get_running_loop()
            self.loop_thread = threading.get_ident()
            self.async_in += 1
            self.async_peak = max(self.async_peak, self.async_in)
        self.check()
        try:
            await asyncio.wait_for(self.released.wait(), BARRIER_S)
        except TimeoutError:
            message = self.describe()
            with self.lock:
                self.async_in -= 1  # no longer in flight: the next ones must not count it
            raise AssertionError(message) from None
        await asyncio.sleep(0)
        return {"async": int(payload["i"]) * 2}

    def run_sync(self, payload: dict[str, Any]) -> dict[str, int]:
        with self.lock:
            self.sync_threads.append((threading.get_ident(), threading.current_thread().name))
            self.sync_in += 1
            self.sync_peak = max(self.sync_peak, self.sync_in)
            loop = self.loop
        if loop is not None:
            # The check runs on the loop's thread; before any async handler ran (no loop
            # seen yet), the first one runs it and counts this handler.
            loop.call_soon_threadsafe(self.check)
        if not self.gate.wait(BARRIER_S):
            message = self.describe()
            with self.lock:
                self.sync_in -= 1
            raise AssertionError(message)
        return {"sync": int(payload["i"]) * 3}


class Outcomes(EventHandler):
    """Counts the jobs that ended (callbacks come from the worker's threads)."""

    def __init__(self) -> None:
        self.ended = threading.Condition()
        self.completed = 0
        self.dead: list[str] = []

    def on_job_completed(self, job: Job, result: Any) -> None:
        with self.ended:
            self.completed += 1
            self.ended.notify_all()

    def on_job_dead(self, job: Job) -> None:
        with self.ended:
            self.dead.append(f"{job.job_id} ({job.job_type}): {job.error}")
            self.ended.notify_all()

    def wait_all(self, count: int, timeout: float) -> bool:
        with self.ended:
            return self.ended.wait_for(lambda: self.completed + len(self.dead) >= count, timeout)


def _enqueue(queue: Queue) -> dict[str, Any]:
    """200 async and 50 plain jobs, interleaved (one plain job after every 4 async ones);
    job id -> the result its handler returns. No retries: a job whose handler gave up at
    the barrier dies at once, rather than waiting for a retry time on the fake clock."""
    jobs: list[Job] = []
    expected: dict[str, Any] = {}
    now = queue.clock.now()
    for i in range(ASYNC_JOBS):
        job = Job.create("async", {"i": i}, queue=queue.name, now=now, max_retries=0)
        jobs.append(job)
        expected[job.job_id] = {"async": i * 2}
        if i % 4 == 3:
            k = i // 4
            plain = Job.create("sync", {"i": k}, queue=queue.name, now=now, max_retries=0)
            jobs.append(plain)
            expected[plain.job_id] = {"sync": k * 3}
    assert len(jobs) == ASYNC_JOBS + SYNC_JOBS
    assert queue.enqueue_many(jobs) == [job.job_id for job in jobs]
    return expected


def test_200_async_and_50_plain_jobs_run_at_once_and_shut_down_clean(
    queue: Queue, caplog: pytest.LogCaptureFixture
) -> None:
    barrier = Barrier()
    outcomes = Outcomes()
    expected = _enqueue(queue)
    total = ASYNC_JOBS + SYNC_JOBS
    caplog.set_level(logging.WARNING)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        worker = AsyncWorker(
            queue,
            {"async": barrier.run_async, "sync": barrier.run_sync},
            poll_interval=0.02,
            concurrency=total,
            event_handler=outcomes,
        )
        worker.start()
        try:
            assert barrier.gate.wait(BARRIER_S + 5), barrier.describe()
            assert outcomes.wait_all(total, 20), (outcomes.completed, outcomes.dead)
        finally:
            stopped = worker.stop(wait=True, timeout=10)
        assert stopped, "the worker did not stop"
        loop = barrier.loop
        assert loop is not None
        assert loop.is_closed()
        # Nothing of the loop's is left: no task was still pending when the worker's main
        # coroutine returned (None: that moment was never seen), and every task the loop
        # had ended, the worker's own (the main task, the recorder, every job) by
        # returning, not by being cancelled.
        assert barrier.left_pending == [], "tasks still pending when the worker's loop ended"
        assert asyncio.all_tasks(loop) == set()
        tasks = barrier.loop_tasks
        assert sum(t.get_name().startswith("job:") for t in tasks) == total
        assert [t for t in tasks if not t.done()] == []
        own = [t for t in tasks if coroutine_name(t).startswith("AsyncWorker.")]
        assert len(own) >= total + 2  # the jobs, the main task and the recorder
        assert [t.get_name() for t in own if t.cancelled() or t.exception() is not None] == []
        tasks.clear()
        del worker, loop
        gc.collect()
    assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("asyncio") or (r.name.startswith("typedq") and r.levelno >= logging.ERROR)
    ]
    assert errors == []

    assert outcomes.dead == []
    assert outcomes.completed == total
    # 200 coroutines and a full pool of blocked threads at the same moment.
    assert barrier.at_release is not None
    assert barrier.at_release[0] == ASYNC_JOBS
    assert barrier.at_release[1] >= SYNC_AT_ONCE
    # Every plain handler ran in one of the pool's threads, none on the loop's.
    assert len(barrier.sync_threads) == SYNC_JOBS
    assert barrier.loop_thread not in {ident for ident, _ in barrier.sync_threads}
    assert all(":sync" in name for _, name in barrier.sync_threads), barrier.sync_threads
    assert len({ident for ident, _ in barrier.sync_threads}) >= SYNC_AT_ONCE

    assert queue.count_by_status().get(JobStatus.COMPLETED) == total
    for job_id, result in expected.items():
        job = queue.get_job(job_id)
        assert (job.status, job.result) == (JobStatus.COMPLETED, result)
