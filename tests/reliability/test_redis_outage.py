"""A Redis outage under a running stack (RELIABILITY.md §4b: E4).

The private server is paused with SIGSTOP for 15 s and resumed with SIGCONT: it keeps
its sockets (connections are even accepted by the kernel) but answers nothing, the
hardest outage for a client, which only its timeouts end. Meanwhile 8 worker threads and
2 producer threads (one with ``socket_timeout=2``, one with the default 10 s) keep
trying. The test records every call a worker thread makes to the queue (a spy on the
queue's methods), the process's CPU time and resident set.

Pass figures: producers get a ``BackendUnavailableError`` naming the URL after their
timeout, never later; the process uses < 10 % of a core during the outage (no hot spin);
each worker makes ≤ 10 calls per 15 s, and no 50 ms window holds calls of more than 3
workers (not in lockstep); every worker starts a job ≤ 5 s after the server is back;
the resident set grows ≤ 5 MiB; 0 jobs lost; a job runs twice only if it had started and
was not yet COMPLETED at the pause.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import wait_until, wait_while_progressing
from tests.reliability._redis_stack import Stack, statuses
from tests.reliability.ledger import check, read_entries
from tests.reliability.redis_server import RedisServer
from tests.reliability.rss import cpu_seconds, rss_bytes

from typedq.backends.redis import RedisQueue
from typedq.errors import BackendUnavailableError
from typedq.job import Job, JobStatus

pytestmark = [pytest.mark.redis_server_bin, pytest.mark.chaos]

MakeServer = Callable[..., RedisServer]
OUTAGE_S = 15.0
RESUME_S = 5.0
#: Calls the spy records: every way a worker thread reaches the queue.
SPIED = ("claim", "claim_many", "wait_ready", "complete", "complete_many", "release")


class Calls:
    """Start times of the calls worker threads make to RedisQueue methods."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.calls: list[tuple[float, str]] = []

    def between(self, lo: float, hi: float) -> list[tuple[float, str]]:
        with self.lock:
            return [(t, who) for t, who in self.calls if lo <= t <= hi]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> Calls:
    spy = Calls()

    def wrap(name: str) -> None:
        original = getattr(RedisQueue, name)

        def spied(self: RedisQueue, *args: Any, **kwargs: Any) -> Any:
            who = threading.current_thread().name
            if "-worker@" in who:
                with spy.lock:
                    spy.calls.append((time.monotonic(), who))
            return original(self, *args, **kwargs)

        monkeypatch.setattr(RedisQueue, name, spied)

    for name in SPIED:
        wrap(name)
    return spy


class Producer(threading.Thread):
    """Enqueues ``work`` jobs until stopped; records what each call gave."""

    def __init__(self, url: str, name: str) -> None:
        super().__init__(name=f"producer-{name}", daemon=True)
        self.queue = RedisQueue(url, name="default")
        self.tag = name
        self.stop = threading.Event()
        self.acked: list[str] = []
        self.tried: list[str] = []
        self.failures: list[tuple[float, str]] = []  # (seconds the failed call took, message)
        self.other: list[BaseException] = []

    def run(self) -> None:
        n = 0
        while not self.stop.is_set():
            job_id = f"{self.tag}-{n:06d}"
            n += 1
            self.tried.append(job_id)
            began = time.monotonic()
            try:
                self.queue.enqueue(Job.create("work", {"s": 0.01}, job_id=job_id))
            except BackendUnavailableError as exc:
                self.failures.append((time.monotonic() - began, str(exc)))
                self.stop.wait(0.2)
                continue
            except BaseException as exc:  # anything else fails the test
                self.other.append(exc)
                return
            self.acked.append(job_id)
            self.stop.wait(0.01)


