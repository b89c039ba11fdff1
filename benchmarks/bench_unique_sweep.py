"""What sweeping unique-key entries costs (``Queue.sweep_unique_keys``, run by the reaper).

Run: ``.venv/bin/python benchmarks/bench_unique_sweep.py [--runs 5] [--entries 30000]
[--redis redis://127.0.0.1:6379/0]``. For memory, SQLite and (with ``--redis``) Redis, a
queue holds ``--entries`` unique keys, half of them released (their ``unique_for``
passed). Figures are medians over ``--runs`` rounds (min..max beside them):

1. one sweep batch of 1,000 entries (half of them removed), ms;
2. one batch over 1,000 entries that all hold their key (nothing to remove: what the
   reaper pays once the table is clean), ms;
3. a whole round over the table, entries examined per second;
4. the yardstick, in the same round: ``enqueue_many`` of 1,000 unique jobs, ms, and the
   ratio batch / yardstick.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

from typedq.backends._unique import UNIQUE_META
from typedq.backends.base import Queue
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.job import Job

Opener = Callable[[FakeClock], AbstractContextManager[Queue]]


def _jobs(start: int, n: int, *, timed: bool) -> list[Job]:
    jobs = []
    for i in range(start, start + n):
        unique = {"key": f"k{i:07d}", **({"for_s": 10.0} if timed and i % 2 == 0 else {})}
        jobs.append(Job.create("t", {"n": i}, metadata={UNIQUE_META: unique}))
    return jobs


def _round(queue: Queue) -> int:
    cursor, examined = "", 0
    while True:
        _, cursor = queue.sweep_unique_keys(cursor=cursor, limit=1000)
        examined += 1000
        if not cursor:
            return examined


def one_round(opener: Opener, entries: int) -> dict[str, float]:
    clock = FakeClock()
    with opener(clock) as queue:
        for lo in range(0, entries, 5000):
            queue.enqueue_many(_jobs(lo, min(5000, entries - lo), timed=True))
        started = time.perf_counter()
        queue.enqueue_many(_jobs(entries, 1000, timed=False))
        yardstick = time.perf_counter() - started
        clock.advance(11)
        started = time.perf_counter()
        removed, _ = queue.sweep_unique_keys(limit=1000)
        batch = time.perf_counter() - started
        started = time.perf_counter()
        _round(queue)
        whole = time.perf_counter() - started
        started = time.perf_counter()
        queue.sweep_unique_keys(limit=1000)
        clean = time.perf_counter() - started
    return {
        "batch_ms": batch * 1e3,
        "clean_batch_ms": clean * 1e3,
        "round_entries_per_s": (entries + 1000 - removed) / whole,
        "enqueue_1000_ms": yardstick * 1e3,
        "batch_over_enqueue": batch / yardstick,
    }


@contextmanager
def _memory(clock: FakeClock) -> Iterator[Queue]:
    yield JobQueue("q", clock=clock)


@contextmanager
def _sqlite(clock: FakeClock) -> Iterator[Queue]:
    with tempfile.TemporaryDirectory() as tmp:
        queue = SQLiteQueue(Path(tmp) / "jobs.db", name="q", clock=clock)
        try:
            yield queue
        finally:
            queue.close()


def _redis(url: str) -> Opener:
    @contextmanager
    def open_redis(clock: FakeClock) -> Iterator[Queue]:
        from typedq.backends.redis import RedisQueue

        prefix = f"typedq-bench-{uuid.uuid4().hex[:12]}"
        queue = RedisQueue(f"{url}?prefix={prefix}", name="q", clock=clock)
        try:
            yield queue
        finally:
            client = queue._r
            for key in client.scan_iter(match=f"{{{prefix}*", count=1000):  # only this run's keys
                client.delete(key)
            queue.close()

    return open_redis


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--entries", type=int, default=30_000)
    parser.add_argument("--redis", default=None)
    args = parser.parse_args()
    backends: dict[str, Opener] = {"memory": _memory, "sqlite": _sqlite}
    if args.redis:
        backends["redis"] = _redis(args.redis)
    print(f"{args.entries} entries, half released; medians of {args.runs} runs (min..max)")
    for name, opener in backends.items():
        rounds = [one_round(opener, args.entries) for _ in range(args.runs)]
        for figure in rounds[0]:
            values = [r[figure] for r in rounds]
            print(
                f"{name:7} {figure:22} {statistics.median(values):12.3f}"
                f"  ({min(values):.3f}..{max(values):.3f})"
            )


if __name__ == "__main__":
    main()
