"""What is specific to the SQLite backend, in one process (RELIABILITY.md F1, F4-F7, H4).

The ``Queue`` behaviour itself is in tests/conformance (what a codec refuses and names:
test_codecs.py; queues sharing a file: test_shared_store.py); here: how the file is opened,
judged and configured, how connections are set up, what the driver's failures become,
and how bad stored bytes are handled. Processes: test_sqlite_processes.py.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import json
import logging
import os
import random
import shutil
import struct
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import typedq.backends._sqlite_schema as schema
from typedq import ClaimPolicy
from typedq.backends import _sqlite_counts as counts
from typedq.backends import open_queue
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._sqlite_rows import FRESH_COLUMNS
from typedq.backends._sqlite_sql import SQL
from typedq.backends.base import Completion
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.errors import (
    BackendError,
    BackendWriteError,
    ConfigError,
    DeserializationError,
    InvalidJobError,
    TypedqError,
)
from typedq.job import LEVELS, TRACEBACK_KEY, Job, JobStatus, Priority, level_index
from typedq.serializers.base import FrameCodec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "jobs.db"


@pytest.fixture
def open_sqlite(clock: FakeClock, db: Path) -> Iterator[Callable[..., SQLiteQueue]]:
    """``open_sqlite(name="q", path=db, **kw)``: SQLiteQueues closed at teardown."""
    made: list[SQLiteQueue] = []

    def make(name: str = "q", path: Path | None = None, **kwargs: Any) -> SQLiteQueue:
        made.append(SQLiteQueue(path or db, name=name, clock=clock, **kwargs))
        return made[-1]

    yield make
    for queue in made:
        queue.close()


def job(job_id: str, **fields: Any) -> Job:
    return Job(job_type="t", job_id=job_id, created_at=1_800_000_000.0, **fields)


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class Recorder:
    """Wraps ``sqlite3.connect``: records every connection opened, its statements (a
    trace callback), and its PRAGMAs as they were when it was closed."""

    def __init__(self) -> None:
        self.connections: list[sqlite3.Connection] = []
        self.statements: dict[int, list[str]] = {}
        self.settings: dict[int, tuple[str, int, int]] = {}
        self._lock = threading.Lock()

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = sqlite3.connect
        recorder = self

        class Recording(sqlite3.Connection):
            def close(self) -> None:
                recorder.settings[id(self)] = (
                    self.execute("PRAGMA journal_mode").fetchone()[0],
                    self.execute("PRAGMA synchronous").fetchone()[0],
                    self.execute("PRAGMA busy_timeout").fetchone()[0],
                )
                super().close()

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = real(*args, factory=Recording, **kwargs)
            key = id(conn)
            with self._lock:
                self.connections.append(conn)
                self.statements[key] = []
            conn.set_trace_callback(self.statements[key].append)
            return conn

        monkeypatch.setattr(sqlite3, "connect", connect)


# -- F1: every connection's settings, every write under BEGIN IMMEDIATE ----------------------

_DML = ("INSERT", "UPDATE", "DELETE", "REPLACE")


def _writes_outside_begin_immediate(statements: list[str]) -> list[str]:
    """Statements that write outside a BEGIN IMMEDIATE transaction (or a plain BEGIN)."""
    bad: list[str] = []
    in_tx = False
    for text in statements:
        sql = " ".join(text.split()).upper()
        if sql.startswith("BEGIN"):
            if sql != "BEGIN IMMEDIATE":
                bad.append(text)
            in_tx = True
        elif sql in ("COMMIT", "ROLLBACK", "END"):
            in_tx = False
        elif sql.startswith(_DML) and not in_tx:
            bad.append(text)
    return bad


@pytest.mark.parametrize(("durability", "synchronous"), [("normal", 1), ("full", 2)])
def test_f1_every_connection_is_configured_and_every_write_is_begin_immediate(
    monkeypatch: pytest.MonkeyPatch, db: Path, clock: FakeClock, durability: str, synchronous: int
) -> None:
    recorder = Recorder()
    recorder.install(monkeypatch)
    queue = SQLiteQueue(db, name="f1", clock=clock, durability=durability)
    try:
        queue.enqueue(job("a"))
        queue.enqueue_many([job("b", depends_on=["a"]), job("c"), job("d")])

        def work(index: int) -> None:  # a connection per thread
            queue.get_job("a")
            queue.count_by_status()
            claim = queue.claim(f"w{index}", lease_s=1.0)
            if claim is not None:
                queue.complete(claim.job.job_id, token=claim.token, result=index)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        claim = queue.claim("w", lease_s=1.0)
        assert claim is not None
        queue.fail(claim.job.job_id, token=claim.token, error="e", retry_at=clock.now(), traceback="tb")
        queue.update_status("d", JobStatus.SCHEDULED)
        queue.cancel("d")
        queue.set_priority("b", 9)
        queue.import_jobs([job("e", status=JobStatus.DEAD).to_dict()])
        queue.replay("e")
        queue.delete("e")
        queue.enqueue(job("z"))
        claim = queue.claim("w", lease_s=1.0)
        assert claim is not None
        clock.advance(2)
        queue.reclaim_expired()
        queue.diagnostics()
    finally:
        queue.close()
    assert len(recorder.connections) >= 4  # the opening one and one per thread
    assert len(recorder.settings) == len(recorder.connections)  # every one closed
    for journal_mode, sync, busy_timeout in recorder.settings.values():
        assert journal_mode == "wal"
        assert sync == synchronous
        assert busy_timeout >= 5000
    writes = sum(1 for s in recorder.statements.values() for t in s if t.lstrip().upper().startswith(_DML))
    assert writes > 20
    for statements in recorder.statements.values():
        assert _writes_outside_begin_immediate(statements) == []


def test_connections_of_ended_threads_are_closed(
    monkeypatch: pytest.MonkeyPatch, db: Path, wait_until: Callable[..., None]
) -> None:
    recorder = Recorder()
    recorder.install(monkeypatch)
    queue = SQLiteQueue(db)
    try:
        queue.enqueue(job("a"))
        threads = [threading.Thread(target=queue.get_job, args=("a",)) for _ in range(10)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(recorder.connections) == 11
        # Each ended thread's connection is closed (its thread state goes shortly after join).
        wait_until(lambda: len(recorder.settings) == 10, message="the threads' connections closed")
    finally:
        queue.close()
    assert len(recorder.settings) == 11


def test_diagnostics_report_the_library_and_the_file(
    open_sqlite: Callable[..., SQLiteQueue], db: Path
) -> None:
    info = open_sqlite(durability="full").diagnostics()
    assert info["sqlite_version"] == sqlite3.sqlite_version
    assert info["path"] == str(db)
    assert info["journal_mode"] == "wal"
    assert info["synchronous"] == 2
    assert info["durability"] == "full"
    assert info["busy_timeout_ms"] >= 5000
    assert info["schema_version"] == schema.SCHEMA_VERSION
    low, high = schema.WAL_RESET_BUG
    assert info["wal_reset_bug"] is (low <= sqlite3.sqlite_version_info <= high)


# -- configuration and URLs ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"durability": "fast"}, "durability"),
        ({"durability": "FULL"}, "durability"),
        ({"name": ""}, "name"),
    ],
)
def test_bad_options_are_config_errors(db: Path, kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        SQLiteQueue(db, **kwargs)
    assert info.value.field == field
    assert field in str(info.value)
    assert not db.exists()


def test_memory_database_is_refused() -> None:
    with pytest.raises(ConfigError, match="memory"):
        SQLiteQueue(":memory:")


def test_open_queue_urls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "rel").mkdir()
    relative = open_queue("sqlite:///rel/jobs.db", name="r")
    try:
        absolute = open_queue(f"sqlite:///{tmp_path}/abs.db?durability=full", name="a")
        try:
            assert isinstance(relative, SQLiteQueue)
            assert relative.path == tmp_path / "rel" / "jobs.db"
            assert isinstance(absolute, SQLiteQueue)
            assert absolute.path == tmp_path / "abs.db"
            assert absolute.diagnostics()["synchronous"] == 2
            assert relative.diagnostics()["synchronous"] == 1
        finally:
            absolute.close()
    finally:
        relative.close()


@pytest.mark.parametrize(
    "url",
    [
        "sqlite://host/jobs.db",
        "sqlite:///:memory:",
        "sqlite:///",
        "sqlite:///jobs.db?durability=fast",
        "sqlite:///jobs.db?durabilty=full",
        "sqlite:///jobs.db?durability=full&durability=normal",
        "sqlite:jobs.db",
    ],
)
def test_open_queue_refuses_bad_sqlite_urls(
    url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        open_queue(url)
    assert info.value.field == "backend"
    assert "backend" in str(info.value)
    assert list(tmp_path.iterdir()) == []


# -- F5: files typedq must not touch ------------------------------------------------------


def _foreign_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE accounts (id INTEGER PRIMARY KEY, owner TEXT)")
    conn.execute("INSERT INTO accounts (owner) VALUES ('alice')")
    conn.commit()
    conn.close()


def _other_app_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    conn.close()


def _newer_typedq_db(path: Path) -> None:
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 99")
    conn.execute("CREATE TABLE jobs (x)")
    conn.commit()
    conn.close()


def _random_bytes(path: Path) -> None:
    path.write_bytes(os.urandom(8192))


def _truncated_sqlite(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + os.urandom(40))


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        pytest.param(_random_bytes, "not a SQLite database", id="random-bytes"),
        pytest.param(_truncated_sqlite, "corrupt", id="truncated"),
        pytest.param(_foreign_db, "not a typedq queue file", id="foreign-tables"),
        pytest.param(_other_app_db, "not a typedq queue file", id="other-application-id"),
        pytest.param(_newer_typedq_db, "newer typedq", id="newer-schema"),
    ],
)
def test_f5_a_file_that_is_not_ours_is_refused_untouched(
    db: Path, make: Callable[[Path], None], cause: str
) -> None:
    make(db)
    before = sha(db)
    siblings = sorted(p.name for p in db.parent.iterdir())
    with pytest.raises(BackendError) as info:
        SQLiteQueue(db)
    assert str(db) in str(info.value)
    assert cause in str(info.value)
    assert sha(db) == before
    assert sorted(p.name for p in db.parent.iterdir()) == siblings


def test_the_file_is_never_opened_by_python_code(monkeypatch: pytest.MonkeyPatch, db: Path) -> None:
    """Closing any descriptor of the file would drop the POSIX locks SQLite holds on it in
    this process (another queue of the same file may be open): only SQLite opens it."""
    first = SQLiteQueue(db, name="first")
    try:
        first.enqueue(job("a"))
        opened: list[str] = []
        real_open, real_os_open = open, os.open

        def spy_open(file: Any, *args: Any, **kwargs: Any) -> Any:
            opened.append(os.fspath(file) if isinstance(file, str | os.PathLike) else repr(file))
            return real_open(file, *args, **kwargs)

        def spy_os_open(path: Any, *args: Any, **kwargs: Any) -> int:
            opened.append(os.fspath(path))
            return real_os_open(path, *args, **kwargs)

        monkeypatch.setattr("builtins.open", spy_open)
        monkeypatch.setattr(io, "open", spy_open)  # what pathlib calls
        monkeypatch.setattr(os, "open", spy_os_open)
        second = SQLiteQueue(db, name="second")
        second.enqueue(job("b"))
        second.close()
        monkeypatch.undo()
        # The writer lock is a file of its own (flock, not SQLite's POSIX locks): allowed.
        assert [p for p in opened if p.startswith(str(db)) and p != f"{db}-typedq-lock"] == []
        assert first.get_job("a").status is JobStatus.PENDING
    finally:
        first.close()


def test_newer_schema_names_both_versions(db: Path) -> None:
    _newer_typedq_db(db)
    with pytest.raises(BackendError, match=rf"schema version 99.*up to {schema.SCHEMA_VERSION}"):
        SQLiteQueue(db)


def test_an_empty_sqlite_file_is_initialised(db: Path) -> None:
    sqlite3.connect(db).close()  # a 0-byte file
    queue = SQLiteQueue(db)
    try:
        queue.enqueue(job("a"))
        assert queue.size == 1
    finally:
        queue.close()


def test_a_missing_directory_is_a_typed_error(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "jobs.db"
    with pytest.raises(BackendError, match="does not exist") as info:
        SQLiteQueue(path)
    assert str(path) in str(info.value)


_RO_SCRIPT = """
import sys
from typedq.backends.sqlite import SQLiteQueue
from typedq.errors import BackendWriteError
try:
    SQLiteQueue(sys.argv[1]).close()
