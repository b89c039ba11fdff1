"""The thundering herd on recovery (RELIABILITY.md K8), on SQLite and on Redis.

10,000 delayed jobs fall due during a 60 s storage outage (the queue's FakeClock moves
60 s while every call raises ``BackendUnavailableError``, as an unreachable server
does); 8 worker threads, warmed up on a few jobs before the outage, back off through it
and then drain the backlog. A sampler thread reads, every few milliseconds, the
storage's RUNNING count (``count_by_status``), each worker's jobs in hand (claimed, not
finished: ``Worker.in_flight``), the handlers running at that instant and the process's
resident set.

* At most 8 handlers run at any instant, one per worker.
* A worker claims only once it has nothing in hand, at most ``batch_size`` jobs: what it
  holds in memory never exceeds one batch, and RUNNING in storage (running and claimed
  jobs alike) never exceeds 8 batches. With ``batch_size=1`` RUNNING never exceeds 8.
  With the default batch size, claimed jobs that have not started yet are RUNNING too
  (they are leased): about a hundred with these 0.5 ms jobs, never the backlog.
* The resident set grows at most 16 MiB from before the outage; each job runs exactly
  once.
* Due delayed jobs become claimable in batches of at most 1,000 per claim, on both
  backends (a Redis sorted set, a SQLite ``delayed`` flag: each claim first promotes
  the due ones, ``LIMIT 1000``).

Figures on a busy 2-core machine, default batch size: 4 to 6 s per backend, RUNNING at
most about 120, one worker holding at most 16, the resident set +8 MiB (SQLite) and
+0.3 MiB (Redis); one at a time: RUNNING at most 8.
"""

from __future__ import annotations

import contextlib
import gc
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis
from tests.conformance.conftest import redis_test_url
from tests.helpers import wait_until, wait_while_progressing
from tests.reliability.faults import Unreachable
from tests.reliability.rss import rss_bytes

from typedq.backends._sqlite_driver import sqlite3
from typedq.backends.base import Queue
from typedq.backends.redis import RedisQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus
from typedq.worker import DEFAULT_BATCH_SIZE, Worker

pytestmark = pytest.mark.timeout(120)

JOBS = 10_000
OUTAGE_S = 60.0
CONCURRENCY = 8
WARM_UP = 200
#: The most a claim promotes of the due delayed jobs.
PROMOTE_MAX = 1_000
RSS_GROWTH_MAX = 16 * 2**20


@dataclass
class Store:
    """Two handles on one store: the workers', and the sampler's (its own connection)."""

    queue: Queue
    probe: Queue
    delayed: Any  # () -> int: the jobs still waiting in the store's delayed index


