"""``JobQueueManager.close(graceful=False)`` on SQLite while a handler runs: the close
returns without waiting for the handler, no worker thread crashes, the late outcome is
refused, and every job is still there to run (the running one once its lease expires)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until

from typedq import JobQueueManager, JobStatus
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock

LEASE_S = 1.0


@pytest.mark.timeout(30)
def test_close_without_waiting_loses_no_job_and_crashes_no_worker(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "jobs.db"
    manager = JobQueueManager({
        "backend": f"sqlite:///{path}", "max_workers": 1, "poll_interval": 0.02,
        "lease_s": LEASE_S, "heartbeat_s": 0.25, "reaper_s": 0.1,
    })
    running, release = threading.Event(), threading.Event()

    def slow(payload: dict[str, Any]) -> str:
        running.set()
        release.wait(10)
        return "late"

    manager.register_handler("slow", slow)
    first = manager.submit("slow", {"n": 0})
    rest = [manager.submit("slow", {"n": n}) for n in (1, 2)]
    manager.start_workers()
    assert running.wait(5)
    workers = manager.workers()
    began = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="typedq"):
        manager.close(graceful=False)
        assert time.monotonic() - began < 1.0  # did not wait for the handler
        release.set()
        # The worker ends by itself: its completion is refused (QueueClosedError), it
        # does not crash (an exception escaping a thread fails the test).
        wait_until(lambda: not any(w.is_alive() for w in workers), timeout=10)
    assert any("closed" in r.getMessage() or "closed" in str(r.exc_info) for r in caplog.records)

    # Past the lease (by a clock moved forward, not by sleeping) the running job is rescued.
    later = FakeClock(time.time() + LEASE_S + 1, time.monotonic() + LEASE_S + 1)
    rescuer = SQLiteQueue(path, name="default", clock=later)
    try:
        assert rescuer.get_job(first).status is JobStatus.RUNNING  # the late result was refused
        assert rescuer.get_job(first).result is None
        assert {rescuer.get_job(job_id).status for job_id in rest} == {JobStatus.PENDING}
        assert rescuer.reclaim_expired() == [first]
        assert {rescuer.get_job(job_id).status for job_id in [first, *rest]} == {JobStatus.PENDING}
    finally:
        rescuer.close()
