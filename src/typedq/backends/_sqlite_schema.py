"""The SQLite backend's file format: schema, migrations, and the checks made at open.

This module owns what a typedq SQLite file looks like and how a file is judged before
typedq writes a single byte to it:

* ``PRAGMA application_id`` is :data:`APPLICATION_ID` ("tydq") in every typedq file, and
  ``PRAGMA user_version`` is the schema version. :data:`MIGRATIONS` holds, for each
  version, the statements that upgrade a file from the version before; opening an older
  file applies the missing ones in one ``BEGIN IMMEDIATE`` transaction.
* A file is refused, untouched, when it is not SQLite at all (random bytes, a truncated
  file), when it is a SQLite database of something else (another application id, or
  application id and user_version 0 with tables in it), when a newer typedq wrote it
  (a schema version above :data:`SCHEMA_VERSION`), or when it is read-only. Content is
  judged through SQLite only: typedq never opens the file itself, since closing any
  descriptor of it would drop the POSIX locks SQLite holds on it in this process.
* The SQLite library must be at least :data:`MIN_SQLITE` (``RETURNING``). A version with
  the WAL-reset bug (3.7.0 to 3.51.2) is warned about once, when a file is created, and
  shown in the queue's diagnostics (``typedq status``), not on every open.

Tables (one file holds many queues; every row carries its queue's name)::

    jobs      one row per job. seq INTEGER PRIMARY KEY gives insertion order and is
              never reused: when the row with the largest seq is deleted, a
              high-water row (queue "", status DELETED) takes its seq, so SQLite's
              next rowid stays above every seq ever given (schema 1 used
              AUTOINCREMENT, which writes sqlite_sequence in every enqueue);
              (queue, job_id) is unique. blocked_by counts
              unfinished dependencies; delayed=1 marks a PENDING job whose scheduled_at
              was in the future when last looked at (promoted in batches by claims).
              payload / metadata / result are codec frames (NULL metadata = {}, NULL
              result = None); depends_on is a JSON list (NULL = []); origin is the
              job's own ``queue`` field (a dead-letter queue keeps where a job came from).
              run_alone=1 marks a PENDING job given back from a batch whose worker
              died (claims then take one job at a time); lease_mono is the lease
              deadline by the claiming host's monotonic clock. traceback is the last
              failure's traceback text (schema 7): '' when cleared, NULL when not
              written since (a row of schema 5 keeps it in its metadata frame).
              claim_group (schema 14) names the ``claim_many`` that took a RUNNING
              job with others (a random 63-bit number; NULL: claimed alone), so a
              rescue tells a batch's jobs from one worker's separate claims.
    job_deps  (queue, parent, child): one edge per dependency a PENDING child still
              waits for; it exists exactly while the child is blocked on that parent.
    workers   (queue, worker_id): the worker registry, one row per worker, renewed
              every heartbeat (``last_seen``); ``info`` is the entry as JSON.
    locks     (queue, name): named locks (``Queue.lock``). ``token`` is the lock's fence
              counter: the token of its last acquisition, kept when the lock is
              released (owner and expires_at NULL) or expires, so tokens never repeat.
    schedules (queue, name): periodic jobs; ``definition`` is the schedule as canonical
              JSON, ``next_run_at``, ``last_run_at`` and ``paused`` its state.
    counters  (queue, name): counts a queue keeps (schema 7): the dead letters a
              dead-letter queue dropped (``dead_letters_dropped``).
    claim_state (queue, name, slot): the rings of recent claim times of a claim
              policy's rate limits (schema 8; see ``_sqlite_policy``).
    unique_keys (queue, key): unique jobs (schema 9): the job that took the key, when
              its hold ends by time (``until``, NULL for never) and the statuses it
              holds the key in (``states``, comma-separated); see ``_unique``.
    job_counts (queue, status, job_type): how many jobs are in each status, how many
              were ever submitted (status ``submitted``) and how many are in
              jobs_ready per priority (status ``ready:<priority>``), per job type
              (schema 11), and how many are in jobs_delayed (status ``delayed``,
              schema 12); kept by every transition (see ``_sqlite_counts``). Since
              schema 13 also a claim policy's fairness virtual times (status ``fair``)
              and its rates' claim counts (status ``rate``; see ``_sqlite_policy``).

Indexes: ``jobs_ready`` (partial: PENDING, unblocked, not delayed; in claim order:
priority desc, scheduled_at with NULL first, created_at, seq) serves every claim;
``jobs_delayed`` (partial: PENDING and delayed, by scheduled_at) serves promotion and the
next due time; ``jobs_leased`` (partial: RUNNING with a lease, by lease_until) serves
the reaper; ``jobs_settled`` (partial: SCHEDULED, FAILED, DEAD, CANCELLED) serves listing
the dead-letter states; ``jobs_alone`` (partial: PENDING with run_alone, nearly always
empty) tells a claim whether it must take one job only; ``jobs_finished`` (partial:
COMPLETED, FAILED, DEAD, CANCELLED; by status and finished_at, schema 7) serves
``purge``. Partial conditions use ``=``,
``AND`` and ``OR`` only: SQLite
tests a condition on every INSERT and every status UPDATE, and an ``IN`` list there
builds a temporary table each time (schema 3 rewrote jobs_settled's for that reason).
Keys are plain columns, never expressions: SQLite evaluates an expression for every row
an index gains or loses (schema 4 dropped jobs_ready's ``ifnull(scheduled_at, 0.0)``).

No index covers every status: a transition of the hot path (PENDING -> RUNNING ->
COMPLETED) then writes only the table and the small partial indexes; counting by status
reads ``job_counts`` instead.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Final
from urllib.parse import parse_qsl, unquote

from typedq.backends._sqlite_driver import sqlite3
from typedq.errors import BackendError, BackendWriteError, ConfigError

__all__ = [
    "APPLICATION_ID",
    "FINISHED_CONDITION",
    "MIGRATIONS",
    "MIN_SQLITE",
    "SCHEMA_VERSION",
    "SETTLED_CONDITION",
    "SETTLED_STATUSES",
    "WAL_RESET_BUG",
    "check_file",
    "check_sqlite_version",
    "has_wal_reset_bug",
    "parse_sqlite_url",
    "prepare_schema",
    "wal_reset_warning",
]

logger = logging.getLogger("typedq.backends.sqlite")

#: ``PRAGMA application_id`` of every typedq file: the bytes "tydq".
APPLICATION_ID: Final = 0x74796471
#: The oldest SQLite library typedq runs on: 3.35.0 added ``RETURNING``.
MIN_SQLITE: Final = (3, 35, 0)
#: SQLite versions with the WAL-reset bug (https://sqlite.org/wal.html#walresetbug):
#: rare corruption when connections of several processes write and checkpoint at once.
WAL_RESET_BUG: Final = ((3, 7, 0), (3, 51, 2))

# jobs_settled as schemas 1 and 2 wrote it. Its IN list made every INSERT and every
# status UPDATE build a temporary table of the four statuses (OpenEphemeral), one per row:
# a bulk enqueue ran at half the speed of the same rows with the index written as ORs.
_SETTLED_V1: Final = """CREATE INDEX jobs_settled ON jobs (queue, status)
        WHERE status IN ('SCHEDULED', 'FAILED', 'DEAD', 'CANCELLED')"""
#: The statuses of the jobs_settled index.
SETTLED_STATUSES: Final = ("SCHEDULED", "FAILED", "DEAD", "CANCELLED")
#: The condition of jobs_settled since schema 3; a query repeats it to use the index.
SETTLED_CONDITION: Final = "(" + " OR ".join(f"status = '{status}'" for status in SETTLED_STATUSES) + ")"
_SETTLED: Final = f"CREATE INDEX jobs_settled ON jobs (queue, status) WHERE {SETTLED_CONDITION}"

# jobs_ready as schemas 1 to 3 wrote it. Its expression, ifnull(scheduled_at, 0.0), is
# evaluated for every row the index gains or loses: about 1 us an INSERT, 15% of a bulk
# enqueue.
_READY_V1: Final = """CREATE INDEX jobs_ready ON jobs
        (queue, priority DESC, ifnull(scheduled_at, 0.0), created_at, seq)
        WHERE status = 'PENDING' AND blocked_by = 0 AND delayed = 0"""
#: The claim index since schema 4: plain columns (a NULL scheduled_at sorts first).
_READY: Final = """CREATE INDEX jobs_ready ON jobs
        (queue, priority DESC, scheduled_at, created_at, seq)
        WHERE status = 'PENDING' AND blocked_by = 0 AND delayed = 0"""

# The indexes of ``jobs`` but jobs_ready and jobs_settled, the same in every version
# (each rebuild recreates them).
_JOB_INDEXES: Final = (
    "CREATE UNIQUE INDEX jobs_by_id ON jobs (queue, job_id)",
    """CREATE INDEX jobs_delayed ON jobs (queue, scheduled_at)
        WHERE status = 'PENDING' AND delayed = 1""",
    """CREATE INDEX jobs_leased ON jobs (queue, lease_until)
        WHERE status = 'RUNNING' AND lease_until IS NOT NULL""",
)

_JOB_COLUMNS: Final = """
        queue TEXT NOT NULL,
        job_id TEXT NOT NULL,
        job_type TEXT NOT NULL,
        status TEXT NOT NULL,
        priority INTEGER NOT NULL,
        scheduled_at REAL,
        created_at REAL NOT NULL,
        blocked_by INTEGER NOT NULL DEFAULT 0,
        delayed INTEGER NOT NULL DEFAULT 0,
        has_waiters INTEGER NOT NULL DEFAULT 0,
        attempt INTEGER NOT NULL DEFAULT 0,
        worker_id TEXT,
        lease_until REAL,
        started_at REAL,
        finished_at REAL,
        retry_count INTEGER NOT NULL DEFAULT 0,
        max_retries INTEGER NOT NULL,
        lost_count INTEGER NOT NULL DEFAULT 0,
        cancel_requested INTEGER NOT NULL DEFAULT 0,
        timeout_seconds REAL,
        origin TEXT NOT NULL,
        error TEXT,
        depends_on TEXT,
        payload BLOB NOT NULL,
        metadata BLOB,
        result BLOB
