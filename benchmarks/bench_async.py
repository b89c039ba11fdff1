"""The async worker: many jobs that await I/O, on one event loop in one process.

Run: ``.venv/bin/python benchmarks/bench_async.py [--runs 5] [--jobs 1000]
[--concurrency 100] [--sleep 0.05] [--backends memory,sqlite,redis]``.

Each run enqueues ``--jobs`` jobs whose handler is ``await asyncio.sleep(--sleep)``
(with ``enqueue_many``, before the clock starts), starts ONE async worker
(``worker_class="async"``, ``concurrency=--concurrency``) and stops the clock when the last
``on_job_completed`` event arrives: each completion is committed before its event. The
floor is ``jobs / concurrency × sleep`` (0.5 s for the defaults); the goal is 1.5 s.

Printed per backend: the median time and jobs/s over the runs, the floor, and every
run's time. Redis needs a server on 127.0.0.1:6379 (its keys go under a prefix of their
own, deleted afterwards).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from typedq import EventHandler, Job, JobQueueManager

perf_counter = time.perf_counter
GOAL_S = 1.5


class _Count(EventHandler):
    """Sets ``done`` at the ``n``-th completion and notes its time."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.lock = threading.Lock()
        self.done = threading.Event()
        self.last = 0.0

    def on_job_completed(self, job: Job, result: Any) -> None:
        with self.lock:
            self.seen += 1
            if self.seen >= self.n:
                self.last = perf_counter()
                self.done.set()


def _url(backend: str, tmp: Path, run: int) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'bench-{run}.db'}"
    if backend == "redis":
        return f"redis://127.0.0.1:6379/0?prefix=typedq-bench-{uuid.uuid4().hex[:10]}"
    raise SystemExit(f"unknown backend {backend!r}: memory, sqlite or redis")


def _drop_redis_prefix(url: str) -> None:
    import redis

    prefix = url.split("prefix=", 1)[1]
    client = redis.Redis(host="127.0.0.1", port=6379)
    try:
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
    finally:
        client.close()


def one_run(url: str, jobs: int, concurrency: int, sleep_s: float) -> float:
    """Drain ``jobs`` sleeping jobs with one async worker; return the seconds it took."""
    events = _Count(jobs)
    manager = JobQueueManager(
        {
            "backend": url, "scheduler": False, "max_workers": 1,
            "worker_class": "async", "concurrency": concurrency,
        },
        event_handler=events,
    )
    try:

        async def nap(payload: dict[str, Any]) -> None:
            await asyncio.sleep(sleep_s)

        manager.register_handler("nap", nap)
        queue = manager.get_queue("default")
        now = queue.clock.now()
        queue.enqueue_many([Job.create("nap", {"i": i}, queue="default", now=now) for i in range(jobs)])
        start = perf_counter()
        manager.start_workers()
        if not events.done.wait(120):
            raise SystemExit(f"only {events.seen} of {jobs} jobs completed in 120 s")
        took = events.last - start
    finally:
        manager.close()
        if url.startswith("redis"):
            _drop_redis_prefix(url)
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--sleep", type=float, default=0.05)
    parser.add_argument("--backends", default="memory,sqlite,redis")
    args = parser.parse_args()
    floor = args.jobs / args.concurrency * args.sleep
    print(
        f"{args.jobs} jobs of `await asyncio.sleep({args.sleep:g})`, one async worker, "
        f"concurrency={args.concurrency}; floor {floor:.2f} s, goal <= {GOAL_S:g} s; "
        f"median of {args.runs} runs"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            times = [
                one_run(_url(backend, Path(tmp), run), args.jobs, args.concurrency, args.sleep)
                for run in range(args.runs)
            ]
            median = statistics.median(times)
            verdict = "ok" if median <= GOAL_S else "OVER GOAL"
            print(
                f"{backend:>7}: {median:.3f} s median, {args.jobs / median:,.0f} jobs/s  [{verdict}]"
                f"  runs: {', '.join(f'{t:.3f}' for t in times)}"
            )


if __name__ == "__main__":
    main()
