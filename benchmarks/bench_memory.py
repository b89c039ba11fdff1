"""Throughput and latency of the in-memory backend, with Huey's ``MemoryHuey`` as a yardstick.

Run: ``.venv/bin/python benchmarks/bench_memory.py [--runs 5] [--queue-jobs 100000]
[--jobs 50000] [--profile]``. Prints the median of ``--runs`` runs per figure.

Scenarios:

a. ``JobQueue`` enqueue+dequeue pairs/s on pre-built jobs: *bulk* (enqueue all, then
   dequeue all: a heap of ``--queue-jobs``) and *interleaved* (enqueue one, dequeue one).
b. ``JobQueue.enqueue`` alone, jobs/s.
c. ``JobQueueManager`` submit → COMPLETED with 1 and 4 worker threads: events on (a
   no-op ``EventHandler`` subclass), stats on, logging at its default level. *live*:
   workers started first, the clock runs from the first submit until every job is
   COMPLETED; *drain*: every job submitted first, the clock runs from
   ``start_workers()`` until every job is COMPLETED.
d. The same workload through Huey's ``MemoryHuey`` (``immediate=False``, results on):
   *live* and *drain* through Huey's own ``Consumer`` with 1 worker thread (polling
   tuned down to ``initial_delay=1 ms, max_delay=10 ms`` so its idle back-off does not
   count against it), and *drain* through a bare ``huey.execute(huey.dequeue())`` loop
   in one thread (Huey's floor: no consumer machinery at all).

Both systems run the same handler body: store ``perf_counter()`` in a preallocated
list and count. Per-job latency is that time minus the time just before the submit
call (p50/p99, *live* only: in *drain* it is queueing time). Memory: one extra run per
scenario under ``tracemalloc`` (peak of Python allocations, MiB), and the process's
``ru_maxrss`` at the end.

``--profile`` runs scenario (c, 1 worker, live) under cProfile and prints where the
time goes.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import itertools
import platform
import pstats
import resource
import statistics
import sys
import threading
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from typedq import EventHandler, Job, JobQueue, JobQueueManager, JobStatus

perf_counter = time.perf_counter


@dataclass
class Outcome:
    """One run of one scenario."""

    jobs: int
    seconds: float
    latencies: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.jobs / self.seconds


class NoopEvents(EventHandler):
    """Every callback overridden to do nothing: the cost of events being on."""

    def on_job_submitted(self, job: Job) -> None:
        pass

    def on_job_started(self, job: Job, worker_id: str) -> None:
        pass

    def on_job_completed(self, job: Job, result: Any) -> None:
        pass

    def on_job_failed(self, job: Job, error: BaseException | str) -> None:
        pass

    def on_job_retried(self, job: Job, next_scheduled_at: float) -> None:
        pass

    def on_job_dead(self, job: Job) -> None:
        pass


class Tally:
    """The handler body shared by typedq and Huey: timestamp + count + done signal."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.submitted = [0.0] * n
        self.done = [0.0] * n
        self._count = itertools.count(1)
        self.finished = threading.Event()

    def record(self, i: int) -> None:
        self.done[i] = perf_counter()
        if next(self._count) == self.n:
            self.finished.set()

    def latencies(self) -> list[float]:
        return [d - s for d, s in zip(self.done, self.submitted, strict=True)]


# -- a, b: the queue alone ---------------------------------------------------------------


def _jobs(n: int) -> list[Job]:
    now = time.time()
    return [Job.create("bench", {"i": i}, now=now) for i in range(n)]


def queue_pairs_bulk(n: int) -> Outcome:
    jobs = _jobs(n)
    queue = JobQueue()
    enqueue, dequeue = queue.enqueue, queue.dequeue
    t0 = perf_counter()
    for job in jobs:
        enqueue(job)
    for _ in range(n):
        dequeue()
    seconds = perf_counter() - t0
    assert queue.count_by_status()[JobStatus.RUNNING] == n
    return Outcome(n, seconds)


def queue_pairs_interleaved(n: int) -> Outcome:
    jobs = _jobs(n)
    queue = JobQueue()
    enqueue, dequeue = queue.enqueue, queue.dequeue
    t0 = perf_counter()
    for job in jobs:
        enqueue(job)
        dequeue()
    seconds = perf_counter() - t0
    assert queue.count_by_status()[JobStatus.RUNNING] == n
    return Outcome(n, seconds)


def queue_enqueue(n: int) -> Outcome:
    jobs = _jobs(n)
    queue = JobQueue()
    enqueue = queue.enqueue
    t0 = perf_counter()
    for job in jobs:
        enqueue(job)
    seconds = perf_counter() - t0
    assert queue.size == n
    return Outcome(n, seconds)


