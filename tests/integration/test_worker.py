"""``Worker`` end to end on the in-memory ``JobQueue``: real threads, no mocks of typedq.

Covers the specification's worker (handlers, results, errors, retries with backoff, the
dead-letter queue, events, unique ids, graceful stop, timeouts) and the reliability rows
A5, G3 (worker part), G4 (thread part), G5, H7 and C3. Tests synchronise by polling with
a deadline (``wait_until``) or by moving a ``FakeClock``; the only waits on real time are
a handler simulating work and the idle window of the no-spin test, which measure, not
synchronise.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.reliability.ledger import Ledger, check

from typedq import (
    EventHandler,
    FakeClock,
    Job,
    JobQueue,
    JobStatus,
    JobTimeoutError,
    Reaper,
    RetryPolicy,
    Worker,
)
from typedq._timefmt import iso_local

pytestmark = pytest.mark.timeout(30)

#: Default lease knobs for the reliability tests (RELIABILITY.md §4a).
LEASE_S = 1.0
HEARTBEAT_S = 0.25
REAPER_S = 0.1


def add(queue: JobQueue, job_type: str, payload: dict[str, Any] | None = None, **fields: Any) -> str:
    """Enqueue a fresh job on ``queue`` and return its id."""
    job = Job.create(job_type, payload, queue=queue.name, now=queue.clock.now(), **fields)
    return queue.enqueue(job)


def status_is(queue: JobQueue, job_id: str, *statuses: JobStatus) -> Callable[[], bool]:
    def predicate() -> bool:
        return queue.get_job(job_id).status in statuses

    predicate.__name__ = f"job {job_id} is {'/'.join(statuses)}"
    return predicate


class Recorder(EventHandler):
    """Records every event as a tuple, in the order the callbacks ran (thread-safe)."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []
        self._lock = threading.Lock()

    def _add(self, *event: Any) -> None:
        with self._lock:
            self.events.append(event)

    def for_job(self, job_id: str) -> list[tuple[Any, ...]]:
        with self._lock:
            return [e for e in self.events if e[1] == job_id]

    def on_job_submitted(self, job: Job) -> None:
        self._add("submitted", job.job_id)

    def on_job_started(self, job: Job, worker_id: str) -> None:
        self._add("started", job.job_id, worker_id)

    def on_job_completed(self, job: Job, result: Any) -> None:
        self._add("completed", job.job_id, result, job.status)

    def on_job_failed(self, job: Job, error: BaseException | str) -> None:
        self._add("failed", job.job_id, error)

    def on_job_retried(self, job: Job, next_scheduled_at: float) -> None:
        self._add("retried", job.job_id, next_scheduled_at, job.status, job.retry_count)

    def on_job_dead(self, job: Job) -> None:
        self._add("dead", job.job_id, job.status)


# -- running handlers --------------------------------------------------------------------


def test_runs_handler_with_payload_and_stores_result(start_worker: Callable[..., Worker]) -> None:
    queue = JobQueue()
    seen: list[dict[str, Any]] = []

    def double(payload: dict[str, Any]) -> dict[str, Any]:
        seen.append(payload)
        return {"doubled": payload["n"] * 2}

    job_id = add(queue, "double", {"n": 21, "nested": {"a": [1, 2]}})
    worker = start_worker(queue, {"double": double})
    wait_until(status_is(queue, job_id, JobStatus.COMPLETED))

    job = queue.get_job(job_id)
    assert seen == [{"n": 21, "nested": {"a": [1, 2]}}]
    assert job.result == {"doubled": 42}
    assert job.error is None
    assert job.attempt == 1
    assert job.worker_id == worker.worker_id
    assert job.finished_at is not None
    assert job.started_at is not None
    assert job.finished_at >= job.started_at
    assert worker.stop(wait=True, timeout=5)  # its counters are final once it has exited
    assert worker.stats.completed == 1


