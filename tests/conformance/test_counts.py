"""Counts a backend keeps for gauges and counters: PENDING jobs due later
(``count_scheduled``, beside the status counts that include them), jobs ever submitted
per job type (``count_submitted``), and ``count_by_status`` / ``count_by_type`` agreeing
with the jobs a listing finds after a mix of transitions."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Completion, Queue
from typedq.clock import FakeClock
from typedq.errors import DuplicateJobError
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]
QueueFactory = Callable[[str], Queue]


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


def test_count_submitted_counts_every_submission_and_never_goes_down(
    queue: Queue, store_factory: QueueFactory, make_job: MakeJob, clock: FakeClock
) -> None:
    assert queue.count_submitted() == {}
    queue.enqueue(make_job(job_id="a1", job_type="a"))
    queue.enqueue_many([make_job(job_id="a2", job_type="a"), make_job(job_id="b1", job_type="b")])
    queue.enqueue_many([make_job(job_id="b2", job_type="b", depends_on=["b1"])])
    queue.import_jobs([make_job(job_id="c1", job_type="c", status=JobStatus.COMPLETED).to_dict()])
    assert queue.count_submitted() == {"a": 2, "b": 2, "c": 1}

    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    queue.complete_many([Completion(claim.job.job_id, claim.token, None)])
    dlq = store_factory("dead-letter")
    second = queue.claim("w", lease_s=30.0)
    assert second is not None
    queue.bury(second.job.job_id, token=second.token, error="boom", dead_letter=dlq)
    queue.retry(second.job.job_id, dead_letter=dlq)
    queue.delete("c1")
    clock.advance(10.0)
    queue.purge(statuses=[JobStatus.COMPLETED, JobStatus.FAILED], older_than=clock.now())
    # Completion, dead letters, retries, deletes and purges leave the count alone; a
    # refused submission does not count.
    with pytest.raises(DuplicateJobError):
        queue.enqueue(make_job(job_id="b1", job_type="b"))
    assert queue.count_submitted() == {"a": 2, "b": 2, "c": 1}
    assert dlq.count_submitted() == {}
    assert queue.size < 5


def test_counts_agree_with_the_jobs_listed_after_transitions(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i}", job_type="ab"[i % 2], priority=1 + i) for i in range(8)])
    queue.enqueue(make_job(job_id="later", job_type="a", scheduled_at=clock.now() + 60.0))
    queue.enqueue_many([make_job(job_id="child", job_type="b", depends_on=["j0"])])
    claims = queue.claim_many("w", lease_s=30.0, limit=5)
    queue.complete(claims[0].job.job_id, token=claims[0].token)
    queue.fail(claims[1].job.job_id, token=claims[1].token, error="e", retry_at=clock.now() + 5.0)
    queue.bury(claims[2].job.job_id, token=claims[2].token, error="e")
    queue.release(claims[3].job.job_id, token=claims[3].token)
    queue.cancel("j0")  # its dependent fails with it
    queue.delete("j1")
    listed = queue.list_jobs(limit=100)
    expected = dict.fromkeys(JobStatus, 0)
    for job in listed:
        expected[job.status] += 1
    assert queue.count_by_status() == expected
    assert expected[JobStatus.FAILED] == 1  # the dependent of the cancelled j0
    for status in JobStatus:
        by_type: dict[str, int] = {}
        for job in listed:
            if job.status is status:
                by_type[job.job_type] = by_type.get(job.job_type, 0) + 1
        assert queue.count_by_type(status) == by_type


def test_scheduled_follows_deletes_cancels_status_changes_and_dependency_failures(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    later = clock.now() + 60.0
    queue.enqueue_many([make_job(job_id=f"d{i}", scheduled_at=later) for i in range(5)])
    queue.enqueue(make_job(job_id="parent"))
    queue.enqueue(make_job(job_id="child", depends_on=["parent"], scheduled_at=later))
    queue.enqueue(make_job(job_id="other"))  # a claim folds the jobs above in, on SQLite
    assert queue.count_scheduled() == 5
    queue.delete("d0")
    queue.cancel("d1")
    queue.update_status("d2", JobStatus.COMPLETED)
    assert queue.count_scheduled() == 2
    queue.update_status("d2", JobStatus.PENDING)  # back, still due later
    assert queue.count_scheduled() == 3
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    assert claim.job.job_id == "parent"
    queue.cancel("parent", token=claim.token)  # its waiting child fails
    assert queue.get_job("child").status is JobStatus.FAILED
    assert queue.count_scheduled() == 3
    for again in (lambda: queue.retry("child"), lambda: queue.update_status("child", JobStatus.PENDING)):
        again()  # PENDING again, due later, but its dependency is CANCELLED: it fails again
        assert queue.get_job("child").status is JobStatus.FAILED
        assert queue.count_scheduled() == 3
    clock.advance(61.0)
    assert queue.count_scheduled() == 0
    claimed = {c.job.job_id for c in queue.claim_many("w", lease_s=30.0, limit=10)}
    assert claimed == {"d2", "d3", "d4", "other"}
    assert queue.count_scheduled() == 0