"""
_COLUMN_NAMES: Final = ", ".join(["seq"] + [line.split()[0] for line in _JOB_COLUMNS.strip().splitlines()])

_V1: Final = (
    """CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,"""
    + _JOB_COLUMNS
    + """    )""",
    *_JOB_INDEXES,
    _READY_V1,
    _SETTLED_V1,
    """CREATE TABLE job_deps (
        queue TEXT NOT NULL,
        parent TEXT NOT NULL,
        child TEXT NOT NULL,
        PRIMARY KEY (queue, parent, child)
    ) WITHOUT ROWID""",
    "CREATE INDEX job_deps_by_child ON job_deps (queue, child)",
)

# Version 2: ``jobs`` without AUTOINCREMENT (about 9% faster single enqueues), rebuilt
# with every row and seq kept; AUTOINCREMENT's high-water mark becomes a high-water row.
_V2: Final = (
    "CREATE TABLE jobs_v2 (\n        seq INTEGER PRIMARY KEY," + _JOB_COLUMNS + "    )",
    f"INSERT INTO jobs_v2 ({_COLUMN_NAMES}) SELECT {_COLUMN_NAMES} FROM jobs",
    # AUTOINCREMENT's mark, when rows at the top were deleted, becomes the high-water row.
    "INSERT INTO jobs_v2 (seq, queue, job_id, job_type, status, priority, created_at, max_retries,"
    " origin, payload) SELECT seq, '', 'high-water', '', 'DELETED', 0, 0.0, 0, '', X''"
    " FROM sqlite_sequence WHERE name = 'jobs' AND seq > (SELECT ifnull(max(seq), 0) FROM jobs_v2)",
    "DROP TABLE jobs",
    "ALTER TABLE jobs_v2 RENAME TO jobs",
    *_JOB_INDEXES,
    _READY_V1,
    _SETTLED_V1,
)

# Version 3: jobs_settled's condition as ORs, which SQLite tests without a temporary table.
_V3: Final = ("DROP INDEX jobs_settled", _SETTLED)

# Version 4: jobs_ready on plain columns, without an expression to evaluate per row.
_V4: Final = ("DROP INDEX jobs_ready", _READY)

# Version 5: rescues of batches (run_alone, and jobs_alone to find such jobs at once),
# the monotonic lease deadline (lease_mono: a live owner's lease is judged by the host's
# monotonic clock, so a wall-clock jump rescues nothing), and the worker registry.
_V5: Final = (
    "ALTER TABLE jobs ADD COLUMN run_alone INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN lease_mono REAL",
    "CREATE INDEX jobs_alone ON jobs (queue) WHERE status = 'PENDING' AND run_alone = 1",
    """CREATE TABLE workers (
        queue TEXT NOT NULL,
        worker_id TEXT NOT NULL,
        last_seen REAL NOT NULL,
        info TEXT NOT NULL,
        PRIMARY KEY (queue, worker_id)
    ) WITHOUT ROWID""",
)

# Version 6: named locks with fence counters (``Queue.lock``) and schedules.
_V6: Final = (
    """CREATE TABLE locks (
        queue TEXT NOT NULL,
        name TEXT NOT NULL,
        owner TEXT,
        token INTEGER NOT NULL,
        expires_at REAL,
        PRIMARY KEY (queue, name)
    ) WITHOUT ROWID""",
    """CREATE TABLE schedules (
        queue TEXT NOT NULL,
        name TEXT NOT NULL,
        definition TEXT NOT NULL,
        next_run_at REAL,
        last_run_at REAL,
        paused INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (queue, name)
    ) WITHOUT ROWID""",
)

#: The statuses of the jobs_finished index: every status a job ends in.
FINISHED_STATUSES: Final = ("COMPLETED", "FAILED", "DEAD", "CANCELLED")
#: The condition of jobs_finished; a query repeats it to use the index.
FINISHED_CONDITION: Final = "(" + " OR ".join(f"status = '{status}'" for status in FINISHED_STATUSES) + ")"

# Version 7: the last failure's traceback in a column of its own (schema 5 and older kept
# it inside the metadata frame, which SQL cannot read; such rows are read as before and
# their traceback is moved out of the metadata when the row is read); jobs_finished, the
# jobs that ended by when they did, so a purge of old results reads only the rows it
# deletes (its upkeep on every completion costs about 8 % of the drain rate of quick
# jobs, benchmarks/bench_retention.py; a purge batch of 1,000 takes 7 ms in a file of
# 100,000 results, a purge with nothing to do 0.1 ms); the
# counters table, counts a queue keeps in the file (the dead letters a dead-letter queue
# dropped to stay within dlq_max).
_V7: Final = (
    "ALTER TABLE jobs ADD COLUMN traceback TEXT",
    f"CREATE INDEX jobs_finished ON jobs (queue, status, finished_at) WHERE {FINISHED_CONDITION}",
    """CREATE TABLE counters (
        queue TEXT NOT NULL,
        name TEXT NOT NULL,
        value INTEGER NOT NULL,
        PRIMARY KEY (queue, name)
    ) WITHOUT ROWID""",
)


def _job_control_columns() -> tuple[str, ...]:
    """Job control: each job's last reported progress and its log (both JSON text, NULL
    for none), kept in the job's row so they go with it (delete, purge)."""
    return (
        "ALTER TABLE jobs ADD COLUMN progress TEXT",
        "ALTER TABLE jobs ADD COLUMN logs TEXT",
    )