def test_handler_exception_is_caught_and_recorded(start_worker: Callable[..., Worker]) -> None:
    queue = JobQueue()
    dlq = JobQueue("dead-letter")

    def broken(payload: dict[str, Any]) -> None:
        raise ValueError(f"bad value {payload['v']}")

    failing = add(queue, "broken", {"v": 7}, max_retries=0)
    fine = add(queue, "ok", priority=1)
    worker = start_worker(queue, {"broken": broken, "ok": lambda p: "fine"}, dead_letter_queue=dlq)
    wait_until(status_is(queue, fine, JobStatus.COMPLETED))

    job = queue.get_job(failing)
    assert job.status is JobStatus.DEAD
    assert job.error == "ValueError: bad value 7"
    assert worker.is_alive()
    assert worker.stop(wait=True, timeout=5)  # its counters are final once it has exited
    assert (worker.stats.failed, worker.stats.dead, worker.stats.completed) == (1, 1, 1)


# -- retries (spec: retry_count < max_retries; backoff base * 2**retry_count + jitter) ----


def test_retries_follow_the_spec_backoff_then_dead_letter(
    start_worker: Callable[..., Worker], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """G3 (worker part): always failing, max_retries=3 → exactly 4 attempts, then DEAD."""
    caplog.set_level(logging.WARNING, logger="typedq")
    queue = JobQueue("work", clock=clock)
    dlq = JobQueue("dead-letter", clock=clock)
    attempts: list[int] = []

    def always_fails(payload: dict[str, Any]) -> None:
        attempts.append(len(attempts) + 1)
        raise RuntimeError(f"attempt {len(attempts)} failed")

    job_id = add(queue, "flaky", {"k": 1}, priority=8, max_retries=3)
    start_worker(queue, {"flaky": always_fails}, dead_letter_queue=dlq, base_delay=1.0)

    for retry in (1, 2, 3):
        wait_until(
            lambda r=retry: (j := queue.get_job(job_id)).status is JobStatus.PENDING
            and j.retry_count == r,
            message=f"retry {retry} scheduled",
        )
        job = queue.get_job(job_id)
        delay = job.scheduled_at - clock.now()  # type: ignore[operator]  # set by fail()
        base = 1.0 * 2**retry
        assert base <= delay <= 1.5 * base, f"retry {retry}: delay {delay} outside [{base}, {1.5 * base}]"
        assert job.priority == 8
        assert job.error == f"RuntimeError: attempt {retry} failed"
        assert queue.ready_count() == 0  # not before its time
        assert len(attempts) == retry
        clock.advance(delay)
        queue.interrupt()  # the worker waits on real time: wake it after moving the clock

    wait_until(status_is(queue, job_id, JobStatus.DEAD))
    wait_until(lambda: job_id in dlq)  # the copy is made just after the job turns DEAD
    assert attempts == [1, 2, 3, 4]
    job = queue.get_job(job_id)
    assert job.retry_count == 3
    assert job.error == "RuntimeError: attempt 4 failed"

    dead = dlq.get_job(job_id)
    assert dead is not job  # a copy, not the live object
    assert dead.status is JobStatus.DEAD
    assert dead.error == "RuntimeError: attempt 4 failed"
    assert (dead.job_type, dead.payload, dead.priority, dead.queue) == ("flaky", {"k": 1}, 8, "work")

    messages = [r.getMessage() for r in caplog.records if r.name == "typedq.worker"]
    retries = [m for m in messages if "retry" in m and job_id in m]
    assert len(retries) == 3
    for n, message in enumerate(retries, 1):
        assert "flaky" in message
        assert f"retry {n} of 3" in message
        assert f"RuntimeError: attempt {n} failed" in message
    deaths = [m for m in messages if "dead-letter" in m]
    assert len(deaths) == 1
    for needle in (job_id, "flaky", "3 retries", "RuntimeError: attempt 4 failed"):
        assert needle in deaths[0]


def test_the_retry_log_line_shows_a_local_iso_time_and_the_wait(
    start_worker: Callable[..., Worker], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """People read logs: the retry time is a local ISO time and "in N s", not an epoch float."""
    caplog.set_level(logging.WARNING, logger="typedq")
    queue = JobQueue("work", clock=clock)

    def fails(payload: dict[str, Any]) -> None:
        raise RuntimeError("nope")

    job_id = add(queue, "flaky", {}, max_retries=3)
    start_worker(queue, {"flaky": fails}, retry_policy=RetryPolicy(base_delay=2.0, jitter=0.0))
    wait_until(lambda: queue.get_job(job_id).retry_count == 1, message="retry scheduled")
    retry_at = queue.get_job(job_id).scheduled_at
    assert retry_at is not None
    wait_until(lambda: any("retry 1 of 3" in r.getMessage() for r in caplog.records), message="logged")
    line = next(r.getMessage() for r in caplog.records if "retry 1 of 3" in r.getMessage())
    delay = retry_at - clock.now()
    assert f"retry 1 of 3 at {iso_local(retry_at)} (in {delay:.1f} s): RuntimeError: nope" in line, line
    assert f"{retry_at:.3f}" not in line


def test_retry_jitter_stays_within_half_the_delay(
    start_worker: Callable[..., Worker], clock: FakeClock
) -> None:
    """20 jobs failing at the same instant: every delay in [2, 3] s and not all equal."""
    queue = JobQueue(clock=clock)

    def fails(payload: dict[str, Any]) -> None:
        raise RuntimeError("nope")

    ids = [add(queue, "f", max_retries=5) for _ in range(20)]
    start_worker(queue, {"f": fails}, retry_policy=RetryPolicy(base_delay=1.0))
    wait_until(lambda: all(queue.get_job(i).retry_count == 1 for i in ids))
    wait_until(lambda: all(queue.get_job(i).status is JobStatus.PENDING for i in ids))
    delays = [queue.get_job(i).scheduled_at - clock.now() for i in ids]  # type: ignore[operator]
    assert all(2.0 <= d <= 3.0 for d in delays), delays
    assert len(set(delays)) > 1, "no jitter"


# -- events ------------------------------------------------------------------------------


def test_event_handler_sees_every_transition_in_order(start_worker: Callable[..., Worker]) -> None:
    queue = JobQueue()
    dlq = JobQueue("dead-letter")
    rec = Recorder()
    failures: dict[str, int] = {}

    def once_then_ok(payload: dict[str, Any]) -> str:
        failures[payload["id"]] = failures.get(payload["id"], 0) + 1
        if failures[payload["id"]] == 1:
            raise ValueError("first try")
        return "second try worked"

    def always(payload: dict[str, Any]) -> None:
        raise KeyError("gone")

    flaky = add(queue, "flaky", {"id": "a"}, max_retries=2)
    doomed = add(queue, "doomed", max_retries=0)
    worker = start_worker(
        queue, {"flaky": once_then_ok, "doomed": always},
        dead_letter_queue=dlq, event_handler=rec, retry_policy=RetryPolicy(base_delay=0.0),
    )
    # Callbacks run just after each state change is stored: wait for the events themselves.
    wait_until(lambda: len(rec.for_job(flaky)) == 5)
    wait_until(lambda: len(rec.for_job(doomed)) == 3)

    events = rec.for_job(flaky)
    assert [e[0] for e in events] == ["started", "failed", "retried", "started", "completed"]
    assert events[0][2] == worker.worker_id
    assert isinstance(events[1][2], ValueError)
    _, _, next_at, status, retry_count = events[2]
    assert (status, retry_count) == (JobStatus.PENDING, 1)
    assert next_at == queue.get_job(flaky).scheduled_at
    assert events[4][2:] == ("second try worked", JobStatus.COMPLETED)

    events = rec.for_job(doomed)
    assert [e[0] for e in events] == ["started", "failed", "dead"]
    assert isinstance(events[1][2], KeyError)
    assert events[2][2] is JobStatus.DEAD


def test_raising_event_callbacks_do_not_kill_the_worker(
    start_worker: Callable[..., Worker], caplog: pytest.LogCaptureFixture
) -> None:
    class Exploding(EventHandler):
        def _boom(self, *args: Any) -> None:
            raise RuntimeError("monitoring is down")

        on_job_started = on_job_completed = on_job_failed = _boom
        on_job_retried = on_job_dead = _boom

    caplog.set_level(logging.ERROR, logger="typedq.events")
    queue = JobQueue()

    def fail(payload: dict[str, Any]) -> None:
        raise ValueError("x")

    worker = start_worker(
        queue, {"ok": lambda p: p["n"], "bad": fail},
        event_handler=Exploding(), retry_policy=RetryPolicy(base_delay=0.0),
    )
    bad = add(queue, "bad", max_retries=1)
    ids = [add(queue, "ok", {"n": n}) for n in range(5)]
    wait_until(lambda: all(queue.get_job(i).status is JobStatus.COMPLETED for i in ids))
    wait_until(status_is(queue, bad, JobStatus.DEAD))
    assert [queue.get_job(i).result for i in ids] == list(range(5))
    assert worker.is_alive()
    assert any("monitoring is down" in (r.exc_text or "") or r.exc_info for r in caplog.records)


# -- identity and lifecycle --------------------------------------------------------------


def test_worker_ids_are_unique_per_incarnation() -> None:
    queue = JobQueue()
    workers = [Worker(queue, {}, worker_id="same-name") for _ in range(50)]
    ids = {w.worker_id for w in workers}
    assert len(ids) == 50
    for worker_id in ids:
        assert worker_id.startswith("same-name@")
        assert socket.gethostname() in worker_id
        assert f":{os.getpid()}:" in worker_id
    anonymous = {Worker(queue, {}).worker_id for _ in range(10)}
    assert len(anonymous) == 10


def test_graceful_stop_finishes_the_current_job(
    start_worker: Callable[..., Worker], release: threading.Event
) -> None:
    queue = JobQueue()
    running = threading.Event()

    def slow(payload: dict[str, Any]) -> str:
        running.set()
        release.wait(10)
        return "finished"

    first = add(queue, "slow", priority=9)
    second = add(queue, "slow", priority=1)
    worker = start_worker(queue, {"slow": slow})
    assert running.wait(5)
    assert worker.stop() is False  # still busy: asked to stop, not stopped
    assert worker.stopping
    assert worker.is_alive()
    release.set()
    assert worker.stop(wait=True, timeout=5)
    assert queue.get_job(first).status is JobStatus.COMPLETED
    assert queue.get_job(first).result == "finished"
    assert queue.get_job(second).status is JobStatus.PENDING  # not taken after stop()


def test_stop_wait_joins_an_idle_worker_promptly(start_worker: Callable[..., Worker]) -> None:
    baseline = threading.active_count()
    queue = JobQueue()
    worker = start_worker(queue, {}, poll_interval=5.0)
    wait_until(lambda: threading.active_count() >= baseline + 2)  # the worker and its lease keeper
    began = time.monotonic()
    assert worker.stop(wait=True, timeout=5)
    assert time.monotonic() - began < 1.0  # stop() interrupts the wait: no 5 s poll
    assert not worker.is_alive()
    wait_until(lambda: threading.active_count() <= baseline)


def _thread_cpu(thread: threading.Thread) -> float:
    assert thread.ident is not None
    return time.clock_gettime(time.pthread_getcpuclockid(thread.ident))


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs per-thread CPU clocks")
def test_idle_worker_does_not_spin(start_worker: Callable[..., Worker]) -> None:
    queue = JobQueue()
    worker = start_worker(queue, {}, poll_interval=0.1)
    wait_until(worker.is_alive)
    before = _thread_cpu(worker)
    time.sleep(0.5)  # measuring idle CPU over a real interval, not synchronising
    used = _thread_cpu(worker) - before
    assert used < 0.05, f"idle worker used {used:.3f}s of CPU in 0.5s"


@pytest.mark.skipif(not hasattr(time, "pthread_getcpuclockid"), reason="needs per-thread CPU clocks")
def test_idle_worker_wakes_promptly_on_enqueue(start_worker: Callable[..., Worker]) -> None:
    queue = JobQueue()
    done = threading.Event()
    worker = start_worker(queue, {"ping": lambda p: done.set()}, poll_interval=5.0)
    wait_until(worker.is_alive)
    before = _thread_cpu(worker)
    time.sleep(0.3)  # let it block in wait_ready (measured: it must not burn CPU)
    assert _thread_cpu(worker) - before < 0.03
    began = time.monotonic()
    add(queue, "ping")
    assert done.wait(5)
    assert time.monotonic() - began < 0.5, "the worker waited for its poll interval"


# -- timeouts (G4, thread part) ----------------------------------------------------------


def test_handler_timeout_fails_job_and_worker_moves_on(
    start_worker: Callable[..., Worker], release: threading.Event, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="typedq.worker")
    queue = JobQueue()
    dlq = JobQueue("dead-letter")
    rec = Recorder()
    started_at: list[float] = []

    def hangs(payload: dict[str, Any]) -> str:
        started_at.append(time.monotonic())
        release.wait(30)
        return "too late"

    stuck = add(queue, "hang", timeout_seconds=0.3, max_retries=0, priority=9)
    after = add(queue, "quick", timeout_seconds=5.0, priority=1)
    worker = start_worker(
        queue, {"hang": hangs, "quick": lambda p: "quick done"}, dead_letter_queue=dlq, event_handler=rec
    )
    wait_until(status_is(queue, stuck, JobStatus.DEAD))
    failed_at = time.monotonic()
    wait_until(status_is(queue, after, JobStatus.COMPLETED))

    assert 0.3 - 0.05 <= failed_at - started_at[0] <= 0.3 + 0.3 + 0.2  # poll slack for the wait_until
    job = queue.get_job(stuck)
    assert job.error == f"JobTimeoutError: job {stuck} timed out after 0.3s"
    assert 0.29 <= job.finished_at - job.started_at <= 0.6  # type: ignore[operator]
    failure = next(e[2] for e in rec.for_job(stuck) if e[0] == "failed")
    assert isinstance(failure, JobTimeoutError)
    assert isinstance(failure, TimeoutError)
    assert len(worker.abandoned_threads) == 1
    assert worker.abandoned_threads[0].is_alive()
    assert stuck in worker.abandoned_threads[0].name
    assert queue.get_job(after).result == "quick done"
    assert any(stuck in r.getMessage() and "timeout" in r.getMessage() for r in caplog.records)

    release.set()  # the abandoned thread ends; its late result is discarded
    worker.abandoned_threads[0].join(5)
    assert not worker.abandoned_threads[0].is_alive()
    assert queue.get_job(stuck).status is JobStatus.DEAD
    assert queue.get_job(stuck).result is None


def test_abandoned_threads_lists_the_helpers_still_running_not_every_timeout(
    start_worker: Callable[..., Worker],
) -> None:
    """A worker timing out job after job keeps no finished helper thread (L2's leak: one
    thread object a timeout, for ever)."""
    queue = JobQueue()
    gates = [threading.Event() for _ in range(6)]

    def hangs(payload: dict[str, Any]) -> None:
        gates[payload["n"]].wait(30)

    ids = [
        add(queue, "hang", {"n": n}, timeout_seconds=0.05, max_retries=0, priority=9 - n) for n in range(5)
    ]
    worker = start_worker(queue, {"hang": hangs})
    for job_id in ids:
        wait_until(status_is(queue, job_id, JobStatus.DEAD))
    assert len(worker.abandoned_threads) == 5  # all still running
    helpers = list(worker.abandoned_threads)
    for n in (0, 1, 2):
        gates[n].set()
    for helper in helpers[:3]:
        helper.join(5)
    last = add(queue, "hang", {"n": 5}, timeout_seconds=0.05, max_retries=0)
    wait_until(status_is(queue, last, JobStatus.DEAD))
    assert worker.abandoned_threads == [*helpers[3:], worker.abandoned_threads[-1]]
    assert last in worker.abandoned_threads[-1].name
    for gate in gates:
        gate.set()


def test_handler_within_its_timeout_completes(start_worker: Callable[..., Worker]) -> None:
    queue = JobQueue()
    job_id = add(queue, "t", {"x": 3}, timeout_seconds=5.0)
    worker = start_worker(queue, {"t": lambda p: p["x"] + 1})
    wait_until(status_is(queue, job_id, JobStatus.COMPLETED))
    assert queue.get_job(job_id).result == 4
    assert worker.abandoned_threads == []


# -- A5: BaseException from handlers -----------------------------------------------------


@pytest.mark.parametrize(
    "exc",
    [SystemExit("bye"), KeyboardInterrupt("ctrl-c"), asyncio.CancelledError("cancelled")],
    ids=["SystemExit", "KeyboardInterrupt", "CancelledError"],
)
@pytest.mark.parametrize("timeout", [None, 5.0], ids=["inline", "timeout-thread"])
def test_base_exceptions_fail_the_job_and_spare_the_worker(
    start_worker: Callable[..., Worker], exc: BaseException, timeout: float | None
) -> None:
    queue = JobQueue()
    rec = Recorder()

    def raises(payload: dict[str, Any]) -> None:
        raise exc

    bad = add(queue, "bad", max_retries=1, priority=10, timeout_seconds=timeout)
    worker = start_worker(
        queue, {"bad": raises, "ok": lambda p: p["n"]},
        event_handler=rec, retry_policy=RetryPolicy(base_delay=3600.0),
    )
    wait_until(lambda: queue.get_job(bad).retry_count == 1)
    ids = [add(queue, "ok", {"n": n}, timeout_seconds=timeout) for n in range(10)]
    wait_until(lambda: all(queue.get_job(i).status is JobStatus.COMPLETED for i in ids))

    job = queue.get_job(bad)
    assert job.status is JobStatus.PENDING  # retryable, scheduled an hour away
    assert job.error == f"{type(exc).__name__}: {exc}"
    assert [e[0] for e in rec.for_job(bad)] == ["started", "failed", "retried"]
    assert worker.is_alive()
    assert worker.stop(wait=True, timeout=5)
    assert worker.stats.completed == 10
    assert [queue.get_job(i).result for i in ids] == list(range(10))


# -- H7: no handler ----------------------------------------------------------------------


def test_a_worker_leaves_jobs_it_has_no_handler_for_to_workers_that_have_one(
    start_worker: Callable[..., Worker],
) -> None:
    """A rolling deploy: a worker that does not know a type never buries its jobs."""
    queue = JobQueue()
    dlq = JobQueue("dead-letter")
    rec = Recorder()
    orphan = add(queue, "mystery.type", {"a": 1}, max_retries=3, priority=9)
    known = add(queue, "known", priority=1)
    start_worker(queue, {"known": lambda p: 1}, dead_letter_queue=dlq, event_handler=rec)
    wait_until(status_is(queue, known, JobStatus.COMPLETED))
    job = queue.get_job(orphan)
    assert (job.status, job.attempt, job.error) == (JobStatus.PENDING, 0, None)
    assert dlq.size == 0
    assert rec.for_job(orphan) == []
    # A worker of the new deploy runs it.
    start_worker(queue, {"mystery.type": lambda p: p["a"] + 1}, dead_letter_queue=dlq)
    wait_until(status_is(queue, orphan, JobStatus.COMPLETED))
    assert queue.get_job(orphan).result == 2


def test_a_handler_removed_after_the_claim_sends_the_job_dead_with_a_typed_error(
    start_worker: Callable[..., Worker], caplog: pytest.LogCaptureFixture
) -> None:
    """Handlers are read live: one unregistered between claim and run is a typed error."""
    caplog.set_level(logging.ERROR, logger="typedq.worker")
    queue = JobQueue()
    dlq = JobQueue("dead-letter")
    rec = Recorder()

    class Vanishing(dict[str, Callable[[object], object]]):
        """Offers "mystery.type" to the claim, then no longer has it."""

        def keys(self) -> Any:
            return {"mystery.type", "known"}

    vanishing = Vanishing(known=lambda p: 1)
    orphan = add(queue, "mystery.type", {"a": 1}, max_retries=3)
    known = add(queue, "known", priority=1)
    start_worker(queue, vanishing, dead_letter_queue=dlq, event_handler=rec)
    wait_until(status_is(queue, known, JobStatus.COMPLETED))
    wait_until(status_is(queue, orphan, JobStatus.DEAD))
    job = queue.get_job(orphan)
    assert job.error is not None
    assert job.error.startswith("NoHandlerError: ")
    assert "'mystery.type'" in job.error
    assert "known" in job.error  # names what is registered
    assert dlq.get_job(orphan).error == job.error
    assert dlq.get_job(orphan).payload == {"a": 1}
    assert [e[0] for e in rec.for_job(orphan)] == ["dead"]
    assert any(orphan in r.getMessage() for r in caplog.records)


# -- G5: hostile exceptions --------------------------------------------------------------


class UnprintableError(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ exploded")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ exploded")


def test_exception_whose_str_raises_still_fails_cleanly(start_worker: Callable[..., Worker]) -> None:
    queue = JobQueue()
    dlq = JobQueue("dead-letter")

    def hostile(payload: dict[str, Any]) -> None:
        raise UnprintableError

    bad = add(queue, "hostile", max_retries=0, priority=9)
    retried = add(queue, "hostile", max_retries=1, priority=9)
    good = add(queue, "ok", priority=1)
    worker = start_worker(
        queue, {"hostile": hostile, "ok": lambda p: "ok"},
        dead_letter_queue=dlq, retry_policy=RetryPolicy(base_delay=3600.0),
    )
    wait_until(status_is(queue, good, JobStatus.COMPLETED))
    job = queue.get_job(bad)
    assert job.status is JobStatus.DEAD
    assert job.error is not None
    assert "UnprintableError" in job.error
    assert queue.get_job(retried).status is JobStatus.PENDING
    assert "UnprintableError" in (queue.get_job(retried).error or "")
    assert worker.is_alive()


# -- leases: the reaper (C3 is in tests/conformance/test_heartbeats.py) ----------------


@pytest.fixture
def reaper_for() -> Iterator[Callable[[JobQueue], Reaper]]:
    reapers: list[Reaper] = []

    def _make(queue: JobQueue) -> Reaper:
        reaper = Reaper(lambda: [queue], interval_s=REAPER_S, max_lost=3)
        reapers.append(reaper)
        reaper.start()
        return reaper

    yield _make
    for reaper in reapers:
        reaper.stop()


@pytest.mark.timeout(20)
def test_reaper_reclaims_a_job_whose_lease_is_not_renewed(
    start_worker: Callable[..., Worker],
    reaper_for: Callable[[JobQueue], Reaper],
    release: threading.Event,
    tmp_path: Any,
) -> None:
    queue = JobQueue()
    ledger = Ledger(tmp_path / "ledger")
    started = threading.Event()

    def blocks(payload: dict[str, Any]) -> int:
        job = queue.get_job(payload["id"])
        attempt = job.attempt
        ledger.start(payload["id"], attempt, attempt)
        started.set()
        release.wait(10)
        ledger.end(payload["id"], attempt, attempt)
        return attempt

    job_id = add(queue, "b", {"id": "lost-lease"}, job_id="lost-lease")
    reaper = reaper_for(queue)
    worker = start_worker(queue, {"b": blocks}, lease_s=LEASE_S, heartbeat_s=HEARTBEAT_S)
    assert started.wait(5)
    worker.lease_keeper.forget_all(queue, [job_id])  # as if the heartbeat had died
    lost_at = time.monotonic()
    wait_until(lambda: reaper.reclaimed_total == 1, timeout=LEASE_S + REAPER_S + 2)
    assert time.monotonic() - lost_at <= LEASE_S + REAPER_S + 1.0
    job = queue.get_job(job_id)
    assert (job.status, job.lost_count, job.worker_id) == (JobStatus.PENDING, 1, None)

    release.set()  # the first attempt ends: its result is refused, the job runs again
    wait_until(status_is(queue, job_id, JobStatus.COMPLETED))
    ledger.close()
    job = queue.get_job(job_id)
    assert (job.attempt, job.result) == (2, 2)
    assert worker.stats.stale == 1
    report = check(ledger.path, [job_id], statuses={job_id: job.status}, in_flight_at_kill=[job_id])
    assert report.ok
    assert report.dups == {job_id}
