"""How late an idle worker starts a delayed job: lateness = start - scheduled_at.

Run: ``.venv/bin/python benchmarks/bench_delay.py [--runs 5] [--jobs 100]
[--backends sqlite,redis] [--poll 1.0] [--pickup] [--redis redis://127.0.0.1:6379/0]``.

For each backend and each place the producer runs, each run enqueues ``--jobs`` jobs one
at a time, each due 20-100 ms after its enqueue (``delay_s``), and waits until the
previous one started, so the one worker thread is idle (blocked in ``wait_ready``) when
each job falls due. The handler records ``time.time() - scheduled_at``. The worker's
``poll_interval`` is ``--poll`` (1 s by default), so a job started at the next poll would
be hundreds of milliseconds late.

* *same process*: the producer is another thread of the worker's process;
* *other process*: the worker runs in a spawned process, the producer in this one (on
  SQLite, the worker sees the new job through ``PRAGMA data_version``; on Redis, through
  the wake list).

With ``--pickup`` the jobs are due at once (no ``scheduled_at``): lateness is then the
*pick-up latency* of an idle worker, from just before the producer's ``enqueue`` to the
handler's start (the enqueue's own round trip included).

Prints p50 and p99 lateness in milliseconds per run, and their medians over the runs.
Redis: ``--redis`` (127.0.0.1:6379 by default), a key prefix of its own, deleted
afterwards. A server shared with other work adds its own tails: every command waits
behind whatever script the server runs (see its ``SLOWLOG``); a private server
(``redis-server --port 6390 --save ''``) shows the queue's own.
"""

from __future__ import annotations

import argparse
import multiprocessing
import multiprocessing.connection
import random
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from typedq.backends import open_queue
from typedq.job import Job
from typedq.worker import Worker


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _start_worker(url: str, poll: float, report: Any) -> tuple[Worker, Any]:
    queue = open_queue(url, name="delays")

    def handler(payload: dict[str, Any]) -> None:
        report(time.time() - payload["due"])

    worker = Worker(queue, {"d": handler}, poll_interval=poll, batch_size=1)
    worker.start()
    return worker, queue


def _child(url: str, poll: float, conn: multiprocessing.connection.Connection) -> None:
    worker, queue = _start_worker(url, poll, conn.send)
    conn.send("ready")
    conn.recv()  # told to stop
    worker.stop(wait=True, timeout=10)
    queue.close()


def _produce(url: str, jobs: int, started: Any, *, pickup: bool) -> list[float]:
    """Enqueue ``jobs`` jobs one at a time, delayed (or due at once with ``pickup``);
    ``started()`` waits for the next lateness."""
    queue = open_queue(url, name="delays")
    rng = random.Random(14)
    lateness = []
    try:
        for _ in range(jobs):
            delay = rng.uniform(0.02, 0.1)
            if pickup:
                time.sleep(delay)  # the worker is idle again, blocked in wait_ready
                queue.enqueue(Job(job_type="d", payload={"due": time.time()}))
            else:
                due = time.time() + delay
                queue.enqueue(Job(job_type="d", payload={"due": due}, scheduled_at=due))
            lateness.append(started())
    finally:
        queue.close()
    return lateness


def _run_same(url: str, jobs: int, poll: float, *, pickup: bool) -> list[float]:
    got: list[float] = []
    ready = threading.Semaphore(0)

    def report(value: float) -> None:
        got.append(value)
        ready.release()

    worker, queue = _start_worker(url, poll, report)

    def started() -> float:
        assert ready.acquire(timeout=30)
        return got[-1]

    try:
        time.sleep(0.2)  # the worker is idle, blocked in wait_ready
        return _produce(url, jobs, started, pickup=pickup)
    finally:
        worker.stop(wait=True, timeout=10)
        queue.close()


def _run_other(url: str, jobs: int, poll: float, *, pickup: bool) -> list[float]:
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=_child, args=(url, poll, child))
    proc.start()
    try:
        assert parent.poll(60)
        assert parent.recv() == "ready"
        time.sleep(0.2)

        def started() -> float:
            assert parent.poll(30), "the worker did not start the job"
            value: float = parent.recv()
            return value

        return _produce(url, jobs, started, pickup=pickup)
    finally:
        parent.send("stop")
        proc.join(20)


def _urls(backend: str, folder: Path, redis_url: str = "redis://127.0.0.1:6379/0") -> tuple[str, str | None]:
    if backend == "sqlite":
        return f"sqlite:///{folder / f'delay-{uuid.uuid4().hex[:8]}.db'}", None
    prefix = f"bench-delay-{uuid.uuid4().hex[:8]}"
    return f"{redis_url}?prefix={prefix}", prefix


def _cleanup(prefix: str | None, redis_url: str = "redis://127.0.0.1:6379/0") -> None:
    if prefix is None:
        return
    import redis

    client = redis.Redis.from_url(redis_url)
    # Every key of the prefix: the queue's ({prefix}:...) and the server marker ({prefix:}:epoch).
    keys = list(client.scan_iter(match=f"{{{prefix}*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=100)
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--poll", type=float, default=1.0)
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="the Redis server's URL")
    parser.add_argument("--pickup", action="store_true", help="jobs due at once: pick-up latency")
    args = parser.parse_args()
    what = "due at once, enqueued 20-100 ms apart" if args.pickup else "each due 20-100 ms after its enqueue"
    print(f"{args.jobs} jobs per run, {what}; poll_interval {args.poll} s")
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            for mode, run in (("same process", _run_same), ("other process", _run_other)):
                p50s, p99s = [], []
                for _ in range(args.runs):
                    url, prefix = _urls(backend, Path(tmp), args.redis)
                    try:
                        lateness = [v * 1000 for v in run(url, args.jobs, args.poll, pickup=args.pickup)]
                    finally:
                        _cleanup(prefix, args.redis)
                    p50s.append(_percentile(lateness, 0.5))
                    p99s.append(_percentile(lateness, 0.99))
                runs = ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(p50s, p99s, strict=True))
                measure = "pick-up" if args.pickup else "lateness"
                print(
                    f"{backend:7} {mode:14} {measure} p50 {statistics.median(p50s):6.2f} ms, "
                    f"p99 {statistics.median(p99s):6.2f} ms (median of {args.runs} runs; "
                    f"p50/p99 per run: {runs})"
                )


if __name__ == "__main__":
    main()
