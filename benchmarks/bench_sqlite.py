"""Throughput of the SQLite backend against raw ``sqlite3`` loops and Huey's ``SqliteHuey``.

Run: ``.venv/bin/python benchmarks/bench_sqlite.py [--runs 5] [--jobs 20000]
[--backlog 100000] [--no-huey] [--profile NAME]``. Each of ``--runs`` rounds runs every
scenario once, in turn, each on a fresh file in a temporary directory (``TMPDIR``
chooses where). A rate is the median over the rounds (the min..max beside it), and a
ratio is the median of the ratios within each round: a slow spell of the machine then
hits a figure and its yardstick alike.

Every contender uses WAL and ``synchronous=NORMAL`` (Huey's connection is switched to
NORMAL too: its default is FULL) and stores the same JSON payload,
``{"n": i, "name": "job-i", "tags": ["a", "b"]}``.

*Raw* loops are the floor a hand-written queue would hit: a minimal table (integer key,
unique text id, status, priority, payload, result, lease) with one partial index of
PENDING rows by (priority desc, id), ``BEGIN IMMEDIATE`` per transaction:

1. insert: one row per transaction (``json.dumps`` included), rows/s;
2. claim+complete: claim one job per transaction (``UPDATE ... RETURNING``, payload
   decoded), then complete it in its own transaction, pairs/s;
3. claim 100 per transaction, then complete each in its own transaction, pairs/s;
4. bulk insert: ``executemany`` of 1,000 rows per transaction, rows/s;
4b. 1 and 4 again on typedq's own schema and the INSERT it runs for a fresh job (rows
   built by hand, ``json.dumps`` payloads): the floor of typedq's SQL, to tell its
   Python overhead (codec, rows, transactions) from the cost of its schema; and 4 once
   more with the claim and partial indexes dropped (the table and its id index only).

*typedq* (``SQLiteQueue``, default ``FrameCodec("json")``; jobs are built before the
clock starts):

5. ``enqueue`` one at a time, jobs/s (target: >= 70 % of 1);
6. ``enqueue_many`` in batches of 1,000, jobs/s (target: >= 70 % of 4);
7. drain with one thread, the protocol loop a worker runs for quick jobs:
   ``claim_many(limit=DEFAULT_BATCH_SIZE)`` (a worker's batch size), then one
   ``complete_many`` for the batch (each completion
   committed before the call returns), jobs/s;
8. the same drain of ``--jobs`` jobs from the top of a ``--backlog`` backlog (target:
   within 20 % of 7);
10. drain by real worker processes (``run_worker_processes`` of the app in
   ``_bench_app.py``, one worker thread per process, the default ``batch_size``): 1
   process (target: >= 3x Huey's drain, 9) and 4 processes (target: faster than 1).
   Timed from the stored ``started_at`` and ``finished_at`` of the jobs: the jobs
   finished while every process was draining (from the last process's first start to
   the first process's last finish), over that window. Process start-up, which is
   staggered, does not count.

11. pick-up latency: this process enqueues ``--latency-jobs`` jobs one at a time, 0-20
   ms apart, while one worker process (one thread) waits for them; a job's latency is
   its stored ``started_at`` minus its ``created_at``, p50/p95/p99 (the median over the
   rounds). Then the peak resident memory of the worker processes of the whole run
   (``VmHWM``, sampled every 0.2 s while they run: the median and the largest).

*Huey* (``SqliteHuey``, results on, a no-op task):

9. enqueue: calling the task, tasks/s; drain: a bare ``huey.execute(huey.dequeue())``
   loop in one thread (no consumer machinery: Huey's floor, and the yardstick of the
   targets), tasks/s; and, for comparison only, Huey's own consumer with one worker
   thread (polling tuned down to 1-10 ms), timed from its start to the last task.

``--profile NAME`` runs one typedq scenario (enqueue, enqueue_many, drain) under
cProfile and prints where the time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import os
import platform
import pstats
import random
import signal
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from typedq.backends._sqlite_db import WAL_AUTOCHECKPOINT_PAGES
from typedq.backends._sqlite_rows import FRESH_COLUMNS
from typedq.backends._sqlite_sql import SQL
from typedq.backends.base import Completion
from typedq.backends.sqlite import SQLiteQueue
from typedq.job import Job, JobStatus
from typedq.process import run_worker_processes
from typedq.worker import DEFAULT_BATCH_SIZE

perf_counter = time.perf_counter

RAW_SCHEMA = (
    "CREATE TABLE jobs (id INTEGER PRIMARY KEY, job_id TEXT NOT NULL UNIQUE, status TEXT NOT NULL,"
    " priority INTEGER NOT NULL, payload BLOB NOT NULL, result BLOB, lease_until REAL)",
    "CREATE INDEX jobs_ready ON jobs (priority DESC, id) WHERE status = 'PENDING'",
)
RAW_INSERT = "INSERT INTO jobs (job_id, status, priority, payload) VALUES (?, 'PENDING', ?, ?)"
RAW_CLAIM = (
    "UPDATE jobs SET status = 'RUNNING', lease_until = ? WHERE id {op} (SELECT id FROM jobs"
    " WHERE status = 'PENDING' ORDER BY priority DESC, id LIMIT ?) RETURNING id, job_id, payload"
)
RAW_COMPLETE = (
    "UPDATE jobs SET status = 'COMPLETED', result = ?, lease_until = NULL WHERE id = ? AND status = 'RUNNING'"
)


def payload(i: int) -> dict[str, Any]:
    return {"n": i, "name": f"job-{i}", "tags": ["a", "b"]}


def raw_connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    for sql in RAW_SCHEMA:
        conn.execute(sql)
    return conn


def raw_fill(conn: sqlite3.Connection, n: int) -> None:
    rows = [(str(uuid.uuid4()), 5, json.dumps(payload(i)).encode()) for i in range(n)]
    conn.execute("BEGIN IMMEDIATE")
    conn.executemany(RAW_INSERT, rows)
    conn.execute("COMMIT")


# -- scenarios: each returns (items, seconds) ------------------------------------------------


def raw_insert(path: Path, n: int) -> tuple[int, float]:
    conn = raw_connect(path)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    payloads = [payload(i) for i in range(n)]
    start = perf_counter()
    for i in range(n):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(RAW_INSERT, (ids[i], 5, json.dumps(payloads[i]).encode()))
        conn.execute("COMMIT")
    elapsed = perf_counter() - start
    conn.close()
    return n, elapsed


def raw_bulk_insert(path: Path, n: int) -> tuple[int, float]:
    conn = raw_connect(path)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    payloads = [payload(i) for i in range(n)]
    start = perf_counter()
    for lo in range(0, n, 1000):
        rows = [(ids[i], 5, json.dumps(payloads[i]).encode()) for i in range(lo, min(n, lo + 1000))]
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(RAW_INSERT, rows)
        conn.execute("COMMIT")
    elapsed = perf_counter() - start
    conn.close()
    return n, elapsed


def _typedq_schema(path: Path) -> sqlite3.Connection:
    """A raw connection to a file with typedq's own schema (made by SQLiteQueue)."""
    SQLiteQueue(path, name="bench").close()
    conn = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES}")
    return conn


