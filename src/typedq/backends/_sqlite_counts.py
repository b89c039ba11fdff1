"""The SQLite backend's job counts: table ``job_counts`` (schema 11), kept exact by every
transition, so counting jobs costs a read of a few rows instead of a scan of the queue.

One row per (queue, status, job type) holds how many of the queue's jobs of that type are
in that status. Two kinds of pseudo-status beside the job statuses:

* :data:`SUBMITTED` (``submitted``): how many jobs of that type were ever submitted to
  the queue (``enqueue``, ``enqueue_many``, ``import_jobs``); it only grows.
* :func:`ready` (``ready:<priority>``): how many jobs of that type and priority are in
  the ``jobs_ready`` index (PENDING, unblocked, not delayed), so the ready jobs per
  priority level are read without walking the index (``count_by_priority`` adds the
  delayed jobs already due, from ``jobs_delayed``).

Rows are never deleted (a count may be 0). A claim policy keeps its state in rows of its
own here (statuses ``fair`` and ``rate``, see ``_sqlite_policy``): a claim writes this
table's page anyway, so its state costs the commit no page more. Readers of counts name
the statuses they want, or drop those that are not job statuses.

**Single enqueues are counted late.** Writing a count row costs a one-job ``enqueue`` one
more page in its commit (measured: 0.83x a raw insert loop fell to 0.57x), so ``enqueue``
writes only its job. The counts hold every job up to a *fold mark*, the largest ``seq``
counted (the row ``('', '', 'folded')``); the jobs above it are counted by their current
state when they are folded in:

* every other write transaction of the file first folds the jobs above the mark (see
  :func:`fold`), so a transition only ever moves counted jobs, and after it raises the
  mark past the jobs it added itself, which it counted (:func:`mark`);
* an ``enqueue`` folds every :data:`FOLD_EVERY` enqueues of its queue object, so the
  jobs above the mark stay few even with no other writer;
* a reader adds the jobs above the mark, counted in the same statement (one snapshot):
  a short range of ``seq``, never more than a few thousand rows.

The counts are written from Python, never by SQL triggers: a trigger runs once per row
(measured: an ``enqueue_many`` lost about 70 % of its rate), while a transition here
adds up its moves per (type, status) and writes them with one multi-row upsert, in its
own transaction, so a count can never disagree with the rows. Every
statement that adds, moves or deletes job rows therefore returns (or its caller knows)
each row's job type and statuses, and passes them to :func:`bump`.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Final, TypeAlias

from typedq.backends._sqlite_driver import sqlite3

__all__ = [
    "BY_STATUS",
    "BY_TYPE",
    "DELAYED",
    "FAIR",
    "FOLD_EVERY",
    "MARK_ALL",
    "RATE",
    "READY_BY_PRIORITY",
    "RUNNING_BY_TYPE",
    "SCHEDULED",
    "SUBMITTED",
    "Deltas",
    "StateRow",
    "add_rows",
    "bump",
    "bump_one",
    "fold",
    "mark",
    "moved",
    "ready",
    "ready_of",
]

#: The pseudo-status of the jobs ever submitted to a queue, per job type.
SUBMITTED: Final = "submitted"
#: The pseudo-status of the PENDING jobs marked delayed (the rows of ``jobs_delayed``).
DELAYED: Final = "delayed"

#: A change of counts: (job type, status) -> how many jobs more (or fewer).
Deltas = Counter[tuple[str, str]]

#: How many single enqueues of a queue object are left unfolded before one folds.
FOLD_EVERY: Final = 1000

#: The fold mark: the largest seq whose job is counted in ``job_counts``.
_MARK: Final = (
    "(SELECT coalesce((SELECT n FROM job_counts WHERE queue = '' AND status = 'folded'"
    " AND job_type = ''), 0))"
)


def _unfolded(queue: str) -> str:
    """The (queue, job type, status, n) count rows of the jobs above the fold mark whose
    ``queue`` matches the SQL condition ``queue``: each job's status, one submission,
    and its priority's ready row when it is in the ready index."""
    above = f"FROM jobs NOT INDEXED WHERE seq > {_MARK} AND {queue}"  # a rowid range
    return (
        f"SELECT queue, job_type, status, 1 AS n {above}"
        f" UNION ALL SELECT queue, job_type, 'submitted', 1 {above}"
        f" UNION ALL SELECT queue, job_type, 'ready:' || priority, 1 {above}"
        " AND status = 'PENDING' AND blocked_by = 0 AND delayed = 0"
        f" UNION ALL SELECT queue, job_type, '{DELAYED}', 1 {above} AND status = 'PENDING' AND delayed = 1"
    )


