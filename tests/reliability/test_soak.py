"""L1, the soak test (RELIABILITY.md §4b), shortened: a simulated day of mixed jobs per
backend (memory, SQLite and Redis) through real worker threads, each day in a process of
its own (``python -m tests.reliability.test_soak BACKEND DIRECTORY OUT [REDIS_URL]`` writes
its samples; the test applies the rules to them). Soak tier: ``pytest -m soak`` runs it
(the default run leaves it out). The Redis day runs against a private ``redis-server`` the
test starts on a free port (``redis_servers``), never the shared one on 6379, whose memory
other users share: only a server that holds nothing but the day's keys makes its
``used_memory`` say anything about typedq.

``TYPEDQ_SOAK_JOBS`` jobs (default 500,000, as L1; about 3 minutes for both backends on 2
cores): 80 % succeed, 10 % fail once then succeed, 5 % use up their retries and go to the
dead-letter queue, 5 % are delayed by up to an hour. A FakeClock advances 86,400 s over
the run, in steps taken while no job is running (so no lease expires under a live worker),
which makes the delayed jobs and the retries' backoffs fall due. Finished jobs are pruned
as a result TTL would (a queue keeps every job it holds, and that is not a leak): after
every step the COMPLETED and DEAD jobs and the dead-letter copies are deleted one by one
(``Queue.delete``, the same calls on every backend).
Shortened from L1: two worker threads in one process instead of 2 processes × 2 threads
plus an asyncio worker, and no cron.

Every 5 % of the jobs the day samples its process's resident set (``/proc/self/statm``,
after a ``gc.collect()``), thread count and open file descriptors. The pass rule is L1's:
the RSS at the end is at most the RSS at the 20 % mark + 16 MiB; the slope of the RSS over
the last 50 % is at most 2 MiB per 100,000 jobs; the threads and fds at the end are those
at 20 %; the SQLite file is at most 1.25 × its size at the 30 % mark, and the Redis
server's ``used_memory`` (``INFO memory``, sampled at the same marks) plateaus by the same
rule: at the end at most 1.25 × its value at the 30 % mark. And every job ends
as it should: exactly the ok, retried and delayed jobs complete, exactly the doomed ones
die, and none is left.
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import REPO, wait_until
from tests.reliability.rss import rss_bytes, slope_mib_per_100k

from typedq import EventHandler, FakeClock, Job, JobQueueManager, JobStatus
from typedq.backends._sqlite_driver import sqlite3

pytestmark = [pytest.mark.soak, pytest.mark.timeout(3600)]

JOBS = int(os.environ.get("TYPEDQ_SOAK_JOBS", "500000"))
DAY_S = 86_400.0
CHUNK = 1_000
MIB = 1 << 20


def _kind(n: int) -> str:
    """The job mix: 80 % ok, 10 % retry-then-ok, 5 % dead, 5 % delayed."""
    slot = n % 20
    if slot < 16:
        return "ok"
    if slot < 18:
        return "retry"
    return "dead" if slot == 18 else "delayed"


class _Outcomes(EventHandler):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.completed = 0
        self.dead = 0

    def on_job_completed(self, job: Job, result: Any) -> None:
        with self.lock:
            self.completed += 1

    def on_job_dead(self, job: Job) -> None:
        with self.lock:
            self.dead += 1


@dataclass
class _Sample:
    jobs: int
    rss: int
    threads: int
    fds: int
    db_bytes: int
    redis_bytes: int = 0
    redis_keys: int = 0
    redis_clients: int = 0


@dataclass
class _Soak:
    manager: JobQueueManager
    clock: FakeClock
    db: Path | None
    redis: Any = None  # a redis-py client of the private server (Redis days only)
    samples: list[_Sample] = field(default_factory=list)

    def prune(self) -> None:
        queue = self.manager.get_queue("default")
        for status in (JobStatus.COMPLETED, JobStatus.DEAD):
            for job in queue.list_jobs(status=status, limit=100_000):
                queue.delete(job.job_id)
        dlq = self.manager.get_dead_letter_queue()
        for job in dlq.list_jobs(limit=100_000):
            dlq.delete(job.job_id)

    def drained(self) -> bool:
        queue = self.manager.get_queue("default")
        return queue.ready_count() == 0 and queue.count_by_status()[JobStatus.RUNNING] == 0

    def step(self, seconds: float) -> None:
        """Let the workers run every ready job, prune, then move the day on."""
        queue = self.manager.get_queue("default")
        queue.interrupt()
        wait_until(self.drained, timeout=120, interval=0.01, message="the ready jobs run")
        self.prune()
        self.clock.advance(seconds)
        queue.interrupt()  # workers wait on real time: wake them after moving the clock

    def db_bytes(self) -> int:
        if self.db is None:
            return 0
        conn = sqlite3.connect(self.db)  # typedq's driver: one SQLite library in the process
        try:
            conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
        finally:
            conn.close()
        return self.db.stat().st_size

    def redis_memory(self) -> tuple[int, int, int]:
        """The server's ``used_memory``, its key count and how many connections typedq's
        pool holds to it (its clients named ``typedq``; this sampler's is unnamed), all 0
        off Redis."""
        if self.redis is None:
            return 0, 0, 0
        pool = sum(1 for each in self.redis.client_list() if each.get("name") == "typedq")
        return int(self.redis.info("memory")["used_memory"]), int(self.redis.dbsize()), pool

    def sample(self, jobs: int) -> None:
        gc.collect()
        self.samples.append(_Sample(
            jobs, rss_bytes(), threading.active_count(), len(os.listdir("/proc/self/fd")), self.db_bytes(),
            *self.redis_memory(),
        ))


def _at(samples: list[_Sample], fraction: float) -> _Sample:
    return next(s for s in samples if s.jobs >= fraction * JOBS)


def _backend_url(backend: str, db: Path | None, redis_url: str | None) -> str:
    if backend == "sqlite":
        return f"sqlite:///{db}"
    if backend == "redis":
        assert redis_url, "the Redis day needs the private server's URL"
        return redis_url
    return "memory://"


def simulate_day(backend: str, directory: Path, redis_url: str | None = None) -> list[_Sample]:
    """Run the day on ``backend`` (its SQLite file in ``directory``; Redis at
    ``redis_url``, a private server) and return the samples; every job's end is checked
    here (an ``AssertionError`` when one is wrong)."""
    assert JOBS >= 20 * CHUNK, "TYPEDQ_SOAK_JOBS: at least 20,000 (20 samples of 1,000 jobs)"
    clock = FakeClock()
    db = directory / "soak.db" if backend == "sqlite" else None
    outcomes = _Outcomes()
    manager = JobQueueManager(
        # Heartbeats and reaper passes as often as the reliability tests run them (real
        # seconds), so every thread has done its work many times before the 20 % mark.
        {"backend": _backend_url(backend, db, redis_url), "max_workers": 2, "poll_interval": 0.05,
         "base_delay": 1.0, "max_retries": 2, "lease_s": 30.0, "heartbeat_s": 0.25, "reaper_s": 0.1},
        outcomes, clock=clock,
    )
    failed_once: set[int] = set()
    seen_lock = threading.Lock()

    def handle(payload: dict[str, Any]) -> int:
        n, kind = payload["n"], payload["kind"]
        if kind == "dead":
            raise RuntimeError(f"job {n} always fails")
        if kind == "retry":
            with seen_lock:
                first = n not in failed_once
                if first:
                    failed_once.add(n)
                else:
                    failed_once.discard(n)  # bounded: only jobs between their two attempts
            if first:
                raise ConnectionError(f"job {n} fails once")
        return int(n)

    soak = _Soak(manager, clock, db)
    if backend == "redis":
        import redis

        # One client for the whole day, made before the first sample (its socket is one
        # of the fds counted at every mark).
        soak.redis = redis.Redis.from_url(str(redis_url))
    steps = JOBS // CHUNK
    try:
        manager.register_handler("soak", handle)
        queue = manager.get_queue("default")
        manager.start_workers()
        for step in range(steps):
            jobs = []
            for n in range(step * CHUNK, (step + 1) * CHUNK):
                kind = _kind(n)
                delay = (n * 7919) % 3600 if kind == "delayed" else None
                jobs.append(Job.create(
                    "soak", {"n": n, "kind": kind}, queue="default", now=clock.now(), delay_s=delay,
                    max_retries=1 if kind == "dead" else 2,
                ))
            queue.enqueue_many(jobs)
            soak.step(DAY_S / steps)
            if (step + 1) % max(1, steps // 20) == 0:
                soak.sample((step + 1) * CHUNK)
        for _ in range(10):  # the last delayed jobs and retries fall due
            soak.step(3_600)
        assert queue.size == 0, queue.count_by_status()
    finally:
        manager.close(graceful=True, timeout=10)
        if soak.redis is not None:
            soak.redis.close()

    dead = JOBS // 20
    assert (outcomes.completed, outcomes.dead) == (JOBS - dead, dead)
    assert not failed_once
    return soak.samples


@pytest.mark.parametrize(
    "backend", ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis_server_bin)]
)
def test_l1_a_simulated_day_of_mixed_jobs_holds_memory_threads_fds_and_file_size(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """The day runs in a process of its own (as L1 measures each process): pytest keeps
    every log record it captures until a test ends, on the root logger and on every
    logger that does not propagate, so in pytest's process the day's 100,000 and more
    retry and dead-letter lines would grow the resident set by pytest's records."""
    out, log = tmp_path / "samples.json", tmp_path / "soak.log"
    command = [sys.executable, "-m", "tests.reliability.test_soak", backend, str(tmp_path), str(out)]
    if backend == "redis":
        # Only this backend needs (and builds) the private server.
        server = request.getfixturevalue("redis_servers")(name="soak-redis")
        command.append(server.url())
    began = time.monotonic()
    with open(log, "wb") as sink:
        done = subprocess.run(
            command, cwd=REPO, stdout=sink, stderr=subprocess.STDOUT, timeout=3600, check=False
        )
    took = time.monotonic() - began
    if done.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:]
        pytest.fail(f"the day on {backend} failed (exit {done.returncode}):\n{tail}")
    samples = [_Sample(**each) for each in json.loads(out.read_text())]
    at20, end = _at(samples, 0.2), samples[-1]
    report = ", ".join(f"{s.jobs // 1000}k:{s.rss / MIB:.1f}" for s in samples)
    last_half = [s for s in samples if s.jobs >= 0.5 * JOBS]
    slope = slope_mib_per_100k([(s.jobs, s.rss) for s in last_half])
    print(
        f"L1 {backend}: {JOBS} jobs in {took:.0f} s; RSS at 20 % {at20.rss / MIB:.1f} MiB, at the end "
        f"{end.rss / MIB:.1f} MiB, slope over the last half {slope:.2f} MiB per 100k jobs"
    )
    assert end.rss <= at20.rss + 16 * MIB, f"RSS (MiB) by jobs: {report}"
    assert slope <= 2.0, f"RSS slope {slope:.2f} MiB per 100k jobs over the last half; {report}"
    assert end.threads == at20.threads
    # typedq's Redis pool opens a connection when every one it has is in use: its size is
    # the most calls it ever had at once, a peak that may first come after the 20 % mark
    # (seen: 7 connections at 4k jobs, 9 from 6k on). Script calls keep theirs in a list
    # of their own, apart from the pool's other commands (``_redis_conn.evalsha``), so
    # each thread holds at most two. The fds besides the pool's are the same; the pool
    # stays within two connections a thread (a leak would pass that, and keep growing).
    fds = [(s.jobs // 1000, s.fds, s.redis_clients) for s in samples]
    assert end.fds - end.redis_clients == at20.fds - at20.redis_clients, f"(k jobs, fds, pool) {fds}"
    assert end.redis_clients <= 2 * end.threads, f"(k jobs, fds, pool) {fds}"
    if backend == "sqlite":
        at30 = _at(samples, 0.3)
        assert end.db_bytes <= 1.25 * at30.db_bytes, (at30.db_bytes, end.db_bytes)
    if backend == "redis":
        at30 = _at(samples, 0.3)
        memory = ", ".join(f"{s.jobs // 1000}k:{s.redis_bytes / MIB:.2f}/{s.redis_keys}" for s in samples)
        print(f"L1 redis: used_memory at 30 % {at30.redis_bytes / MIB:.2f} MiB, at the end "
              f"{end.redis_bytes / MIB:.2f} MiB")
        assert end.redis_bytes <= 1.25 * at30.redis_bytes, f"used_memory (MiB)/keys by jobs: {memory}"


def main() -> None:
    """``python -m tests.reliability.test_soak BACKEND DIRECTORY OUT [REDIS_URL]``: run the
    day and write its samples to OUT as JSON."""
    backend, directory, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    samples = simulate_day(backend, directory, sys.argv[4] if len(sys.argv) > 4 else None)
    out.write_text(json.dumps([asdict(each) for each in samples]))


if __name__ == "__main__":
    main()
