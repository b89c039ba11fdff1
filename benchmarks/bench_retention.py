"""What dead letters and retention cost: the finish-time index, purges, buries with a DLQ.

Run: ``.venv/bin/python benchmarks/bench_retention.py [--runs 7] [--jobs 20000]
[--backlog 100000] [--redis redis://127.0.0.1:6379/0]``. Each figure is the median over
``--runs`` rounds (min..max beside it); a ratio is the median of the ratios within each
round, so a slow spell of the machine hits a figure and its yardstick alike.

1. SQLite drain (``claim_many`` 250 + ``complete_many``, as a worker of quick jobs), jobs/s,
   with the ``jobs_finished`` index (schema 6) and with it dropped: the index's upkeep on
   every completion.
2. SQLite purge: one batch of 1,000 expired jobs out of a file of ``--backlog`` COMPLETED
   jobs, ms; and a purge that finds nothing to delete in that file, ms (what the reaper
   pays every pass once the old results are gone).
3. Bury, one job at a time, without and with a dead-letter queue (the copy in the same
   transition, ``dlq_max`` 10,000), per call, µs: memory, SQLite and (with ``--redis``) Redis.
4. Memory drain, jobs/s, with ``history_limit`` 1,000 (every completion then drops the
   oldest) and without a limit.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from typedq.backends.base import Completion, Queue
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus


def _jobs(n: int) -> list[Job]:
    return [Job.create("t", {"n": i, "name": f"job-{i}"}) for i in range(n)]


def _drain(queue: Queue) -> None:
    while True:
        claims = queue.claim_many("w", lease_s=600.0, limit=250)
        if not claims:
            return
        queue.complete_many([Completion(c.job.job_id, c.token, None) for c in claims])


def sqlite_drain(jobs: int, index: bool) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        queue = SQLiteQueue(Path(tmp) / "jobs.db", name="q")
        if not index:
            queue._db.write(lambda conn: conn.execute("DROP INDEX jobs_finished"))
        queue.enqueue_many(_jobs(jobs))
        started = time.perf_counter()
        _drain(queue)
        took = time.perf_counter() - started
        queue.close()
    return jobs / took


def sqlite_purge(backlog: int) -> tuple[float, float]:
    clock = FakeClock()
    with tempfile.TemporaryDirectory() as tmp:
        queue = SQLiteQueue(Path(tmp) / "jobs.db", name="q", clock=clock)
        for lo in range(0, backlog, 10_000):
            queue.enqueue_many(_jobs(min(10_000, backlog - lo)))
            _drain(queue)
            clock.advance(1)
        done = (JobStatus.COMPLETED,)
        started = time.perf_counter()
        assert queue.purge(statuses=done, older_than=clock.now(), limit=1000) == 1000
        batch = time.perf_counter() - started
        started = time.perf_counter()
        assert queue.purge(statuses=done, older_than=0.0, limit=1000) == 0
        idle = time.perf_counter() - started
        queue.close()
    return batch * 1e3, idle * 1e3


def bury_us(make: Callable[[str], Queue], n: int, with_dlq: bool) -> float:
    queue, dlq = make("q"), make("dead-letter")
    queue.enqueue_many(_jobs(n))
    claims = queue.claim_many("w", lease_s=600.0, limit=n)
    started = time.perf_counter()
    for claim in claims:
        queue.bury(
            claim.job.job_id, token=claim.token, error="boom", traceback="Traceback ...",
            dead_letter=dlq if with_dlq else None, dlq_max=10_000 if with_dlq else None,
        )
    took = time.perf_counter() - started
    queue.close()
    dlq.close()
    return took / n * 1e6


def memory_drain(jobs: int, history_limit: int | None) -> float:
    queue = JobQueue("q", history_limit=history_limit)
    queue.enqueue_many(_jobs(jobs))
    started = time.perf_counter()
    _drain(queue)
    return jobs / (time.perf_counter() - started)


def _show(label: str, values: list[float], unit: str) -> None:
    low, high = min(values), max(values)
    print(f"  {label:<48} {statistics.median(values):>10,.1f} {unit}  ({low:,.1f}..{high:,.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--redis", default=None, help="a Redis URL for the Redis bury figures")
    args = parser.parse_args()

    with_index, without = [], []
    for _ in range(args.runs):
        without.append(sqlite_drain(args.jobs, index=False))
        with_index.append(sqlite_drain(args.jobs, index=True))
    print("1. SQLite drain, jobs/s")
    _show("without jobs_finished", without, "jobs/s")
    _show("with jobs_finished", with_index, "jobs/s")
    ratio = statistics.median(w / o for w, o in zip(with_index, without, strict=True))
    print(f"  ratio (median of the rounds' ratios): {ratio:.3f}")

    batches, idles = [], []
    for _ in range(max(3, args.runs // 2)):
        batch, idle = sqlite_purge(args.backlog)
        batches.append(batch)
        idles.append(idle)
    print(f"2. SQLite purge in a file of {args.backlog:,} COMPLETED jobs")
    _show("a batch of 1,000 expired jobs", batches, "ms")
    _show("nothing to purge", idles, "ms")

    tmp = tempfile.TemporaryDirectory()
    makers: dict[str, Callable[[str], Queue]] = {
        "memory": JobQueue,
        "sqlite": lambda name: SQLiteQueue(Path(tmp.name) / "bury.db", name=name),
    }
    prefixes: list[str] = []
    if args.redis:
        from typedq.backends.redis import RedisQueue

        def redis_queue(name: str) -> Queue:
            if not prefixes or name == "q":
                prefixes.append(f"bench-retention-{uuid.uuid4().hex[:8]}")
            sep = "&" if "?" in args.redis else "?"
            return RedisQueue(f"{args.redis}{sep}prefix={prefixes[-1]}", name=name)

        makers["redis"] = redis_queue
    print("3. bury one job, µs a call")
    n = 2_000
    for backend, make in makers.items():
        plain, copied = [], []
        for _ in range(args.runs):
            if backend == "sqlite":
                Path(tmp.name, "bury.db").unlink(missing_ok=True)
            plain.append(bury_us(make, n, with_dlq=False))
            if backend == "sqlite":
                Path(tmp.name, "bury.db").unlink(missing_ok=True)
            copied.append(bury_us(make, n, with_dlq=True))
        _show(f"{backend}: bury", plain, "µs")
        _show(f"{backend}: bury with the dead letter in a DLQ", copied, "µs")
    tmp.cleanup()
    if prefixes:
        import redis

        client = redis.Redis.from_url(args.redis)
        for prefix in prefixes:
            keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
            for lo in range(0, len(keys), 1000):
                client.unlink(*keys[lo : lo + 1000])
        client.close()

    limited, unlimited = [], []
    for _ in range(args.runs):
        unlimited.append(memory_drain(args.jobs, None))
        limited.append(memory_drain(args.jobs, 1_000))
    print("4. memory drain, jobs/s")
    _show("history_limit None", unlimited, "jobs/s")
    _show("history_limit 1,000 (drops one per completion)", limited, "jobs/s")


if __name__ == "__main__":
    main()
