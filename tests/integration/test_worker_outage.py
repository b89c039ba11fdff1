"""Workers, the lease keeper and the reaper through a storage outage, on the in-memory
queue behind a switch that makes every call raise ``BackendUnavailableError`` (as a
Redis server that is down does). The Redis tests (``tests/reliability/test_redis_*``)
prove the same on a real server; these hold the rules on every CI run, in a few seconds:

* a worker backs off (jittered, exponential): no hot loop, one WARNING per outage and
  one INFO when it ends, and it runs jobs again once the storage answers;
* ``stop()`` never raises and never waits on a dead storage; jobs it cannot give back are
  left to their leases after the first failed call, not tried one by one;
* a heartbeat ends at its first failed call; the reaper, after a failed pass, only probes
  until the storage answers, then rescues nothing for ``outage_grace_s``.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from tests.helpers import wait_until
from tests.reliability.faults import Unreachable

from typedq import FakeClock, Job, JobQueue, JobStatus, Reaper, Worker
from typedq._outage import Backoff, Outage
from typedq.errors import BackendUnavailableError
from typedq.leases import LeaseKeeper

pytestmark = pytest.mark.timeout(30)


def _add(queue: JobQueue, job_id: str) -> str:
    return queue.enqueue(Job.create("t", {}, job_id=job_id, now=queue.clock.now()))


# -- the pieces ----------------------------------------------------------------------------


def test_backoff_bounds_double_up_to_the_cap_and_waits_are_jittered_within_them() -> None:
    random.seed(7)
    backoff = Backoff(1.0, 4.0, low=0.1)
    waits = [backoff.next() for _ in range(6)]
    bounds = [1.0, 2.0, 4.0, 4.0, 4.0, 4.0]
    assert all(0.1 * b <= w <= b for w, b in zip(waits, bounds, strict=True)), waits
    assert len({round(w, 6) for w in waits}) == 6  # drawn, not fixed
    backoff.reset()
    assert backoff.next() <= 1.0


def test_an_outage_is_logged_once_and_its_end_once(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("typedq.test-outage")
    outage = Outage(log, "the thing")
    with caplog.at_level(logging.INFO, logger="typedq.test-outage"):
        for _ in range(50):
            outage.failed(BackendUnavailableError("down"), "call")
        outage.ok()
        outage.ok()
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert len(messages) == 2, messages
    assert [level for level, _ in messages] == [logging.WARNING, logging.INFO]
    assert "the thing could not call" in messages[0][1]
    assert "answers again" in messages[1][1]
    assert (outage.failures, outage.outages, outage.active) == (50, 1, False)


# -- workers -------------------------------------------------------------------------------


def test_a_worker_backs_off_through_an_outage_logs_it_once_and_resumes(
    caplog: pytest.LogCaptureFixture, start_worker: Callable[..., Worker]
) -> None:
    inner = JobQueue("q")
    queue = Unreachable(inner)
    queue.down.set()
    done: list[str] = []
    with caplog.at_level(logging.INFO, logger="typedq.worker"):
        worker = start_worker(queue, {"t": lambda p: done.append("x")}, poll_interval=0.01)
        time.sleep(2.0)  # the outage, measured: how often does the worker try?
        tries = [t for t, name, who in queue.calls if who == worker.worker_id and name == "claim"]
        queue.down.clear()
        job_id = _add(inner, "after")
        wait_until(lambda: inner.get_job(job_id).status is JobStatus.COMPLETED, timeout=10)
    # Waits of 0.1-2 s, 0.2-4 s, ...: a handful of attempts in 2 s, where a loop at
    # poll_interval would make 200.
    assert 1 <= len(tries) <= 8, len(tries)
    gaps = [b - a for a, b in itertools.pairwise(tries)]
    assert all(gap >= 0.09 for gap in gaps), gaps
    records = [r for r in caplog.records if worker.worker_id in r.getMessage()]
    assert [r.levelno for r in records] == [logging.WARNING, logging.INFO], [r.getMessage() for r in records]
    assert "could not register" in records[0].getMessage()
    assert records[0].exc_info is None  # no traceback for an outage


def test_stop_during_an_outage_neither_raises_nor_tries_each_job(start_worker: Callable[..., Worker]) -> None:
    inner = JobQueue("q")
    queue = Unreachable(inner)
    started = threading.Event()
    hold = threading.Event()

    def slow(payload: Any) -> None:
        started.set()
        hold.wait(10)

    ids = [_add(inner, f"j{i}") for i in range(5)]
    worker = start_worker(queue, {"t": slow}, batch_size=5)
    # Claim in a batch: the first job was quick once, so the others are claimed together.
    wait_until(started.is_set, message="the first job started")
    held = {job_id for job_id, _ in worker.in_flight()}
    queue.down.set()
    queue.calls.clear()
    assert worker.stop() is False  # interrupt() fails quietly; the handler still runs
    hold.set()
    worker.join(10)
    assert not worker.is_alive()
    releases = [name for _, name, _ in queue.calls if name == "release"]
    assert len(releases) <= 1, queue.calls  # the first failed give-back ends the give-backs
    for job_id in held:
        assert not worker.lease_keeper.is_lost(queue, job_id)  # type: ignore[arg-type]
    assert set(ids) >= held


def test_a_heartbeat_ends_at_its_first_failed_call(caplog: pytest.LogCaptureFixture) -> None:
    inner = JobQueue("q", clock=FakeClock())
    queue = Unreachable(inner)
    keeper = LeaseKeeper(lease_s=1.0, heartbeat_s=0.25)
    for i in range(5):
        _add(inner, f"j{i}")
        claim = inner.claim("w", lease_s=1.0)
        assert claim is not None
        keeper.add(queue, claim.job.job_id, claim.token)  # type: ignore[arg-type]
    renewed: list[str] = []
    keeper.keep_entry("w", lambda: renewed.append("w"))
    queue.down.set()
    with caplog.at_level(logging.INFO, logger="typedq.leases"):
        for _ in range(3):
            keeper.beat()
        queue.down.clear()
        keeper.beat()
    assert [name for _, name, _ in queue.calls] == ["renew_lease"] * 3  # one per beat, not 5
    assert renewed == ["w"]  # only the beat after the outage reached the registry
    assert [r.levelno for r in caplog.records] == [logging.WARNING, logging.INFO]


def test_the_reaper_probes_during_an_outage_then_waits_a_grace_before_rescuing() -> None:
    clock = FakeClock()
    inner = JobQueue("q", clock=clock)
    queue = Unreachable(inner)
    job_id = _add(inner, "j")
    assert inner.claim("w", lease_s=1.0) is not None
    clock.advance(5.0)  # the lease expired: nobody could renew it during the outage
    reaper = Reaper(lambda: [queue], interval_s=0.01, outage_grace_s=0.3)  # type: ignore[list-item]
    queue.down.set()
    assert reaper.sweep() == 0  # fails
    assert reaper.sweep() == 0  # probes only
    assert [name for _, name, _ in queue.calls] == ["reclaim_expired", "ready_count"]
    queue.down.clear()
    back = time.monotonic()
    assert reaper.sweep() == 0  # the storage answers: the grace starts
    assert inner.get_job(job_id).status is JobStatus.RUNNING
    wait_until(lambda: reaper.sweep() == 1, timeout=5, message="the rescue after the grace")
    assert time.monotonic() - back >= 0.3
    assert inner.get_job(job_id).status is JobStatus.PENDING
