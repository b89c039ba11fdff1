"""Private: the SQLite backend's unique keys (table ``unique_keys``, schema 9).

Called inside the enqueue transaction (``BEGIN IMMEDIATE``), after the jobs' rows are
written: a key is judged and taken in the same transaction as the job that takes it, so
two writers (threads or processes) of one key can never both win. See ``_unique`` for
when a key is held. A sweep walks the table in key order (the primary key), from the last
key the previous sweep examined, and deletes in one write transaction the entries it
judges free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from typedq.backends._sqlite_db import Connections
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._unique import UniqueSpec, UniqueSweep, check_sweep, held, parse_states
from typedq.clock import Clock
from typedq.errors import DuplicateJobError

__all__ = ["SQLiteUniqueKeys", "take_unique_keys"]

_HOLDER: Final = """SELECT u.job_id, u.until, u.states, j.status FROM unique_keys AS u
    LEFT JOIN jobs AS j ON j.queue = u.queue AND j.job_id = u.job_id
    WHERE u.queue = ? AND u.key = ?"""
#: The next entries from a key on, with their holders' statuses (params: queue, key, limit).
_FROM: Final = """SELECT u.key, u.job_id, u.until, u.states, j.status FROM unique_keys AS u
    LEFT JOIN jobs AS j ON j.queue = u.queue AND j.job_id = u.job_id
    WHERE u.queue = ? AND u.key > ? ORDER BY u.key LIMIT ?"""
_DROP: Final = "DELETE FROM unique_keys WHERE queue = ? AND key = ?"
_TAKE: Final = "INSERT OR REPLACE INTO unique_keys (queue, key, job_id, until, states) VALUES (?, ?, ?, ?, ?)"


def take_unique_keys(
    conn: sqlite3.Connection, queue: str, specs: Sequence[tuple[str, UniqueSpec]], now: float
) -> None:
    """Take each job's key, in order, or refuse the first whose key is held.

    Raises:
        DuplicateJobError: a key is held by another job of the queue, or by a job earlier
            in ``specs``; the caller's transaction is rolled back.
    """
    taken: dict[str, str] = {}
    for job_id, spec in specs:
        holder = taken.get(spec.key)
        if holder is None:
            row = conn.execute(_HOLDER, (queue, spec.key)).fetchone()
            if row is not None and row[0] != job_id and held(row[3], row[1], parse_states(row[2]), now):
                holder = row[0]
        if holder is not None:
            raise DuplicateJobError(job_id, queue=queue, unique_key=spec.key, existing_id=holder)
        taken[spec.key] = job_id
        conn.execute(_TAKE, (queue, spec.key, job_id, spec.until(now), spec.states_text))


def sweep_unique_keys(
    conn: sqlite3.Connection, queue: str, cursor: str, limit: int, now: float
) -> UniqueSweep:
    """Delete the entries not held among the ``limit`` after key ``cursor``, in the
    caller's write transaction."""
    found = conn.execute(_FROM, (queue, cursor, limit)).fetchall()
    stale = [
        (queue, key) for key, _, until, states, status in found
        if not held(status, until, parse_states(states), now)
    ]
    conn.executemany(_DROP, stale)
    return UniqueSweep(len(stale), "" if len(found) < limit else found[-1][0])


class SQLiteUniqueKeys:
    """The sweep of a ``SQLiteQueue``'s unique keys (a mixin)."""

    _db: Connections
    _name: str
    _clock: Clock

    def sweep_unique_keys(self, *, cursor: str = "", limit: int = 1000) -> UniqueSweep:
        """Remove the entries not held among the ``limit`` keys after ``cursor``, in one
        transaction; see :meth:`Queue.sweep_unique_keys`."""
        check_sweep(cursor, limit)
        now = self._clock.now()
        return self._db.write(lambda conn: sweep_unique_keys(conn, self._name, cursor, limit, now))