# Version 8: claim_state, the state claims under a claim policy keep (typedq.policy):
# fairness virtual times and rate windows' recent claim times, per queue, name and slot.
_V8: Final = (
    """CREATE TABLE claim_state (
        queue TEXT NOT NULL,
        name TEXT NOT NULL,
        slot INTEGER NOT NULL,
        value REAL NOT NULL,
        PRIMARY KEY (queue, name, slot)
    ) WITHOUT ROWID""",
)

# Version 9: unique jobs, one row per (queue, key), read and written by the enqueue
# transaction (the primary key makes two writers of one key impossible, and BEGIN
# IMMEDIATE serialises them anyway).
_V9: Final = (
    """CREATE TABLE unique_keys (
        queue TEXT NOT NULL,
        key TEXT NOT NULL,
        job_id TEXT NOT NULL,
        until REAL,
        states TEXT NOT NULL,
        PRIMARY KEY (queue, key)
    ) WITHOUT ROWID""",
)

# Version 10: job control, each job's progress and log.
_V10: Final = _job_control_columns()

# Version 11: job_counts, how many jobs of each queue are in each (job type, status), how
# many of each type were ever submitted (status 'submitted') and how many of each type
# and priority are in jobs_ready (status 'ready:<priority>'), kept by every
# transition (see _sqlite_counts), so counting is a read of a few rows. Built here from
# the rows the file holds: the submitted counts of an upgraded file start at the jobs it
# holds (those purged or deleted before are not known). Keyed by status before job type:
# a claim under limits reads the RUNNING rows as one short range.
_V11: Final = (
    """CREATE TABLE job_counts (
        queue TEXT NOT NULL,
        job_type TEXT NOT NULL,
        status TEXT NOT NULL,
        n INTEGER NOT NULL,
        PRIMARY KEY (queue, status, job_type)
    ) WITHOUT ROWID""",
    "INSERT INTO job_counts (queue, job_type, status, n)"
    " SELECT queue, job_type, status, count(*) FROM jobs WHERE queue > '' GROUP BY queue, job_type, status",
    "INSERT INTO job_counts (queue, job_type, status, n)"
    " SELECT queue, job_type, 'submitted', count(*) FROM jobs WHERE queue > '' GROUP BY queue, job_type",
    "INSERT INTO job_counts (queue, job_type, status, n)"
    " SELECT queue, job_type, 'ready:' || priority, count(*) FROM jobs WHERE queue > ''"
    " AND status = 'PENDING' AND blocked_by = 0 AND delayed = 0 GROUP BY queue, job_type, priority",
    # The fold mark (see _sqlite_counts): every job the file holds is counted.
    "INSERT INTO job_counts (queue, job_type, status, n)"
    " SELECT '', '', 'folded', coalesce(max(seq), 0) FROM jobs",
)

