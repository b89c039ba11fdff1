"""The SQLite backend's reads, its worker registry and its waiting, beside ``sqlite``.

``SQLiteReads`` holds what a ``SQLiteQueue`` does without a write transition of a job:
single-statement reads (each its own consistent snapshot), the worker registry's rows,
and waiting for work (see ``_sqlite_wait``). ``SQLiteQueue`` builds the state these
methods use.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection
from functools import partial
from pathlib import Path
from typing import Any, Final

from typedq.backends import _sqlite_counts as counts
from typedq.backends import _sqlite_rows as rows
from typedq.backends._control import current_progress, decode_logs, decode_progress, export_record
from typedq.backends._sqlite_control import EXPORT, GET_WITH_PROGRESS
from typedq.backends._sqlite_coord import SCHEDULE_QUEUES
from typedq.backends._sqlite_db import Connections
from typedq.backends._sqlite_driver import DRIVER, sqlite3
from typedq.backends._sqlite_registry import fold_metrics, fold_removed, retired_metrics
from typedq.backends._sqlite_schema import WAL_RESET_BUG
from typedq.backends._sqlite_sql import SQL
from typedq.backends._sqlite_wait import ReadySignal
from typedq.backends.base import WORKER_RETENTION_S, WorkerInfo
from typedq.clock import Clock
from typedq.errors import InvalidJobError, JobNotFoundError
from typedq.job import Job, JobStatus

__all__ = ["SQLiteReads"]

_Conn = sqlite3.Connection
#: The job statuses by their stored text (job_counts also holds pseudo-statuses).
_STATUSES: Final = {status.value: status for status in JobStatus}


class SQLiteReads:
    """Reads, the worker registry and waiting of one queue of a SQLite file."""

    _db: Connections
    _rows: rows.RowCodec
    _name: str
    _clock: Clock
    _path: Path
    _version: tuple[int, ...]
    _durability: str
    _signal: ReadySignal

    @property
    def size(self) -> int:
        """How many jobs the queue holds, in every state."""
        return sum(self.count_by_status().values())

    def diagnostics(self) -> dict[str, Any]:
        """What an operator needs to judge this queue's file; read from a live connection.

        Returns:
            ``sqlite_version``, ``sqlite_driver`` (``"sqlite3"`` or ``"pysqlite3"``),
            ``wal_reset_bug`` (whether that version has it), ``path``,
            ``queue``, ``journal_mode``, ``synchronous`` (1 NORMAL, 2 FULL),
            ``durability``, ``busy_timeout_ms``, ``wal_autocheckpoint``, ``schema_version``,
            ``busy_retries`` (transactions this object retried after SQLITE_BUSY),
            ``writer_lock_timeouts`` (transactions that went on without the writer lock
            after waiting the busy timeout for it).
        """
        low, high = WAL_RESET_BUG
        return {
            "backend": "sqlite",
            "sqlite_version": sqlite3.sqlite_version,
            "sqlite_driver": DRIVER,
            "wal_reset_bug": low <= self._version <= high,
            "path": str(self._path),
            "queue": self._name,
            "durability": self._durability,
            **self._db.settings(),
        }

    def queue_names(self) -> list[str]:
        """The name of every queue that has jobs or schedules in this file (not only this
        one), sorted.

        Not part of the ``Queue`` protocol: it describes the file, not the queue. The
        manager's dead-letter queue is a queue of the file like any other, so its
        reserved name (``"dead-letter"``) is listed whenever it holds jobs. One read of
        the ``(queue, job_id)`` index, never of the table.
        """
        names = {str(row[0]) for row in self._db.read(SQL.queue_names)}
        names.update(str(row[0]) for row in self._db.read(SCHEDULE_QUEUES))
        return sorted(names)

    # -- reads --------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        """Return the job with this id; raise ``JobNotFoundError`` (a KeyError) if absent."""
        found = self._db.read(GET_WITH_PROGRESS, (self._name, job_id))
        if not found:
            raise JobNotFoundError(job_id, queue=self._name)
        row = found[0]
        job = self._rows.job(row)
        job.progress = current_progress(decode_progress(row[-1]), job.attempt)
        return job

    def ready_count(self) -> int:
        """How many jobs are ready to run now."""
        return int(self._db.read(SQL.ready_count, (self._name, self._clock.now()))[0][0])

    def count_scheduled(self) -> int:
        """PENDING jobs due later; see :meth:`Queue.count_scheduled`."""
        return int(self._db.read(counts.SCHEDULED, (self._name, self._clock.now()))[0][0])

    def count_by_status(self) -> dict[JobStatus, int]:
        """Return how many jobs are in each status (one consistent snapshot of the
        ``job_counts`` rows: a read of a few rows however many jobs there are)."""
        found = dict.fromkeys(JobStatus, 0)
        for status, count in self._db.read(counts.BY_STATUS, (self._name,)):
            if status in _STATUSES:
                found[_STATUSES[status]] = int(count)
        return found

    def count_submitted(self) -> dict[str, int]:
        """Jobs ever submitted to the queue, per job type; see :meth:`Queue.count_submitted`."""
        return {
            job_type: int(n) for job_type, n in self._db.read(counts.BY_TYPE, (self._name, counts.SUBMITTED))
        }

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
        filtered; see :meth:`Queue.list_jobs`. ``after`` is a keyset cursor: the rows
        after that job's seq, found by the seq (rowid) or the jobs_settled index, never
        by skipping rows."""
        if limit < 0 or offset < 0:
            raise InvalidJobError("limit", (limit, offset), "limit >= 0 and offset >= 0")
        cursor: int | None = None
        if after is not None:
            found = self._db.read(SQL.seq_of, (self._name, after))
            if not found:
                raise JobNotFoundError(after, queue=self._name)
            cursor = int(found[0][0])
        sql, params = SQL.listing(
            self._name, None if status is None else JobStatus(status).value, job_type,
            after=cursor, newest=newest,
        )
        return [self._rows.job(row) for row in self._db.read(sql, (*params, limit, offset))]

    def count_by_type(self, status: JobStatus = JobStatus.PENDING) -> dict[str, int]:
        """Return how many jobs of each type are in ``status`` (from ``job_counts``)."""
        found = self._db.read(counts.BY_TYPE, (self._name, JobStatus(status).value))
        return {job_type: int(n) for job_type, n in found}

    def export_jobs(self) -> list[dict[str, Any]]:
        """Return every job as ``Job.to_dict()`` data, in insertion order (one snapshot)."""
        out = []
        for row in self._db.read(EXPORT, (self._name,)):
            job = self._rows.job(row)
            job.progress = current_progress(decode_progress(row[-2]), job.attempt)
            out.append(export_record(job, decode_logs(row[-1])))
        return out

    # -- the worker registry ------------------------------------------------------------

    def register_worker(self, info: WorkerInfo) -> None:
        """Add or renew a worker's row; see :meth:`Queue.register_worker`."""
        entry = json.dumps(info.to_dict())

        def tx(conn: _Conn) -> None:
            conn.execute(SQL.register_worker, (self._name, info.worker_id, info.last_seen, entry))
            forgotten = conn.execute(SQL.forget_workers, (self._name, info.last_seen - WORKER_RETENTION_S))
            fold_removed(conn, self._name, forgotten.fetchall())

        self._db.write(tx)

    def unregister_worker(self, worker_id: str, *, final: WorkerInfo | None = None) -> None:
        """Remove a worker's row, its figures added to the retired totals in the same
        transaction; see :meth:`Queue.unregister_worker`."""

        def tx(conn: _Conn) -> None:
            removed = conn.execute(SQL.unregister_worker, (self._name, worker_id)).fetchall()
            if removed and final is not None:
                fold_metrics(conn, self._name, final.metrics)
            elif removed:
                fold_removed(conn, self._name, removed)

        self._db.write(tx)

    def retired_metrics(self) -> dict[str, Any]:
        """The summed figures of removed worker rows; see :meth:`Queue.retired_metrics`."""
        return retired_metrics(self._db, self._name)

    def workers(self) -> list[WorkerInfo]:
        """The registered workers, oldest first; see :meth:`Queue.workers`."""
        rows_found = self._db.read(SQL.workers, (self._name,))
        found = [WorkerInfo.from_dict(json.loads(info)) for (info,) in rows_found]
        return sorted(found, key=lambda w: (w.started_at, w.worker_id))

    # -- waiting ------------------------------------------------------------------------

    def _expired(
        self, now: float, mono_now: float, limit: int, owner_alive: Callable[[str | None], bool | None]
    ) -> list[tuple[int, str, int, float, float | None, bool]]:
        """Up to ``limit`` lapsed leases to rescue, as
        ``(seq, job_id, attempt, lease_until, lease_mono, in_batch)``.

        A lease has lapsed when its wall-clock deadline passed, unless its owner is a
        live process of this host (``owner_alive``, given by ``sqlite``, where tests
        replace it) that renewed it by the host's monotonic clock (``lease_mono``); and
        when its owner is of this host and its monotonic deadline passed, whatever the
        wall clock says (a wall clock stepped back would otherwise keep a dead worker's
        job for as long as it stepped). An owner of another host, or an id not made by
        ``new_worker_id``, is judged by the wall clock alone: a monotonic reading is only
        comparable on the host that took it. ``in_batch`` tells a job whose claim still
        holds other RUNNING jobs.
        """
        chosen: list[tuple[int, str, int, float, float | None, bool]] = []
        alive: dict[str | None, bool | None] = {}
        held: dict[int, int] | None = None

        def choose(rows: list[tuple[Any, ...]], by_wall: bool) -> None:
            nonlocal held
            for seq, job_id, attempt, worker, lease_until, lease_mono, group in rows:
                if len(chosen) >= limit:
                    return
                if worker not in alive:
                    alive[worker] = owner_alive(worker)
                renewed = lease_mono is None or lease_mono >= mono_now
                spared = alive[worker] is True and renewed if by_wall else alive[worker] is None
                if spared:
                    continue
                if held is None:  # how many jobs each batch holds: was this one of a batch?
                    held = dict(self._db.read(SQL.claims_held, (self._name,)))
                in_batch = group is not None and held.get(group, 1) > 1
                chosen.append((seq, job_id, attempt, lease_until, lease_mono, in_batch))

        after: tuple[float, int] = (float("-inf"), -1)
        while len(chosen) < limit:
            page = self._db.read(SQL.expired, (self._name, now, *after, limit))
            if page:
                after = (page[-1][4], page[-1][0])
            choose(page, by_wall=True)
            if len(page) < limit:
                break
        if len(chosen) < limit:
            choose(self._db.read(SQL.lapsed, (self._name, now, mono_now)), by_wall=False)
        return chosen

    def _has_ready(self, job_types: tuple[str, ...] | None = None) -> bool:
        if job_types is None:
            return bool(self._db.read(SQL.has_ready, (self._name, self._clock.now()))[0][0])
        if not job_types:
            return False
        sql = counts.ready_of(len(job_types))
        return bool(self._db.read(sql, (self._name, self._clock.now(), *job_types))[0][0])

    def _next_due(self) -> float | None:
        due = self._db.read(SQL.next_due, (self._name,))
        return float(due[0][0]) if due else None

    def _data_version(self) -> int:
        # Polled every few ms while a worker waits (_sqlite_wait): the moment to shrink a
        # WAL file a long read left large, on a queue where no commit will (tidy_wal).
        self._db.tidy_wal()
        return int(self._db.read(SQL.data_version)[0][0])

    def wait_ready(self, timeout_s: float, job_types: Collection[str] | None = None) -> bool:
        """Block until a job (of ``job_types``, when given) may be ready, :meth:`interrupt`,
        or ``timeout_s``; see :meth:`Queue.wait_ready`.

        The wait ends at the earliest of ``timeout_s`` and the next delayed job's due
        time; at once when a queue object of this process on the same file adds or frees
        a job, or :meth:`interrupt` is called (which wakes those objects' waiters too:
        they share one signal); and within about 10 ms when another process commits a
        job that is ready (see ``_sqlite_wait``).
        """
        types = None if job_types is None else tuple(sorted(set(job_types)))
        return self._signal.wait(
            timeout_s,
            has_ready=self._has_ready if types is None else partial(self._has_ready, types),
            next_due=self._next_due,
            now=self._clock.now,
            version=self._data_version,
        )

    def interrupt(self) -> None:
        """Wake every thread blocked in :meth:`wait_ready` (of every queue object of this
        process on the file: they share one signal; the others find nothing and wait again)."""
        self._signal.interrupt()
