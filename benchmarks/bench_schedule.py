"""How late the scheduler fires a slot: the delay from a slot's time to its job being in
the queue.

Run: ``.venv/bin/python benchmarks/bench_schedule.py [--slots 20] [--runs 3]
[--backends memory,sqlite,redis]``.

Each run declares an every-second schedule on a fresh store and runs two schedulers on
it (one leads, the other follows, as two worker processes would), each in its own
thread with the system clock. The delay of a slot is the wall time when its enqueue
returned (the scheduler's ``on_fired`` callback) minus the slot's time. Printed per
backend: the p50 and p99 of each run, then the medians over the runs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from pathlib import Path

from typedq.backends import open_queue
from typedq.backends.base import Queue, ScheduleEntry
from typedq.job import Job
from typedq.scheduler import SLOT_KEY, Scheduler, recurrence_of


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _url(backend: str, tmp: Path) -> str:
    if backend == "memory":
        return "memory://"
    if backend == "sqlite":
        return f"sqlite:///{tmp / f'{uuid.uuid4().hex}.db'}"
    return f"redis://127.0.0.1:6379/0?prefix=typedq-bench-{uuid.uuid4().hex[:10]}"


def _cleanup(url: str) -> None:
    if not url.startswith("redis://"):
        return
    import redis

    prefix = url.split("prefix=")[1]
    client = redis.Redis()
    keys = list(client.scan_iter(match=f"{{{prefix}:*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


def run(backend: str, slots: int, tmp: Path) -> list[float]:
    """One run: the delays (seconds) of ``slots`` slots."""
    url = _url(backend, tmp)
    first_queue = open_queue(url, name="default")
    # memory:// is one store per object: both schedulers share the one queue object.
    second_queue = first_queue if backend == "memory" else open_queue(url, name="default")
    delays: list[float] = []
    done = threading.Event()

    def fired(queue: Queue, job: Job) -> None:
        delays.append(time.time() - job.metadata[SLOT_KEY])
        if len(delays) >= slots:
            done.set()

    entry = ScheduleEntry(name="bench", job_type="tick", every_s=1.0, catch_up="all")
    entry.next_run_at = recurrence_of(entry).after(time.time() + 0.5)
    first_queue.put_schedule(entry)
    schedulers = [
        Scheduler(lambda q=q: [q], clock=q.clock, lock_s=15.0, on_fired=fired)  # type: ignore[misc]
        for q in (first_queue, second_queue)
    ]
    try:
        for scheduler in schedulers:
            scheduler.start()
        done.wait(slots + 10)
    finally:
        for scheduler in schedulers:
            scheduler.stop()
        first_queue.close()
        second_queue.close()
        _cleanup(url)
    return delays[:slots]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slots", type=int, default=20)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--backends", default="memory,sqlite,redis")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for backend in args.backends.split(","):
            p50s, p99s = [], []
            for index in range(args.runs):
                delays = run(backend, args.slots, Path(tmp))
                p50, p99 = _percentile(delays, 0.50) * 1000, _percentile(delays, 0.99) * 1000
                p50s.append(p50)
                p99s.append(p99)
                print(f"{backend:7} run {index + 1}: {len(delays)} slots, p50 {p50:.2f} ms, p99 {p99:.2f} ms")
            print(
                f"{backend:7} median of {args.runs} runs: p50 {statistics.median(p50s):.2f} ms, "
                f"p99 {statistics.median(p99s):.2f} ms"
            )


if __name__ == "__main__":
    main()
