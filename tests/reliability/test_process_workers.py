"""Process workers under kill -9, signals and poison jobs (RELIABILITY.md §4b: A1, A2, A4,
A6, D1-D3, G1, G4 (process part), M10).

Each test runs ``python -m typedq worker --app tests.reliability.test_process_workers:make_app``
as a real process tree on a SQLite file in ``tmp_path``; the app (built in every worker
process from ``TYPEDQ_TEST_*`` variables) writes the O_APPEND ledger and a pid file, so the
test never sleeps to synchronise: it polls the ledger and the database with deadlines.
A4's producer is a ``spawn`` process (:func:`tests.backends._sqlite_procs.job_producer`)
that reports each id whose ``enqueue()`` returned over a pipe.

Knobs (§4a): lease 1.0 s, heartbeat 0.25 s, reaper 0.1 s, ``max_lost`` 3, spawn start method.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from tests.backends._sqlite_procs import job_producer
from tests.helpers import SkewedClock, load_scaled, wait_until, wait_while_progressing
from tests.reliability.ledger import Ledger, LedgerEntry, check, read_entries
from tests.reliability.pool import FAST, Pool, alive, enqueue_work

from typedq._identity import parse_worker_id
from typedq.backends._sqlite_driver import sqlite3
from typedq.backends.base import Queue
from typedq.clock import system_clock
from typedq.errors import ConfigError
from typedq.events import EventHandler
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager
from typedq.process import run_worker_processes

pytestmark = pytest.mark.chaos

#: lease + reaper + 1 s: the bound on redelivering a job whose worker died.
RESCUE_S = 2.1


# -- the application the worker processes run ----------------------------------------------


class _Work:
    """The test handler: ledger ``start``, the payload's behaviour, ledger ``end``.

    Modes: ``ok`` sleeps ``s``; ``long`` sleeps ``s`` on attempt 1 only (an interrupted job
    is quick when run again); ``hang`` never returns; ``exit`` and ``sigkill`` kill the
    worker process from inside the handler.
    """

    takes_job = True

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __call__(self, job: Job) -> str:
        payload = job.payload
        mode = payload.get("mode", "ok")
        self.ledger.start(job.job_id, job.attempt, job.attempt)
        if mode == "exit":
            os._exit(1)
        if mode == "sigkill":
            os.kill(os.getpid(), signal.SIGKILL)
        if mode == "hang":
            time.sleep(1e9)
        if mode == "ok" or (mode == "long" and job.attempt == 1):
            time.sleep(float(payload.get("s", 0.0)))
        self.ledger.end(job.job_id, job.attempt, job.attempt)
        return job.job_id


class _PauseAfterClaim(EventHandler):
    """A2's hook: a ``pause`` job's first claim is reported, then its worker never starts it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def on_job_started(self, job: Job, worker_id: str) -> None:
        if job.payload.get("mode") == "pause" and job.attempt == 1:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, f"{job.job_id} {os.getpid()} {time.time():.6f}\n".encode())
            finally:
                os.close(fd)
            time.sleep(1e9)


def make_app() -> JobQueueManager:
    """The app of every worker process; configured by ``TYPEDQ_TEST_*`` variables
    (``TYPEDQ_TEST_CLOCK_SKEW``: seconds this host's clock runs ahead)."""
    folder = Path(os.environ["TYPEDQ_TEST_DIR"])
    max_lost = int(os.environ.get("TYPEDQ_TEST_MAX_LOST", FAST["max_lost"]))
    skew = float(os.environ.get("TYPEDQ_TEST_CLOCK_SKEW", "0"))
    manager = JobQueueManager(
        {
            **FAST, "backend": os.environ["TYPEDQ_TEST_BACKEND"], "poll_interval": 0.02, "base_delay": 0.05,
            "max_lost": max_lost,
        },
        event_handler=_PauseAfterClaim(folder / "claims"),
        clock=SkewedClock(skew) if skew else system_clock,
    )
    (folder / "pids").mkdir(exist_ok=True)
    (folder / "pids" / str(os.getpid())).touch()
    if "TYPEDQ_TEST_EXIT_AT_START" in os.environ:  # a child that cannot start
        os._exit(int(os.environ["TYPEDQ_TEST_EXIT_AT_START"]))
    if os.environ.get("TYPEDQ_TEST_HOLD"):
        # Start-up holds (the process is not ready) until the test creates the file "go".
        go = folder / "go"
        deadline = time.monotonic() + 60.0
        while not go.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
    manager.register_handler("work", _Work(Ledger(folder / "ledger")))
    return manager