# Version 12: job_counts also counts the PENDING jobs marked delayed (status 'delayed', the
# rows of jobs_delayed), so the jobs due later are counted without reading them; built from
# the rows up to the fold mark (those above it are counted when they are folded in).
_V12: Final = (
    "INSERT INTO job_counts (queue, job_type, status, n)"
    " SELECT queue, job_type, 'delayed', count(*) FROM jobs WHERE queue > '' AND status = 'PENDING'"
    " AND delayed = 1 AND seq <= (SELECT coalesce((SELECT n FROM job_counts WHERE queue = ''"
    " AND status = 'folded' AND job_type = ''), 0)) GROUP BY queue, job_type",
    # The delayed jobs waiting for dependencies, for the same count (see _sqlite_counts).
    """CREATE INDEX jobs_delayed_blocked ON jobs (queue, scheduled_at)
        WHERE status = 'PENDING' AND delayed = 1 AND blocked_by > 0""",
)

# Version 13: a claim policy's fairness virtual times and its rates' claim counts move from
# claim_state to job_counts (statuses 'fair' and 'rate', see _sqlite_policy), whose page
# every claim writes anyway: a policy claim's commit writes fewer pages. claim_state keeps
# the rings of claim times.
_V13: Final = (
    "INSERT INTO job_counts (queue, job_type, status, n)"
    " SELECT queue, CAST(slot AS TEXT), 'fair', value FROM claim_state WHERE name = 'fair'",
    "INSERT INTO job_counts (queue, job_type, status, n)"
    " SELECT queue, substr(name, 6), 'rate', CAST(value AS INTEGER) FROM claim_state"
    " WHERE name GLOB 'rate:*' AND slot = -1",
    "DELETE FROM claim_state WHERE name = 'fair' OR slot = -1",
)