def _schema_rows(ids: list[str]) -> list[tuple[Any, ...]]:
    """The INSERT parameters typedq binds for a fresh job (``SQL.insert_into(FRESH_COLUMNS)``), built
    by hand, the payload by ``json.dumps`` and bound as typedq binds a small frame (a
    bytearray); ids are made beforehand, as in the raw loops."""
    now = time.time()
    return [
        ("bench", job_id, "bench", "PENDING", 5, now, 3, "default", bytearray(json.dumps(data).encode()))
        for job_id, data in zip(ids, map(payload, range(len(ids))), strict=True)
    ]


def raw_schema_insert(path: Path, n: int) -> tuple[int, float]:
    conn = _typedq_schema(path)
    ids = [str(uuid.uuid4()) for _ in range(n)]
    start = perf_counter()
    for row in _schema_rows(ids):
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(SQL.insert_into(FRESH_COLUMNS), row)
        conn.execute("COMMIT")
    elapsed = perf_counter() - start
    conn.close()
    return n, elapsed


def raw_schema_bulk_insert(path: Path, n: int, *, id_index_only: bool = False) -> tuple[int, float]:
    conn = _typedq_schema(path)
    if id_index_only:
        for index in ("jobs_ready", "jobs_delayed", "jobs_leased", "jobs_settled"):
            conn.execute(f"DROP INDEX {index}")
    ids = [str(uuid.uuid4()) for _ in range(n)]
    start = perf_counter()
    for lo in range(0, n, 1000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(SQL.insert_into(FRESH_COLUMNS), _schema_rows(ids[lo : lo + 1000]))
        conn.execute("COMMIT")
    elapsed = perf_counter() - start
    conn.close()
    return n, elapsed


def _raw_drain(path: Path, n: int, batch: int) -> tuple[int, float]:
    conn = raw_connect(path)
    raw_fill(conn, n)
    claim = RAW_CLAIM.format(op="=" if batch == 1 else "IN")
    done = 0
    start = perf_counter()
    while True:
        conn.execute("BEGIN IMMEDIATE")
        rows = conn.execute(claim, (time.time() + 30, batch)).fetchall()
        conn.execute("COMMIT")
        if not rows:
            break
        for row_id, _job_id, data in rows:
            json.loads(data)
            conn.execute("BEGIN IMMEDIATE")
            conn.execute(RAW_COMPLETE, (None, row_id))
            conn.execute("COMMIT")
            done += 1
    elapsed = perf_counter() - start
    conn.close()
    assert done == n, (done, n)
    return n, elapsed


def raw_claim_complete(path: Path, n: int) -> tuple[int, float]:
    return _raw_drain(path, n, 1)


def raw_claim_100(path: Path, n: int) -> tuple[int, float]:
    return _raw_drain(path, n, 100)


def make_jobs(n: int) -> list[Job]:
    return [Job(job_type="bench", payload=payload(i)) for i in range(n)]


def typedq_enqueue(path: Path, n: int) -> tuple[int, float]:
    queue = SQLiteQueue(path, name="bench")
    jobs = make_jobs(n)
    enqueue = queue.enqueue
    start = perf_counter()
    for job in jobs:
        enqueue(job)
    elapsed = perf_counter() - start
    queue.close()
    return n, elapsed


def typedq_enqueue_many(path: Path, n: int) -> tuple[int, float]:
    queue = SQLiteQueue(path, name="bench")
    jobs = make_jobs(n)
    start = perf_counter()
    for lo in range(0, n, 1000):
        queue.enqueue_many(jobs[lo : lo + 1000])
    elapsed = perf_counter() - start
    queue.close()
    return n, elapsed


def _typedq_drain(path: Path, n: int, backlog: int) -> tuple[int, float]:
    queue = SQLiteQueue(path, name="bench")
    jobs = make_jobs(backlog)
    for lo in range(0, backlog, 5000):
        queue.enqueue_many(jobs[lo : lo + 5000])
    claim_many, complete_many = queue.claim_many, queue.complete_many
    done = 0
    start = perf_counter()
    while done < n:
        claims = claim_many("bench-worker", lease_s=30.0, limit=min(DEFAULT_BATCH_SIZE, n - done))
        if not claims:
            break
        outcomes = complete_many([Completion(c.job.job_id, c.token, None) for c in claims])
        assert all(isinstance(o, Job) for o in outcomes)
        done += len(claims)
    elapsed = perf_counter() - start
    queue.close()
    assert done == n, (done, n)
    return n, elapsed


def typedq_drain(path: Path, n: int) -> tuple[int, float]:
    return _typedq_drain(path, n, n)


#: The peak resident memory of each worker process seen (``VmHWM``), MiB.
WORKER_PEAKS_MIB: list[float] = []


def _peak_mib(pid: int) -> float | None:
    """``VmHWM`` of a live process: its resident memory's high-water mark since its exec
    (``ru_maxrss`` of a child would include the parent it was forked from)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _run_pool(path: Path, processes: int, done: Callable[[], bool]) -> None:
    """Run ``processes`` worker processes of ``_bench_app`` (one thread each) on ``path``
    in this thread until ``done()`` holds (checked every 0.2 s), then stop them. Records
    each worker process's peak resident memory in :data:`WORKER_PEAKS_MIB`."""
    os.environ["TYPEDQ_BENCH_BACKEND"] = f"sqlite:///{path}"
    here = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))
    finished = threading.Event()

    peaks: dict[int, float] = {}

    def stopper() -> None:
        deadline = time.monotonic() + 600
        while not finished.is_set() and time.monotonic() < deadline and not done():
            for child in multiprocessing.active_children():
                peak = _peak_mib(child.pid or 0)
                if peak is not None:
                    peaks[child.pid or 0] = max(peak, peaks.get(child.pid or 0, 0.0))
            time.sleep(0.2)
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    watcher = threading.Thread(target=stopper, daemon=True)
    watcher.start()
    try:
        run_worker_processes(
            "_bench_app:make_manager", processes=processes, concurrency=1, queues=["bench"], grace_s=5.0
        )
    finally:
        finished.set()
        watcher.join()
    WORKER_PEAKS_MIB.extend(peaks.values())


