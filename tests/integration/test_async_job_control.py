"""Job control in async workers: an ``async def`` handler takes a JobContext (progress,
logs), and cancelling its running job cancels its task, from this process at once and
from another manager within a heartbeat; its job ends CANCELLED."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until

from typedq import AsyncWorker, EventHandler, Job, JobContext, JobQueueManager, JobStatus


class _Events(EventHandler):
    def __init__(self) -> None:
        self.cancelled: list[str] = []

    def on_job_cancelled(self, job: Job) -> None:
        self.cancelled.append(job.job_id)


CONFIG = {"poll_interval": 0.01, "lease_s": 1.0, "heartbeat_s": 0.1, "cancel_grace_s": 5.0, "max_workers": 1}


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def events() -> _Events:
    return _Events()


@pytest.fixture
def manager(url: str, events: _Events) -> Iterator[JobQueueManager]:
    m = JobQueueManager({"backend": url, **CONFIG}, event_handler=events)
    yield m
    m.close(timeout=10.0)


def test_async_handlers_report_progress_and_logs(manager: JobQueueManager) -> None:
    async def steps(payload: dict[str, Any], ctx: JobContext) -> int:
        for i in range(1, 4):
            await asyncio.sleep(0)
            ctx.progress(i, 3, f"step {i}")
            ctx.log("did step %d", i)
        return ctx.attempt

    manager.register_handler("steps", steps)
    job_id = manager.submit("steps", {})
    (worker,) = manager.start_workers(count=1)
    assert isinstance(worker, AsyncWorker)
    assert manager.wait_for_completion([job_id], timeout=10)
    job = manager.get_job(job_id)
    assert job.result == 1
    assert job.progress is not None
    assert (job.progress.done, job.progress.total, job.progress.message) == (3, 3, "step 3")
    assert [line.message for line in manager.get_logs(job_id)] == ["did step 1", "did step 2", "did step 3"]


def _forever(entered: threading.Event, saw_cancel: threading.Event) -> Any:
    async def forever(payload: dict[str, Any], ctx: JobContext) -> None:
        entered.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            saw_cancel.set()
            raise

    return forever


def test_cancel_in_this_process_cancels_the_task(manager: JobQueueManager, events: _Events) -> None:
    entered, saw_cancel = threading.Event(), threading.Event()
    manager.register_handler("forever", _forever(entered, saw_cancel))
    job_id = manager.submit("forever", {}, max_retries=3)
    manager.start_workers(count=1)
    assert entered.wait(10)
    assert manager.cancel(job_id) is False  # running: asked to stop
    wait_until(lambda: manager.get_job(job_id).status is JobStatus.CANCELLED, timeout=10)
    assert saw_cancel.is_set()
    assert manager.get_job(job_id).retry_count == 0
    wait_until(lambda: events.cancelled == [job_id])


def test_cancel_from_another_manager_arrives_with_the_heartbeat(tmp_path: Path, events: _Events) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    entered, saw_cancel = threading.Event(), threading.Event()
    worker_side = JobQueueManager({"backend": url, **CONFIG}, event_handler=events)
    other = JobQueueManager({"backend": url, **CONFIG})
    try:
        worker_side.register_handler("forever", _forever(entered, saw_cancel))
        job_id = worker_side.submit("forever", {})
        worker_side.start_workers(count=1)
        assert entered.wait(10)
        other.cancel(job_id)  # another process, say: the worker learns it from its heartbeat
        wait_until(lambda: other.get_job(job_id).status is JobStatus.CANCELLED, timeout=10)
        assert saw_cancel.is_set()
    finally:
        worker_side.close(timeout=10.0)
        other.close(timeout=10.0)
