"""Dependencies: a job is ready only when every job it depends on is COMPLETED; when one
ends FAILED, DEAD or CANCELLED its dependents (transitively) are FAILED naming it."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def _run(queue: Queue, job_id: str, result: object = None) -> None:
    """Claim ``job_id`` (it must be the next ready job) and complete it."""
    claim = queue.claim("w", lease_s=30)
    assert claim is not None, f"{job_id} is not ready"
    assert claim.job.job_id == job_id
    queue.complete(job_id, token=claim.token, result=result)


def _ready_ids(queue: Queue) -> set[str]:
    """Ids of every ready job, by claiming them all (the queue is spent afterwards)."""
    return {c.job.job_id for c in queue.claim_many("probe", lease_s=30, limit=10_000)}


def test_a_job_is_ready_only_after_its_dependency_completed(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="parent"))
    queue.enqueue(make_job(job_id="child", depends_on=["parent"], priority=10))
    assert queue.ready_count() == 1
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    assert claim.job.job_id == "parent"
    assert queue.ready_count() == 0  # parent RUNNING is not enough
    assert queue.claim("w", lease_s=30) is None
    queue.complete("parent", token=claim.token)
    assert queue.ready_count() == 1
    _run(queue, "child")
    assert queue.get_job("child").status is JobStatus.COMPLETED


def test_every_dependency_must_complete(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="a", priority=9))
    queue.enqueue(make_job(job_id="b", priority=8))
    queue.enqueue(make_job(job_id="c", priority=7))
    queue.enqueue(make_job(job_id="all", depends_on=["a", "b", "c"], priority=10))
    _run(queue, "a")
    claim_b = queue.claim("w", lease_s=30)
    assert claim_b is not None
    assert claim_b.job.job_id == "b"  # b RUNNING: "all" still waits
    _run(queue, "c")
    assert queue.ready_count() == 0
    queue.complete("b", token=claim_b.token)
    assert queue.ready_count() == 1
    _run(queue, "all")


def test_a_job_on_an_already_completed_dependency_is_ready_at_once(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="parent"))
    _run(queue, "parent")
    queue.enqueue(make_job(job_id="child", depends_on=["parent"]))
    assert queue.ready_count() == 1
    _run(queue, "child")


def test_a_retried_dependency_keeps_its_dependents_waiting(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="parent"))
    queue.enqueue(make_job(job_id="child", depends_on=["parent"]))
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    queue.fail("parent", token=claim.token, error="flaky", retry_at=clock.now() + 1)
    assert queue.get_job("child").status is JobStatus.PENDING
    clock.advance(1)
    _run(queue, "parent")
    _run(queue, "child")


@pytest.mark.parametrize("how", ["bury", "cancel", "update_failed", "update_dead", "update_cancelled"])
def test_a_failed_dependency_fails_its_dependents_transitively(
    queue: Queue, make_job: MakeJob, how: str
) -> None:
    queue.enqueue(make_job(job_id="root"))
    queue.enqueue(make_job(job_id="kid", depends_on=["root"]))
    queue.enqueue(make_job(job_id="grandkid", depends_on=["kid"]))
    queue.enqueue(make_job(job_id="bystander"))
    if how == "bury":
        claim = queue.claim("w", lease_s=30)
        assert claim is not None
        assert claim.job.job_id == "root"
        queue.bury("root", token=claim.token, error="boom")
    elif how == "cancel":
        assert queue.cancel("root") is True
    else:
        status = {
            "update_failed": JobStatus.FAILED,
            "update_dead": JobStatus.DEAD,
            "update_cancelled": JobStatus.CANCELLED,
        }[how]
        queue.update_status("root", status)
    kid = queue.get_job("kid")
    assert kid.status is JobStatus.FAILED
    assert kid.error is not None
    assert "root" in kid.error
    grandkid = queue.get_job("grandkid")
    assert grandkid.status is JobStatus.FAILED
    assert grandkid.error is not None
    assert "kid" in grandkid.error
    assert queue.get_job("bystander").status is JobStatus.PENDING
    assert _ready_ids(queue) == {"bystander"}
    counts = queue.count_by_status()
    assert counts[JobStatus.FAILED] >= 2
    assert sum(counts.values()) == queue.size == 4


@pytest.mark.parametrize("status", [JobStatus.DEAD, JobStatus.FAILED, JobStatus.CANCELLED])
def test_a_new_job_on_an_already_failed_dependency_fails_at_once(
    queue: Queue, make_job: MakeJob, status: JobStatus
) -> None:
    queue.enqueue(make_job(job_id="gone", status=status, error="it died"))
    assert queue.enqueue(make_job(job_id="late-child", depends_on=["gone"])) == "late-child"
    child = queue.get_job("late-child")
    assert child.status is JobStatus.FAILED
    assert child.error is not None
    assert "gone" in child.error
    assert queue.ready_count() == 0
    assert queue.count_by_status()[JobStatus.FAILED] == 1 + (status is JobStatus.FAILED)


def test_a_batch_on_an_already_dead_dependency_fails_transitively(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="dead", status=JobStatus.DEAD))
    queue.enqueue_many(
        [
            make_job(job_id="second", depends_on=["first"]),
            make_job(job_id="first", depends_on=["dead"]),
        ]
    )
    assert queue.get_job("first").status is JobStatus.FAILED
    assert queue.get_job("second").status is JobStatus.FAILED
    assert queue.ready_count() == 0


def test_diamond_runs_the_join_once_after_both_branches(queue: Queue, make_job: MakeJob) -> None:
    #    top
    #   /   \
    # left  right
    #   \   /
    #   bottom
    queue.enqueue(make_job(job_id="top"))
    queue.enqueue(make_job(job_id="left", depends_on=["top"], priority=6))
    queue.enqueue(make_job(job_id="right", depends_on=["top"]))
    queue.enqueue(make_job(job_id="bottom", depends_on=["left", "right"], priority=10))
    _run(queue, "top")
    assert queue.ready_count() == 2
    _run(queue, "left")
    assert queue.ready_count() == 1  # bottom still waits for right
    _run(queue, "right")
    assert queue.ready_count() == 1
    _run(queue, "bottom")
    assert queue.ready_count() == 0
    assert queue.count_by_status()[JobStatus.COMPLETED] == 4


def test_diamond_failure_fails_the_join_once(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="top"))
    queue.enqueue(make_job(job_id="left", depends_on=["top"]))
    queue.enqueue(make_job(job_id="right", depends_on=["top"]))
    queue.enqueue(make_job(job_id="bottom", depends_on=["left", "right"]))
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    queue.bury("top", token=claim.token, error="boom")
    assert {j.job_id for j in queue.list_jobs(status=JobStatus.FAILED)} == {"left", "right", "bottom"}
    counts = queue.count_by_status()
    assert counts[JobStatus.FAILED] == 3
    assert counts[JobStatus.DEAD] == 1
    assert sum(counts.values()) == 4


def test_one_failed_branch_fails_the_join_even_if_the_other_completes(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="ok", priority=9))
    queue.enqueue(make_job(job_id="bad"))
    queue.enqueue(make_job(job_id="join", depends_on=["ok", "bad"]))
    _run(queue, "ok")
    assert queue.cancel("bad") is True
    join = queue.get_job("join")
    assert join.status is JobStatus.FAILED
    assert join.error is not None
    assert "bad" in join.error
    assert queue.ready_count() == 0


def test_completing_by_update_status_releases_dependents(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="parent"))
    queue.enqueue(make_job(job_id="child", depends_on=["parent"]))
    queue.update_status("parent", JobStatus.COMPLETED)
    assert _ready_ids(queue) == {"child"}


@pytest.mark.parametrize("held_as", [JobStatus.SCHEDULED, JobStatus.CANCELLED])
def test_a_blocked_job_held_and_released_still_waits_for_every_dependency(
    queue: Queue, make_job: MakeJob, held_as: JobStatus
) -> None:
    queue.enqueue(make_job(job_id="a", priority=9))
    queue.enqueue(make_job(job_id="b", priority=8))
    queue.enqueue(make_job(job_id="c", depends_on=["a", "b"]))
    queue.update_status("c", held_as)  # hold it back ...
    queue.update_status("c", JobStatus.PENDING)  # ... and let it go again
    _run(queue, "a")
    claim_b = queue.claim("w", lease_s=30)
    assert claim_b is not None
    assert claim_b.job.job_id == "b"
    # b is RUNNING, not COMPLETED: c must not be ready.
    assert queue.ready_count() == 0
    assert queue.claim("w", lease_s=30) is None
    queue.complete("b", token=claim_b.token)
    _run(queue, "c")


def test_a_cancelled_blocked_job_stays_cancelled_when_its_dependency_completes(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="parent"))
    queue.enqueue(make_job(job_id="child", depends_on=["parent"]))
    assert queue.cancel("child") is True
    _run(queue, "parent")
    assert queue.get_job("child").status is JobStatus.CANCELLED
    assert queue.ready_count() == 0