def typedq_processes(path: Path, n: int, processes: int) -> tuple[int, float]:
    """Drain ``n`` jobs with ``processes`` real worker processes (one thread each)."""
    queue = SQLiteQueue(path, name="bench")
    jobs = make_jobs(n)
    for lo in range(0, n, 5000):
        queue.enqueue_many(jobs[lo : lo + 5000])
    def drained() -> bool:
        # wait_ready's EXISTS probe is O(1); the full count only once nothing is ready.
        return not queue.wait_ready(0.0) and queue.count_by_status()[JobStatus.COMPLETED] >= n

    _run_pool(path, processes, drained)
    spans = queue._db.read(
        "SELECT worker_id, min(started_at), max(finished_at), count(*) FROM jobs WHERE queue = 'bench'"
        " AND status = 'COMPLETED' GROUP BY worker_id"
    )
    # The window in which every process was draining: from the last process's first start
    # to the first process's last finish (process start-up is staggered and not counted).
    start = max(first for _, first, _, _ in spans)
    end = min(last for _, _, last, _ in spans)
    within = queue._db.read(
        "SELECT count(*) FROM jobs WHERE queue = 'bench' AND status = 'COMPLETED'"
        " AND finished_at >= ? AND finished_at <= ?",
        (start, end),
    )[0][0]
    completed = sum(count for *_, count in spans)
    queue.close()
    assert completed == n, (completed, n)
    assert len(spans) == processes, f"{len(spans)} of {processes} processes ran jobs"
    return within, end - start


