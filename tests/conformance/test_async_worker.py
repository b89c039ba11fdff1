"""``AsyncWorker`` on every backend: what the thread worker guarantees, with many jobs at
once on one event loop.

Completions (group-committed, fenced by the lease token), failures with retries on the
fake clock, dead letters, ``timeout_seconds`` enforced by cancelling the task, graceful
stop draining the running jobs, a forced stop giving them back, real concurrency (N
handlers that each wait for the N-th to start), plain handlers in the thread pool while
the loop keeps running async ones, and the registry entry listing the running jobs.
Handlers synchronise on each other or on events set by the test, never on sleeps.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import pytest
from tests.helpers import stop_and_join, wait_until

from typedq.aworker import AsyncWorker
from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import ConfigError
from typedq.events import EventHandler
from typedq.job import Job, JobStatus
from typedq.retry import RetryPolicy
from typedq.worker import Worker

pytestmark = pytest.mark.timeout(30)


def add(queue: Queue, job_type: str, payload: dict[str, Any] | None = None, **fields: Any) -> str:
    job = Job.create(job_type, payload, queue=queue.name, now=queue.clock.now(), **fields)
    return queue.enqueue(job)


def is_status(queue: Queue, job_id: str, status: JobStatus) -> Callable[[], bool]:
    def predicate() -> bool:
        return queue.get_job(job_id).status is status

    predicate.__name__ = f"job {job_id} is {status.value}"
    return predicate


class Recorder(EventHandler):
    """Counts events (callbacks come from the worker's threads)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[str] = []
        self.completed: list[tuple[str, Any]] = []
        self.failed: list[tuple[str, BaseException | str]] = []
        self.dead: list[str] = []

    def on_job_started(self, job: Job, worker_id: str) -> None:
        with self.lock:
            self.started.append(job.job_id)

    def on_job_completed(self, job: Job, result: Any) -> None:
        with self.lock:
            self.completed.append((job.job_id, result))

    def on_job_failed(self, job: Job, error: BaseException | str) -> None:
        with self.lock:
            self.failed.append((job.job_id, error))

    def on_job_dead(self, job: Job) -> None:
        with self.lock:
            self.dead.append(job.job_id)


@pytest.fixture
def start() -> Iterator[Callable[..., AsyncWorker]]:
    workers: list[Worker] = []

    def _start(queue: Queue, handlers: dict[str, Any], **options: Any) -> AsyncWorker:
        options.setdefault("poll_interval", 0.02)
        options.setdefault("retry_policy", RetryPolicy(base_delay=10.0, jitter=0.0))
        worker = AsyncWorker(queue, handlers, **options)
        workers.append(worker)
        worker.start()
        return worker

    yield _start
    stop_and_join(workers)


async def double(payload: dict[str, Any]) -> int:
    await asyncio.sleep(0)
    return int(payload["n"]) * 2


def test_async_handlers_complete_with_results_and_events(
    queue: Queue, start: Callable[..., AsyncWorker]
) -> None:
    events = Recorder()
    ids = [add(queue, "double", {"n": n}) for n in range(30)]
    worker = start(queue, {"double": double}, concurrency=8, event_handler=events)
    for job_id in ids:
        wait_until(is_status(queue, job_id, JobStatus.COMPLETED))
    assert [queue.get_job(i).result for i in ids] == [n * 2 for n in range(30)]
    wait_until(lambda: len(events.completed) == 30)
    assert sorted(events.started) == sorted(ids)
    assert worker.stats.completed == 30
    assert worker.in_flight() == []


def test_handlers_run_concurrently_on_one_loop(queue: Queue, start: Callable[..., AsyncWorker]) -> None:
    """Each handler waits until all N have started: only N at once can finish."""
    n = 6
    started: list[int] = []
    loops: set[int] = set()
    threads: set[int] = set()

    async def gather(payload: dict[str, Any]) -> int:
        started.append(payload["i"])
        loops.add(id(asyncio.get_running_loop()))
        threads.add(threading.get_ident())
        deadline = time.monotonic() + 10
        while len(started) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(started)} of {n} handlers ran at once")
            await asyncio.sleep(0.002)
        return len(started)

    ids = [add(queue, "gather", {"i": i}) for i in range(n)]
    start(queue, {"gather": gather}, concurrency=n)
    for job_id in ids:
        wait_until(is_status(queue, job_id, JobStatus.COMPLETED), timeout=15)
    assert len(loops) == 1  # one event loop for every job, not one per job
    assert len(threads) == 1


