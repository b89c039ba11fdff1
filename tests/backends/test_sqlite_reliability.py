"""SQLite-only reliability rows (RELIABILITY.md §4b): A3, and C4 with owner liveness on.

* A3: kill -9 a producer process during ``enqueue_many(1000)``, 20 times, each kill at a
  uniformly random moment of the call (its duration is measured first). After each kill
  the job count has risen by exactly 0 or 1000 (each batch is all there or not at all),
  every ``job_deps`` edge joins two stored jobs, the edges agree with the blocked
  counters, and ``PRAGMA integrity_check`` is ok. Victims are ``spawn`` processes that
  report readiness and the start of each call over a pipe
  (:func:`tests.backends._sqlite_procs.batch_producer`).
* C4 with liveness: the conformance C4 (``tests/conformance/test_heartbeats.py``) turns
  owner liveness off. Here it is on: a worker of this (live) process whose renewals fail
  for 2 × the lease keeps its job, since the reaper does not rescue a live owner's job;
  renewals resume and the job completes once, with 1 ``start`` and 0 rescues.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import sqlite3
import statistics
import threading
import time
from collections.abc import Iterator
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, cast

import pytest
from tests.backends._sqlite_procs import BATCH, batch_jobs, batch_producer
from tests.helpers import wait_until
from tests.reliability.faults import FailingRenewals
from tests.reliability.ledger import Ledger, check

from typedq.backends.base import Queue
from typedq.backends.sqlite import SQLiteQueue
from typedq.job import Job, JobStatus
from typedq.leases import Reaper
from typedq.worker import Worker

KILLS = 20
#: Victims that run their batch to the end first, to measure one call's duration.
CALIBRATION = 3
#: Victims started at once (each waits for its turn, so none competes for the CPU
#: with the one being killed).
WAVE = 5


class _Victim:
    """A spawn process running :func:`batch_producer`, and the parent's end of its pipe."""

    def __init__(self, context: Any, db: Path) -> None:
        self.conn, child_end = cast(tuple[Connection, Connection], context.Pipe())
        self.proc: BaseProcess = context.Process(
            target=batch_producer, args=(str(db), child_end), daemon=True
        )
        self.proc.start()
        child_end.close()

    def receive(self, timeout: float = 60.0) -> tuple[str, int]:
        assert self.conn.poll(timeout), "the victim sent nothing"
        kind, value = self.conn.recv()
        return str(kind), int(value)

    def acknowledged(self, batch: int) -> bool:
        """Whether the (dead) victim had reported ``enqueue_many`` of ``batch`` returned."""
        try:
            return bool(self.conn.poll()) and self.conn.recv() == ("done", batch)
        except EOFError:  # nothing more was sent before the kill
            return False

    def end(self) -> None:
        """Kill it if still running (by pid) and release the pipe."""
        if self.proc.is_alive() and self.proc.pid is not None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.join(30)
        self.conn.close()


def _counts(db: Path) -> dict[str, int]:
    """Jobs per batch prefix (``b7`` → n), edges, dangling edges, blocked counter sum."""
    conn = sqlite3.connect(db)
    try:
        per_batch = dict(
            conn.execute(
                "SELECT substr(job_id, 1, instr(job_id, '-') - 1), count(*) FROM jobs"
                " WHERE queue = 'a3' GROUP BY 1"
            ).fetchall()
        )
        edges = conn.execute("SELECT count(*) FROM job_deps WHERE queue = 'a3'").fetchone()[0]
        dangling = conn.execute(
            "SELECT count(*) FROM job_deps d WHERE d.queue = 'a3' AND ("
            " NOT EXISTS (SELECT 1 FROM jobs j WHERE j.queue = d.queue AND j.job_id = d.parent)"
            " OR NOT EXISTS (SELECT 1 FROM jobs j WHERE j.queue = d.queue AND j.job_id = d.child))"
        ).fetchone()[0]
        blocked = conn.execute("SELECT ifnull(sum(blocked_by), 0) FROM jobs WHERE queue = 'a3'").fetchone()[0]
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()
    return {
        **{f"batch {k}": v for k, v in per_batch.items()},
        "total": sum(per_batch.values()),
        "edges": edges,
        "dangling": dangling,
        "blocked": blocked,
        "integrity ok": int(integrity == "ok"),
    }


def _edges_of(batches: int) -> int:
    """``job_deps`` rows of ``batches`` committed batches, all anchored but the first."""
    jobs = batch_jobs(1, "b0-0000")
    return batches * sum(len(j.depends_on) for j in jobs) - 1 if batches else 0


