"""The job-control methods of ``JobQueueManager``: reorder, progress and logs of a job,
and the state snapshot (``get_state``) a UI or the CLI shows."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Final

from typedq._validate import require_number
from typedq.backends.base import Queue
from typedq.job import Job, JobLogLine, JobProgress, JobStatus

__all__ = ["STATE_LIMIT", "STATE_SCAN", "JobControlAPI", "job_summary"]

#: The default length of each list of ``get_state`` (jobs per priority, running,
#: recent completions...).
STATE_LIMIT: Final = 20
#: The most PENDING jobs ``get_state`` reads per queue (the oldest) to list by priority.
STATE_SCAN: Final = 1000


def job_summary(job: Job, now: float) -> dict[str, Any]:
    """A job as a small JSON-safe dict for a snapshot (no payload or result)."""
    data: dict[str, Any] = {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "priority": job.priority,
        "status": job.status.value,
        "created_at": job.created_at,
        "scheduled_at": job.scheduled_at,
        "attempt": job.attempt,
    }
    if job.status is JobStatus.RUNNING:
        data["worker_id"] = job.worker_id
        data["started_at"] = job.started_at
        data["elapsed_s"] = None if job.started_at is None else max(0.0, now - job.started_at)
        data["cancel_requested"] = job.cancel_requested
    if job.progress is not None:
        data["progress"] = job.progress.to_dict()
    if job.finished_at is not None:
        data["finished_at"] = job.finished_at
    if job.error is not None:
        data["error"] = job.error
    return data


class JobControlAPI(ABC):
    """Mixed into ``JobQueueManager``."""

    @abstractmethod
    def get_job(self, job_id: str) -> Job:
        """Implemented by ``JobQueueManager``."""

    @abstractmethod
    def get_queue(self, name: str) -> Queue:
        """Implemented by ``JobQueueManager``."""

    @abstractmethod
    def _all_queues(self) -> list[Queue]:
        """Implemented by ``JobQueueManager``."""

    def reorder(self, job_id: str, *, before: str | None = None, position: str | None = None) -> Job:
        """Move a ready PENDING job inside its priority level; return it.

        ``position="front"`` or ``"back"`` of the ready jobs of its priority, or
        ``before=other_id`` (a ready job of the same priority). Priority always wins:
        a reorder rewrites the job's order key within its level (its ``scheduled_at``
        and ``created_at``), never its priority; change that with ``set_priority``.
        See ``Queue.reorder``.

        Raises:
            JobNotFoundError: no queue holds the job (or ``before``).
            InvalidJobError: bad arguments, or ``before`` of another priority.
            InvalidTransitionError: the job (or ``before``) is not ready to run.
        """
        job = self.get_job(job_id)
        return self.get_queue(job.queue).reorder(job_id, before=before, position=position)

    def get_progress(self, job_id: str) -> JobProgress | None:
        """The progress the job's handler last reported, or None.

        Raises:
            JobNotFoundError: no queue holds the job.
        """
        return self.get_job(job_id).progress

    def get_logs(self, job_id: str) -> list[JobLogLine]:
        """The lines the job's handler logged (``ctx.log``), oldest first.

        Raises:
            JobNotFoundError: no queue holds the job.
        """
        job = self.get_job(job_id)
        try:
            return self.get_queue(job.queue).get_logs(job_id)
        except KeyError:  # a dead letter: its queue field names where it died
            return []

    def get_state(self, *, limit: int = STATE_LIMIT) -> dict[str, Any]:
        """A snapshot of every queue in one call, JSON-safe, every list bounded.

        Per queue: ``counts`` (status → jobs); ``pending``: the ready-to-run order by
        priority level (``"10"`` … ``"1"`` → the first ``limit`` jobs of the level in claim
        order; from the oldest :data:`STATE_SCAN` pending jobs), ``blocked`` and
        ``pending_scanned``; ``scheduled``: jobs due later (and SCHEDULED ones), soonest
        first; ``running``: with worker, progress and elapsed seconds; ``recent``:
        the newest ``COMPLETED``, ``FAILED``, ``DEAD`` and ``CANCELLED`` jobs; ``workers``:
        the registry (live and recently dead, ``alive`` set). Jobs appear as
        :func:`job_summary` dicts (no payloads or results).

        Raises:
            ConfigError: ``limit`` is not an int from 1 to 1000.
        """
        require_number("limit", limit, minimum=1, maximum=1000, integer=True)
        every = self._all_queues()
        queues = {queue.name: self._queue_state(queue, limit) for queue in every}
        return {"at": every[0].clock.now() if every else None, "limit": limit, "queues": queues}

    @staticmethod
    def _queue_state(queue: Queue, limit: int) -> dict[str, Any]:
        now = queue.clock.now()
        pending = queue.list_jobs(status=JobStatus.PENDING, limit=STATE_SCAN)
        due = [j for j in pending if j.scheduled_at is None or j.scheduled_at <= now]
        later = [j for j in pending if j.scheduled_at is not None and j.scheduled_at > now]
        later += queue.list_jobs(status=JobStatus.SCHEDULED, limit=limit)
        later.sort(key=lambda j: (float("inf") if j.scheduled_at is None else j.scheduled_at, j.created_at))
        levels: dict[str, list[dict[str, Any]]] = {}
        blocked = 0
        statuses: dict[str, JobStatus] = {}
        for job in sorted(due, key=Job.sort_key):
            if job.depends_on and not _deps_done(queue, job, statuses):
                blocked += 1
                continue
            level = levels.setdefault(str(job.priority), [])
            if len(level) < limit:
                level.append(job_summary(job, now))
        running = []
        for job in queue.list_jobs(status=JobStatus.RUNNING, limit=limit):
            if job.progress is None:
                try:
                    job.progress = queue.get_job(job.job_id).progress
                except KeyError:
                    continue  # ended meanwhile
            running.append(job_summary(job, now))
        recent = {
            status.value: [
                job_summary(j, now) for j in queue.list_jobs(status=status, limit=limit, newest=True)
            ]
            for status in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED)
        }
        workers = []
        for info in queue.workers()[:limit]:
            entry = info.to_dict()
            entry["alive"] = info.alive(now)
            workers.append(entry)
        return {
            "counts": {s.value: n for s, n in queue.count_by_status().items()},
            "pending": dict(sorted(levels.items(), key=lambda kv: -int(kv[0]))),
            "pending_scanned": len(pending),
            "blocked": blocked,
            "scheduled": [job_summary(j, now) for j in later[:limit]],
            "running": running,
            "recent": recent,
            "workers": workers,
        }


def _deps_done(queue: Queue, job: Job, statuses: dict[str, JobStatus]) -> bool:
    """Whether every dependency of ``job`` is COMPLETED (statuses cached per snapshot)."""
    for dep in job.depends_on:
        status = statuses.get(dep)
        if status is None:
            try:
                status = statuses[dep] = queue.get_job(dep).status
            except KeyError:
                return False
        if status is not JobStatus.COMPLETED:
            return False
    return True
