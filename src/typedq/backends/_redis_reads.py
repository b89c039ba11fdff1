"""The Redis backend's reads and its worker registry, beside ``redis``.

``RedisReads`` holds what a ``RedisQueue`` does without a transition of a job: reads of
one job, of set sizes and counters the scripts keep, pages of an index (``list_jobs``,
``export_jobs``, by the ``list`` script), and the worker registry (``_redis_registry``).
``RedisQueue`` builds the state these methods use.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from typedq.backends import _redis_conn as conn
from typedq.backends import _redis_registry as registry
from typedq.backends._redis_keys import STATUSES, HashCodec, RedisSettings, queue_counts
from typedq.backends.base import WorkerInfo
from typedq.clock import Clock
from typedq.errors import JobNotFoundError
from typedq.job import Job, JobStatus

__all__ = ["RedisReads"]


def _num(value: float) -> str:
    """A time or number as exact text (Lua would round it to 14 digits)."""
    return repr(float(value))


class RedisReads:
    """Reads and the worker registry of one queue of a Redis prefix."""

    _settings: RedisSettings
    _base: str
    _name: str
    _clock: Clock
    _hashes: HashCodec
    _link: conn.Link

    @property
    def _r(self) -> Any:
        raise NotImplementedError  # ``RedisQueue._r``

    def _run(self, script: str, args: Sequence[Any], dlq: str | None = None) -> Any:
        raise NotImplementedError  # ``RedisQueue._run``

    # -- the worker registry ------------------------------------------------------------

    def register_worker(self, info: WorkerInfo) -> None:
        """Add or renew a worker's entry; see :meth:`Queue.register_worker`.

        Each heartbeat also checks that the server still holds its data (the epoch
        marker): a server flushed without a reconnect is noticed within a heartbeat.
        """
        self._link.check_epoch()
        registry.register_worker(self._r, self._run, self._settings, self._base, info)

    def unregister_worker(self, worker_id: str, *, final: WorkerInfo | None = None) -> None:
        """Remove a worker's entry, its figures added to the retired totals in the same
        transaction; see :meth:`Queue.unregister_worker`."""
        registry.unregister_worker(self._r, self._run, self._settings, self._base, worker_id, final=final)

    def retired_metrics(self) -> dict[str, Any]:
        """The summed figures of removed entries; see :meth:`Queue.retired_metrics`."""
        return registry.retired_metrics(self._r, self._settings, self._base)

    def workers(self) -> list[WorkerInfo]:
        """The registered workers, oldest first; see :meth:`Queue.workers`."""
        return registry.workers(self._r, self._settings, self._base)

    # -- reads --------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        """Return the job with this id; raise ``JobNotFoundError`` (a KeyError) if absent."""
        with conn.map_errors(self._settings):
            found = self._r.hgetall(f"{self._base}:j:{job_id}")
        if not found:
            raise JobNotFoundError(job_id, queue=self._name)
        return self._hashes.job(job_id, found)

    def _ready_and_next_due(self) -> tuple[int, float | None]:
        """Ready jobs now (the ready set and the due delayed jobs) and the next due time."""
        base = self._base
        with conn.map_errors(self._settings), self._r.pipeline(transaction=True) as pipe:
            pipe.zcard(f"{base}:ready")
            pipe.zcount(f"{base}:delayed", "-inf", _num(self._clock.now()))
            pipe.zrange(f"{base}:delayed", 0, 0, withscores=True)
            ready, due, head = pipe.execute()
        return int(ready) + int(due), (float(head[0][1]) if head else None)

    def ready_count(self) -> int:
        """How many jobs are ready to run now (set sizes, no scan)."""
        return self._ready_and_next_due()[0]

    def count_by_status(self) -> dict[JobStatus, int]:
        """Return how many jobs are in each status (the sizes of the status indexes, one
        round trip)."""
        with conn.map_errors(self._settings), self._r.pipeline(transaction=False) as pipe:
            queue_counts(pipe, self._base)
            return {status: int(n) for status, n in zip(STATUSES, pipe.execute(), strict=True)}

    def count_submitted(self) -> dict[str, int]:
        """Jobs ever added to this queue per job type (by enqueue, enqueue_many and
        import_jobs; never lowered by a purge, completion or delete): one hash read."""
        with conn.map_errors(self._settings):
            stored = self._r.hgetall(f"{self._base}:submitted")
        return {job_type.decode(): int(n) for job_type, n in stored.items()}

    def count_scheduled(self) -> int:
        """PENDING jobs due later: a count on the delayed set by due time; see
        :meth:`Queue.count_scheduled`."""
        with conn.map_errors(self._settings):
            return int(self._r.zcount(f"{self._base}:delayed", f"({_num(self._clock.now())}", "+inf"))

    def count_by_type(self, status: JobStatus = JobStatus.PENDING) -> dict[str, int]:
        """Return how many jobs of each type are in ``status`` (the status index, paged)."""
        return registry.count_by_type(self._r, self._settings, self._base, JobStatus(status).value)

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
        """Return up to ``limit`` jobs by arrival, oldest first (``newest``: newest first).

        ``after`` is a job id: the listing goes on after it, in the same order (keyset
        pagination). A status or a type pages its index; both page the status's index
        keeping the jobs of the type.

        Raises:
            InvalidJobError: a negative ``limit`` or ``offset``.
            JobNotFoundError: ``after`` names no job of the queue.
        """
        return registry.list_jobs(
            self._run, self._hashes, self._name,
            status=status, job_type=job_type, limit=limit, offset=offset, after=after, newest=newest,
        )

    def export_jobs(self) -> list[dict[str, Any]]:
        """Return every job as ``Job.to_dict()`` data, oldest first (read in pages of 1,000)."""
        return registry.export_jobs(self._run, self._hashes)