# Version 14: claim_group, the batch claim that took a RUNNING job with others (see
# reclaim_expired). Schema 13 told a batch by its jobs' shared (worker_id, started_at), so
# two claims of one worker at one clock reading passed for a batch; its RUNNING jobs
# get that grouping as negative numbers, which no claim draws.
_V14: Final = (
    "ALTER TABLE jobs ADD COLUMN claim_group INTEGER",
    "UPDATE jobs AS j SET claim_group = -(SELECT min(seq) FROM jobs AS o INDEXED BY jobs_leased"
    " WHERE o.queue = j.queue AND o.status = 'RUNNING' AND o.lease_until IS NOT NULL"
    " AND o.worker_id IS j.worker_id AND o.started_at IS j.started_at)"
    " WHERE j.status = 'RUNNING' AND j.lease_until IS NOT NULL",
)

#: For each schema version, the statements that upgrade a file from the version before.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5, 6: _V6, 7: _V7, 8: _V8, 9: _V9, 10: _V10,
    11: _V11, 12: _V12, 13: _V13, 14: _V14,
}
#: The schema version this typedq writes: the highest key of :data:`MIGRATIONS`.
SCHEMA_VERSION: Final = 14


def _version_text(info: tuple[int, ...]) -> str:
    return ".".join(str(part) for part in info)


