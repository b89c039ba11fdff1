"""What only the in-memory backend has: tombstones, heap compaction, the reverse index.

Everything a backend must do belongs in tests/conformance; these tests pin the
specification's data-structure promises for ``JobQueue`` (heap + dict + tombstones,
compaction past 25%, completion waking dependents without scanning).
"""

from __future__ import annotations

import random
from typing import Literal

import pytest

from typedq.backends.memory import JobQueue
from typedq.clock import FakeClock
from typedq.job import Job, JobStatus, level_index
from typedq.policy import ClaimPolicy, pick_level


@pytest.fixture
def queue(clock: FakeClock) -> JobQueue:
    return JobQueue("internals", clock=clock)


def _fill(queue: JobQueue, n: int, clock: FakeClock) -> list[str]:
    ids = [f"j{i:04d}" for i in range(n)]
    queue.enqueue_many([Job(job_id=i, job_type="t", created_at=clock.now()) for i in ids])
    return ids


def _drain(queue: JobQueue) -> list[str]:
    taken = []
    while (job := queue.dequeue()) is not None:
        taken.append(job.job_id)
    return taken


def test_cancelled_jobs_become_tombstones_that_are_skipped(queue: JobQueue, clock: FakeClock) -> None:
    ids = _fill(queue, 100, clock)
    cancelled = ids[::10]  # 10 of 100: under the 25% threshold
    for job_id in cancelled:
        assert queue.cancel(job_id)
    assert queue.tombstones == 10
    assert queue.compactions == 0
    assert queue.ready_count() == 90
    assert _drain(queue) == [i for i in ids if i not in cancelled]
    assert queue.tombstones == 0


def test_peek_drops_a_tombstone_on_top(queue: JobQueue, clock: FakeClock) -> None:
    ids = _fill(queue, 5, clock)
    queue.cancel(ids[0])
    assert queue.tombstones == 1
    peeked = queue.peek()
    assert peeked is not None
    assert peeked.job_id == ids[1]
    assert queue.tombstones == 0


def test_the_heap_is_compacted_when_tombstones_pass_25_percent(
    queue: JobQueue, clock: FakeClock
) -> None:
    ids = _fill(queue, 100, clock)
    for job_id in ids[:25]:  # exactly 25%: not past it
        queue.cancel(job_id)
    assert queue.tombstones == 25
    assert queue.compactions == 0
    queue.cancel(ids[25])  # 26 of 100
    assert queue.compactions == 1
    assert queue.tombstones == 0
    assert queue.ready_count() == 74
    assert _drain(queue) == ids[26:]


@pytest.mark.parametrize("how", ["cancel", "hold", "reprioritise", "delete"])
def test_tombstones_never_pass_a_quarter_of_a_big_heap(
    queue: JobQueue, clock: FakeClock, how: str
) -> None:
    ids = _fill(queue, 400, clock)
    for n, job_id in enumerate(ids[:300]):
        if how == "cancel":
            queue.cancel(job_id)
        elif how == "hold":
            queue.update_status(job_id, JobStatus.SCHEDULED)
        elif how == "reprioritise":
            queue.set_priority(job_id, 1 + n % 9 + (n % 9 >= 4))  # never 5, the old value
        else:
            queue.delete(job_id)
        live = queue.ready_count()
        assert queue.tombstones * 3 <= live or live + queue.tombstones < 64, (n, queue.tombstones, live)
    assert queue.compactions >= 1


def test_order_survives_compaction(queue: JobQueue, clock: FakeClock) -> None:
    jobs = [
        Job(job_id=f"p{p}-{i}", job_type="t", priority=p, created_at=clock.now())
        for i in range(80)  # a ready heap per type and level: each must pass the compaction minimum
        for p in (1, 5, 9)
    ]
    queue.enqueue_many(jobs)
    for job in jobs[::2]:
        queue.cancel(job.job_id)
    assert queue.compactions >= 1
    expected = [j.job_id for j in sorted(jobs[1::2], key=lambda j: -j.priority)]
    assert _drain(queue) == expected


def test_update_status_leaves_a_tombstone_instead_of_searching_the_heap(
    queue: JobQueue, clock: FakeClock
) -> None:
    ids = _fill(queue, 10, clock)
    queue.update_status(ids[3], JobStatus.SCHEDULED)
    assert queue.tombstones == 1
    assert queue.ready_count() == 9
    queue.update_status(ids[3], JobStatus.PENDING)
    assert queue.ready_count() == 10
    assert sorted(_drain(queue)) == ids
    assert queue.count_by_status()[JobStatus.RUNNING] == 10


