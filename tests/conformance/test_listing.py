"""list_jobs paging: newest first, offset, and keyset cursors (``after``) on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import InvalidJobError, JobNotFoundError
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def _ids(jobs: list[Job]) -> list[str]:
    return [j.job_id for j in jobs]


def _twelve(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    """j00..j11, one second apart; odd ones of type "odd"; j03, j07 and j10 DEAD."""
    for i in range(12):
        queue.enqueue(make_job(job_id=f"j{i:02d}", job_type="odd" if i % 2 else "even"))
        clock.advance(1)
    for job_id in ("j03", "j07", "j10"):
        queue.update_status(job_id, JobStatus.DEAD)


def test_newest_lists_in_reverse_insertion_order(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    _twelve(queue, make_job, clock)
    assert _ids(queue.list_jobs(newest=True, limit=3)) == ["j11", "j10", "j09"]
    assert _ids(queue.list_jobs(newest=True, limit=2, offset=3)) == ["j08", "j07"]
    assert _ids(queue.list_jobs(newest=True, status=JobStatus.DEAD)) == ["j10", "j07", "j03"]
    assert _ids(queue.list_jobs(newest=True, job_type="odd", limit=2)) == ["j11", "j09"]


def test_after_continues_after_the_cursor_in_the_same_order(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    _twelve(queue, make_job, clock)
    assert _ids(queue.list_jobs(after="j04", limit=3)) == ["j05", "j06", "j07"]
    assert _ids(queue.list_jobs(after="j04", limit=3, newest=True)) == ["j03", "j02", "j01"]
    assert _ids(queue.list_jobs(after="j11")) == []
    assert _ids(queue.list_jobs(after="j00", newest=True)) == []
    # The cursor need not match the filters: it only marks a position.
    assert _ids(queue.list_jobs(after="j04", status=JobStatus.DEAD)) == ["j07", "j10"]
    assert _ids(queue.list_jobs(after="j07", status=JobStatus.DEAD, newest=True)) == ["j03"]
    assert _ids(queue.list_jobs(after="j04", job_type="odd", limit=2)) == ["j05", "j07"]
    assert _ids(queue.list_jobs(after="j04", limit=2, offset=2)) == ["j07", "j08"]


@pytest.mark.parametrize("newest", [False, True])
@pytest.mark.parametrize("status", [None, JobStatus.PENDING, JobStatus.DEAD])
def test_pages_by_cursor_cover_every_job_once(
    queue: Queue, make_job: MakeJob, clock: FakeClock, newest: bool, status: JobStatus | None
) -> None:
    _twelve(queue, make_job, clock)
    every = _ids(queue.list_jobs(status=status, newest=newest, limit=1000))
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = queue.list_jobs(status=status, newest=newest, limit=4, after=cursor)
        if not page:
            break
        seen += _ids(page)
        cursor = page[-1].job_id
    assert seen == every
    assert len(every) == {None: 12, JobStatus.PENDING: 9, JobStatus.DEAD: 3}[status]


def test_a_cursor_keeps_its_place_when_jobs_change_or_arrive(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    _twelve(queue, make_job, clock)
    first = queue.list_jobs(status=JobStatus.PENDING, limit=3)
    assert _ids(first) == ["j00", "j01", "j02"]
    queue.cancel("j00")  # a job of the page already shown leaves the filter
    queue.enqueue(make_job(job_id="j12"))
    rest = _ids(queue.list_jobs(status=JobStatus.PENDING, after=first[-1].job_id, limit=100))
    assert rest == ["j04", "j05", "j06", "j08", "j09", "j11", "j12"]


def test_an_unknown_cursor_is_refused(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    _twelve(queue, make_job, clock)
    with pytest.raises(JobNotFoundError) as info:
        queue.list_jobs(after="nope")
    assert "nope" in str(info.value)
    with pytest.raises(InvalidJobError):
        queue.list_jobs(after="j01", limit=-1)
