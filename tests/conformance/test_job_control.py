"""Job control on every backend: lease renewals that report a cancel request, progress
and logs fenced by the lease token, cancelling jobs in every state, and reordering
pending jobs inside their priority level. Time moves only through the FakeClock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Claim, Queue
from typedq.clock import FakeClock
from typedq.errors import InvalidJobError, InvalidTransitionError, JobNotFoundError, StaleLeaseError
from typedq.job import MAX_JOB_LOGS, MAX_LOG_LINE, Job, JobLogLine, JobProgress, JobStatus

MakeJob = Callable[..., Job]


def _claim(queue: Queue, worker: str = "w1", lease_s: float = 10.0) -> Claim:
    claim = queue.claim(worker, lease_s=lease_s)
    assert claim is not None
    return claim


def _drain(queue: Queue) -> list[str]:
    taken = []
    while (claim := queue.claim("w", lease_s=30)) is not None:
        taken.append(claim.job.job_id)
    return taken


# -- renewals ---------------------------------------------------------------------------


def test_renew_lease_extends_and_reports_a_cancel_request(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue, lease_s=5)
    renewal = queue.renew_lease("j", token=claim.token, lease_s=20)
    assert renewal.lease_until == pytest.approx(clock.now() + 20)
    assert renewal.cancel_requested is False
    assert queue.get_job("j").lease_until == pytest.approx(clock.now() + 20)
    assert queue.cancel("j") is False  # running: only asked to stop
    assert queue.renew_lease("j", token=claim.token, lease_s=20).cancel_requested is True


def test_renew_lease_is_fenced(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue(make_job(job_id="j"))
    old = _claim(queue, lease_s=1)
    clock.advance(2)
    assert queue.reclaim_expired() == ["j"]
    new = _claim(queue, "w2")
    with pytest.raises(StaleLeaseError):
        queue.renew_lease("j", token=old.token, lease_s=10)
    assert queue.renew_lease("j", token=new.token, lease_s=10).cancel_requested is False
    with pytest.raises(JobNotFoundError):
        queue.renew_lease("nope", token=1, lease_s=10)


# -- progress -----------------------------------------------------------------------------


def test_progress_is_stored_and_read_with_the_job(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue(make_job(job_id="j"))
    assert queue.get_job("j").progress is None
    claim = _claim(queue)
    queue.set_progress("j", token=claim.token, progress=JobProgress(3, 10, "three", clock.now(), claim.token))
    progress = queue.get_job("j").progress
    assert progress == JobProgress(3, 10, "three", clock.now(), claim.token)
    assert progress is not None
    assert progress.fraction == pytest.approx(0.3)
    queue.complete("j", token=claim.token, result=1)
    kept = queue.get_job("j").progress
    assert kept is not None
    assert kept.done == 3


def test_a_stale_workers_progress_is_refused(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue(make_job(job_id="j"))
    old = _claim(queue, lease_s=1)
    queue.set_progress("j", token=old.token, progress=JobProgress(1, 4, "old"))
    clock.advance(2)
    queue.reclaim_expired()
    new = _claim(queue, "w2")
    queue.set_progress("j", token=new.token, progress=JobProgress(2, 4, "new"))
    with pytest.raises(StaleLeaseError):
        queue.set_progress("j", token=old.token, progress=JobProgress(4, 4, "stale"))
    progress = queue.get_job("j").progress
    assert progress is not None
    assert progress.message == "new"


def test_progress_of_a_job_not_running_is_refused(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    with pytest.raises(StaleLeaseError):
        queue.set_progress("j", token=0, progress=JobProgress(1))
    with pytest.raises(JobNotFoundError):
        queue.set_progress("nope", token=1, progress=JobProgress(1))


def test_progress_survives_export(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue)
    queue.set_progress("j", token=claim.token, progress=JobProgress(1.5, None, None, 7.0, claim.token))
    data = queue.get_job("j").to_dict()
    assert data["progress"] == {"done": 1.5, "total": None, "message": None, "updated_at": 7.0, "attempt": 1}
    assert Job.from_dict(data).progress == JobProgress(1.5, None, None, 7.0, 1)


# -- logs -----------------------------------------------------------------------------------


def test_logs_are_kept_in_order_and_bounded(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue(make_job(job_id="j"))
    assert queue.get_logs("j") == []
    claim = _claim(queue)
    first = [JobLogLine(clock.now(), 1, "first"), JobLogLine(1.0, 1, "é ✓")]
    queue.append_logs("j", token=claim.token, lines=first)
    assert [line.message for line in queue.get_logs("j")] == ["first", "é ✓"]
    many = [JobLogLine(2.0, 1, f"line {i}") for i in range(MAX_JOB_LOGS + 5)]
    queue.append_logs("j", token=claim.token, lines=many)
    logs = queue.get_logs("j")
    assert len(logs) == MAX_JOB_LOGS
    assert logs[0].message == "line 5"
    assert logs[-1].message == f"line {MAX_JOB_LOGS + 4}"
    queue.append_logs("j", token=claim.token, lines=[JobLogLine(3.0, 1, "x" * (MAX_LOG_LINE * 2))])
    assert len(queue.get_logs("j")[-1].message) == MAX_LOG_LINE
    queue.complete("j", token=claim.token)
    assert len(queue.get_logs("j")) == MAX_JOB_LOGS  # kept with the finished job


def test_logs_are_fenced_and_go_with_the_job(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue(make_job(job_id="j"))
    old = _claim(queue, lease_s=1)
    queue.append_logs("j", token=old.token, lines=[JobLogLine(0.0, old.token, "a")])
    clock.advance(2)
    queue.reclaim_expired()
    new = _claim(queue, "w2")
    with pytest.raises(StaleLeaseError):
        queue.append_logs("j", token=old.token, lines=[JobLogLine(0.0, old.token, "stale")])
    queue.append_logs("j", token=new.token, lines=[JobLogLine(0.0, new.token, "b")])
    assert [(line.attempt, line.message) for line in queue.get_logs("j")] == [(1, "a"), (2, "b")]
    queue.complete("j", token=new.token)
    queue.delete("j")
    with pytest.raises(JobNotFoundError):
        queue.get_logs("j")


# -- cancel -------------------------------------------------------------------------------


def test_cancel_pending_job_fails_its_dependents(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="a"))
    queue.enqueue(make_job(job_id="b", depends_on=["a"]))
    assert queue.cancel("a") is True
    assert queue.get_job("a").status is JobStatus.CANCELLED
    assert queue.get_job("b").status is JobStatus.FAILED


def test_cancel_running_is_requested_then_recorded_by_its_worker(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="a"))
    queue.enqueue(make_job(job_id="b", depends_on=["a"]))
    claim = _claim(queue)
    assert queue.cancel("a") is False
    job = queue.get_job("a")
    assert job.status is JobStatus.RUNNING
    assert job.cancel_requested
    assert queue.renew_lease("a", token=claim.token, lease_s=10).cancel_requested
    assert queue.cancel("a", token=claim.token) is True
    assert queue.get_job("a").status is JobStatus.CANCELLED
    assert queue.get_job("b").status is JobStatus.FAILED
    with pytest.raises(StaleLeaseError):  # the late result is refused
        queue.complete("a", token=claim.token, result="late")


def test_cancel_running_forced_by_expiry_ends_cancelled(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="a"))
    claim = _claim(queue, lease_s=1)
    queue.cancel("a")
    clock.advance(2)  # the worker ignored it and died: the reaper ends it
    assert queue.reclaim_expired() == ["a"]
    assert queue.get_job("a").status is JobStatus.CANCELLED
    with pytest.raises(StaleLeaseError):
        queue.complete("a", token=claim.token)


def test_cancel_already_finished_changes_nothing(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="a"))
    claim = _claim(queue)
    queue.complete("a", token=claim.token, result=5)
    assert queue.cancel("a") is False
    job = queue.get_job("a")
    assert job.status is JobStatus.COMPLETED
    assert job.result == 5


# -- reorder ------------------------------------------------------------------------------


def test_reorder_front_and_back_within_the_priority_level(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    for name in ("a", "b", "c"):
        queue.enqueue(make_job(job_id=name))
        clock.advance(1)
    queue.enqueue(make_job(job_id="urgent", priority=9))
    queue.enqueue(make_job(job_id="low", priority=1))
    assert queue.reorder("c", position="front").job_id == "c"
    queue.reorder("a", position="back")
    # Priority still wins: the moves happen inside priority 5 only.
    assert _drain(queue) == ["urgent", "c", "b", "a", "low"]


def test_reorder_before_another_job(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    for name in ("a", "b", "c", "d"):
        queue.enqueue(make_job(job_id=name))
        clock.advance(1)
    queue.reorder("d", before="b")
    queue.reorder("c", before="b")  # again between d and b
    queue.reorder("a", before="c")
    assert queue.peek() is not None
    assert _drain(queue) == ["d", "a", "c", "b"]


def test_reorder_keeps_scheduled_jobs_in_order(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    now = clock.now()
    queue.enqueue(make_job(job_id="s1", scheduled_at=now - 20))
    queue.enqueue(make_job(job_id="s2", scheduled_at=now - 10))
    queue.enqueue(make_job(job_id="u"))
    queue.reorder("s2", position="front")
    queue.reorder("u", position="back")
    assert _drain(queue) == ["s2", "s1", "u"]


def test_reorder_front_twice_and_at_the_edge_is_stable(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    for name in ("a", "b", "c"):
        queue.enqueue(make_job(job_id=name))
        clock.advance(1)
    queue.reorder("a", position="front")  # already first: nothing moves
    queue.reorder("c", position="back")
    queue.reorder("b", position="front")
    queue.reorder("c", position="front")
    assert _drain(queue) == ["c", "b", "a"]


def test_reorder_refusals(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="a"))
    queue.enqueue(make_job(job_id="hi", priority=8))
    queue.enqueue(make_job(job_id="blocked", depends_on=["a"]))
    with pytest.raises(InvalidJobError, match="position"):
        queue.reorder("a")
    with pytest.raises(InvalidJobError, match="position"):
        queue.reorder("a", position="middle")
    with pytest.raises(InvalidJobError, match="position"):
        queue.reorder("a", position="front", before="hi")
    with pytest.raises(InvalidJobError, match="before"):
        queue.reorder("a", before="a")
    with pytest.raises(InvalidJobError, match="before"):
        queue.reorder("a", before="hi")
    with pytest.raises(InvalidTransitionError, match="ready PENDING"):
        queue.reorder("blocked", position="front")
    with pytest.raises(InvalidTransitionError, match="before"):
        queue.reorder("a", before="blocked")
    with pytest.raises(JobNotFoundError):
        queue.reorder("nope", position="front")
    with pytest.raises(JobNotFoundError):
        queue.reorder("a", before="nope")
    claim = _claim(queue)
    assert claim.job.job_id == "hi"
    with pytest.raises(InvalidTransitionError, match="RUNNING"):
        queue.reorder("hi", position="back")
