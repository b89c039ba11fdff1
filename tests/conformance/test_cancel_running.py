"""Cancelling a running job with a real ``Worker``, on every backend: the worker learns of
the request through its lease renewal (``Queue.renew_lease``), within one heartbeat; a
handler that stops ends the job CANCELLED, one that ignores it is forced after
``cancel_grace_s`` (CANCELLED, its late result refused). Real time: heartbeat 0.05 s,
grace 0.2 s."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.conformance.conftest import make_queue_factory_fixture
from tests.helpers import stop_and_join, wait_until

from typedq.backends.base import Queue
from typedq.clock import Clock, system_clock
from typedq.context import JobContext
from typedq.job import Job, JobStatus
from typedq.worker import Worker

MakeJob = Callable[..., Job]

#: Real time: the codec and 2handles variants are slow.
queue_factory = make_queue_factory_fixture(real_time=True)


@pytest.fixture
def clock() -> Clock:
    """Real time for this module: heartbeats must really beat."""
    return system_clock


@pytest.fixture
def released() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def _worker(queue: Queue, handler: Callable[..., Any]) -> Worker:
    return Worker(
        queue, {"task": handler}, poll_interval=0.01, lease_s=1.0, heartbeat_s=0.05, cancel_grace_s=0.2,
        batch_size=1,
    )


def _run(queue: Queue, make_job: MakeJob, handler: Callable[..., Any]) -> tuple[Worker, str, str]:
    job_id = queue.enqueue(make_job(job_id="running"))
    child = queue.enqueue(make_job(job_id="child", job_type="other", depends_on=[job_id]))
    worker = _worker(queue, handler)
    worker.start()
    wait_until(lambda: queue.get_job(job_id).status is JobStatus.RUNNING, timeout=10)
    assert queue.cancel(job_id) is False  # running: only asked to stop
    return worker, job_id, child


def test_a_cooperative_handler_stops_within_a_heartbeat(queue: Queue, make_job: MakeJob) -> None:
    seen = threading.Event()

    def handler(payload: dict[str, Any], ctx: JobContext) -> str:
        ctx.wait_cancelled(10)
        seen.set()
        ctx.check_cancelled()
        return "finished anyway"

    worker, job_id, child = _run(queue, make_job, handler)
    try:
        wait_until(lambda: queue.get_job(job_id).status is JobStatus.CANCELLED, timeout=10)
        assert seen.is_set()
        assert queue.get_job(child).status is JobStatus.FAILED
        assert worker.cancel_overdue == []
    finally:
        stop_and_join([worker])


def test_a_handler_ignoring_it_is_forced_and_its_result_refused(
    queue: Queue, make_job: MakeJob, released: threading.Event
) -> None:
    def handler(payload: dict[str, Any], ctx: JobContext) -> str:
        released.wait(10)
        return "late"

    worker, job_id, child = _run(queue, make_job, handler)
    try:
        wait_until(lambda: queue.get_job(job_id).status is JobStatus.CANCELLED, timeout=10)
        assert queue.get_job(child).status is JobStatus.FAILED
        # "cancel requested, still running": listed once the forced cancellation is
        # recorded, just after the job shows CANCELLED.
        wait_until(lambda: worker.cancel_overdue == [worker], timeout=10, message="cancel_overdue")
        released.set()
        wait_until(lambda: worker.current_job_id is None, timeout=10)
        job = queue.get_job(job_id)
        assert (job.status, job.result) == (JobStatus.CANCELLED, None)
        assert worker.stats.stale == 1
    finally:
        released.set()
        stop_and_join([worker])
