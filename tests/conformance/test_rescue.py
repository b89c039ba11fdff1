"""Rescuing the jobs of a dead worker without blaming the innocent (RELIABILITY.md C5).

A worker claims quick jobs in batches. When it dies, every job of its batch is RUNNING
under its lease, and nobody knows which one was running: only a job claimed alone may
have its ``lost_count`` raised. Batch-mates go back with ``run_alone`` and are claimed
one at a time, so a job that kills its worker is found alone, counted, and dead after
``max_lost`` losses, while its batch-mates run to completion and are never counted.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus
from typedq.policy import ClaimPolicy

MakeJob = Callable[..., Job]


def test_a_rescued_batch_goes_back_uncounted_and_is_claimed_one_at_a_time(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i}") for i in range(5)])
    batch = queue.claim_many("dies", lease_s=1.0, limit=5)
    assert len(batch) == 5
    clock.advance(2)
    assert sorted(queue.reclaim_expired()) == [f"j{i}" for i in range(5)]
    for i in range(5):
        job = queue.get_job(f"j{i}")
        assert (job.status, job.lost_count, job.run_alone) == (JobStatus.PENDING, 0, True)
    # While rescued jobs wait, a batch claim takes one job; its flag is cleared.
    first = queue.claim_many("next", lease_s=1.0, limit=5)
    assert [c.job.job_id for c in first] == ["j0"]
    assert first[0].job.run_alone is False
    assert queue.get_job("j0").run_alone is False


def test_batches_resume_once_no_rescued_job_waits(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue_many([make_job(job_id="a"), make_job(job_id="b")])
    queue.claim_many("dies", lease_s=1.0, limit=2)
    clock.advance(2)
    queue.reclaim_expired()
    for expected in ("a", "b"):
        claims = queue.claim_many("w", lease_s=60.0, limit=5)
        assert [c.job.job_id for c in claims] == [expected]
        queue.complete(expected, token=claims[0].token)
    queue.enqueue_many([make_job(job_id=f"n{i}") for i in range(3)])
    assert len(queue.claim_many("w", lease_s=60.0, limit=5)) == 3


def test_the_job_that_kills_its_worker_is_counted_alone_and_dies(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    """The issue's case: one poison job among quick ones; the worker dies at it."""
    queue.enqueue_many([make_job(job_id=f"j{i}") for i in range(6)])
    poison = "j3"
    runs: dict[str, int] = {}
    for _ in range(50):
        claims = queue.claim_many("w", lease_s=1.0, limit=6)
        if not claims:
            if queue.ready_count() == 0:
                break
            continue
        died = False
        for claim in claims:
            runs[claim.job.job_id] = runs.get(claim.job.job_id, 0) + 1
            if claim.job.job_id == poison:
                died = True  # the process is gone: no completion of this batch is written
                break
        if died:
            clock.advance(2)
            queue.reclaim_expired(max_lost=3)
            continue
        for claim in claims:
            queue.complete(claim.job.job_id, token=claim.token)
        clock.advance(0.01)
    dead = queue.get_job(poison)
    assert (dead.status, dead.lost_count) == (JobStatus.DEAD, 3)
    assert dead.error == "worker lost 3×"
    for i in range(6):
        if f"j{i}" != poison:
            job = queue.get_job(f"j{i}")
            assert (job.status, job.lost_count) == (JobStatus.COMPLETED, 0), job


def test_a_single_claim_is_counted(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue_many([make_job(job_id="a"), make_job(job_id="b")])
    assert [c.job.job_id for c in queue.claim_many("w", lease_s=1.0, limit=1)] == ["a"]
    clock.advance(0.5)
    queue.claim("w", lease_s=1.0)  # b: another claim of the same worker, later
    clock.advance(2)
    assert sorted(queue.reclaim_expired()) == ["a", "b"]
    for job_id in ("a", "b"):
        job = queue.get_job(job_id)
        assert (job.status, job.lost_count, job.run_alone) == (JobStatus.PENDING, 1, True)


@pytest.mark.parametrize("policy", [None, ClaimPolicy(fairness="weighted")], ids=["strict", "weighted"])
def test_claims_at_one_clock_reading_are_told_apart(
    queue: Queue, make_job: MakeJob, clock: FakeClock, policy: ClaimPolicy | None
) -> None:
    """A batch is what one ``claim_many`` took, not the jobs that share a worker and a
    start time: one worker's separate claims at one clock reading are each counted, and
    each batch is judged by its own jobs still RUNNING."""
    if policy is not None:
        queue.set_claim_policy(policy)
    queue.enqueue_many([make_job(job_id=f"j{i}") for i in range(8)])
    alone = [queue.claim("w", lease_s=1.0), queue.claim("w", lease_s=1.0)]
    alone += queue.claim_many("w", lease_s=1.0, limit=1)
    batches = [queue.claim_many("w", lease_s=1.0, limit=2) for _ in range(2)]
    assert all(claim is not None for claim in alone)
    assert [len(b) for b in batches] == [2, 2]
    left = queue.claim_many("w", lease_s=1.0, limit=1)
    first = batches[0][0]
    queue.complete(first.job.job_id, token=first.token)  # the last job of its batch counts
    clock.advance(2)
    assert len(queue.reclaim_expired()) == 7
    counted = {c.job.job_id for c in [*alone, batches[0][1], *left] if c is not None}
    for job in queue.list_jobs():
        if job.status is JobStatus.PENDING:
            expected = 1 if job.job_id in counted else 0
            assert (job.lost_count, job.run_alone) == (expected, True), job
    assert len(counted) == 5


def test_a_batch_mate_that_finished_does_not_make_the_rest_a_single_claim(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many([make_job(job_id="done"), make_job(job_id="left")])
    claims = queue.claim_many("w", lease_s=1.0, limit=2)
    queue.complete("done", token=claims[0].token)
    clock.advance(2)
    assert queue.reclaim_expired() == ["left"]
    # Only one job of the claim was left RUNNING: it was the one running, and it counts.
    left = queue.get_job("left")
    assert (left.status, left.lost_count, left.run_alone) == (JobStatus.PENDING, 1, True)


def test_cancellation_requested_in_a_rescued_batch_cancels(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many([make_job(job_id="a"), make_job(job_id="b")])
    queue.claim_many("w", lease_s=1.0, limit=2)
    assert queue.cancel("a") is False  # running: only asked
    clock.advance(2)
    queue.reclaim_expired()
    assert queue.get_job("a").status is JobStatus.CANCELLED
    assert queue.get_job("b").status is JobStatus.PENDING


def test_a_rescued_job_exported_and_imported_keeps_its_flag(
    queue: Queue, queue_factory: Callable[[str], Queue], make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many([make_job(job_id="a"), make_job(job_id="b")])
    queue.claim_many("w", lease_s=1.0, limit=2)
    clock.advance(2)
    queue.reclaim_expired()
    other = queue_factory("other")
    other.import_jobs(queue.export_jobs())
    assert other.get_job("a").run_alone is True
    assert len(other.claim_many("w", lease_s=1.0, limit=2)) == 1