@pytest.mark.chaos
@pytest.mark.timeout(120)
def test_a3_kill_9_during_enqueue_many_leaves_all_or_nothing(tmp_path: Path) -> None:
    db = tmp_path / "a3.db"
    SQLiteQueue(db, name="a3").close()
    context = multiprocessing.get_context("spawn")
    rng = random.Random(3)
    victims: list[_Victim] = []
    committed: set[int] = set()
    outcomes = {"none": 0, "all": 0}
    try:
        # Measure: fresh victims (each killed one runs its first call too) run a batch to
        # the end; the kills are spread over the median duration.
        calibration = [_Victim(context, db) for _ in range(CALIBRATION)]
        victims.extend(calibration)
        durations = []
        for batch, victim in enumerate(calibration):
            assert victim.receive()[0] == "ready"
            victim.conn.send((batch, None if batch == 0 else "b0-0000"))
            assert victim.receive() == ("begin", batch)
            began = time.perf_counter()
            assert victim.receive() == ("done", batch)
            durations.append(time.perf_counter() - began)
            committed.add(batch)
            victim.conn.send(None)
            victim.proc.join(30)
            assert victim.proc.exitcode == 0
        duration = statistics.median(durations)

        batch = CALIBRATION
        for wave_start in range(0, KILLS, WAVE):
            wave = [_Victim(context, db) for _ in range(min(WAVE, KILLS - wave_start))]
            victims.extend(wave)
            for victim in wave:
                assert victim.receive()[0] == "ready"
            for victim in wave:
                before = _counts(db)["total"]
                victim.conn.send((batch, "b0-0000"))
                assert victim.receive() == ("begin", batch)
                time.sleep(rng.uniform(0.0, duration))  # the kill's moment, not a synchronisation
                assert victim.proc.pid is not None
                os.kill(victim.proc.pid, signal.SIGKILL)
                victim.proc.join(30)
                assert victim.proc.exitcode == -signal.SIGKILL
                acknowledged = victim.acknowledged(batch)

                counts = _counts(db)
                rise = counts["total"] - before
                assert rise in (0, BATCH), f"kill {batch}: a partial batch of {rise} jobs"
                if acknowledged:
                    assert rise == BATCH, f"kill {batch}: enqueue_many returned, jobs missing"
                if rise:
                    committed.add(batch)
                outcomes["all" if rise else "none"] += 1
                assert {k: v for k, v in counts.items() if k.startswith("batch ")} == {
                    f"batch b{b}": BATCH for b in sorted(committed)
                }, f"kill {batch}"
                assert counts["dangling"] == 0, f"kill {batch}: orphan dependency edges"
                assert counts["edges"] == counts["blocked"] == _edges_of(len(committed)), counts
                assert counts["integrity ok"] == 1
                batch += 1
    finally:
        for victim in victims:
            victim.end()
    assert sum(outcomes.values()) == KILLS
    # The queue is usable after the kills: a claim walks a chain that crossed them.
    queue = SQLiteQueue(db, name="a3")
    try:
        assert queue.size == BATCH * len(committed)
        heads = BATCH // 10 * len(committed)  # every 10th job of a batch starts a chain
        anchored = len(committed) - 1  # and waits for b0-0000 when not in batch 0
        assert queue.ready_count() == heads - anchored
        claim = queue.claim("after-a3", lease_s=60)
        assert claim is not None
        assert claim.job.job_id == "b0-0000"
        queue.complete("b0-0000", token=claim.token)
        # b0-0000 done: b0-0001 and the anchored heads are released.
        assert queue.ready_count() == heads
    finally:
        queue.close()


# -- C4 with owner liveness on ----------------------------------------------------------------

LEASE_S = 1.0
HEARTBEAT_S = 0.25
REAPER_S = 0.1


@pytest.fixture
def live_queue(tmp_path: Path) -> Iterator[SQLiteQueue]:
    queue = SQLiteQueue(tmp_path / "c4.db", name="c4")
    yield queue
    queue.close()


@pytest.mark.timeout(30)
def test_c4_failing_renewals_of_a_live_owner_on_sqlite_do_not_lose_the_job(
    live_queue: SQLiteQueue, tmp_path: Path
) -> None:
    queue = live_queue
    release = threading.Event()
    flaky = FailingRenewals(queue)
    started = threading.Event()
    ledger = Ledger(tmp_path / "ledger")

    class _Handler:
        takes_job = True

        def __call__(self, job: Job) -> str:
            ledger.start(job.job_id, job.attempt, job.attempt)
            started.set()
            release.wait(20)
            ledger.end(job.job_id, job.attempt, job.attempt)
            return "done"

    job_id = queue.enqueue(Job(job_type="t", job_id="c4-live"))
    reaper = Reaper(lambda: [queue], interval_s=REAPER_S)
    worker = Worker(
        cast(Queue, flaky), {"t": _Handler()}, poll_interval=0.02, worker_id="c4-live",
        lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S,
    )
    reaper.start()
    worker.start()
    try:
        assert started.wait(10)
        flaky.failing.set()
        wait_until(
            lambda: flaky.refused >= 2 * LEASE_S / HEARTBEAT_S, timeout=10, message="2 × lease of refusals"
        )
        job = queue.get_job(job_id)
        assert job.lease_until is not None
        assert job.lease_until < time.time()  # the lease has lapsed...
        assert (job.status, job.attempt) == (JobStatus.RUNNING, 1)  # ...but its owner lives
        flaky.failing.clear()
        wait_until(lambda: (queue.get_job(job_id).lease_until or 0) > time.time(), timeout=5,
                   message="renewals resumed")
        assert not worker.lease_keeper.is_lost(cast(Queue, flaky), job_id)
        release.set()
        wait_until(lambda: queue.get_job(job_id).status is JobStatus.COMPLETED, timeout=10)
    finally:
        release.set()
        reaper.stop()
        assert worker.stop(wait=True, timeout=10)
        ledger.close()
    job = queue.get_job(job_id)
    assert (job.attempt, job.lost_count, job.result) == (1, 0, "done")
    assert reaper.reclaimed_total == 0
    assert (worker.stats.completed, worker.stats.stale) == (1, 0)
    report = check(ledger.path, [job_id], statuses={job_id: job.status})
    assert report.ok
    assert (report.starts[job_id], report.ends[job_id]) == (1, 1)
