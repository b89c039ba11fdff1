"""Dead letters and purges of the SQLite backend.

Dead letters are moves between a queue and its dead-letter queue:

A dead-letter queue of the same file is just more rows of the ``jobs`` table (its queue
name in ``queue``), so putting a dead job's copy there, dropping the oldest copies beyond
``dlq_max`` and taking a copy back for a retry are statements in the transaction of the
transition itself (``bury``, ``reclaim_expired``, ``retry``): all of it or none of it is
committed. A copy is made by ``INSERT ... SELECT`` from the dead row, so stored frames are
copied as they are, never decoded.

The number of dead letters a dead-letter queue dropped is kept in the ``counters`` table
(schema 7), one row per queue and counter.

A purge (:func:`purge`) deletes a batch of jobs that ended before a time, found through
the ``jobs_finished`` index (schema 7) oldest first, in one transaction.

Every function takes the connection of the caller's open ``BEGIN IMMEDIATE`` transaction.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from collections.abc import Collection
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Final

from typedq._validate import require_number
from typedq.backends import _sqlite_counts as counts
from typedq.backends import _sqlite_rows as rows
from typedq.backends._retention import check_purge
from typedq.backends._sqlite_db import Connections
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._sqlite_graph import QueueGraph
from typedq.backends._sqlite_schema import FINISHED_CONDITION, SETTLED_CONDITION
from typedq.backends._sqlite_sql import SQL
from typedq.clock import Clock
from typedq.errors import ConfigError, InvalidTransitionError, JobNotFoundError
from typedq.job import JobStatus

if TYPE_CHECKING:
    from typedq.backends.base import Queue

__all__ = ["COUNTER", "DROPPED", "SQLiteDeadLetters", "copy_dead", "purge", "restore_dead", "take_back"]

logger = logging.getLogger("typedq.backends.sqlite")

_Conn = sqlite3.Connection

#: The counter of dead letters a queue dropped (``counters.name``).
DROPPED: Final = "dead_letters_dropped"

# Every column a copy keeps: the job's own (the row's place in its queue is rebuilt).
_COPIED: Final = ", ".join(
    c for c in rows.INSERT_COLUMNS.split(", ") if c not in ("queue", "blocked_by", "delayed", "has_waiters")
)
# The copy's origin is the queue the job died in: where a replay puts it back (params:
# the dead-letter queue, the dead row's seq).
_COPY: Final = (
    f"INSERT INTO jobs (queue, {_COPIED}) SELECT ?, {_COPIED.replace('origin', 'queue')} FROM jobs"
    " WHERE seq = ? RETURNING job_type, status"
)
_RESTORE: Final = (
    f"INSERT INTO jobs (queue, {_COPIED}) SELECT ?, {_COPIED} FROM jobs"
    " WHERE queue = ? AND job_id = ? AND status = 'DEAD' RETURNING job_type"
)
#: The dead letters beyond the newest ``dlq_max`` (params: queue, dlq_max), oldest last:
#: a walk of the jobs_settled index in seq order, no sort.
_BEYOND: Final = (
    "SELECT seq, job_id, origin FROM jobs INDEXED BY jobs_settled WHERE queue = ? AND status = 'DEAD'"
    f" AND {SETTLED_CONDITION} ORDER BY seq DESC LIMIT -1 OFFSET ?"
)
_STATE: Final = "SELECT status FROM jobs WHERE queue = ? AND job_id = ?"
_COUNT_UP: Final = (
    "INSERT INTO counters (queue, name, value) VALUES (?, ?, ?)"
    " ON CONFLICT (queue, name) DO UPDATE SET value = value + excluded.value"
)
#: A counter of a queue (params: queue, name); no row is 0.
COUNTER: Final = "SELECT value FROM counters WHERE queue = ? AND name = ?"


def _forget(
    conn: _Conn, codec: rows.RowCodec, queue: str, job_id: str, now: float, *, only_dead: bool = False
) -> bool:
    """Delete ``job_id`` from ``queue`` (as ``delete`` does) if there; True if it went."""
    found = conn.execute(_STATE, (queue, job_id)).fetchone()
    if found is None or (only_dead and found[0] != "DEAD"):
        return False
    QueueGraph(queue, codec).delete(conn, job_id=job_id, now=now)
    return True


def copy_dead(
    conn: _Conn,
    codec: rows.RowCodec,
    *,
    seq: int,
    job_id: str,
    dlq: str,
    dlq_max: int | None,
    now: float,
) -> list[str]:
    """Copy the dead row ``seq`` into ``dlq`` (its ``queue`` field naming the queue it
    died in), replacing an older copy of ``job_id``, then drop the oldest dead letters
    beyond ``dlq_max``, each with its own DEAD row in the queue it names. Returns the
    ids dropped."""
    _forget(conn, codec, dlq, job_id, now)
    for job_type, status in conn.execute(_COPY, (dlq, seq)).fetchall():
        counts.bump_one(conn, dlq, job_type, None, status)
    if dlq_max is None:
        return []
    dropped = []
    for _, letter, origin in conn.execute(_BEYOND, (dlq, dlq_max)).fetchall():
        _forget(conn, codec, dlq, letter, now)
        if origin != dlq:
            _forget(conn, codec, origin, letter, now, only_dead=True)
        dropped.append(letter)
    if dropped:
        conn.execute(_COUNT_UP, (dlq, DROPPED, len(dropped)))
    return dropped


def restore_dead(conn: _Conn, *, queue: str, job_id: str, dlq: str) -> None:
    """Before a retry from ``dlq``: when ``queue`` no longer holds the job, put its dead
    letter back there as a DEAD row.

    Raises:
        JobNotFoundError: neither queue holds the job.
        InvalidTransitionError: ``dlq`` holds it, but not DEAD.
    """
    if conn.execute(_STATE, (queue, job_id)).fetchone() is not None:
        return
    restored = conn.execute(_RESTORE, (queue, dlq, job_id)).fetchone()
    if restored is not None:
        counts.bump_one(conn, queue, restored[0], None, "DEAD")
        return
    found = conn.execute(_STATE, (dlq, job_id)).fetchone()
    if found is None:
        raise JobNotFoundError(job_id, queue=queue)
    raise InvalidTransitionError("status", found[0], "DEAD (a dead letter)")


def take_back(conn: _Conn, codec: rows.RowCodec, *, job_id: str, dlq: str, now: float) -> None:
    """A retried job's dead letter leaves ``dlq``."""
    _forget(conn, codec, dlq, job_id, now)


