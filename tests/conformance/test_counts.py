"""Cheap counts of a queue for gauges: PENDING jobs due later (``count_scheduled``), beside
the status counts that include them."""

from __future__ import annotations

from collections.abc import Callable

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def test_scheduled_counts_pending_jobs_due_later_and_drops_them_as_they_fall_due(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    now = clock.now()
    queue.enqueue(make_job(job_id="now"))
    queue.enqueue(make_job(job_id="in-10s", scheduled_at=now + 10.0))
    queue.enqueue_many([make_job(job_id=f"in-60s-{i}", scheduled_at=now + 60.0) for i in range(3)])
    assert queue.count_scheduled() == 4
    assert queue.count_by_status()[JobStatus.PENDING] == 5  # scheduled jobs are PENDING too
    clock.advance(10.0)  # due exactly now: no longer "later"
    assert queue.count_scheduled() == 3
    clock.advance(50.5)
    assert queue.count_scheduled() == 0
    assert queue.count_by_status()[JobStatus.PENDING] == 5


def test_a_job_waiting_to_retry_is_scheduled_until_its_retry_falls_due(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="flaky", max_retries=3))
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    assert queue.count_scheduled() == 0
    queue.fail("flaky", token=claim.token, error="boom", retry_at=clock.now() + 5.0)
    assert queue.count_scheduled() == 1
    clock.advance(5.5)
    assert queue.count_scheduled() == 0
    assert queue.claim("w", lease_s=30.0) is not None


def test_claimed_cancelled_and_blocked_jobs_are_not_scheduled(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    later = clock.now() + 30.0
    queue.enqueue(make_job(job_id="parent"))
    queue.enqueue(make_job(job_id="child", depends_on=["parent"], scheduled_at=later))
    queue.enqueue(make_job(job_id="gone", scheduled_at=later))
    queue.cancel("gone")
    assert queue.count_scheduled() == 0  # the child waits for its parent, not for a time
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    assert claim.job.job_id == "parent"
    queue.complete("parent", token=claim.token)
    assert queue.count_scheduled() == 1  # now it waits for its time