def typedq_latency(path: Path, n: int) -> list[float]:
    """Pick-up latency: this process enqueues ``n`` jobs one at a time, 0-20 ms apart
    (seeded), while one worker process (one thread) waits for them; each job's latency is
    its stored ``started_at`` minus its ``created_at`` (set just before its enqueue).
    Returns the latencies, in seconds."""
    queue = SQLiteQueue(path, name="bench")
    warm_up = queue.enqueue(Job(job_type="bench", payload=payload(-1)))
    ids: list[str] = []
    producing = threading.Event()

    def produce() -> None:
        deadline = time.monotonic() + 60
        while queue.get_job(warm_up).status is not JobStatus.COMPLETED and time.monotonic() < deadline:
            time.sleep(0.05)
        rng = random.Random(7)
        for i in range(n):
            time.sleep(rng.uniform(0.0, 0.02))
            ids.append(queue.enqueue(Job(job_type="bench", payload=payload(i))))
        producing.set()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    _run_pool(path, 1, lambda: producing.is_set() and queue.count_by_status()[JobStatus.COMPLETED] >= n + 1)
    producer.join()
    latencies = []
    for job_id in ids:
        job = queue.get_job(job_id)
        assert job.started_at is not None, job
        latencies.append(job.started_at - job.created_at)
    queue.close()
    return latencies