def make_memory_app() -> JobQueueManager:
    """An app on ``memory://``: process workers must refuse it (A6)."""
    return JobQueueManager({"backend": "memory://"})


# -- the harness ---------------------------------------------------------------------------


def _owner_pid(job: Job) -> int | None:
    parsed = parse_worker_id(job.worker_id or "")
    return parsed[1] if parsed else None


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return tmp_path


def _entries(folder: Path) -> list[LedgerEntry]:
    path = folder / "ledger"
    return read_entries(path) if path.exists() else []


def _open_starts(folder: Path) -> dict[int, list[str]]:
    """pid → jobs it started and has not ended."""
    open_: Counter[tuple[int, str, int]] = Counter()
    for e in _entries(folder):
        open_[(e.pid, e.job_id, e.attempt)] += 1 if e.kind == "start" else -1
    by_pid: dict[int, list[str]] = {}
    for (pid, job_id, _), n in open_.items():
        if n > 0:
            by_pid.setdefault(pid, []).append(job_id)
    return by_pid


def busy_workers(pool: Pool, queue: Queue, when: str, timeout: float = 20.0) -> list[int]:
    """The pool's live worker processes that are inside a handler, once there is one.

    Raises:
        AssertionError: none was for ``timeout`` seconds; the message says ``when``, what
            the queue held, which processes had handlers open and how the pool log ends.
    """
    found: list[int] = []

    def busy() -> bool:
        live = set(pool.worker_pids())
        found[:] = [pid for pid in _open_starts(pool.folder) if pid in live]
        return bool(found)

    try:
        wait_until(busy, timeout=timeout, message="a worker process is inside a handler")
    except AssertionError as exc:
        state = {s.value: n for s, n in queue.count_by_status().items() if n}
        running = {pid: len(started) for pid, started in _open_starts(pool.folder).items()}
        raise AssertionError(
            f"{exc} ({when}; jobs {state}; worker processes {pool.worker_pids()}; handlers "
            f"started, not ended, per pid {running}; pool log ends:\n{pool.log[-3000:]})"
        ) from None
    return found


def _statuses(queue: Queue, ids: list[str]) -> dict[str, JobStatus]:
    return {i: queue.get_job(i).status for i in ids}


def _all_in(queue: Queue, ids: list[str], *states: JobStatus) -> bool:
    return all(queue.get_job(i).status in states for i in ids)


def _integrity(folder: Path) -> str:
    conn = sqlite3.connect(folder / "jobs.db")
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


def _finish_here(backend: str, folder: Path, ids: list[str]) -> None:
    """Another worker (threads in this process) runs the given jobs to the end."""
    manager = make_app_here(backend, folder)
    try:
        manager.start_workers(count=4)
        assert manager.wait_for_completion(ids, timeout=20.0)
    finally:
        manager.close(timeout=5.0)


def make_app_here(backend: str, folder: Path) -> JobQueueManager:
    manager = JobQueueManager({**FAST, "backend": backend, "poll_interval": 0.02})
    ledger = Ledger(folder / "ledger")
    manager.register_handler("work", _Work(ledger))
    original_close = manager.close

    def close(graceful: bool = True, timeout: float | None = None) -> list[str]:
        try:
            return original_close(graceful, timeout)
        finally:
            ledger.close()

    manager.close = close  # type: ignore[method-assign]  # the test's ledger closes with it
    return manager


# -- A: crash and recovery -----------------------------------------------------------------


#: A1 keeps at least this many jobs PENDING while it kills, so each kill finds a job
#: running however long the replacement processes take to start (the other process runs
#: jobs meanwhile; a fixed set of jobs could drain before the last kill).
A1_RESERVE = 20


