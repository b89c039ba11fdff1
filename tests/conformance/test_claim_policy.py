"""Named priority levels, depth per level, and claims under a ClaimPolicy: weighted
fairness between levels, aging (``max_wait_s``), concurrency and rate limits per queue and
per job type, all enforced inside the claim and shared by every handle of the store."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
from tests.conformance.conftest import claim_levels

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import ConfigError, InvalidJobError
from typedq.job import LEVELS, Job, JobStatus, Priority
from typedq.policy import ClaimPolicy, Limit, Rate

MakeJob = Callable[..., Job]


def test_level_names_are_accepted_wherever_a_priority_is(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="a", priority="high"))
    queue.enqueue(make_job(job_id="b", priority="Batch"))
    assert queue.get_job("a").priority == Priority.HIGH == 7
    queue.set_priority("b", "CRITICAL")
    assert queue.get_job("b").priority == 10
    assert queue.claim("w", lease_s=30.0).job.job_id == "b"  # type: ignore[union-attr]
    with pytest.raises(InvalidJobError, match=r"priority.*CRITICAL, HIGH, NORMAL, LOW, BATCH") as info:
        queue.set_priority("a", "urgent")
    assert info.value.field == "priority"
    assert queue.get_job("a").priority == 7


def test_depth_per_level_counts_ready_jobs(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue_many(
        [make_job(priority=p) for p in (10, 9, 9, 8, 5, 6, 1)]
        + [make_job(priority=2, scheduled_at=clock.now() + 60.0)]  # not ready yet
    )
    expected = dict(zip(LEVELS, (3, 1, 2, 0, 1), strict=True))
    assert queue.count_by_priority() == expected
    clock.advance(61.0)
    expected[Priority.BATCH] = 2
    assert queue.count_by_priority() == expected
    queue.claim("w", lease_s=30.0)
    assert queue.count_by_priority()[Priority.CRITICAL] == 2
    assert list(queue.count_by_priority()) == list(LEVELS)


def test_weights_are_configurable_and_an_idle_level_gets_no_burst(queue: Queue, clock: FakeClock) -> None:
    queue.set_claim_policy(ClaimPolicy(fairness="weighted", weights={"critical": 3, "batch": 1}))
    queue.enqueue_many([Job(job_type="t", priority=10, created_at=clock.now()) for _ in range(400)])
    assert claim_levels(queue, 100)[0] == 100  # alone, CRITICAL takes everything
    queue.enqueue_many([Job(job_type="t", priority=1, created_at=clock.now()) for _ in range(200)])
    got = claim_levels(queue, 200)
    # BATCH idled while CRITICAL ran: it gets its 1/4, not the 100 claims it "missed".
    assert got == Counter({0: 150, 4: 50})


def test_strict_priority_stays_the_default(queue: Queue, clock: FakeClock) -> None:
    queue.enqueue_many([Job(job_type="t", priority=p, created_at=clock.now()) for p in (1, 10, 5) * 20])
    assert queue.claim_policy is None
    assert claim_levels(queue, 20) == Counter({0: 20})
    queue.set_claim_policy(ClaimPolicy())  # the strict policy: the same as none
    assert queue.claim_policy is None


def test_a_job_waiting_past_its_levels_bound_is_served_next(queue: Queue, clock: FakeClock) -> None:
    queue.set_claim_policy(ClaimPolicy(max_wait_s={"batch": 60.0, "low": 30.0}))
    start = clock.now()
    queue.enqueue_many([Job(job_type="t", priority=10, created_at=start) for _ in range(50)])
    queue.enqueue(Job(job_id="old-batch", job_type="t", priority=1, created_at=start))
    queue.enqueue(Job(job_id="old-low", job_type="t", priority=3, created_at=start + 20.0))
    assert queue.claim("w", lease_s=60.0).job.priority == 10  # type: ignore[union-attr]
    clock.advance(55.0)  # low waited 35 s (5 over), batch 55 s (under)
    assert queue.claim("w", lease_s=60.0).job.job_id == "old-low"  # type: ignore[union-attr]
    assert queue.claim("w", lease_s=60.0).job.priority == 10  # type: ignore[union-attr]
    clock.advance(10.0)  # batch: 65 s
    assert queue.claim("w", lease_s=60.0).job.job_id == "old-batch"  # type: ignore[union-attr]
    assert queue.claim("w", lease_s=60.0).job.priority == 10  # type: ignore[union-attr]


@pytest.mark.parametrize("payments", ["payments", "pay'ments; --"])
def test_a_job_type_concurrency_limit_holds_across_claims(
    queue: Queue, clock: FakeClock, payments: str
) -> None:
    """A type's limit holds across claims and workers, whatever its name (one with a
    quote too: a store may write the name into its claim statement)."""
    queue.set_claim_policy(ClaimPolicy(limits={payments: Limit(max_concurrency=2)}))
    queue.enqueue_many(
        [Job(job_id=f"p{i}", job_type=payments, priority=9, created_at=clock.now()) for i in range(6)]
        + [Job(job_id=f"e{i}", job_type="email", priority=1, created_at=clock.now()) for i in range(3)]
    )
    first = queue.claim_many("w1", lease_s=60.0, limit=10)
    assert sorted(c.job.job_id for c in first) == ["e0", "e1", "e2", "p0", "p1"]
    for who in ("w2", "w3"):  # other workers: nothing, the limit is the store's
        assert queue.claim(who, lease_s=60.0) is None
        assert queue.claim_many(who, lease_s=60.0, limit=5, job_types=[payments]) == []
    payment = next(c for c in first if c.job.job_type == payments)
    queue.complete(payment.job.job_id, token=payment.token)
    again = queue.claim_many("w2", lease_s=60.0, limit=5, job_types=[payments, "email"])
    assert [c.job.job_id for c in again] == ["p2"]
    # A job that fails back to PENDING (or is rescued) frees its place too.
    queue.fail("p2", token=again[0].token, error="boom", retry_at=clock.now() + 100.0)
    assert [c.job.job_id for c in queue.claim_many("w3", lease_s=60.0, limit=5)] == ["p3"]


def test_running_jobs_claimed_before_the_policy_count(queue: Queue, clock: FakeClock) -> None:
    queue.enqueue_many([Job(job_type="payments", created_at=clock.now()) for _ in range(5)])
    queue.claim_many("w", lease_s=60.0, limit=3)
    queue.set_claim_policy(ClaimPolicy(limits={"payments": {"max_concurrency": 3}}))
    assert queue.claim("w", lease_s=60.0) is None


def test_a_queue_concurrency_limit(queue: Queue, clock: FakeClock) -> None:
    queue.set_claim_policy(ClaimPolicy(max_concurrency=3, fairness="weighted"))
    queue.enqueue_many([Job(job_type=t, created_at=clock.now()) for t in ("a", "b") * 5])
    claims = queue.claim_many("w", lease_s=60.0, limit=10)
    assert len(claims) == 3
    assert queue.claim("w2", lease_s=60.0) is None
    queue.complete(claims[0].job.job_id, token=claims[0].token)
    assert len(queue.claim_many("w2", lease_s=60.0, limit=10)) == 1
    assert queue.count_by_status()[JobStatus.RUNNING] == 3


def test_rate_limits_are_a_sliding_window(queue: Queue, clock: FakeClock) -> None:
    queue.set_claim_policy(ClaimPolicy(limits={"sms": Limit(rate=Rate.parse("3/m"))}, rate="5/h"))
    queue.enqueue_many(
        [Job(job_type="sms", priority=9, created_at=clock.now()) for _ in range(10)]
        + [Job(job_type="mail", priority=1, created_at=clock.now()) for _ in range(10)]
    )
    first = queue.claim_many("w", lease_s=600.0, limit=4)
    assert Counter(c.job.job_type for c in first) == Counter({"sms": 3, "mail": 1})
    clock.advance(59.0)
    assert [c.job.job_type for c in queue.claim_many("w", lease_s=600.0, limit=5)] == ["mail"]
    clock.advance(1.0)  # the first three sms claims are now a minute old; the queue's 5/h is used up
    assert queue.claim("w", lease_s=600.0) is None
    clock.advance(3600.0)
    assert Counter(c.job.job_type for c in queue.claim_many("w", lease_s=600.0, limit=10)) == Counter(
        {"sms": 3, "mail": 2}
    )


def test_many_threads_never_exceed_a_limit_and_reach_it(queue: Queue, clock: FakeClock) -> None:
    """8 threads claim and complete 60 jobs of a type limited to 2: at most 2 RUNNING at
    any time, and 2 at once (counted by the claimants while each job surely is RUNNING:
    from its claim's return to its completion's call)."""
    queue.set_claim_policy(ClaimPolicy(limits={"payments": Limit(max_concurrency=2)}))
    queue.enqueue_many([Job(job_type="payments", created_at=clock.now()) for _ in range(60)])
    lock = threading.Lock()
    running, peak, done = 0, 0, 0

    def work(index: int) -> None:
        nonlocal running, peak, done
        while True:
            claim = queue.claim(f"w{index}", lease_s=60.0, job_types=["payments"])
            if claim is None:
                with lock:
                    if done == 60:
                        return
                continue
            with lock:
                running += 1
                peak = max(peak, running)
            time.sleep(0.002)  # the job runs: other threads claim meanwhile
            with lock:
                running -= 1
                done += 1
            queue.complete(claim.job.job_id, token=claim.token)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60.0)
    assert done == 60
    assert peak == 2
    assert queue.count_by_status()[JobStatus.COMPLETED] == 60
    # Reached: two claims without completing take two jobs, and a third takes none.
    queue.enqueue_many([Job(job_type="payments", created_at=clock.now()) for _ in range(3)])
    assert queue.claim("a", lease_s=60.0) is not None
    assert queue.claim("b", lease_s=60.0) is not None
    assert queue.claim("c", lease_s=60.0) is None


def test_bad_policies_are_refused_naming_the_field() -> None:
    with pytest.raises(ConfigError, match="fairness"):
        ClaimPolicy(fairness="fair")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="rate"):
        ClaimPolicy(rate="100 per minute")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"limits\.pay\.max_concurrency"):
        ClaimPolicy(limits={"pay": {"max_concurrency": 0}})
    with pytest.raises(ConfigError, match="weights"):
        ClaimPolicy(weights={"urgent": 3})  # type: ignore[dict-item]
    with pytest.raises(ConfigError, match="max_wait_s"):
        ClaimPolicy(max_wait_s={"low": -1.0})  # type: ignore[arg-type]
    assert Rate.parse("100/m") == Rate(100, 60.0)
    assert Rate.parse("10/5s") == Rate(10, 5.0)


_MIXED_POLICIES = {
    "weighted+limits": ClaimPolicy(
        fairness="weighted",
        max_concurrency=6,
        rate="20/10s",
        limits={"a": {"max_concurrency": 2, "rate": "5/7s"}},
    ),
    "aging+limits": ClaimPolicy(
        max_wait_s={"batch": 3.0, "low": 5.0}, max_concurrency=5, limits={"b": {"rate": "3/4s"}}
    ),
    "rates": ClaimPolicy(rate="40/3s", limits={"b": {"rate": "17/2s"}, "c": {"rate": "3/1s"}}),
    # Windows of 16-31 claims over long periods, which one batch of 25 can fill: a claim
    # late in a batch is checked against claims made early in it.
    "small windows": ClaimPolicy(rate="16/20s", limits={"a": {"rate": "18/9s"}, "b": {"rate": "31/40s"}}),
    "weighted+aging+limits": ClaimPolicy(
        fairness="weighted", max_wait_s={"batch": 3.0}, rate="10/5s", limits={"c": {"max_concurrency": 1}}
    ),
}


@pytest.mark.parametrize("name", sorted(_MIXED_POLICIES))
def test_policy_claims_match_the_in_memory_queue_step_by_step(
    queue: Queue, clock: FakeClock, name: str
) -> None:
    """The same random run of claims (single and batched, with and without job types),
    completions and clock steps on the backend under test and on an in-memory queue, in
    lockstep on one clock: every claim takes the same jobs in the same order. A choice
    that differs anywhere (fairness state, aging, a limit, the order of a batch) shows."""
    from typedq.backends.memory import JobQueue

    policy = _MIXED_POLICIES[name]
    reference = JobQueue("conf", clock=clock)
    rnd = random.Random(name)
    jobs = [
        Job(
            job_id=f"j{i:03d}", job_type=rnd.choice("abc"), priority=rnd.randint(1, 10),
            created_at=clock.now() + i * 0.001,
        )
        for i in range(150)
    ]
    running: list[tuple[str, int, int]] = []
    queues: tuple[Queue, Queue] = (queue, reference)
    for q in queues:
        q.set_claim_policy(policy)
        q.enqueue_many([Job.from_dict(job.to_dict()) for job in jobs])
    for step in range(150):
        clock.advance(rnd.choice([0.0, 0.25, 0.5, 2.0]))
        if running and rnd.random() < 0.5:
            job_id, token, ref_token = running.pop(rnd.randrange(len(running)))
            queue.complete(job_id, token=token)
            reference.complete(job_id, token=ref_token)
        limit = rnd.choice([1, 1, 3, 25])
        types = rnd.choice([None, ["a", "b"], ["c"], ["a", "b", "c"]])
        got, expected = (
            q.claim_many("w", lease_s=1e6, limit=limit, job_types=types) for q in queues
        )
        assert [c.job.job_id for c in got] == [c.job.job_id for c in expected], f"step {step}"
        running += [(c.job.job_id, c.token, e.token) for c, e in zip(got, expected, strict=True)]
