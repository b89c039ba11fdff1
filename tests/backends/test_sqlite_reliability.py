"""SQLite-only reliability rows (RELIABILITY.md §4b): A3 and F2.

* A3: kill -9 a producer process during ``enqueue_many(1000)``, 20 times, each kill at a
  uniformly random moment of the call (its duration is measured first). After each kill
  every batch is all there or not at all (so the job count has risen by a multiple of
  1000), a batch whose call returned is there, a batch once seen stays, every
  ``job_deps`` edge joins two stored jobs, the edges agree with the blocked counters,
  and ``PRAGMA integrity_check`` is ok. Victims are ``spawn`` processes that report
  readiness and the start of each call over a pipe
  (:func:`tests.backends._sqlite_procs.batch_producer`).

  A batch not there right after its kill may still appear, whole, at a later check:
  when the kill falls after SQLite wrote the transaction's frames (with the commit
  mark) to the WAL file and before it updated the shared WAL index, readers go on
  without it, and SQLite's WAL recovery (run by the next connection to open the file
  once every process that had it open is gone) finds the committed frames and makes
  the transaction visible. If any other transaction commits first, it overwrites those
  frames and the batch is gone for good. Either way the call's outcome was unknown
  (it never returned) and the batch is whole; the check allows it for batches whose
  call never returned, and counts them.
* F2: kill -9 a process during ``complete()`` (a ~10 KB result) and during ``fail()``
  with a retry time (an error and a traceback), 20 times each. The victim
  (:func:`tests.backends._sqlite_procs.finishing_victim`) claims and finishes jobs in a
  loop, reporting each claim and each return over a pipe; the kill falls at a uniformly
  random moment of that loop. After each kill, over a fresh connection: no job is
  COMPLETED without its result and no job has a result unless COMPLETED; a failed job
  has its retry count, error, retry time and traceback all written or none of them; the
  RUNNING jobs are exactly those claimed and not finished; ``PRAGMA integrity_check``
  is ok.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import statistics
import time
from collections import Counter
from collections.abc import Callable
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any, NamedTuple, cast

import pytest
from tests.backends._sqlite_procs import (
    BATCH,
    batch_jobs,
    batch_producer,
    f2_failure,
    f2_result,
    finishing_victim,
)

from typedq.backends._sqlite_driver import sqlite3
from typedq.backends.sqlite import SQLiteQueue
from typedq.job import Job, JobStatus

KILLS = 20
#: Victims that run their batch to the end first, to measure one call's duration.
CALIBRATION = 3
#: Victims started at once (each waits for its turn, so none competes for the CPU
#: with the one being killed).
WAVE = 5


class _Victim:
    """A spawn process running ``target(*args, conn)``, and the parent's end of its pipe.

    The target is :func:`batch_producer` unless given.
    """

    def __init__(
        self, context: Any, db: Path, target: Callable[..., None] = batch_producer, *args: object
    ) -> None:
        self.conn, child_end = cast(tuple[Connection, Connection], context.Pipe())
        self.proc: BaseProcess = context.Process(
            target=target, args=(str(db), *args, child_end), daemon=True
        )
        self.proc.start()
        child_end.close()

    def receive(self, timeout: float = 60.0) -> tuple[str, int]:
        kind, value = self.message(timeout)
        return str(kind), int(value)

    def message(self, timeout: float = 60.0) -> tuple[Any, ...]:
        """The next message, waiting at most ``timeout`` seconds for it."""
        assert self.conn.poll(timeout), "the victim sent nothing"
        return tuple(self.conn.recv())

    def rest(self) -> list[tuple[Any, ...]]:
        """Every message the (dead) victim sent and the test has not read yet."""
        messages = []
        try:
            while self.conn.poll():
                messages.append(tuple(self.conn.recv()))
        except EOFError:  # the victim's end is closed: nothing more
            pass
        return messages

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
    committed: set[int] = set()  # batches seen in the file (once seen, they must stay)
    unacknowledged: set[int] = set()  # killed before enqueue_many returned
    outcomes = {"none": 0, "all": 0, "late": 0}
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
                if not acknowledged:
                    unacknowledged.add(batch)

                counts = _counts(db)
                present = {
                    int(key.removeprefix("batch b")): n
                    for key, n in counts.items()
                    if key.startswith("batch b")
                }
                partial = {b: n for b, n in present.items() if n != BATCH}
                assert not partial, f"kill {batch}: a partial batch (batch: jobs) {partial}"
                assert committed <= present.keys(), f"kill {batch}: batches gone {committed - present.keys()}"
                appeared = present.keys() - committed
                assert counts["total"] - before == BATCH * len(appeared), f"kill {batch}: {counts}"
                if acknowledged:
                    assert batch in appeared, f"kill {batch}: enqueue_many returned, jobs missing"
                # Only a batch whose call never returned may appear late (see the module).
                late = appeared - {batch}
                assert late <= unacknowledged, f"kill {batch}: batches from nowhere {late}"
                committed |= appeared
                outcomes["all" if batch in appeared else "none"] += 1
                outcomes["late"] += len(late)
                assert counts["dangling"] == 0, f"kill {batch}: orphan dependency edges"
                assert counts["edges"] == counts["blocked"] == _edges_of(len(committed)), counts
                assert counts["integrity ok"] == 1
                batch += 1
    finally:
        for victim in victims:
            victim.end()
    assert outcomes["all"] + outcomes["none"] == KILLS
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


# -- F2: kill -9 during complete() and fail() ------------------------------------------------

#: Kills per transition.
F2_KILLS = 20
#: Victims started at once; each waits for its turn (see A3's WAVE).
F2_WAVE = 5
#: Jobs enqueued per run: more than the 20 victims can take before their kills.
F2_JOBS = 2000
#: Each kill falls uniformly in this many seconds after the victim's first claim, a span
#: of dozens of claim-then-finish cycles.
F2_WINDOW_S = 0.01


class _Row(NamedTuple):
    status: str
    attempt: int
    worker_id: str | None
    lease_until: float | None
    finished_at: float | None
    retry_count: int
    error: str | None
    scheduled_at: float | None
    delayed: int
    has_result: int


def _f2_rows(db: Path) -> tuple[dict[str, _Row], str]:
    """Every F2 row as stored, read over a fresh connection, and ``PRAGMA integrity_check``."""
    conn = sqlite3.connect(db)
    try:
        rows = {
            job_id: _Row(*rest)
            for job_id, *rest in conn.execute(
                "SELECT job_id, status, attempt, worker_id, lease_until, finished_at, retry_count,"
                " error, scheduled_at, delayed, result IS NOT NULL FROM jobs WHERE queue = 'f2'"
            )
        }
        integrity = str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()
    return rows, integrity


def _f2_check_finished(queue: SQLiteQueue, mode: str, job_id: str, token: int) -> None:
    """``job_id`` holds all of what ``complete``/``fail`` with ``token`` wrote."""
    job = queue.get_job(job_id)
    assert job.attempt == token, job_id
    assert job.lease_until is None, job_id
    if mode == "complete":
        assert job.status is JobStatus.COMPLETED, job_id
        assert job.result == f2_result(job_id), job_id
        assert job.finished_at is not None, job_id
        return
    error, retry_at, traceback = f2_failure(job_id)
    assert job.status is JobStatus.PENDING, job_id
    assert (job.retry_count, job.error, job.scheduled_at) == (1, error, retry_at), job_id
    assert job.traceback == traceback, job_id
    assert (job.worker_id, job.result) == (None, None), job_id


def _f2_check_rows(mode: str, rows: dict[str, _Row], running: dict[str, int], finished: set[str]) -> None:
    """The state and result columns agree everywhere; only the expected rows moved."""
    assert len(rows) == F2_JOBS
    half_done = [j for j, r in rows.items() if (r.status == "COMPLETED") != bool(r.has_result)]
    assert half_done == [], "COMPLETED without a result, or a result without COMPLETED"
    assert {j for j, r in rows.items() if r.status == "RUNNING"} == set(running)
    for job_id, row in rows.items():
        retry = (row.retry_count, row.error, row.scheduled_at, row.delayed)
        if job_id in finished and mode == "fail":
            error, retry_at, _ = f2_failure(job_id)
            assert retry == (1, error, retry_at, 1), f"{job_id}: a half-written retry {retry[::2]}"
            assert (row.status, row.worker_id, row.lease_until) == ("PENDING", None, None), job_id
        else:
            assert retry == (0, None, None, 0), f"{job_id}: a retry written by no fail() {retry[::2]}"
        if job_id in running:
            assert row.attempt == running[job_id], job_id
            assert row.lease_until is not None, job_id
            assert row.finished_at is None, job_id
        elif job_id not in finished:
            assert (row.status, row.attempt, row.worker_id) == ("PENDING", 0, None), f"{job_id} moved"


def _f2_kill(
    queue: SQLiteQueue,
    mode: str,
    victim: _Victim,
    *,
    worker: str,
    pid: int,
    delay: float,
    running: dict[str, int],
    finished: set[str],
) -> str:
    """Let ``victim`` run, kill it ``delay`` s after its first claim, check the file.

    Updates ``running`` and ``finished``; returns where the kill fell: after a claim was
    reported and before its transition committed ("mid-call"), after the commit and
    before "done" was sent ("committed"), or between jobs.
    """
    victim.conn.send("go")
    first = victim.message()
    assert first[0] == "claimed", first
    time.sleep(delay)  # the kill's moment, not a synchronisation
    os.kill(pid, signal.SIGKILL)
    victim.proc.join(30)
    assert victim.proc.exitcode == -signal.SIGKILL
    messages = [first, *victim.rest()]
    assert all(m[0] in ("claimed", "done") for m in messages), "the victim ran out of jobs"
    claimed = [(m[1], m[2]) for m in messages if m[0] == "claimed"]
    acknowledged = {(m[1], m[2]) for m in messages if m[0] == "done"}
    open_claims = [c for c in claimed if c not in acknowledged]
    # One job at a time: only the last reported claim can be unfinished.
    assert open_claims in ([], claimed[-1:]), open_claims

    rows, integrity = _f2_rows(db=queue.path)
    assert integrity == "ok", integrity
    finished.update(job_id for job_id, _ in acknowledged)
    outcome = "between jobs"
    for job_id, token in open_claims:
        if rows[job_id].status == "RUNNING":
            running[job_id] = token
            outcome = "mid-call"
        else:
            finished.add(job_id)
            outcome = "committed"
    # A claim that committed but whose report the kill cut off.
    unreported = {j for j, r in rows.items() if r.status == "RUNNING" and j not in running}
    assert len(unreported) <= 1, unreported
    for job_id in unreported:
        assert rows[job_id].worker_id == worker, job_id
        assert all(job_id != j for j, _ in claimed), job_id
        running[job_id] = rows[job_id].attempt
    _f2_check_rows(mode, rows, running, finished)
    for job_id, token in claimed:
        if job_id in finished:
            _f2_check_finished(queue, mode, job_id, token)
        else:
            assert rows[job_id].worker_id == worker, job_id
    return outcome


@pytest.mark.chaos
@pytest.mark.timeout(60)
@pytest.mark.parametrize("mode", ["complete", "fail"])
def test_f2_kill_9_during_complete_or_fail_never_half_writes(tmp_path: Path, mode: str) -> None:
    db = tmp_path / "f2.db"
    queue = SQLiteQueue(db, name="f2")
    queue.enqueue_many([Job(job_type="t", job_id=f"f2-{i:05d}", payload={"i": i}) for i in range(F2_JOBS)])
    context = multiprocessing.get_context("spawn")
    rng = random.Random(f"f2-{mode}")
    running: dict[str, int] = {}  # claimed by a killed victim, not finished: job id -> token
    finished: set[str] = set()
    outcomes: Counter[str] = Counter()
    victims: list[_Victim] = []

    def start(count: int) -> list[_Victim]:
        wave = [_Victim(context, db, finishing_victim, mode) for _ in range(count)]
        victims.extend(wave)
        return wave

    try:
        upcoming = start(F2_WAVE)
        for wave_start in range(0, F2_KILLS, F2_WAVE):
            wave, ready = upcoming, [victim.message() for victim in upcoming]
            # The next wave starts up while this one is killed: victims wait for "go", so
            # only its start-up competes for the CPU, and the kills stay uniformly random.
            upcoming = start(min(F2_WAVE, F2_KILLS - wave_start - F2_WAVE))
            for index, (victim, (kind, pid, worker)) in enumerate(zip(wave, ready, strict=True)):
                assert kind == "ready"
                try:
                    outcome = _f2_kill(
                        queue, mode, victim, worker=worker, pid=pid,
                        delay=rng.uniform(0.0, F2_WINDOW_S), running=running, finished=finished,
                    )
                except AssertionError as exc:
                    raise AssertionError(f"{mode} kill {wave_start + index}: {exc}") from exc
                outcomes[outcome] += 1
    finally:
        for victim in victims:
            victim.end()
    try:
        assert sum(outcomes.values()) == F2_KILLS
        # Most kills fall inside the call (about 2 in 3): 20 without one means a broken harness.
        assert outcomes["mid-call"] >= 1, outcomes
        # A job a kill interrupted is RUNNING under its token with nothing half-done, so
        # the holder's transition still applies.
        job_id, token = next(iter(running.items()))
        if mode == "complete":
            queue.complete(job_id, token=token, result=f2_result(job_id))
        else:
            error, retry_at, traceback = f2_failure(job_id)
            queue.fail(job_id, token=token, error=error, retry_at=retry_at, traceback=traceback)
        finished.add(job_id)
        del running[job_id]
        _f2_check_finished(queue, mode, job_id, token)
        rows, integrity = _f2_rows(db)
        _f2_check_rows(mode, rows, running, finished)
        assert integrity == "ok"
    finally:
        queue.close()
