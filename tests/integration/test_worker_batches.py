"""Worker batches: quick jobs are claimed together and their completions committed with
one ``complete_many``; slow jobs go one at a time; nothing is reported before it is
committed; unstarted claims are given back on stop. Runs on every built-in backend."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import stop_and_join, wait_until

from typedq import EventHandler, Job, JobQueue, JobStatus, Worker
from typedq.backends.base import Claim, Completion, Queue
from typedq.backends.sqlite import SQLiteQueue
from typedq.errors import ConfigError, TypedqError
from typedq.worker import DEFAULT_BATCH_SIZE

pytestmark = pytest.mark.timeout(30)


class _Spy:
    """Records the sizes of claim_many and complete_many calls (mixed into a backend)."""

    claims: list[int]
    completions: list[int]
    after_commit: list[Callable[[], None]]
    singles: list[str]  # "claim" and "complete" calls of one job, in order

    def claim(self, worker_id: str, *, lease_s: float, job_types: Any = None) -> Claim | None:
        got: Claim | None = super().claim(worker_id, lease_s=lease_s, job_types=job_types)  # type: ignore[misc]
        if got is not None:
            self.singles.append("claim")
        return got

    def complete(self, job_id: str, *, token: int, result: Any = None) -> Job:
        self.singles.append("complete")
        done: Job = super().complete(job_id, token=token, result=result)  # type: ignore[misc]
        return done

    def claim_many(self, worker_id: str, *, lease_s: float, limit: int, job_types: Any = None) -> list[Claim]:
        got: list[Claim] = super().claim_many(  # type: ignore[misc]
            worker_id, lease_s=lease_s, limit=limit, job_types=job_types
        )
        self.claims.append(limit)
        return got

    def complete_many(self, completions: Sequence[Completion]) -> list[Job | TypedqError]:
        self.completions.append(len(completions))
        done: list[Job | TypedqError] = super().complete_many(completions)  # type: ignore[misc]
        for hook in self.after_commit:
            hook()
        return done


class SpyMemory(_Spy, JobQueue):
    pass


class SpySQLite(_Spy, SQLiteQueue):
    pass


@pytest.fixture(params=["memory", "sqlite"])
def queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    q: Any = (
        SpyMemory("batches") if request.param == "memory" else SpySQLite(tmp_path / "q.db", name="batches")
    )
    q.claims, q.completions, q.after_commit, q.singles = [], [], [], []
    yield q
    q.close()


def _add(queue: Queue, n: int, job_type: str = "quick", **fields: Any) -> list[str]:
    return queue.enqueue_many([Job(job_type=job_type, payload={"i": i}, **fields) for i in range(n)])


def _all_completed(queue: Queue, ids: list[str]) -> Callable[[], bool]:
    def done() -> bool:
        return all(queue.get_job(job_id).status is JobStatus.COMPLETED for job_id in ids)

    done.__name__ = f"{len(ids)} jobs COMPLETED"
    return done


def test_quick_jobs_are_claimed_and_completed_in_batches(
    queue: Any, start_worker: Callable[..., Worker]
) -> None:
    runs: list[int] = []
    ids = _add(queue, 600)
    worker = start_worker(queue, {"quick": lambda p: runs.append(p["i"]) or p["i"] * 2})
    wait_until(_all_completed(queue, ids), timeout=20)
    assert sorted(runs) == list(range(600))  # each job ran exactly once
    assert [queue.get_job(job_id).result for job_id in ids] == [i * 2 for i in range(600)]
    assert max(queue.claims) > 1
    assert max(queue.completions) > 1
    # Far fewer transitions than jobs: that is the point.
    assert len(queue.completions) < 300
    wait_until(lambda: worker.stats.completed == 600, timeout=5)


def test_the_last_job_of_a_batch_is_committed_with_the_others(
    queue: Any, start_worker: Callable[..., Worker]
) -> None:
    """One transaction per batch of completions: only a job claimed alone (before the
    worker knows its jobs are quick) is completed alone."""
    ids = _add(queue, 600)
    worker = start_worker(queue, {"quick": lambda p: None})
    wait_until(_all_completed(queue, ids), timeout=20)
    wait_until(lambda: worker.stats.completed == 600, timeout=5)
    assert max(queue.completions) > 1
    assert queue.singles.count("complete") == queue.singles.count("claim")
    assert sum(queue.completions) + queue.singles.count("complete") == 600


def test_slow_jobs_are_taken_one_at_a_time(queue: Any, start_worker: Callable[..., Worker]) -> None:
    ids = _add(queue, 8, job_type="slow")
    start_worker(queue, {"slow": lambda p: time.sleep(0.02)})
    wait_until(_all_completed(queue, ids), timeout=10)
    assert queue.claims == []  # claim() each time, never a batch
    assert queue.completions == []  # complete() each time, committed at once


def test_batch_size_one_never_batches(queue: Any, start_worker: Callable[..., Worker]) -> None:
    ids = _add(queue, 200)
    start_worker(queue, {"quick": lambda p: None}, batch_size=1)
    wait_until(_all_completed(queue, ids), timeout=10)
    assert queue.claims == []
    assert queue.completions == []


@pytest.mark.parametrize("bad", [0, -1, 1001, 2.5, "8"])
def test_batch_size_is_checked(queue: Any, bad: object) -> None:
    with pytest.raises(ConfigError, match="batch_size"):
        Worker(queue, {}, batch_size=bad)  # type: ignore[arg-type]


def test_a_completion_is_committed_before_it_is_reported(
    queue: Any, start_worker: Callable[..., Worker]
) -> None:
    # A reader with its own connection (another SQLiteQueue object on the same file)
    # sees every reported completion: it was committed before the event ran.
    reader: Queue = SQLiteQueue(queue.path, name=queue.name) if isinstance(queue, SQLiteQueue) else queue
    seen: list[JobStatus] = []

    class Check(EventHandler):
        def on_job_completed(self, job: Job, result: Any) -> None:
            seen.append(reader.get_job(job.job_id).status)

    ids = _add(queue, 300)
    try:
        start_worker(queue, {"quick": lambda p: None}, event_handler=Check())
        wait_until(lambda: len(seen) == 300, timeout=20)
    finally:
        if reader is not queue:
            reader.close()
    assert set(seen) == {JobStatus.COMPLETED}
    assert max(queue.completions) > 1
    assert all(queue.get_job(job_id).status is JobStatus.COMPLETED for job_id in ids)


def _warm_up(
    queue: Any, worker_types: dict[str, Callable[..., Any]], start_worker: Callable[..., Worker]
) -> Worker:
    """Start a worker and let it learn that "quick" jobs are quick."""
    warm = _add(queue, 50)
    worker = start_worker(queue, worker_types)
    wait_until(_all_completed(queue, warm), timeout=10)
    return worker


def test_a_heartbeat_right_after_a_group_commit_finds_no_lease_lost(
    queue: Any, caplog: pytest.LogCaptureFixture
) -> None:
    ids = _add(queue, 300)
    worker = Worker(queue, {"quick": lambda p: None}, poll_interval=0.05)
    # A heartbeat between the commit and the worker's bookkeeping: the leases of the
    # jobs just completed must no longer be renewed, or each would be reported lost.
    queue.after_commit.append(worker.lease_keeper.beat)
    caplog.set_level(logging.WARNING, logger="typedq.leases")
    worker.start()
    try:
        wait_until(_all_completed(queue, ids), timeout=20)
    finally:
        stop_and_join([worker])
    assert max(queue.completions) > 1
    assert [r.getMessage() for r in caplog.records if r.name == "typedq.leases"] == []
    assert not any(worker.lease_keeper.is_lost(queue, job_id) for job_id in ids)


def test_stop_releases_a_whole_prefetched_batch(
    queue: Any, start_worker: Callable[..., Worker], release: threading.Event
) -> None:
    entered = threading.Event()

    def blocking(p: dict[str, Any]) -> None:
        entered.set()
        assert release.wait(10)

    worker = _warm_up(queue, {"quick": lambda p: None, "block": blocking}, start_worker)
    worker.stop(wait=True, timeout=10)
    # Jobs added while no worker runs; a worker that knows its jobs are quick takes them
    # all in its first claim.
    queue.enqueue_many(
        [Job(job_type="block", priority=10)] + [Job(job_type="quick", payload={"i": i}) for i in range(20)]
    )
    warm = Worker(queue, worker.handlers, poll_interval=0.05, batch_size=50)
    warm._avg_run_s = 1e-6  # as after a run of quick jobs: the next claim is a full batch
    warm._by_type = dict(worker._by_type)
    warm.start()
    try:
        wait_until(entered.is_set, timeout=5)
        held = warm.in_flight()
        assert len(held) == 21  # the blocker running, 20 claimed behind it
        counts = queue.count_by_status()
        assert counts[JobStatus.RUNNING] == 21
        warm.stop()
        release.set()
        assert warm.stop(wait=True, timeout=10)
    finally:
        release.set()
        warm.stop(wait=True, timeout=10)
    counts = queue.count_by_status()
    assert counts[JobStatus.RUNNING] == 0
    assert counts[JobStatus.PENDING] == 20
    assert all(
        job.retry_count == 0 and job.error is None for job in queue.list_jobs(status=JobStatus.PENDING)
    )


def test_held_completions_do_not_wait_for_a_slow_job(
    queue: Any, start_worker: Callable[..., Worker], release: threading.Event
) -> None:
    started = threading.Event()

    def slow(p: dict[str, Any]) -> None:
        if p.get("block"):
            started.set()
            assert release.wait(10)
        else:
            time.sleep(0.02)

    worker = _warm_up(queue, {"quick": lambda p: None, "slow": slow}, start_worker)
    first_slow = queue.enqueue(Job(job_type="slow", payload={}))
    wait_until(_all_completed(queue, [first_slow]), timeout=5)  # now "slow" is known slow
    worker.stop(wait=True, timeout=10)
    quick = [Job(job_type="quick", payload={"i": i}, priority=9) for i in range(10)]
    blocker = Job(job_type="slow", payload={"block": True}, priority=1)
    queue.enqueue_many([*quick, blocker])
    again = Worker(queue, worker.handlers, poll_interval=0.05)
    again._avg_run_s = 1e-6  # as after a run of quick jobs: the next claim is a full batch
    again._by_type = dict(worker._by_type)
    again.start()
    try:
        wait_until(started.is_set, timeout=5)
        # The quick jobs ran before the blocker and are committed while it still runs.
        wait_until(_all_completed(queue, [job.job_id for job in quick]), timeout=5)
        assert queue.get_job(blocker.job_id).status is JobStatus.RUNNING
    finally:
        release.set()
        again.stop(wait=True, timeout=10)
    assert queue.get_job(blocker.job_id).status is JobStatus.COMPLETED


def test_an_unstorable_result_fails_only_its_job(tmp_path: Path) -> None:
    # SQLite stores results through the codec (memory keeps them as they are).
    queue = SpySQLite(tmp_path / "q.db", name="batches")
    queue.claims, queue.completions, queue.after_commit, queue.singles = [], [], [], []
    worker = Worker(queue, {"quick": lambda p: {1, 2} if p["i"] == 150 else p["i"]}, poll_interval=0.05)
    try:
        ids = _add(queue, 200)
        bad = ids[150]
        worker.start()
        wait_until(_all_completed(queue, [i for i in ids if i != bad]), timeout=20)
        wait_until(lambda: queue.get_job(bad).retry_count >= 1, timeout=10)
        job = queue.get_job(bad)
        assert job.status in (JobStatus.PENDING, JobStatus.RUNNING, JobStatus.DEAD)
        assert "SerializationError" in (job.error or "") or "Serializ" in (job.error or ""), job.error
        assert max(queue.completions) > 1
    finally:
        worker.stop(wait=True, timeout=10)
        queue.close()


def test_batch_size_is_a_queue_setting_of_the_manager() -> None:
    from typedq import JobQueueManager

    with pytest.raises(ConfigError, match="batch_size"):
        JobQueueManager({"batch_size": 0})
    plain = JobQueueManager()
    try:
        assert [w.batch_size for w in plain.start_workers(count=1)] == [DEFAULT_BATCH_SIZE]
    finally:
        plain.close()
    with pytest.raises(ConfigError, match=r"queues\.slow\.batch_size"):
        JobQueueManager({"queues": {"slow": {"batch_size": 5000}}})
    manager = JobQueueManager({"batch_size": 40, "queues": {"one": {"batch_size": 1}}})
    try:
        started = manager.start_workers(count=1)
        sizes = {worker.queue.name: worker.batch_size for worker in started}
    finally:
        manager.close()
    assert sizes == {"default": 40, "one": 1}