def test_concurrency_caps_the_jobs_running_at_once(queue: Queue, start: Callable[..., AsyncWorker]) -> None:
    running = 0
    peak = 0
    gate = threading.Event()

    async def hold(payload: dict[str, Any]) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        while not gate.is_set():
            await asyncio.sleep(0.002)
        running -= 1

    ids = [add(queue, "hold", {}) for _ in range(10)]
    worker = start(queue, {"hold": hold}, concurrency=3, lease_s=1.0, heartbeat_s=0.05)
    wait_until(lambda: len(worker.in_flight()) == 3)
    assert sum(queue.get_job(i).status is JobStatus.RUNNING for i in ids) == 3

    def listed() -> tuple[str, ...]:
        return next((w.current for w in queue.workers() if w.worker_id == worker.worker_id), ())

    wait_until(lambda: len(listed()) == 3)  # the registry entry lists every running job
    assert set(listed()) == {job_id for job_id, _ in worker.in_flight()}
    assert set(worker.info().current) == {job_id for job_id, _ in worker.in_flight()}
    gate.set()
    for job_id in ids:
        wait_until(is_status(queue, job_id, JobStatus.COMPLETED))
    assert peak == 3


def test_failure_is_retried_per_policy_then_completes(
    queue: Queue, clock: FakeClock, start: Callable[..., AsyncWorker]
) -> None:
    attempts: list[int] = []

    async def flaky(payload: dict[str, Any]) -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    events = Recorder()
    job_id = add(queue, "flaky", {}, max_retries=2)
    start(queue, {"flaky": flaky}, event_handler=events)
    wait_until(lambda: queue.get_job(job_id).retry_count == 1)
    job = queue.get_job(job_id)
    assert job.status is JobStatus.PENDING
    assert job.error is not None
    assert "RuntimeError: first attempt fails" in job.error
    assert job.scheduled_at is not None
    assert job.scheduled_at >= clock.now() + 10.0  # the policy's backoff, on the fake clock
    clock.advance(job.scheduled_at - clock.now())
    wait_until(is_status(queue, job_id, JobStatus.COMPLETED))
    assert queue.get_job(job_id).result == "ok"
    assert len(events.failed) == 1


def test_retries_used_up_bury_with_a_dead_letter(
    queue: Queue, store_factory: Callable[[str], Queue], start: Callable[..., AsyncWorker]
) -> None:
    async def broken(payload: dict[str, Any]) -> None:
        raise ValueError("always")

    dlq = store_factory("dead-letter")
    events = Recorder()
    job_id = add(queue, "broken", {}, max_retries=0)
    start(queue, {"broken": broken}, dead_letter_queue=dlq, event_handler=events)
    wait_until(is_status(queue, job_id, JobStatus.DEAD))
    assert dlq.get_job(job_id).status is JobStatus.DEAD
    wait_until(lambda: events.dead == [job_id])


