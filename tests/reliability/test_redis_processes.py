"""Worker processes on Redis killed with ``kill -9`` while a producer enqueues: 0 lost.

The harness is the process tests' (``test_process_workers``): real ``typedq worker``
pools of the ledger app, victims chosen among the processes inside a handler, and the
ledger as the oracle. The queue lives on 127.0.0.1:6379 under a prefix of its own.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conformance.conftest import delete_redis_prefix
from tests.helpers import redis_available, skip_or_fail, wait_until, wait_while_progressing
from tests.reliability.ledger import check
from tests.reliability.test_process_workers import (
    RESCUE_S,
    Pool,
    _alive,
    _open_starts,
    _owner_pid,
    _statuses,
)

from typedq.backends.base import Queue
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager

pytestmark = [pytest.mark.chaos, pytest.mark.redis]


@pytest.fixture
def backend() -> Iterator[str]:
    if not redis_available():
        skip_or_fail("no Redis server answers on 127.0.0.1:6379")
    prefix = f"typedq-test-{uuid.uuid4().hex[:12]}"
    yield f"redis://127.0.0.1:6379/0?prefix={prefix}"
    delete_redis_prefix(prefix)


@pytest.fixture
def queue(backend: str) -> Iterator[Queue]:
    manager = JobQueueManager({"backend": backend})
    yield manager.get_queue("default")
    manager.close(graceful=False)


def _kill_workers_while_producing(folder: Path, backend: str, queue: Queue, *, jobs: int, kills: int) -> None:
    rng = random.Random(3)
    ids = [f"j{i:05d}" for i in range(jobs)]
    durations = [rng.uniform(0.02, 0.15) for _ in ids]
    produced = threading.Event()

    def produce() -> None:
        for lo in range(0, jobs, 10):
            batch = [
                Job.create("work", {"s": durations[i]}, job_id=ids[i]) for i in range(lo, min(jobs, lo + 10))
            ]
            if lo % 20:
                queue.enqueue_many(batch)
            else:
                for job in batch:
                    queue.enqueue(job)
            time.sleep(0.01)  # a steady trickle of work while the kills happen
        produced.set()

    in_flight: set[str] = set()
    kill_times: dict[str, float] = {}
    no_cap = {"TYPEDQ_TEST_MAX_LOST": str(kills + 1)}
    with Pool(folder, backend, "--processes", "2", "--concurrency", "2", "--grace", "5", env=no_cap) as pool:
        pool.wait_full(2)
        producer = threading.Thread(target=produce)
        producer.start()
        for _ in range(kills):
            victims: list[int] = []

            def busy_victim(found: list[int] = victims) -> bool:
                live = set(pool.worker_pids())
                found[:] = [pid for pid in _open_starts(folder) if pid in live]
                return bool(found)

            wait_until(busy_victim, timeout=20.0, message="a worker process is inside a handler")
            victim = rng.choice(victims)
            time.sleep(rng.uniform(0.0, 0.05))
            os.kill(victim, signal.SIGKILL)
            killed_at = time.time()
            wait_until(lambda: not _alive(victim), timeout=5.0, message="the victim is dead")  # noqa: B023
            for job in queue.list_jobs(status=JobStatus.RUNNING, limit=1000):
                if _owner_pid(job) == victim:
                    in_flight.add(job.job_id)
                    kill_times[job.job_id] = killed_at
            pool.wait_full(2)
        producer.join(60)
        assert produced.is_set()
        wait_while_progressing(
            lambda: queue.count_by_status()[JobStatus.COMPLETED], jobs, stall_s=20.0,
            message="every job completed",
        )
        assert pool.stop() == 0, pool.log
    report = check(
        folder / "ledger",
        ids,
        statuses=_statuses(queue, ids),
        in_flight_at_kill=in_flight,
        kill_times=kill_times,
    )
    assert not report.lost, report.lost
    assert not report.unexpected_dups, report.unexpected_dups
    assert not report.dup_attempts, report.dup_attempts
    assert kill_times, "no kill hit a running job"
    for job_id in kill_times:
        assert report.recovery_latencies.get(job_id, 1e9) <= RESCUE_S, (job_id, report.recovery_latencies)
    assert queue.count_by_status()[JobStatus.COMPLETED] == jobs


@pytest.mark.timeout(120)
def test_kill_9_worker_processes_while_producing_loses_nothing_on_redis(
    tmp_path: Path, backend: str, queue: Queue
) -> None:
    _kill_workers_while_producing(tmp_path, backend, queue, jobs=300, kills=8)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_slow_50_kills_2000_jobs_on_redis(tmp_path: Path, backend: str, queue: Queue) -> None:
    _kill_workers_while_producing(tmp_path, backend, queue, jobs=2000, kills=50)