def has_wal_reset_bug(version: tuple[int, ...]) -> bool:
    """Whether SQLite ``version`` has the WAL-reset bug (3.7.0 to 3.51.2)."""
    low, high = WAL_RESET_BUG
    return low <= version <= high


def wal_reset_warning(version: tuple[int, ...]) -> str | None:
    """The warning for a SQLite library with the WAL-reset bug; None for one without."""
    if not has_wal_reset_bug(version):
        return None
    low, high = WAL_RESET_BUG
    return (
        f"SQLite {_version_text(version)} has the WAL-reset bug (versions {_version_text(low)} "
        f"to {_version_text(high)}): when connections of several processes write and "
        "checkpoint one file at the same time, the file can, rarely, be corrupted; install "
        "'typedq[sqlite]' (pysqlite3, with SQLite 3.53) or upgrade SQLite to 3.51.3 or newer "
        "(see https://sqlite.org/wal.html#walresetbug)"
    )


def check_sqlite_version() -> tuple[int, ...]:
    """Refuse a SQLite library older than :data:`MIN_SQLITE`; return the version.

    Says nothing about the WAL-reset bug: that is said once, when a file is created
    (:func:`prepare_schema`), and in the queue's diagnostics.

    Raises:
        BackendError: the library is too old; names the found and required versions.
    """
    found = tuple(sqlite3.sqlite_version_info)
    if found < MIN_SQLITE:
        raise BackendError(
            f"SQLite {_version_text(found)} is too old: typedq's SQLite backend needs "
            f"SQLite >= {_version_text(MIN_SQLITE)} (for UPDATE ... RETURNING); "
            "upgrade the SQLite library Python's sqlite3 module is linked against, or "
            "install 'typedq[sqlite]'"
        )
    return found


#: Primary result codes (sqlite.org/rescode.html) that mean "not a SQLite file".
_SQLITE_CORRUPT, _SQLITE_NOTADB = 11, 26


def check_file(path: Path) -> None:
    """Judge where the file is, and whether it can be written, without opening it.

    The file is never opened here (only ``stat`` and ``access``): closing *any*
    descriptor of a file releases every POSIX lock the process holds on it, SQLite's
    own included, and a connection of this process may have the file open. Its content
    is judged by SQLite, in :func:`prepare_schema`.

    Raises:
        BackendError: not a regular file, or its directory does not exist.
        BackendWriteError: the file or its directory is read-only.
    """
    if not path.exists():
        parent = path.parent
        if not parent.is_dir():
            raise BackendError(
                f"cannot create the SQLite queue file {path}: directory {parent} does not exist"
            )
        if not os.access(parent, os.W_OK | os.X_OK):
            raise BackendWriteError(
                f"cannot create the SQLite queue file {path}: directory {parent} is read-only"
            )
        return
    if not path.is_file():
        raise BackendError(f"the SQLite queue path {path} is not a regular file")
    if not os.access(path, os.W_OK):
        raise BackendWriteError(f"the SQLite queue file {path} is read-only: typedq needs to write to it")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise BackendWriteError(
            f"the directory of the SQLite queue file {path} is read-only: WAL mode needs to "
            "create the -wal and -shm files beside it"
        )


def _identify(conn: sqlite3.Connection) -> tuple[int, int, int]:
    """(application_id, user_version, number of schema objects); reads only."""
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    objects = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    return int(app_id), int(version), int(objects)