def _a1(folder: Path, backend: str, queue: Queue, *, jobs: int, kills: int, seed: int) -> None:
    rng = random.Random(seed)

    def work(n: int, prefix: str) -> list[str]:
        return enqueue_work(queue, [{"s": rng.uniform(0.05, 0.25)} for _ in range(n)], prefix=prefix)

    ids = work(jobs, "j")
    in_flight: set[str] = set()
    kill_times: dict[str, float] = {}
    attempt_at_kill: dict[str, int] = {}
    # A rescued job is the oldest ready one, so the next kill often hits it again: with
    # max_lost 3 it would (rightly) go DEAD after its third loss. A1 is about redelivery,
    # so the cap is lifted here (G1 holds max_lost to account).
    no_cap = {"TYPEDQ_TEST_MAX_LOST": str(kills + 1)}
    with Pool(folder, backend, "--processes", "2", "--concurrency", "2", "--grace", "5", env=no_cap) as pool:
        pool.wait_full(2)
        for kill in range(kills):
            if queue.count_by_status()[JobStatus.PENDING] < A1_RESERVE:
                # The jobs would run out before the kills: each kill needs a job running.
                ids += work(A1_RESERVE, f"k{kill}-")
            victim = rng.choice(busy_workers(pool, queue, f"kill {kill + 1} of {kills}"))
            time.sleep(rng.uniform(0.0, 0.05))  # a random moment inside the handler
            os.kill(victim, signal.SIGKILL)
            killed_at = time.time()
            wait_until(lambda: not alive(victim), timeout=5.0, message="the victim is dead")  # noqa: B023
            # Its RUNNING rows are frozen until a reaper rescues them (lease 1 s away).
            for job in queue.list_jobs(status=JobStatus.RUNNING, limit=1000):
                if _owner_pid(job) == victim:
                    in_flight.add(job.job_id)
                    kill_times[job.job_id] = killed_at
                    attempt_at_kill[job.job_id] = job.attempt
            pool.wait_full(2)  # the pool replaced it
        # What is left after the kills takes as long as the machine needs (the kills
        # may end early): only a stall is a failure.
        wait_while_progressing(
            lambda: queue.count_by_status()[JobStatus.COMPLETED], len(ids), stall_s=20.0,
            message="every job completed",
        )
        assert pool.stop() == 0, pool.log
    report = check(
        folder / "ledger",
        ids,
        statuses=_statuses(queue, ids),
        in_flight_at_kill=in_flight,
        kill_times=kill_times,
    )
    assert not report.lost, report.lost
    assert not report.unexpected_dups, report.unexpected_dups
    assert not report.dup_attempts, report.dup_attempts
    assert not report.unknown
    assert kill_times, "no kill hit a running job"
    for job_id, killed_at in kill_times.items():
        assert report.recovery_latencies.get(job_id, 1e9) <= RESCUE_S, (job_id, report.recovery_latencies)
        restart = min(
            (e for e in _entries(folder) if e.kind == "start" and e.job_id == job_id and e.t > killed_at),
            key=lambda e: e.t,
        )
        assert restart.attempt == attempt_at_kill[job_id] + 1, (job_id, restart, attempt_at_kill[job_id])
    assert "restarts" in pool.log
    assert _integrity(folder) == "ok"


@pytest.mark.timeout(90)
def test_a1_kill_9_worker_processes_mid_job_loses_nothing(folder: Path, backend: str, queue: Queue) -> None:
    _a1(folder, backend, queue, jobs=200, kills=10, seed=1)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a1_slow_100_kills_2000_jobs(folder: Path, backend: str, queue: Queue) -> None:
    _a1(folder, backend, queue, jobs=2000, kills=100, seed=2)


@pytest.mark.timeout(60)
def test_a2_kill_between_claim_and_handler_start(folder: Path, backend: str, queue: Queue) -> None:
    a2(folder, backend, queue)


