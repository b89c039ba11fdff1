"""Private: the SQLite backend's unique keys (table ``unique_keys``, schema 9).

Called inside the enqueue transaction (``BEGIN IMMEDIATE``), after the jobs' rows are
written: a key is judged and taken in the same transaction as the job that takes it, so
two writers (threads or processes) of one key can never both win. See ``_unique`` for
when a key is held.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._unique import UniqueSpec, held, parse_states
from typedq.errors import DuplicateJobError

__all__ = ["take_unique_keys"]

_HOLDER: Final = """SELECT u.job_id, u.until, u.states, j.status FROM unique_keys AS u
    LEFT JOIN jobs AS j ON j.queue = u.queue AND j.job_id = u.job_id
    WHERE u.queue = ? AND u.key = ?"""
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
