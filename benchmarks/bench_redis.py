"""Throughput of the Redis backend against raw redis-py loops on the same server.

Run: ``.venv/bin/python benchmarks/bench_redis.py [--runs 5] [--jobs 10000]
[--url redis://127.0.0.1:6379/0]``. Each of ``--runs`` rounds runs every scenario once,
in turn, each under a fresh key prefix (deleted afterwards, and only it). A rate is the
median over the rounds (min..max beside it); a ratio is the median of the ratios within
each round, so a slow spell of a shared machine hits a figure and its yardstick alike.

Every contender stores the same JSON payload, ``{"n": i, "name": "job-i", "tags":
["a", "b"]}``, and talks to the server through redis-py with hiredis.

*Raw* loops, the floor of any queue on this server and client:

1. ``LPUSH`` of one JSON payload per round trip, jobs/s;
2. pipelined ``LPUSH`` of 1,000 payloads per round trip, jobs/s;
3. a minimal ``EVALSHA`` claim (``RPOP`` + ``HSET`` a lease) and ``EVALSHA`` complete
   (``HSET`` the result, ``DEL`` the lease) per job, pairs/s.

*typedq* (``RedisQueue``, default ``FrameCodec("json")``; jobs built before the clock):

4. ``enqueue`` one at a time, jobs/s (vs 1);
5. ``enqueue_many`` in batches of 1,000, jobs/s (vs 2);
6. drain in this process: ``claim_many`` of a worker's batch size, then one
   ``complete_many``, jobs/s (vs 3);
7. drain by one real worker process (``run_worker_processes`` of ``_bench_app``, one
   thread), timed from the stored ``started_at`` of its first job to the
   ``finished_at`` of its last, jobs/s (vs 3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from typedq.backends.base import Completion
from typedq.backends.redis import RedisQueue
from typedq.job import Job, JobStatus
from typedq.process import run_worker_processes
from typedq.worker import DEFAULT_BATCH_SIZE

perf_counter = time.perf_counter

RAW_CLAIM = """
local id = redis.call('RPOP', KEYS[1])
if not id then return false end
redis.call('HSET', KEYS[2] .. id, 'lease', ARGV[1])
return id
"""
RAW_COMPLETE = """
redis.call('HSET', KEYS[1] .. ARGV[1], 'result', ARGV[2])
redis.call('HDEL', KEYS[1] .. ARGV[1], 'lease')
return 1
"""


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "name": f"job-{i}", "tags": ["a", "b"]}


def with_prefix(url: str, prefix: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}prefix={prefix}"


def clean(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000)) + list(
        client.scan_iter(match=f"raw-{prefix}*", count=1000)
    )
    for lo in range(0, len(keys), 1000):
        client.unlink(*keys[lo : lo + 1000])


def raw_lpush(client: redis.Redis, prefix: str, n: int) -> tuple[int, float]:
    key = f"raw-{prefix}:list"
    lpush, dumps = client.lpush, json.dumps
    start = perf_counter()
    for i in range(n):
        lpush(key, dumps(payload(i)))
    return n, perf_counter() - start


def raw_pipelined(client: redis.Redis, prefix: str, n: int) -> tuple[int, float]:
    key = f"raw-{prefix}:list"
    start = perf_counter()
    for lo in range(0, n, 1000):
        with client.pipeline(transaction=False) as pipe:
            for i in range(lo, min(n, lo + 1000)):
                pipe.lpush(key, json.dumps(payload(i)))
            pipe.execute()
    return n, perf_counter() - start


def raw_claim_complete(client: redis.Redis, prefix: str, n: int) -> tuple[int, float]:
    key, jobs = f"raw-{prefix}:ids", f"raw-{prefix}:job:"
    with client.pipeline(transaction=False) as pipe:
        for i in range(n):
            pipe.lpush(key, str(i))
            pipe.hset(f"{jobs}{i}", "payload", json.dumps(payload(i)))
        pipe.execute()
    claim, complete = client.register_script(RAW_CLAIM), client.register_script(RAW_COMPLETE)
    done = 0
    start = perf_counter()
    while (job_id := claim([key, jobs], [time.time() + 30])) is not None:
        complete([jobs], [job_id, "null"])
        done += 1
    elapsed = perf_counter() - start
    assert done == n, (done, n)
    return n, elapsed


def make_jobs(n: int) -> list[Job]:
    return [Job(job_type="bench", payload=payload(i)) for i in range(n)]


def typedq_enqueue(url: str, n: int) -> tuple[int, float]:
    queue = RedisQueue(url, name="bench")
    jobs = make_jobs(n)
    enqueue = queue.enqueue
    start = perf_counter()
    for job in jobs:
        enqueue(job)
    elapsed = perf_counter() - start
    queue.close()
    return n, elapsed


def typedq_enqueue_many(url: str, n: int) -> tuple[int, float]:
    queue = RedisQueue(url, name="bench")
    jobs = make_jobs(n)
    start = perf_counter()
    for lo in range(0, n, 1000):
        queue.enqueue_many(jobs[lo : lo + 1000])
    elapsed = perf_counter() - start
    queue.close()
    return n, elapsed


def typedq_drain(url: str, n: int) -> tuple[int, float]:
    queue = RedisQueue(url, name="bench")
    jobs = make_jobs(n)
    for lo in range(0, n, 1000):
        queue.enqueue_many(jobs[lo : lo + 1000])
    claim_many, complete_many = queue.claim_many, queue.complete_many
    done = 0
    start = perf_counter()
    while claims := claim_many("bench-worker", lease_s=30.0, limit=DEFAULT_BATCH_SIZE):
        outcomes = complete_many([Completion(c.job.job_id, c.token, None) for c in claims])
        assert all(isinstance(o, Job) for o in outcomes)
        done += len(claims)
    elapsed = perf_counter() - start
    queue.close()
    assert done == n, (done, n)
    return n, elapsed


def typedq_process(url: str, n: int) -> tuple[int, float]:
    queue = RedisQueue(url, name="bench")
    jobs = make_jobs(n)
    for lo in range(0, n, 1000):
        queue.enqueue_many(jobs[lo : lo + 1000])
    os.environ["TYPEDQ_BENCH_BACKEND"] = url
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    finished = threading.Event()

    def stopper() -> None:
        deadline = time.monotonic() + 600
        while not finished.is_set() and time.monotonic() < deadline:
            if queue.count_by_status()[JobStatus.COMPLETED] >= n:
                break
            time.sleep(0.1)
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=stopper, daemon=True)
    watcher.start()
    try:
        run_worker_processes(
            "_bench_app:make_manager", processes=1, concurrency=1, queues=["bench"], grace_s=5.0
        )
    finally:
        finished.set()
        watcher.join()
    done: list[Job] = []
    after: str | None = None
    while page := queue.list_jobs(status=JobStatus.COMPLETED, limit=1000, after=after):
        done += page
        after = page[-1].job_id
    queue.close()
    assert len(done) == n, (len(done), n)
    start = min(j.started_at or 0.0 for j in done)
    end = max(j.finished_at or 0.0 for j in done)
    return n, end - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--url", default="redis://127.0.0.1:6379/0")
    args = parser.parse_args()
    client = redis.Redis.from_url(args.url)
    info = client.info("server")
    print(
        f"Redis {info['redis_version']} at {args.url}; Python {platform.python_version()}, "
        f"redis-py {redis.__version__}; {args.jobs} jobs, {args.runs} runs"
    )
    scenarios: dict[str, Callable[[str, str], tuple[int, float]]] = {
        "raw LPUSH, one a round trip": lambda url, p: raw_lpush(client, p, args.jobs),
        "raw LPUSH, pipelined by 1,000": lambda url, p: raw_pipelined(client, p, args.jobs),
        "raw EVALSHA claim + complete": lambda url, p: raw_claim_complete(client, p, args.jobs),
        "typedq enqueue": lambda url, p: typedq_enqueue(url, args.jobs),
        "typedq enqueue_many (1,000)": lambda url, p: typedq_enqueue_many(url, args.jobs),
        "typedq drain, claim_many + complete_many": lambda url, p: typedq_drain(url, args.jobs),
        "typedq drain, 1 worker process": lambda url, p: typedq_process(url, args.jobs),
    }
    rates: dict[str, list[float]] = {name: [] for name in scenarios}
    for run in range(args.runs):
        for name, scenario in scenarios.items():
            prefix = f"bench-{uuid.uuid4().hex[:10]}"
            try:
                count, elapsed = scenario(with_prefix(args.url, prefix), prefix)
            finally:
                clean(client, prefix)
            rates[name].append(count / elapsed)
        print(f"run {run + 1}/{args.runs} done", file=sys.stderr)
    print(f"\n{'scenario':44} {'jobs/s (median)':>16}  min..max")
    for name, values in rates.items():
        print(f"{name:44} {statistics.median(values):16,.0f}  {min(values):,.0f}..{max(values):,.0f}")
    pairs = [
        ("typedq enqueue", "raw LPUSH, one a round trip"),
        ("typedq enqueue_many (1,000)", "raw LPUSH, pipelined by 1,000"),
        ("typedq drain, claim_many + complete_many", "raw EVALSHA claim + complete"),
        ("typedq drain, 1 worker process", "raw EVALSHA claim + complete"),
    ]
    print()
    for ours, raw in pairs:
        ratio = statistics.median(a / b for a, b in zip(rates[ours], rates[raw], strict=True))
        print(f"{ours} / {raw}: {ratio:.2f}x")


if __name__ == "__main__":
    main()