def test_timeout_cancels_the_task_and_retries(
    queue: Queue, clock: FakeClock, start: Callable[..., AsyncWorker]
) -> None:
    cancelled = threading.Event()
    calls: list[int] = []

    async def slow(payload: dict[str, Any]) -> str:
        calls.append(1)
        if len(calls) > 1:
            return "fast the second time"
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return "never"

    job_id = add(queue, "slow", {}, max_retries=1, timeout_seconds=0.05)
    worker = start(queue, {"slow": slow})
    wait_until(lambda: queue.get_job(job_id).retry_count == 1)
    assert cancelled.is_set()  # the task itself was cancelled, not abandoned
    job = queue.get_job(job_id)
    assert job.status is JobStatus.PENDING
    assert job.error is not None
    assert job.error.startswith("JobTimeoutError")
    assert worker.abandoned_threads == []
    assert job.scheduled_at is not None
    clock.advance(job.scheduled_at - clock.now())
    wait_until(is_status(queue, job_id, JobStatus.COMPLETED))
    assert queue.get_job(job_id).result == "fast the second time"


def test_a_handlers_own_timeout_error_is_a_plain_failure(
    queue: Queue, start: Callable[..., AsyncWorker]
) -> None:
    async def raises(payload: dict[str, Any]) -> None:
        raise TimeoutError("the remote side timed out")

    job_id = add(queue, "raises", {}, max_retries=1, timeout_seconds=30)
    start(queue, {"raises": raises})
    wait_until(lambda: queue.get_job(job_id).retry_count == 1)
    error = queue.get_job(job_id).error
    assert error is not None
    assert error.startswith("TimeoutError: the remote side timed out")


def test_sync_handlers_run_in_the_thread_pool_while_the_loop_runs(
    queue: Queue, start: Callable[..., AsyncWorker]
) -> None:
    gate = threading.Event()
    sync_threads: list[str] = []

    def blocking(payload: dict[str, Any]) -> str:
        sync_threads.append(threading.current_thread().name)
        assert gate.wait(10), "the async job never completed while this one blocked"
        return "sync done"

    blocked = add(queue, "blocking", {})
    worker = start(queue, {"blocking": blocking, "double": double}, concurrency=4)
    wait_until(lambda: bool(sync_threads))
    quick = add(queue, "double", {"n": 4})
    wait_until(is_status(queue, quick, JobStatus.COMPLETED))  # the loop is not blocked
    assert queue.get_job(blocked).status is JobStatus.RUNNING
    gate.set()
    wait_until(is_status(queue, blocked, JobStatus.COMPLETED))
    assert queue.get_job(blocked).result == "sync done"
    assert sync_threads[0].startswith(f"{worker.worker_id}:sync")


def test_graceful_stop_drains_running_jobs(queue: Queue, start: Callable[..., AsyncWorker]) -> None:
    entered: list[str] = []
    gate = threading.Event()

    async def work(payload: dict[str, Any]) -> str:
        entered.append(payload["k"])
        while not gate.is_set():
            await asyncio.sleep(0.002)
        return str(payload["k"])

    ids = [add(queue, "work", {"k": str(i)}) for i in range(4)]
    later = [add(queue, "work", {"k": f"later{i}"}) for i in range(3)]
    worker = start(queue, {"work": work}, concurrency=4)
    wait_until(lambda: len(entered) == 4)
    worker.stop()
    gate.set()
    assert worker.stop(wait=True, timeout=10)
    assert [queue.get_job(i).status for i in ids] == [JobStatus.COMPLETED] * 4
    assert [queue.get_job(i).status for i in later] == [JobStatus.PENDING] * 3
    assert queue.workers() == []  # unregistered


def test_cancel_running_gives_the_jobs_back(queue: Queue, start: Callable[..., AsyncWorker]) -> None:
    entered = threading.Event()

    async def forever(payload: dict[str, Any]) -> None:
        entered.set()
        await asyncio.sleep(3600)

    job_id = add(queue, "forever", {})
    worker = start(queue, {"forever": forever})
    assert entered.wait(10)
    worker.stop()
    assert worker.cancel_running() == 1
    assert worker.stop(wait=True, timeout=10)
    job = queue.get_job(job_id)
    assert job.status is JobStatus.PENDING
    assert job.retry_count == 0  # interrupted, not failed


class Cancelled(Recorder):
    def __init__(self) -> None:
        super().__init__()
        self.cancelled: list[str] = []

    def on_job_cancelled(self, job: Job) -> None:
        with self.lock:
            self.cancelled.append(job.job_id)


