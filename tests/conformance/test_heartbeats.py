"""Heartbeats and lost leases with a real ``Worker`` (RELIABILITY.md §4b, C3 and C4).

These tests run on real time: the worker's heartbeat, the reaper and lease expiry are
what is tested, so this module's ``clock`` is the system clock (the conformance fixtures
build the queue from it). Knobs of §4a: lease 1 s, heartbeat 0.25 s, reaper 0.1 s.

* C3: a job runs for 5 × the lease. Its lease never lapses (sampled while it runs), it is
  never rescued: 1 ``start``, 1 ``end``, attempt 1.
* C4: the renew path fails (``extend_lease`` raises ``BackendError``) for 2 × the lease
  while the handler keeps running. The lease expires, the reaper gives the job back and a
  second worker completes it. The first worker's keeper reports the lease lost
  (``LeaseKeeper.is_lost``, which its handler polls as a cooperative signal), and its late
  ``complete()`` is refused with ``StaleLeaseError``: the job ran twice and was completed
  once.

Every worker here lives in this process: on SQLite, owner liveness (C6) is on, and still
a live owner that stops renewing a lease loses it (the lease also expires by the host's
monotonic clock), so the rule is the same on every backend.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
from tests.conformance.conftest import make_queue_factory_fixture
from tests.helpers import stop_and_join, wait_until
from tests.reliability.faults import FailingCompletions, FailingRenewals
from tests.reliability.ledger import Ledger, check

from typedq.backends.base import Queue
from typedq.clock import Clock, system_clock
from typedq.job import Job, JobStatus
from typedq.leases import Reaper
from typedq.worker import Worker

MakeJob = Callable[..., Job]

LEASE_S = 1.0
HEARTBEAT_S = 0.25
REAPER_S = 0.1

#: These tests wait seconds of real time each: their codec and 2handles variants are slow.
queue_factory = make_queue_factory_fixture(real_time=True)


@pytest.fixture
def clock() -> Clock:
    """Real time for this module: leases must really expire."""
    return system_clock


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    with Ledger(tmp_path / "ledger") as made:
        yield made


@pytest.fixture
def start() -> Iterator[Callable[..., Any]]:
    """Start workers and reapers; each is stopped and joined at teardown."""
    workers: list[Worker] = []
    reapers: list[Reaper] = []

    def _start(thing: Worker | Reaper) -> Any:
        if isinstance(thing, Worker):
            workers.append(thing)
        else:
            reapers.append(thing)
        thing.start()
        return thing

    yield _start
    for reaper in reapers:
        reaper.stop()
    stop_and_join(workers)


def _worker(queue: Queue, handler: Callable[[Job], Any], name: str) -> Worker:
    """A worker with the §4a knobs whose handler is given the whole job."""

    class _Handler:
        takes_job = True

        def __call__(self, job: Job) -> Any:
            return handler(job)

    return Worker(
        queue, {"task": _Handler()}, poll_interval=0.02, worker_id=name,
        lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S,
    )


@pytest.mark.timeout(30)
def test_c3_heartbeats_keep_a_job_of_five_leases_alive(
    queue: Queue, make_job: MakeJob, ledger: Ledger, start: Callable[..., Any]
) -> None:
    work_done = threading.Event()  # never set: waiting on it is 5 × the lease of work

    def long_job(job: Job) -> str:
        ledger.start(job.job_id, job.attempt, job.attempt)
        work_done.wait(5 * LEASE_S)
        ledger.end(job.job_id, job.attempt, job.attempt)
        return "done"

    job_id = queue.enqueue(make_job(job_id="c3"))
    reaper = start(Reaper(lambda: [queue], interval_s=REAPER_S))
    worker = start(_worker(queue, long_job, "c3"))

    leases: list[float] = []

    def finished() -> bool:
        job = queue.get_job(job_id)
        now = time.time()
        if job.status is JobStatus.RUNNING and job.lease_until is not None:
            # The lease never lapses: it is always in the future while the job runs.
            assert job.lease_until > now, f"lease expired {now - job.lease_until:.3f}s ago"
            leases.append(job.lease_until)
        return job.status is JobStatus.COMPLETED

    wait_until(finished, timeout=5 * LEASE_S + 10, interval=0.02, message="the long job completed")
    ledger.close()

    job = queue.get_job(job_id)
    report = check(ledger.path, [job_id], statuses={job_id: job.status})
    assert report.ok
    assert (report.starts[job_id], report.ends[job_id]) == (1, 1)
    assert reaper.reclaimed_total == 0
    assert (job.attempt, job.lost_count, job.result) == (1, 0, "done")
    assert worker.stats.stale == 0
    # Renewed all along: 5 s of work at one heartbeat every 0.25 s.
    assert worker.lease_keeper.heartbeats >= 15
    assert len(set(leases)) >= 10, sorted(set(leases))
    assert max(leases) - min(leases) >= 3 * LEASE_S


@pytest.mark.timeout(30)
def test_c4_a_worker_whose_renewals_fail_loses_the_lease_and_its_result_is_refused(
    queue: Queue, make_job: MakeJob, ledger: Ledger, start: Callable[..., Any]
) -> None:
    flaky = FailingRenewals(queue)
    first_started = threading.Event()
    noticed: list[bool] = []
    first: list[Worker] = []

    def job_body(job: Job) -> str:
        ledger.start(job.job_id, job.attempt, job.attempt)
        if job.attempt == 1:
            first_started.set()
            # A long handler that polls the cooperative "lease lost" signal.
            keeper = first[0].lease_keeper
            deadline = time.monotonic() + 20
            while not keeper.is_lost(cast(Queue, flaky), job.job_id) and time.monotonic() < deadline:
                threading.Event().wait(0.01)
            noticed.append(keeper.is_lost(cast(Queue, flaky), job.job_id))
        ledger.end(job.job_id, job.attempt, job.attempt)
        return f"attempt {job.attempt}"

    job_id = queue.enqueue(make_job(job_id="c4"))
    reaper = start(Reaper(lambda: [queue], interval_s=REAPER_S))
    first.append(_worker(cast(Queue, flaky), job_body, "c4-first"))  # before it can run job_body
    start(first[0])
    wait_until(first_started.is_set, timeout=10, message="the first attempt started")

    flaky.failing.set()
    failing_since = time.monotonic()
    second = start(_worker(queue, job_body, "c4-second"))
    # The lease lapses (no renewal), the reaper gives the job back, the second worker runs it.
    wait_until(lambda: queue.get_job(job_id).status is JobStatus.COMPLETED, timeout=LEASE_S + 5)
    assert time.monotonic() - failing_since <= LEASE_S + HEARTBEAT_S + REAPER_S + 1.0
    # The renew path stays broken for 2 × the lease in all.
    wait_until(
        lambda: flaky.refused >= 2 * LEASE_S / HEARTBEAT_S, timeout=10, message="2 × lease of refusals"
    )
    flaky.failing.clear()
    wait_until(lambda: first[0].stats.stale == 1, timeout=10, message="the first worker's result refused")
    ledger.close()

    assert noticed == [True]  # the keeper told the handler its lease was lost
    assert flaky.completes == [(job_id, 1, "StaleLeaseError")]
    job = queue.get_job(job_id)
    assert (job.status, job.attempt, job.lost_count, job.retry_count) == (JobStatus.COMPLETED, 2, 1, 0)
    assert job.result == "attempt 2"
    assert (first[0].stats.completed, second.stats.completed) == (0, 1)
    assert reaper.reclaimed_total == 1
    report = check(ledger.path, [job_id], statuses={job_id: job.status}, in_flight_at_kill=[job_id])
    assert report.ok
    assert report.dups == {job_id}  # ran twice (at least once delivery), completed once
    assert (report.starts[job_id], report.ends[job_id]) == (2, 2)


# -- completions the storage refused (a held write lock, a full disk) ------------------------


@pytest.mark.timeout(30)
def test_a_refused_completion_is_retried_under_a_renewed_lease_not_left_running(
    queue: Queue, make_job: MakeJob, start: Callable[..., Any]
) -> None:
    broken = FailingCompletions(queue)
    ids = queue.enqueue_many([make_job(job_id=f"q{i}") for i in range(20)])
    reaper = start(Reaper(lambda: [queue], interval_s=REAPER_S))
    broken.failing.set()
    start(_worker(cast(Queue, broken), lambda job: job.job_id, "refused"))
    # The writes fail for 2 × the lease: the completions wait, their leases renewed.
    wait_until(lambda: broken.refused >= 3, timeout=10, message="completions refused")
    failing_since = time.monotonic()
    wait_until(lambda: time.monotonic() - failing_since >= 2 * LEASE_S, timeout=10)
    running = [queue.get_job(i) for i in ids if queue.get_job(i).status is JobStatus.RUNNING]
    assert running, "the refused jobs are held by the worker"
    assert all((j.lease_until or 0) > time.time() for j in running)  # renewed all along
    broken.failing.clear()
    wait_until(lambda: all(queue.get_job(i).status is JobStatus.COMPLETED for i in ids), timeout=10)
    assert reaper.reclaimed_total == 0
    for job_id in ids:
        job = queue.get_job(job_id)
        assert (job.attempt, job.lost_count, job.result) == (1, 0, job_id)


@pytest.mark.timeout(30)
def test_a_worker_stopped_while_its_completions_are_refused_gives_the_jobs_back(
    queue: Queue, make_job: MakeJob
) -> None:
    broken = FailingCompletions(queue)
    queue.enqueue(make_job(job_id="held"))
    broken.failing.set()
    worker = _worker(cast(Queue, broken), lambda job: "done", "stopping")
    worker.start()
    try:
        wait_until(lambda: broken.refused >= 1, timeout=10, message="the completion refused")
    finally:
        assert worker.stop(wait=True, timeout=10)
    job = queue.get_job("held")
    assert (job.status, job.lost_count, job.retry_count) == (JobStatus.PENDING, 0, 0)