except BackendWriteError as exc:
    print("BackendWriteError:", exc)
"""


def test_f5_a_read_only_file_is_a_write_error(db: Path) -> None:
    SQLiteQueue(db).close()
    db.chmod(0o444)
    before = sha(db)
    if os.geteuid() != 0:
        with pytest.raises(BackendWriteError, match="read-only") as info:
            SQLiteQueue(db)
        message = str(info.value)
    else:
        # root ignores file modes: open it from a child without CAP_DAC_OVERRIDE.
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("running as root without setpriv: cannot make a file read-only")
        done = subprocess.run(
            [
                setpriv,
                "--bounding-set=-dac_override,-dac_read_search",
                sys.executable,
                "-c",
                _RO_SCRIPT,
                str(db),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        message = done.stdout
        assert message.startswith("BackendWriteError:"), done.stdout + done.stderr
    assert str(db) in message
    assert "read-only" in message
    assert sha(db) == before


# -- F6: the library version -------------------------------------------------------------


def test_f6_an_old_sqlite_is_refused_naming_both_versions(monkeypatch: pytest.MonkeyPatch, db: Path) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    with pytest.raises(BackendError) as info:
        SQLiteQueue(db)
    assert "3.34.1" in str(info.value)
    assert "3.35.0" in str(info.value)
    assert not db.exists()


@pytest.mark.parametrize(("version", "warned"), [((3, 40, 1), True), ((3, 51, 2), True), ((3, 51, 3), False)])
def test_f6_the_wal_reset_bug_is_said_once_when_a_file_is_created_never_on_open(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    tmp_path: Path,
    version: tuple[int, int, int],
    warned: bool,
) -> None:
    monkeypatch.setattr(sqlite3, "sqlite_version_info", version)
    caplog.set_level(logging.DEBUG, logger="typedq.backends.sqlite")
    for name in ("a", "b"):
        SQLiteQueue(tmp_path / f"{name}.db").close()
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == (2 if warned else 0)
    for name, message in zip(("a", "b"), warnings, strict=False):
        assert "WAL-reset" in message
        assert str(tmp_path / f"{name}.db") in message
        assert "typedq[sqlite]" in message
    caplog.clear()
    # Opening an existing file, in this process or any other, says nothing more.
    for _ in range(3):
        SQLiteQueue(tmp_path / "a.db", name="other").close()
    assert [r for r in caplog.records if r.levelno >= logging.WARNING] == []


def test_the_wal_reset_bug_is_not_said_by_a_process_that_opens_an_existing_file(db: Path) -> None:
    """A worker or script opening a file another process created prints nothing."""
    SQLiteQueue(db).close()
    code = (
        "import logging, sys; logging.basicConfig(level=logging.WARNING);"
        "from typedq.backends.sqlite import SQLiteQueue;"
        "SQLiteQueue(sys.argv[1]).close(); SQLiteQueue(sys.argv[1], name='x').close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(db)], capture_output=True, text=True, timeout=60, check=True
    )
    assert "WAL-reset" not in done.stderr
    assert done.stderr == ""


def test_diagnostics_say_whether_the_library_has_the_wal_reset_bug(
    open_sqlite: Callable[..., SQLiteQueue],
) -> None:
    queue = open_sqlite()
    assert schema.has_wal_reset_bug((3, 40, 1))
    assert not schema.has_wal_reset_bug((3, 53, 4))
    assert schema.wal_reset_warning((3, 53, 4)) is None
    info = queue.diagnostics()
    assert info["sqlite_driver"] in ("sqlite3", "pysqlite3")
    assert info["wal_reset_bug"] is schema.has_wal_reset_bug(tuple(sqlite3.sqlite_version_info))


# -- schema versions ----------------------------------------------------------------------


def test_an_older_file_is_migrated_forward(monkeypatch: pytest.MonkeyPatch, db: Path) -> None:
    first = SQLiteQueue(db, name="m")
    first.enqueue(job("kept", payload={"v": 1}))
    first.close()
    later = schema.SCHEMA_VERSION + 1
    migrations = {**schema.MIGRATIONS, later: ("ALTER TABLE jobs ADD COLUMN note TEXT",)}
    monkeypatch.setattr(schema, "MIGRATIONS", migrations)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", later)
    queue = SQLiteQueue(db, name="m")
    try:
        assert queue.diagnostics()["schema_version"] == later
        assert queue.get_job("kept").payload == {"v": 1}
    finally:
        queue.close()
    conn = sqlite3.connect(db)
    try:
        assert "note" in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    finally:
        conn.close()


def _old_schema(version: int) -> dict[int, tuple[str, ...]]:
    """The migrations up to ``version``, with the job_counts table of schema 11 too: this
    typedq's transitions keep it, so an old file is filled through them with it there,
    then it is dropped (:func:`_drop_counts`) and schema 11 builds it from the rows."""
    steps = {v: schema.MIGRATIONS[v] for v in range(1, version + 1)}
    steps[version] = (*steps[version], schema.MIGRATIONS[11][0])
    return steps


def _drop_counts(db: Path) -> None:
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("DROP TABLE job_counts")
    finally:
        conn.close()


def _v1_file(monkeypatch: pytest.MonkeyPatch, db: Path) -> tuple[dict[str, int], int]:
    """A schema-1 file as typedq 1 left it: four jobs, one RUNNING, the newest deleted
    (by the plain DELETE schema 1 used). Returns the seqs of the rows left and the token."""
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", _old_schema(1))
        patch.setattr(schema, "SCHEMA_VERSION", 1)
        old = SQLiteQueue(db, name="m")
        old.enqueue_many([job(f"j{i}", payload={"i": i}) for i in range(4)])
        old.close()
    _drop_counts(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        # Claimed as schema 1 claimed (its columns only).
        conn.execute(
            "UPDATE jobs SET status = 'RUNNING', attempt = 1, worker_id = 'w', started_at = 0.0,"
            " lease_until = 9e9 WHERE job_id = 'j0'"
        )
        conn.execute("DELETE FROM jobs WHERE job_id = 'j3'")
        assert conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'jobs'").fetchone() == (4,)
        seqs = dict(conn.execute("SELECT job_id, seq FROM jobs").fetchall())
    finally:
        conn.close()
    return seqs, 1


def test_a_schema_1_file_is_rebuilt_without_autoincrement_keeping_every_row(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    seqs, token = _v1_file(monkeypatch, db)
    queue = SQLiteQueue(db, name="m")
    try:
        assert queue.diagnostics()["schema_version"] == schema.SCHEMA_VERSION
        # Schema 11 counted the rows it found: j0 RUNNING, j1 and j2 PENDING.
        assert {s: n for s, n in queue.count_by_status().items() if n} == {
            JobStatus.RUNNING: 1, JobStatus.PENDING: 2,
        }
        assert queue.count_submitted() == {"t": 3}
        assert _seqs(db, "m") == seqs
        assert [j.payload for j in queue.list_jobs()] == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert queue.complete("j0", token=token, result=7).result == 7
        assert [c.job.job_id for c in queue.claim_many("w", lease_s=60.0, limit=5)] == ["j1", "j2"]
        # The deleted j3 had seq 4: no new row may take it.
        queue.enqueue(job("after"))
        assert _seqs(db, "m")["after"] > 4
        assert queue.queue_names() == ["m"]
        assert queue.size == 4  # j0, j1, j2 and after: the high-water row is not a job
    finally:
        queue.close()
    conn = sqlite3.connect(db)
    try:
        (table_sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = 'jobs'").fetchone()
        indexes = {row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    finally:
        conn.close()
    assert "AUTOINCREMENT" not in table_sql
    assert {"jobs_by_id", "jobs_ready", "jobs_delayed", "jobs_leased", "jobs_settled"} <= indexes


def _index_sql(db: Path, name: str) -> str:
    conn = sqlite3.connect(db)
    try:
        (sql,) = conn.execute("SELECT sql FROM sqlite_master WHERE name = ?", (name,)).fetchone()
    finally:
        conn.close()
    return str(sql)


def test_a_schema_2_file_gets_jobs_settled_without_an_in_list(
    monkeypatch: pytest.MonkeyPatch, db: Path
) -> None:
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", _old_schema(2))
        patch.setattr(schema, "SCHEMA_VERSION", 2)
        old = SQLiteQueue(db, name="m")
        old.enqueue_many([job("dead", max_retries=0), job("waiting")])
        old.close()
    _drop_counts(db)
    conn = sqlite3.connect(db, isolation_level=None)
    try:  # buried as schema 2 buried
        conn.execute("UPDATE jobs SET status = 'DEAD', attempt = 1, error = 'boom' WHERE job_id = 'dead'")
    finally:
        conn.close()
    assert " IN (" in _index_sql(db, "jobs_settled")
    queue = SQLiteQueue(db, name="m")
    try:
        assert queue.diagnostics()["schema_version"] == schema.SCHEMA_VERSION
        assert [j.job_id for j in queue.list_jobs(status=JobStatus.DEAD)] == ["dead"]
        assert [j.job_id for j in queue.list_jobs(status=JobStatus.PENDING)] == ["waiting"]
    finally:
        queue.close()
    assert " IN (" not in _index_sql(db, "jobs_settled")
    assert schema.SETTLED_CONDITION in _index_sql(db, "jobs_settled")


def test_a_schema_3_file_gets_jobs_ready_on_plain_columns(
    monkeypatch: pytest.MonkeyPatch, db: Path, clock: FakeClock
) -> None:
    now = clock.now()
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", _old_schema(3))
        patch.setattr(schema, "SCHEMA_VERSION", 3)
        old = SQLiteQueue(db, name="m", clock=clock)
        old.enqueue_many(
            [
                Job(job_type="t", job_id="was-due", scheduled_at=now - 5.0, created_at=now - 30.0),
                Job(job_type="t", job_id="plain", created_at=now - 10.0),
                Job(job_type="t", job_id="urgent", priority=9, created_at=now),
            ]
        )
        old.close()
    _drop_counts(db)
    assert "ifnull(" in _index_sql(db, "jobs_ready")
    queue = SQLiteQueue(db, name="m", clock=clock)
    try:
        assert queue.diagnostics()["schema_version"] == schema.SCHEMA_VERSION
        assert queue.ready_count() == 3
        assert sum(queue.count_by_priority().values()) == 3  # schema 11 counted the ready rows
        assert [c.job.job_id for c in queue.claim_many("w", lease_s=60.0, limit=5)] == [
            "urgent",
            "plain",
            "was-due",
        ]
    finally:
        queue.close()
    assert "ifnull(" not in _index_sql(db, "jobs_ready")


def test_no_index_key_is_an_expression(open_sqlite: Callable[..., SQLiteQueue], db: Path) -> None:
    """SQLite evaluates an index's expression for every row the index gains or loses
    (an INSERT, a claim, a completion): keys are plain columns."""
    open_sqlite("m")
    conn = sqlite3.connect(db)
    try:
        names = [row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
        assert {"jobs_by_id", "jobs_ready", "jobs_delayed", "jobs_leased", "jobs_settled"} <= set(names)
        for name in names:
            # index_xinfo gives cid -2 for a key that is an expression.
            keys = [row[1] for row in conn.execute(f"PRAGMA index_xinfo('{name}')") if row[5]]
            assert -2 not in keys, name
    finally:
        conn.close()


@pytest.mark.parametrize(
    "statement",
    [
        SQL.claim(False, None),
        SQL.claim(True, None),
        SQL.claim(True, 3),  # of some job types only
        SQL.dequeue,
        SQL.peek_ready,
    ],
    ids=["claim_one", "claim_many", "claim_many_of_types", "dequeue", "peek_ready"],
)
def test_a_claim_walks_jobs_ready_in_order_without_sorting(
    open_sqlite: Callable[..., SQLiteQueue], db: Path, statement: str
) -> None:
    open_sqlite("m")
    sql = statement
    conn = sqlite3.connect(db)
    try:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [None] * sql.count("?"))]
    finally:
        conn.close()
    assert "SEARCH jobs USING INDEX jobs_ready (queue=?)" in plan, plan
    assert not any("TEMP B-TREE" in step for step in plan), plan


@pytest.mark.parametrize("newest", [False, True])
@pytest.mark.parametrize(
    ("status", "step"),
    [
        (None, "SEARCH jobs USING INTEGER PRIMARY KEY (rowid{op}?)"),
        ("PENDING", "SEARCH jobs USING INTEGER PRIMARY KEY (rowid{op}?)"),
        ("DEAD", "SEARCH jobs USING INDEX jobs_settled (queue=? AND status=? AND rowid{op}?)"),
    ],
)
def test_a_listing_cursor_is_a_keyset_range_not_an_offset_scan(
    open_sqlite: Callable[..., SQLiteQueue], db: Path, status: str | None, step: str, newest: bool
) -> None:
    """``list_jobs(after=...)`` starts at the cursor's seq through the rowid or the
    jobs_settled index, in index order (no sort), so page 1,000 costs what page 1 does."""
    open_sqlite("m")
    sql, params = SQL.listing("m", status, "t", after=5, newest=newest)
    conn = sqlite3.connect(db)
    try:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", [*params, 10, 0])]
        seq_plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {SQL.seq_of}", ["m", "x"])]
    finally:
        conn.close()
    assert plan == [step.format(op="<" if newest else ">")], plan
    assert seq_plan == ["SEARCH jobs USING COVERING INDEX jobs_by_id (queue=? AND job_id=?)"], seq_plan


def test_writing_a_job_builds_no_temporary_table(open_sqlite: Callable[..., SQLiteQueue], db: Path) -> None:
    """A partial index's condition is tested on every INSERT; an IN list there makes
    SQLite build a temporary table (OpenEphemeral) for each row written."""
    open_sqlite("m")
    conn = sqlite3.connect(db)
    try:
        for sql, width in ((SQL.insert_into(FRESH_COLUMNS), 9), (SQL.insert, SQL.insert.count("?"))):
            program = [row[1] for row in conn.execute(f"EXPLAIN {sql}", [None] * width)]
            assert "Insert" in program
            assert "OpenEphemeral" not in program, sql
    finally:
        conn.close()


@pytest.fixture
def adapter_spy() -> Iterator[Callable[..., list[str]]]:
    """``watch(*types)`` registers sqlite3 adapters for ``types`` that record each use
    and returns the record: sqlite3 consults adapters for every value that is not
    exactly str, int, float or bytearray, and that lookup costs about 1 us a value."""
    seen: list[str] = []
    added: list[tuple[type, type]] = []

    def spy(value: Any) -> Any:
        seen.append(f"{type(value).__name__} {value!r}")
        if isinstance(value, bool):
            return int(value)
        return str.__str__(value) if isinstance(value, str) else value

    def watch(*types: type) -> list[str]:
        for kind in types:
            sqlite3.register_adapter(kind, spy)
            added.append((kind, sqlite3.PrepareProtocol))
        return seen

    yield watch
    for key in added:
        sqlite3.adapters.pop(key, None)


def test_every_transition_binds_only_values_sqlite_takes_directly(
    open_sqlite: Callable[..., SQLiteQueue], clock: FakeClock, adapter_spy: Callable[..., list[str]]
) -> None:
    seen = adapter_spy(bool, JobStatus)
    queue = open_sqlite("binds")
    queue.enqueue(job("one"))
    queue.enqueue(job("child", depends_on=["one"]))
    queue.enqueue(job("later", scheduled_at=clock.now() + 60.0))
    queue.enqueue_many([job(f"many-{i}", priority=i + 1) for i in range(3)])
    queue.enqueue_many([job("m-child", depends_on=["many-0"]), job("m-done", status=JobStatus.COMPLETED)])
    claims = queue.claim_many("w", lease_s=30.0, limit=3)
    queue.extend_lease(claims[0].job.job_id, token=claims[0].token, lease_s=60.0)
    queue.complete(claims[0].job.job_id, token=claims[0].token, result={"ok": True})
    queue.fail(claims[1].job.job_id, token=claims[1].token, error="e", retry_at=clock.now() + 1.0)
    queue.bury(claims[2].job.job_id, token=claims[2].token, error="dead")
    queue.replay(claims[2].job.job_id)
    more = queue.claim_many("w", lease_s=1.0, limit=2)
    queue.complete_many([Completion(more[0].job.job_id, more[0].token, 1)])
    queue.release(more[1].job.job_id, token=more[1].token)
    again = queue.claim("w", lease_s=1.0)
    assert again is not None
    clock.advance(5.0)
    queue.reclaim_expired()
    queue.cancel("later")
    queue.set_priority("child", 9)
    queue.update_status("m-child", JobStatus.CANCELLED)
    exported = queue.export_jobs()
    other = open_sqlite("binds-copy")
    other.import_jobs(exported)
    queue.delete("m-done")
    for status in JobStatus:
        queue.list_jobs(status=status)
    queue.count_by_status()
    assert seen == []


def test_the_hot_path_binds_no_none_and_no_bytes(
    open_sqlite: Callable[..., SQLiteQueue], clock: FakeClock, adapter_spy: Callable[..., list[str]]
) -> None:
    """Adding fresh jobs and completing claimed ones in a batch: None is not bound (the
    column keeps its default) and small frames go as bytearrays."""
    queue = open_sqlite("hot")
    seen = adapter_spy(type(None), bytes)
    queue.enqueue(job("plain"))
    queue.enqueue(job("full", scheduled_at=clock.now() - 1.0, timeout_seconds=2.0, metadata={"m": 1}))
    more = [job("meta", metadata={"k": "v"}), job("t", timeout_seconds=1.0)]
    queue.enqueue_many([job(f"p{i}") for i in range(3)] + more)
    claims = queue.claim_many("w", lease_s=30.0, limit=7)
    assert len(claims) == 7
    done = queue.complete_many([Completion(c.job.job_id, c.token) for c in claims[:4]])
    done += queue.complete_many([Completion(c.job.job_id, c.token, {"r": i})
                                 for i, c in enumerate(claims[4:])])
    assert seen == []
    assert [getattr(j, "status", j) for j in done] == [JobStatus.COMPLETED] * 7
    assert queue.get_job("full").metadata == {"m": 1}
    assert queue.get_job("full").timeout_seconds == 2.0
    assert [queue.get_job(c.job.job_id).result for c in claims] == [None] * 4 + [{"r": 0}, {"r": 1}, {"r": 2}]


# -- F7: ids are never reused --------------------------------------------------------------


def _seqs(db: Path, queue: str) -> dict[str, int]:
    conn = sqlite3.connect(db)
    try:
        return dict(conn.execute("SELECT job_id, seq FROM jobs WHERE queue = ?", (queue,)).fetchall())
    finally:
        conn.close()


def test_f7_row_ids_are_never_reused(open_sqlite: Callable[..., SQLiteQueue], db: Path) -> None:
    queue = open_sqlite("f7")
    queue.enqueue_many([job(f"old-{i}") for i in range(100)])
    old = _seqs(db, "f7")
    for job_id in old:
        queue.delete(job_id)
    assert queue.size == 0
    queue.enqueue_many([job(f"new-{i}") for i in range(50)])
    for i in range(50):
        queue.enqueue(job(f"one-{i}"))
    new = _seqs(db, "f7")
    assert len(new) == 100
    assert min(new.values()) > max(old.values())


def test_f7_the_high_water_row_is_no_queue_and_no_job(
    open_sqlite: Callable[..., SQLiteQueue], db: Path
) -> None:
    queue = open_sqlite("f7")
    queue.enqueue_many([job(f"j{i}") for i in range(3)])
    top = max(_seqs(db, "f7").values())
    queue.delete("j2")
    queue.delete("j1")  # not the top any more: the high-water row stays at j2's seq
    assert _seqs(db, "") == {"high-water": top}
    assert queue.queue_names() == ["f7"]
    assert queue.size == 1
    assert queue.count_by_status()[JobStatus.PENDING] == 1
    queue.delete("j0")
    queue.enqueue(job("next"))
    assert _seqs(db, "f7") == {"next": top + 1}
    queue.delete("next")  # the new top: the high-water row moves up to it
    assert _seqs(db, "") == {"high-water": top + 1}


# -- F4: disk full ---------------------------------------------------------------------------


def _limit_pages(connections: list[sqlite3.Connection], extra: int | None) -> None:
    for conn in connections:
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        limit = 1_000_000_000 if extra is None else pages + extra
        conn.execute(f"PRAGMA max_page_count = {limit}")


def test_f4_a_full_disk_is_a_write_error_and_leaves_nothing_half_written(
    monkeypatch: pytest.MonkeyPatch, db: Path, clock: FakeClock
) -> None:
    recorder = Recorder()
    recorder.install(monkeypatch)
    queue = SQLiteQueue(db, name="f4", clock=clock)
    try:
        queue.enqueue(job("first"))
        _limit_pages(recorder.connections, 20)
        big = "x" * 40_000
        with pytest.raises(BackendWriteError) as info:
            queue.enqueue_many([job(f"bulk-{i}", payload={"blob": big}) for i in range(50)])
        assert str(db) in str(info.value)
        assert "full" in str(info.value)
        assert queue.size == 1
        stored = 1
        refused: BackendWriteError | None = None
        for i in range(100):
            try:
                queue.enqueue(job(f"single-{i}", payload={"blob": big}))
            except BackendWriteError as exc:
                refused = exc
                break
            stored += 1
        assert refused is not None
        assert str(db) in str(refused)
        assert queue.size == stored
        assert queue.count_by_status()[JobStatus.PENDING] == stored
        # Room again (pruning or a bigger disk): the same queue works without a restart.
        _limit_pages(recorder.connections, None)
        queue.enqueue_many([job(f"bulk-{i}", payload={"blob": big}) for i in range(50)])
        assert queue.size == stored + 50
        conn = sqlite3.connect(db)
        try:
            assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        finally:
            conn.close()
    finally:
        queue.close()


# -- H4: bad bytes in storage ---------------------------------------------------------------


def _frame(tag: int, codec: int, body: bytes, flags: int = 0) -> bytes:
    return bytes((0xC1, 1, tag, codec, flags)) + body


GARBAGE: dict[str, bytes] = {
    "random-bytes": b"\x00\xffnot a frame at all",
    "empty": b"",
    "truncated-msgpack": _frame(2, 0, b"\x85\xa1a"),
    "unknown-serializer-tag": _frame(9, 0, b"{}"),
    "unknown-codec-tag": _frame(1, 7, b"{}"),
    "bad-zstd": _frame(1, 1, b"\x28\xb5\x2f\xfd garbage"),
    "json-not-a-dict": _frame(1, 0, b"[1, 2, 3]"),
    "invalid-json": _frame(1, 0, b'{"a": '),
    "unknown-format-version": bytes((0xC1, 9, 1, 0, 0)) + b"{}",
    "pickle-while-disabled": _frame(3, 0, b"\x80\x04K\x01.", flags=1) + b"\x00" * 32,
}
TYPED_REASONS = (
    "DeserializationError",
    "UnknownCodecError",
    "UnsafeSerializerError",
    "SignatureError",
    "PayloadTooLargeError",
)


def _overwrite(db: Path, column: str, blobs: dict[str, bytes]) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.executemany(f"UPDATE jobs SET {column} = ? WHERE job_id = ?", [(v, k) for k, v in blobs.items()])
        conn.commit()
    finally:
        conn.close()


def test_h4_claiming_buries_undecodable_jobs_and_drains_the_good_ones(
    open_sqlite: Callable[..., SQLiteQueue], db: Path
) -> None:
    queue = open_sqlite("h4")
    good = [job(f"good-{i:04d}", payload={"i": i}) for i in range(1000)]
    bad_ids = [f"bad-{i:02d}" for i in range(50)]
    kinds = sorted(GARBAGE)
    queue.enqueue_many(good + [job(b, payload={"fine": "until overwritten"}) for b in bad_ids])
    queue.enqueue(job("child-of-bad", depends_on=[bad_ids[0]]))
    payloads = {b: GARBAGE[kinds[i % len(kinds)]] for i, b in enumerate(bad_ids[:40])}
    _overwrite(db, "payload", payloads)
    metadata = {b: GARBAGE[kinds[i % len(kinds)]] for i, b in enumerate(bad_ids[40:])}
    _overwrite(db, "metadata", metadata)

    done: set[str] = set()
    while claims := queue.claim_many("w", lease_s=60, limit=37):
        for claim in claims:
            assert claim.job.job_id.startswith("good-")
            queue.complete(claim.job.job_id, token=claim.token, result=claim.job.payload["i"])
            done.add(claim.job.job_id)
    assert done == {j.job_id for j in good}
    assert queue.dequeue() is None
    counts = queue.count_by_status()
    assert counts[JobStatus.COMPLETED] == 1000
    assert counts[JobStatus.DEAD] == 50
    assert counts[JobStatus.FAILED] == 1  # the dependent of a bad job
    assert "bad-00" in (queue.get_job("child-of-bad").error or "")

    dead = {j.job_id: j for j in queue.list_jobs(status=JobStatus.DEAD, limit=100)}
    assert set(dead) == set(bad_ids)
    raw_of = {**payloads, **metadata}
    for job_id, stored in dead.items():
        assert (stored.error or "").startswith(TYPED_REASONS), stored.error
        problems = stored.metadata["typedq.undecodable"]
        field = "payload" if job_id in payloads else "metadata"
        assert problems[field]["error"].startswith(TYPED_REASONS)
        assert base64.b64decode(problems[field]["raw_base64"]) == raw_of[job_id]
    exported = json.loads(json.dumps(queue.export_jobs(), allow_nan=False))
    assert len(exported) == 1051
    assert sum("typedq.undecodable" in d["metadata"] for d in exported) == 50


def test_h4_readers_never_fail_on_bad_bytes(open_sqlite: Callable[..., SQLiteQueue], db: Path) -> None:
    queue = open_sqlite()
    queue.enqueue(job("j", payload={"p": 1}, metadata={"m": 1}))
    claim = queue.claim("w", lease_s=10)
    assert claim is not None
    queue.complete("j", token=claim.token, result={"r": 1})
    _overwrite(db, "payload", {"j": GARBAGE["random-bytes"]})
    _overwrite(db, "result", {"j": GARBAGE["unknown-codec-tag"]})
    stored = queue.get_job("j")
    assert stored.payload == {}
    assert stored.result is None
    assert stored.metadata["m"] == 1
    assert set(stored.metadata["typedq.undecodable"]) == {"payload", "result"}
    assert queue.list_jobs()[0].job_id == "j"
    assert queue.export_jobs()[0]["payload"] == {}


def test_a_dequeued_undecodable_job_is_buried_too(open_sqlite: Callable[..., SQLiteQueue], db: Path) -> None:
    queue = open_sqlite()
    queue.enqueue_many([job("bad", priority=9), job("ok")])
    _overwrite(db, "payload", {"bad": GARBAGE["unknown-serializer-tag"]})
    taken = queue.dequeue()
    assert taken is not None
    assert taken.job_id == "ok"
    assert queue.get_job("bad").status is JobStatus.DEAD
    with pytest.raises(DeserializationError):
        FrameCodec("json").decode(GARBAGE["unknown-serializer-tag"])


# -- fresh rows: a job that never ran binds only the columns that differ from the defaults --


def _stored(db: Path, job_id: str) -> tuple[Any, ...]:
    conn = sqlite3.connect(db)
    try:
        row = conn.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return tuple(row[1:])  # every column but seq
    finally:
        conn.close()


@pytest.mark.parametrize("batch", [False, True])
def test_a_fresh_job_is_stored_exactly_as_a_full_row_would_store_it(
    open_sqlite: Callable[..., SQLiteQueue], db: Path, clock: FakeClock, batch: bool
) -> None:
    queue = open_sqlite("fresh")
    fields: dict[str, Any] = {
        "payload": {"a": [1, 2]}, "priority": 8, "scheduled_at": clock.now() + 60,
        "max_retries": 5, "timeout_seconds": 2.5, "metadata": {"m": 1}, "queue": "origin-q",
    }
    fresh, full = job("fresh", **fields), job("full", **fields)
    assert queue._rows.fresh_row(fresh, "fresh", queue._rows.blobs(fresh), clock.now()) is not None
    # The full INSERT, as a job that ran before would be stored (here with the same values).
    blobs = queue._rows.blobs(full)
    row = queue._rows.row(full, "fresh", blobs, clock.now())
    conn = sqlite3.connect(db)
    conn.execute(SQL.insert, row)
    conn.commit()
    conn.close()
    if batch:
        queue.enqueue_many([fresh])
    else:
        queue.enqueue(fresh)
    stored_fresh, stored_full = _stored(db, "fresh"), _stored(db, "full")
    # Column 0 is the queue, 1 the job id (the only difference); every other is equal.
    assert stored_fresh[0] == stored_full[0] == "fresh"
    assert stored_fresh[2:] == stored_full[2:]
    assert queue.get_job("fresh").to_dict() == {**queue.get_job("full").to_dict(), "job_id": "fresh"}


def test_a_job_that_ran_before_is_stored_with_every_column(open_sqlite: Callable[..., SQLiteQueue]) -> None:
    queue = open_sqlite("ran")
    ran = job("ran", attempt=2, retry_count=1, lost_count=1, error="boom", status=JobStatus.DEAD)
    fresh = job("new")
    assert queue._rows.fresh_row(ran, "ran", queue._rows.blobs(ran), 0.0) is None
    queue.enqueue_many([fresh, ran])  # a mixed batch (an import) stores full rows
    got = queue.get_job("ran")
    assert (got.attempt, got.retry_count, got.lost_count, got.error, got.status) == (
        2, 1, 1, "boom", JobStatus.DEAD,
    )
    assert queue.get_job("new").status is JobStatus.PENDING


# -- the writer lock: writers take turns on a side file, waiting a bounded time ---------------


def test_writers_take_turns_on_the_side_lock_file(open_sqlite: Callable[..., SQLiteQueue], db: Path) -> None:
    queue = open_sqlite("turns")
    queue.enqueue(job("first"))
    lock_path = Path(f"{db}-typedq-lock")
    assert lock_path.exists()
    # Another holder of the lock (as another process would be): a write waits for it.
    fd = os.open(lock_path, os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    done = threading.Event()
    thread = threading.Thread(target=lambda: (queue.enqueue(job("second")), done.set()))
    try:
        thread.start()
        assert not done.wait(0.3), "the write did not wait for the writer lock"
        assert [j.job_id for j in queue.list_jobs()] == ["first"]
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
    assert done.wait(5)
    thread.join(5)
    assert [j.job_id for j in queue.list_jobs()] == ["first", "second"]
    assert queue.diagnostics()["writer_lock_timeouts"] == 0


def test_a_writer_lock_held_too_long_is_passed_by(
    open_sqlite: Callable[..., SQLiteQueue], db: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import typedq.backends._sqlite_db as sqlite_db

    monkeypatch.setattr(sqlite_db, "BUSY_TIMEOUT_S", 0.2)
    queue = open_sqlite("stuck")
    queue.enqueue(job("first"))
    fd = os.open(f"{db}-typedq-lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)  # held by a stopped process, say: never released here
    try:
        started = time.monotonic()
        queue.enqueue(job("second"))  # SQLite itself is free: the write goes on
        assert 0.15 <= time.monotonic() - started < 3
        assert queue.diagnostics()["writer_lock_timeouts"] == 1
        assert queue.get_job("second").status is JobStatus.PENDING
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


@pytest.mark.parametrize("how", ["enqueue", "enqueue_many"])
def test_a_job_changed_by_hand_beyond_64_bits_is_refused_with_the_field_named(
    open_sqlite: Callable[..., SQLiteQueue], how: str
) -> None:
    """Jobs are validated when built; one changed afterwards reaches SQLite as it is, and
    an int SQLite cannot store is the typed error naming the field, nothing written."""
    queue = open_sqlite("m")
    job = Job(job_type="t", job_id="hand-made")
    job.max_retries = 10**30
    add = (lambda: queue.enqueue(job)) if how == "enqueue" else (
        lambda: queue.enqueue_many([Job(job_type="t", job_id="fine"), job])
    )
    with pytest.raises(InvalidJobError) as info:
        add()
    assert info.value.field == "max_retries"
    assert queue.size == 0


def test_a_schema_5_file_gets_a_traceback_column_and_old_rows_read_theirs_from_metadata(
    monkeypatch: pytest.MonkeyPatch, db: Path, clock: FakeClock
) -> None:
    """Schema 5 kept a failure's traceback inside the metadata frame; schema 6 adds the
    column, and a row written before reads with the text moved to ``Job.traceback``."""
    with monkeypatch.context() as patch:
        patch.setattr(schema, "MIGRATIONS", {v: schema.MIGRATIONS[v] for v in (1, 2, 3, 4, 5)})
        patch.setattr(schema, "SCHEMA_VERSION", 5)
        SQLiteQueue(db, name="m", clock=clock).close()
    metadata = FrameCodec("json").encode({"tenant": "t1", TRACEBACK_KEY: "Trace of old"}, context=b"old")
    conn = sqlite3.connect(db, isolation_level=None)
    try:  # buried as schema 5 buried: the traceback merged into the metadata frame
        conn.execute(
            "INSERT INTO jobs (queue, job_id, job_type, status, priority, created_at, max_retries, origin,"
            " payload, metadata, error, finished_at) VALUES ('m', 'old', 't', 'DEAD', 5, 1.0, 0, 'm', ?, ?,"
            " 'boom', 2.0)",
            (FrameCodec("json").encode({}, context=b"old"), metadata),
        )
    finally:
        conn.close()
    queue = SQLiteQueue(db, name="m", clock=clock)
    try:
        assert queue.diagnostics()["schema_version"] == schema.SCHEMA_VERSION
        old = queue.get_job("old")
        assert (old.traceback, old.metadata) == ("Trace of old", {"tenant": "t1"})
        assert queue.export_jobs()[0]["traceback"] == "Trace of old"
        queue.retry("old")  # a fresh run: no traceback, the stale one in metadata stays hidden
        assert queue.get_job("old").traceback is None
    finally:
        queue.close()
    conn = sqlite3.connect(db)
    try:
        assert "traceback" in {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    finally:
        conn.close()


def _policy_state(conn: sqlite3.Connection) -> tuple[list[float], list[tuple[str, int]]]:
    """A claim policy's state in ``job_counts``: the six fairness virtual times (packed in
    one row, or schema 13's six rows) and each rate's claim count."""
    fair = [0.0] * 6
    for job_type, value in conn.execute("SELECT job_type, n FROM job_counts WHERE status = 'fair'"):
        if job_type:
            fair[int(job_type)] = float(value)
        else:
            fair = list(struct.unpack("<6d", value))
    rates = conn.execute("SELECT job_type, n FROM job_counts WHERE status = 'rate' ORDER BY 1").fetchall()
    return fair, rates


def test_a_schema_12_file_keeps_its_claim_policy_state_in_job_counts(db: Path, clock: FakeClock) -> None:
    """Schema 12 kept the fairness virtual times and each rate's claim count in
    ``claim_state``; schema 13 moves them into ``job_counts`` (the virtual times as six
    rows, which a claim then packs into one). A file written the old way goes on
    choosing as it would have: its next claims match a twin never downgraded."""
    policy = ClaimPolicy(fairness="weighted", rate="1000/m", limits={"a": {"rate": "1000/m"}})
    twins = [db, db.with_name("twin.db")]
    queues = [SQLiteQueue(path, name="m", clock=clock) for path in twins]
    for queue in queues:
        queue.set_claim_policy(policy)
        queue.enqueue_many(
            [Job(job_id=f"j{i}", job_type="ab"[i % 2], priority=1 + i * 3 % 10) for i in range(60)]
        )
        for _ in range(15):
            assert queue.claim("w", lease_s=60) is not None
        queue.close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:  # the state as schema 12 stored it
        fair, rates = _policy_state(conn)
        assert [key for key, _ in rates] == ["", "a"]
        assert sum(value > 0 for value in fair) > 2
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO claim_state (queue, name, slot, value) VALUES ('m', 'fair', ?, ?)", enumerate(fair)
        )
        conn.execute(
            "INSERT INTO claim_state (queue, name, slot, value) SELECT queue, 'rate:' || job_type, -1, n"
            " FROM job_counts WHERE status = 'rate'"
        )
        conn.execute("DELETE FROM job_counts WHERE status IN ('fair', 'rate')")
        _undo_schema_14(conn)
        conn.execute("PRAGMA user_version = 12")
        conn.execute("COMMIT")
    finally:
        conn.close()
    queues = [SQLiteQueue(path, name="m", clock=clock) for path in twins]
    try:
        assert queues[0].diagnostics()["schema_version"] == schema.SCHEMA_VERSION
        conn = sqlite3.connect(db)
        try:
            assert _policy_state(conn) == (fair, rates)
            old = conn.execute("SELECT count(*) FROM claim_state WHERE name = 'fair' OR slot = -1").fetchone()
            assert old == (0,)
        finally:
            conn.close()
        for queue in queues:
            queue.set_claim_policy(policy)
        for _ in range(20):
            claims = [queue.claim("w", lease_s=60) for queue in queues]
            assert claims[0] is not None
            assert claims[1] is not None
            assert claims[0].job.job_id == claims[1].job.job_id
        conn = sqlite3.connect(db)
        try:  # the first claim packed the six rows into one
            assert conn.execute("SELECT job_type FROM job_counts WHERE status = 'fair'").fetchall() == [("",)]
        finally:
            conn.close()
    finally:
        for queue in queues:
            queue.close()


def _undo_schema_14(conn: sqlite3.Connection) -> None:
    """Take schema 14's column away, as a file of schema 13 or before was."""
    conn.execute("ALTER TABLE jobs DROP COLUMN claim_group")


