"""Steps of the wall clock (RELIABILITY.md K1, K2), on every backend.

A lease is judged by a clock that does not step: the monotonic clock of the host that
took it (memory, SQLite: ``lease_mono``, set by each claim and renewal) or the Redis
server's clock (``ls``). So a wall clock stepped forward two hours rescues nothing from
a live owner (K1), and a wall clock stepped back two hours keeps no dead worker's job
past its lease (K2). Delayed jobs go by the wall clock, the time their callers meant:
after a step back they run late, never early, and a job due long after a lease is never
claimed early, so never redelivered (the ETA-beyond-visibility-timeout bug class).

The Redis server's clock is real: a lease there lapses by real time, so these tests use
short leases and wait them out (:func:`_lapse`) besides moving the FakeClock.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from typedq._identity import HOST, new_worker_id, process_start_time
from typedq.backends.base import Queue, WorkerInfo
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]

TWO_HOURS = 7200.0


def _register(queue: Queue, clock: FakeClock, worker_id: str) -> None:
    """Register (or renew) a live worker of this process, as a worker's heartbeat does."""
    pid = os.getpid()
    queue.register_worker(
        WorkerInfo(
            worker_id=worker_id, queue="conf", host=HOST, pid=pid, job_types=("task",),
            version="0.1.0", started_at=clock.now(), last_seen=clock.now(), ttl_s=30.0, stop_pid=pid,
        )
    )


def _lapse(clock: FakeClock, seconds: float) -> None:
    """Let ``seconds`` pass on every clock a lease is judged by: the FakeClock's wall and
    monotonic readings, and real time (the Redis server's clock)."""
    clock.advance(seconds)
    time.sleep(seconds)


def test_k1_a_wall_clock_step_forward_rescues_no_live_owners_job(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    worker = new_worker_id("k1")  # this process: alive on every backend's rule
    _register(queue, clock, worker)
    queue.enqueue_many([make_job(job_id=f"j{i}") for i in range(10)])
    claims = queue.claim_many(worker, lease_s=30.0, limit=10)
    assert len(claims) == 10
    for _ in range(3):  # heartbeats every 10 s, the wall clock stepping forward between
        clock.advance(10)
        _register(queue, clock, worker)
        for claim in claims:
            queue.renew_lease(claim.job.job_id, token=claim.token, lease_s=30.0)
        clock.jump_wall(TWO_HOURS)
        assert queue.reclaim_expired() == []
    for claim in claims:
        assert queue.get_job(claim.job.job_id).status is JobStatus.RUNNING
        queue.complete(claim.job.job_id, token=claim.token)
    assert queue.count_by_status()[JobStatus.COMPLETED] == 10
    assert {queue.get_job(f"j{i}").attempt for i in range(10)} == {1}


def test_k2_a_wall_clock_step_back_keeps_no_dead_workers_job(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    pid = os.getpid()
    dead = f"k2@{HOST}:{pid}:{process_start_time(pid) + 1}:00000000"  # a past incarnation
    queue.enqueue(make_job(job_id="lost"))
    claim = queue.claim(dead, lease_s=0.6)
    assert claim is not None
    clock.jump_wall(-TWO_HOURS)
    assert queue.reclaim_expired() == []  # its lease holds for 0.6 s by every steady clock
    _lapse(clock, 0.7)  # the wall clock is still 2 h behind the lease's deadline
    assert queue.reclaim_expired() == ["lost"]
    again = queue.claim("k2-rescuer", lease_s=60.0)
    assert again is not None
    assert (again.job.job_id, again.token) == ("lost", 2)
    queue.complete("lost", token=again.token)
    assert queue.get_job("lost").status is JobStatus.COMPLETED


def test_k2_a_step_back_rescues_no_live_owners_job_that_renews(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    worker = new_worker_id("k2")
    _register(queue, clock, worker)
    queue.enqueue(make_job(job_id="kept"))
    claim = queue.claim(worker, lease_s=0.6)
    assert claim is not None
    clock.jump_wall(-TWO_HOURS)
    for _ in range(3):  # renewed before each lapse: never rescued
        queue.renew_lease("kept", token=claim.token, lease_s=0.6)
        _register(queue, clock, worker)
        _lapse(clock, 0.25)
        assert queue.reclaim_expired() == []
    queue.complete("kept", token=claim.token)
    assert queue.get_job("kept").attempt == 1


def test_k2_delayed_jobs_run_late_after_a_step_back_never_early(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    due = clock.now() + 600
    queue.enqueue(make_job(job_id="later", scheduled_at=due))
    clock.jump_wall(-TWO_HOURS)
    clock.advance(TWO_HOURS + 599)  # the wall clock reads 1 s before the due time
    assert queue.claim("w", lease_s=30.0) is None
    clock.advance(1)
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    assert claim.job.job_id == "later"


def test_k2_a_job_due_long_after_a_lease_is_never_claimed_or_redelivered_early(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    """A job due in two hours, workers with 30 s leases claiming and rescuing every
    5 minutes: nothing takes it before it is due, and then one claim runs it once."""
    due = clock.now() + TWO_HOURS
    queue.enqueue(make_job(job_id="eta", scheduled_at=due))
    while clock.now() < due - 300:
        clock.advance(300)
        assert queue.claim("w", lease_s=30.0) is None
        assert queue.reclaim_expired() == []
    clock.advance(due - clock.now())
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    queue.complete("eta", token=claim.token)
    assert queue.claim("w", lease_s=30.0) is None
    job = queue.get_job("eta")
    assert (job.status, job.attempt, job.lost_count) == (JobStatus.COMPLETED, 1, 0)
