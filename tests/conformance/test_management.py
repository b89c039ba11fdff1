"""Management calls: cancel, update_status, delete, count_by_status, list_jobs."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import InvalidTransitionError, JobNotFoundError, StaleLeaseError
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def _assert_counts_consistent(queue: Queue) -> None:
    counts = queue.count_by_status()
    assert set(counts) == set(JobStatus)
    assert sum(counts.values()) == queue.size
    for status in JobStatus:
        assert counts[status] == len(queue.list_jobs(status=status, limit=10_000)), status


# -- cancel --------------------------------------------------------------------------------


def test_cancel_a_pending_job(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    now = clock.now()
    queue.enqueue(make_job(job_id="ready"))
    queue.enqueue(make_job(job_id="delayed", scheduled_at=now + 5))
    queue.enqueue(make_job(job_id="held", status=JobStatus.SCHEDULED))
    queue.enqueue(make_job(job_id="other"))
    for job_id in ("ready", "delayed", "held"):
        assert queue.cancel(job_id) is True
        assert queue.get_job(job_id).status is JobStatus.CANCELLED
    clock.advance(10)
    assert queue.ready_count() == 1
    claim = queue.claim("w", lease_s=1)
    assert claim is not None
    assert claim.job.job_id == "other"
    assert queue.claim("w", lease_s=1) is None
    _assert_counts_consistent(queue)


def test_cancel_a_running_job_only_asks_it_to_stop(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    assert queue.cancel("j") is False
    job = queue.get_job("j")
    assert job.status is JobStatus.RUNNING
    assert job.cancel_requested is True
    queue.extend_lease("j", token=claim.token, lease_s=30)  # the lease still holds


@pytest.mark.parametrize(
    "status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED]
)
def test_cancel_an_ended_job_leaves_it_alone(
    queue: Queue, make_job: MakeJob, status: JobStatus
) -> None:
    queue.enqueue(make_job(job_id="j", status=status))
    before = queue.get_job("j").to_dict()
    assert queue.cancel("j") is False
    assert queue.get_job("j").to_dict() == before


def test_cancel_an_unknown_job_raises(queue: Queue) -> None:
    with pytest.raises(JobNotFoundError, match="ghost"):
        queue.cancel("ghost")


# -- update_status -------------------------------------------------------------------------


def test_update_status_holds_a_job_back_and_lets_it_go(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    queue.update_status("j", JobStatus.SCHEDULED)
    assert queue.get_job("j").status is JobStatus.SCHEDULED
    assert queue.ready_count() == 0
    assert queue.claim("w", lease_s=1) is None
    _assert_counts_consistent(queue)
    queue.update_status("j", JobStatus.PENDING)
    assert queue.ready_count() == 1
    claim = queue.claim("w", lease_s=1)
    assert claim is not None
    assert claim.job.job_id == "j"
    _assert_counts_consistent(queue)


@pytest.mark.parametrize(
    "status", [JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED]
)
def test_update_status_to_pending_makes_a_job_claimable_again(
    queue: Queue, make_job: MakeJob, status: JobStatus
) -> None:
    queue.enqueue(make_job(job_id="j"))
    first = queue.claim("w", lease_s=30)
    assert first is not None
    if status is not JobStatus.RUNNING:
        queue.update_status("j", status)
    queue.update_status("j", JobStatus.PENDING)
    assert queue.get_job("j").status is JobStatus.PENDING
    assert queue.ready_count() == 1
    again = queue.claim("w", lease_s=30)
    assert again is not None
    assert again.job.job_id == "j"
    assert again.token > first.token
    with pytest.raises(StaleLeaseError):
        queue.complete("j", token=first.token)
    _assert_counts_consistent(queue)


def test_update_status_of_a_pending_job_to_running_takes_it_off_the_queue(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="j"))
    queue.update_status("j", JobStatus.RUNNING)
    assert queue.ready_count() == 0
    assert queue.claim("w", lease_s=1) is None
    _assert_counts_consistent(queue)


def test_update_status_to_the_same_status_changes_nothing(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    queue.update_status("j", JobStatus.PENDING)
    assert queue.ready_count() == 1
    assert queue.size == 1
    _assert_counts_consistent(queue)


def test_update_status_keeps_counts_right_through_many_moves(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i}") for i in range(7)])
    statuses = list(JobStatus)
    for step in range(40):
        queue.update_status(f"j{step % 7}", statuses[(step * 3) % len(statuses)])
        _assert_counts_consistent(queue)
    pending = {j.job_id for j in queue.list_jobs(status=JobStatus.PENDING)}
    claimed = {c.job.job_id for c in queue.claim_many("w", lease_s=1, limit=100)}
    assert claimed == pending


def test_update_status_of_an_unknown_job_raises(queue: Queue) -> None:
    with pytest.raises(JobNotFoundError, match="ghost"):
        queue.update_status("ghost", JobStatus.COMPLETED)


# -- delete --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "status",
    [JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED],
)
def test_delete_removes_a_job_that_is_not_running(
    queue: Queue, make_job: MakeJob, status: JobStatus
) -> None:
    queue.enqueue(make_job(job_id="j", status=status))
    queue.enqueue(make_job(job_id="keep"))
    queue.delete("j")
    with pytest.raises(JobNotFoundError):
        queue.get_job("j")
    assert queue.size == 1
    claim = queue.claim("w", lease_s=1)
    assert claim is not None
    assert claim.job.job_id == "keep"
    assert queue.claim("w", lease_s=1) is None
    assert [j["job_id"] for j in queue.export_jobs()] == ["keep"]
    _assert_counts_consistent(queue)


def test_delete_refuses_a_running_job(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    with pytest.raises(InvalidTransitionError) as info:
        queue.delete("j")
    assert isinstance(info.value, ValueError)
    assert info.value.field == "status"
    assert "RUNNING" in str(info.value)
    assert queue.get_job("j").status is JobStatus.RUNNING
    queue.complete("j", token=claim.token)
    queue.delete("j")
    assert queue.size == 0


def test_delete_an_unknown_job_raises(queue: Queue) -> None:
    with pytest.raises(JobNotFoundError, match="ghost"):
        queue.delete("ghost")


# -- count_by_status and list_jobs ---------------------------------------------------------


def _mixed_queue(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    """Ten jobs, created one second apart, in every status; types "a" and "b"."""
    for i in range(10):
        queue.enqueue(make_job(job_id=f"j{i}", job_type="a" if i % 2 else "b"))
        clock.advance(1)
    queue.update_status("j9", JobStatus.SCHEDULED)
    claims = queue.claim_many("w", lease_s=30, limit=4)  # j0..j3, oldest first
    queue.complete("j0", token=claims[0].token)
    queue.bury("j1", token=claims[1].token, error="x")
    queue.cancel("j8")


def test_count_by_status_lists_every_status(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    assert queue.count_by_status() == dict.fromkeys(JobStatus, 0)
    _mixed_queue(queue, make_job, clock)
    assert queue.count_by_status() == {
        JobStatus.PENDING: 4,
        JobStatus.SCHEDULED: 1,
        JobStatus.RUNNING: 2,
        JobStatus.COMPLETED: 1,
        JobStatus.FAILED: 0,
        JobStatus.DEAD: 1,
        JobStatus.CANCELLED: 1,
    }
    _assert_counts_consistent(queue)


def test_list_jobs_filters_and_pages_oldest_first(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    _mixed_queue(queue, make_job, clock)

    def ids(
        status: JobStatus | None = None, job_type: str | None = None, limit: int = 100, offset: int = 0
    ) -> list[str]:
        jobs = queue.list_jobs(status=status, job_type=job_type, limit=limit, offset=offset)
        return [j.job_id for j in jobs]

    assert ids() == [f"j{i}" for i in range(10)]
    assert ids(status=JobStatus.PENDING) == ["j4", "j5", "j6", "j7"]
    assert ids(job_type="a") == ["j1", "j3", "j5", "j7", "j9"]
    assert ids(status=JobStatus.RUNNING, job_type="b") == ["j2"]
    assert ids(status=JobStatus.FAILED) == []
    assert ids(job_type="nope") == []
    assert ids(limit=3) == ["j0", "j1", "j2"]
    assert ids(limit=3, offset=3) == ["j3", "j4", "j5"]
    assert ids(limit=100, offset=8) == ["j8", "j9"]
    assert ids(offset=10) == []
    assert ids(limit=0) == []
    assert ids(job_type="a", limit=2, offset=1) == ["j3", "j5"]


def test_list_jobs_default_limit_is_100(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i:03d}") for i in range(150)])
    assert len(queue.list_jobs()) == 100
    assert len(queue.list_jobs(limit=1000)) == 150