def test_a_schema_13_file_keeps_its_running_batches(db: Path, clock: FakeClock) -> None:
    """Schema 13 told a batch claim by its jobs' shared (worker_id, started_at); schema 14
    names it (claim_group). The batches RUNNING in a schema-13 file stay batches after the
    upgrade, and jobs claimed alone stay alone."""
    queue = SQLiteQueue(db, name="m", clock=clock)
    queue.enqueue_many([job(f"j{i}") for i in range(4)])
    assert len(queue.claim_many("w", lease_s=1.0, limit=2)) == 2  # j0, j1: a batch
    clock.advance(0.1)
    assert queue.claim("w", lease_s=1.0) is not None  # j2: alone
    clock.advance(0.1)
    assert len(queue.claim_many("w", lease_s=1.0, limit=1)) == 1  # j3: alone
    queue.close()
    conn = sqlite3.connect(db, isolation_level=None)
    try:  # the file as schema 13 stored it
        conn.execute("BEGIN")
        _undo_schema_14(conn)
        conn.execute("PRAGMA user_version = 13")
        conn.execute("COMMIT")
    finally:
        conn.close()
    queue = SQLiteQueue(db, name="m", clock=clock)
    try:
        assert queue.diagnostics()["schema_version"] == schema.SCHEMA_VERSION
        clock.advance(2)
        assert sorted(queue.reclaim_expired()) == ["j0", "j1", "j2", "j3"]
        lost = {f"j{i}": queue.get_job(f"j{i}").lost_count for i in range(4)}
        assert lost == {"j0": 0, "j1": 0, "j2": 1, "j3": 1}
    finally:
        queue.close()


