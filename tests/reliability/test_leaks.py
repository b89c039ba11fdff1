"""L3, the leak smoke test (RELIABILITY.md §4b): 20,000 no-op jobs through one worker on
the memory and SQLite backends, in this process. Slow tier.

The first 2,000 jobs warm everything up (caches, prepared statements, the claimed-job
map, the worker's averages). Completed jobs are deleted as the test goes, as a result
TTL would: a queue keeps every job it holds, and that is not a leak. Between job 2,000
and job 20,000 the resident set may grow by at most 8 MiB, and ``tracemalloc`` may show
no line of typedq's own code holding more than 1 MiB more. RSS is read from
``/proc/self/statm`` (Linux).
"""

from __future__ import annotations

import gc
import os
import threading
import tracemalloc
from pathlib import Path
from typing import Any

import pytest

import typedq
from typedq import EventHandler, Job, JobQueueManager, JobStatus

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

WARM = 2_000
TOTAL = 20_000
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TYPEDQ_DIR = str(Path(typedq.__file__).parent)


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * _PAGE


class _Counter(EventHandler):
    def __init__(self) -> None:
        self.done = 0
        self.reached = threading.Condition()

    def on_job_completed(self, job: Job, result: Any) -> None:
        with self.reached:
            self.done += 1
            self.reached.notify_all()

    def wait_for(self, count: int) -> None:
        with self.reached:
            assert self.reached.wait_for(lambda: self.done >= count, timeout=120), (self.done, count)


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'leaks.db'}"


def _typedq_bytes(snapshot: tracemalloc.Snapshot) -> dict[str, int]:
    per_line: dict[str, int] = {}
    for stat in snapshot.statistics("lineno"):
        frame = stat.traceback[0]
        if frame.filename.startswith(_TYPEDQ_DIR):
            per_line[f"{frame.filename}:{frame.lineno}"] = stat.size
    return per_line


def test_l3_twenty_thousand_jobs_leak_nothing(backend: str) -> None:
    counter = _Counter()
    manager = JobQueueManager({"backend": backend, "max_workers": 1}, counter)
    try:
        manager.register_handler("noop", lambda payload: None)
        queue = manager.get_queue("default")

        def prune() -> None:
            for job in queue.list_jobs(status=JobStatus.COMPLETED, limit=100_000):
                queue.delete(job.job_id)

        def submit(count: int) -> None:
            for lo in range(0, count, 1_000):
                prune()
                queue.enqueue_many([Job(job_type="noop", payload={"i": i}) for i in range(lo, lo + 1_000)])

        manager.start_workers()
        submit(WARM)
        counter.wait_for(WARM)
        prune()
        gc.collect()
        tracemalloc.start()
        before_rss = _rss_bytes()
        before = _typedq_bytes(tracemalloc.take_snapshot())
        submit(TOTAL - WARM)
        counter.wait_for(TOTAL)
        prune()
        gc.collect()
        after = _typedq_bytes(tracemalloc.take_snapshot())
        after_rss = _rss_bytes()
        tracemalloc.stop()
    finally:
        manager.close()
    grown = {line: size - before.get(line, 0) for line, size in after.items()}
    worst = sorted(grown.items(), key=lambda item: -item[1])[:5]
    assert all(size <= 1 << 20 for _, size in worst), worst
    assert after_rss - before_rss <= 8 << 20, f"RSS grew {(after_rss - before_rss) / 2**20:.1f} MiB"
