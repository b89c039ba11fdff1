"""Claims limited to the job types a worker handles (a rolling deploy must not bury jobs
of types the running workers do not know), and counts of waiting jobs by type."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


@pytest.mark.parametrize("how", ["claim", "claim_many"])
def test_a_claim_takes_only_the_types_it_is_given(queue: Queue, make_job: MakeJob, how: str) -> None:
    queue.enqueue_many(
        [
            make_job(job_id="email-high", job_type="email", priority=9),
            make_job(job_id="resize", job_type="resize", priority=5),
            make_job(job_id="email", job_type="email", priority=3),
            make_job(job_id="report", job_type="report", priority=1),
        ]
    )
    if how == "claim":
        taken = []
        while (claim := queue.claim("w", lease_s=30.0, job_types={"resize", "report"})) is not None:
            taken.append(claim.job.job_id)
    else:
        claims = queue.claim_many("w", lease_s=30.0, limit=10, job_types=["report", "resize"])
        taken = [c.job.job_id for c in claims]
    assert taken == ["resize", "report"]  # best first among the eligible
    assert queue.get_job("email-high").status is JobStatus.PENDING
    assert queue.get_job("email").status is JobStatus.PENDING
    # Any type: the others are still there, in order.
    assert [c.job.job_id for c in queue.claim_many("w", lease_s=30.0, limit=10)] == ["email-high", "email"]


def test_no_types_claims_nothing(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    assert queue.claim("w", lease_s=30.0, job_types=()) is None
    assert queue.claim_many("w", lease_s=30.0, limit=5, job_types=set()) == []
    assert queue.get_job("j").status is JobStatus.PENDING


def test_types_with_no_job_claim_nothing_and_leave_the_rest(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i}", job_type="known") for i in range(5)])
    assert queue.claim("w", lease_s=30.0, job_types={"unknown"}) is None
    assert queue.ready_count() == 5
    assert [c.job.job_id for c in queue.claim_many("w", lease_s=30.0, limit=2, job_types={"known"})] == [
        "j0",
        "j1",
    ]


def test_a_type_filtered_claim_sees_delayed_jobs_once_due(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many(
        [
            make_job(job_id="later", job_type="a", scheduled_at=clock.now() + 10),
            make_job(job_id="other", job_type="b"),
        ]
    )
    assert queue.claim("w", lease_s=30.0, job_types={"a"}) is None
    clock.advance(11)
    claim = queue.claim("w", lease_s=30.0, job_types={"a"})
    assert claim is not None
    assert claim.job.job_id == "later"


def test_count_by_type(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue_many(
        [make_job(job_type="a"), make_job(job_type="a"), make_job(job_type="b"), make_job(job_type="c")]
    )
    claim = queue.claim("w", lease_s=30.0, job_types={"c"})
    assert claim is not None
    assert queue.count_by_type() == {"a": 2, "b": 1}
    assert queue.count_by_type(JobStatus.RUNNING) == {"c": 1}
    assert queue.count_by_type(JobStatus.DEAD) == {}


# -- waiting for the types a worker claims -------------------------------------------------


def test_wait_ready_for_some_types_counts_only_their_jobs(queue: Queue, make_job: MakeJob) -> None:
    """Jobs ready of other types do not end the wait of a worker that cannot claim them
    (it would otherwise claim nothing and wait again at once: a hot loop)."""
    queue.enqueue(make_job(job_id="b1", job_type="b"))
    assert queue.wait_ready(0.05, ["a"]) is False
    assert queue.wait_ready(0.05, []) is False
    assert queue.wait_ready(0.05, ["a", "b"]) is True
    assert queue.wait_ready(0.05) is True  # any type


@pytest.mark.timeout(60)
def test_the_wake_up_of_a_job_goes_to_a_waiter_that_claims_its_type(queue: Queue, make_job: MakeJob) -> None:
    """A waiter for type "a" blocked first must not take the wake-up of a "b" job and
    leave the waiter for "b" asleep until its timeout (30 s here). Each waiter waits
    again after a wake-up that found nothing (which a backend may give: False)."""
    # Both types known to the queue already (Redis: the first job of a new type also
    # wakes a waiter of any list, for waiters for any type).
    queue.enqueue_many([make_job(job_id="a0", job_type="a"), make_job(job_id="b0", job_type="b")])
    assert len(queue.claim_many("w", lease_s=30, limit=2)) == 2
    ready = {"a": threading.Event(), "b": threading.Event()}
    stop = threading.Event()

    def wait(job_type: str) -> None:
        while not stop.is_set():
            if queue.wait_ready(30.0, [job_type]):
                ready[job_type].set()
                return

    # "a" blocks first, then "b": a sleep, as the order only makes the test stricter (a
    # correct backend passes in any order).
    threads = [threading.Thread(target=wait, args=(job_type,), daemon=True) for job_type in ("a", "b")]
    for thread in threads:
        thread.start()
        time.sleep(0.2)
    try:
        # Nothing ready: what signalled a0 and b0 does not outlive them.
        assert not ready["a"].is_set()
        assert not ready["b"].is_set()
        began = time.monotonic()
        queue.enqueue(make_job(job_id="b1", job_type="b"))
        assert ready["b"].wait(10), "the waiter for 'b' was not woken"
        assert time.monotonic() - began < 2.0  # not its timeout (Redis: 5 s, half the socket timeout)
        assert not ready["a"].is_set()
    finally:
        stop.set()
        queue.interrupt()
        for thread in threads:
            thread.join(10)
