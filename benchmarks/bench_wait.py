"""What ``JobQueueManager.wait_for_completion`` costs the drain it waits for.

Run: ``.venv/bin/python benchmarks/bench_wait.py [--runs 5] [--jobs 20000]
[--backends memory,sqlite]``.

For each backend, each round drains ``--jobs`` no-op jobs twice with one worker thread
(enqueued first with ``enqueue_many``; the clock runs from ``start_workers()``):

* *events*: the clock stops when the last ``on_job_completed`` event arrives (a counter
  in the event handler sets a ``threading.Event``): the drain as fast as the worker goes;
* *wait*: the clock stops when ``wait_for_completion(ids)``, called right after
  ``start_workers()``, returns.

The two drains of a round run one after the other (in alternating order), so both see
the same machine; the figure is the median over the rounds of the per-round ratio
``rate(wait) / rate(events)``: 1.0 means waiting costs the drain nothing.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from typedq import EventHandler, Job, JobQueueManager

perf_counter = time.perf_counter


class _Count(EventHandler):
    """Counts completions; sets ``done`` at the ``n``-th."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.seen = 0
        self.done = threading.Event()
        self.last = 0.0

    def on_job_completed(self, job: Job, result: Any) -> None:
        self.seen += 1
        if self.seen >= self.n:
            self.last = perf_counter()
            self.done.set()


def _noop(payload: dict[str, Any]) -> None:
    return None


def _drain(backend: str, n: int, *, by_wait: bool) -> float:
    """Drain ``n`` jobs; return jobs/s measured by events or by ``wait_for_completion``."""
    events = _Count(n)
    manager = JobQueueManager({"backend": backend, "max_workers": 1, "lease_s": 30.0}, event_handler=events)
    try:
        manager.register_handler("bench", _noop)
        queue = manager.get_queue("default")
        jobs = [Job.create("bench", {"i": i}, queue="default") for i in range(n)]
        ids: list[str] = []
        for lo in range(0, n, 5000):
            ids += queue.enqueue_many(jobs[lo : lo + 5000])
        start = perf_counter()
        manager.start_workers(count=1)
        if by_wait:
            assert manager.wait_for_completion(ids, timeout=300)
            end = perf_counter()
        else:
            assert events.done.wait(300)
            end = events.last
        assert events.seen == n, (events.seen, n)
        return n / (end - start)
    finally:
        manager.close(timeout=10)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--backends", default="memory,sqlite")
    args = parser.parse_args()
    print(f"{args.jobs} jobs a drain, 1 worker thread, {args.runs} rounds")
    with tempfile.TemporaryDirectory(prefix="typedq-bench-wait-") as tmp:
        for name in args.backends.split(","):
            ratios: list[float] = []
            by_events: list[float] = []
            by_wait: list[float] = []
            for r in range(args.runs):
                rates: dict[bool, float] = {}
                for wait in ((False, True) if r % 2 == 0 else (True, False)):
                    backend = "memory://" if name == "memory" else f"sqlite:///{Path(tmp) / f'{r}-{wait}.db'}"
                    rates[wait] = _drain(backend, args.jobs, by_wait=wait)
                by_events.append(rates[False])
                by_wait.append(rates[True])
                ratios.append(rates[True] / rates[False])
            print(
                f"{name:7s} drain measured by events {statistics.median(by_events):9,.0f} jobs/s, "
                f"by wait_for_completion {statistics.median(by_wait):9,.0f} jobs/s; "
                f"ratio (median of rounds) {statistics.median(ratios):.2f} "
                f"[{min(ratios):.2f}-{max(ratios):.2f}]"
            )


if __name__ == "__main__":
    main()