def _judge(path: Path, app_id: int, version: int, objects: int) -> bool:
    """Whether the file needs creating or migrating; raise if typedq must not touch it."""
    if app_id == APPLICATION_ID:
        if version > SCHEMA_VERSION:
            raise BackendError(
                f"{path} was written by a newer typedq (schema version {version}; this "
                f"typedq reads schema versions up to {SCHEMA_VERSION}): upgrade typedq"
            )
        return version < SCHEMA_VERSION
    if app_id == 0 and version == 0 and objects == 0:
        return True  # an empty database: ours to create
    raise BackendError(
        f"{path} is a SQLite database but not a typedq queue file (application_id="
        f"{app_id:#x}, user_version={version}, {objects} schema objects); refusing to modify it"
    )


def prepare_schema(conn: sqlite3.Connection, path: Path) -> int:
    """Check what ``conn``'s file holds and create or migrate the schema; return its version.

    Reads first and writes nothing to a file it refuses. Creation and migration run in
    one ``BEGIN IMMEDIATE`` transaction that checks again under the write lock, so two
    processes opening a new file at once create the schema once.

    Raises:
        BackendError: a foreign file, or one written by a newer typedq.
        sqlite3.Error: driver errors, for the caller to map.
    """
    try:
        found = _identify(conn)
    except sqlite3.DatabaseError as exc:
        # Only "not a database" and "malformed": SQLITE_BUSY and the like (an
        # OperationalError is a DatabaseError too) stay driver errors for the caller.
        if (getattr(exc, "sqlite_errorcode", 0) or 0) & 0xFF not in (_SQLITE_CORRUPT, _SQLITE_NOTADB):
            raise
        raise BackendError(
            f"{path} is not a SQLite database, or is corrupt ({exc}): not a typedq queue "
            "file; refusing to touch it"
        ) from exc
    if not _judge(path, *found):
        return SCHEMA_VERSION
    # journal_mode cannot change inside a transaction; the file is empty or ours.
    conn.execute("PRAGMA journal_mode=WAL").fetchone()
    conn.execute("BEGIN IMMEDIATE")
    try:
        app_id, version, objects = _identify(conn)
        if _judge(path, app_id, version, objects):
            for step in range(version + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[step]:
                    conn.execute(statement)
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    if version == 0:
        # Said once, when the file is created, not on every open in every process.
        warning = wal_reset_warning(tuple(sqlite3.sqlite_version_info))
        if warning is not None:
            logger.warning("created the queue file %s; %s", path, warning)
    return SCHEMA_VERSION


_URL_FORMS: Final = (
    "'sqlite:///relative/path.db' or 'sqlite:////absolute/path.db', optionally with "
    "'?durability=normal' or '?durability=full'"
)


def parse_sqlite_url(url: str) -> tuple[str, dict[str, str]]:
    """Split a ``sqlite:///path?durability=full`` URL into the path and its options.

    Returns:
        The file path (``sqlite:///jobs.db`` is relative, ``sqlite:////var/jobs.db``
        absolute; percent-escapes decoded) and the query options.

    Raises:
        ConfigError: naming the field ``backend``: not a sqlite URL, a host given, no
            path, ``:memory:``, or an unknown, repeated or invalid option.
    """
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() != "sqlite" or not rest.startswith("/"):
        raise ConfigError("backend", url, _URL_FORMS)
    location, _, query = rest[1:].partition("?")
    path = unquote(location)
    if not path or path == ":memory:":
        raise ConfigError(
            "backend", url, f"a file path ({_URL_FORMS}); ':memory:' cannot be shared between connections"
        )
    options: dict[str, str] = {}
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=True) if query else []
    except ValueError as exc:
        raise ConfigError("backend", url, f"a query string of key=value options ({_URL_FORMS})") from exc
    for key, value in pairs:
        if key != "durability" or key in options:
            raise ConfigError("backend", url, f"the only option is durability, given once ({_URL_FORMS})")
        if value not in ("normal", "full"):
            raise ConfigError("backend", url, "durability=normal or durability=full")
        options[key] = value
    return path, options
