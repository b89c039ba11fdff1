"""Job control with real workers: handlers taking a JobContext report progress and logs,
see a cancel request (from this process at once, from another one within a heartbeat),
and a handler that ignores it is forced after ``cancel_grace_s``: its job ends
CANCELLED, its dependents FAILED, and its late result is refused."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from tests.helpers import wait_until

from typedq import EventHandler, Job, JobContext, JobProgress, JobQueueManager, JobStatus
from typedq.typed import JobType


class _Events(EventHandler):
    def __init__(self) -> None:
        self.progress: list[tuple[str, float]] = []
        self.cancelled: list[str] = []

    def on_job_progress(self, job: Job, progress: JobProgress) -> None:
        self.progress.append((job.job_id, progress.done))

    def on_job_cancelled(self, job: Job) -> None:
        self.cancelled.append(job.job_id)


@pytest.fixture(params=["memory", "sqlite"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def events() -> _Events:
    return _Events()


@pytest.fixture
def manager(url: str, events: _Events) -> Iterator[JobQueueManager]:
    m = JobQueueManager(
        {"backend": url, "poll_interval": 0.01, "lease_s": 1.0, "heartbeat_s": 0.1, "cancel_grace_s": 0.3},
        event_handler=events,
    )
    yield m
    m.close(timeout=10.0)  # graceful: no worker thread left using a closed connection


def test_progress_and_logs_are_stored_with_the_job(manager: JobQueueManager, events: _Events) -> None:
    def steps(payload: dict[str, Any], ctx: JobContext) -> int:
        for i in range(1, 4):
            ctx.progress(i, 3, f"step {i}")
            ctx.log("did step %d", i)
        return ctx.attempt

    manager.register_handler("steps", steps)
    job_id = manager.submit("steps", {})
    manager.start_workers(count=1)
    assert manager.wait_for_completion([job_id], timeout=10)
    job = manager.get_job(job_id)
    assert job.status is JobStatus.COMPLETED
    assert job.result == 1
    assert job.progress is not None
    assert (job.progress.done, job.progress.total) == (3, 3)
    assert job.progress.message == "step 3"
    assert job.progress.fraction == 1.0
    assert [line.message for line in manager.get_logs(job_id)] == ["did step 1", "did step 2", "did step 3"]
    assert (job_id, 3) in events.progress  # the last report is always stored and told


def test_typed_handler_takes_the_context(manager: JobQueueManager) -> None:
    class Count(BaseModel):
        to: int

    count = JobType("count", Count, result=int)

    @manager.handler(count)
    def run(p: Count, ctx: JobContext) -> int:
        ctx.progress(p.to, p.to, "counted")
        return p.to

    ref = manager.enqueue(count, Count(to=4))
    manager.start_workers(count=1)
    assert ref.result(timeout=10) == 4
    progress = ref.progress()
    assert progress is not None
    assert progress.message == "counted"


def test_cooperative_cancel_of_a_running_job(manager: JobQueueManager, events: _Events) -> None:
    started = threading.Event()

    def patient(payload: dict[str, Any], ctx: JobContext) -> str:
        started.set()
        ctx.wait_cancelled(10)
        ctx.check_cancelled()
        return "not cancelled"

    manager.register_handler("patient", patient)
    job_id = manager.submit("patient", {})
    child = manager.submit("patient", {}, depends_on=[job_id])
    manager.start_workers(count=1)
    assert started.wait(10)
    assert manager.cancel(job_id) is False  # running: asked to stop
    assert manager.wait_for_completion([job_id, child], timeout=10)
    assert manager.get_job(job_id).status is JobStatus.CANCELLED
    assert manager.get_job(child).status is JobStatus.FAILED
    wait_until(lambda: job_id in events.cancelled, timeout=10, message="on_job_cancelled")


def test_another_process_cancel_is_learnt_through_the_heartbeat(
    tmp_path: Path, events: _Events
) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    config = {
        "backend": url, "poll_interval": 0.01, "lease_s": 1.0, "heartbeat_s": 0.1, "cancel_grace_s": 5.0,
    }
    started = threading.Event()

    def patient(payload: dict[str, Any], ctx: JobContext) -> None:
        started.set()
        while not ctx.cancelled:
            time.sleep(0.01)
        ctx.check_cancelled()

    with JobQueueManager(config, event_handler=events) as running, JobQueueManager(config) as other:
        running.register_handler("patient", patient)
        job_id = running.submit("patient", {})
        running.start_workers(count=1)
        assert started.wait(10)
        assert other.cancel(job_id) is False  # another manager: no local worker to tell
        wait_until(lambda: other.get_job(job_id).status is JobStatus.CANCELLED, timeout=10)
        wait_until(lambda: job_id in events.cancelled, timeout=10, message="on_job_cancelled")


@pytest.mark.parametrize("takes_context", [True, False], ids=["ctx", "no-ctx"])
def test_a_handler_ignoring_cancel_is_forced_and_its_late_result_refused(
    manager: JobQueueManager, events: _Events, takes_context: bool
) -> None:
    started = threading.Event()
    release = threading.Event()

    def stubborn(payload: dict[str, Any], ctx: JobContext) -> str:
        started.set()
        release.wait(20)
        return "late"

    def plain(payload: dict[str, Any]) -> str:  # no context: forced all the same
        started.set()
        release.wait(20)
        return "late"

    manager.register_handler("stubborn", stubborn if takes_context else plain)
    job_id = manager.submit("stubborn", {})
    child = manager.submit("stubborn", {}, depends_on=[job_id])
    (worker,) = manager.start_workers(count=1)
    try:
        assert started.wait(10)
        manager.cancel(job_id)
        wait_until(lambda: manager.get_job(job_id).status is JobStatus.CANCELLED, timeout=10)
        assert manager.get_job(child).status is JobStatus.FAILED
        # Listed once the forced cancellation is recorded, just after the job shows CANCELLED.
        wait_until(
            lambda: [t.is_alive() for t in worker.cancel_overdue] == [True],  # still running
            timeout=10, message="the forced handler's thread in cancel_overdue",
        )
        wait_until(lambda: job_id in events.cancelled, timeout=10, message="on_job_cancelled")
    finally:
        release.set()
    wait_until(lambda: worker.current_job_id is None, timeout=10)
    assert worker.cancel_overdue == []  # the handler returned at last
    job = manager.get_job(job_id)
    assert job.status is JobStatus.CANCELLED
    assert job.result is None


def test_state_snapshot(manager: JobQueueManager) -> None:
    import json

    started = threading.Event()
    release = threading.Event()

    def slow(payload: dict[str, Any], ctx: JobContext) -> None:
        ctx.progress(1, 4, "one of four")
        started.set()
        release.wait(20)

    manager.register_handler("slow", slow)
    manager.register_handler("quick", lambda payload: None)
    manager.submit("slow", {})
    try:
        manager.start_workers(count=1)
        assert started.wait(10)
        ids = [manager.submit("quick", {}, priority=p) for p in (3, 8, 3)]
        later = manager.submit("quick", {}, delay_s=3600)
        manager.reorder(ids[2], position="front")
        state = manager.get_state(limit=5)
        json.dumps(state)  # JSON-safe
        default = state["queues"]["default"]
        assert [j["job_id"] for j in default["pending"]["8"]] == [ids[1]]
        assert [j["job_id"] for j in default["pending"]["3"]] == [ids[2], ids[0]]
        assert list(default["pending"]) == ["8", "3"]
        assert [j["job_id"] for j in default["scheduled"]] == [later]
        (running,) = default["running"]
        assert running["job_type"] == "slow"
        assert running["worker_id"]
        assert running["progress"]["message"] == "one of four"
        assert running["elapsed_s"] >= 0
        assert default["counts"]["RUNNING"] == 1
        assert len(default["workers"]) == 1
        assert default["workers"][0]["alive"]
    finally:
        release.set()
    wait_until(lambda: manager.get_state()["queues"]["default"]["counts"]["COMPLETED"] == 4, timeout=10)
    recent = manager.get_state(limit=2)["queues"]["default"]["recent"]["COMPLETED"]
    assert len(recent) == 2