def test_cancel_job_cancels_its_task_and_records_cancelled(
    queue: Queue, start: Callable[..., AsyncWorker]
) -> None:
    seen_cancel = threading.Event()
    entered = threading.Event()

    async def forever(payload: dict[str, Any]) -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            seen_cancel.set()
            raise

    events = Cancelled()
    job_id = add(queue, "forever", {}, max_retries=3)
    other = add(queue, "double", {"n": 5})
    worker = start(queue, {"forever": forever, "double": double}, event_handler=events)
    assert entered.wait(10)
    assert not worker.cancel_job("not-running-here")
    assert worker.cancel_job(job_id)
    wait_until(is_status(queue, job_id, JobStatus.CANCELLED))
    assert seen_cancel.is_set()
    assert queue.get_job(job_id).retry_count == 0  # not a failed attempt
    wait_until(lambda: events.cancelled == [job_id])
    wait_until(is_status(queue, other, JobStatus.COMPLETED))  # the others go on


def test_a_completion_after_the_lease_was_lost_is_refused(
    queue: Queue, start: Callable[..., AsyncWorker]
) -> None:
    gate = threading.Event()

    async def late(payload: dict[str, Any]) -> str:
        while not gate.is_set():
            await asyncio.sleep(0.002)
        return "late"

    job_id = add(queue, "late", {})
    worker = start(queue, {"late": late})
    wait_until(lambda: bool(worker.in_flight()))
    ((held, token),) = worker.in_flight()
    assert held == job_id
    queue.release(job_id, token=token)  # given back (say by a shutdown) while it runs
    wait_until(lambda: any(t != token for _, t in worker.in_flight()))  # claimed again
    gate.set()
    wait_until(is_status(queue, job_id, JobStatus.COMPLETED))
    wait_until(lambda: worker.stats.stale + worker.stats.completed == 2)
    # Both attempts finished; only the one holding the current lease was recorded.
    assert (worker.stats.stale, worker.stats.completed) == (1, 1)


def test_jobs_of_types_without_a_handler_wait(queue: Queue, start: Callable[..., AsyncWorker]) -> None:
    other = add(queue, "other", {})
    mine = add(queue, "double", {"n": 1})
    start(queue, {"double": double})
    wait_until(is_status(queue, mine, JobStatus.COMPLETED))
    assert queue.get_job(other).status is JobStatus.PENDING


def test_concurrency_is_validated(queue: Queue) -> None:
    bad: Any
    for bad in (0, -1, 1.5, "10", 10_001):
        with pytest.raises(ConfigError, match="concurrency"):
            AsyncWorker(queue, {}, concurrency=bad)


def test_refused_completions_are_held_and_written_later(
    queue: Queue, start: Callable[..., AsyncWorker]
) -> None:
    """The storage refuses writes: the finished jobs keep their leases, nothing new is
    claimed, and the completions are written once the storage takes writes again."""
    from tests.reliability.faults import FailingCompletions

    faulty = FailingCompletions(queue)
    faulty.failing.set()
    ids = [add(queue, "double", {"n": n}) for n in range(3)]
    worker = start(cast(Queue, faulty), {"double": double}, concurrency=3)
    wait_until(lambda: faulty.refused >= 2)  # the first refusal is held by now
    late = add(queue, "double", {"n": 10})
    wait_until(lambda: faulty.refused >= 4, timeout=10)  # retried with a backoff
    assert all(queue.get_job(i).status is JobStatus.RUNNING for i in ids)
    assert queue.get_job(late).status is JobStatus.PENDING  # nothing claimed meanwhile
    faulty.failing.clear()
    for job_id in [*ids, late]:
        wait_until(is_status(queue, job_id, JobStatus.COMPLETED), timeout=10)
    assert [queue.get_job(i).result for i in ids] == [0, 2, 4]
    assert worker.stats.completed == 4
