"""The in-process stack the Redis fault tests drive: a manager of worker threads on a
private ``redis-server``, whose handler writes the ledger and whose events record when
each worker started each job (to measure how soon every worker claims again after an
outage).

Knobs of RELIABILITY.md §4a: lease 1 s, heartbeat 0.25 s, reaper 0.1 s; ``max_lost`` is
raised so that an outage longer than a lease never buries a job (each rescue after an
outage counts a loss).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any, cast

from tests.reliability.ledger import Ledger

from typedq.backends.redis import RedisQueue
from typedq.events import EventHandler
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager

__all__ = ["FAST", "Stack", "StartTimes", "statuses"]

#: Lease knobs of RELIABILITY.md §4a, and a loss cap no outage reaches.
FAST: dict[str, Any] = {"lease_s": 1.0, "heartbeat_s": 0.25, "reaper_s": 0.1, "max_lost": 50}


class StartTimes(EventHandler):
    """Records ``(monotonic time, worker id)`` of every job start."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.starts: list[tuple[float, str]] = []

    def on_job_started(self, job: Job, worker_id: str) -> None:
        with self._lock:
            self.starts.append((time.monotonic(), worker_id))

    def first_after(self, t: float) -> dict[str, float]:
        """Worker id → seconds from ``t`` to its first job start after ``t``."""
        with self._lock:
            starts = list(self.starts)
        first: dict[str, float] = {}
        for at, worker_id in starts:
            if at >= t and worker_id not in first:
                first[worker_id] = at - t
        return first


class _Work:
    """Ledger ``start``, sleep the payload's ``s`` seconds, ledger ``end``."""

    takes_job = True

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __call__(self, job: Job) -> str:
        self.ledger.start(job.job_id, job.attempt, job.attempt)
        time.sleep(float(job.payload.get("s", 0.0)))
        self.ledger.end(job.job_id, job.attempt, job.attempt)
        return job.job_id


class Stack:
    """A manager on ``url`` with ``workers`` worker threads running ``work`` jobs."""

    def __init__(self, url: str, folder: Path, *, workers: int = 4, **config: Any) -> None:
        self.events = StartTimes()
        self.ledger = Ledger(folder / "ledger")
        self.manager = JobQueueManager(
            {
                **FAST, "backend": url, "poll_interval": 0.05, "base_delay": 0.05, "max_workers": workers,
                **config,
            },
            event_handler=self.events,
        )
        self.manager.register_handler("work", _Work(self.ledger))
        self.queue = cast(RedisQueue, self.manager.get_queue("default"))

    def start(self) -> None:
        self.manager.start_workers()

    def close(self) -> None:
        self.manager.close(graceful=True, timeout=10)
        self.ledger.close()


def statuses(stack: Stack) -> dict[str, JobStatus]:
    """Every job of the stack's queue by id → status (read in pages)."""
    return {data["job_id"]: JobStatus(data["status"]) for data in stack.queue.export_jobs()}
