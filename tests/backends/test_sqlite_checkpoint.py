"""Checkpoint starvation (RELIABILITY.md F8).

A reader holds one snapshot (an open read transaction) while producers enqueue and
workers drain: no checkpoint can reset the WAL then, and its file grows past
``journal_size_limit``. Within 2 s of the reader letting go, the file is back at or
under :data:`~typedq.backends._sqlite_db.WAL_SIZE_LIMIT` and the queue is usable, in
both cases:

* ``continued``: the load goes on after the release, and the next commit's
  autocheckpoint resets the WAL;
* ``stopped``: the load stopped before the release (every job done, the workers idle in
  ``wait_ready``): nothing commits, and the waiting workers' poll checkpoints it.

The slow test is F8 itself: a 30 s read during B2-size load (4 processes of 2 threads
draining 10,000 jobs). The fast one is the same with threads, a 3 s read and 1,500 jobs.
The reader is a plain connection of the backend's own SQLite module (a second copy of
SQLite in the process would drop the backend's file locks when it closes).
"""

from __future__ import annotations

import json
import multiprocessing
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests.helpers import wait_until
from tests.reliability._drain_procs import drain_worker

from typedq._identity import new_worker_id
from typedq.backends._sqlite_db import WAL_SIZE_LIMIT
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends.sqlite import SQLiteQueue
from typedq.job import Job, JobStatus

QUEUE = "f8"
#: F8: how soon after the release the WAL file must be back under the limit, seconds.
RELEASE_BOUND_S = 2.0
#: Jobs per ``enqueue_many`` of the producer.
BATCH = 10


def produce(db: str, total: int, end_at: float, out: str) -> None:
    """Enqueue ``total`` jobs in batches, spread evenly until ``end_at`` (``time.time()``);
    write the ids to ``out``."""
    queue = SQLiteQueue(db, name=QUEUE)
    ids: list[str] = []
    try:
        start = time.time()
        step = max(0.0, end_at - start) * BATCH / total
        for first in range(0, total, BATCH):
            batch = [Job(job_type="t", job_id=f"f8-{i:05d}") for i in range(first, min(first + BATCH, total))]
            ids.extend(queue.enqueue_many(batch))
            pause = start + (first // BATCH + 1) * step - time.time()
            if pause > 0:
                time.sleep(pause)  # pacing the load, not synchronising
    finally:
        queue.close()
    Path(out).write_text(json.dumps(ids))


@dataclass
class Load:
    """How the scenario runs its producer and drainers."""

    processes: bool
    drainers: int
    threads: int
    total: int
    hold_s: float


def _start(load: Load, target: Callable[..., None], *args: object) -> Callable[[], int | None]:
    """Run ``target(*args)`` in a spawned process or a thread; return its join (exit code)."""
    if load.processes:
        proc = multiprocessing.get_context("spawn").Process(target=target, args=args)
        proc.start()

        def join_proc() -> int | None:
            proc.join(60)
            return proc.exitcode

        return join_proc
    thread = threading.Thread(target=target, args=args)
    thread.start()

    def join_thread() -> int | None:
        thread.join(60)
        return None if thread.is_alive() else 0

    return join_thread


def _wal_size(db: Path) -> int:
    try:
        return Path(f"{db}-wal").stat().st_size
    except FileNotFoundError:
        return 0


def _completed(queue: SQLiteQueue) -> int:
    return queue.count_by_status()[JobStatus.COMPLETED]


def _starved_then_released(tmp_path: Path, load: Load, *, continued: bool) -> None:
    db = tmp_path / "f8.db"
    queue = SQLiteQueue(db, name=QUEUE)
    stop = tmp_path / "stop"
    produced_out = tmp_path / "produced.json"
    drained_outs = [tmp_path / f"drained-{i}.json" for i in range(load.drainers)]
    joins: list[Callable[[], int | None]] = []
    try:
        joins = [
            _start(load, drain_worker, f"sqlite:///{db}", str(out), load.threads, str(stop), QUEUE)
            for out in drained_outs
        ]
        reader = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
        try:
            reader.execute("BEGIN")
            assert reader.execute("SELECT count(*) FROM jobs").fetchone() == (0,)
            held_at = time.time()
            release_at = held_at + load.hold_s
            # continued: the producer goes on past the release; stopped: it ends well before.
            end_at = release_at + min(3.0, 0.4 * load.hold_s) if continued else held_at + 0.6 * load.hold_s
            joins.append(_start(load, produce, str(db), load.total, end_at, str(produced_out)))
            if not continued:
                wait_until(produced_out.exists, timeout=load.hold_s)
                wait_until(lambda: _completed(queue) == load.total, timeout=load.hold_s)
            left = release_at - time.time()
            if left > 0:
                time.sleep(left)  # the read is held this long: the scenario, not a wait for an event
            held_size = _wal_size(db)
            reader.execute("COMMIT")
        finally:
            reader.close()
        released = time.monotonic()
        # The scenario is real: the held snapshot let the WAL grow past the limit.
        assert held_size > WAL_SIZE_LIMIT
        sizes: list[int] = []

        def shrunk() -> bool:
            sizes.append(_wal_size(db))
            return sizes[-1] <= WAL_SIZE_LIMIT

        wait_until(shrunk, timeout=RELEASE_BOUND_S, interval=0.02)
        assert time.monotonic() - released <= RELEASE_BOUND_S, (held_size, sizes[-5:])

        # Usable: everything produced is drained, each job once, and new work flows.
        wait_until(produced_out.exists, timeout=30)
        wait_until(lambda: _completed(queue) == load.total, timeout=30)
        stop.touch()
        exits = [join() for join in joins]
        assert exits == [0] * len(joins)
        queue.enqueue(Job(job_type="t", job_id="after"))
        claim = queue.claim(new_worker_id("f8-after"), lease_s=60.0)
        assert claim is not None
        assert claim.job.job_id == "after"
        queue.complete("after", token=claim.token)
    finally:
        stop.touch()
        for join in joins:
            join()
        queue.close()
    produced = json.loads(produced_out.read_text())
    reports = [json.loads(out.read_text()) for out in drained_outs]
    assert [report["errors"] for report in reports] == [[]] * load.drainers
    claimed = Counter(job_id for report in reports for job_id in report["claimed"])
    assert {job_id: n for job_id, n in claimed.items() if n > 1} == {}
    assert set(claimed) == set(produced)
    assert len(produced) == load.total
    check = SQLiteQueue(db, name=QUEUE)
    try:
        counts = check.count_by_status()
    finally:
        check.close()
    assert counts[JobStatus.COMPLETED] == load.total + 1
    assert sum(counts.values()) == load.total + 1
    conn = sqlite3.connect(db)
    try:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    finally:
        conn.close()


@pytest.mark.timeout(60)
@pytest.mark.parametrize("continued", [True, False], ids=["continued", "stopped"])
def test_f8_fast_wal_shrinks_after_a_3s_read_under_thread_load(tmp_path: Path, continued: bool) -> None:
    load = Load(processes=False, drainers=2, threads=2, total=1_500, hold_s=3.0)
    _starved_then_released(tmp_path, load, continued=continued)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("continued", [True, False], ids=["continued", "stopped"])
def test_f8_wal_shrinks_after_a_30s_read_under_b2_load(tmp_path: Path, continued: bool) -> None:
    load = Load(processes=True, drainers=4, threads=2, total=10_000, hold_s=30.0)
    _starved_then_released(tmp_path, load, continued=continued)
