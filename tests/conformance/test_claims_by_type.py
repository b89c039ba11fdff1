"""Claims limited to the job types a worker handles (a rolling deploy must not bury jobs
of types the running workers do not know), and counts of waiting jobs by type."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


@pytest.mark.parametrize("how", ["claim", "claim_many"])
def test_a_claim_takes_only_the_types_it_is_given(queue: Queue, make_job: MakeJob, how: str) -> None:
    queue.enqueue_many(
        [
            make_job(job_id="email-high", job_type="email", priority=9),
            make_job(job_id="resize", job_type="resize", priority=5),
            make_job(job_id="email", job_type="email", priority=3),
            make_job(job_id="report", job_type="report", priority=1),
        ]
    )
    if how == "claim":
        taken = []
        while (claim := queue.claim("w", lease_s=30.0, job_types={"resize", "report"})) is not None:
            taken.append(claim.job.job_id)
    else:
        claims = queue.claim_many("w", lease_s=30.0, limit=10, job_types=["report", "resize"])
        taken = [c.job.job_id for c in claims]
    assert taken == ["resize", "report"]  # best first among the eligible
    assert queue.get_job("email-high").status is JobStatus.PENDING
    assert queue.get_job("email").status is JobStatus.PENDING
    # Any type: the others are still there, in order.
    assert [c.job.job_id for c in queue.claim_many("w", lease_s=30.0, limit=10)] == ["email-high", "email"]


def test_no_types_claims_nothing(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    assert queue.claim("w", lease_s=30.0, job_types=()) is None
    assert queue.claim_many("w", lease_s=30.0, limit=5, job_types=set()) == []
    assert queue.get_job("j").status is JobStatus.PENDING


def test_types_with_no_job_claim_nothing_and_leave_the_rest(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i}", job_type="known") for i in range(5)])
    assert queue.claim("w", lease_s=30.0, job_types={"unknown"}) is None
    assert queue.ready_count() == 5
    assert [c.job.job_id for c in queue.claim_many("w", lease_s=30.0, limit=2, job_types={"known"})] == [
        "j0",
        "j1",
    ]


def test_a_type_filtered_claim_sees_delayed_jobs_once_due(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many(
        [
            make_job(job_id="later", job_type="a", scheduled_at=clock.now() + 10),
            make_job(job_id="other", job_type="b"),
        ]
    )
    assert queue.claim("w", lease_s=30.0, job_types={"a"}) is None
    clock.advance(11)
    claim = queue.claim("w", lease_s=30.0, job_types={"a"})
    assert claim is not None
    assert claim.job.job_id == "later"


def test_count_by_type(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue_many(
        [make_job(job_type="a"), make_job(job_type="a"), make_job(job_type="b"), make_job(job_type="c")]
    )
    claim = queue.claim("w", lease_s=30.0, job_types={"c"})
    assert claim is not None
    assert queue.count_by_type() == {"a": 2, "b": 1}
    assert queue.count_by_type(JobStatus.RUNNING) == {"c": 1}
    assert queue.count_by_type(JobStatus.DEAD) == {}
