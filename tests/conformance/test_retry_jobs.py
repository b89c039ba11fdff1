"""``retry``: a job that ended without completing runs again, optionally with the jobs
that failed because of it (a replayed dead letter no longer leaves its dependents FAILED
for good)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.errors import InvalidTransitionError, JobNotFoundError
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def _bury(queue: Queue, job_id: str) -> None:
    claim = queue.claim("w", lease_s=30.0, job_types={queue.get_job(job_id).job_type})
    assert claim is not None
    assert claim.job.job_id == job_id
    queue.bury(job_id, token=claim.token, error="boom")


@pytest.fixture
def chain(queue: Queue, make_job: MakeJob) -> Queue:
    """root (type "root") <- child <- grandchild, plus an unrelated failed job."""
    queue.enqueue_many(
        [
            make_job(job_id="root", job_type="root"),
            make_job(job_id="child", depends_on=["root"]),
            make_job(job_id="grandchild", depends_on=["child"]),
            make_job(job_id="other-root", job_type="root"),
            make_job(job_id="other-child", depends_on=["other-root"]),
        ]
    )
    _bury(queue, "root")
    _bury(queue, "other-root")
    assert queue.get_job("grandchild").status is JobStatus.FAILED
    return queue


def test_retry_with_dependents_reopens_the_jobs_that_failed_because_of_it(chain: Queue) -> None:
    assert chain.retry("root", with_dependents=True) == ["root", "child", "grandchild"]
    root = chain.get_job("root")
    assert (root.status, root.retry_count, root.error, root.attempt) == (JobStatus.PENDING, 0, None, 1)
    for job_id in ("child", "grandchild"):
        job = chain.get_job(job_id)
        assert (job.status, job.error, job.finished_at) == (JobStatus.PENDING, None, None)
    assert chain.get_job("other-child").status is JobStatus.FAILED  # not ours
    # They wait for root again, in order.
    assert chain.ready_count() == 1
    claim = chain.claim("w", lease_s=30.0)
    assert claim is not None
    assert claim.job.job_id == "root"
    chain.complete("root", token=claim.token)
    claim = chain.claim("w", lease_s=30.0)
    assert claim is not None
    assert claim.job.job_id == "child"


def test_retry_without_dependents_leaves_them_failed(chain: Queue) -> None:
    assert chain.retry("root") == ["root"]
    assert chain.get_job("child").status is JobStatus.FAILED


def test_retry_runs_a_failed_job_again(chain: Queue) -> None:
    assert chain.retry("child", with_dependents=True) == ["child", "grandchild"]
    # root is still DEAD: child fails again at once, and so does grandchild.
    child = chain.get_job("child")
    assert child.status is JobStatus.FAILED
    assert child.error == "dependency root is DEAD"
    assert chain.get_job("grandchild").status is JobStatus.FAILED


def test_retry_of_a_cancelled_job(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="c"))
    assert queue.cancel("c") is True
    assert queue.retry("c") == ["c"]
    assert queue.get_job("c").status is JobStatus.PENDING


@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.COMPLETED])
def test_retry_refuses_a_job_that_has_not_ended_badly(
    queue: Queue, make_job: MakeJob, status: JobStatus
) -> None:
    queue.enqueue(make_job(job_id="j"))
    if status is not JobStatus.PENDING:
        claim = queue.claim("w", lease_s=30.0)
        assert claim is not None
        if status is JobStatus.COMPLETED:
            queue.complete("j", token=claim.token)
    with pytest.raises(InvalidTransitionError) as info:
        queue.retry("j")
    assert info.value.field == "status"
    assert queue.get_job("j").status is status


def test_retry_of_an_unknown_job_raises(queue: Queue) -> None:
    with pytest.raises(JobNotFoundError):
        queue.retry("nope")
