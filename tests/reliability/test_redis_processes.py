"""Worker processes on Redis killed with ``kill -9`` while 4 producer processes enqueue:
0 lost (RELIABILITY.md A1 on Redis, with the producers of B3).

The harness is the process tests' (``test_process_workers``): real ``typedq worker``
pools of the ledger app, victims chosen among the processes inside a handler, and the
ledger as the oracle; the producers are ``spawn`` processes
(``tests.reliability._redis_procs``). The queue lives on 127.0.0.1:6379 under a prefix
of its own. 3,000 jobs and 6 kills, and 20,000 jobs and 40 kills, both in the slow tier
(RELIABILITY.md §4c: A1 on Redis is slow; the fast tier holds A1 on SQLite). A2 on
Redis (fast): a worker process killed between its claim and the handler's start (the
harness of ``test_process_workers.a2``); the job is rescued through the worker's
heartbeat lapsing. B3 (slow): 4 processes × 2 threads drain 100,000 jobs from a private
server.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conformance.conftest import redis_test_url
from tests.helpers import wait_until, wait_while_progressing
from tests.reliability._drain_procs import drain_worker
from tests.reliability._redis_procs import producer_ids, redis_producer
from tests.reliability.conftest import MakeServer
from tests.reliability.ledger import check
from tests.reliability.pool import Pool, alive
from tests.reliability.test_process_workers import RESCUE_S, _owner_pid, a2, busy_workers
from tests.reliability.victims import victim_context

from typedq.backends import open_queue
from typedq.backends.base import Queue
from typedq.job import Job, JobStatus

pytestmark = [pytest.mark.chaos, pytest.mark.redis]


@pytest.fixture
def backend() -> Iterator[str]:
    with redis_test_url() as url:
        yield url


def _kill_workers_while_producing(
    folder: Path, backend: str, queue: Queue, *, jobs: int, kills: int, producers: int = 4
) -> None:
    """``producers`` spawned processes enqueue ``jobs`` jobs in all, paced over about
    ``kills`` seconds, while a pool of 2 worker processes × 2 threads runs them and the
    test kills a worker process that is inside a handler, ``kills`` times.

    The oracle: every job COMPLETED with an ``end`` line; a job started twice only if it
    was RUNNING under a killed process at its kill; no claim ran twice; every job a kill
    interrupted started again within ``RESCUE_S``.
    """
    rng = random.Random(3)
    share = jobs // producers
    tags = [f"p{k}" for k in range(producers)]
    ids = [i for tag in tags for i in producer_ids(tag, share)]
    batch = 10
    pace_s = max(0.0, kills / (share / batch) - 0.005)  # producing lasts about `kills` seconds
    ctx = multiprocessing.get_context("spawn")
    pipes = []
    procs = []
    for tag in tags:
        parent, child = ctx.Pipe()
        args = (backend, tag, share, (batch, pace_s), child)
        proc = ctx.Process(target=redis_producer, args=args, daemon=True)
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)

    in_flight: set[str] = set()
    kill_times: dict[str, float] = {}
    no_cap = {"TYPEDQ_TEST_MAX_LOST": str(kills + 1)}
    options = ("--processes", "2", "--concurrency", "2", "--grace", "5")
    try:
        with Pool(folder, backend, *options, env=no_cap) as pool:
            pool.wait_full(2)
            for pipe in pipes:
                assert pipe.poll(30), "a producer did not start"
                assert pipe.recv()[0] == "ready"
            for pipe in pipes:
                pipe.send("go")
            for kill in range(kills):
                victim = rng.choice(busy_workers(pool, queue, f"kill {kill + 1} of {kills}"))
                time.sleep(rng.uniform(0.0, 0.05))
                os.kill(victim, signal.SIGKILL)
                killed_at = time.time()
                wait_until(lambda: not alive(victim), timeout=5.0, message="the victim is dead")  # noqa: B023
                for job in queue.list_jobs(status=JobStatus.RUNNING, limit=1000):
                    if _owner_pid(job) == victim:
                        in_flight.add(job.job_id)
                        kill_times[job.job_id] = killed_at
                pool.wait_full(2)
            for pipe in pipes:
                assert pipe.poll(120), "a producer did not finish"
                assert pipe.recv() == ("done", share)
            wait_while_progressing(
                lambda: queue.count_by_status()[JobStatus.COMPLETED], len(ids), stall_s=20.0,
                message="every job completed",
            )
            assert pool.stop() == 0, pool.log
    finally:
        for proc in procs:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    final = {data["job_id"]: JobStatus(data["status"]) for data in queue.export_jobs()}
    report = check(folder / "ledger", ids, statuses=final, in_flight_at_kill=in_flight, kill_times=kill_times)
    assert len(final) == len(ids)
    assert not report.lost, sorted(report.lost)[:10]
    assert not report.unexpected_dups, sorted(report.unexpected_dups)[:10]
    assert not report.dup_attempts, sorted(report.dup_attempts)[:10]
    assert kill_times, "no kill hit a running job"
    late = {j: t for j, t in report.recovery_latencies.items() if t > RESCUE_S}
    assert not late, late
    assert set(report.recovery_latencies) == set(kill_times)
    print(
        f"chaos: {len(ids)} jobs from {producers} producer processes, {kills} kills, "
        f"{len(in_flight)} jobs in flight at a kill, {len(report.dups)} run twice, rescued after "
        f"at most {max(report.recovery_latencies.values()):.2f} s"
    )


@pytest.mark.slow  # A1 on Redis is slow tier (RELIABILITY.md §4c); A1 on SQLite is fast
@pytest.mark.timeout(120)
def test_kill_9_worker_processes_while_4_producer_processes_enqueue_loses_nothing_on_redis(
    tmp_path: Path, backend: str, queue: Queue
) -> None:
    _kill_workers_while_producing(tmp_path, backend, queue, jobs=3000, kills=6)


@pytest.mark.timeout(90)
def test_3_kills_while_4_producer_processes_enqueue_1000_jobs_on_redis(
    tmp_path: Path, backend: str, queue: Queue
) -> None:
    """The bounded part of A1 on Redis that every CI run holds (about 5 s)."""
    _kill_workers_while_producing(tmp_path, backend, queue, jobs=1000, kills=3)


@pytest.mark.timeout(60)
def test_a2_kill_between_claim_and_handler_start_on_redis(tmp_path: Path, backend: str, queue: Queue) -> None:
    a2(tmp_path, backend, queue)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_slow_40_kills_while_4_producer_processes_enqueue_20000_jobs_on_redis(
    tmp_path: Path, backend: str, queue: Queue
) -> None:
    _kill_workers_while_producing(tmp_path, backend, queue, jobs=20_000, kills=40)


# -- B3: 4 processes x 2 threads drain one Redis queue -------------------------------------------

#: B3's jobs (the slow tier's figure; RELIABILITY.md has 10k in the fast tier, where B2 holds
#: the same shape on SQLite).
B3_JOBS = 100_000


@pytest.mark.slow
@pytest.mark.redis_server_bin
@pytest.mark.timeout(600)
def test_b3_four_processes_of_two_threads_drain_100k_jobs_on_redis(
    tmp_path: Path, redis_servers: MakeServer
) -> None:
    """B3: 4 processes × 2 threads (one claiming one job at a time, one 10 at a time)
    drain 100,000 no-op jobs from one queue on a private server: 0 duplicates, 0 lost, no
    error or warning. A reader polling ``count_by_status()`` meanwhile always sees every
    job (B4). The scripts are called by SHA, never sent with each call: no ``EVAL``, and
    each loaded at most once per process (the server's ``INFO commandstats``)."""
    from typedq.backends.redis import _SCRIPTS

    server = redis_servers()
    url = server.url(prefix="b3")
    queue = open_queue(url, name="b2")
    admin = server.client()
    try:
        for start in range(0, B3_JOBS, 10_000):
            ids = range(start, start + 10_000)
            queue.enqueue_many([Job(job_type="t", job_id=f"b3-{i:06d}", priority=1 + i % 10) for i in ids])
        context = victim_context()
        outs = [tmp_path / f"b3-{i}.json" for i in range(4)]
        procs = [context.Process(target=drain_worker, args=(url, str(out), 2)) for out in outs]
        for proc in procs:
            proc.start()
        seen_sums: set[int] = set()
        while any(proc.is_alive() for proc in procs):
            seen_sums.add(sum(queue.count_by_status().values()))
        for proc in procs:
            proc.join(timeout=300)
        assert [proc.exitcode for proc in procs] == [0, 0, 0, 0]
        assert seen_sums <= {B3_JOBS}
        reports = [json.loads(out.read_text()) for out in outs]
        assert [report["errors"] for report in reports] == [[], [], [], []]
        assert [report["warnings"] for report in reports] == [[], [], [], []]
        claimed = Counter(job_id for report in reports for job_id in report["claimed"])
        assert {k: v for k, v in claimed.items() if v > 1} == {}
        assert len(claimed) == B3_JOBS
        assert queue.count_by_status()[JobStatus.COMPLETED] == queue.size == B3_JOBS
        stats = admin.info("commandstats")
        assert "cmdstat_eval" not in stats
        assert stats["cmdstat_evalsha"]["calls"] >= B3_JOBS // 10
        assert stats.get("cmdstat_script|load", {}).get("calls", 0) <= 5 * len(_SCRIPTS)
    finally:
        queue.close()
        admin.close()
