"""Threads against one queue: each job is claimed exactly once; waiting wakes promptly."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from tests.helpers import wait_until

from typedq.backends.base import Queue
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]

N_JOBS = 2000
N_THREADS = 8


pytestmark = pytest.mark.usefixtures("switch_threads_often")


def _claim_in_threads(queue: Queue, take: Callable[[Queue, str], list[str]]) -> Counter[str]:
    """Run N_THREADS workers that take jobs with ``take`` until none is left."""
    claimed: Counter[str] = Counter()
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(N_THREADS)

    def worker(name: str) -> None:
        try:
            start.wait(timeout=10)
            while ids := take(queue, name):
                with lock:
                    claimed.update(ids)
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(N_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a claiming thread hung"
    assert errors == []
    return claimed


def _claim_and_complete(queue: Queue, worker: str) -> list[str]:
    claim = queue.claim(worker, lease_s=60)
    if claim is None:
        return []
    queue.complete(claim.job.job_id, token=claim.token, result=worker)
    return [claim.job.job_id]


def _claim_many_and_complete(queue: Queue, worker: str) -> list[str]:
    claims = queue.claim_many(worker, lease_s=60, limit=7)
    for claim in claims:
        queue.complete(claim.job.job_id, token=claim.token, result=worker)
    return [c.job.job_id for c in claims]


def _dequeue(queue: Queue, worker: str) -> list[str]:
    job = queue.dequeue()
    return [] if job is None else [job.job_id]


@pytest.mark.parametrize(
    "take",
    [
        pytest.param(_claim_and_complete, id="claim"),
        pytest.param(_claim_many_and_complete, id="claim_many"),
        pytest.param(_dequeue, id="dequeue"),
    ],
)
def test_each_job_is_taken_exactly_once(
    queue: Queue, make_job: MakeJob, take: Callable[[Queue, str], list[str]]
) -> None:
    ids = [f"job-{i:04d}" for i in range(N_JOBS)]
    queue.enqueue_many([make_job(job_id=job_id, priority=1 + i % 10) for i, job_id in enumerate(ids)])
    claimed = _claim_in_threads(queue, take)
    duplicates = {job_id: n for job_id, n in claimed.items() if n > 1}
    assert duplicates == {}
    assert set(claimed) == set(ids)
    assert queue.ready_count() == 0
    counts = queue.count_by_status()
    assert counts[JobStatus.PENDING] == 0
    assert sum(counts.values()) == N_JOBS


def test_concurrent_producers_and_consumers_lose_nothing(queue: Queue, make_job: MakeJob) -> None:
    producers, per_producer = 4, 250
    produced = threading.Event()
    claimed: Counter[str] = Counter()
    lock = threading.Lock()
    errors: list[BaseException] = []

    def produce(p: int) -> None:
        try:
            for i in range(per_producer):
                queue.enqueue(make_job(job_id=f"p{p}-{i}"))
        except BaseException as exc:
            errors.append(exc)

    def consume(name: str) -> None:
        try:
            while True:
                got = _claim_and_complete(queue, name)
                if got:
                    with lock:
                        claimed.update(got)
                elif produced.is_set() and queue.ready_count() == 0:
                    return
                else:
                    queue.wait_ready(0.05)
        except BaseException as exc:
            errors.append(exc)

    consumers = [threading.Thread(target=consume, args=(f"c{i}",)) for i in range(4)]
    makers = [threading.Thread(target=produce, args=(p,)) for p in range(producers)]
    for t in consumers + makers:
        t.start()
    for t in makers:
        t.join(timeout=60)
    produced.set()
    queue.interrupt()
    for t in consumers:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in consumers + makers)
    assert errors == []
    assert sum(claimed.values()) == len(claimed) == producers * per_producer
    assert queue.count_by_status()[JobStatus.COMPLETED] == producers * per_producer


# -- wait_ready and interrupt --------------------------------------------------------------


def test_wait_ready_returns_at_once_when_a_job_is_ready(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    assert queue.wait_ready(30) is True


def test_wait_ready_times_out_with_false_when_nothing_is_ready(queue: Queue) -> None:
    assert queue.wait_ready(0.01) is False


def test_wait_ready_is_false_once_the_job_that_was_ready_is_claimed(queue: Queue, make_job: MakeJob) -> None:
    """What signalled the job when it was added (Redis: its wake token, left in the list
    while nobody waited) does not outlive it: once claimed, a wait finds nothing."""
    queue.enqueue(make_job(job_id="j"))
    queue.enqueue_many([make_job(job_id="k"), make_job(job_id="l")])
    assert len(queue.claim_many("w", lease_s=30, limit=3)) == 3
    assert queue.wait_ready(0.05) is False


def test_wait_ready_wakes_when_another_thread_enqueues(queue: Queue, make_job: MakeJob) -> None:
    results: list[bool] = []
    waiting = threading.Event()

    def waiter() -> None:
        waiting.set()
        results.append(queue.wait_ready(30))

    thread = threading.Thread(target=waiter, daemon=True)
    thread.start()
    assert waiting.wait(timeout=10)
    queue.enqueue(make_job(job_id="wake-up"))
    thread.join(timeout=10)
    try:
        assert not thread.is_alive(), "wait_ready did not wake up on enqueue"
        assert results == [True]
    finally:
        queue.interrupt()  # never leave the thread blocked for 30 s


def test_interrupt_wakes_every_waiting_thread(queue: Queue) -> None:
    results: list[bool] = []
    lock = threading.Lock()

    def waiter() -> None:
        woke = queue.wait_ready(60)
        with lock:
            results.append(woke)

    threads = [threading.Thread(target=waiter, daemon=True) for _ in range(3)]
    for t in threads:
        t.start()

    def all_woken() -> bool:
        # A thread may not be blocked yet when interrupt() is called: call it until all
        # returned. Without a working interrupt() they would block for 60 s.
        queue.interrupt()
        return not any(t.is_alive() for t in threads)

    wait_until(all_woken, timeout=10, message="interrupt() woke every wait_ready")
    assert results == [False, False, False]


#: B4: batches a producer adds while a worker drains them and a reader counts.
B4_BATCHES = 12
B4_BATCH = 200


def test_b4_a_reader_never_sees_a_partial_batch_or_a_job_counted_twice(
    queue: Queue, make_job: MakeJob
) -> None:
    """B4 (RELIABILITY.md): a producer adds batches with ``enqueue_many`` while a worker
    claims and completes and a reader polls ``count_by_status()`` and ``size``. Every
    read sees whole batches only, the counts by status add up to the jobs added so far
    (a job moving from PENDING to RUNNING to COMPLETED during a read is counted once),
    and neither sum ever goes down."""
    added = begun = 0  # jobs whose enqueue_many returned; jobs of the calls begun
    producing = threading.Event()
    producing.set()
    errors: list[BaseException] = []
    reads: list[tuple[int, int, int, int]] = []  # (added before, counts' sum, size, begun after)

    def produce() -> None:
        nonlocal added, begun
        try:
            for b in range(B4_BATCHES):
                jobs = [make_job(job_id=f"b{b}-{i}") for i in range(B4_BATCH)]
                begun += B4_BATCH
                queue.enqueue_many(jobs)
                added += B4_BATCH
                time.sleep(0.005)  # room for reads between batches, not a synchronisation
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)
        finally:
            producing.clear()

    def work() -> None:
        try:
            while producing.is_set() or queue.ready_count():
                claims = queue.claim_many("b4", lease_s=60, limit=7)
                for claim in claims:
                    queue.complete(claim.job.job_id, token=claim.token)
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            while producing.is_set():
                before = added
                total = sum(queue.count_by_status().values())
                size = queue.size
                reads.append((before, total, size, begun))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=f) for f in (produce, work, read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a thread hung"
    assert errors == []
    final = B4_BATCHES * B4_BATCH
    assert any(0 < total < final for _, total, _, _ in reads), "no read fell between batches"
    for before, total, size, after in reads:
        assert total % B4_BATCH == 0, f"a partial batch counted: {total} jobs"
        assert size % B4_BATCH == 0, f"a partial batch in size: {size} jobs"
        assert before <= total <= after, f"counts add up to {total}; added {before}, begun {after}"
        assert before <= size <= after, f"size {size}; added {before}, begun {after}"
    totals = [total for _, total, _, _ in reads]
    assert totals == sorted(totals), "the counts' sum went down"
    counts = queue.count_by_status()
    assert counts[JobStatus.COMPLETED] == queue.size == final