# -- c: the manager ----------------------------------------------------------------------


def _wait_all_completed(queue: Any, n: int) -> None:
    while queue.count_by_status()[JobStatus.COMPLETED] < n:
        time.sleep(0.0002)


def manager_run(n: int, workers: int, mode: str) -> Outcome:
    tally = Tally(n)
    record = tally.record

    def handler(payload: dict[str, Any]) -> None:
        record(payload["i"])

    manager = JobQueueManager({"max_workers": workers}, event_handler=NoopEvents())
    manager.register_handler("noop", handler)
    queue = manager.get_queue("default")
    submit = manager.submit
    submitted = tally.submitted
    try:
        if mode == "live":
            manager.start_workers()
        t0 = perf_counter()
        for i in range(n):
            submitted[i] = perf_counter()
            submit("noop", {"i": i})
        t_submitted = perf_counter()
        if mode == "drain":
            t0 = perf_counter()
            manager.start_workers()
        if not tally.finished.wait(300):
            raise RuntimeError("typedq run did not finish")
        _wait_all_completed(queue, n)
        seconds = perf_counter() - t0
        stats = manager.get_stats()
    finally:
        manager.close()
    assert stats["total_submitted"] == n, stats
    outcome = Outcome(n, seconds, tally.latencies() if mode == "live" else [])
    if mode == "drain":
        outcome.extra["submit/s"] = n / (t_submitted - tally.submitted[0])
    return outcome


# -- d: Huey -----------------------------------------------------------------------------


def _huey(n: int) -> tuple[Any, Tally, Callable[[int], Any]]:
    from huey import MemoryHuey

    huey = MemoryHuey("bench", immediate=False, results=True)
    tally = Tally(n)
    record = tally.record

    @huey.task()
    def noop(i: int) -> None:
        record(i)

    return huey, tally, noop


def huey_consumer_run(n: int, mode: str) -> Outcome:
    huey, tally, noop = _huey(n)
    consumer = huey.create_consumer(
        workers=1, worker_type="thread", initial_delay=0.001, backoff=1.15, max_delay=0.01,
        periodic=False, check_worker_health=False,
    )
    submitted = tally.submitted
    if mode == "live":
        consumer.start()
    try:
        t0 = perf_counter()
        for i in range(n):
            submitted[i] = perf_counter()
            noop(i)
        if mode == "drain":
            t0 = perf_counter()
            consumer.start()
        if not tally.finished.wait(300):
            raise RuntimeError("huey run did not finish")
        seconds = perf_counter() - t0
    finally:
        consumer.stop(graceful=True)
    return Outcome(n, seconds, tally.latencies() if mode == "live" else [])


def huey_loop_drain(n: int) -> Outcome:
    huey, tally, noop = _huey(n)
    for i in range(n):
        tally.submitted[i] = perf_counter()
        noop(i)

    def loop() -> None:
        dequeue, execute = huey.dequeue, huey.execute
        while not tally.finished.is_set():
            task = dequeue()
            if task is not None:
                execute(task)

    t0 = perf_counter()
    thread = threading.Thread(target=loop, name="huey-loop")
    thread.start()
    thread.join(300)
    return Outcome(n, perf_counter() - t0)


