"""What a worker counts for the metrics exporter, kept in its registry entry.

A worker counts its outcomes per job type (completed, failed, retried, dead, cancelled)
and keeps two histograms per job type: queue wait (from when a job became due, its
``scheduled_at`` or else its ``created_at``, to the start of the attempt) and run time
(the handler's duration). :meth:`WorkerMetrics.snapshot` is written into the worker's
registry entry (:attr:`~typedq.backends.base.WorkerInfo.metrics`) at every heartbeat,
so every process and host that can read the store sees them (see ``typedq.metrics``).

The snapshot is plain JSON: ``{job_type: {"completed": n, ..., "wait": [per-bucket
counts], "wait_sum": s, "run": [...], "run_sum": s}}``; bucket counts are per bucket (not
cumulative) over :data:`BUCKETS` plus a last one for larger values.
"""

from __future__ import annotations

import bisect
from typing import Any, Final

from typedq.backends._worker_totals import add_metrics

__all__ = ["BUCKETS", "OUTCOMES", "WorkerMetrics"]

#: Upper bounds (seconds) of the wait and run-time histogram buckets; one more bucket
#: (``+Inf``) holds what is larger.
BUCKETS: Final = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
)
#: The outcomes a worker counts per job type.
OUTCOMES: Final = ("completed", "failed", "retried", "dead", "cancelled")


def _new_entry() -> dict[str, Any]:
    entry: dict[str, Any] = dict.fromkeys(OUTCOMES, 0)
    entry["wait"] = [0] * (len(BUCKETS) + 1)
    entry["wait_sum"] = 0.0
    entry["run"] = [0] * (len(BUCKETS) + 1)
    entry["run_sum"] = 0.0
    return entry


class WorkerMetrics:
    """Per-queue, per-job-type counters and histograms of one worker.

    Kept by queue as well as job type because a worker serving several queues (a queue
    group) registers with each of them: each queue's entry carries that queue's figures
    only (:meth:`snapshot` with the queue's name), so the exporter's sums count every job
    once, under its own queue.

    Only the worker's own thread records; the heartbeat thread takes snapshots. No lock:
    an entry's keys are fixed when it is made, so a snapshot copying the entries (the
    entry table listed first, in one step) never sees one change size; a count it copies
    may be one job behind, which the next heartbeat's snapshot catches up.
    """

    def __init__(self) -> None:
        self._types: dict[tuple[str, str], dict[str, Any]] = {}

    def _entry(self, queue: str, job_type: str) -> dict[str, Any]:
        entry = self._types.get((queue, job_type))
        if entry is None:
            entry = self._types[queue, job_type] = _new_entry()
        return entry

    def count(self, queue: str, job_type: str, outcome: str, n: int = 1) -> None:
        """Add ``n`` to ``outcome`` (one of :data:`OUTCOMES`) of ``job_type`` in ``queue``."""
        self._entry(queue, job_type)[outcome] += n

    def observe(
        self, queue: str, job_type: str, *, wait_s: float | None = None, run_s: float | None = None
    ) -> None:
        """Record one attempt's queue wait and/or run time (seconds; negatives count as 0)."""
        entry = self._entry(queue, job_type)
        if wait_s is not None:
            wait_s = max(wait_s, 0.0)
            entry["wait"][bisect.bisect_left(BUCKETS, wait_s)] += 1
            entry["wait_sum"] += wait_s
        if run_s is not None:
            run_s = max(run_s, 0.0)
            entry["run"][bisect.bisect_left(BUCKETS, run_s)] += 1
            entry["run_sum"] += run_s

    def snapshot(self, queue: str | None = None) -> dict[str, Any]:
        """A JSON-safe copy of what was recorded for ``queue`` (the module docstring's
        shape), or for every queue, a job type's figures summed over them, when None."""
        got: dict[str, Any] = {}
        for (name, job_type), entry in list(self._types.items()):
            if queue is None or name == queue:
                add_metrics(got, {job_type: entry})  # a copy: new lists and numbers
        return got
