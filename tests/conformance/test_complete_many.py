"""``complete_many``: many completions in one transition, each fenced on its own."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Completion, Queue
from typedq.clock import FakeClock
from typedq.errors import JobNotFoundError, StaleLeaseError
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def test_complete_many_completes_every_job_with_its_result(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i}") for i in range(5)])
    claims = queue.claim_many("w1", lease_s=10.0, limit=5)
    assert len(claims) == 5
    outcomes = queue.complete_many(
        [Completion(c.job.job_id, c.token, {"n": i}) for i, c in enumerate(claims)]
    )
    assert [o.job_id for o in outcomes if isinstance(o, Job)] == [c.job.job_id for c in claims]
    for i, claim in enumerate(claims):
        outcome = outcomes[i]
        assert isinstance(outcome, Job)
        assert outcome.status is JobStatus.COMPLETED
        assert outcome.result == {"n": i}
        assert outcome.lease_until is None
        stored = queue.get_job(claim.job.job_id)
        assert stored.status is JobStatus.COMPLETED
        assert stored.result == {"n": i}
    assert queue.count_by_status()[JobStatus.COMPLETED] == 5
    assert queue.count_by_status()[JobStatus.RUNNING] == 0


def test_complete_many_of_nothing_is_nothing(queue: Queue) -> None:
    assert queue.complete_many([]) == []


def test_a_refused_completion_changes_nothing_and_stops_no_other(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many([make_job(job_id=name) for name in ("ok1", "stale", "done", "ok2")])
    claims = {c.job.job_id: c for c in queue.claim_many("w1", lease_s=1.0, limit=4)}
    queue.complete("done", token=claims["done"].token, result="first")
    # "stale": its lease expires and another worker re-claims it (token 2).
    clock.advance(2.0)
    queue.extend_lease("ok1", token=claims["ok1"].token, lease_s=10.0)
    queue.extend_lease("ok2", token=claims["ok2"].token, lease_s=10.0)
    assert queue.reclaim_expired() == ["stale"]
    newer = queue.claim("w2", lease_s=10.0)
    assert newer is not None
    assert newer.job.job_id == "stale"
    stale_before = queue.get_job("stale").to_dict()

    outcomes = queue.complete_many(
        [
            Completion("ok1", claims["ok1"].token, 1),
            Completion("stale", claims["stale"].token, "old attempt"),
            Completion("ghost", 1, None),
            Completion("done", claims["done"].token, "second"),
            Completion("ok2", claims["ok2"].token, 2),
        ]
    )
    assert len(outcomes) == 5
    assert isinstance(outcomes[0], Job)
    assert outcomes[0].job_id == "ok1"
    assert isinstance(outcomes[1], StaleLeaseError)
    assert isinstance(outcomes[2], JobNotFoundError)
    assert "ghost" in str(outcomes[2])
    assert isinstance(outcomes[3], StaleLeaseError)
    assert isinstance(outcomes[4], Job)
    assert outcomes[4].result == 2
    assert queue.get_job("stale").to_dict() == stale_before
    assert queue.get_job("done").result == "first"
    assert queue.get_job("ok1").status is JobStatus.COMPLETED
    assert queue.get_job("ok2").status is JobStatus.COMPLETED
    # The newer attempt still holds its lease and completes normally.
    queue.complete("stale", token=newer.token, result="new attempt")
    assert queue.get_job("stale").result == "new attempt"


def test_complete_many_releases_dependents(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue_many(
        [
            make_job(job_id="a"),
            make_job(job_id="b"),
            make_job(job_id="child", depends_on=["a", "b"], priority=1),
        ]
    )
    claims = queue.claim_many("w1", lease_s=10.0, limit=10)
    assert sorted(c.job.job_id for c in claims) == ["a", "b"]
    assert queue.ready_count() == 0
    queue.complete_many([Completion(c.job.job_id, c.token) for c in claims])
    assert queue.ready_count() == 1
    follow = queue.claim("w1", lease_s=10.0)
    assert follow is not None
    assert follow.job.job_id == "child"


def test_the_same_completion_twice_in_one_batch_is_refused_the_second_time(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = queue.claim("w1", lease_s=10.0)
    assert claim is not None
    first, second = queue.complete_many([Completion("j", claim.token, 1), Completion("j", claim.token, 2)])
    assert isinstance(first, Job)
    assert isinstance(second, StaleLeaseError)
    assert queue.get_job("j").result == 1


@pytest.mark.parametrize("size", [1, 50])
def test_complete_many_returns_one_outcome_per_completion(queue: Queue, make_job: MakeJob, size: int) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i}") for i in range(size)])
    claims = queue.claim_many("w1", lease_s=10.0, limit=size)
    outcomes = queue.complete_many([Completion(c.job.job_id, c.token) for c in claims])
    assert len(outcomes) == size
    assert all(isinstance(o, Job) and o.status is JobStatus.COMPLETED for o in outcomes)
