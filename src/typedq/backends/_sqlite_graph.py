"""Work the SQLite backend does inside its write transactions: the dependency graph,
status moves, lease refusals, rescues and burying undecodable jobs.

A PENDING job with unfinished dependencies has ``blocked_by`` > 0 and one ``job_deps``
edge (parent, child) per dependency it still waits for; the edges exist exactly while it
is blocked. Its parents carry ``has_waiters`` = 1 so a completion looks for dependents
only when there may be some. The rules are the memory backend's:

* a job that becomes PENDING is checked against its dependencies' current states: it
  waits for the unfinished ones, or ends FAILED ("dependency X is DEAD", or "missing"
  for a deleted one) if one already failed;
* COMPLETED releases the dependents (``blocked_by`` - 1);
* FAILED, DEAD, CANCELLED and delete fail the blocked dependents, transitively.

Every method takes the connection of the caller's open ``BEGIN IMMEDIATE`` transaction,
and keeps the queue's ``job_counts`` rows right for each job it adds, moves or deletes
(see ``_sqlite_counts``).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import groupby
from operator import itemgetter
from typing import Any, Final, NamedTuple

from typedq.backends import _sqlite_counts as counts
from typedq.backends import _sqlite_rows as rows
from typedq.backends._graph import check_batch_acyclic, dependency_order
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._sqlite_sql import SQL
from typedq.errors import (
    DependencyCycleError,
    DeserializationError,
    DuplicateJobError,
    InvalidTransitionError,
    JobNotFoundError,
    StaleLeaseError,
    TypedqError,
    UnknownDependencyError,
)
from typedq.job import Job, JobStatus

__all__ = ["Finish", "Finished", "JobState", "QueueGraph"]

_PENDING: Final = "PENDING"
_RUNNING: Final = "RUNNING"
_COMPLETED: Final = "COMPLETED"
_FAILING: Final = frozenset({"FAILED", "DEAD", "CANCELLED"})
_ENDED: Final = _FAILING | {"COMPLETED"}
#: What a replay resets: the job runs again as if new.
_REPLAYED: Final = {
    "retry_count": 0,
    "lost_count": 0,
    "error": None,
    "traceback": "",  # cleared ('', not NULL: see _sqlite_schema)
    "result": None,
    "finished_at": None,
    "scheduled_at": None,
    "cancel_requested": 0,
    "run_alone": 0,
    "worker_id": None,
}
#: Most ids bound in one ``IN (...)`` list.
_CHUNK: Final = 500

logger = logging.getLogger("typedq.backends.sqlite")

_Conn = sqlite3.Connection
Edge = tuple[str, str, str]


class JobState(NamedTuple):
    """What a transition needs to know of a stored job."""

    seq: int
    job_id: str
    status: str
    depends_on: str | None
    scheduled_at: float | None
    job_type: str
    priority: int
    #: Whether it is in the ready index (PENDING, unblocked, not delayed).
    ready: bool = False
    #: Whether it is in the delayed index (PENDING, marked delayed).
    delayed: bool = False


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for start in range(0, len(items), _CHUNK):
        yield items[start : start + _CHUNK]


class Finish(NamedTuple):
    """One completion to record: the stored result, and this object's claim of the job
    (its seq and the job handed out) when it still has it."""

    job_id: str
    token: int
    blob: bytes | None
    cached: tuple[int, Job] | None


#: A completed row with whether it is the short row of a batch (by rowid), or the refusal.
Finished = tuple[Sequence[Any], bool] | TypedqError


class QueueGraph:
    """The dependency graph of one queue of a file.

    Args:
        queue: the queue's name.
        row_codec: builds INSERT rows for :meth:`place_batch`.
    """

    def __init__(self, queue: str, row_codec: rows.RowCodec) -> None:
        self.queue = queue
        self.rows = row_codec

    def place_batch(
        self, conn: _Conn, batch: dict[str, Job], encoded: dict[str, rows.Blobs], now: float
    ) -> tuple[list[tuple[Any, ...]], list[tuple[str, str, str]], list[tuple[str, str]]]:
        """Check a batch with dependencies and compute its rows, edges and parents.

        Mirrors the memory backend: a job waiting on a FAILED, DEAD or CANCELLED job is
        stored FAILED naming it; otherwise one edge per unfinished dependency.
        """
        external = sorted(
            {dep for job in batch.values() if job.status is JobStatus.PENDING for dep in job.depends_on}
            - batch.keys()
        )
        known = self.statuses(conn, external)
        for job in batch.values():
            if job.status is JobStatus.PENDING and any(
                dep == job.job_id or (dep not in batch and dep not in known) for dep in job.depends_on
            ):
                self.refuse_batch(conn, batch)
        try:
            check_batch_acyclic(batch)
        except DependencyCycleError:
            self.refuse_batch(conn, batch)
            raise
        status_of = dict(known)
        placed: list[tuple[Job, int, str | None]] = []
        waited_on: set[str] = set()
        edges: list[tuple[str, str, str]] = []
        for job in dependency_order(batch):
            status, error, blocked = job.status.value, None, 0
            if status == _PENDING and job.depends_on:
                unfinished: list[str] = []
                for dep in job.depends_on:
                    dep_status = status_of[dep]
                    if dep_status == _COMPLETED:
                        continue
                    if dep_status in _FAILING:
                        status, error = "FAILED", f"dependency {dep} is {dep_status}"
                        unfinished = []
                        break
                    unfinished.append(dep)
                blocked = len(unfinished)
                waited_on.update(unfinished)
                edges.extend((self.queue, dep, job.job_id) for dep in unfinished)
            status_of[job.job_id] = status
            placed.append((job, blocked, error))
        params = []
        for job, blocked, error in placed:
            blobs = encoded[job.job_id]
            if error is None:
                params.append(
                    self.rows.row(
                        job, self.queue, blobs, now, blocked_by=blocked, has_waiters=job.job_id in waited_on
                    )
                )
            else:
                params.append(self.rows.failed_row(job, self.queue, blobs, error, now))
        parents = [(self.queue, dep) for dep in sorted(waited_on - batch.keys())]
        return params, edges, parents

    def refuse_batch(self, conn: _Conn, batch: dict[str, Job]) -> None:
        """Raise the memory backend's error for the first offending job of a batch."""
        stored = set(self.statuses(conn, list(batch)))
        external = [d for job in batch.values() for d in job.depends_on if d not in batch]
        present = set(self.statuses(conn, sorted(set(external))))
        for job in batch.values():
            if job.job_id in stored:
                raise DuplicateJobError(job.job_id, queue=self.queue)
            if job.status is JobStatus.PENDING:
                for dep in job.depends_on:
                    if dep == job.job_id:
                        raise DependencyCycleError([dep, dep])
                    if dep not in batch and dep not in present:
                        raise UnknownDependencyError(job.job_id, dep, queue=self.queue)
        check_batch_acyclic(batch)

    def statuses(self, conn: _Conn, ids: Sequence[str]) -> dict[str, str]:
        """``{job_id: status}`` of those of ``ids`` stored in this queue."""
        found: dict[str, str] = {}
        for chunk in _chunks(ids):
            sql = SQL.statuses.format(marks=", ".join("?" * len(chunk)))
            found.update(conn.execute(sql, (self.queue, *chunk)).fetchall())
        return found

    def promote(self, conn: _Conn, now: float, *, checked: bool = False) -> None:
        """Delayed jobs that are due join the ready index (at most 1,000 at a time);
        ``checked``: the caller found one due."""
        if not checked and conn.execute(SQL.any_due, (self.queue, now)).fetchone() is None:
            return  # nearly every claim: nothing is due
        got = conn.execute(SQL.promote, (self.queue, now)).fetchall()
        due: counts.Deltas = Counter()
        for job_type, priority, blocked in got:
            due[job_type, counts.DELAYED] -= 1  # each left the delayed index
            if not blocked:
                due[job_type, counts.ready(priority)] += 1
        counts.bump(conn, self.queue, due)

    def release_dependents(self, conn: _Conn, job_id: str) -> bool:
        """A job COMPLETED: each dependent waits for one dependency less."""
        children = conn.execute(SQL.take_edges, (self.queue, job_id)).fetchall()
        freed: Counter[tuple[str, str]] = Counter()
        for (child,) in children:
            got = conn.execute(SQL.unblock, (self.queue, child)).fetchone()
            if got is not None and got[2]:  # its last dependency: it is ready
                freed[got[0], counts.ready(got[1])] += 1
        counts.bump(conn, self.queue, freed)
        return bool(children)

    def fail_dependents(self, conn: _Conn, job_id: str, status: str, now: float) -> None:
        """A job ended FAILED, DEAD or CANCELLED: fail the jobs waiting on it, transitively."""
        stack = [(job_id, status)]
        failed: list[str] = []
        was_delayed: list[str] = []
        while stack:
            parent, parent_status = stack.pop()
            error = f"dependency {parent} is {parent_status}"
            for (child,) in conn.execute(SQL.take_edges, (self.queue, parent)).fetchall():
                got = conn.execute(SQL.fail_blocked, (error, now, self.queue, child)).fetchone()
                if got is not None:
                    failed.append(got[0])
                    if got[1]:
                        was_delayed.append(got[0])
                    conn.execute(SQL.drop_child_edges, (self.queue, child))
                    stack.append((child, "FAILED"))
        if failed:
            moves = counts.moved(failed, _PENDING, "FAILED")
            moves.update(counts.moved(was_delayed, counts.DELAYED, None))
            counts.bump(conn, self.queue, moves)

    def place(
        self, conn: _Conn, job: JobState, now: float, *, counted_ready: bool, counted_delayed: bool
    ) -> None:
        """A job became PENDING: block it on its unfinished dependencies, or fail it.

        ``counted_ready``: the job was counted as ready when it became PENDING (not
        delayed); blocking or failing it takes that back. ``counted_delayed``: it was
        counted as delayed; failing it takes that back (a blocked job stays delayed)."""
        seq, job_id, depends = job.seq, job.job_id, job.depends_on
        if not depends:
            return
        unready: counts.Deltas = Counter()
        if counted_ready:
            unready[job.job_type, counts.ready(job.priority)] -= 1
        deps: list[str] = json.loads(depends)
        status_of = self.statuses(conn, deps)
        unfinished = []
        for dep in deps:
            dep_status = status_of.get(dep, "missing")
            if dep_status == _COMPLETED:
                continue
            if dep_status in _FAILING or dep_status == "missing":
                error = f"dependency {dep} is {dep_status}"
                conn.execute(SQL.fail_seq, (error, now, seq))
                unready.update(counts.moved([job.job_type], _PENDING, "FAILED"))
                if counted_delayed:
                    unready[job.job_type, counts.DELAYED] -= 1
                counts.bump(conn, self.queue, unready)
                self.fail_dependents(conn, job_id, "FAILED", now)
                return
            unfinished.append(dep)
        if unfinished:
            conn.executemany(SQL.insert_edge, [(self.queue, dep, job_id) for dep in unfinished])
            conn.executemany(SQL.flag_parent, [(self.queue, dep) for dep in unfinished])
            conn.execute(SQL.set_blocked, (len(unfinished), seq))
            counts.bump(conn, self.queue, unready)

    def state(self, conn: _Conn, job_id: str) -> JobState:
        """The stored state of ``job_id``.

        Raises:
            JobNotFoundError: no such job in this queue.
        """
        found = conn.execute(SQL.state, (self.queue, job_id)).fetchone()
        if found is None:
            raise JobNotFoundError(job_id, queue=self.queue)
        seq, status, depends, sched, job_type, priority, ready, delayed = found
        return JobState(seq, job_id, status, depends, sched, job_type, priority, bool(ready), bool(delayed))

    def move(
        self, conn: _Conn, job: JobState, new: str, now: float, extra: dict[str, Any] | None = None
    ) -> None:
        """Move a job from its status to ``new``, keeping the indexes and the graph right.

        ``extra`` holds more columns to set in the same UPDATE.
        """
        old, job_id = job.status, job.job_id
        sets = dict(extra or {})
        sets["status"] = new
        if old == _PENDING:
            conn.execute(SQL.drop_child_edges, (self.queue, job_id))
            sets["blocked_by"] = 0
        elif old == _RUNNING:
            sets["lease_until"] = None
        if new == _PENDING:
            sched = sets.get("scheduled_at", job.scheduled_at)
            sets["delayed"] = 1 if sched is not None and sched > now else 0
        assignments = ", ".join(f"{column} = ?" for column in sets)
        conn.execute(f"UPDATE jobs SET {assignments} WHERE seq = ?", (*sets.values(), job.seq))
        deltas = counts.moved([job.job_type], old, new)
        ready_now = new == _PENDING and not sets["delayed"]
        if job.ready != ready_now:
            deltas[job.job_type, counts.ready(job.priority)] += 1 if ready_now else -1
        delayed_now = new == _PENDING and bool(sets["delayed"])
        if job.delayed != delayed_now:
            deltas[job.job_type, counts.DELAYED] += 1 if delayed_now else -1
        counts.bump(conn, self.queue, deltas)
        if new == _PENDING:
            self.place(conn, job, now, counted_ready=ready_now, counted_delayed=delayed_now)
        elif new == _COMPLETED:
            self.release_dependents(conn, job_id)
        elif new in _FAILING:
            self.fail_dependents(conn, job_id, new, now)

    # -- whole transactions of the queue's calls ----------------------------------------

    def insert_batch(
        self,
        conn: _Conn,
        *,
        batch: dict[str, Job],
        encoded: dict[str, rows.Blobs],
        fresh: list[tuple[str, tuple[Any, ...]] | None] | None,
        now: float,
    ) -> None:
        """Insert ``batch`` all-or-nothing, with its dependency edges; the jobs are left
        above the counts' fold mark, for the caller to fold (see ``_sqlite_counts``).

        Args:
            batch: the jobs by id, in order.
            encoded: each job's stored fields.
            fresh: each job's fresh row (None for one that ran before, as in an
                import), or None when a job of the batch depends on others.
            now: when the jobs are added.

        Raises:
            DuplicateJobError, UnknownDependencyError, DependencyCycleError: the error
                of the first offending job; nothing of the batch is written.
        """
        params: list[tuple[Any, ...]]
        edges: list[Edge] = []
        parents: list[tuple[str, str]] = []
        # (statement, its rows), in the batch's order: seqs follow that order.
        runs: list[tuple[str, list[tuple[Any, ...]]]]
        if fresh is None:
            params, edges, parents = self.place_batch(conn, batch, encoded, now)
            runs = [(SQL.insert, params)]
        elif all(row is not None for row in fresh):
            runs = [
                (SQL.insert_into(columns), [values for _, values in group])
                for columns, group in groupby((row for row in fresh if row is not None), key=itemgetter(0))
            ]
        else:  # some job ran before (an import): full rows
            params = [self.rows.row(job, self.queue, encoded[job.job_id], now) for job in batch.values()]
            runs = [(SQL.insert, params)]
        conn.execute("SAVEPOINT batch")
        try:
            for sql, run in runs:
                conn.executemany(sql, run)
        except sqlite3.IntegrityError:
            conn.execute("ROLLBACK TO batch")
            self.refuse_batch(conn, batch)
            raise
        conn.execute("RELEASE batch")
        if edges:
            conn.executemany(SQL.insert_edge, edges)
            conn.executemany(SQL.flag_parent, parents)

    def set_status(self, conn: _Conn, *, job_id: str, status: str, now: float) -> None:
        """Move a job to ``status`` (a no-op when it is there already); one that ends so
        without a ``finished_at`` gets ``now``."""
        job = self.state(conn, job_id)
        if job.status != status:
            self.move(conn, job, status, now)
            if status in _ENDED:
                conn.execute(SQL.finish_now, (now, job.seq))

    def cancel(self, conn: _Conn, *, job_id: str, now: float, token: int | None = None) -> bool:
        """Cancel a waiting job, or flag a running one; return whether it was cancelled.

        With ``token``: the lease holder's cancellation of its RUNNING job (fenced)."""
        job = self.state(conn, job_id)
        if token is not None:
            found = conn.execute(SQL.lease_state, (self.queue, job_id)).fetchone()
            if found != (_RUNNING, token):
                self.refuse_lease(conn, job_id, token)
            self.move(conn, job, "CANCELLED", now, {"finished_at": now})
            return True
        if job.status in (_PENDING, "SCHEDULED"):
            self.move(conn, job, "CANCELLED", now, {"finished_at": now})
            return True
        if job.status == _RUNNING:
            conn.execute(SQL.request_cancel, (job.seq,))
        return False

    def set_priority(self, conn: _Conn, *, job_id: str, priority: int) -> None:
        """Change a job's priority (its place in the ready index moves with it)."""
        found = conn.execute(SQL.ready_state, (self.queue, job_id)).fetchone()
        if found is None:
            raise JobNotFoundError(job_id, queue=self.queue)
        conn.execute(SQL.set_priority, (priority, self.queue, job_id))
        job_type, old, ready = found
        if ready and old != priority:
            moved = Counter({(job_type, counts.ready(old)): -1, (job_type, counts.ready(priority)): 1})
            counts.bump(conn, self.queue, moved)

    def replay(self, conn: _Conn, *, job_id: str, now: float) -> Sequence[Any]:
        """DEAD -> PENDING as a fresh job (no retries, error or result); return its row."""
        job = self.state(conn, job_id)
        if job.status != "DEAD":
            raise InvalidTransitionError("status", job.status, "DEAD (only dead jobs can be replayed)")
        self.move(conn, job, _PENDING, now, _REPLAYED)
        return conn.execute(SQL.get, (self.queue, job_id)).fetchone()  # type: ignore[no-any-return]  # a row

    def retry(self, conn: _Conn, *, job_id: str, with_dependents: bool, now: float) -> list[str]:
        """FAILED, DEAD or CANCELLED -> PENDING as a fresh job, with the jobs that failed
        because it did when ``with_dependents`` (parents first); return the ids re-opened."""
        job = self.state(conn, job_id)
        if job.status not in _FAILING:
            raise InvalidTransitionError(
                "status", job.status, "FAILED, DEAD or CANCELLED (a job that ended without completing)"
            )
        reopened = [job]
        if with_dependents:
            children: dict[str, list[JobState]] = {}
            found = conn.execute(SQL.failed_by_dependency, (self.queue,))
            for seq, child, depends, error, job_type, priority in found:
                parent = error.split(" ", 2)[1]
                if depends and parent in json.loads(depends):
                    children.setdefault(parent, []).append(
                        JobState(seq, child, "FAILED", depends, None, job_type, priority)
                    )
            index = 0
            while index < len(reopened):
                reopened.extend(children.pop(reopened[index].job_id, []))
                index += 1
        for state in reopened:
            self.move(conn, state, _PENDING, now, _REPLAYED)
        return [state.job_id for state in reopened]

    def delete(self, conn: _Conn, *, job_id: str, now: float) -> None:
        """Remove a job that is not RUNNING; its waiting dependents fail (CANCELLED)."""
        job = self.state(conn, job_id)
        if job.status == _RUNNING:
            raise InvalidTransitionError("status", job.status, "any state but RUNNING (cancel it first)")
        if job.status == _PENDING:
            conn.execute(SQL.drop_child_edges, (self.queue, job_id))
        # A deleted dependency can never complete: its waiting dependents fail.
        self.fail_dependents(conn, job_id, "CANCELLED", now)
        conn.execute(SQL.delete, (job.seq,))
        deltas = counts.moved([job.job_type], job.status, None)
        if job.ready:
            deltas[job.job_type, counts.ready(job.priority)] -= 1
        if job.delayed:
            deltas[job.job_type, counts.DELAYED] -= 1
        counts.bump(conn, self.queue, deltas)
        if job.seq > conn.execute(SQL.top_seq).fetchone()[0]:
            conn.execute(SQL.drop_high_water)
            conn.execute(SQL.keep_high_water, (job.seq,))

    # -- completions --------------------------------------------------------------------

    def complete(self, conn: _Conn, *, item: Finish, now: float) -> tuple[Sequence[Any], bool]:
        """RUNNING -> COMPLETED; return the row and whether dependents were freed.

        By rowid when the claim is cached here (the short row: priority,
        cancel_requested, has_waiters), else by job id (every column).

        Raises:
            JobNotFoundError, StaleLeaseError: the compare-and-set missed; nothing written.
        """
        job_id, token, blob, cached = item
        if cached is None:
            got = conn.execute(SQL.complete, (blob, now, self.queue, job_id, token)).fetchall()
        elif blob is None:
            got = conn.execute(SQL.complete_none, (now, cached[0], token)).fetchall()
        else:
            got = conn.execute(SQL.complete_short, (rows.bindable(blob), now, cached[0], token)).fetchall()
        if not got:
            self.refuse_lease(conn, job_id, token)
        row: Sequence[Any] = got[0]
        job_type = row[2 if cached is not None else rows.JOB_TYPE]  # complete_short's, or a full row's
        counts.bump_one(conn, self.queue, job_type, _RUNNING, _COMPLETED)
        return row, bool(row[-1]) and self.release_dependents(conn, job_id)

    def complete_all(
        self, conn: _Conn, *, items: Sequence[Finish], now: float
    ) -> tuple[list[Finished], bool]:
        """Complete many jobs in this transaction; one outcome per item, in order.

        Those claimed through this object go in one ``UPDATE ... FROM (VALUES ...)`` by
        rowid per chunk; the rest, and the explanation of each refusal, one by one.
        Returns the outcomes and whether any dependents were freed.
        """
        got: dict[int, Finished] = {}
        released = False
        batch: dict[int, int] = {}  # seq -> position of its first item
        for pos, item in enumerate(items):
            if item.cached is not None and item.cached[0] not in batch:
                batch[item.cached[0]] = pos
        seqs = list(batch)
        for lo in range(0, len(seqs), SQL.COMPLETE_BATCH_MAX):
            chunk = seqs[lo : lo + SQL.COMPLETE_BATCH_MAX]
            params: list[Any] = []
            chosen = [items[batch[seq]] for seq in chunk]
            # None results are not bound at all (sqlite3 binds None slowly, see bindable).
            results = any(item.blob is not None for item in chosen)
            for seq, item in zip(chunk, chosen, strict=True):
                if results:
                    blob = None if item.blob is None else rows.bindable(item.blob)
                    params += (seq, item.token, blob)
                else:
                    params += (seq, item.token)
            # One statement text per size bucket, not per batch size: each connection
            # keeps every text it ran prepared (about 22 KB each), and batch sizes vary
            # with timing. Rows of seq -1 match no job.
            size = SQL.complete_bucket(len(chunk))
            params += ((-1, 0, 0) if results else (-1, 0)) * (size - len(chunk))
            params.append(now)
            done = conn.execute(SQL.complete_batch(size, results), params).fetchall()
            counts.bump(conn, self.queue, counts.moved((row[3] for row in done), _RUNNING, _COMPLETED))
            for seq, *row in done:
                pos = batch[seq]
                got[pos] = (row, True)
                if row[-1] and self.release_dependents(conn, items[pos].job_id):
                    released = True
        for pos, item in enumerate(items):
            if pos in got:
                continue
            try:
                if item.cached is not None and batch.get(item.cached[0]) == pos:
                    self.refuse_lease(conn, item.job_id, item.token)  # the batch missed it
                row, freed = self.complete(conn, item=item._replace(cached=None), now=now)
            except (StaleLeaseError, JobNotFoundError) as exc:
                got[pos] = exc
                continue
            released = released or freed
            got[pos] = (row, False)
        return [got[pos] for pos in range(len(items))], released

    # -- leases -------------------------------------------------------------------------

    def refuse_lease(self, conn: _Conn, job_id: str, token: int) -> None:
        """Raise why a leased call with ``token`` missed.

        Raises:
            JobNotFoundError: no such job.
            StaleLeaseError: the job is not RUNNING, or another attempt holds it.
        """
        found = conn.execute(SQL.lease_state, (self.queue, job_id)).fetchone()
        if found is None:
            raise JobNotFoundError(job_id, queue=self.queue)
        status, attempt = found
        if status != _RUNNING:
            raise StaleLeaseError(job_id, token, reason=f"the job is {status}, not RUNNING")
        raise StaleLeaseError(job_id, token, reason=f"attempt {attempt} holds the lease now")

    def rescue(
        self,
        conn: _Conn,
        chosen: list[tuple[int, str, int, float, float | None, bool]],
        now: float,
        max_lost: int,
        on_dead: Callable[[_Conn, int, str], None] | None = None,
    ) -> list[str]:
        """Give back each chosen ``(seq, job_id, attempt, lease_until, lease_mono, in_batch)``
        whose lease is unchanged.

        Each is a compare-and-set on (RUNNING, same attempt, the lease's deadlines as the
        reaper judged them lapsed): a job whose owner completed, failed or renewed it
        meanwhile is left alone. Returns the ids
        given back: CANCELLED if cancellation was requested; a job of a batch PENDING
        with ``run_alone`` and its loss not counted; a job claimed alone DEAD once lost
        ``max_lost`` times, PENDING otherwise. ``on_dead(conn, seq, job_id)`` is called
        for each job that went DEAD (its dead letter), in this transaction.
        """
        done = []
        for seq, job_id, attempt, lease_until, lease_mono, in_batch in chosen:
            sql = SQL.rescue_from_batch if in_batch else SQL.rescue
            got = conn.execute(sql, (seq, attempt, lease_until, lease_mono)).fetchone()
            if got is None:
                continue
            lost, cancel, depends, sched, job_type, priority = got
            job = JobState(seq, job_id, _RUNNING, depends, sched, job_type, priority)
            if cancel:
                self.move(conn, job, "CANCELLED", now, {"finished_at": now})
            elif in_batch:
                self.move(conn, job, _PENDING, now)
            elif lost >= max_lost:
                self.move(conn, job, "DEAD", now, {"error": f"worker lost {lost}×", "finished_at": now})
                if on_dead is not None:
                    on_dead(conn, seq, job_id)
            else:
                self.move(conn, job, _PENDING, now)
            done.append(job_id)
        return done

    def bury_undecodable(
        self, conn: _Conn, *, claimed: Sequence[tuple[Sequence[Any], DeserializationError]], now: float
    ) -> None:
        """A claim took jobs it cannot decode: each goes DEAD with the reason, dependents failed.

        Each is a compare-and-set on the claim just made (RUNNING, same attempt), so a
        job that changed since is left alone.
        """
        for row, exc in claimed:
            job_id = row[rows.ID]
            got = conn.execute(SQL.bury_claimed, (str(exc), now, row[rows.SEQ], row[rows.ATTEMPT])).fetchone()
            if got is not None:
                counts.bump_one(conn, self.queue, got[0], _RUNNING, "DEAD")
                logger.warning("job %s of queue %r moved to DEAD at claim: %s", job_id, self.queue, exc)
                self.fail_dependents(conn, job_id, "DEAD", now)