# -- running and reporting ---------------------------------------------------------------


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(name: str, fn: Callable[[], Outcome], runs: int, *, memory: bool = True) -> dict[str, Any]:
    outcomes = []
    for _ in range(runs):
        gc.collect()
        outcomes.append(fn())
    row: dict[str, Any] = {
        "name": name,
        "jobs": outcomes[0].jobs,
        "rate": statistics.median(o.rate for o in outcomes),
        "spread": (min(o.rate for o in outcomes), max(o.rate for o in outcomes)),
    }
    if outcomes[0].latencies:
        row["p50"] = statistics.median(_pct(o.latencies, 0.50) for o in outcomes) * 1e3
        row["p99"] = statistics.median(_pct(o.latencies, 0.99) for o in outcomes) * 1e3
    for key in outcomes[0].extra:
        row[key] = statistics.median(o.extra[key] for o in outcomes)
    if memory:
        gc.collect()
        tracemalloc.start()
        fn()
        row["peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    print(_format(row), flush=True)
    return row


HEADER = (
    f"{'scenario':<44} {'jobs':>7} {'median/s':>10} {'min..max /s':>19} "
    f"{'p50 ms':>8} {'p99 ms':>8} {'peak MiB':>9}"
)


def _format(row: dict[str, Any]) -> str:
    lo, hi = row["spread"]
    p50 = f"{row['p50']:.3f}" if "p50" in row else "-"
    p99 = f"{row['p99']:.3f}" if "p99" in row else "-"
    peak = f"{row['peak_mib']:.1f}" if "peak_mib" in row else "-"
    text = (
        f"{row['name']:<44} {row['jobs']:>7} {row['rate']:>10,.0f} {f'{lo:,.0f}..{hi:,.0f}':>19} "
        f"{p50:>8} {p99:>8} {peak:>9}"
    )
    if "submit/s" in row:
        text += f"   (submit alone: {row['submit/s']:,.0f}/s)"
    return text


def profile_manager(n: int) -> None:
    """cProfile of scenario c (1 worker, live): the submitting thread and the others."""
    profiles: list[tuple[str, cProfile.Profile]] = []
    lock = threading.Lock()

    def tracer(frame: Any, event: str, arg: Any) -> None:  # installs a profiler per thread
        prof = cProfile.Profile()
        with lock:
            profiles.append((threading.current_thread().name, prof))
        sys.setprofile(None)
        prof.enable()

    main = cProfile.Profile()
    threading.setprofile(tracer)
    main.enable()
    t0 = perf_counter()
    try:
        outcome = manager_run(n, 1, "live")
    finally:
        main.disable()
        threading.setprofile(None)
    wall = perf_counter() - t0
    for _, prof in profiles:
        prof.disable()
    print(f"{n} jobs in {wall:.2f}s under the profiler ({outcome.rate:,.0f} jobs/s)")
    sections = [("submitting (main) thread", [main])]
    sections.append(("worker thread(s)", [p for name, p in profiles if "worker" in name]))
    sections.append(("other threads", [p for name, p in profiles if "worker" not in name]))
    for title, group in sections:
        if not group:
            continue
        stream = io.StringIO()
        stats = pstats.Stats(group[0], stream=stream)
        for prof in group[1:]:
            stats.add(prof)
        stats.sort_stats("tottime").print_stats(15)
        print(f"===== {title} =====")
        print(stream.getvalue())


def _verdict(what: str, ok: bool) -> None:
    print(f"  [{'met' if ok else 'MISSED'}] {what}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--queue-jobs", type=int, default=100_000)
    parser.add_argument("--jobs", type=int, default=50_000)
    parser.add_argument("--no-huey", action="store_true")
    parser.add_argument("--profile", action="store_true", help="cProfile scenario c (1 worker, live)")
    args = parser.parse_args()

    if args.profile:
        profile_manager(args.jobs)
        return

    print(f"python {platform.python_version()} on {platform.machine()}, "
          f"{len(__import__('os').sched_getaffinity(0))} CPUs, median of {args.runs} runs")
    print(HEADER)
    nq, n, runs = args.queue_jobs, args.jobs, args.runs
    rows: dict[str, dict[str, Any]] = {}

    def run(key: str, name: str, fn: Callable[[], Outcome]) -> None:
        rows[key] = measure(name, fn, runs)

    run("pairs", "a. JobQueue enqueue+dequeue pairs (bulk)", lambda: queue_pairs_bulk(nq))
    run("pairs-i", "a. JobQueue enqueue+dequeue pairs (interl.)", lambda: queue_pairs_interleaved(nq))
    run("enqueue", "b. JobQueue enqueue alone", lambda: queue_enqueue(nq))
    for w in (1, 4):
        run(f"live{w}", f"c. manager {w} worker(s), live", lambda w=w: manager_run(n, w, "live"))
        run(f"drain{w}", f"c. manager {w} worker(s), drain", lambda w=w: manager_run(n, w, "drain"))
    if not args.no_huey:
        run("huey-live", "d. MemoryHuey Consumer 1 thread, live", lambda: huey_consumer_run(n, "live"))
        run("huey-drain", "d. MemoryHuey Consumer 1 thread, drain", lambda: huey_consumer_run(n, "drain"))
        run("huey-loop", "d. MemoryHuey execute(dequeue()) loop, drain", lambda: huey_loop_drain(n))

    print("\ntargets (issue):")
    _verdict("enqueue+dequeue pairs/s >= 150k (bulk)", rows["pairs"]["rate"] >= 150_000)
    _verdict("manager, 1 worker, live >= 60k jobs/s", rows["live1"]["rate"] >= 60_000)
    if "huey-live" in rows:
        _verdict("manager, 1 worker, live > MemoryHuey live",
                 rows["live1"]["rate"] > rows["huey-live"]["rate"])
        _verdict("manager, 1 worker, drain > MemoryHuey drain (both)",
                 rows["drain1"]["rate"] > max(rows["huey-drain"]["rate"], rows["huey-loop"]["rate"]))
    print(f"ru_maxrss at exit: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