def _with_unfolded(columns: str, where: str) -> str:
    """``columns`` of the count rows of queue ?1 matching ``where``, the stored ones and
    those of the jobs above the fold mark."""
    return (
        f"SELECT {columns} FROM job_counts WHERE queue = ?1 AND {where}"
        f" UNION ALL SELECT {columns} FROM ({_unfolded('queue = ?1')}) WHERE {where}"
    )


#: Jobs per status (params: queue); the pseudo-statuses' rows are among them.
BY_STATUS: Final = f"SELECT status, sum(n) FROM ({_with_unfolded('status, n', 'true')}) GROUP BY status"
_READY_ROWS: Final = "status GLOB 'ready:*'"
_DELAYED_ROWS: Final = f"status = '{DELAYED}'"
#: Jobs in the ready index per priority (params: queue).
READY_BY_PRIORITY: Final = (
    "SELECT CAST(substr(status, 7) AS INTEGER), sum(n)"
    f" FROM ({_with_unfolded('status, n', _READY_ROWS)}) GROUP BY status"
)


@functools.cache
def ready_of(types: int) -> str:
    """Whether a job of ``types`` job types is ready (params: ?1 the queue, ?2 now, ?3..
    the types): their rows of the ready index counted, not looked for in the index
    (which holds every type's jobs in claim order: behind a backlog of other types' jobs,
    a look for one of these walks all of them), or one of their delayed jobs fallen due
    and not yet promoted."""
    marks = ", ".join(f"?{3 + i}" for i in range(types))
    counted = _with_unfolded("n", f"{_READY_ROWS} AND job_type IN ({marks})")
    return (
        f"SELECT (SELECT coalesce(sum(n), 0) FROM ({counted})) > 0"
        " OR EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_delayed WHERE queue = ?1 AND status = 'PENDING'"
        f" AND delayed = 1 AND blocked_by = 0 AND scheduled_at <= ?2 AND job_type IN ({marks}))"
    )


#: Jobs per type of one status, types with none left out (params: queue, status).
BY_TYPE: Final = (
    f"SELECT job_type, sum(n) FROM ({_with_unfolded('job_type, n', 'status = ?2')})"
    " GROUP BY job_type HAVING sum(n) > 0"
)
#: PENDING jobs due later, not waiting for dependencies (params: ?1 the queue, ?2 now): the
#: jobs of the delayed index, less those fallen due and not yet promoted by a claim (a
#: range of jobs_delayed up to now) and those waiting for dependencies (the partial index
#: jobs_delayed_blocked): never a read of the jobs due later.
SCHEDULED: Final = (
    f"SELECT (SELECT coalesce(sum(n), 0) FROM ({_with_unfolded('n', _DELAYED_ROWS)}))"
    " - (SELECT count(*) FROM jobs INDEXED BY jobs_delayed WHERE queue = ?1 AND status = 'PENDING'"
    " AND delayed = 1 AND scheduled_at <= ?2)"
    " - (SELECT count(*) FROM jobs INDEXED BY jobs_delayed_blocked WHERE queue = ?1"
    " AND status = 'PENDING' AND delayed = 1 AND blocked_by > 0 AND scheduled_at > ?2)"
)
#: RUNNING jobs per type (params: ?1 the queue), for claims under concurrency limits: read
#: in a write transaction, which folded first (no job above the fold mark).
RUNNING_BY_TYPE: Final = "SELECT job_type, n FROM job_counts WHERE queue = ?1 AND status = 'RUNNING'"

#: A row when a job is above the fold mark (nothing to do otherwise).
_BEHIND: Final = f"SELECT 1 FROM jobs NOT INDEXED WHERE seq > {_MARK} LIMIT 1"
#: Every queue's rows (the high-water row's queue "" is none).
_REAL_QUEUES: Final = "queue > ''"
#: Add the jobs above the fold mark to the counts.
_ABOVE: Final = (
    "SELECT queue, job_type, status, priority, status = 'PENDING' AND blocked_by = 0 AND delayed = 0,"
    " status = 'PENDING' AND delayed = 1,"
    f" count(*) FROM jobs NOT INDEXED WHERE seq > {_MARK} AND {_REAL_QUEUES} GROUP BY 1, 2, 3, 4, 5, 6"
)
#: Move the fold mark to the largest seq (written only when it moves).
MARK_ALL: Final = (
    "INSERT INTO job_counts (queue, job_type, status, n) SELECT '', '', 'folded', coalesce(max(seq), 0)"
    " FROM jobs WHERE true ON CONFLICT (queue, status, job_type) DO UPDATE SET n = excluded.n"
    " WHERE n != excluded.n"
)


