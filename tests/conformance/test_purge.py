"""``purge``: jobs that ended before a time go, oldest first, a bounded batch per call.

The manager's reaper calls it with ``result_ttl`` (COMPLETED and CANCELLED jobs); the CLI
with ``typedq purge``. Time is the FakeClock's: jobs finish at known times.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import InvalidJobError, InvalidTransitionError, JobNotFoundError, UnknownDependencyError
from typedq.job import Job, JobStatus
from typedq.leases import Reaper

MakeJob = Callable[..., Job]
DONE = (JobStatus.COMPLETED,)


def _finish(queue: Queue, clock: FakeClock, job_id: str, *, seconds: float = 10.0) -> float:
    """Complete ``job_id`` (the next claimed) ``seconds`` from now; return when."""
    clock.advance(seconds)
    claim = queue.claim("w", lease_s=3600.0)
    assert claim is not None
    assert claim.job.job_id == job_id
    queue.complete(job_id, token=claim.token, result=job_id)
    return clock.now()


def _ids(queue: Queue, status: JobStatus | None = None) -> list[str]:
    return [job.job_id for job in queue.list_jobs(status=status, limit=1000)]


def test_purge_takes_the_oldest_in_bounded_batches_and_leaves_the_rest(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    jobs = [make_job(job_id=f"c{i}", priority=10 - i) for i in range(7)]
    queue.enqueue_many([*jobs, make_job(job_id="waiting", priority=1)])
    times = [_finish(queue, clock, f"c{i}") for i in range(7)]
    cutoff = times[4]  # c0..c3 finished before it; c4 at it (kept); c5, c6 after
    clock.advance(3600)
    assert queue.purge(statuses=DONE, older_than=cutoff, limit=3) == 3
    assert _ids(queue, JobStatus.COMPLETED) == ["c3", "c4", "c5", "c6"]
    assert queue.purge(statuses=DONE, older_than=cutoff, limit=3) == 1
    assert queue.purge(statuses=DONE, older_than=cutoff, limit=3) == 0
    assert _ids(queue) == ["c4", "c5", "c6", "waiting"]
    assert queue.size == 4
    assert queue.count_by_status()[JobStatus.COMPLETED] == 3
    with pytest.raises(JobNotFoundError):
        queue.get_job("c0")


def test_purge_takes_only_the_statuses_asked_for(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many(
        [make_job(job_id="done", priority=9), make_job(job_id="dead", priority=8), make_job(job_id="off")]
    )
    _finish(queue, clock, "done")
    claim = queue.claim("w", lease_s=60.0)
    assert claim is not None
    queue.bury("dead", token=claim.token, error="boom")
    queue.cancel("off")
    clock.advance(100)
    assert queue.purge(statuses=[JobStatus.COMPLETED, JobStatus.CANCELLED], older_than=clock.now()) == 2
    assert _ids(queue) == ["dead"]
    assert queue.purge(statuses=[JobStatus.DEAD], older_than=clock.now()) == 1
    assert queue.size == 0


def test_purge_leaves_the_dependency_graph_consistent(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    """A finished job has no dependent waiting on it: its dependents run as before; a job
    added later cannot depend on a purged one (unknown), and one re-opened later fails
    naming it missing."""
    queue.enqueue_many(
        [
            make_job(job_id="parent", priority=9),
            make_job(job_id="child", depends_on=["parent"]),
            make_job(
                job_id="late", depends_on=["parent"], status=JobStatus.CANCELLED, finished_at=clock.now()
            ),
        ]
    )
    _finish(queue, clock, "parent")
    clock.advance(60)
    assert queue.purge(statuses=DONE, older_than=clock.now()) == 1
    assert _finish(queue, clock, "child")
    with pytest.raises(UnknownDependencyError):
        queue.enqueue(make_job(job_id="orphan", depends_on=["parent"]))
    assert queue.retry("late") == ["late"]
    late = queue.get_job("late")
    assert (late.status, late.error) == (JobStatus.FAILED, "dependency parent is missing")


def test_a_job_set_to_an_end_status_by_hand_gets_a_finish_time_and_is_purged(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j"))
    queue.update_status("j", JobStatus.COMPLETED)
    assert queue.get_job("j").finished_at == clock.now()
    clock.advance(1)
    assert queue.purge(statuses=DONE, older_than=clock.now()) == 1


def test_a_job_stored_ended_without_a_finish_time_is_never_purged(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.import_jobs([make_job(job_id="old", status=JobStatus.COMPLETED).to_dict()])
    clock.advance(86_400)
    assert queue.purge(statuses=DONE, older_than=clock.now()) == 0
    assert queue.get_job("old").status is JobStatus.COMPLETED


def test_imported_jobs_are_purged_by_their_finish_time_whatever_their_order(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    now = clock.now()
    queue.import_jobs(
        [
            make_job(job_id=job_id, status=JobStatus.COMPLETED, finished_at=now - age).to_dict()
            for job_id, age in (("recent", 10), ("ancient", 1000), ("middle", 100))
        ]
    )
    assert queue.purge(statuses=DONE, older_than=now - 50, limit=1) == 1
    assert _ids(queue) == ["recent", "middle"]
    assert queue.purge(statuses=DONE, older_than=now - 50) == 1
    assert _ids(queue) == ["recent"]


@pytest.mark.parametrize("bad", [JobStatus.PENDING, JobStatus.RUNNING, JobStatus.SCHEDULED, "LOST"])
def test_purging_a_status_of_live_jobs_is_refused(queue: Queue, make_job: MakeJob, bad: object) -> None:
    queue.enqueue(make_job(job_id="j"))
    with pytest.raises(InvalidTransitionError, match="statuses") as refused:
        queue.purge(statuses=[JobStatus.COMPLETED, bad], older_than=9e9)  # type: ignore[list-item]  # on purpose
    assert refused.value.field == "statuses"
    with pytest.raises(InvalidJobError, match="limit"):
        queue.purge(statuses=DONE, older_than=9e9, limit=-1)
    assert queue.size == 1


def test_the_reaper_purges_results_past_result_ttl(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue_many(
        [make_job(job_id="a", priority=9), make_job(job_id="b", priority=8), make_job(job_id="c")]
    )
    _finish(queue, clock, "a")
    queue.cancel("c")
    _finish(queue, clock, "b", seconds=50)
    reaper = Reaper(lambda: [queue], result_ttl=60.0)
    clock.advance(20)  # a finished 70 s ago, c 70 s ago, b 20 s ago
    reaper.sweep()
    assert _ids(queue) == ["b"]
    assert reaper.purged_total == 2
    clock.advance(60)
    reaper.sweep()
    assert queue.size == 0
