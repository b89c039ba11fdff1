"""Scrape time of ``/metrics`` with a large store, and the REST API's submit throughput.

Run: ``.venv/bin/python benchmarks/bench_metrics.py [--jobs 1000000] [--done 0.3]
[--scrapes 15] [--api-jobs 3000] [--no-redis] [--no-sqlite]``.

1. Scrape: ``--jobs`` jobs are added (``enqueue_many`` in batches of 10,000) to a fresh
   SQLite file (``TMPDIR``) and to a private ``redis-server`` (started on a free port
   when the binary is there, else the server of ``--redis-url`` under a key prefix of
   its own, deleted afterwards); a ``--done`` share of them is claimed and completed;
   16 worker registry entries with metrics of 5 job types are registered. Then
   ``--scrapes`` scrapes, each timed: the collector rendering the text format in this
   process, and a GET of ``/metrics`` over HTTP from ``serve_metrics`` (the median and
   the largest); beside them the time of ``count_by_status`` alone, the one read that
   grows with the store (Redis keeps the counts in a hash; SQLite counts the queue's
   rows). Goal: <= 50 ms.
2. API submit: ``POST /api/jobs/add`` (a typed job, SQLite) to ``typedq api`` in its own
   process (the app in ``_bench_api_app.py``), over keep-alive HTTP from one client
   thread and from 4, jobs/s (the median of 3 runs, after 50 warm-up requests).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from typedq import JobQueueManager
from typedq._worker_metrics import WorkerMetrics
from typedq.backends import open_queue
from typedq.backends.base import Completion, Queue, WorkerInfo
from typedq.job import Job
from typedq.metrics import registry_for, render, serve_metrics

TOKEN = "bench-token-0123456789abcdef"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def fill(queue: Queue, jobs: int, done: float) -> None:
    t0 = time.perf_counter()
    now = time.time()
    for start in range(0, jobs, 10_000):
        n = min(10_000, jobs - start)
        queue.enqueue_many([
            Job.create(f"type{i % 5}", {"n": start + i}, queue=queue.name, now=now) for i in range(n)
        ])
    to_finish = int(jobs * done)
    while to_finish > 0:
        claims = queue.claim_many("bench-worker", lease_s=300, limit=min(1000, to_finish))
        if not claims:
            break
        queue.complete_many([Completion(c.job.job_id, c.token, None) for c in claims])
        to_finish -= len(claims)
    now = time.time()
    for w in range(16):
        metrics = WorkerMetrics()
        for t in range(5):
            metrics.count(queue.name, f"type{t}", "completed", 1000 + w)
            for k in range(50):
                metrics.observe(queue.name, f"type{t}", wait_s=k * 0.01, run_s=k * 0.002)
        queue.register_worker(WorkerInfo(
            worker_id=f"bench-{w}", queue=queue.name, host="bench", pid=1, job_types=("type0",),
            version="bench", started_at=now, last_seen=now, ttl_s=3600.0, stop_pid=1,
            metrics=metrics.snapshot(),
        ))
    print(f"  filled {jobs:,} jobs ({done:.0%} completed) in {time.perf_counter() - t0:.1f} s")


def timed(fn: Callable[[], Any], runs: int) -> tuple[float, float]:
    took = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        took.append(time.perf_counter() - t0)
    return statistics.median(took) * 1000, max(took) * 1000


def scrape_bench(name: str, url: str, args: argparse.Namespace) -> None:
    print(f"{name}: {url}")
    queue = open_queue(url, name="default")
    fill(queue, args.jobs, args.done)
    manager = JobQueueManager({"backend": url})
    try:
        registry = registry_for(manager)
        text = render(registry)
        assert b"typedq_up 1.0" in text, text[:200]
        med, worst = timed(queue.count_by_status, args.scrapes)
        print(f"  count_by_status          median {med:7.1f} ms   max {worst:7.1f} ms")
        med, worst = timed(lambda: render(registry), args.scrapes)
        print(f"  render (in process)      median {med:7.1f} ms   max {worst:7.1f} ms   {len(text):,} bytes")
        server, _ = serve_metrics(manager, port=0)
        try:
            with httpx.Client(timeout=30) as client:
                target = f"http://127.0.0.1:{server.server_port}/metrics"
                med, worst = timed(lambda: client.get(target).raise_for_status(), args.scrapes)
            print(f"  GET /metrics over HTTP   median {med:7.1f} ms   max {worst:7.1f} ms   (goal <= 50 ms)")
        finally:
            server.shutdown()
            server.server_close()
    finally:
        manager.close(graceful=False)
        queue.close()


def api_bench(args: argparse.Namespace, workdir: Path) -> None:
    print("API submit: POST /api/jobs/add (typed), SQLite, `typedq api` in its own process")
    here = Path(__file__).resolve().parent
    for threads in (1, 4):
        rates = []
        for run in range(3):
            db = workdir / f"api-{threads}-{run}.db"
            port = _free_port()
            env = {**os.environ, "BENCH_BACKEND": f"sqlite:///{db}", "TYPEDQ_API_TOKEN": TOKEN,
                   "PYTHONPATH": str(here)}
            server = subprocess.Popen(
                [sys.executable, "-m", "typedq", "api", "--app", "_bench_api_app:manager",
                 "--port", str(port)],
                cwd=here, env=env, stdout=subprocess.DEVNULL,
            )
            base = f"http://127.0.0.1:{port}"
            try:
                for _ in range(200):
                    try:
                        if httpx.get(f"{base}/healthz").status_code == 200:
                            break
                    except httpx.TransportError:
                        time.sleep(0.05)
                per_thread = args.api_jobs // threads

                def post(count: int, base: str = base) -> None:
                    with httpx.Client(base_url=base, timeout=30,
                                      headers={"Authorization": f"Bearer {TOKEN}"}) as client:
                        for i in range(count):
                            body = {"payload": {"a": i, "b": 1}}
                            client.post("/api/jobs/add", json=body).raise_for_status()

                post(50)  # warm-up
                posters = [threading.Thread(target=post, args=(per_thread,)) for _ in range(threads)]
                t0 = time.perf_counter()
                for p in posters:
                    p.start()
                for p in posters:
                    p.join()
                rates.append(per_thread * threads / (time.perf_counter() - t0))
            finally:
                server.terminate()
                server.wait(10)
            queue = open_queue(f"sqlite:///{db}", name="default")
            assert queue.size == per_thread * threads + 50
            queue.close()
        print(f"  {threads} client thread(s): {statistics.median(rates):8,.0f} jobs/s "
              f"(min {min(rates):,.0f}, max {max(rates):,.0f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument("--done", type=float, default=0.3, help="share of the jobs completed")
    parser.add_argument("--scrapes", type=int, default=15)
    parser.add_argument("--api-jobs", type=int, default=3000)
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--no-sqlite", action="store_true")
    parser.add_argument("--no-api", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="typedq-bench-metrics-") as tmp:
        workdir = Path(tmp)
        if not args.no_sqlite:
            scrape_bench("SQLite", f"sqlite:///{workdir}/metrics.db", args)
        if not args.no_redis:
            binary = shutil.which("redis-server")
            proc = None
            if binary:
                port = _free_port()
                proc = subprocess.Popen(
                    [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                     "--dir", str(workdir)], stdout=subprocess.DEVNULL,
                )
                url = f"redis://127.0.0.1:{port}/0?prefix=bench"
                for _ in range(100):
                    try:
                        socket.create_connection(("127.0.0.1", port), timeout=0.1).close()
                        break
                    except OSError:
                        time.sleep(0.05)
            else:
                url = f"{args.redis_url}?prefix=bench-{uuid.uuid4().hex[:8]}"
            try:
                scrape_bench("Redis", url, args)
            finally:
                if proc is not None:
                    proc.terminate()
                    proc.wait(10)
                else:
                    import redis

                    client = redis.Redis.from_url(args.redis_url)
                    prefix = url.rsplit("prefix=", 1)[1]
                    keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=10_000))
                    for start in range(0, len(keys), 10_000):
                        client.delete(*keys[start:start + 10_000])
                    client.close()
        if not args.no_api:
            api_bench(args, workdir)
    print(f"(pid {os.getpid()}, {os.cpu_count()} cpus)")


if __name__ == "__main__":
    main()