def a2(folder: Path, backend: str, queue: Queue) -> None:
    """A2: a worker process killed after its claim committed, before the handler started:
    the job is rescued within ``RESCUE_S`` and its one start is attempt 2 (also run on
    Redis by ``test_redis_processes``)."""
    [job_id] = enqueue_work(queue, [{"mode": "pause"}])
    claims = folder / "claims"
    with Pool(folder, backend, "--processes", "1", "--concurrency", "1") as pool:
        # The file exists a moment before its line is written (open, then write).
        wait_until(lambda: claims.exists() and claims.read_text().endswith("\n"), timeout=20.0,
                   message="the job is claimed")
        _, pid, _ = claims.read_text().split()
        os.kill(int(pid), signal.SIGKILL)
        killed_at = time.time()
        wait_until(lambda: queue.get_job(job_id).status is JobStatus.COMPLETED, timeout=20.0)
        assert pool.stop() == 0, pool.log
    starts = [e for e in _entries(folder) if e.kind == "start"]
    assert len(starts) == 1  # the dead attempt never started
    assert starts[0].attempt == 2
    assert starts[0].t - killed_at <= RESCUE_S
    assert queue.get_job(job_id).lost_count == 1


def test_a6_memory_backend_with_process_workers_is_a_typed_config_error() -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        run_worker_processes(None, processes=2, config={"backend": "memory://"})
    assert info.value.field == "backend"
    assert "memory://" in str(info.value)
    assert time.monotonic() - started < 1.0  # refused before any process is started
    with pytest.raises(ConfigError) as app_info:
        run_worker_processes(
            "tests.reliability.test_process_workers:make_memory_app", processes=1, handle_signals=False
        )
    assert app_info.value.field == "backend"
    assert "cannot be used with worker processes" in str(app_info.value)


# -- A4: kill -9 everything at once, then restart --------------------------------------------


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a4_kill_9_producer_and_workers_at_once_then_restart(
    folder: Path, backend: str, queue: Queue
) -> None:
    rng = random.Random(4)
    context = multiprocessing.get_context("spawn")
    conn, child_end = context.Pipe()
    producer = context.Process(
        target=job_producer, args=(str(folder / "jobs.db"), "default", "work", child_end), daemon=True
    )
    acknowledged: list[str] = []

    def receive() -> None:
        """Read what the producer sent: the ids whose ``enqueue()`` returned."""
        try:
            while conn.poll():
                kind, job_id = conn.recv()
                assert kind == "enqueued"
                acknowledged.append(job_id)
        except EOFError:  # the producer is dead and everything it sent was read
            pass

    try:
        with Pool(folder, backend, "--processes", "2", "--concurrency", "2", "--grace", "5") as pool:
            workers = pool.wait_full(2)
            producer.start()
            child_end.close()
            assert conn.poll(60), "the producer sent nothing"
            assert conn.recv()[0] == "ready"
            conn.send("go")

            def busy() -> bool:
                receive()
                running = sum(len(v) for pid, v in _open_starts(folder).items() if pid in workers)
                return len(acknowledged) >= 150 and running >= 2

            wait_until(busy, timeout=30.0, message="jobs enqueued and inside handlers")
            time.sleep(rng.uniform(0.0, 0.1))  # the kill's moment, not a synchronisation
            assert producer.pid is not None
            os.kill(producer.pid, signal.SIGKILL)
            os.killpg(pool.proc.pid, signal.SIGKILL)  # the supervisor and its worker processes
            pool.proc.wait(10)
            producer.join(10)
            assert producer.exitcode == -signal.SIGKILL
            wait_until(lambda: not any(alive(pid) for pid in workers), timeout=5.0, message="all dead")
            receive()
            first_log = pool.log
    finally:
        if producer.is_alive() and producer.pid is not None:
            os.kill(producer.pid, signal.SIGKILL)
            producer.join(10)
        conn.close()

    # Every RUNNING row belonged to a killed worker: the in-flight set.
    running = queue.list_jobs(status=JobStatus.RUNNING, limit=10_000)
    in_flight = {job.job_id: job.attempt for job in running}
    # Jobs of one claim share its owner and start time: a claim of several is a batch.
    claims = Counter((job.worker_id, job.started_at) for job in running)
    alone = {job.job_id for job in running if claims[(job.worker_id, job.started_at)] == 1}
    assert in_flight, "the kill hit no running job"
    stored = {job.job_id for job in queue.list_jobs(limit=100_000)}
    assert set(acknowledged) <= stored, "an enqueue that returned was lost"
    # At most one job committed whose report the kill cut off (one enqueue at a time).
    assert len(stored - set(acknowledged)) <= 1
    ids = sorted(stored)

    with Pool(folder, backend, "--processes", "2", "--concurrency", "2", "--grace", "5") as pool:
        pool.wait_full(2)
        # Leases expired at most lease_s after the kill; the reaper runs every 0.1 s.
        # A rescued job has left its dead owner: run again (a later attempt) or back in line.
        def rescued(job_id: str) -> bool:
            job = queue.get_job(job_id)
            return job.status is not JobStatus.RUNNING or job.attempt > in_flight[job_id]

        wait_until(
            lambda: all(rescued(j) for j in in_flight),
            timeout=RESCUE_S,
            message="every RUNNING job rescued",
        )
        wait_while_progressing(
            lambda: queue.count_by_status()[JobStatus.COMPLETED], len(ids), stall_s=20.0,
            message="every job completed",
        )
        assert pool.stop() == 0, pool.log
        second_log = pool.log

    report = check(folder / "ledger", ids, statuses=_statuses(queue, ids), in_flight_at_kill=in_flight)
    assert not report.lost, report.lost
    assert not report.unexpected_dups, report.unexpected_dups
    assert not report.dup_attempts, report.dup_attempts
    assert not report.unknown, report.unknown
    for job_id in ids:
        job = queue.get_job(job_id)
        if job_id in in_flight:  # rescued once, then run once more
            # Claimed alone: a loss. Claimed in a batch: given back to run alone, no loss
            # counted (which of a batch was running cannot be told; see "Worker batches").
            expected_lost = 1 if job_id in alone else 0
            assert (job.lost_count, job.attempt) == (expected_lost, in_flight[job_id] + 1), job_id
        else:
            assert (job.lost_count, job.attempt) == (0, 1), job_id
    assert "database is locked" not in first_log + second_log
    assert _integrity(folder) == "ok"


