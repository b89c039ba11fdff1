"""The SQL statements of the SQLite backend, written once so each is prepared once.

``sqlite3`` caches a prepared statement per SQL text and connection, so keeping every
hot statement a constant string makes enqueue, claim and complete reuse their plans.
Every statement names its queue (``queue = ?``): one file holds many queues; only
``queue_names`` reads across them.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Final

from typedq.backends._sqlite_rows import CLAIM_COLUMNS, INSERT_COLUMNS, SELECT_COLUMNS
from typedq.backends._sqlite_schema import SETTLED_CONDITION, SETTLED_STATUSES

__all__ = ["SQL"]

_COLS: Final = SELECT_COLUMNS


def _ready(types: int | None = None) -> str:
    """The best ready jobs, served by the jobs_ready index.

    Params: queue, now, then ``types`` job types when given (only jobs of those types),
    then the limit.
    """
    of_types = "" if types is None else f" AND job_type IN ({', '.join(['?'] * types)})"
    return (
        "SELECT seq FROM jobs WHERE queue = ? AND status = 'PENDING' AND blocked_by = 0 AND delayed = 0"
        f" AND (scheduled_at IS NULL OR scheduled_at <= ?){of_types}"
        " ORDER BY priority DESC, scheduled_at, created_at, seq LIMIT ?"
    )


_READY: Final = _ready()
# What a claim sets (params: worker_id, started_at, lease_until, lease_mono; a batch
# claim then its claim_group).
_CLAIM_SET: Final = (
    "UPDATE jobs SET status = 'RUNNING', attempt = attempt + 1, worker_id = ?, started_at = ?,"
    " lease_until = ?, lease_mono = ?, run_alone = 0, claim_group = "
)
_SETTLED: Final = frozenset(SETTLED_STATUSES)
_LEASED: Final = "WHERE queue = ? AND job_id = ? AND status = 'RUNNING' AND attempt = ?"
#: What the reaper reads of a lease (SQL.expired, SQL.lapsed; see SQLiteReads._expired).
_LEASE_COLS: Final = "seq, job_id, attempt, worker_id, lease_until, lease_mono, claim_group"


def _insert(columns: str) -> str:
    """The INSERT of a row of ``columns`` (a comma-separated list), one ``?`` each."""
    marks = ", ".join(["?"] * (columns.count(",") + 1))
    return f"INSERT INTO jobs ({columns}) VALUES ({marks})"


def _complete_short(result: str) -> str:
    """The completion by rowid that sets the result to ``result`` (SQL)."""
    return (
        f"UPDATE jobs SET status = 'COMPLETED', result = {result}, finished_at = ?, lease_until = NULL"
        " WHERE seq = ? AND status = 'RUNNING' AND attempt = ?"
        " RETURNING priority, cancel_requested, job_type, has_waiters"
    )


class SQL:
    """Namespace of the backend's statements."""

    insert: Final = _insert(INSERT_COLUMNS)
    #: The INSERT binding ``columns``: a job that never ran and depends on nothing binds
    #: only ``FRESH_COLUMNS`` plus its non-NULL optional ones (``RowCodec.fresh_row``);
    #: the other columns take their defaults.
    insert_into: Final = staticmethod(functools.cache(_insert))
    insert_edge: Final = "INSERT OR IGNORE INTO job_deps (queue, parent, child) VALUES (?, ?, ?)"
    flag_parent: Final = "UPDATE jobs SET has_waiters = 1 WHERE queue = ? AND job_id = ?"
    statuses: Final = "SELECT job_id, status FROM jobs WHERE queue = ? AND job_id IN ({marks})"

    # -- claiming ---------------------------------------------------------------------------
    #: Whether a delayed job is due (params: ?1 queue, ?2 now): a seek of jobs_delayed,
    #: where the UPDATE of :attr:`promote` costs about 45k instructions even when none is.
    any_due: Final = (
        "SELECT 1 FROM jobs INDEXED BY jobs_delayed WHERE queue = ?1 AND status = 'PENDING'"
        " AND delayed = 1 AND scheduled_at <= ?2 LIMIT 1"
    )
    promote: Final = (
        "UPDATE jobs SET delayed = 0 WHERE seq IN (SELECT seq FROM jobs WHERE queue = ?"
        " AND status = 'PENDING' AND delayed = 1 AND scheduled_at <= ? ORDER BY scheduled_at LIMIT 1000)"
        " RETURNING job_type, priority, blocked_by"
    )
    @staticmethod
    @functools.cache
    def claim(many: bool, types: int | None) -> str:
        """The claim of one job (or up to a limit, with ``many``), of ``types`` job types
        when given. Params: what the claim sets (worker_id, started_at, lease_until,
        lease_mono, and with ``many`` the claim group), then those of :func:`_ready`. It
        returns the columns it does not set (the caller knows those)."""
        if many:
            return f"{_CLAIM_SET}? WHERE seq IN ({_ready(types)}) RETURNING {CLAIM_COLUMNS}"
        return f"{_CLAIM_SET}NULL WHERE seq = ({_ready(types)}) RETURNING {CLAIM_COLUMNS}"

    #: Whether a PENDING job waits to be claimed alone (params: queue).
    any_alone: Final = (
        "SELECT 1 FROM jobs INDEXED BY jobs_alone WHERE queue = ? AND status = 'PENDING' AND run_alone = 1"
        " LIMIT 1"
    )
    dequeue: Final = (
        "UPDATE jobs SET status = 'RUNNING', attempt = attempt + 1, started_at = ?"
        f" WHERE seq = ({_READY}) RETURNING {_COLS}"
    )
    bury_claimed: Final = (
        "UPDATE jobs SET status = 'DEAD', error = ?, finished_at = ?, lease_until = NULL,"
        " traceback = '' WHERE seq = ? AND status = 'RUNNING' AND attempt = ? RETURNING job_type"
    )
    peek_ready: Final = f"SELECT {_COLS} FROM jobs WHERE seq = ({_READY.replace('LIMIT ?', 'LIMIT 1')})"
    peek_due: Final = (
        f"SELECT {_COLS} FROM jobs WHERE queue = ? AND status = 'PENDING' AND delayed = 1"
        " AND blocked_by = 0 AND scheduled_at <= ?"
        " ORDER BY priority DESC, scheduled_at, created_at, seq LIMIT 1"
    )

    # -- leased transitions (params end with queue, job_id, token) ---------------------------
    lease_state: Final = "SELECT status, attempt FROM jobs WHERE queue = ? AND job_id = ?"
    complete: Final = (
        "UPDATE jobs SET status = 'COMPLETED', result = ?, finished_at = ?, lease_until = NULL"
        f" {_LEASED} RETURNING {_COLS}"
    )
    #: By rowid: the claim that handed the job out knows its row (params: result,
    #: finished_at, seq, token). seq is never reused, and status and attempt fence it.
    complete_short: Final = _complete_short("?")
    #: :attr:`complete_short` of a job whose result is None, without its parameter:
    #: sqlite3 binds None through its adapter lookup, about 1 µs (params: finished_at,
    #: seq, token).
    complete_none: Final = _complete_short("NULL")
    #: Most completions one ``complete_batch`` statement holds (3 parameters each).
    COMPLETE_BATCH_MAX: Final = 1000

    @staticmethod
    def complete_bucket(count: int) -> int:
        """The ``complete_batch`` size that holds ``count`` (1 to :attr:`COMPLETE_BATCH_MAX`)
        completions: the next power of two, so a connection prepares at most 11 texts."""
        return 1 << (count - 1).bit_length()

    @staticmethod
    @functools.cache
    def complete_batch(count: int, results: bool = True) -> str:
        """Complete ``count`` claimed jobs by rowid in one statement.

        Params: (seq, token, result) per job, then finished_at; without ``results``
        (every result is None) (seq, token) per job. Returns the seq, priority,
        cancel_requested, job_type and has_waiters of each row it completed; a row whose status
        or attempt no longer match is left alone and not returned.
        """
        if results:
            values, result = ", ".join(["(?, ?, ?)"] * count), "done.result"
        else:
            values, result = ", ".join(["(?, ?, NULL)"] * count), "NULL"
        return (
            f"WITH done(seq, token, result) AS (VALUES {values})"
            f" UPDATE jobs SET status = 'COMPLETED', result = {result}, finished_at = ?,"
            " lease_until = NULL FROM done"
            " WHERE jobs.seq = done.seq AND jobs.status = 'RUNNING' AND jobs.attempt = done.token"
            " RETURNING jobs.seq, jobs.priority, jobs.cancel_requested, jobs.job_type, jobs.has_waiters"
        )

    fail: Final = (
        "UPDATE jobs SET status = 'PENDING', lease_until = NULL, worker_id = NULL,"
        " retry_count = retry_count + 1, error = ?, scheduled_at = ?, delayed = ?, traceback = ?"
        f" {_LEASED} RETURNING {_COLS}"
    )
    bury: Final = (
        "UPDATE jobs SET status = 'DEAD', lease_until = NULL, error = ?, finished_at = ?, traceback = ?"
        f" {_LEASED} RETURNING {_COLS}"
    )
    release: Final = (
        "UPDATE jobs SET status = 'PENDING', lease_until = NULL, worker_id = NULL,"
        " delayed = (scheduled_at IS NOT NULL AND scheduled_at > ?)"
        f" {_LEASED} RETURNING {_COLS}"
    )
    extend: Final = f"UPDATE jobs SET lease_until = ?, lease_mono = ? {_LEASED} RETURNING seq"
    expired: Final = (
        f"SELECT {_LEASE_COLS} FROM jobs"
        " WHERE queue = ? AND status = 'RUNNING' AND lease_until IS NOT NULL AND lease_until < ?"
        " AND (lease_until, seq) > (?, ?) ORDER BY lease_until, seq LIMIT ?"
    )
    #: Leases not yet expired by the wall clock whose monotonic deadline passed (params:
    #: queue, now, monotonic now): after the wall clock stepped back, a lapsed lease of
    #: this host is found by the clock that did not move.
    lapsed: Final = (
        f"SELECT {_LEASE_COLS} FROM jobs"
        " INDEXED BY jobs_leased WHERE queue = ? AND status = 'RUNNING' AND lease_until IS NOT NULL"
        " AND lease_until >= ? AND lease_mono < ?"
    )
    #: How many RUNNING jobs each batch claim (claim_group) of the queue still holds.
    claims_held: Final = (
        "SELECT claim_group, count(*) FROM jobs INDEXED BY jobs_leased WHERE queue = ?"
        " AND status = 'RUNNING' AND lease_until IS NOT NULL AND claim_group IS NOT NULL"
        " GROUP BY claim_group"
    )
    #: A job claimed alone: its loss is counted, and it is claimed alone from now on
    #: (params: seq, attempt, and the lease's wall-clock and monotonic deadlines as the
    #: reaper judged them: a job completed, failed, claimed again or renewed since is left
    #: alone; a renewal always moves the monotonic one, even when a wall clock stepped
    #: back gives it the same wall-clock deadline).
    rescue: Final = (
        "UPDATE jobs SET lost_count = lost_count + 1, run_alone = 1, worker_id = NULL WHERE seq = ?"
        " AND status = 'RUNNING' AND attempt = ? AND lease_until = ? AND lease_mono IS ?"
        " RETURNING lost_count, cancel_requested, depends_on, scheduled_at, job_type, priority"
    )
    #: A job of a batch: not counted, claimed alone next time (params as ``rescue``).
    rescue_from_batch: Final = (
        "UPDATE jobs SET run_alone = 1, worker_id = NULL WHERE seq = ?"
        " AND status = 'RUNNING' AND attempt = ? AND lease_until = ? AND lease_mono IS ?"
        " RETURNING lost_count, cancel_requested, depends_on, scheduled_at, job_type, priority"
    )

    # -- the dependency graph ---------------------------------------------------------------
    take_edges: Final = "DELETE FROM job_deps WHERE queue = ? AND parent = ? RETURNING child"
    unblock: Final = (
        "UPDATE jobs SET blocked_by = blocked_by - 1 WHERE queue = ? AND job_id = ? AND blocked_by > 0"
        " RETURNING job_type, priority, blocked_by = 0 AND delayed = 0"
    )
    fail_blocked: Final = (
        "UPDATE jobs SET status = 'FAILED', error = ?, finished_at = ?, blocked_by = 0"
        " WHERE queue = ? AND job_id = ? AND status = 'PENDING' AND blocked_by > 0"
        " RETURNING job_type, delayed"
    )
    drop_child_edges: Final = "DELETE FROM job_deps WHERE queue = ? AND child = ?"
    fail_seq: Final = (
        "UPDATE jobs SET status = 'FAILED', error = ?, finished_at = ?, blocked_by = 0 WHERE seq = ?"
        " RETURNING job_type"
    )
    set_blocked: Final = "UPDATE jobs SET blocked_by = ? WHERE seq = ?"
    #: Whether a job is in the ready index, with its type and priority (params: queue, job_id).
    ready_state: Final = (
        "SELECT job_type, priority, status = 'PENDING' AND blocked_by = 0 AND delayed = 0 FROM jobs"
        " WHERE queue = ? AND job_id = ?"
    )

    # -- management -------------------------------------------------------------------------
    state: Final = (
        "SELECT seq, status, depends_on, scheduled_at, job_type, priority,"
        " status = 'PENDING' AND blocked_by = 0 AND delayed = 0, status = 'PENDING' AND delayed = 1"
        " FROM jobs WHERE queue = ? AND job_id = ?"
    )
    request_cancel: Final = "UPDATE jobs SET cancel_requested = 1 WHERE seq = ?"
    #: A job that ended without a finish time gets one (params: now, seq).
    finish_now: Final = "UPDATE jobs SET finished_at = ? WHERE seq = ? AND finished_at IS NULL"
    set_priority: Final = "UPDATE jobs SET priority = ? WHERE queue = ? AND job_id = ?"
    delete: Final = "DELETE FROM jobs WHERE seq = ?"
    #: seq is never reused (the table has no AUTOINCREMENT, see _sqlite_schema): when
    #: the row deleted held the largest seq, a high-water row in queue "" (a name no
    #: queue may have) takes its seq, replacing the previous one. Params: that seq.
    top_seq: Final = "SELECT ifnull(max(seq), 0) FROM jobs"
    drop_high_water: Final = "DELETE FROM jobs WHERE queue = ''"
    keep_high_water: Final = (
        "INSERT INTO jobs (seq, queue, job_id, job_type, status, priority, created_at, max_retries,"
        " origin, payload) VALUES (?, '', 'high-water', '', 'DELETED', 0, 0.0, 0, '', X'')"
    )

    #: The jobs that failed because a dependency did (params: queue).
    failed_by_dependency: Final = (
        "SELECT seq, job_id, depends_on, error, job_type, priority FROM jobs INDEXED BY jobs_settled"
        " WHERE queue = ?"
        f" AND status = 'FAILED' AND {SETTLED_CONDITION} AND error LIKE 'dependency %'"
    )

    # -- the worker registry ----------------------------------------------------------------
    register_worker: Final = (
        "INSERT OR REPLACE INTO workers (queue, worker_id, last_seen, info) VALUES (?, ?, ?, ?)"
    )
    forget_workers: Final = "DELETE FROM workers WHERE queue = ? AND last_seen < ? RETURNING info"
    unregister_worker: Final = "DELETE FROM workers WHERE queue = ? AND worker_id = ? RETURNING info"
    workers: Final = "SELECT info FROM workers WHERE queue = ?"

    # -- reads ------------------------------------------------------------------------------
    get: Final = f"SELECT {_COLS} FROM jobs WHERE queue = ? AND job_id = ?"
    #: Every queue of the file: a scan of the jobs_by_id index (queue first), not of the table.
    #: The high-water row's queue "" is not one.
    queue_names: Final = (
        "SELECT DISTINCT queue FROM jobs INDEXED BY jobs_by_id WHERE queue > '' ORDER BY queue"
    )

    # No index covers every status: listing scans the table in seq order (a listing
    # cursor starts the scan at its seq: NOT INDEXED still allows rowid ranges). Counting
    # reads job_counts (see _sqlite_counts).
    list: Final = (
        f"SELECT {_COLS} FROM jobs NOT INDEXED WHERE {{where}} ORDER BY seq {{order}} LIMIT ? OFFSET ?"
    )
    #: Listing a status of the jobs_settled index (repeating its condition lets it be used).
    list_settled: Final = (
        f"SELECT {_COLS} FROM jobs INDEXED BY jobs_settled WHERE queue = ? AND status = ? {{more}}"
        f" AND {SETTLED_CONDITION}"
        " ORDER BY seq {order} LIMIT ? OFFSET ?"
    )
    #: The seq of a job: the position a listing cursor (``after``) stands for.
    seq_of: Final = "SELECT seq FROM jobs WHERE queue = ? AND job_id = ?"

    @staticmethod
    def listing(
        queue: str, status: str | None, job_type: str | None, *, after: int | None = None,
        newest: bool = False,
    ) -> tuple[str, Sequence[object]]:
        """The statement listing a queue's jobs with these filters, and its params
        (``limit`` and ``offset`` go last): the jobs_settled index for its statuses.

        ``after`` (a seq) is a keyset cursor: ``seq > after`` (``<`` when ``newest``),
        a range on the rowid or on the index's trailing rowid, so a page costs the same
        wherever it starts (NOT INDEXED still allows rowid ranges).
        """
        params: list[object] = [queue]
        more = ""
        if job_type is not None:
            more = "AND job_type = ?"
            params.append(job_type)
        if after is not None:
            more += " AND seq < ?" if newest else " AND seq > ?"
            params.append(after)
        order = "DESC" if newest else "ASC"
        if status in _SETTLED:
            params.insert(1, status)
            return SQL.list_settled.format(more=more, order=order), params
        where = "queue = ?"
        if status is not None:
            where += " AND status = ?"
            params.insert(1, status)
        return SQL.list.format(where=f"{where} {more}", order=order), params

    ready_count: Final = (
        "SELECT (SELECT count(*) FROM jobs INDEXED BY jobs_ready WHERE queue = ?1 AND status = 'PENDING'"
        " AND blocked_by = 0"
        " AND delayed = 0 AND (scheduled_at IS NULL OR scheduled_at <= ?2))"
        " + (SELECT count(*) FROM jobs WHERE queue = ?1 AND status = 'PENDING' AND delayed = 1"
        " AND blocked_by = 0 AND scheduled_at <= ?2)"
    )
    has_ready: Final = (
        "SELECT EXISTS (SELECT 1 FROM jobs INDEXED BY jobs_ready WHERE queue = ?1 AND status = 'PENDING'"
        " AND blocked_by = 0"
        " AND delayed = 0 AND (scheduled_at IS NULL OR scheduled_at <= ?2))"
        " OR EXISTS (SELECT 1 FROM jobs WHERE queue = ?1 AND status = 'PENDING' AND delayed = 1"
        " AND blocked_by = 0 AND scheduled_at <= ?2)"
    )
    #: Changes whenever another connection commits (read on this thread's connection).
    data_version: Final = "PRAGMA data_version"
    #: The delayed jobs already due, per priority (params: queue, now).
    due_by_priority: Final = (
        "SELECT priority, count(*) FROM jobs INDEXED BY jobs_delayed WHERE queue = ? AND status = 'PENDING'"
        " AND delayed = 1 AND scheduled_at <= ? AND blocked_by = 0 GROUP BY priority"
    )
    next_due: Final = (
        "SELECT scheduled_at FROM jobs WHERE queue = ? AND status = 'PENDING' AND delayed = 1"
        " AND blocked_by = 0 ORDER BY scheduled_at LIMIT 1"
    )