def huey_pair(path: Path, n: int) -> tuple[tuple[int, float], tuple[int, float]]:
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=str(path), results=True)
    huey.storage.conn.execute("PRAGMA synchronous = NORMAL")

    @huey.task()  # type: ignore[untyped-decorator]  # huey ships no type hints
    def noop(data: dict[str, Any]) -> None:
        return None

    payloads = [payload(i) for i in range(n)]
    start = perf_counter()
    for data in payloads:
        noop(data)
    enqueue = (n, perf_counter() - start)
    done = 0
    start = perf_counter()
    while (task := huey.dequeue()) is not None:
        huey.execute(task)
        done += 1
    drain = (done, perf_counter() - start)
    assert done == n, (done, n)
    huey.storage.close()
    return enqueue, drain


def huey_consumer(path: Path, n: int) -> tuple[int, float]:
    """Drain ``n`` tasks with Huey's own consumer: one worker thread, polling tuned down
    (1 ms first delay, 10 ms at most) so its idle back-off does not count against it."""
    from huey import SqliteHuey

    huey = SqliteHuey("bench", filename=str(path), results=True)
    huey.storage.conn.execute("PRAGMA synchronous = NORMAL")
    finished = threading.Event()
    done = [0]

    @huey.task()  # type: ignore[untyped-decorator]  # huey ships no type hints
    def noop(data: dict[str, Any]) -> None:
        done[0] += 1  # one worker thread: no race
        if done[0] == n:
            finished.set()

    for i in range(n):
        noop(payload(i))
    consumer = huey.create_consumer(
        workers=1, worker_type="thread", initial_delay=0.001, backoff=1.15, max_delay=0.01,
        periodic=False, check_worker_health=False,
    )
    start = perf_counter()
    consumer.start()
    try:
        if not finished.wait(600):
            raise RuntimeError("the huey consumer did not finish")
        seconds = perf_counter() - start
    finally:
        consumer.stop(graceful=True)
        huey.storage.close()
    return n, seconds


# -- running ----------------------------------------------------------------------------------