# -- D: shutdown and signals ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_d1_sigterm_lets_running_jobs_finish(folder: Path, backend: str, queue: Queue) -> None:
    ids = enqueue_work(queue, [{"s": 1.0}] * 4)
    with Pool(folder, backend, "--processes", "1", "--concurrency", "4", "--grace", "5") as pool:
        wait_until(lambda: sum(len(v) for v in _open_starts(folder).values()) == 4, timeout=20.0)
        sent = time.monotonic()
        code = pool.stop(signal.SIGTERM)
        took = time.monotonic() - sent
        assert code == 0, pool.log
    assert took <= 1.5, took
    assert _all_in(queue, ids, JobStatus.COMPLETED)
    assert queue.count_by_status()[JobStatus.RUNNING] == 0
    assert check(folder / "ledger", ids).ok


@pytest.mark.timeout(60)
def test_d2_grace_over_gives_jobs_back_as_interrupted(folder: Path, backend: str, queue: Queue) -> None:
    ids = enqueue_work(queue, [{"mode": "long", "s": 30.0}] * 4)
    with Pool(folder, backend, "--processes", "1", "--concurrency", "4", "--grace", "0.5") as pool:
        wait_until(lambda: sum(len(v) for v in _open_starts(folder).values()) == 4, timeout=20.0)
        pool.proc.send_signal(signal.SIGTERM)
        sent = time.monotonic()
        wait_until(lambda: _all_in(queue, ids, JobStatus.PENDING), timeout=10.0, message="all 4 PENDING")
        assert time.monotonic() - sent <= 0.5 + 1.0
        assert pool.proc.wait(10.0) == 0, pool.log
    assert "4 given back" in pool.log
    for job_id in ids:
        job = queue.get_job(job_id)
        # Interrupted: neither a handler failure nor a lost worker.
        assert (job.retry_count, job.lost_count, job.error) == (0, 0, None)
    _finish_here(backend, folder, ids)
    report = check(folder / "ledger", ids, statuses=_statuses(queue, ids), in_flight_at_kill=ids)
    assert report.ok
    assert report.ends == Counter(dict.fromkeys(ids, 1))


