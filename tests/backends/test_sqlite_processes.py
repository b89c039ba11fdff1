"""The SQLite backend across processes (RELIABILITY.md F3, F9, B2/B4, C2, C6).

Child processes run code from ``tests/backends/_sqlite_procs.py``; they report over
pipes and files, never by the parent sleeping. Killed processes are killed by pid.
What every shared store does across processes (each job taken once, waking on another
process's enqueue) is in tests/conformance/test_shared_store.py.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import spawn_module
from tests.reliability._drain_procs import drain_worker

import typedq.backends.sqlite as sqlite_backend
from typedq._identity import HOST, new_worker_id
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus

#: The module the child processes run.
PROCS = "tests.backends._sqlite_procs"


def job(job_id: str, **fields: Any) -> Job:
    return Job(job_type="t", job_id=job_id, **fields)


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@pytest.fixture
def queue(tmp_path: Path, clock: FakeClock) -> Iterator[SQLiteQueue]:
    q = SQLiteQueue(tmp_path / "jobs.db", name="shared", clock=clock)
    yield q
    q.close()


# -- C6: owner liveness ---------------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(60)
def test_c6_a_live_owner_keeps_its_expired_lease_until_it_dies(
    queue: SQLiteQueue, clock: FakeClock, wait_until: Callable[..., None]
) -> None:
    with spawn_module(PROCS, "owner") as owner:
        try:
            assert owner.stdout is not None
            worker_id = owner.stdout.readline().strip()
            assert worker_id.startswith("owner@")
            queue.enqueue(job("j"))
            claim = queue.claim(worker_id, lease_s=1.0)
            assert claim is not None
            clock.jump_wall(3600)  # the lease expired long ago by the wall clock, which jumped
            assert queue.reclaim_expired() == []
            assert queue.get_job("j").status is JobStatus.RUNNING
        finally:
            owner.kill()  # leaving the block waits for it and closes its pipes
    rescued: list[str] = []

    def rescued_now() -> bool:
        rescued.extend(queue.reclaim_expired())
        return bool(rescued)

    wait_until(rescued_now, timeout=0.2, interval=0.01)
    assert rescued == ["j"]
    job_now = queue.get_job("j")
    assert job_now.status is JobStatus.PENDING
    assert job_now.lost_count == 1


@pytest.mark.chaos
@pytest.mark.timeout(60)
def test_c6_a_killed_owner_not_yet_reaped_is_dead(
    queue: SQLiteQueue, clock: FakeClock, wait_until: Callable[..., None]
) -> None:
    with spawn_module(PROCS, "owner") as owner:
        try:
            assert owner.stdout is not None
            worker_id = owner.stdout.readline().strip()
            queue.enqueue(job("j"))
            assert queue.claim(worker_id, lease_s=1.0) is not None
            clock.jump_wall(2)
            assert queue.reclaim_expired() == []
            os.kill(owner.pid, signal.SIGKILL)  # not waited for: a zombie until the block ends

            def zombie() -> bool:
                stat = Path(f"/proc/{owner.pid}/stat").read_bytes()
                return stat[stat.rindex(b")") + 2 : stat.rindex(b")") + 3] == b"Z"

            wait_until(zombie, timeout=10, message="the owner is a zombie")
            assert queue.reclaim_expired() == ["j"]
        finally:
            owner.kill()  # leaving the block waits for it and closes its pipes


def test_c6_owners_that_cannot_be_checked_are_rescued(queue: SQLiteQueue, clock: FakeClock) -> None:
    mine = new_worker_id("here")  # alive: this process
    queue.enqueue_many([job("mine"), job("elsewhere"), job("hand-made")])
    for worker in (mine, f"w@not-{HOST}:1:1:ab", "plain-name"):
        assert queue.claim(worker, lease_s=1.0) is not None
    clock.jump_wall(2)
    assert sorted(queue.reclaim_expired()) == ["elsewhere", "hand-made"]
    assert queue.get_job("mine").status is JobStatus.RUNNING


def test_a_live_owner_that_stopped_renewing_loses_its_lease(queue: SQLiteQueue, clock: FakeClock) -> None:
    """Liveness is "the owner still renews this lease", not "its pid exists": a live
    owner whose lease passed its deadline by the monotonic clock too is rescued."""
    mine = new_worker_id("here")  # alive: this process
    queue.enqueue_many([job("renewed"), job("abandoned")])
    renewed = queue.claim(mine, lease_s=1.0)
    clock.advance(0.01)  # two claims, not one batch
    abandoned = queue.claim(mine, lease_s=1.0)
    assert renewed is not None
    assert abandoned is not None
    clock.advance(0.8)
    queue.extend_lease("renewed", token=renewed.token, lease_s=1.0)
    clock.advance(0.8)  # both clocks: 1.6 s after the claims, 0.8 s after the renewal
    assert queue.reclaim_expired() == ["abandoned"]
    assert queue.get_job("renewed").status is JobStatus.RUNNING
    got = queue.get_job("abandoned")
    assert (got.status, got.lost_count) == (JobStatus.PENDING, 1)


def test_c2_the_rescue_is_a_compare_and_set(
    queue: SQLiteQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The owner completes while the reaper checks liveness (after it selected the job)."""
    queue.enqueue_many([job("finished"), job("extended"), job("lost")])
    claims = {c.job.job_id: c for c in queue.claim_many("w", lease_s=1.0, limit=3)}
    clock.advance(2)

    def owner_alive_racing(worker_id: str | None) -> bool:
        queue.complete("finished", token=claims["finished"].token, result="done")
        queue.extend_lease("extended", token=claims["extended"].token, lease_s=60)
        return False

    monkeypatch.setattr(sqlite_backend, "owner_alive", owner_alive_racing)
    assert queue.reclaim_expired() == ["lost"]
    assert queue.get_job("finished").status is JobStatus.COMPLETED
    assert queue.get_job("finished").result == "done"
    assert queue.get_job("extended").status is JobStatus.RUNNING
    assert queue.get_job("extended").attempt == claims["extended"].token


