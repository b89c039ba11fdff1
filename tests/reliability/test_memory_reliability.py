"""Fast-tier reliability tests of thread workers (RELIABILITY.md §4b, B1 and D5).

* B1: the original specification's stress test through ``JobQueueManager``: 10 producer
  threads × 1,000 jobs and 5 workers, on ``memory://``, a ``sqlite:///`` file and Redis. The
  ledger is the oracle: 0 lost, 0 duplicates, and ``get_stats()`` agrees with it
  exactly. Finishing inside the timeout is the "no deadlock" check. On SQLite, no
  WARNING+ record mentions ``database is locked`` and ``integrity_check`` is ok. The
  variant with retries and dead jobs runs on the memory backend.
* D5: start/stop stress: 20 threads × 25 start/stop cycles of ``Worker`` and of
  ``JobQueueManager``. No exception, and the thread and fd counts return to baseline
  (``filterwarnings = error`` also turns any ``ResourceWarning`` into a failure).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.conftest import redis_test_url
from tests.helpers import wait_until
from tests.reliability.ledger import Ledger, check

from typedq import Job, JobQueue, JobQueueManager, JobStatus, Worker
from typedq.backends._sqlite_driver import sqlite3
from typedq.context import JobContext

#: Lease knobs of the reliability tests (RELIABILITY.md §4a).
FAST_LEASES = {"lease_s": 1.0, "heartbeat_s": 0.25, "reaper_s": 0.1}
#: Lease knobs of B1: heartbeats and the reaper as fast as in the other reliability tests
#: (RELIABILITY.md §4a), but a lease no CPU starvation can outlast. B1 proves claims are
#: exclusive under contention (0 duplicates) and nothing is lost; with a 1 s lease a
#: heartbeat thread starved for a second on a loaded machine let the reaper rescue a job
#: still running (a legitimate at-least-once redelivery, the subject of C1-C4), which
#: B1 then reported as a duplicate. Any duplicate now is a double claim.
B1_LEASES = {"lease_s": 30.0, "heartbeat_s": 0.25, "reaper_s": 0.1}

PRODUCERS = 10
JOBS_PER_PRODUCER = 1_000
WORKERS = 5


def _open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except FileNotFoundError:  # not Linux: the thread check still runs
        return 0


def _run_threads(count: int, target: Callable[[int], None], timeout: float) -> list[BaseException]:
    """Run ``target(i)`` in ``count`` threads released together; return what they raised."""
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(index: int) -> None:
        try:
            barrier.wait(timeout)
            target(index)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,), name=f"stress-{i}") for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout)
    stuck = [t.name for t in threads if t.is_alive()]
    assert not stuck, f"threads still running after {timeout}s (deadlock?): {stuck}"
    return errors


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """``(name, URL)`` of B1's backend: memory, a SQLite file, or the test Redis server
    under a prefix of the test's own."""
    if request.param == "redis":
        with redis_test_url() as url:
            yield "redis", url
        return
    yield request.param, "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'b1.db'}"