def profile(name: str, n: int) -> None:
    scenarios: dict[str, Callable[[Path, int], tuple[int, float]]] = {
        "enqueue": typedq_enqueue,
        "enqueue_many": typedq_enqueue_many,
        "drain": typedq_drain,
    }
    with tempfile.TemporaryDirectory(prefix="typedq-bench-") as tmp:
        profiler = cProfile.Profile()
        profiler.enable()
        scenarios[name](Path(tmp) / "bench.db", n)
        profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    print(out.getvalue())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--latency-jobs", type=int, default=500)
    parser.add_argument("--no-huey", action="store_true")
    parser.add_argument("--profile", choices=["enqueue", "enqueue_many", "drain"])
    args = parser.parse_args()
    n, runs = args.jobs, args.runs
    if args.profile:
        profile(args.profile, n)
        return
    print(
        f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}, {platform.machine()}, "
        f"{runs} rounds (medians), {n:,} jobs, backlog {args.backlog:,}, files in {tempfile.gettempdir()}",
        file=sys.stderr,
    )
    scenarios: dict[str, Callable[[Path], tuple[int, float]]] = {
        "raw insert": lambda p: raw_insert(p, n),
        "raw claim+complete": lambda p: raw_claim_complete(p, n),
        "raw claim 100/tx + complete": lambda p: raw_claim_100(p, n),
        "raw bulk insert": lambda p: raw_bulk_insert(p, n),
        "raw insert, typedq schema": lambda p: raw_schema_insert(p, n),
        "raw bulk insert, typedq schema": lambda p: raw_schema_bulk_insert(p, n),
        "raw bulk insert, typedq table + id index": lambda p: raw_schema_bulk_insert(
            p, n, id_index_only=True
        ),
        "typedq enqueue": lambda p: typedq_enqueue(p, n),
        "typedq enqueue_many": lambda p: typedq_enqueue_many(p, n),
        "typedq drain": lambda p: typedq_drain(p, n),
        "typedq drain, backlog": lambda p: _typedq_drain(p, n, args.backlog),
        "typedq 1 worker process": lambda p: typedq_processes(p, n, 1),
        "typedq 4 worker processes": lambda p: typedq_processes(p, n, 4),
    }
    # Every scenario runs once per round, in turn, so that a slow spell of the machine
    # hits a typedq figure and its yardstick alike; ratios are taken within each round.
    rounds: dict[str, list[float]] = {name: [] for name in scenarios}
    if not args.no_huey:
        rounds["huey enqueue"], rounds["huey drain"], rounds["huey consumer, 1 thread"] = [], [], []
    pickups: list[list[float]] = []  # per round: p50, p95, p99 of pick-up latency
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="typedq-bench-") as tmp:
            latencies = sorted(typedq_latency(Path(tmp) / "bench.db", args.latency_jobs))
        last = len(latencies) - 1
        pickups.append([latencies[min(last, int(q * len(latencies)))] for q in (0.5, 0.95, 0.99)])
        for name, scenario in scenarios.items():
            with tempfile.TemporaryDirectory(prefix="typedq-bench-") as tmp:
                items, seconds = scenario(Path(tmp) / "bench.db")
            rounds[name].append(items / seconds)
        if not args.no_huey:
            with tempfile.TemporaryDirectory(prefix="typedq-bench-") as tmp:
                e, d = huey_pair(Path(tmp) / "huey.db", n)
            rounds["huey enqueue"].append(e[0] / e[1])
            rounds["huey drain"].append(d[0] / d[1])
            with tempfile.TemporaryDirectory(prefix="typedq-bench-") as tmp:
                items, seconds = huey_consumer(Path(tmp) / "huey.db", n)
            rounds["huey consumer, 1 thread"].append(items / seconds)
    rate = {name: statistics.median(values) for name, values in rounds.items()}

    def ratio(a: str, b: str) -> float | None:
        """The median over rounds of a's rate / b's rate in the same round."""
        if a not in rounds or b not in rounds:
            return None
        return statistics.median(x / y for x, y in zip(rounds[a], rounds[b], strict=True))

    #: scenario -> (yardstick, the least ratio to it the target asks for, or None).
    targets: dict[str, tuple[str, float | None]] = {
        "typedq enqueue": ("raw insert", 0.7),
        "typedq enqueue_many": ("raw bulk insert", 0.7),
        "raw bulk insert, typedq schema": ("raw bulk insert", None),
        "raw bulk insert, typedq table + id index": ("raw bulk insert", None),
        "typedq drain": ("huey drain", None),
        "typedq drain, backlog": ("typedq drain", 0.8),
        "typedq 1 worker process": ("huey drain", 3.0),
        "huey consumer, 1 thread": ("huey drain", None),
        "typedq 4 worker processes": ("typedq 1 worker process", 1.0),
    }
    width = max(map(len, rate)) + 2
    head = f"{'scenario':<{width}}{'per second':>12}  {'min..max':>19}  "
    print(f"{head}{'vs (median of per-round ratios)':<33}target")
    for name, value in rate.items():
        low, high = min(rounds[name]), max(rounds[name])
        versus, mark = "", ""
        if name in targets:
            base, least = targets[name]
            got = ratio(name, base)
            if got is not None:
                versus = f"{got:.2f}x {base}"
                if least is not None:
                    ok = got > least if least == 1.0 else got >= least
                    mark = ("met" if ok else "MISSED") + f" (>{'' if least == 1.0 else '='} {least:g}x)"
        print(f"{name:<{width}}{value:>12,.0f}  {low:>8,.0f}..{high:<9,.0f}  {versus:<33}{mark}")
    p50, p95, p99 = (statistics.median(round_[i] for round_ in pickups) * 1e3 for i in range(3))
    print(
        f"\npick-up latency, another process enqueueing, 1 idle worker process: p50 {p50:.1f} ms,"
        f" p95 {p95:.1f} ms, p99 {p99:.1f} ms"
    )
    if WORKER_PEAKS_MIB:
        print(
            f"peak resident memory of a worker process: median {statistics.median(WORKER_PEAKS_MIB):.0f} MiB,"
            f" largest {max(WORKER_PEAKS_MIB):.0f} MiB"
        )

if __name__ == "__main__":
    main()
