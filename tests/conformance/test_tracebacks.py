"""A failure's traceback is a field of its own (``Job.traceback``), bounded, on every backend.

It is written by ``fail`` and ``bury``, cleared by a fresh run (``retry``, ``replay``),
never mixed into the caller's ``metadata``, and survives ``export_jobs`` / ``import_jobs``.
Data of older typedq, which kept it in ``metadata["typedq.traceback"]``, is read with the
text moved to the field.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from typedq.backends.base import Claim, Queue
from typedq.clock import FakeClock
from typedq.errors import InvalidJobError
from typedq.job import MAX_TRACEBACK, TRACEBACK_KEY, Job, JobStatus

MakeJob = Callable[..., Job]
QueueFactory = Callable[[str], Queue]


def _claim(queue: Queue) -> Claim:
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    return claim


def test_fail_keeps_the_traceback_on_the_job_not_in_its_metadata(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j", metadata={"tenant": "t1"}))
    claim = _claim(queue)
    failed = queue.fail("j", token=claim.token, error="E: x", retry_at=clock.now(), traceback="Trace 1")
    assert failed.traceback == "Trace 1"
    stored = queue.get_job("j")
    assert stored.traceback == "Trace 1"
    assert stored.metadata == {"tenant": "t1"}
    assert queue.list_jobs()[0].traceback == "Trace 1"


def test_a_long_traceback_keeps_its_last_characters(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    text = "head " + "x" * MAX_TRACEBACK + " the exception line"
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue)
    queue.fail("j", token=claim.token, error="e", retry_at=clock.now(), traceback=text)
    kept = queue.get_job("j").traceback
    assert kept == text[-MAX_TRACEBACK:]
    assert kept is not None
    assert kept.endswith(" the exception line")


def test_each_failure_replaces_the_traceback_and_bury_keeps_the_last(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue)
    queue.fail("j", token=claim.token, error="first", retry_at=clock.now(), traceback="Trace 1")
    claim = _claim(queue)
    queue.fail("j", token=claim.token, error="second", retry_at=clock.now())  # none this time
    assert queue.get_job("j").traceback is None  # never a traceback of another failure
    claim = _claim(queue)
    dead = queue.bury("j", token=claim.token, error="third", traceback="Trace 3")
    assert (dead.status, dead.error, dead.traceback) == (JobStatus.DEAD, "third", "Trace 3")
    assert queue.get_job("j").traceback == "Trace 3"


def test_a_fresh_run_clears_the_traceback(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue_many([make_job(job_id="a"), make_job(job_id="b")])
    for job_id in ("a", "b"):
        claim = _claim(queue)
        queue.bury(claim.job.job_id, token=claim.token, error="boom", traceback=f"Trace {job_id}")
    assert queue.replay("a").traceback is None
    queue.retry("b")
    assert [queue.get_job(j).traceback for j in ("a", "b")] == [None, None]


def test_export_and_import_keep_the_traceback(
    queue: Queue, queue_factory: QueueFactory, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j", metadata={"m": 1}))
    claim = _claim(queue)
    queue.bury("j", token=claim.token, error="boom", traceback="Traceback (most recent call last): ...")
    exported = json.loads(json.dumps(queue.export_jobs()))
    assert exported[0]["traceback"] == "Traceback (most recent call last): ..."
    assert exported[0]["metadata"] == {"m": 1}
    other = queue_factory("restored")
    other.import_jobs(exported)
    restored = other.get_job("j")
    assert restored == queue.get_job("j")
    assert restored.traceback == "Traceback (most recent call last): ..."


def test_an_old_export_with_the_traceback_in_metadata_is_read_into_the_field(
    queue: Queue, make_job: MakeJob
) -> None:
    """An export of typedq before ``Job.traceback``: no ``traceback`` key, the text in
    ``metadata["typedq.traceback"]``."""
    old = make_job(job_id="old", status=JobStatus.DEAD, error="boom").to_dict()
    del old["traceback"]
    old["metadata"] = {"tenant": "t1", TRACEBACK_KEY: "Traceback of old"}
    queue.import_jobs([old])
    job = queue.get_job("old")
    assert job.traceback == "Traceback of old"
    assert job.metadata == {"tenant": "t1"}


def test_fail_and_bury_refuse_text_utf8_cannot_encode_before_writing(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    """An ``error`` or kept ``traceback`` with a lone surrogate is an ``InvalidJobError``
    naming the field on every backend, and the job stays RUNNING under its lease; a
    surrogate in the part of a traceback that is cut off is no reason to refuse."""
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue)
    calls: list[Callable[[], object]] = [
        lambda: queue.fail("j", token=claim.token, error="E: \udcff", retry_at=clock.now()),
        lambda: queue.bury("j", token=claim.token, error="E: \udcff"),
        lambda: queue.fail("j", token=claim.token, error="E", retry_at=clock.now(), traceback="T \ud800"),
        lambda: queue.bury("j", token=claim.token, error="E", traceback="T \ud800"),
    ]
    for call in calls:
        with pytest.raises(InvalidJobError) as caught:
            call()
        assert caught.value.field in ("error", "traceback")
        assert "UTF-8" in str(caught.value)
        job = queue.get_job("j")
        assert (job.status, job.attempt, job.error, job.traceback) == (JobStatus.RUNNING, 1, None, None)
    cut = "\udcff" + "x" * MAX_TRACEBACK
    failed = queue.fail("j", token=claim.token, error="E", retry_at=clock.now(), traceback=cut)
    assert failed.traceback == "x" * MAX_TRACEBACK