def fold(conn: sqlite3.Connection) -> None:
    """Count the jobs above the fold mark and move the mark past them (in a write
    transaction, before it changes anything): a read of one row when there are none."""
    if conn.execute(_BEHIND).fetchone() is None:
        return
    # Summed over the groups (one per priority too), then one upsert.
    added: Counter[tuple[str, str, str]] = Counter()
    for queue, job_type, status, priority, in_ready, in_delayed, n in conn.execute(_ABOVE):
        added[queue, job_type, status] += n
        added[queue, job_type, SUBMITTED] += n
        if in_ready:
            added[queue, job_type, ready(priority)] += n
        if in_delayed:
            added[queue, job_type, DELAYED] += n
    add_rows(conn, [(*key, n) for key, n in added.items()])
    conn.execute(MARK_ALL)


def mark(conn: sqlite3.Connection) -> None:
    """Move the fold mark past the jobs this write transaction added (it counted them
    itself); a read of two rows when it added none."""
    if conn.execute(_BEHIND).fetchone() is not None:
        conn.execute(MARK_ALL)


#: Most rows one :func:`_bump` statement holds (4 parameters each).
_BUMP_MAX: Final = 2000


#: The pseudo-status of a claim policy's fairness virtual times (see ``_sqlite_policy``):
#: its rows hold a value written as it is, never added to.
FAIR: Final = "fair"
#: The pseudo-status of the claims each of a claim policy's rates counted.
RATE: Final = "rate"
#: A claim policy's state row: (queue, job type, pseudo-status, value).
StateRow: TypeAlias = tuple[str, str, str, float | bytes | bytearray]


@functools.cache
def _bump(rows: int, state: bool = False) -> str:
    """The upsert adding ``rows`` (queue, job type, status, n) rows to the counts: one
    statement (a transition's few rows are one step, not one per row). With ``state``,
    rows of :data:`FAIR` among them are set to their value instead."""
    values = ", ".join(["(?, ?, ?, ?)"] * rows)
    update = "n + excluded.n"
    if state:
        update = f"CASE WHEN excluded.status = '{FAIR}' THEN excluded.n ELSE n + excluded.n END"
    return (
        f"INSERT INTO job_counts (queue, job_type, status, n) VALUES {values}"
        f" ON CONFLICT (queue, status, job_type) DO UPDATE SET n = {update}"
    )


def ready(priority: int) -> str:
    """The pseudo-status counting the ready jobs of ``priority``."""
    return f"ready:{priority}"


def moved(job_types: Iterable[str], old: str | None, new: str | None) -> Deltas:
    """The deltas of jobs of ``job_types`` (one entry per job) moving from ``old`` to
    ``new`` (None: added, or deleted)."""
    deltas: Deltas = Counter()
    for job_type, n in Counter(job_types).items():  # counted in C, then a few types
        if old is not None:
            deltas[job_type, old] -= n
        if new is not None:
            deltas[job_type, new] += n
    return deltas


def add_rows(
    conn: sqlite3.Connection,
    rows: Sequence[tuple[str, str, str, int]],
    state: Sequence[StateRow] = (),
) -> None:
    """Add ``(queue, job type, status, n)`` rows to the counts, in the caller's write
    transaction: a transition that knows its deltas before it runs. ``state``: a claim
    policy's rows, in the same statement (:data:`FAIR` rows set, :data:`RATE` rows
    added)."""
    if state and len(rows) + len(state) <= _BUMP_MAX:
        values: list[str | float | bytes | bytearray] = [value for row in rows for value in row]
        values += [value for row in state for value in row]
        conn.execute(_bump(len(rows) + len(state), True), values)
        return
    if state:
        conn.execute(_bump(len(state), True), [value for row in state for value in row])
    for start in range(0, len(rows), _BUMP_MAX):
        chunk = rows[start : start + _BUMP_MAX]
        conn.execute(_bump(len(chunk)), [value for row in chunk for value in row])


def bump_one(conn: sqlite3.Connection, queue: str, job_type: str, old: str | None, new: str | None) -> None:
    """One job of ``job_type`` moved from ``old`` to ``new`` (None: added, or deleted): the
    hot paths' :func:`bump`, without building deltas."""
    if old is None or new is None:
        conn.execute(_bump(1), (queue, job_type, new or old, 1 if old is None else -1))
    elif old != new:
        conn.execute(_bump(2), (queue, job_type, old, -1, queue, job_type, new, 1))


def bump(
    conn: sqlite3.Connection, queue: str, deltas: Deltas, state: Sequence[StateRow] = ()
) -> None:
    """Apply ``deltas`` to ``queue``'s counts, in the caller's write transaction (and set
    the ``state`` rows, see :func:`add_rows`)."""
    changed = [(queue, job_type, status, n) for (job_type, status), n in deltas.items() if n]
    if changed or state:
        add_rows(conn, changed, state)
