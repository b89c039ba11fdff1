"""SQLite-only reliability rows (RELIABILITY.md §4b): F2 (A3, on every durable backend, is
in ``tests/reliability/test_batch_kills``).

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

import random
import time
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import pytest
from tests.backends._sqlite_procs import f2_failure, f2_result, finishing_victim
from tests.reliability.victims import Victim, victim_context

from typedq.backends._sqlite_driver import sqlite3
from typedq.backends.sqlite import SQLiteQueue
from typedq.job import Job, JobStatus

#: Kills per transition.
F2_KILLS = 20
#: Victims started at once; each waits for its turn, so none competes for the CPU with the
#: one being killed.
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
    victim: Victim,
    *,
    worker: str,
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
    victim.kill()
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
    context = victim_context()
    rng = random.Random(f"f2-{mode}")
    running: dict[str, int] = {}  # claimed by a killed victim, not finished: job id -> token
    finished: set[str] = set()
    outcomes: Counter[str] = Counter()
    victims: list[Victim] = []

    def start(count: int) -> list[Victim]:
        wave = [Victim(context, db, finishing_victim, mode) for _ in range(count)]
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
                assert (kind, pid) == ("ready", victim.proc.pid)
                try:
                    outcome = _f2_kill(
                        queue, mode, victim, worker=worker,
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