@pytest.mark.timeout(60)
def test_d3_a_second_signal_stops_at_once(folder: Path, backend: str, queue: Queue) -> None:
    ids = enqueue_work(queue, [{"mode": "long", "s": 30.0}] * 4)
    with Pool(folder, backend, "--processes", "1", "--concurrency", "4", "--grace", "30") as pool:
        wait_until(lambda: sum(len(v) for v in _open_starts(folder).values()) == 4, timeout=20.0)
        pool.proc.send_signal(signal.SIGTERM)
        # Signals do not queue: send the second once the first was handled.
        wait_until(lambda: "stopping gracefully" in pool.log, timeout=10.0)
        pool.proc.send_signal(signal.SIGTERM)  # during the grace period
        sent = time.monotonic()
        code = pool.proc.wait(10.0)
        took = time.monotonic() - sent
    assert code == 128 + signal.SIGTERM, pool.log
    # RELIABILITY.md's 0.5 s, scaled by how busy the machine is (1x when it is not): the
    # wait is process teardown, which a loaded machine slows, and what the test proves
    # is that the 30 s grace is skipped (the bound stays far below it).
    bound = load_scaled(0.5)
    assert took <= bound, f"{took:.2f}s > {bound:.2f}s"
    # Released at once (or, had that failed, rescued by lease): never lost.
    wait_until(lambda: _all_in(queue, ids, JobStatus.PENDING), timeout=RESCUE_S)
    _finish_here(backend, folder, ids)
    report = check(folder / "ledger", ids, statuses=_statuses(queue, ids), in_flight_at_kill=ids)
    assert report.ok


# -- G: poison jobs and timeouts -----------------------------------------------------------


@pytest.mark.timeout(90)
def test_g1_handlers_that_kill_their_process(folder: Path, backend: str, queue: Queue) -> None:
    good = enqueue_work(queue, [{"s": 0.005}] * 300, prefix="good")
    poison = enqueue_work(
        queue, [{"mode": "exit"}, {"mode": "sigkill"}, {"mode": "exit"}], prefix="poison", priority=10
    )
    with Pool(folder, backend, "--processes", "2", "--concurrency", "1", "--grace", "5") as pool:
        wait_until(lambda: _all_in(queue, good, JobStatus.COMPLETED), timeout=60.0, message="good jobs done")
        wait_until(lambda: _all_in(queue, poison, JobStatus.DEAD), timeout=60.0, message="poison jobs dead")
        pool.wait_full(2)  # back at full size after 9 crashes
        assert pool.stop() == 0, pool.log
    assert "9 restarts" in pool.log
    starts = Counter(e.job_id for e in _entries(folder) if e.kind == "start")
    for job_id in poison:
        job = queue.get_job(job_id)
        assert job.error == "worker lost 3×"
        assert job.lost_count == 3
        assert starts[job_id] == 3
    report = check(folder / "ledger", [*good, *poison])
    assert report.lost == set(poison)  # they never end; every good job did, once
    assert report.dups == set(poison)  # one job per process: a crash takes no good job with it
    assert not report.dup_attempts
    assert _integrity(folder) == "ok"