@pytest.fixture(params=["sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def store(request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path) -> Iterator[Store]:
    if request.param == "sqlite":
        path = tmp_path / "jobs.db"
        queue, probe = SQLiteQueue(path, clock=clock), SQLiteQueue(path, clock=clock)
        sql = "SELECT count(*) FROM jobs WHERE queue = 'default' AND status = 'PENDING' AND delayed = 1"

        def delayed_rows() -> int:
            # The backend's own SQLite library: a second copy of SQLite in the process
            # would drop the backend's file locks when its connection closes.
            with contextlib.closing(sqlite3.connect(path)) as conn:
                return int(conn.execute(sql).fetchone()[0])

        yield Store(queue, probe, delayed_rows)
        queue.close()
        probe.close()
        return
    with redis_test_url() as url:
        rq, rprobe = RedisQueue(url, clock=clock), RedisQueue(url, clock=clock)
        client = redis.Redis(host="127.0.0.1", port=6379, db=0)

        def delayed_members() -> int:
            return int(client.zcard(f"{rq.key_prefix}:delayed"))

        yield Store(rq, rprobe, delayed_members)
        client.close()
        rq.close()
        rprobe.close()


class Work:
    """A 0.5 ms handler (it waits, as for I/O: the 8 can run at once) that counts its runs
    per job and the handlers running at once."""

    takes_job = True

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.runs: Counter[str] = Counter()
        self.active = 0
        self.most_active = 0

    def __call__(self, job: Job) -> None:
        with self.lock:
            self.runs[job.job_id] += 1
            self.active += 1
            self.most_active = max(self.most_active, self.active)
        time.sleep(0.0005)
        with self.lock:
            self.active -= 1


@dataclass
class Peaks:
    running: int = 0  # RUNNING in storage
    in_hand: int = 0  # the most jobs one worker held (claimed, not finished)
    rss: int = 0
    samples: int = 0
    errors: list[BaseException] = field(default_factory=list)


class Sampler(threading.Thread):
    def __init__(self, probe: Queue, workers: list[Worker]) -> None:
        super().__init__(name="herd-sampler", daemon=True)
        self.probe = probe
        self.workers = workers
        self.stop = threading.Event()
        self.peaks = Peaks(rss=rss_bytes())

    def run(self) -> None:
        peaks = self.peaks
        while not self.stop.is_set():
            try:
                running = self.probe.count_by_status()[JobStatus.RUNNING]
            except BaseException as exc:  # reported by the test
                peaks.errors.append(exc)
                return
            peaks.running = max(peaks.running, running)
            peaks.in_hand = max(peaks.in_hand, *(len(w.in_flight()) for w in self.workers))
            peaks.rss = max(peaks.rss, rss_bytes())
            peaks.samples += 1
            self.stop.wait(0.003)


def add_due_during_outage(queue: Queue, start: float, count: int) -> None:
    """``count`` delayed jobs, due at random times within the outage after ``start``."""
    rnd = random.Random(8)
    for first in range(0, count, 1000):
        due = [start + 0.5 + rnd.random() * (OUTAGE_S - 1) for _ in range(first, min(first + 1000, count))]
        queue.enqueue_many([
            Job.create("work", {}, job_id=f"due-{n:05d}", scheduled_at=at, now=start)
            for n, at in enumerate(due, start=first)
        ])


def completed(queue: Queue) -> int:
    return queue.count_by_status()[JobStatus.COMPLETED]


@pytest.mark.parametrize(
    ("batch_size", "jobs"),
    [
        pytest.param(DEFAULT_BATCH_SIZE, JOBS, id="batches"),
        pytest.param(1, 2_000, id="one-at-a-time-2k", marks=pytest.mark.slow),
        pytest.param(1, JOBS, id="one-at-a-time-10k", marks=pytest.mark.slow),
    ],
)
def test_the_herd_after_an_outage_is_paced_by_capacity_and_each_job_runs_once(
    store: Store, clock: FakeClock, batch_size: int, jobs: int
) -> None:
    queue = Unreachable(store.queue)
    add_due_during_outage(store.queue, clock.now(), jobs)
    work = Work()
    workers = [
        Worker(queue, {"work": work}, poll_interval=0.05, batch_size=batch_size)
        for _ in range(CONCURRENCY)
    ]
    for worker in workers:
        worker.start()
    sampler = Sampler(store.probe, workers)
    try:
        # Warm up (connections, code paths): the workers were serving before the outage.
        warm = [Job.create("work", {}, job_id=f"warm-{n}", now=clock.now()) for n in range(WARM_UP)]
        store.queue.enqueue_many(warm)
        wait_until(lambda: completed(store.probe) == WARM_UP, timeout=10, message="the warm-up jobs ran")
        gc.collect()
        sampler.peaks.rss = before = rss_bytes()
        sampler.start()

        queue.down.set()
        wait_until(
            lambda: all(w.outage.active for w in workers), timeout=10, message="every worker saw the outage"
        )
        clock.advance(OUTAGE_S)  # every delayed job fell due meanwhile
        assert store.delayed() == jobs  # none promoted during the outage
        queue.down.clear()
        back = time.monotonic()
        wait_while_progressing(
            lambda: completed(store.probe), WARM_UP + jobs, stall_s=10, message="the backlog drains"
        )
        drained_s = time.monotonic() - back
    finally:
        sampler.stop.set()
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(10)
        if sampler.is_alive():
            sampler.join(5)
    peaks = sampler.peaks
    figures = (
        f"drained in {drained_s:.2f} s; RUNNING <= {peaks.running}, in hand <= {peaks.in_hand}, "
        f"handlers at once <= {work.most_active}, RSS +{(peaks.rss - before) / 2**20:.1f} MiB, "
        f"{peaks.samples} samples"
    )
    print(figures)
    assert peaks.errors == []
    assert peaks.samples >= 20, figures
    assert work.most_active <= CONCURRENCY, figures
    assert peaks.in_hand <= batch_size, figures
    assert peaks.running <= CONCURRENCY * batch_size, figures
    assert peaks.rss - before <= RSS_GROWTH_MAX, figures
    due = {f"due-{n:05d}" for n in range(jobs)}
    assert {job_id for job_id in work.runs if job_id.startswith("due-")} == due
    assert set(work.runs.values()) == {1}, figures  # each job ran exactly once
    counts = store.probe.count_by_status()
    assert (counts[JobStatus.COMPLETED], counts[JobStatus.PENDING], counts[JobStatus.RUNNING]) == (
        WARM_UP + jobs, 0, 0
    )


def test_each_claim_promotes_at_most_1000_of_the_jobs_that_fell_due(store: Store, clock: FakeClock) -> None:
    add_due_during_outage(store.queue, clock.now(), JOBS)
    clock.advance(OUTAGE_S)
    left = [store.delayed()]
    for _ in range(JOBS // PROMOTE_MAX):
        claim = store.queue.claim("w", lease_s=60.0)
        assert claim is not None
        left.append(store.delayed())
    # 1,000 a claim, the earliest due first, until none is left: never all 10,000 at once.
    assert left == list(range(JOBS, -1, -PROMOTE_MAX))