def test_completing_a_parent_releases_ten_thousand_dependents(
    queue: JobQueue, clock: FakeClock
) -> None:
    now = clock.now()
    queue.enqueue(Job(job_id="parent", job_type="t", created_at=now))
    queue.enqueue_many(
        [Job(job_id=f"c{i}", job_type="t", depends_on=["parent"], created_at=now) for i in range(10_000)]
    )
    assert queue.ready_count() == 1
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    queue.complete("parent", token=claim.token)
    assert queue.ready_count() == 10_000
    assert len(queue.claim_many("w", lease_s=30, limit=20_000)) == 10_000


def test_len_contains_and_repr(queue: JobQueue, clock: FakeClock) -> None:
    _fill(queue, 3, clock)
    assert len(queue) == 3
    assert "j0001" in queue
    assert "nope" not in queue
    assert repr(queue) == "JobQueue(name='internals', size=3)"


# -- the queue's own bookkeeping of statuses -------------------------------------------------


@pytest.mark.parametrize("status", [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED])
def test_update_status_works_when_the_caller_already_set_the_status(
    queue: JobQueue, clock: FakeClock, status: JobStatus
) -> None:
    """The queue holds the caller's object: ``job.status = X`` before ``update_status``
    must not make the call a no-op."""
    parent = Job(job_type="t", job_id="p", created_at=clock.now())
    child = Job(job_type="t", job_id="c", depends_on=["p"], created_at=clock.now())
    queue.enqueue_many([parent, child])
    parent.status = status
    queue.update_status("p", status)
    assert queue.dequeue() is (child if status is JobStatus.COMPLETED else None)
    counts = queue.count_by_status()
    assert counts[status] == (2 if status is JobStatus.FAILED else 1)  # a failed parent fails its child
    assert all(count >= 0 for count in counts.values())
    assert counts[JobStatus.PENDING] == 0
    if status is not JobStatus.COMPLETED:
        assert queue.get_job("c").status is JobStatus.FAILED


def test_a_job_whose_caller_changed_its_status_is_never_handed_out(queue: JobQueue, clock: FakeClock) -> None:
    done = Job(job_type="t", job_id="done", created_at=clock.now())
    dependent = Job(job_type="t", job_id="dependent", depends_on=["done"], created_at=clock.now())
    queue.enqueue_many([done, dependent])
    done.status = JobStatus.COMPLETED  # without telling the queue
    assert queue.peek() is dependent  # adopted: done is COMPLETED, its dependent is ready
    got = queue.dequeue()
    assert got is dependent
    assert got.status is JobStatus.RUNNING
    assert queue.count_by_status()[JobStatus.COMPLETED] == 1
    assert queue.count_by_status()[JobStatus.PENDING] == 0


# -- the bounded history --------------------------------------------------------------------


def _complete_next(queue: JobQueue, clock: FakeClock) -> str:
    clock.advance(1)
    claim = queue.claim("w", lease_s=60.0)
    assert claim is not None
    queue.complete(claim.job.job_id, token=claim.token)
    return claim.job.job_id


def test_history_limit_keeps_the_newest_completed_and_cancelled_jobs(clock: FakeClock) -> None:
    queue = JobQueue("h", clock=clock, history_limit=3)
    ids = _fill(queue, 6, clock)
    done = [_complete_next(queue, clock) for _ in range(3)]
    clock.advance(1)
    assert queue.cancel(ids[5])
    assert [j.job_id for j in queue.list_jobs()] == [*done[1:], ids[3], ids[4], ids[5]]
    queue.claim("w", lease_s=60.0)  # RUNNING, PENDING, DEAD and FAILED jobs are not history
    assert queue.size == 5
    assert _complete_next(queue, clock) == ids[4]
    assert [j.job_id for j in queue.list_jobs(status=JobStatus.COMPLETED)] == [done[2], ids[4]]
    assert [j.job_id for j in queue.list_jobs(status=JobStatus.CANCELLED)] == [ids[5]]
    assert queue.get_job(ids[3]).status is JobStatus.RUNNING


def test_history_limit_drops_by_finish_time_even_after_an_import(clock: FakeClock) -> None:
    queue = JobQueue("h", clock=clock, history_limit=2)
    now = clock.now()
    queue.import_jobs(
        [
            Job(job_id=job_id, job_type="t", status=JobStatus.COMPLETED, finished_at=now - age).to_dict()
            for job_id, age in (("recent", 1.0), ("ancient", 100.0))
        ]
    )
    _fill(queue, 1, clock)
    _complete_next(queue, clock)
    assert sorted(j.job_id for j in queue.list_jobs()) == ["j0000", "recent"]


def test_history_limit_is_checked_and_applies_when_lowered(clock: FakeClock) -> None:
    from typedq.errors import ConfigError

    with pytest.raises(ConfigError, match="history_limit"):
        JobQueue("h", history_limit=0)
    queue = JobQueue("h", clock=clock)
    _fill(queue, 4, clock)
    for _ in range(4):
        _complete_next(queue, clock)
    queue.history_limit = 1
    assert [j.job_id for j in queue.list_jobs()] == ["j0003"]


