"""What a claim costs under a claim policy, against the strict-priority claim.

Run: ``.venv/bin/python benchmarks/bench_fairness.py [--runs 5] [--jobs 3000]
[--backends memory,sqlite,redis] [--redis redis://127.0.0.1:6379/0]``.

Each round fills a fresh queue with ``--jobs`` ready jobs spread over the five priority
levels and three job types, then claims them one ``claim()`` at a time (as a worker with
``batch_size=1`` does, the job types given as a worker gives them), completing each job
right after its claim (not timed), so the RUNNING set stays as small as a worker pool's.
Only the claim calls are timed. Policies:

* *strict*: no policy (the plain claim);
* *weighted*: ``fairness="weighted"`` (default weights), five level heads per claim;
* *limits*: a concurrency limit and a rate limit on one job type and on the queue, none
  of them reached (the cost of checking them);
* *weighted+limits*: both;
* *aging*: strict order with ``max_wait_s`` on every level (five heads, none overdue).

Printed per backend and policy: the median over the rounds of the mean claim time (µs),
and the median over the rounds of its ratio to *strict*'s time in the same round (the
goal is <= 1.3).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from pathlib import Path

import redis

from typedq import ClaimPolicy, Job
from typedq.backends.base import Queue
from typedq.backends.memory import JobQueue
from typedq.backends.redis import RedisQueue
from typedq.backends.sqlite import SQLiteQueue

perf_counter = time.perf_counter
_TYPES = ("a", "b", "c")
_POLICIES: dict[str, ClaimPolicy | None] = {
    "strict": None,
    "weighted": ClaimPolicy(fairness="weighted"),
    "limits": ClaimPolicy(
        max_concurrency=1000, rate="50000/m", limits={"a": {"max_concurrency": 500, "rate": "50000/m"}}
    ),
    "weighted+limits": ClaimPolicy(
        fairness="weighted",
        max_concurrency=1000,
        rate="50000/m",
        limits={"a": {"max_concurrency": 500, "rate": "50000/m"}},
    ),
    "aging": ClaimPolicy(max_wait_s=dict.fromkeys(("critical", "high", "normal", "low", "batch"), 86400.0)),
}


def _open(backend: str, directory: Path, redis_url: str) -> tuple[Queue, object]:
    if backend == "memory":
        return JobQueue("bench"), None
    if backend == "sqlite":
        return SQLiteQueue(directory / f"{uuid.uuid4().hex}.db", name="bench"), None
    prefix = f"bench-{uuid.uuid4().hex[:10]}"
    sep = "&" if "?" in redis_url else "?"
    return RedisQueue(f"{redis_url}{sep}prefix={prefix}", name="bench"), prefix


def _drop(queue: Queue, prefix: object, redis_url: str) -> None:
    queue.close()
    if isinstance(prefix, str):  # the benchmark deletes its own keys, and only those
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(match=f"*{prefix}*", count=1000))
        for start in range(0, len(keys), 500):
            client.delete(*keys[start : start + 500])
        client.close()


def _round(backend: str, policy: ClaimPolicy | None, n: int, directory: Path, redis_url: str) -> float:
    """Mean seconds per claim of one fresh queue drained by single claims."""
    queue, prefix = _open(backend, directory, redis_url)
    try:
        queue.set_claim_policy(policy)
        now = time.time()
        queue.enqueue_many(
            [
                Job(job_type=_TYPES[i % 3], priority=1 + (i * 7) % 10, created_at=now, payload={"i": i})
                for i in range(n)
            ]
        )
        spent = 0.0
        claimed = 0
        while True:
            start = perf_counter()
            got = queue.claim("w", lease_s=60.0, job_types=_TYPES)
            spent += perf_counter() - start
            if got is None:
                break
            claimed += 1
            queue.complete(got.job.job_id, token=got.token)
        assert claimed == n, (claimed, n)
        return spent / n
    finally:
        _drop(queue, prefix, redis_url)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--backends", default="sqlite,redis")
    parser.add_argument("--redis", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        for backend in args.backends.split(","):
            times: dict[str, list[float]] = {name: [] for name in _POLICIES}
            for _ in range(args.runs):
                # Every policy once per round, one after the other: each sees the same machine.
                for name, policy in _POLICIES.items():
                    times[name].append(_round(backend, policy, args.jobs, directory, args.redis))
            for name, samples in times.items():
                median = statistics.median(samples)
                # The ratio within each round (the same minute of a shared machine), then
                # their median: a slow spell hits a policy and its yardstick alike.
                ratio = statistics.median(t / base for t, base in zip(samples, times["strict"], strict=True))
                print(
                    f"{backend:7s} {name:16s} claim {median * 1e6:7.1f} µs (min {min(samples) * 1e6:6.1f}, "
                    f"max {max(samples) * 1e6:6.1f}; {args.runs} runs of {args.jobs} claims)  "
                    f"x{ratio:.2f} of strict"
                )


if __name__ == "__main__":
    main()
