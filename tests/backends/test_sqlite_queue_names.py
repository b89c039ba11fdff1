"""``SQLiteQueue.queue_names()``: every queue of a file, read from an index.

SQLite-specific (one file holds many queues), so it is not in the conformance suite: a
``JobQueue`` is a store of one queue and has nothing to list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from typedq.backends._sqlite_driver import sqlite3
from typedq.backends._sqlite_sql import SQL
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus
from typedq.manager import DEAD_LETTER_QUEUE


@pytest.fixture
def open_sqlite(clock: FakeClock, tmp_path: Path) -> Iterator[Callable[..., SQLiteQueue]]:
    made: list[SQLiteQueue] = []

    def make(name: str, **kwargs: Any) -> SQLiteQueue:
        made.append(SQLiteQueue(tmp_path / "jobs.db", name=name, clock=clock, **kwargs))
        return made[-1]

    yield make
    for queue in made:
        queue.close()


def _job(queue: str, job_id: str, clock: FakeClock) -> Job:
    return Job.create("t", {}, queue=queue, job_id=job_id, now=clock.now())


def test_every_queue_with_jobs_is_listed_sorted(
    open_sqlite: Callable[..., SQLiteQueue], clock: FakeClock
) -> None:
    empty = open_sqlite("default")
    assert empty.queue_names() == []
    images, emails = open_sqlite("images"), open_sqlite("emails")
    images.enqueue(_job("images", "i1", clock))
    emails.enqueue_many([_job("emails", f"e{n}", clock) for n in range(3)])
    assert empty.queue_names() == ["emails", "images"]  # any queue object of the file sees them all
    assert images.queue_names() == emails.queue_names() == ["emails", "images"]


def test_the_dead_letter_queue_is_listed_and_emptied_queues_are_not(
    open_sqlite: Callable[..., SQLiteQueue], clock: FakeClock
) -> None:
    work, dead_letters = open_sqlite("work"), open_sqlite(DEAD_LETTER_QUEUE)
    work.enqueue(_job("work", "w1", clock))
    copy = _job("work", "d1", clock)
    copy.status = JobStatus.DEAD  # the manager's copy of a dead job keeps its own queue's name
    dead_letters.enqueue(copy)
    assert work.queue_names() == [DEAD_LETTER_QUEUE, "work"]
    work.delete("w1")
    assert work.queue_names() == [DEAD_LETTER_QUEUE]


def test_the_read_scans_the_queue_index_not_the_table(open_sqlite: Callable[..., SQLiteQueue]) -> None:
    queue = open_sqlite("q")
    with sqlite3.connect(queue.path) as conn:
        plan = [row[3] for row in conn.execute(f"EXPLAIN QUERY PLAN {SQL.queue_names}")]
    conn.close()
    # No table scan, no sort; the range skips the high-water row's queue "".
    assert plan == ["SEARCH jobs USING COVERING INDEX jobs_by_id (queue>?)"]
