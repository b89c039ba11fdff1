"""Management calls racing workers (RELIABILITY.md §4b, M6 and M3), on every backend.

M6: ``cancel()`` is called right after ``enqueue()`` while 4 threads claim and complete.
Each trial ends one of two ways, and ``cancel()``'s return value says which
(``Queue.cancel``'s contract):

* True: the job was still PENDING; it is CANCELLED and no handler ever started it
  (0 ``start`` and 0 ``end`` ledger lines);
* False: a worker got there first. The job is COMPLETED, run exactly once. Either the
  cancel found it RUNNING, and then only ``cancel_requested`` is set, or the job had
  already ended and the cancel left it alone. The two are told apart by
  ``cancel_requested``, and each is checked against when the worker claimed and
  completed the job (the transition must fall inside the cancel call).

A CANCELLED job with an ``end`` line would be a cancel that lost a job's result.

M3: a child is enqueued at the moment its parent completes, 500 pairs; every child runs
once, after its parent, and none is left waiting (see the test).
"""

from __future__ import annotations

import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from tests.reliability.ledger import Ledger, read_entries

from typedq.backends.base import Claim, Queue
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]

TRIALS = 1_000
WORKERS = 4
#: Trials that measure how long a job waits to be claimed, to spread the cancels over it.
CALIBRATION = 30


pytestmark = pytest.mark.usefixtures("switch_threads_often")


@dataclass
class _Times:
    """``perf_counter`` readings taken by the claiming threads, by job id.

    When the ``claim()`` call that got the job began and returned, when ``complete()``
    was called and returned; ``done`` is set once it returned.
    """

    claiming: dict[str, float] = field(default_factory=dict)
    claimed: dict[str, float] = field(default_factory=dict)
    completing: dict[str, float] = field(default_factory=dict)
    completed: dict[str, float] = field(default_factory=dict)
    done: dict[str, threading.Event] = field(default_factory=dict)


def _spin(seconds: float) -> None:
    """Busy-wait: a jitter shorter than a sleep's granularity (not a synchronisation)."""
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


@pytest.mark.timeout(60)
def test_m6_cancel_right_after_enqueue_races_four_claiming_workers(
    queue: Queue, make_job: MakeJob, tmp_path: Path
) -> None:
    ledger = Ledger(tmp_path / "m6.ledger")
    times = _Times()
    stop = threading.Event()
    errors: list[BaseException] = []
    rng = random.Random(6)
    handler_s = [0.0]

    def work(name: str) -> None:
        local = random.Random(name)
        try:
            while not stop.is_set():
                claiming = time.perf_counter()
                claim = queue.claim(name, lease_s=600)
                if claim is None:
                    queue.wait_ready(0.05)
                    continue
                job_id = claim.job.job_id
                times.claimed[job_id] = time.perf_counter()
                times.claiming[job_id] = claiming
                ledger.start(job_id, claim.job.attempt, claim.token)
                _spin(local.uniform(0.0, handler_s[0]))  # a handler that takes a little while
                ledger.end(job_id, claim.job.attempt, claim.token)
                times.completing[job_id] = time.perf_counter()
                queue.complete(job_id, token=claim.token, result=name)
                times.completed[job_id] = time.perf_counter()
                times.done[job_id].set()
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)

    def add(job_id: str) -> float:
        times.done[job_id] = threading.Event()
        queue.enqueue(make_job(job_id=job_id))
        return time.perf_counter()

    threads = [threading.Thread(target=work, args=(f"m6-w{i}",)) for i in range(WORKERS)]
    for thread in threads:
        thread.start()
    try:
        # How long a new job waits for a worker here: the cancels are spread over
        # [0, 2 × that], so that both outcomes (and cancels of RUNNING jobs) occur.
        waits = []
        for i in range(CALIBRATION):
            job_id = f"cal-{i}"
            added = add(job_id)
            assert times.done[job_id].wait(10), f"{job_id} was never completed"
            waits.append(times.claimed[job_id] - added)
        spread = 2 * statistics.median(waits)
        handler_s[0] = spread  # RUNNING long enough for some cancels to find it so

        returned: dict[str, bool] = {}
        called: dict[str, tuple[float, float]] = {}
        for i in range(TRIALS):
            job_id = f"m6-{i:04d}"
            add(job_id)
            _spin(rng.uniform(0.0, spread))
            before = time.perf_counter()
            returned[job_id] = queue.cancel(job_id)
            called[job_id] = (before, time.perf_counter())
            if not returned[job_id]:
                assert times.done[job_id].wait(10), f"{job_id}: cancel() returned False, never completed"
    finally:
        stop.set()
        queue.interrupt()
        for thread in threads:
            thread.join(10)
        ledger.close()
    assert not any(t.is_alive() for t in threads), "a claiming thread hung"
    assert errors == []

    entries = read_entries(ledger.path)
    starts = Counter(e.job_id for e in entries if e.kind == "start")
    ends = Counter(e.job_id for e in entries if e.kind == "end")
    outcomes: Counter[str] = Counter()
    for job_id, cancelled in returned.items():
        job = queue.get_job(job_id)
        before, after = called[job_id]
        if cancelled:
            outcomes["cancelled"] += 1
            assert job.status is JobStatus.CANCELLED, (job_id, job.status)
            assert (starts[job_id], ends[job_id]) == (0, 0), f"{job_id} CANCELLED but its handler ran"
            assert job_id not in times.claimed
            continue
        assert job.status is JobStatus.COMPLETED, (job_id, job.status)
        assert (starts[job_id], ends[job_id]) == (1, 1), job_id
        assert job.attempt == 1
        assert job.result is not None
        assert job.result.startswith("m6-w")
        if job.cancel_requested:
            # Found RUNNING: claim() was called before the cancel returned, and
            # complete() returned after the cancel began.
            outcomes["requested while running"] += 1
            assert times.claiming[job_id] < after, job_id
            assert times.completed[job_id] > before, job_id
        else:
            # Found ended: the worker had called complete() before the cancel returned.
            outcomes["already completed"] += 1
            assert times.completing[job_id] < after, job_id
    assert sum(outcomes.values()) == TRIALS
    # The race was really run: both outcomes happened.
    assert outcomes["cancelled"] > 0, outcomes
    assert outcomes["requested while running"] + outcomes["already completed"] > 0, outcomes
    counts = queue.count_by_status()
    assert counts[JobStatus.CANCELLED] == outcomes["cancelled"]
    assert counts[JobStatus.COMPLETED] == TRIALS + CALIBRATION - outcomes["cancelled"]
    assert counts[JobStatus.RUNNING] == counts[JobStatus.PENDING] == 0


