"""Costs of job control on each backend: a lease renewal that reports a cancel request
(``renew_lease``) against a plain ``extend_lease``, a progress write, a log append,
``reorder`` and the ``get_state`` snapshot of a queue holding many jobs.

Run: ``.venv/bin/python benchmarks/bench_job_control.py [--runs 5] [--calls 2000]
[--jobs 5000] [--no-redis]``. Prints the median of ``--runs`` runs per figure, in
microseconds per call (ms for ``get_state``).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from typedq import JobQueueManager
from typedq.backends import open_queue
from typedq.backends.base import Queue
from typedq.job import Job, JobLogLine, JobProgress


def _median_us(fn: Callable[[int], object], calls: int, runs: int) -> float:
    results = []
    for _ in range(runs):
        start = time.perf_counter()
        for i in range(calls):
            fn(i)
        results.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(results)


def bench_queue(queue: Queue, calls: int, runs: int) -> dict[str, float]:
    queue.enqueue(Job(job_id="run", job_type="t"))
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    token = claim.token
    figures = {
        "extend_lease": _median_us(
            lambda i: queue.extend_lease("run", token=token, lease_s=30), calls, runs
        ),
        "renew_lease": _median_us(lambda i: queue.renew_lease("run", token=token, lease_s=30), calls, runs),
        "set_progress": _median_us(
            lambda i: queue.set_progress("run", token=token, progress=JobProgress(i, calls, "step")),
            calls, runs,
        ),
        "append_logs": _median_us(
            lambda i: queue.append_logs("run", token=token, lines=[JobLogLine(0.0, token, f"line {i}")]),
            calls, runs,
        ),
    }
    ids = [f"p{i}" for i in range(200)]
    queue.enqueue_many([Job(job_id=j, job_type="t") for j in ids])
    figures["reorder"] = _median_us(
        lambda i: queue.reorder(ids[i % len(ids)], position="front" if i % 2 else "back"), calls // 4, runs
    )
    return figures


def bench_state(url: str, jobs: int, runs: int) -> float:
    with JobQueueManager({"backend": url}) as manager:
        manager.register_handler("t", lambda p: None)
        queue = manager.get_queue("default")
        queue.enqueue_many([Job(job_type="t", priority=1 + i % 10) for i in range(jobs)])
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            manager.get_state()
            times.append((time.perf_counter() - start) * 1e3)
        return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--no-redis", action="store_true")
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp())
    urls = {"memory": "memory://", "sqlite": f"sqlite:///{folder / 'bench.db'}"}
    if not args.no_redis:
        urls["redis"] = f"redis://127.0.0.1:6379/0?prefix=typedq-bench-{uuid.uuid4().hex[:8]}"
    for name, url in urls.items():
        queue = open_queue(url, name=f"bench-{uuid.uuid4().hex[:6]}")
        try:
            figures = bench_queue(queue, args.calls, args.runs)
        finally:
            queue.close()
        row = "  ".join(f"{k} {v:8.1f} us" for k, v in figures.items())
        print(f"{name:7s} {row}")
        state_url = url if name != "sqlite" else f"sqlite:///{folder / 'state.db'}"
        state_ms = bench_state(state_url, args.jobs, args.runs)
        print(f"{name:7s} get_state with {args.jobs} pending jobs: {state_ms:.1f} ms")
        if name == "redis":
            import redis

            client = redis.Redis.from_url(url.split("?")[0])
            prefix = url.split("prefix=")[1]
            for key in client.scan_iter(match=f"{{{prefix}*", count=1000):
                client.delete(key)


if __name__ == "__main__":
    main()