def test_running_jobs_per_type_are_counted_as_they_start_and_end(queue: JobQueue, clock: FakeClock) -> None:
    """Claims under per-type concurrency limits read this counter instead of walking the
    RUNNING jobs: it must follow every way into and out of RUNNING."""
    queue.enqueue_many(
        [Job(job_id=f"{t}{i}", job_type=t, created_at=clock.now()) for t in "ab" for i in range(4)]
    )

    def check() -> int:
        found: dict[str, int] = {}
        for job in queue.list_jobs(status=JobStatus.RUNNING, limit=100):
            found[job.job_type] = found.get(job.job_type, 0) + 1
        assert {t: n for t, n in queue._running_types.items() if n} == found
        return sum(found.values())

    claims = queue.claim_many("w", lease_s=10.0, limit=6)
    dequeued = queue.dequeue()
    assert dequeued is not None
    assert check() == 7
    queue.complete(claims[0].job.job_id, token=claims[0].token)
    queue.fail(claims[1].job.job_id, token=claims[1].token, error="e", retry_at=clock.now())
    queue.bury(claims[2].job.job_id, token=claims[2].token, error="e")
    queue.release(claims[3].job.job_id, token=claims[3].token)
    queue.cancel(claims[4].job.job_id, token=claims[4].token)
    assert check() == 2
    queue.update_status(dequeued.job_id, JobStatus.PENDING)
    assert check() == 1
    clock.advance(11.0)
    queue.reclaim_expired()
    assert check() == 0
    queue.claim_many("w", lease_s=10.0, limit=3)
    assert check() > 0


@pytest.mark.parametrize(
    ("fairness", "max_wait_s"),
    [("weighted", {"low": 30.0, "batch": 50.0}), ("strict", {"low": 30.0, "batch": 50.0}), ("strict", {})],
    ids=["weighted+aging", "aging", "strict"],
)
def test_policy_claims_take_each_levels_head_past_tombstones_and_capped_types(
    fairness: Literal["weighted", "strict"], max_wait_s: dict[str, float], clock: FakeClock
) -> None:
    """A claim under a policy finds each level's next job at the top of the ready heaps
    keyed by (job type, level), never by looking at the jobs: checked against every
    PENDING job sorted, through cancels, priority changes (tombstones), a type at its
    concurrency limit, and claims with and without ``job_types``."""
    policy = ClaimPolicy(fairness=fairness, max_wait_s=max_wait_s, limits={"b": {"max_concurrency": 2}})
    queue = JobQueue("internals", clock=clock)
    queue.set_claim_policy(policy)
    rng = random.Random(7)
    start = clock.now()
    queue.enqueue_many(
        [
            Job(job_id=f"j{i:03d}", job_type="abc"[i % 3], priority=rng.randint(1, 10), created_at=start + i)
            for i in range(300)
        ]
    )
    passes = [0.0] * 6
    running: dict[str, str] = {}
    tokens: dict[str, int] = {}
    while True:
        for _ in range(rng.randint(0, 2)):  # leave tombstones in the heaps
            pending = queue.list_jobs(status=JobStatus.PENDING, limit=1000)
            if pending:
                victim = rng.choice(pending)
                if rng.random() < 0.5:
                    queue.cancel(victim.job_id)
                else:
                    queue.set_priority(victim.job_id, rng.randint(1, 10))
        if running and rng.random() < 0.6:
            done = rng.choice(sorted(running))
            queue.complete(done, token=tokens.pop(done))
            del running[done]
        job_types = rng.choice([None, ("a", "b"), ("b", "c"), ("a", "b", "c")])
        capped = {"b"} if sum(t == "b" for t in running.values()) >= 2 else set()
        heads: list[Job | None] = [None] * 5
        for job in sorted(queue.list_jobs(status=JobStatus.PENDING, limit=1000)):
            level = level_index(job.priority)
            if heads[level] is None and job.job_type not in capped and (
                job_types is None or job.job_type in job_types
            ):
                heads[level] = job
        since = [None if job is None else job.scheduled_at or job.created_at for job in heads]
        level = pick_level(policy, since, passes, clock.now())
        claim = queue.claim("w", lease_s=600.0, job_types=job_types)
        if level is None:
            assert claim is None
            if not queue.list_jobs(status=JobStatus.PENDING, limit=1):
                break
            continue
        expected = heads[level]
        assert claim is not None
        assert expected is not None
        assert claim.job.job_id == expected.job_id
        running[claim.job.job_id] = claim.job.job_type
        tokens[claim.job.job_id] = claim.token
        clock.advance(1.0)