# -- M3: a child enqueued while its parent completes -------------------------------------------

#: Parent/child pairs per backend variant.
M3_PAIRS = 500


@pytest.mark.timeout(60)
def test_m3_a_child_enqueued_while_its_parent_completes_runs_once_after_it(
    queue: Queue, make_job: MakeJob
) -> None:
    """M3: each parent is claimed, then its completion and the enqueue of a child that
    depends on it start together (a barrier per pair), while a third thread claims and
    completes children. Every child runs exactly once, only once its parent is
    COMPLETED (read right after the child's claim), and none is left waiting: a child
    that saw its parent RUNNING must be released by the completion it raced."""
    parents = [make_job(job_id=f"p{i}") for i in range(M3_PAIRS)]
    queue.enqueue_many(parents)
    tokens: dict[str, int] = {}
    while (claim := queue.claim("m3-parents", lease_s=3600, job_types=["task"])) is not None:
        tokens[claim.job.job_id] = claim.token
    assert len(tokens) == M3_PAIRS
    together = threading.Barrier(2)
    racing = threading.Event()
    racing.set()
    errors: list[BaseException] = []
    runs: Counter[str] = Counter()
    early: list[str] = []  # children claimed while their parent was not COMPLETED

    def complete_parents() -> None:
        try:
            for i in range(M3_PAIRS):
                together.wait(10)
                queue.complete(f"p{i}", token=tokens[f"p{i}"])
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    def enqueue_children() -> None:
        try:
            for i in range(M3_PAIRS):
                child = make_job(job_id=f"c{i}", job_type="child", depends_on=[f"p{i}"])
                together.wait(10)
                queue.enqueue(child)
        except BaseException as exc:
            errors.append(exc)

    def take(claim: Claim) -> None:
        job_id = claim.job.job_id
        if queue.get_job("p" + job_id[1:]).status is not JobStatus.COMPLETED:
            early.append(job_id)
        queue.complete(job_id, token=claim.token)
        runs[job_id] += 1

    def run_children() -> None:
        try:
            while racing.is_set():
                claim = queue.claim("m3-children", lease_s=3600, job_types=["child"])
                if claim is not None:
                    take(claim)
        except BaseException as exc:
            errors.append(exc)

    racers = [threading.Thread(target=f) for f in (complete_parents, enqueue_children)]
    runner = threading.Thread(target=run_children)
    for t in (*racers, runner):
        t.start()
    for t in racers:
        t.join(60)
    racing.clear()
    runner.join(60)
    assert not any(t.is_alive() for t in (*racers, runner)), "a thread hung"
    assert errors == []
    while (claim := queue.claim("m3-children", lease_s=3600, job_types=["child"])) is not None:
        take(claim)
    assert early == []
    assert runs == Counter({f"c{i}": 1 for i in range(M3_PAIRS)})
    waiting = [f"c{i}" for i in range(M3_PAIRS) if queue.get_job(f"c{i}").status is not JobStatus.COMPLETED]
    assert waiting == [], f"children left behind: {waiting[:10]}"