# -- dead letters ---------------------------------------------------------------------------


def test_a_bury_that_fails_while_writing_its_dead_letter_writes_nothing(
    open_sqlite: Callable[..., SQLiteQueue], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash between the dead row and its dead letter: there is no such moment, they are
    one transaction. A failure injected into the copy rolls the bury back too."""
    import typedq.backends._sqlite_dead as sqlite_dead

    queue, dlq = open_sqlite("m"), open_sqlite("dead-letter")
    queue.enqueue_many([job("j"), job("child", depends_on=["j"])])
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None

    def crash(*args: Any, **kwargs: Any) -> list[str]:
        raise RuntimeError("the process died here")

    with monkeypatch.context() as patch:
        patch.setattr(sqlite_dead, "copy_dead", crash)
        with pytest.raises(RuntimeError, match="died here"):
            queue.bury("j", token=claim.token, error="boom", dead_letter=dlq)
    assert queue.get_job("j").status is JobStatus.RUNNING
    assert queue.get_job("child").status is JobStatus.PENDING
    assert dlq.size == 0
    queue.bury("j", token=claim.token, error="boom", dead_letter=dlq)
    assert (queue.get_job("j").status, dlq.get_job("j").status) == (JobStatus.DEAD, JobStatus.DEAD)


def test_the_dropped_count_is_kept_in_the_file(open_sqlite: Callable[..., SQLiteQueue], db: Path) -> None:
    queue, dlq = open_sqlite("m"), open_sqlite("dead-letter")
    queue.enqueue_many([job(f"j{i}") for i in range(3)])
    for _ in range(3):
        claim = queue.claim("w", lease_s=30.0)
        assert claim is not None
        queue.bury(claim.job.job_id, token=claim.token, error="boom", dead_letter=dlq, dlq_max=1)
    assert dlq.count_dropped() == 2
    assert open_sqlite("dead-letter").count_dropped() == 2  # another object, another connection
    assert queue.count_dropped() == 0
    other = SQLiteQueue(db, name="dead-letter")
    try:
        assert other.count_dropped() == 2
    finally:
        other.close()


def test_a_purge_reads_jobs_finished_in_order_without_a_scan_or_a_sort(
    open_sqlite: Callable[..., SQLiteQueue], db: Path
) -> None:
    """A purge batch costs the rows it deletes, whatever the size of the queue."""
    from typedq.backends._sqlite_dead import _EXPIRED

    open_sqlite("m")
    conn = sqlite3.connect(db)
    try:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {_EXPIRED}", ["m", "COMPLETED", 1.0, 10])]
    finally:
        conn.close()
    assert plan == ["SEARCH jobs USING INDEX jobs_finished (queue=? AND status=? AND finished_at<?)"], plan


# -- job counts (schema 11) -----------------------------------------------------------------


def _row_counts(db: Path) -> dict[tuple[str, str, str], int]:
    """(queue, job type, status) -> jobs, counted from the rows themselves; status
    ``ready:<priority>`` for the jobs of the ready index, ``delayed`` for those of the
    delayed index."""
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(
            "SELECT queue, job_type, status, count(*) FROM jobs WHERE queue > '' GROUP BY 1, 2, 3"
            " UNION ALL SELECT queue, job_type, 'ready:' || priority, count(*) FROM jobs WHERE queue > ''"
            " AND status = 'PENDING' AND blocked_by = 0 AND delayed = 0 GROUP BY 1, 2, 3"
            " UNION ALL SELECT queue, job_type, 'delayed', count(*) FROM jobs WHERE queue > ''"
            " AND status = 'PENDING' AND delayed = 1 GROUP BY 1, 2"
        ).fetchall()
    finally:
        conn.close()
    return {(q, t, s): n for q, t, s, n in found}


def _scheduled(db: Path, queue: str, now: float) -> int:
    """PENDING jobs due later and not waiting for dependencies, from the rows themselves."""
    conn = sqlite3.connect(db)
    try:
        found: int = conn.execute(
            "SELECT count(*) FROM jobs WHERE queue = ? AND status = 'PENDING' AND blocked_by = 0"
            " AND scheduled_at > ?",
            (queue, now),
        ).fetchone()[0]
    finally:
        conn.close()
    return found


def _ready_by_level(db: Path, queue: str, now: float) -> dict[Priority, int]:
    """Ready jobs per level (PENDING, unblocked, due), counted from the rows themselves."""
    conn = sqlite3.connect(db)
    try:
        found = conn.execute(
            "SELECT priority, count(*) FROM jobs WHERE queue = ? AND status = 'PENDING' AND blocked_by = 0"
            " AND (scheduled_at IS NULL OR scheduled_at <= ?) GROUP BY priority",
            (queue, now),
        ).fetchall()
    finally:
        conn.close()
    levels = dict.fromkeys(LEVELS, 0)
    for priority, n in found:
        levels[LEVELS[level_index(priority)]] += n
    return levels


def _kept_counts(db: Path) -> dict[tuple[str, str, str], int]:
    """(queue, job type, status) -> jobs, as job_counts keeps them once the jobs above the
    fold mark are folded in (rows of 0, the mark, submissions and a claim policy's state
    left out)."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        counts.fold(conn)
        conn.execute("COMMIT")
        above = conn.execute(
            "SELECT count(*) FROM jobs WHERE seq > (SELECT n FROM job_counts WHERE queue = '')"
        ).fetchone()[0]
        assert above == 0, "the fold left jobs above its mark"
        found = conn.execute(
            "SELECT queue, job_type, status, n FROM job_counts"
            " WHERE queue > '' AND status NOT IN ('submitted', 'fair', 'rate') AND n != 0"
        ).fetchall()
    finally:
        conn.close()
    return {(q, t, s): n for q, t, s, n in found}


def _random_transitions(queue: SQLiteQueue, dlq: SQLiteQueue, clock: FakeClock, seed: int) -> Counter[str]:
    """A random mix of every transition that adds, moves or deletes jobs; returns the
    jobs submitted per type."""
    from typedq.policy import ClaimPolicy, Limit

    rng = random.Random(seed)
    submitted: Counter[str] = Counter()
    held: list[tuple[str, int]] = []
    ids = [0]

    def new(**fields: Any) -> Job:
        ids[0] += 1
        return Job(job_type=rng.choice("abc"), job_id=f"j{ids[0]}", **fields)

    def some(status: JobStatus | None = None) -> str | None:
        found = queue.list_jobs(status=status, limit=50)
        return rng.choice(found).job_id if found else None

    def op_enqueue() -> None:
        delay = rng.choice([None, clock.now() + 5.0])
        job = new(scheduled_at=delay, max_retries=rng.choice([0, 1]), priority=rng.randint(1, 10))
        queue.enqueue(job)
        submitted[job.job_type] += 1

    def op_enqueue_many() -> None:
        batch = [new() for _ in range(rng.randint(1, 5))]
        parent = some()
        if parent is not None and rng.random() < 0.5:
            batch.append(new(depends_on=[parent, batch[0].job_id]))
        queue.enqueue_many(batch)
        submitted.update(job.job_type for job in batch)

    def op_import() -> None:
        job = new(status=rng.choice([JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.FAILED]))
        if job.status is not JobStatus.PENDING:
            job.finished_at = clock.now()
        queue.import_jobs([job.to_dict()])
        submitted[job.job_type] += 1

    def op_claim() -> None:
        if rng.random() < 0.3:
            queue.set_claim_policy(
                ClaimPolicy(fairness="weighted", limits={"a": Limit(max_concurrency=2)})
                if rng.random() < 0.5 else None
            )
        claims = queue.claim_many("w", lease_s=10.0, limit=rng.randint(1, 4))
        held.extend((c.job.job_id, c.token) for c in claims)

    def op_finish() -> None:
        if not held:
            return
        job_id, token = held.pop(rng.randrange(len(held)))
        kind = rng.randrange(6)
        try:
            if kind == 0:
                queue.complete(job_id, token=token, result=1)
            elif kind == 1:
                queue.complete_many([Completion(job_id, token, None)])
            elif kind == 2:
                queue.fail(job_id, token=token, error="e", retry_at=clock.now() + rng.choice([0.0, 3.0]))
            elif kind == 3:
                queue.bury(job_id, token=token, error="e", dead_letter=dlq, dlq_max=3)
            elif kind == 4:
                queue.release(job_id, token=token)
            else:
                queue.cancel(job_id, token=token)
        except TypedqError:
            pass  # reclaimed, cancelled or deleted meanwhile

    def op_manage() -> None:
        job_id = some()
        if job_id is None:
            return
        kind = rng.randrange(8)
        try:
            if kind == 7:
                queue.set_priority(job_id, rng.randint(1, 10))
            elif kind == 0:
                queue.cancel(job_id)
            elif kind == 1:
                queue.delete(job_id)
            elif kind == 2:
                queue.update_status(job_id, rng.choice(list(JobStatus)))
            elif kind == 3:
                queue.replay(job_id)
            elif kind == 4:
                queue.retry(job_id, with_dependents=rng.random() < 0.5, dead_letter=dlq)
            elif kind == 5:
                queue.purge(statuses=[JobStatus.COMPLETED, JobStatus.FAILED], older_than=clock.now() + 1)
            else:
                dlq.delete(rng.choice(dlq.list_jobs()).job_id)
        except (TypedqError, IndexError):
            pass  # a transition the job's state refuses

    def op_time() -> None:
        clock.advance(rng.choice([1.0, 11.0]))
        queue.reclaim_expired(max_lost=2, dead_letter=dlq)
        if rng.random() < 0.3:
            queue.dequeue()

    ops = [
        op_enqueue, op_enqueue_many, op_import, op_claim, op_claim, op_finish, op_finish, op_manage, op_time,
    ]
    for _ in range(250):
        rng.choice(ops)()
    return submitted


@pytest.mark.parametrize(
    "case", [(1, 1000), (2, 3), (3, 1)], ids=["seed1-fold1000", "seed2-fold3", "seed3-fold1"]
)
def test_job_counts_equal_the_rows_after_random_transitions(
    open_sqlite: Callable[..., SQLiteQueue], db: Path, clock: FakeClock, case: tuple[int, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counts read (the stored ones plus the jobs above the fold mark), and the stored
    ones once folded, equal the rows, whether single enqueues fold every 1,000, 3 or 1."""
    seed, fold_every = case
    monkeypatch.setattr(counts, "FOLD_EVERY", fold_every)
    queue, dlq = open_sqlite("q"), open_sqlite("dlq")
    submitted = _random_transitions(queue, dlq, clock, seed)
    queue.enqueue(Job(job_type="last", created_at=clock.now()))  # above the mark, at least
    submitted["last"] += 1
    rows_now = _row_counts(db)
    assert any(s.startswith("ready:") for _, _, s in rows_now)
    _check_counts_read((queue, dlq), rows_now, submitted, clock, db)
    assert _kept_counts(db) == rows_now
    _check_counts_read((queue, dlq), rows_now, submitted, clock, db)  # all folded now


def _check_counts_read(
    queues: tuple[SQLiteQueue, SQLiteQueue], rows_now: dict[tuple[str, str, str], int],
    submitted: Counter[str], clock: FakeClock, db: Path,
) -> None:
    queue, dlq = queues
    for q in (queue, dlq):
        by_status = {s: n for (name, _, s), n in rows_now.items() if name == q.name}
        expected = dict.fromkeys(JobStatus, 0)
        for (name, _, status), n in rows_now.items():
            if name == q.name and not status.startswith("ready:") and status != "delayed":
                expected[JobStatus(status)] += n
        assert q.count_by_status() == expected, by_status
        assert q.size == sum(expected.values())
        for status in JobStatus:
            assert q.count_by_type(status) == {
                t: n for (name, t, s), n in rows_now.items() if name == q.name and s == status.value
            }
    assert queue.count_submitted() == dict(submitted)
    assert dlq.count_submitted() == {}
    clock.advance(3.0)  # some delayed jobs fall due, not yet promoted by a claim
    assert queue.count_by_priority() == _ready_by_level(db, "q", clock.now())
    assert queue.count_scheduled() == _scheduled(db, "q", clock.now())
    assert sum(queue.count_by_status().values()) > 0


def test_completions_of_every_batch_size_prepare_a_statement_per_size_bucket(tmp_path: Path) -> None:
    """Batch sizes vary with timing; each connection keeps every statement text it ran
    prepared (about 22 KB each), so the batch completion's text depends on a power-of-two
    bucket of the size, not on the size: 1 to 70 jobs make 7 texts (with and without
    results), not 70, and the padding rows complete nothing."""
    queue = SQLiteQueue(tmp_path / "jobs.db", clock=FakeClock())
    SQL.complete_batch.cache_clear()
    try:
        for size in range(1, 71):
            queue.enqueue_many([Job(job_type="t", job_id=f"s{size}-{i}") for i in range(size)])
            claims = queue.claim_many("w", lease_s=60.0, limit=size)
            assert len(claims) == size
            done = queue.complete_many(
                [Completion(c.job.job_id, c.token, i if size % 2 else None) for i, c in enumerate(claims)]
            )
            assert [job.job_id for job in done] == [c.job.job_id for c in claims]  # type: ignore[union-attr]
        assert SQL.complete_batch.cache_info().currsize <= 2 * 8  # buckets 1, 2, 4 ... 128
        assert queue.count_by_status()[JobStatus.COMPLETED] == 70 * 71 // 2
        assert queue.get_job("s3-2").result == 2
    finally:
        queue.close()


@pytest.mark.timeout(30)
def test_an_idle_claim_by_type_with_none_of_its_types_ready_opens_no_write_transaction(
    tmp_path: Path,
) -> None:
    """Once a claim took nothing, the next claim of the same types asks the counts first
    whether one of them is ready: while only other types' jobs are, it neither walks
    jobs_ready past all of them (100,000 jobs of another type: 24 ms a claim here) nor
    takes the write lock, which another connection holds in this test."""
    queue = SQLiteQueue(tmp_path / "q.db", name="q")
    blocker = sqlite3.connect(tmp_path / "q.db", isolation_level=None, timeout=0.1)
    try:
        queue.enqueue_many([Job(job_type="b", created_at=1.0) for _ in range(50)])
        assert queue.claim("w", lease_s=30, job_types=["a"]) is None  # took nothing
        blocker.execute("BEGIN IMMEDIATE")
        began = time.monotonic()
        assert queue.claim("w", lease_s=30, job_types=["a"]) is None
        assert queue.claim_many("w", lease_s=30, limit=5, job_types=["a", "c"]) == []
        assert time.monotonic() - began < 2.0  # not the 5 s busy timeout
        blocker.execute("ROLLBACK")
        queue.enqueue(Job(job_id="a1", job_type="a", created_at=2.0))
        claim = queue.claim("w", lease_s=30, job_types=["a"])
        assert claim is not None
        assert claim.job.job_id == "a1"
    finally:
        blocker.close()
        queue.close()