#: The oldest jobs of a status that ended before a time (params: queue, status, time,
#: limit): a walk of jobs_finished in finished_at order.
_EXPIRED: Final = (
    "SELECT seq, job_id, has_waiters, job_type FROM jobs INDEXED BY jobs_finished"
    " WHERE queue = ? AND status = ?"
    f" AND {FINISHED_CONDITION} AND finished_at < ? ORDER BY finished_at LIMIT ?"
)


def purge(
    conn: _Conn, codec: rows.RowCodec, *, queue: str, statuses: tuple[str, ...], older_than: float,
    limit: int, now: float,
) -> int:
    """Delete up to ``limit`` jobs of ``queue`` in ``statuses`` that finished before
    ``older_than``, oldest first; return how many. A job that ended has no dependent
    waiting on it; one flagged as having had some has its edges dropped as ``delete``
    does."""
    graph = QueueGraph(queue, codec)
    seqs: list[int] = []
    gone: counts.Deltas = Counter()
    for status in statuses:
        found = conn.execute(_EXPIRED, (queue, status, older_than, limit - len(seqs))).fetchall()
        for seq, job_id, waiters, job_type in found:
            if waiters:
                graph.fail_dependents(conn, job_id, "CANCELLED", now)
            seqs.append(seq)
            gone[job_type, status] -= 1
        if len(seqs) >= limit:
            break
    if not seqs:
        return 0
    conn.executemany(SQL.delete, [(seq,) for seq in seqs])
    counts.bump(conn, queue, gone)
    top = max(seqs)
    if top > conn.execute(SQL.top_seq).fetchone()[0]:
        conn.execute(SQL.drop_high_water)
        conn.execute(SQL.keep_high_water, (top,))
    return len(seqs)


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (the same path, or links to one file)."""
    if a == b:
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


class SQLiteDeadLetters:
    """What a ``SQLiteQueue`` needs to know of its dead-letter queue (that it is a queue of
    the same file, how many dead letters it dropped), and its purge."""

    _db: Connections
    _name: str
    _path: Path
    _rows: rows.RowCodec
    _clock: Clock

    def purge(self, *, statuses: Collection[JobStatus], older_than: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` jobs that ended before ``older_than``, in one transaction
        (``jobs_finished``, oldest first); see :meth:`Queue.purge`."""
        wanted = tuple(status.value for status in check_purge(statuses, limit))
        if not wanted or limit == 0:
            return 0
        now = self._clock.now()
        return self._db.write(
            partial(
                purge, codec=self._rows, queue=self._name, statuses=wanted,
                older_than=older_than, limit=limit, now=now,
            )
        )

    def _copy_dead(
        self, conn: _Conn, seq: int, job_id: str, target: tuple[str, int | None], now: float
    ) -> list[str]:
        """:func:`copy_dead` into ``target`` (the dead-letter queue and its ``dlq_max``) in
        the caller's transaction; the ids dropped."""
        dlq, dlq_max = target
        return copy_dead(conn, self._rows, seq=seq, job_id=job_id, dlq=dlq, dlq_max=dlq_max, now=now)

    def _dead_letter_name(self, dead_letter: Queue | None, dlq_max: int | None = None) -> str | None:
        """The name of a dead-letter queue of this file, or None when none is given.

        Raises:
            ConfigError: as :meth:`check_dead_letter`; ``dlq_max`` not None or an int >= 1.
        """
        require_number("dlq_max", dlq_max, minimum=1, integer=True, allow_none=True)
        if dead_letter is None:
            return None
        if not isinstance(dead_letter, SQLiteDeadLetters) or not _same_file(dead_letter._path, self._path):
            raise ConfigError(
                "dead_letter", repr(dead_letter),
                f"a SQLiteQueue of the same file as queue {self._name!r} ({self._path}): a dead job "
                "and its dead letter change in one transaction only within one file",
            )
        if dead_letter.name == self._name:
            raise ConfigError("dead_letter", repr(dead_letter), "another queue than the one the job is in")
        return dead_letter.name

    def _log_dropped(self, dlq: str | None, dlq_max: int | None, dropped: list[str]) -> None:
        if dropped:
            logger.warning(
                "dead-letter queue %r holds dlq_max=%s dead letters: dropped the oldest %d (%s)",
                dlq, dlq_max, len(dropped), ", ".join(dropped[:10]),
            )

    def check_dead_letter(self, dead_letter: Queue) -> None:
        """Refuse a dead-letter queue of another file; see :meth:`Queue.check_dead_letter`."""
        self._dead_letter_name(dead_letter)

    def count_dropped(self) -> int:
        """Dead letters this queue dropped to stay within ``dlq_max`` (the ``counters`` table);
        see :meth:`Queue.count_dropped`."""
        found = self._db.read(COUNTER, (self._name, DROPPED))
        return int(found[0][0]) if found else 0
