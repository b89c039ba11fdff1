"""``SQLiteQueue``: a durable queue in one SQLite file, shared by the processes of one host.

This module owns the SQLite backend's public class and its transitions. Beside it: the
file format, its checks and the URL form in ``_sqlite_schema``; connections and the
mapping of driver errors in ``_sqlite_db``; rows <-> jobs in ``_sqlite_rows``; the SQL
text in ``_sqlite_sql``; the work done inside a transaction (dependency graph, status
moves, rescues) in ``_sqlite_graph``; reads, the worker registry and waiting in
``_sqlite_reads``; named locks in ``_sqlite_coord``. One file holds any number of queues
(rows carry their queue's name); one ``SQLiteQueue`` object is one queue of one file.
``sqlite:///:memory:`` is refused: every thread and process needs its own connection to
the same file.

How it runs:

* WAL journal, ``busy_timeout`` 5 s, every connection per thread and per process (a
  child after ``fork()`` opens its own).
* Writers take turns on a side ``flock`` (``<file>-typedq-lock``, see ``_sqlite_db``)
  rather than on SQLite's sleeping busy handler.
* Every transition is one ``BEGIN IMMEDIATE`` transaction (retried once on SQLITE_BUSY):
  taking the write lock up front means a transaction never has to upgrade a read lock,
  the case where SQLite skips the busy timeout and fails at once with "database is
  locked". Reads are single statements, each its own consistent snapshot.
* A claim is one ``UPDATE ... RETURNING`` over the partial index of ready jobs
  (PENDING, unblocked, not delayed), best first: priority desc, scheduled_at (None as
  0), created_at, insertion order. Delayed jobs sit in their own index and each claim
  first promotes the due ones (at most 1,000), so a backlog of future jobs costs a claim
  nothing.
* Dependencies: ``blocked_by`` counts a PENDING job's unfinished dependencies, with one
  ``job_deps`` edge per dependency it waits for. Completing a job releases its
  dependents in the same transaction; FAILED, DEAD, CANCELLED (or delete) fail them,
  transitively, in the same transaction too.
* A claim's transaction runs its SQL alone; the rows are decoded into jobs after it
  commits, so the write lock is never held while Python decodes payloads. A job whose
  stored payload or metadata cannot be decoded is then moved to DEAD by a second
  transaction, fenced on the claim just made, with the reason as its error
  (``"UnknownCodecError: ..."``); the others are handed out (when all were such jobs,
  the claim is made again). Reads never fail on such bytes: the job is
  returned with ``payload={}`` and the problem and raw bytes under
  ``metadata["typedq.undecodable"]``.
* ``reclaim_expired`` does not rescue a job whose lease expired while its owner is
  alive on this host (pid and process start time, see ``typedq._identity``); an owner
  that is dead, or cannot be checked (another host, a hand-made worker id), is rescued.
  Each rescue is a compare-and-set on (RUNNING, same attempt, lease expired). The
  flip side: a worker *thread* that hangs inside a live process keeps its jobs until
  that process ends (a pid can be checked; a thread of another process cannot).
* ``complete`` returns the job object this queue handed out at claim, updated (as the
  memory backend does), reading back only the columns another process may change.
* ``count_by_status``, ``count_by_type``, ``count_submitted``, ``size`` and
  ``count_by_priority`` (with the delayed jobs already due, from their index) read the
  ``job_counts`` table, kept by every transition in its own transaction (one multi-row
  upsert of the (job type, status) counts it changed, see ``_sqlite_counts``). Listing
  PENDING, RUNNING or COMPLETED jobs scans the queue's rows (no index over every status
  keeps the hot path at the fewest page writes); listing SCHEDULED, FAILED, DEAD or
  CANCELLED jobs uses a partial index.

Durability (``durability=``):

* ``"normal"`` (default, ``PRAGMA synchronous=NORMAL``): a committed transaction survives
  any crash of the process (kill -9 included), because it is in the WAL file. A power
  cut or OS crash may roll back the transactions committed since the last checkpoint
  (the last moments of work), but never corrupts the file.
* ``"full"`` (``synchronous=FULL``): every commit is fsynced to the WAL, so it also
  survives a power cut or OS crash (if the disk honours fsync). Commits are several
  times slower.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

from typedq._identity import owner_alive
from typedq.backends import _sqlite_counts as counts
from typedq.backends import _sqlite_dead as dead_letters
from typedq.backends import _sqlite_rows as rows
from typedq.backends._graph import jobs_from_export
from typedq.backends._sqlite_control import SQLiteControl, restore_control
from typedq.backends._sqlite_coord import SQLiteCoordination
from typedq.backends._sqlite_db import SYNCHRONOUS, Connections, map_errors
from typedq.backends._sqlite_dead import SQLiteDeadLetters
from typedq.backends._sqlite_driver import is_unique_violation, sqlite3
from typedq.backends._sqlite_graph import Finish, QueueGraph
from typedq.backends._sqlite_policy import DUE_AND_FAIR, PolicyPlan, policy_claim
from typedq.backends._sqlite_reads import SQLiteReads
from typedq.backends._sqlite_schema import (
    check_file,
    check_sqlite_version,
    parse_sqlite_url,
    prepare_schema,
)
from typedq.backends._sqlite_sql import SQL
from typedq.backends._sqlite_unique import SQLiteUniqueKeys, take_unique_keys
from typedq.backends._sqlite_wait import signal_for
from typedq.backends._unique import unique_of
from typedq.backends.base import Claim, Completion, Queue
from typedq.clock import Clock, system_clock
from typedq.errors import (
    ConfigError,
    DeserializationError,
    DuplicateJobError,
    SerializationError,
    TypedqError,
)
from typedq.job import (
    LEVELS,
    MAX_TRACEBACK,
    Job,
    JobLogLine,
    JobStatus,
    Priority,
    check_failure_text,
    level_index,
    parse_priority,
)
from typedq.policy import ClaimPolicy
from typedq.serializers.base import FrameCodec

__all__ = ["SQLiteQueue", "parse_sqlite_url"]

logger = logging.getLogger("typedq.backends.sqlite")

_PENDING: Final = "PENDING"
_RUNNING: Final = "RUNNING"
_COMPLETED: Final = "COMPLETED"
#: Most claims remembered for complete(); half are forgotten when it is passed.
_INFLIGHT_MAX: Final = 8192

_Conn = sqlite3.Connection


def _bounded(traceback: str | None) -> str:
    """The traceback column a failure writes: its last ``MAX_TRACEBACK`` characters, or
    '' for none (NULL means "not written since schema 7", see ``_sqlite_schema``)."""
    return "" if traceback is None else traceback[-MAX_TRACEBACK:]


class SQLiteQueue(SQLiteReads, SQLiteControl, SQLiteCoordination, SQLiteDeadLetters, SQLiteUniqueKeys, Queue):
    """A durable job queue stored in a SQLite file; safe across threads and processes.

    Args:
        path: the database file; created with its schema when missing or empty.
        name: the queue's name (one file holds many queues).
        clock: the time source (tests pass a ``FakeClock``).
        codec: how payloads, metadata and results are stored; ``FrameCodec("json")``
            when omitted.
        durability: ``"normal"`` (``synchronous=NORMAL``) or ``"full"``
            (``synchronous=FULL``); see the module docstring for what each may lose.

    Raises:
        ConfigError: a bad name, path (``:memory:``) or durability.
        BackendError: the SQLite library is older than 3.35; the file is corrupt, not a
            typedq file, or was written by a newer typedq (the file is left untouched).
        BackendWriteError: the file or its directory is read-only.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str = "default",
        clock: Clock = system_clock,
        codec: FrameCodec | None = None,
        durability: str = "normal",
    ) -> None:
        given: object = name
        if not isinstance(given, str) or not given:
            raise ConfigError("name", name, "a non-empty queue name")
        if durability not in SYNCHRONOUS:
            raise ConfigError(
                "durability", durability, "'normal' (synchronous=NORMAL) or 'full' (synchronous=FULL)"
            )
        text = os.fspath(path)
        if not text or text == ":memory:":
            raise ConfigError(
                "path", text, "a file path; ':memory:' cannot be shared between threads and processes"
            )
        self._version = check_sqlite_version()
        self._path = Path(text).absolute()
        self._name = name
        self._clock = clock
        self._durability = durability
        self._rows = rows.RowCodec(codec if codec is not None else FrameCodec("json"))
        self._graph = QueueGraph(name, self._rows)
        # Shared by this process's queue objects on the file (one poller per file).
        self._signal = signal_for(str(self._path))
        self._wake = self._signal.wake
        # Set when a take found nothing: the next one checks with a read first, so idle
        # pollers do not queue up for the write lock.
        self._idle = False
        self._policy: ClaimPolicy | None = None
        self._plan: PolicyPlan | None = None
        # Jobs this object handed out, by (job_id, token): complete() returns them updated
        # instead of reading every column back. Bounded; a miss only costs a wider read.
        self._inflight: dict[tuple[str, int], tuple[int, Job]] = {}
        self._inflight_lock = threading.Lock()
        check_file(self._path)
        self._db = Connections(self._path, SYNCHRONOUS[durability], around_write=(counts.fold, counts.mark))
        self._unfolded = 0  # single enqueues since this object last folded the counts
        with map_errors(self._path):
            # Judged before anything is written: no PRAGMA that writes runs on a file
            # that turns out not to be ours.
            conn = self._db.connect(configure=False)
            try:
                prepare_schema(conn, self._path)
                self._db.configure(conn)
            except BaseException:
                conn.close()
                raise
        self._db.adopt(conn)

    # -- properties ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def clock(self) -> Clock:
        """The queue's clock."""
        return self._clock

    @property
    def path(self) -> Path:
        """The database file."""
        return self._path

    def __repr__(self) -> str:
        return f"SQLiteQueue({str(self._path)!r}, name={self._name!r})"

    # -- adding -------------------------------------------------------------------------

    def enqueue(self, job: Job) -> str:
        """Add one job in one transaction; see :meth:`Queue.enqueue`."""
        if job.depends_on and job.status is JobStatus.PENDING:
            return self.enqueue_many([job])[0]
        blobs = self._rows.blobs(job)
        now = self._clock.now()
        fresh = self._rows.fresh_row(job, self._name, blobs, now)
        if fresh is None:
            row, sql = self._rows.row(job, self._name, blobs, now), SQL.insert
        else:
            row, sql = fresh[1], SQL.insert_into(fresh[0])

        spec = unique_of(job)
        # The job is counted when the counts are next folded (see _sqlite_counts): by
        # another transaction, or by this one every FOLD_EVERY enqueues.
        self._unfolded += 1
        fold = self._unfolded >= counts.FOLD_EVERY
        if fold:
            self._unfolded = 0

        def tx(conn: _Conn) -> None:
            try:
                conn.execute(sql, row)
            except sqlite3.IntegrityError as exc:
                if is_unique_violation(exc):
                    raise DuplicateJobError(job.job_id, queue=self._name) from exc
                raise
            if spec is not None:
                take_unique_keys(conn, self._name, [(job.job_id, spec)], now)
            if fold:
                counts.fold(conn)  # this job with the others above the mark

        try:
            self._db.write(tx, around=False)
        except OverflowError:
            rows.revalidate([job])
            raise
        self._wake()
        return job.job_id

    def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        """Add many jobs all-or-nothing, in one transaction; see :meth:`Queue.enqueue_many`.

        Raises:
            SerializationError: a job's payload, metadata or result cannot be encoded;
                the message names ``jobs[i]`` and the job id. Nothing is stored.
        """
        return self._enqueue_batch(jobs, {})

    def _enqueue_batch(self, jobs: Sequence[Job], logs: dict[str, list[JobLogLine]]) -> list[str]:
        """``enqueue_many``, storing the jobs' progress and ``logs`` (by job id) in the
        same transaction."""
        batch: dict[str, Job] = {}
        encoded: dict[str, rows.Blobs] = {}
        # Jobs that never ran bind only the columns that differ from the defaults; a
        # batch with dependencies is placed by the graph instead (fresh is None).
        fresh: list[tuple[str, tuple[Any, ...]] | None] | None = []
        blobs_of, fresh_row, name = self._rows.blobs, self._rows.fresh_row, self._name
        now = self._clock.now()
        for index, job in enumerate(jobs):
            job_id = job.job_id
            if job_id in batch:
                raise DuplicateJobError(job_id, queue=name)
            batch[job_id] = job
            try:
                blobs = encoded[job_id] = blobs_of(job)
            except SerializationError as exc:
                exc.args = (f"jobs[{index}]: {exc}",)
                raise
            if fresh is not None:
                if job.depends_on and job.status is JobStatus.PENDING:
                    fresh = None
                else:
                    fresh.append(fresh_row(job, name, blobs, now))
        if not batch:
            return []
        insert: Callable[[_Conn], None] = partial(
            self._graph.insert_batch, batch=batch, encoded=encoded, fresh=fresh, now=now
        )
        specs = [(job_id, spec) for job_id, job in batch.items() if (spec := unique_of(job)) is not None]
        if specs:
            insert_jobs = insert

            def insert_with_keys(conn: _Conn) -> None:
                insert_jobs(conn)
                take_unique_keys(conn, name, specs, now)

            insert = insert_with_keys
        if logs or any(job.progress is not None for job in batch.values()):
            insert_rows = insert

            def insert_with_control(conn: _Conn) -> None:
                insert_rows(conn)
                restore_control(conn, name, list(batch.values()), logs)

            insert = insert_with_control
        # Counted like single enqueues (see enqueue): folded by this transaction every
        # FOLD_EVERY jobs, else by the file's next other write.
        self._unfolded += len(batch)
        fold = self._unfolded >= counts.FOLD_EVERY
        if fold:
            self._unfolded = 0
        add = insert

        def insert_and_fold(conn: _Conn) -> None:
            add(conn)
            if fold:
                counts.fold(conn)

        try:
            self._db.write(insert_and_fold, around=False)
        except OverflowError:
            rows.revalidate(batch.values())
            raise
        self._wake()
        return list(batch)

    def import_jobs(self, jobs_data: Iterable[dict[str, Any]]) -> list[str]:
        """Add jobs from ``export_jobs()`` data all-or-nothing; see :meth:`Queue.import_jobs`."""
        return self._enqueue_batch(*jobs_from_export(jobs_data))

    # -- claiming -----------------------------------------------------------------------

    def _take(
        self,
        limit: int,
        sql: str,
        head: tuple[Any, ...],
        now: float,
        *,
        claimed: tuple[Any, ...] | None = None,
        types: tuple[str, ...] = (),
        policy: PolicyPlan | None = None,
        group: int | None = None,
    ) -> list[Job]:
        """Take up to ``limit`` ready jobs (of ``types``, when the SQL names them) with
        ``sql``, burying undecodable ones.

        ``claimed`` starts with the (worker_id, started_at, lease_until) a claim sets:
        its rows are :data:`~typedq.backends._sqlite_rows.CLAIM_COLUMNS`, without those.
        ``group`` is a batch claim's claim group (``sql`` sets it after ``head``).

        The transaction runs the SQL alone: rows are decoded into jobs after it commits,
        so the write lock is never held while Python builds jobs (other processes claim
        meanwhile). A row that cannot be decoded is then moved to DEAD by a second,
        fenced transaction; when every row taken was such a row, the claim is retried.
        """
        if limit <= 0:
            return []
        if self._idle and not self._has_ready(types or None):
            # The last claim took nothing and none is ready now (of ``types``: counted,
            # not looked for in jobs_ready, which a claim by type walks past the jobs
            # of other types): no write transaction.
            return []
        name = self._name
        build = partial(self._rows.job, strict=True, claimed=claimed[:3] if claimed else None)

        def tx(conn: _Conn) -> list[Sequence[Any]]:
            fair_state = self._promote(conn, now, policy)
            take = limit
            if take > 1 and conn.execute(SQL.any_alone, (name,)).fetchone() is not None:
                take = 1  # a job rescued from a batch waits: claim one at a time
            # The policy's state rows are written with the claim's counts (one statement).
            state: list[counts.StateRow] = []
            if policy is not None:
                got, state = policy_claim(
                    conn, plan=policy, queue=name, now=now, head=head, types=types or None,
                    limit=take, group=group, fair_state=fair_state,
                )
            else:
                sets = head if group is None else (*head, group)
                got = conn.execute(sql, (*sets, name, now, *types, take)).fetchall()
            if len(got) == 1:  # the row taken was in the ready index
                job_type, priority = got[0][rows.JOB_TYPE], got[0][rows.PRIORITY]
                counts.add_rows(conn, (
                    (name, job_type, _PENDING, -1), (name, job_type, _RUNNING, 1),
                    (name, job_type, counts.ready(priority), -1),
                ), state)
            elif got:
                kinds = Counter((row[rows.JOB_TYPE], row[rows.PRIORITY]) for row in got)
                moves: counts.Deltas = Counter()
                for (job_type, priority), n in kinds.items():
                    moves[job_type, _PENDING] -= n
                    moves[job_type, _RUNNING] += n
                    moves[job_type, counts.ready(priority)] -= n
                counts.bump(conn, name, moves, state)
            elif state:
                counts.add_rows(conn, (), state)
            return got

        while True:
            got = self._db.write(tx)
            if len(got) > 1 and policy is None:
                # An UPDATE returns its rows in no set order: claim order. A policy's rows
                # come in the order it chose them, and stay so (as on every backend).
                got.sort(key=rows.sort_key)
            taken: list[tuple[int, Job]] = []
            bad: list[tuple[Sequence[Any], DeserializationError]] = []
            for row in got:
                try:
                    taken.append((row[rows.SEQ], build(row)))
                except DeserializationError as exc:
                    bad.append((row, exc))
            if bad:
                self._db.write(partial(self._graph.bury_undecodable, claimed=bad, now=now))
            if taken or not got:
                break
        self._idle = not taken
        inflight = self._inflight
        for seq, job in taken:
            inflight[job.job_id, job.attempt] = (seq, job)
        if len(inflight) > _INFLIGHT_MAX:
            self._trim_inflight()
        return [job for _, job in taken]

    def _promote(self, conn: _Conn, now: float, policy: PolicyPlan | None) -> bytes | None:
        """Promote the delayed jobs that are due, at a claim's start. Under weighted
        fairness, return the packed fairness state, read with the check for due jobs
        (one statement for both)."""
        if policy is None or not policy.fair:
            self._graph.promote(conn, now)
            return None
        due, fair_state = conn.execute(DUE_AND_FAIR, (self._name, now)).fetchone()
        if due:
            self._graph.promote(conn, now, checked=True)
        return fair_state  # type: ignore[no-any-return]

    def _trim_inflight(self) -> None:
        """Forget the oldest claims (completed elsewhere, reclaimed, or abandoned)."""
        with self._inflight_lock:
            inflight = self._inflight
            while len(inflight) > _INFLIGHT_MAX // 2:
                inflight.pop(next(iter(inflight)), None)

    def claim(
        self, worker_id: str, *, lease_s: float, job_types: Collection[str] | None = None
    ) -> Claim | None:
        """Take the best ready job with a lease; see :meth:`Queue.claim`."""
        types = None if job_types is None else tuple(job_types)
        if types == ():
            return None
        now = self._clock.now()
        until = now + lease_s
        # What the claim sets (the claimed job's fields too), and the lease's deadline by
        # this host's monotonic clock (see reclaim_expired).
        head = (worker_id, now, until, self._clock.monotonic() + lease_s)
        sql = SQL.claim(False, None if types is None else len(types))
        taken = self._take(1, sql, head, now, claimed=head, types=types or (), policy=self._plan)
        return Claim(taken[0], taken[0].attempt, until) if taken else None

    def claim_many(
        self, worker_id: str, *, lease_s: float, limit: int, job_types: Collection[str] | None = None
    ) -> list[Claim]:
        """Claim up to ``limit`` ready jobs in one transaction; see :meth:`Queue.claim_many`."""
        types = None if job_types is None else tuple(job_types)
        if types == ():
            return []
        now = self._clock.now()
        until = now + lease_s
        head = (worker_id, now, until, self._clock.monotonic() + lease_s)
        sql = SQL.claim(True, None if types is None else len(types))
        # The batch's claim group: random, so claims of many processes need no counter.
        group = secrets.randbits(63)
        taken = self._take(
            limit, sql, head, now, claimed=head, types=types or (), policy=self._plan, group=group
        )
        return [Claim(job, job.attempt, until) for job in taken]

    def dequeue(self) -> Job | None:
        """Take the best ready job without a lease; see :meth:`Queue.dequeue`."""
        now = self._clock.now()
        taken = self._take(1, SQL.dequeue, (now,), now)
        return taken[0] if taken else None

    def peek(self) -> Job | None:
        """Return the job :meth:`dequeue` would take, without taking it."""
        now = self._clock.now()
        found = self._db.read(SQL.peek_ready, (self._name, now)) + self._db.read(
            SQL.peek_due, (self._name, now)
        )
        if not found:
            return None
        return self._rows.job(min(found, key=rows.sort_key))

    # -- leased transitions -------------------------------------------------------------

    def _leased(
        self,
        job_id: str,
        token: int,
        sql: str,
        params: tuple[Any, ...],
        after: Callable[[_Conn, Sequence[Any]], None] | None = None,
        *,
        to: str | None = None,
        now: float = 0.0,
    ) -> Sequence[Any]:
        """Run one compare-and-set on (RUNNING, attempt == token); raise if it misses.

        ``to`` is the status ``sql`` moves the job to (its row then starts with
        :data:`~typedq.backends._sqlite_rows.SELECT_COLUMNS`), None when it keeps it;
        a job back to PENDING is ready unless scheduled after ``now`` (delayed).
        """

        def tx(conn: _Conn) -> Sequence[Any]:
            got: list[Sequence[Any]] = conn.execute(sql, (*params, self._name, job_id, token)).fetchall()
            if not got:
                self._graph.refuse_lease(conn, job_id, token)
            if to is not None:
                row = got[0]
                moves = counts.moved([row[rows.JOB_TYPE]], _RUNNING, to)
                sched = row[rows.SCHEDULED]
                if to == _PENDING and (sched is None or sched <= now):
                    moves[row[rows.JOB_TYPE], counts.ready(row[rows.PRIORITY])] += 1
                elif to == _PENDING:
                    moves[row[rows.JOB_TYPE], counts.DELAYED] += 1
                counts.bump(conn, self._name, moves)
            if after is not None:
                after(conn, got[0])
            return got[0]

        return self._db.write(tx)

    def complete(self, job_id: str, *, token: int, result: Any = None) -> Job:
        """RUNNING → COMPLETED and release dependents, in one transaction; see :meth:`Queue.complete`.

        The returned job is the one this object handed out at claim (the same object,
        as with the memory backend) with its completion applied, when it still has it:
        the UPDATE then returns only the few columns another process may have changed.
        """
        blob = self._rows.encode_result(job_id, result)
        now = self._clock.now()
        cached = self._inflight.pop((job_id, token), None)
        item = Finish(job_id, token, blob, cached)
        row, released = self._db.write(partial(self._graph.complete, item=item, now=now))
        if released:
            self._wake()
        return self._completed(row, cached, result, now)

    def complete_many(self, completions: Sequence[Completion]) -> list[Job | TypedqError]:
        """Complete many jobs in one transaction (a group commit); see :meth:`Queue.complete_many`.

        Results are encoded before the transaction; a result that cannot be stored, or a
        stale token, refuses that completion alone.
        """
        outcomes: list[Job | TypedqError | None] = [None] * len(completions)
        places: list[tuple[int, Any]] = []  # (index in completions, result) of each item
        items: list[Finish] = []
        inflight = self._inflight
        for index, (job_id, token, result) in enumerate(completions):
            try:
                blob = self._rows.encode_result(job_id, result)
            except SerializationError as exc:
                outcomes[index] = exc
                continue
            places.append((index, result))
            items.append(Finish(job_id, token, blob, inflight.pop((job_id, token), None)))
        if items:
            now = self._clock.now()
            done, released = self._db.write(partial(self._graph.complete_all, items=items, now=now))
            if released:
                self._wake()
            for (index, result), item, outcome in zip(places, items, done, strict=True):
                if isinstance(outcome, TypedqError):
                    outcomes[index] = outcome
                else:
                    row, short = outcome
                    outcomes[index] = self._completed(row, item.cached if short else None, result, now)
        return [o for o in outcomes if o is not None]

    def _completed(self, row: Sequence[Any], cached: tuple[int, Job] | None, result: Any, now: float) -> Job:
        """The completed job: the claimed object updated when this object still has it."""
        if cached is None:
            return self._rows.job(row, result=result)
        job = cached[1]
        job.status = JobStatus.COMPLETED
        job.result = result
        job.finished_at = now
        job.lease_until = None
        job.priority = row[0]
        job.cancel_requested = bool(row[1])
        return job

    def fail(
        self, job_id: str, *, token: int, error: str, retry_at: float, traceback: str | None = None
    ) -> Job:
        """RUNNING → PENDING for a retry at ``retry_at``; see :meth:`Queue.fail`."""
        check_failure_text(error, traceback)
        self._inflight.pop((job_id, token), None)
        now = self._clock.now()
        params = (error, retry_at, 1 if retry_at > now else 0, _bounded(traceback))
        row = self._leased(job_id, token, SQL.fail, params, to=_PENDING, now=now)
        self._wake()
        return self._rows.job(row)

    def bury(
        self,
        job_id: str,
        *,
        token: int,
        error: str,
        traceback: str | None = None,
        dead_letter: Queue | None = None,
        dlq_max: int | None = None,
    ) -> Job:
        """RUNNING → DEAD, fail dependents and put the dead letter into ``dead_letter``, in
        one transaction; see :meth:`Queue.bury`."""
        check_failure_text(error, traceback)
        dlq = self._dead_letter_name(dead_letter, dlq_max)
        self._inflight.pop((job_id, token), None)
        now = self._clock.now()
        dropped: list[str] = []

        def after(conn: _Conn, row: Sequence[Any]) -> None:
            self._graph.fail_dependents(conn, job_id, "DEAD", now)
            if dlq is not None:
                dropped.extend(self._copy_dead(conn, row[rows.SEQ], job_id, (dlq, dlq_max), now))

        row = self._leased(job_id, token, SQL.bury, (error, now, _bounded(traceback)), after, to="DEAD")
        self._log_dropped(dlq, dlq_max, dropped)
        return self._rows.job(row)

    def release(self, job_id: str, *, token: int) -> Job:
        """RUNNING → PENDING, not counted as a failure; see :meth:`Queue.release`."""
        self._inflight.pop((job_id, token), None)
        now = self._clock.now()
        row = self._leased(job_id, token, SQL.release, (now,), to=_PENDING, now=now)
        self._wake()
        return self._rows.job(row)

    def extend_lease(self, job_id: str, *, token: int, lease_s: float) -> float:
        """Push the lease deadline; see :meth:`Queue.extend_lease`."""
        until = self._clock.now() + lease_s
        self._leased(job_id, token, SQL.extend, (until, self._clock.monotonic() + lease_s))
        return until

    def reclaim_expired(
        self,
        *,
        max_lost: int = 3,
        limit: int = 1000,
        dead_letter: Queue | None = None,
        dlq_max: int | None = None,
    ) -> list[str]:
        """Give back expired leases whose owner is not alive here; see :meth:`Queue.reclaim_expired`.

        A lease whose wall-clock deadline passed is rescued unless its owner is a live
        process of this host (``owner_alive``: pid and start time, not a zombie) whose
        lease has not expired by the host's monotonic clock either (``lease_mono``,
        set by each claim and renewal): a jump of the wall clock rescues nothing from a
        live owner, and a live owner that stopped renewing a lease loses it. A lease of
        an owner of this host whose monotonic deadline passed is rescued even before its
        wall-clock deadline: a wall clock stepped back does not keep a dead worker's job.
        Each rescue is a compare-and-set on (RUNNING, same attempt, the lease judged). A job lost
        ``max_lost`` times goes DEAD with its dead letter put into ``dead_letter`` in the
        same transaction.
        """
        dlq = self._dead_letter_name(dead_letter, dlq_max)
        now = self._clock.now()
        chosen = self._expired(now, self._clock.monotonic(), limit, owner_alive)
        if not chosen:
            return []
        dropped: list[str] = []

        def on_dead(conn: _Conn, seq: int, job_id: str) -> None:
            if dlq is not None:
                dropped.extend(self._copy_dead(conn, seq, job_id, (dlq, dlq_max), now))

        done = self._db.write(lambda conn: self._graph.rescue(conn, chosen, now, max_lost, on_dead))
        self._log_dropped(dlq, dlq_max, dropped)
        if done:
            self._wake()
        return done

    # -- management ---------------------------------------------------------------------

    def update_status(self, job_id: str, status: JobStatus) -> None:
        """Set a job's status in one transaction, keeping indexes and dependents right."""
        new = JobStatus(status).value
        now = self._clock.now()
        self._db.write(partial(self._graph.set_status, job_id=job_id, status=new, now=now))
        if new in (_PENDING, _COMPLETED):
            self._wake()

    def cancel(self, job_id: str, *, token: int | None = None) -> bool:
        """Cancel a job in one transaction; see :meth:`Queue.cancel`."""
        if token is not None:
            self._inflight.pop((job_id, token), None)
        return self._db.write(partial(self._graph.cancel, job_id=job_id, now=self._clock.now(), token=token))

    def set_claim_policy(self, policy: ClaimPolicy | None) -> None:
        """Claim by ``policy`` from now on; see :meth:`Queue.set_claim_policy`."""
        self._policy = None if policy is None or policy.is_strict else policy
        self._plan = None if self._policy is None else PolicyPlan.build(self._policy)

    @property
    def claim_policy(self) -> ClaimPolicy | None:
        """The policy claims follow (None: strict priority, no limits)."""
        return self._policy

    def count_by_priority(self) -> dict[Priority, int]:
        """Ready jobs per priority level; see :meth:`Queue.count_by_priority`.

        The jobs of the ready index per priority are counted in ``job_counts``; the
        delayed jobs already due (not yet promoted by a claim) are counted from the
        ``jobs_delayed`` index, up to now only."""
        found = dict.fromkeys(LEVELS, 0)
        ready = self._db.read(counts.READY_BY_PRIORITY, (self._name,))
        due = self._db.read(SQL.due_by_priority, (self._name, self._clock.now()))
        for priority, count in ready + due:
            found[LEVELS[level_index(priority)]] += int(count)
        return found

    def set_priority(self, job_id: str, priority: int | str) -> None:
        """Change a job's priority (an int or a level name); a PENDING job is re-ordered at once."""
        priority = parse_priority(priority)
        self._db.write(partial(self._graph.set_priority, job_id=job_id, priority=priority))

    def replay(self, job_id: str) -> Job:
        """DEAD → PENDING with retry_count 0 and no error; see :meth:`Queue.replay`."""
        row = self._db.write(partial(self._graph.replay, job_id=job_id, now=self._clock.now()))
        self._wake()
        return self._rows.job(row)

    def retry(
        self, job_id: str, *, with_dependents: bool = False, dead_letter: Queue | None = None
    ) -> list[str]:
        """FAILED, DEAD or CANCELLED → PENDING (with dependents), taking the job's dead
        letter back out of ``dead_letter``, in one transaction. See :meth:`Queue.retry`.
        """
        dlq = self._dead_letter_name(dead_letter)
        now = self._clock.now()

        def tx(conn: _Conn) -> list[str]:
            if dlq is not None:
                dead_letters.restore_dead(conn, queue=self._name, job_id=job_id, dlq=dlq)
            done = self._graph.retry(conn, job_id=job_id, with_dependents=with_dependents, now=now)
            if dlq is not None:
                dead_letters.take_back(conn, self._rows, job_id=job_id, dlq=dlq, now=now)
            return done

        done = self._db.write(tx)
        self._wake()
        return done

    def delete(self, job_id: str) -> None:
        """Remove a job that is not RUNNING; its waiting dependents fail. See :meth:`Queue.delete`."""
        self._db.write(partial(self._graph.delete, job_id=job_id, now=self._clock.now()))

    def close(self) -> None:
        """Close this process's connections and wake waiters; the queue is unusable afterwards."""
        self.interrupt()
        self._db.close()
