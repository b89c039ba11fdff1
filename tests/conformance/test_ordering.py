"""Which job runs next: priority, then scheduled_at, then created_at, then arrival order.

Also peek, delayed jobs, ready_count, claim_many and set_priority re-ordering.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import InvalidJobError, JobNotFoundError
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def _take(queue: Queue, how: str) -> Job | None:
    """Take the best ready job, by ``dequeue`` or by ``claim``."""
    if how == "dequeue":
        return queue.dequeue()
    claim = queue.claim("worker-1", lease_s=30)
    return None if claim is None else claim.job


def _drain(queue: Queue, how: str) -> list[str]:
    taken = []
    while (job := _take(queue, how)) is not None:
        taken.append(job.job_id)
    return taken


TAKE = pytest.mark.parametrize("how", ["dequeue", "claim"])


@TAKE
def test_higher_priority_first(queue: Queue, make_job: MakeJob, how: str) -> None:
    for prio in (1, 10, 5, 3, 7):
        queue.enqueue(make_job(job_id=f"p{prio}", priority=prio))
    assert _drain(queue, how) == ["p10", "p7", "p5", "p3", "p1"]


@TAKE
def test_then_earlier_scheduled_at_with_none_first(
    queue: Queue, make_job: MakeJob, clock: FakeClock, how: str
) -> None:
    now = clock.now()
    queue.enqueue(make_job(job_id="late", scheduled_at=now - 10))
    queue.enqueue(make_job(job_id="early", scheduled_at=now - 20))
    queue.enqueue(make_job(job_id="due-now", scheduled_at=now))
    queue.enqueue(make_job(job_id="unscheduled"))
    queue.enqueue(make_job(job_id="urgent-late", scheduled_at=now, priority=6))
    assert _drain(queue, how) == ["urgent-late", "unscheduled", "early", "late", "due-now"]


@TAKE
def test_an_unscheduled_job_comes_before_any_schedule_even_at_or_before_the_epoch(
    queue: Queue, make_job: MakeJob, clock: FakeClock, how: str
) -> None:
    now = clock.now()
    queue.enqueue(make_job(job_id="at-zero", scheduled_at=0.0, created_at=now - 20))
    queue.enqueue(make_job(job_id="before-epoch", scheduled_at=-5.0, created_at=now - 10))
    queue.enqueue(make_job(job_id="unscheduled", created_at=now))
    assert _drain(queue, how) == ["unscheduled", "before-epoch", "at-zero"]


@TAKE
def test_then_earlier_created_at(queue: Queue, make_job: MakeJob, clock: FakeClock, how: str) -> None:
    now = clock.now()
    queue.enqueue(make_job(job_id="newest", created_at=now - 1))
    queue.enqueue(make_job(job_id="oldest", created_at=now - 3))
    queue.enqueue(make_job(job_id="middle", created_at=now - 2))
    # scheduled_at outranks created_at
    queue.enqueue(make_job(job_id="scheduled", created_at=now - 9, scheduled_at=now - 0.5))
    assert _drain(queue, how) == ["oldest", "middle", "newest", "scheduled"]


@TAKE
def test_then_arrival_order(queue: Queue, make_job: MakeJob, how: str) -> None:
    ids = [f"fifo-{i:02d}" for i in range(20)]
    for job_id in ids:
        queue.enqueue(make_job(job_id=job_id))  # same priority, schedule and created_at
    assert _drain(queue, how) == ids


def test_arrival_order_holds_within_a_batch(queue: Queue, make_job: MakeJob) -> None:
    ids = [f"b-{i:02d}" for i in reversed(range(10))]
    queue.enqueue_many([make_job(job_id=job_id) for job_id in ids])
    assert _drain(queue, "claim") == ids


def test_peek_shows_the_next_job_without_taking_it(queue: Queue, make_job: MakeJob) -> None:
    assert queue.peek() is None
    queue.enqueue(make_job(job_id="low", priority=2))
    queue.enqueue(make_job(job_id="high", priority=9))
    for _ in range(3):
        peeked = queue.peek()
        assert peeked is not None
        assert peeked.job_id == "high"
    assert queue.get_job("high").status is JobStatus.PENDING
    assert queue.ready_count() == 2
    taken = queue.dequeue()
    assert taken is not None
    assert taken.job_id == "high"
    peeked = queue.peek()
    assert peeked is not None
    assert peeked.job_id == "low"


def test_dequeue_marks_the_job_running_and_counts_the_attempt(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="j"))
    taken = queue.dequeue()
    assert taken is not None
    stored = queue.get_job("j")
    assert stored.status is JobStatus.RUNNING
    assert stored.attempt == 1
    assert queue.dequeue() is None
    assert queue.peek() is None


def test_empty_queue_returns_none_at_once(queue: Queue) -> None:
    assert queue.dequeue() is None
    assert queue.claim("w", lease_s=1) is None
    assert queue.claim_many("w", lease_s=1, limit=5) == []
    assert queue.peek() is None
    assert queue.ready_count() == 0


# -- delayed jobs --------------------------------------------------------------------------


def test_a_delayed_job_is_not_ready_until_its_time(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="later", scheduled_at=clock.now() + 10))
    queue.enqueue(make_job(job_id="done", status=JobStatus.COMPLETED))
    for _ in range(2):
        assert queue.ready_count() == 0
        assert queue.peek() is None
        assert queue.dequeue() is None
        assert queue.claim("w", lease_s=1) is None
        clock.advance(4.5)  # 4.5 s, then 9 s: still early
    clock.advance(1)  # exactly due: scheduled_at <= now is ready
    assert queue.ready_count() == 1
    peeked = queue.peek()
    assert peeked is not None
    assert peeked.job_id == "later"
    claim = queue.claim("w", lease_s=1)
    assert claim is not None
    assert claim.job.job_id == "later"


def test_a_due_delayed_job_competes_by_priority(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    now = clock.now()
    queue.enqueue(make_job(job_id="later-high", scheduled_at=now + 5, priority=9))
    queue.enqueue(make_job(job_id="now-low", priority=1))
    assert _drain(queue, "claim") == ["now-low"]
    queue.enqueue(make_job(job_id="now-low-2", priority=1))
    clock.advance(5)
    assert _drain(queue, "claim") == ["later-high", "now-low-2"]


def test_ready_count_counts_only_runnable_jobs(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    now = clock.now()
    queue.enqueue(make_job(job_id="ready-1"))
    queue.enqueue(make_job(job_id="ready-2"))
    queue.enqueue(make_job(job_id="delayed", scheduled_at=now + 60))
    queue.enqueue(make_job(job_id="blocked", depends_on=["ready-1"]))
    queue.enqueue(make_job(job_id="done", status=JobStatus.COMPLETED))
    queue.enqueue(make_job(job_id="held", status=JobStatus.SCHEDULED))
    assert queue.ready_count() == 2
    claim = queue.claim("w", lease_s=10)
    assert claim is not None
    assert queue.ready_count() == 1
    clock.advance(60)
    assert queue.ready_count() == 2


# -- claim_many ----------------------------------------------------------------------------


def test_claim_many_takes_up_to_limit_best_first(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    for prio in (2, 9, 5, 7, 1):
        queue.enqueue(make_job(job_id=f"p{prio}", priority=prio))
    claims = queue.claim_many("w", lease_s=30, limit=3)
    assert [c.job.job_id for c in claims] == ["p9", "p7", "p5"]
    for claim in claims:
        stored = queue.get_job(claim.job.job_id)
        assert stored.status is JobStatus.RUNNING
        assert stored.worker_id == "w"
        assert claim.token == stored.attempt == 1
        assert claim.lease_until == pytest.approx(clock.now() + 30)
    rest = queue.claim_many("w", lease_s=30, limit=10)
    assert [c.job.job_id for c in rest] == ["p2", "p1"]
    assert queue.claim_many("w", lease_s=30, limit=10) == []


def test_claim_many_with_limit_zero_takes_nothing(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    assert queue.claim_many("w", lease_s=30, limit=0) == []
    assert queue.get_job("j").status is JobStatus.PENDING


# -- set_priority --------------------------------------------------------------------------


def test_set_priority_reorders_a_pending_job(queue: Queue, make_job: MakeJob) -> None:
    for name in ("a", "b", "c"):
        queue.enqueue(make_job(job_id=name))
    queue.set_priority("c", 9)
    queue.set_priority("a", 1)
    assert queue.get_job("c").priority == 9
    peeked = queue.peek()
    assert peeked is not None
    assert peeked.job_id == "c"
    assert _drain(queue, "claim") == ["c", "b", "a"]


def test_set_priority_applies_to_delayed_and_blocked_jobs(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="parent", priority=10))
    queue.enqueue(make_job(job_id="delayed", scheduled_at=clock.now() + 5))
    queue.enqueue(make_job(job_id="blocked", depends_on=["parent"]))
    queue.enqueue(make_job(job_id="plain", priority=5))
    queue.set_priority("delayed", 8)
    queue.set_priority("blocked", 9)
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    assert claim.job.job_id == "parent"
    queue.complete("parent", token=claim.token)
    clock.advance(5)
    assert _drain(queue, "claim") == ["blocked", "delayed", "plain"]


@pytest.mark.parametrize("bad", [0, 11, -1, "5", True, 5.0, None])
def test_set_priority_refuses_out_of_range_values(
    queue: Queue, make_job: MakeJob, bad: object
) -> None:
    queue.enqueue(make_job(job_id="j", priority=4))
    with pytest.raises(InvalidJobError) as info:
        queue.set_priority("j", bad)  # type: ignore[arg-type]  # wrong types on purpose
    assert isinstance(info.value, ValueError)
    assert info.value.field == "priority"
    assert "priority" in str(info.value)
    assert queue.get_job("j").priority == 4


def test_set_priority_of_an_unknown_job_raises(queue: Queue) -> None:
    with pytest.raises(JobNotFoundError, match="ghost"):
        queue.set_priority("ghost", 5)