def _max_workers_within(times: list[tuple[float, str]], window: float) -> int:
    """The most distinct workers whose calls start within one ``window`` of seconds."""
    times = sorted(times)
    best = 0
    for i, (t, _) in enumerate(times):
        who = {w for u, w in times[i:] if u - t <= window}
        best = max(best, len(who))
    return best


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_e4_an_outage_is_survived_without_spin_lockstep_or_hang(
    tmp_path: Path, redis_servers: MakeServer, calls: Calls
) -> None:
    server = redis_servers()
    fast = server.url(prefix="e4", socket_timeout=2, socket_connect_timeout=1)
    stack = Stack(fast, tmp_path, workers=8)
    producers = [Producer(fast, "p2s"), Producer(server.url(prefix="e4"), "p10s")]
    try:
        stack.start()
        workers = stack.manager.workers()
        for producer in producers:
            producer.start()
        wait_until(
            lambda: stack.queue.count_by_status()[JobStatus.COMPLETED] >= 200, timeout=20,
            message="the stack runs",
        )
        rss_before = rss_bytes()
        done_before = {i for i, st in statuses(stack).items() if st is JobStatus.COMPLETED}
        server.pause()
        paused = time.monotonic()
        time.sleep(1.0)  # every call under way when the server stopped answering has failed
        cpu_from, wall_from = cpu_seconds(), time.monotonic()
        time.sleep(OUTAGE_S - 1.0)
        cpu = (cpu_seconds() - cpu_from) / (time.monotonic() - wall_from)
        server.resume()
        back, wall_back = time.monotonic(), time.time()
        rss_growth = rss_bytes() - rss_before

        # Work for every worker at once, then let the producers run a little longer.
        burst = [f"burst-{i:04d}" for i in range(200)]
        stack.queue.enqueue_many([Job.create("work", {"s": 0.01}, job_id=i) for i in burst])
        wait_until(lambda: len(stack.events.first_after(back)) == len(workers), timeout=RESUME_S + 5,
                   message="every worker started a job")
        resumed = stack.events.first_after(back)
        time.sleep(1.0)
        for producer in producers:
            producer.stop.set()
        for producer in producers:
            producer.join(30)
        acked = [i for p in producers for i in p.acked] + burst
        tried = [i for p in producers for i in p.tried] + burst
        final = statuses(stack)
        present = [i for i in tried if i in final]  # an enqueue that timed out may have run
        wait_while_progressing(
            lambda: stack.queue.count_by_status()[JobStatus.COMPLETED], len(present), stall_s=15.0,
            message="every stored job completed",
        )
        final = statuses(stack)
        assert all(w.is_alive() for w in workers)
    finally:
        for producer in producers:
            producer.stop.set()
        stack.close()
        for producer in producers:
            producer.queue.close()

    # Producers: a typed error naming the URL, after their timeout, never a hang.
    for producer, timeout in zip(producers, (2.0, 10.0), strict=True):
        assert not producer.other, producer.other
        assert producer.failures, f"{producer.tag} never failed"
        for took, message in producer.failures:
            assert f"127.0.0.1:{server.port}" in message
            assert timeout - 0.5 <= took <= timeout + 1.5, (producer.tag, took)
    # Workers: no hot spin, bounded calls, not in lockstep, back soon.
    outage = calls.between(paused + 0.5, back)
    per_worker = {w.worker_id: sum(1 for _, who in outage if who == w.worker_id) for w in workers}
    lockstep = _max_workers_within(outage, 0.05)
    assert cpu < 0.10, cpu
    assert max(per_worker.values()) <= 10, per_worker
    timeline = [(round(t - paused, 3), who[-8:]) for t, who in sorted(outage)]
    assert lockstep <= 3, (lockstep, timeline)
    assert max(resumed.values()) <= RESUME_S, resumed
    assert rss_growth <= 5 * 2**20, rss_growth
    # Nothing lost.
    # Only jobs held (claimed, not yet recorded done) at the pause may run twice.
    held = {e.job_id for e in read_entries(stack.ledger.path) if e.kind == "start" and e.t < wall_back}
    report = check(stack.ledger.path, present, statuses=final, in_flight_at_kill=held - done_before)
    assert not set(acked) - set(present)
    assert not report.lost, sorted(report.lost)[:10]
    assert not report.dup_attempts
    assert not report.unexpected_dups, sorted(report.unexpected_dups)[:10]
    print(
        f"E4: CPU during the outage {cpu:.1%} of a core; calls per worker {sorted(per_worker.values())}; "
        f"at most {lockstep} workers within 50 ms; resumed after "
        f"{', '.join(f'{s:.2f}' for s in sorted(resumed.values()))} s; RSS +{rss_growth / 2**20:.1f} MiB; "
        f"producer failures after {[round(t, 2) for p in producers for t, _ in p.failures]} s; "
        f"run twice {len(report.dups)}"
    )
