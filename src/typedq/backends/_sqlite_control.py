"""Job control of the SQLite backend: lease renewals that report a cancel request,
progress, job logs and reordering (see ``_control``), each one transaction.

Progress and logs live in the job's row (``progress`` and ``logs`` columns, JSON text,
schema 8), so they go with it when it is deleted or purged.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from typedq.backends import _control as control
from typedq.backends import _sqlite_rows as rows
from typedq.backends._sqlite_db import Connections
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._sqlite_graph import QueueGraph
from typedq.backends._sqlite_sql import SQL
from typedq.backends.base import LeaseRenewal
from typedq.clock import Clock
from typedq.errors import JobNotFoundError
from typedq.job import Job, JobLogLine, JobProgress, JobStatus

__all__ = ["EXPORT", "GET_WITH_PROGRESS", "SQLiteControl", "restore_control"]

_Conn = sqlite3.Connection
_LEASED: Final = "WHERE queue = ? AND job_id = ? AND status = 'RUNNING' AND attempt = ?"
_RENEW: Final = f"UPDATE jobs SET lease_until = ?, lease_mono = ? {_LEASED} RETURNING cancel_requested"
_PROGRESS: Final = f"UPDATE jobs SET progress = ? {_LEASED} RETURNING seq"
_LOGS_HELD: Final = f"SELECT seq, logs FROM jobs {_LEASED}"
_SET_LOGS: Final = "UPDATE jobs SET logs = ? WHERE seq = ?"
_GET_LOGS: Final = "SELECT logs FROM jobs WHERE queue = ? AND job_id = ?"
_PLACE: Final = (
    "SELECT seq, status, priority, scheduled_at, created_at,"
    " status = 'PENDING' AND blocked_by = 0 AND delayed = 0 AND (scheduled_at IS NULL OR scheduled_at <= ?)"
    " FROM jobs WHERE queue = ? AND job_id = ?"
)
# The ready jobs of one priority, but one (params: queue, now, priority, seq).
_LEVEL: Final = (
    "SELECT scheduled_at, created_at FROM jobs WHERE queue = ? AND status = 'PENDING' AND blocked_by = 0"
    " AND delayed = 0 AND (scheduled_at IS NULL OR scheduled_at <= ?) AND priority = ? AND seq != ?"
)
_FIRST: Final = f"{_LEVEL} ORDER BY scheduled_at, created_at, seq LIMIT 1"
_LAST: Final = f"{_LEVEL} ORDER BY scheduled_at DESC, created_at DESC, seq DESC LIMIT 1"
# NULL (no schedule) sorts before every time: -1e308 is below every allowed epoch.
_PREVIOUS: Final = (
    f"{_LEVEL} AND (ifnull(scheduled_at, -1e308), created_at, seq) < (ifnull(?, -1e308), ?, ?)"
    " ORDER BY scheduled_at DESC, created_at DESC, seq DESC LIMIT 1"
)
_MOVE: Final = "UPDATE jobs SET scheduled_at = ?, created_at = ? WHERE seq = ?"
#: A job's row with its progress last (params: queue, job id).
GET_WITH_PROGRESS: Final = f"SELECT {rows.SELECT_COLUMNS}, progress FROM jobs WHERE queue = ? AND job_id = ?"
#: ``export_jobs``: every row of a queue with its progress and logs last (param: queue).
EXPORT: Final = (
    f"SELECT {rows.SELECT_COLUMNS}, progress, logs FROM jobs NOT INDEXED WHERE queue = ? ORDER BY seq"
)
_RESTORE: Final = "UPDATE jobs SET progress = ?, logs = ? WHERE queue = ? AND job_id = ?"


def restore_control(
    conn: _Conn, queue: str, jobs: Sequence[Job], logs: dict[str, list[JobLogLine]]
) -> None:
    """Store the progress and logs imported jobs came with (in the import's transaction)."""
    conn.executemany(_RESTORE, [
        (
            None if job.progress is None else control.encode_progress(job.progress),
            control.encode_logs(logs[job.job_id]) if job.job_id in logs else None,
            queue, job.job_id,
        )
        for job in jobs if job.progress is not None or job.job_id in logs
    ])


class SQLiteControl:
    """The job-control transitions of ``SQLiteQueue``."""

    _db: Connections
    _rows: rows.RowCodec
    _graph: QueueGraph
    _name: str
    _clock: Clock

    def renew_lease(self, job_id: str, *, token: int, lease_s: float) -> LeaseRenewal:
        """Push the lease deadline and report a cancel request; see :meth:`Queue.renew_lease`."""
        clock = self._clock
        until = clock.now() + lease_s
        params = (until, clock.monotonic() + lease_s, self._name, job_id, token)

        def tx(conn: _Conn) -> bool:
            got = conn.execute(_RENEW, params).fetchone()
            if got is None:
                self._graph.refuse_lease(conn, job_id, token)
            return bool(got[0])

        return LeaseRenewal(until, self._db.write(tx))

    def set_progress(self, job_id: str, *, token: int, progress: JobProgress) -> None:
        """Store a running job's progress; see :meth:`Queue.set_progress`."""
        params = (control.encode_progress(control.stamped(progress, token)), self._name, job_id, token)

        def tx(conn: _Conn) -> None:
            if conn.execute(_PROGRESS, params).fetchone() is None:
                self._graph.refuse_lease(conn, job_id, token)

        self._db.write(tx)

    def append_logs(self, job_id: str, *, token: int, lines: Sequence[JobLogLine]) -> None:
        """Add lines to a running job's log; see :meth:`Queue.append_logs`."""

        def tx(conn: _Conn) -> None:
            got = conn.execute(_LOGS_HELD, (self._name, job_id, token)).fetchone()
            if got is None:
                self._graph.refuse_lease(conn, job_id, token)
            kept = control.trimmed_logs(control.decode_logs(got[1]), lines)
            conn.execute(_SET_LOGS, (control.encode_logs(kept), got[0]))

        self._db.write(tx)

    def get_logs(self, job_id: str) -> list[JobLogLine]:
        """A job's log lines, oldest first; see :meth:`Queue.get_logs`."""
        found = self._db.read(_GET_LOGS, (self._name, job_id))
        if not found:
            raise JobNotFoundError(job_id, queue=self._name)
        return control.decode_logs(found[0][0])

    def reorder(self, job_id: str, *, before: str | None = None, position: str | None = None) -> Job:
        """Move a ready job inside its priority level, in one transaction; see
        :meth:`Queue.reorder`."""
        control.check_reorder(job_id, before, position)
        name = self._name
        now = self._clock.now()

        def place(conn: _Conn, the_id: str, field: str) -> Sequence[Any]:
            found = conn.execute(_PLACE, (now, name, the_id)).fetchone()
            if found is None:
                raise JobNotFoundError(the_id, queue=name)
            if not found[5]:
                raise control.not_ready(the_id, JobStatus(found[1]), field)
            return found  # type: ignore[no-any-return]  # one row

        def tx(conn: _Conn) -> Sequence[Any]:
            self._graph.promote(conn, now)
            seq, _, priority, sched, created, _ = place(conn, job_id, "job_id")
            job = Job(
                job_id=job_id, job_type="reorder", priority=priority, scheduled_at=sched, created_at=created
            )
            level = (name, now, priority, seq)
            anchor: control.OrderKey | None = None
            previous: control.OrderKey | None = None
            if before is not None:
                other = place(conn, before, "before")
                if other[2] != priority:
                    raise control.other_level(before, job)
                anchor = (other[3], other[4])
                prev = conn.execute(_PREVIOUS, (*level, other[3], other[4], other[0])).fetchone()
                previous = None if prev is None else (prev[0], prev[1])
            else:
                edge = conn.execute(_FIRST if position == "front" else _LAST, level).fetchone()
                anchor = None if edge is None else (edge[0], edge[1])
            key = control.new_order_key(
                job, before=before, position=position, anchor=anchor, previous=previous
            )
            if key is not None:
                conn.execute(_MOVE, (key[0], key[1], seq))
            return conn.execute(SQL.get, (name, job_id)).fetchone()  # type: ignore[no-any-return]  # one row

        return self._rows.job(self._db.write(tx))