@pytest.mark.timeout(60)
def test_b1_ten_producers_five_workers_no_loss_no_duplicates(
    backend: tuple[str, str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    name, url = backend
    caplog.set_level(logging.WARNING)
    baseline_threads = threading.active_count()
    ledger = Ledger(tmp_path / "b1.ledger")
    manager = JobQueueManager(
        {"backend": url, "max_workers": WORKERS, "poll_interval": 0.05, **B1_LEASES}
    )
    queue = manager.get_queue("default")

    def handler(payload: dict[str, Any], ctx: JobContext) -> int:
        job_id = payload["id"]
        attempt = ctx.token  # a claim's token is its attempt
        ledger.start(job_id, attempt, attempt)
        ledger.end(job_id, attempt, attempt)
        return int(payload["n"])

    manager.register_handler("stress", handler)
    assert len(manager.start_workers()) == WORKERS
    submitted: list[list[str]] = [[] for _ in range(PRODUCERS)]

    def produce(p: int) -> None:
        for n in range(JOBS_PER_PRODUCER):
            job_id = f"p{p}-{n}"
            assert manager.submit("stress", {"id": job_id, "n": n}, job_id=job_id) == job_id
            submitted[p].append(job_id)

    try:
        errors = _run_threads(PRODUCERS, produce, timeout=30)
        assert errors == []
        expected = [job_id for ids in submitted for job_id in ids]
        assert len(expected) == len(set(expected)) == PRODUCERS * JOBS_PER_PRODUCER

        assert manager.wait_for_completion(expected, timeout=40), "jobs still unfinished"
        assert manager.stop_workers(graceful=True, timeout=10) == []
        ledger.close()

        stored = {job.job_id: job for job in queue.list_jobs(limit=len(expected) + 1)}  # one read
        assert sorted(stored) == sorted(expected)
        statuses = {job_id: stored[job_id].status for job_id in expected}
        report = check(ledger.path, expected, statuses=statuses)
        assert report.lost == set()
        assert report.dups == set()
        assert report.unknown == set()
        assert sum(report.starts.values()) == sum(report.ends.values()) == len(expected)
        assert all(stored[job_id].result == int(job_id.split("-")[1]) for job_id in expected)

        stats = manager.get_stats()
        assert stats["total_submitted"] == len(expected)
        assert stats["total_completed"] == sum(report.ends.values())
        assert stats["total_failed"] == stats["total_dead"] == stats["total_retried"] == 0
        assert stats["jobs_per_queue"]["default"] == len(expected)
        assert stats["status_per_queue"]["default"][JobStatus.COMPLETED.value] == len(expected)
        assert stats["workers_per_queue"]["default"] == 0
    finally:
        ledger.close()
        manager.close(timeout=10)
    wait_until(lambda: threading.active_count() <= baseline_threads, timeout=10)
    locked = [r.getMessage() for r in caplog.records if "database is locked" in r.getMessage()]
    assert locked == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
    if name == "sqlite":
        conn = sqlite3.connect(tmp_path / "b1.db")
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()


@pytest.mark.timeout(60)
def test_b1_with_retries_and_dead_jobs_stats_match_the_ledger(tmp_path: Path) -> None:
    """B1 with failures mixed in: every 10th job fails its first attempt, every 100th
    (offset 1) always fails and dies. Each attempt runs once; the counters add up."""
    ledger = Ledger(tmp_path / "b1-retries.ledger")
    manager = JobQueueManager(
        {"max_workers": WORKERS, "poll_interval": 0.05, "base_delay": 0.0, **B1_LEASES}
    )
    queue = manager.get_queue("default")

    def handler(payload: dict[str, Any], ctx: JobContext) -> int:
        job_id, n = payload["id"], payload["n"]
        attempt = ctx.token
        ledger.start(job_id, attempt, attempt)
        if n % 100 == 1 or (n % 10 == 0 and attempt == 1):
            raise RuntimeError(f"job {job_id} attempt {attempt} fails")
        ledger.end(job_id, attempt, attempt)
        return int(n)

    manager.register_handler("stress", handler)
    manager.start_workers()
    submitted: list[list[str]] = [[] for _ in range(PRODUCERS)]

    def produce(p: int) -> None:
        for n in range(JOBS_PER_PRODUCER):
            job_id = f"r{p}-{n}"
            manager.submit("stress", {"id": job_id, "n": n}, job_id=job_id, max_retries=1)
            submitted[p].append(job_id)

    try:
        assert _run_threads(PRODUCERS, produce, timeout=30) == []
        every = [job_id for ids in submitted for job_id in ids]
        assert manager.wait_for_completion(every, timeout=40)
        assert manager.stop_workers(graceful=True, timeout=10) == []
        ledger.close()

        doomed = {j for j in every if int(j.split("-")[1]) % 100 == 1}
        flaky = {j for j in every if int(j.split("-")[1]) % 10 == 0}
        survivors = [j for j in every if j not in doomed]
        statuses = {j: queue.get_job(j).status for j in every}
        report = check(ledger.path, survivors, statuses=statuses)
        assert report.lost == set()
        assert report.dup_attempts == set()
        assert report.unknown == doomed  # they started, but are not expected to finish
        assert report.dups == doomed | flaky  # one start per attempt, two attempts each
        assert all(statuses[j] is JobStatus.DEAD for j in doomed)
        assert all(report.starts[j] == 2 and report.ends[j] == 0 for j in doomed)
        assert manager.get_dead_letter_queue().size == len(doomed)

        stats = manager.get_stats()
        assert stats["total_submitted"] == len(every)
        assert stats["total_completed"] == sum(report.ends.values()) == len(survivors)
        assert stats["total_failed"] == len(flaky) + 2 * len(doomed)
        assert stats["total_retried"] == len(flaky) + len(doomed)
        assert stats["total_dead"] == len(doomed)
    finally:
        ledger.close()
        manager.close(timeout=10)


CYCLE_THREADS = 20
CYCLES = 25


def _noop(payload: dict[str, Any]) -> None:
    return None


@pytest.mark.timeout(60)
def test_d5_worker_start_stop_stress() -> None:
    baseline_threads, baseline_fds = threading.active_count(), _open_fds()

    def cycles(index: int) -> None:
        queue = JobQueue(f"q{index}")
        for cycle in range(CYCLES):
            worker = Worker(queue, {"t": _noop}, poll_interval=0.05, worker_id=f"stress{index}")
            worker.start()
            if cycle % 2:
                queue.enqueue(Job.create("t", {"cycle": cycle}, queue=queue.name))
            assert worker.stop(wait=True, timeout=10), f"{worker.worker_id} did not stop"
            assert not worker.is_alive()

    errors = _run_threads(CYCLE_THREADS, cycles, timeout=45)
    assert errors == []
    wait_until(lambda: threading.active_count() <= baseline_threads, timeout=10,
               message="thread count back to baseline")
    assert _open_fds() <= baseline_fds


@pytest.mark.timeout(60)
def test_d5_manager_start_stop_stress() -> None:
    baseline_threads, baseline_fds = threading.active_count(), _open_fds()

    def cycles(index: int) -> None:
        for cycle in range(CYCLES):
            manager = JobQueueManager({"max_workers": 2, "poll_interval": 0.05, **FAST_LEASES})
            manager.register_handler("t", _noop)
            if cycle % 3 == 0:
                with manager:
                    job_id = manager.submit("t", {})
                    assert manager.wait_for_completion([job_id], timeout=10)
            else:
                assert len(manager.start_workers()) == 2
                if cycle % 3 == 1:
                    manager.submit("t", {})
                    assert manager.stop_workers(graceful=True, timeout=10) == []
                assert manager.close(timeout=10) == []
            assert manager.workers() == []

    errors = _run_threads(CYCLE_THREADS, cycles, timeout=45)
    assert errors == []
    wait_until(lambda: threading.active_count() <= baseline_threads, timeout=10,
               message="thread count back to baseline")
    assert _open_fds() <= baseline_fds
