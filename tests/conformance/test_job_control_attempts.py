"""Progress and logs across attempts and through export/import, on every backend.

A new attempt starts with no progress (what a failed, lost or interrupted attempt
reported is not shown as the new one's); log lines are kept across attempts, each marked
with its attempt. ``export_jobs`` carries both, ``import_jobs`` restores both with the
jobs, all-or-nothing. Time moves only through the FakeClock.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from typedq.backends.base import Claim, Queue
from typedq.clock import FakeClock
from typedq.errors import InvalidJobError, JobNotFoundError
from typedq.job import Job, JobLogLine, JobProgress, JobStatus

MakeJob = Callable[..., Job]
QueueFactory = Callable[[str], Queue]


def _claim(queue: Queue, worker: str = "w1", lease_s: float = 10.0) -> Claim:
    claim = queue.claim(worker, lease_s=lease_s)
    assert claim is not None
    return claim


def _report(queue: Queue, claim: Claim, done: float, message: str) -> None:
    job_id = claim.job.job_id
    queue.set_progress(job_id, token=claim.token, progress=JobProgress(done, 10, message))
    queue.append_logs(job_id, token=claim.token, lines=[JobLogLine(float(claim.token), claim.token, message)])


def test_a_retried_job_starts_its_next_attempt_without_progress(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j", max_retries=3))
    first = _claim(queue)
    _report(queue, first, 7, "first try")
    queue.fail("j", token=first.token, error="boom", retry_at=clock.now())
    waiting = queue.get_job("j")
    assert waiting.status is JobStatus.PENDING
    assert waiting.progress is not None  # what the failed attempt got to, until the next one
    assert waiting.progress.attempt == first.token
    second = _claim(queue)
    assert second.token == first.token + 1
    assert second.job.progress is None
    assert queue.get_job("j").progress is None
    _report(queue, second, 2, "second try")
    progress = queue.get_job("j").progress
    assert progress is not None
    assert (progress.done, progress.message, progress.attempt) == (2, "second try", second.token)
    # Logs stay, each line marked with the attempt that wrote it.
    assert [(line.attempt, line.message) for line in queue.get_logs("j")] == [
        (first.token, "first try"), (second.token, "second try"),
    ]


def test_a_rescued_job_starts_its_next_attempt_without_progress(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j"))
    lost = _claim(queue, lease_s=1)
    _report(queue, lost, 9, "lost")
    clock.advance(2)
    assert queue.reclaim_expired() == ["j"]
    again = _claim(queue, "w2")
    assert queue.get_job("j").progress is None
    queue.complete("j", token=again.token)
    assert queue.get_job("j").progress is None
    assert [line.attempt for line in queue.get_logs("j")] == [lost.token]


def test_stored_progress_is_marked_with_the_attempt_that_reported_it(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue)
    queue.set_progress("j", token=claim.token, progress=JobProgress(1, 2, "x", 5.0, attempt=99))
    assert queue.get_job("j").progress == JobProgress(1, 2, "x", 5.0, claim.token)


def _with_control(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    """A finished job and a running one, each with progress and logs, and a plain one."""
    queue.enqueue(make_job(job_id="done"))
    queue.enqueue(make_job(job_id="running"))
    queue.enqueue(make_job(job_id="plain"))
    done = _claim(queue)
    _report(queue, done, 10, "done é ✓")
    queue.complete("done", token=done.token, result={"n": 1})
    clock.advance(1)
    running = _claim(queue)
    _report(queue, running, 4, "running")
    queue.append_logs("running", token=running.token, lines=[JobLogLine(3.0, running.token, "more")])


def test_export_then_import_keeps_progress_and_logs(
    queue: Queue, queue_factory: QueueFactory, make_job: MakeJob, clock: FakeClock
) -> None:
    _with_control(queue, make_job, clock)
    exported = json.loads(json.dumps(queue.export_jobs(), allow_nan=False))
    by_id = {record["job_id"]: record for record in exported}
    assert by_id["plain"]["logs"] == []
    assert [line["message"] for line in by_id["running"]["logs"]] == ["running", "more"]
    assert by_id["done"]["progress"]["message"] == "done é ✓"
    fresh = queue_factory("restored")
    assert fresh.import_jobs(exported) == [record["job_id"] for record in exported]
    for job_id in ("done", "running", "plain"):
        assert fresh.get_job(job_id).progress == queue.get_job(job_id).progress, job_id
        assert fresh.get_logs(job_id) == queue.get_logs(job_id), job_id
    assert fresh.export_jobs() == queue.export_jobs()
    # The imported running job goes on: its worker's token still holds.
    token = fresh.get_job("running").attempt
    fresh.append_logs("running", token=token, lines=[JobLogLine(4.0, token, "after import")])
    assert [line.message for line in fresh.get_logs("running")][-1] == "after import"


def test_import_of_records_without_logs_gives_jobs_without_logs(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    record = make_job(job_id="old", created_at=clock.now()).to_dict()  # as older versions exported
    assert queue.import_jobs([record]) == ["old"]
    assert queue.get_logs("old") == []
    assert queue.get_job("old").progress is None


@pytest.mark.parametrize("logs", ["text", [1, 2], {"at": 1}])
def test_import_of_malformed_logs_stores_nothing(
    queue: Queue, make_job: MakeJob, clock: FakeClock, logs: object
) -> None:
    good = make_job(job_id="g0", created_at=clock.now()).to_dict()
    bad = {**make_job(job_id="g1", created_at=clock.now()).to_dict(), "logs": logs}
    with pytest.raises(InvalidJobError) as info:
        queue.import_jobs([good, bad])
    assert info.value.field == "jobs_data[1].logs"
    assert "jobs_data[1].logs" in str(info.value)
    for job_id in ("g0", "g1"):
        with pytest.raises(JobNotFoundError):
            queue.get_job(job_id)


def test_imported_progress_of_an_earlier_attempt_is_not_shown(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    record = make_job(job_id="j", attempt=2, created_at=clock.now()).to_dict()
    record["progress"] = JobProgress(5, 10, "attempt 1", 1.0, attempt=1).to_dict()
    queue.import_jobs([record])
    assert queue.get_job("j").progress is None
    assert queue.export_jobs()[0]["progress"] is None
