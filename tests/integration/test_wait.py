"""``wait_for_completion`` is driven by completions, not by reading every id on every poll.

A spy counts the reads (``get_job``) of the real queue; the bound is one read per job plus
one per poll (1 ms apart at first, doubling to 50 ms), where the old loop read every
unfinished id on every poll.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from typedq._waiting import MAX_POLL_S
from typedq.backends.base import Queue
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager

JOBS = 400


def _work(payload: dict[str, Any]) -> None:
    time.sleep(0.002)  # the job's work: the drain spans many polls


def _count_reads(queue: Queue) -> list[int]:
    """Wrap the queue's ``get_job`` (the real one is called); return the live count."""
    reads = [0]
    real = queue.get_job

    def get_job(job_id: str) -> Job:
        reads[0] += 1
        return real(job_id)

    queue.get_job = get_job  # type: ignore[method-assign]  # a counting spy on the real queue
    return reads


def _poll_bound(elapsed: float) -> int:
    """The most polls a wait of ``elapsed`` seconds makes (1, 2, 4 ... ms, then 50 ms)."""
    return int(elapsed / MAX_POLL_S) + 12


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def manager(backend: str) -> Iterator[JobQueueManager]:
    manager = JobQueueManager({"backend": backend, "max_workers": 1, "poll_interval": 0.02})
    manager.register_handler("work", _work)
    yield manager
    manager.close(timeout=10)


def test_waiting_on_jobs_run_here_reads_each_job_at_most_once(manager: JobQueueManager) -> None:
    ids = [manager.submit("work", {"i": i}) for i in range(JOBS)]
    reads = _count_reads(manager.get_queue("default"))
    manager.start_workers()
    began = time.monotonic()
    assert manager.wait_for_completion(ids, timeout=60)
    elapsed = time.monotonic() - began
    assert all(manager.get_job(i).status is JobStatus.COMPLETED for i in ids)
    # The workers' completion events account for most jobs: no read at all for those.
    assert reads[0] <= JOBS + _poll_bound(elapsed), (reads[0], elapsed)


def test_waiting_on_jobs_another_manager_runs(tmp_path: Path) -> None:
    """No events reach this manager: it reads each job once after it ended, plus a poll."""
    backend = f"sqlite:///{tmp_path / 'jobs.db'}"
    waiter = JobQueueManager({"backend": backend})
    runner = JobQueueManager({"backend": backend, "max_workers": 1, "poll_interval": 0.02})
    try:
        runner.register_handler("work", _work)
        ids = [runner.submit("work", {"i": i}) for i in range(JOBS)]
        reads = _count_reads(waiter.get_queue("default"))
        runner.start_workers()
        began = time.monotonic()
        assert waiter.wait_for_completion(ids, timeout=60)
        elapsed = time.monotonic() - began
        assert reads[0] <= JOBS + _poll_bound(elapsed), (reads[0], elapsed)
        assert all(waiter.get_job(i).status is JobStatus.COMPLETED for i in ids)
    finally:
        runner.close(timeout=10)
        waiter.close()


def test_a_job_ending_without_an_event_is_seen(manager: JobQueueManager) -> None:
    """Dependents failed by their parent's death get no event: the poll finds them."""

    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError("broken")

    manager.register_handler("broken", broken)
    parent = manager.submit("broken", {}, max_retries=0)
    children = [manager.submit("work", {}, depends_on=[parent]) for _ in range(3)]
    manager.start_workers()
    assert manager.wait_for_completion([*children, parent], timeout=10)
    assert {manager.get_job(c).status for c in children} == {JobStatus.FAILED}
    assert manager.get_job(parent).status is JobStatus.DEAD
