"""The in-memory backend's listings and its worker registry, beside ``memory``.

``MemoryReads`` holds what a ``JobQueue`` does without a transition of a job: listings
in insertion order (with a keyset cursor), counts by type, export, and the worker
registry. Each holds the queue's lock only while it copies what it returns.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from typing import Any

from typedq.backends._control import export_record
from typedq.backends._memory_state import MemoryState
from typedq.backends._worker_totals import add_metrics, flat_figures, from_flat
from typedq.backends.base import WORKER_RETENTION_S, WorkerInfo
from typedq.errors import InvalidJobError
from typedq.job import Job, JobStatus

__all__ = ["MemoryReads"]


class MemoryReads(MemoryState):
    """Listings, export and the worker registry of one in-memory queue."""

    _workers: dict[str, WorkerInfo]
    _retired_metrics: dict[str, Any]

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        job_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
        newest: bool = False,
    ) -> list[Job]:
        """Return up to ``limit`` jobs in insertion order (``newest``: reversed), optionally
        filtered, continuing after job ``after``; see :meth:`Queue.list_jobs`."""
        if limit < 0 or offset < 0:
            raise InvalidJobError("limit", (limit, offset), "limit >= 0 and offset >= 0")
        with self._lock:
            ordered: Iterable[Job] = reversed(self._jobs.values()) if newest else self._jobs.values()
            matching: Iterator[Job] = iter(ordered)
            if after is not None:
                self._get(after)  # an unknown cursor is an error, not an empty page
                for job in matching:
                    if job.job_id == after:
                        break
            if status is not None:
                matching = (j for j in matching if j.status is status)
            if job_type is not None:
                matching = (j for j in matching if j.job_type == job_type)
            return list(itertools.islice(matching, offset, offset + limit))

    def count_by_type(self, status: JobStatus = JobStatus.PENDING) -> dict[str, int]:
        """Return how many jobs of each type are in ``status`` (a scan of every job)."""
        wanted = JobStatus(status)
        counts: dict[str, int] = {}
        with self._lock:
            for job_id, job_status in self._status.items():
                if job_status is wanted:
                    job_type = self._jobs[job_id].job_type
                    counts[job_type] = counts.get(job_type, 0) + 1
        return counts

    def export_jobs(self) -> list[dict[str, Any]]:
        """Return every job as ``Job.to_dict()`` data, in insertion order."""
        with self._lock:
            jobs = [(job, list(self._logs.get(job_id, ()))) for job_id, job in self._jobs.items()]
        return [export_record(job, logs) for job, logs in jobs]

    # -- the worker registry ------------------------------------------------------------

    def register_worker(self, info: WorkerInfo) -> None:
        """Add or renew a worker's entry; see :meth:`Queue.register_worker`."""
        with self._lock:
            self._workers[info.worker_id] = WorkerInfo.from_dict(info.to_dict())
            oldest = info.last_seen - WORKER_RETENTION_S
            for worker_id in [w.worker_id for w in self._workers.values() if w.last_seen < oldest]:
                add_metrics(self._retired_metrics, self._workers.pop(worker_id).metrics)

    def unregister_worker(self, worker_id: str, *, final: WorkerInfo | None = None) -> None:
        """Remove a worker's entry, its figures added to the retired totals; see
        :meth:`Queue.unregister_worker`."""
        with self._lock:
            entry = self._workers.pop(worker_id, None)
            if entry is not None:
                add_metrics(self._retired_metrics, (entry if final is None else final).metrics)

    def retired_metrics(self) -> dict[str, Any]:
        """The summed figures of removed entries; see :meth:`Queue.retired_metrics`."""
        with self._lock:
            flat = flat_figures(self._retired_metrics)
        return from_flat(flat)  # the shape the other backends read back: no zero figures

    def workers(self) -> list[WorkerInfo]:
        """The registered workers, oldest first; see :meth:`Queue.workers`."""
        with self._lock:
            found = [WorkerInfo.from_dict(w.to_dict()) for w in self._workers.values()]
        return sorted(found, key=lambda w: (w.started_at, w.worker_id))