# -- F3: fork ---------------------------------------------------------------------------


def _fork_child(queue: SQLiteQueue, index: int, out: str) -> None:
    claimed: list[str] = []
    queue.enqueue_many([job(f"c{index}-{i}") for i in range(250)])
    for i in range(250, 500):
        queue.enqueue(job(f"c{index}-{i}"))
    worker = new_worker_id(f"fork-{index}")
    while len(claimed) < 500:
        claim = queue.claim(worker, lease_s=60)
        if claim is None:
            queue.wait_ready(0.01)
            continue
        queue.complete(claim.job.job_id, token=claim.token)
        claimed.append(claim.job.job_id)
    Path(out).write_text(json.dumps(claimed))


@pytest.mark.timeout(120)
def test_f3_forked_children_reopen_their_connections(queue: SQLiteQueue, tmp_path: Path) -> None:
    assert queue.size == 0  # the parent's connection is open when it forks
    context = multiprocessing.get_context("fork")
    outs = [tmp_path / f"child-{i}.json" for i in range(4)]
    children = [context.Process(target=_fork_child, args=(queue, i, str(outs[i]))) for i in range(4)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=100)
    assert [child.exitcode for child in children] == [0, 0, 0, 0]
    claimed = Counter(job_id for out in outs for job_id in json.loads(out.read_text()))
    expected = {f"c{i}-{n}" for i in range(4) for n in range(500)}
    assert {k: v for k, v in claimed.items() if v > 1} == {}
    assert set(claimed) == expected
    assert queue.count_by_status()[JobStatus.COMPLETED] == 2000
    assert integrity(queue.path) == "ok"
    queue.enqueue(job("parent-still-works"))  # the parent's own connection is intact
    assert queue.get_job("parent-still-works").status is JobStatus.PENDING


# -- F9: kill -9 right after enqueue returned ------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(120)
def test_f9_every_acknowledged_enqueue_survives_kill_9(tmp_path: Path) -> None:
    db = tmp_path / "f9.db"
    SQLiteQueue(db, name="f9").close()
    rng = random.Random(9)
    acknowledged: list[str] = []
    rounds, parallel = 20, 4
    for _ in range(rounds // parallel):
        producers = [spawn_module(PROCS, "produce", str(db)) for _ in range(parallel)]
        try:
            for producer in producers:
                assert producer.stdout is not None
                wanted = rng.randint(1, 40)
                for _ in range(wanted):
                    line = producer.stdout.readline()
                    assert line, "the producer died before acknowledging"
                    acknowledged.append(line.strip())
                os.kill(producer.pid, signal.SIGKILL)  # at once, mid-stream
        finally:
            for producer in producers:
                producer.kill()
                producer.wait(timeout=30)
                for stream in (producer.stdin, producer.stdout):
                    if stream is not None:
                        stream.close()
    assert len(acknowledged) >= rounds
    reopened = SQLiteQueue(db, name="f9")
    try:
        stored = {j["job_id"] for j in reopened.export_jobs()}
    finally:
        reopened.close()
    assert set(acknowledged) <= stored
    assert integrity(db) == "ok"


# -- B2 (fast) with B4 readers ---------------------------------------------------------------


@pytest.mark.chaos
@pytest.mark.timeout(180)
def test_b2_four_processes_of_two_threads_drain_10k_jobs(tmp_path: Path) -> None:
    db = tmp_path / "b2.db"
    total = 10_000
    queue = SQLiteQueue(db, name="b2")
    try:
        queue.enqueue_many([job(f"b2-{i:05d}", priority=1 + i % 10) for i in range(total)])
        context = multiprocessing.get_context("spawn")
        outs = [tmp_path / f"b2-{i}.json" for i in range(4)]
        procs = [context.Process(target=drain_worker, args=(f"sqlite:///{db}", str(out), 2)) for out in outs]
        for proc in procs:
            proc.start()
        # B4: a reader polling during the run sees consistent snapshots.
        seen_sums: set[int] = set()
        reads = 0
        while any(proc.is_alive() for proc in procs):
            counts = queue.count_by_status()
            seen_sums.add(sum(counts.values()))
            queue.list_jobs(status=JobStatus.COMPLETED, limit=50)
            reads += 1
        for proc in procs:
            proc.join(timeout=120)
        assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
        assert seen_sums == {total}
        assert reads > 0
        reports = [json.loads(out.read_text()) for out in outs]
        claimed = Counter(job_id for report in reports for job_id in report["claimed"])
        assert [report["errors"] for report in reports] == [[], [], [], []]
        assert {k: v for k, v in claimed.items() if v > 1} == {}
        assert len(claimed) == total
        locked = [m for report in reports for m in report["warnings"] if "database is locked" in m]
        assert locked == []
        counts = queue.count_by_status()
        assert counts[JobStatus.COMPLETED] == total
        assert sum(counts.values()) == total
    finally:
        queue.close()
    assert integrity(db) == "ok"


def test_wait_ready_wakes_when_this_object_enqueues(queue: SQLiteQueue) -> None:
    woke: list[bool] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        woke.append(queue.wait_ready(60))

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert started.wait(10)
        queue.enqueue(job("wake"))
        thread.join(10)
        assert woke == [True]
    finally:
        queue.interrupt()
        thread.join(10)
