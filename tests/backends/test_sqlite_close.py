"""Closing a SQLite queue while other threads use it: a connection is never closed under
a call in progress, and every call after close raises ``QueueClosedError``."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from typedq.backends._sqlite_db import Connections
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends.sqlite import SQLiteQueue
from typedq.errors import BackendError, QueueClosedError
from typedq.job import Job


def _table(path: Path) -> Connections:
    db = Connections(path, 1)
    db.write(lambda conn: conn.execute("CREATE TABLE t (n INTEGER)"))
    return db


def _rows(path: Path) -> list[int]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT n FROM t ORDER BY n")]
    finally:
        conn.close()


class _HeldWrite(threading.Thread):
    """A thread whose write transaction waits, inside the transaction, for ``release``."""

    def __init__(self, db: Connections) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.inside = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            self.inside.set()
            assert self.release.wait(10)
            conn.execute("INSERT INTO t VALUES (1)")

        try:
            self.db.write(tx)
        except BaseException as exc:  # reported to the test
            self.error = exc


def _writing(path: Path) -> tuple[Connections, _HeldWrite]:
    """A table in a new file, and a thread holding a write transaction on it."""
    db = _table(path)
    writer = _HeldWrite(db)
    writer.start()
    assert writer.inside.wait(5)
    return db, writer


def test_close_waits_for_a_write_in_progress_on_another_thread(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    db, writer = _writing(path)
    closer = threading.Thread(target=db.close, kwargs={"wait_s": 10})
    closer.start()
    closer.join(0.1)
    assert closer.is_alive()  # waiting for the write, not closing its connection under it
    writer.release.set()
    closer.join(5)
    writer.join(5)
    assert not closer.is_alive()
    assert writer.error is None
    assert _rows(path) == [1]  # the write committed
    with pytest.raises(QueueClosedError):
        db.read("SELECT 1")


def test_close_that_stops_waiting_leaves_the_busy_connection_to_its_call(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    db, writer = _writing(path)
    began = time.monotonic()
    db.close(wait_s=0.05)
    assert time.monotonic() - began < 2.0
    writer.release.set()
    writer.join(5)
    assert writer.error is None  # its connection was not closed under it
    assert _rows(path) == [1]
    with pytest.raises(QueueClosedError):
        db.write(lambda conn: conn.execute("INSERT INTO t VALUES (2)"))
    assert _rows(path) == [1]


def test_every_call_after_close_raises_queue_closed_error(tmp_path: Path) -> None:
    queue = SQLiteQueue(tmp_path / "q.db", name="q")
    queue.enqueue(Job(job_id="a", job_type="t"))
    seen: list[BaseException] = []

    def other_thread() -> None:
        queue.get_job("a")  # this thread has its own connection before the close
        gate.wait(5)
        try:
            queue.claim("w", lease_s=5)
        except BaseException as exc:  # reported to the test
            seen.append(exc)

    gate = threading.Event()
    thread = threading.Thread(target=other_thread)
    thread.start()
    queue.close()
    gate.set()
    thread.join(5)
    assert len(seen) == 1
    assert isinstance(seen[0], QueueClosedError)
    assert isinstance(seen[0], BackendError)
    with pytest.raises(QueueClosedError, match=r"q\.db.*closed"):
        queue.enqueue(Job(job_id="b", job_type="t"))
    with pytest.raises(QueueClosedError):
        queue.get_job("a")
    reopened = SQLiteQueue(tmp_path / "q.db", name="q")
    try:
        assert reopened.size == 1  # nothing written after close
    finally:
        reopened.close()