@pytest.mark.timeout(90)
def test_g1_a_crash_inside_a_batch_blames_only_the_job_that_crashed(
    folder: Path, backend: str, queue: Queue
) -> None:
    """Quick jobs are claimed in batches; one of them kills its process. Its batch-mates
    go back uncounted and run (alone, then in batches again): they end COMPLETED with no
    loss, and only the crashing job is counted and dead after 3 losses."""
    payloads: list[dict[str, Any]] = [{"s": 0.0}] * 1500
    payloads[700] = {"mode": "exit"}
    ids = enqueue_work(queue, payloads, prefix="q")
    poison = ids[700]
    good = [i for i in ids if i != poison]
    with Pool(folder, backend, "--processes", "1", "--concurrency", "1", "--grace", "5") as pool:
        wait_until(
            lambda: queue.get_job(poison).status is JobStatus.DEAD, timeout=60.0, message="poison dead"
        )
        wait_until(lambda: _all_in(queue, good, JobStatus.COMPLETED), timeout=60.0, message="good jobs done")
        assert pool.stop() == 0, pool.log
    dead = queue.get_job(poison)
    assert (dead.lost_count, dead.error) == (3, "worker lost 3×")
    assert all(queue.get_job(i).lost_count == 0 for i in good)
    starts = Counter(e.job_id for e in _entries(folder) if e.kind == "start")
    # Once in its batch (not counted: nobody knew it was the one), then 3 times alone.
    assert starts[poison] in (3, 4)
    # A batch-mate runs at most once more per crash of its batch (at-least-once), never
    # into the same fate: 3 crashes, so at most 3 extra runs.
    assert max(starts[i] for i in good) <= 3
    assert _integrity(folder) == "ok"


@pytest.mark.timeout(60)
def test_g4_a_hung_handler_is_killed_with_its_process(folder: Path, backend: str, queue: Queue) -> None:
    [job_id] = enqueue_work(queue, [{"mode": "hang"}], timeout_seconds=1.0, max_retries=0)
    with Pool(folder, backend, "--processes", "1", "--concurrency", "2") as pool:
        wait_until(lambda: any(e.job_id == job_id for e in _entries(folder)), timeout=20.0)
        start = next(e for e in _entries(folder) if e.job_id == job_id)
        wait_until(lambda: not alive(start.pid), timeout=5.0, message="the hung process is gone")
        assert time.time() - start.t <= 1.0 + 1.0
        job = queue.get_job(job_id)
        assert job.status is JobStatus.DEAD
        assert "JobTimeoutError" in (job.error or "")
        assert "timed out after 1s" in (job.error or "")
        [replacement] = pool.wait_full(1)
        assert replacement != start.pid
        assert pool.stop() == 0, pool.log


# -- M10: a reused worker name ---------------------------------------------------------------


@pytest.mark.timeout(60)
def test_m10_same_configured_name_a_killed_workers_jobs_are_rescued(
    folder: Path, backend: str, queue: Queue
) -> None:
    held = enqueue_work(queue, [{"mode": "long", "s": 30.0}] * 2, prefix="held")
    # Two worker processes from the same app and config: the same configured names.
    with Pool(folder, backend, "--concurrency", "2") as a:
        wait_until(lambda: len(_open_starts(folder).get(a.proc.pid, [])) == 2, timeout=20.0)
        with Pool(folder, backend, "--concurrency", "2") as b:
            [probe] = enqueue_work(queue, [{"s": 0.0}], prefix="probe")
            wait_until(lambda: queue.get_job(probe).status is JobStatus.COMPLETED, timeout=20.0)
            starter = next(e.pid for e in _entries(folder) if e.job_id == probe)
            assert starter == b.proc.pid  # A's threads are busy: B is up and claiming
            owners = {_owner_pid(queue.get_job(i)) for i in held}
            assert owners == {a.proc.pid}
            os.kill(a.proc.pid, signal.SIGKILL)
            a.proc.wait()  # reaped at once: a zombie would still look alive
            killed_at = time.time()
            wait_until(lambda: _all_in(queue, held, JobStatus.COMPLETED), timeout=20.0)
            assert b.stop() == 0, b.log
    report = check(
        folder / "ledger",
        [*held, probe],
        statuses=_statuses(queue, [*held, probe]),
        in_flight_at_kill=held,
        kill_times=dict.fromkeys(held, killed_at),
    )
    assert report.ok
    assert all(latency <= RESCUE_S for latency in report.recovery_latencies.values()), (
        report.recovery_latencies
    )
    assert len(report.recovery_latencies) == 2
    for job_id in held:
        assert queue.get_job(job_id).lost_count == 1
