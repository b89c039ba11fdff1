"""Random runs of mixed transitions on the backend under test and on an in-memory queue, in
lockstep on one clock: every answer must be the same. The in-memory queue is the
reference (on the memory variants the test compares a queue with its twin, which still
catches a codec's copy behaving differently)."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from typedq.backends.base import Queue
from typedq.backends.memory import JobQueue
from typedq.clock import FakeClock
from typedq.errors import TypedqError
from typedq.job import Job, JobStatus
from typedq.policy import ClaimPolicy

_POLICIES = {
    "strict": None,
    "weighted": ClaimPolicy(fairness="weighted"),
    "aging": ClaimPolicy(max_wait_s={"batch": 2.0, "low": 4.0}),
}


@dataclass
class _Run:
    """One queue's side of the run: its random stream, the jobs made, its claims held."""

    rnd: random.Random
    made: int = 0
    running: list[tuple[str, int]] = field(default_factory=list)


def _step(queue: Queue, run: _Run, clock: FakeClock) -> object:
    """One random transition on ``queue``; its answer (ids claimed, a refusal's type)."""
    rnd, running = run.rnd, run.running
    op = rnd.random()
    if op < 0.3:
        made = run.made
        batch = []
        for _ in range(rnd.randint(1, 4)):
            made += 1
            job = Job(job_id=f"j{made:04d}", job_type=rnd.choice("abc"), priority=rnd.randint(1, 10))
            if rnd.random() < 0.2:
                job.scheduled_at = clock.now() + rnd.choice([0.5, 2.0, 5.0])
            batch.append(job)
        run.made = made
        return queue.enqueue_many(batch)
    if op < 0.45 and running:
        job_id, token = running.pop(rnd.randrange(len(running)))
        retry_at = clock.now() + rnd.choice([0.0, 1.0, 4.0])
        return queue.fail(job_id, token=token, error="x", retry_at=retry_at).status
    if op < 0.6 and running:
        job_id, token = running.pop(rnd.randrange(len(running)))
        return queue.complete(job_id, token=token).status
    if op < 0.7 and run.made:
        job_id = f"j{rnd.randint(1, run.made):04d}"
        try:
            if op < 0.65:
                queue.set_priority(job_id, rnd.randint(1, 10))
                return ("priority", job_id)
            answer = queue.cancel(job_id)
        except TypedqError as exc:
            return type(exc).__name__
        run.running = [entry for entry in running if entry[0] != job_id]
        return ("cancel", job_id, answer)
    claims = queue.claim_many(
        "w", lease_s=1e6, limit=rnd.choice([1, 1, 2, 5]), job_types=rnd.choice([None, ["a"], ["b", "c"]])
    )
    running += [(claim.job.job_id, claim.token) for claim in claims]
    return [claim.job.job_id for claim in claims]


@pytest.mark.parametrize("policy", sorted(_POLICIES))
def test_mixed_transitions_answer_as_the_in_memory_queue(queue: Queue, clock: FakeClock, policy: str) -> None:
    """Enqueues (some jobs due later), claims (single and batched, with and without job
    types), completions, failures with retries, priority changes and cancels, 200 steps
    with the clock moving: each step answers the same on both queues, and the counts
    agree at the end."""
    reference = JobQueue("conf", clock=clock)
    for q in (queue, reference):
        q.set_claim_policy(_POLICIES[policy])
    seed = f"lockstep-{policy}"
    runs = [(q, _Run(random.Random(seed))) for q in (queue, reference)]
    for step in range(200):
        clock.advance(random.Random(f"{seed}-{step}").choice([0.0, 0.25, 1.0, 3.0]))
        answers = [_step(q, run, clock) for q, run in runs]
        assert answers[0] == answers[1], f"step {step}"
    assert queue.count_by_status() == reference.count_by_status()


def _failure_step(queue: Queue, dlq: Queue, run: _Run, clock: FakeClock) -> object:
    """One random transition of the failure paths on ``queue`` (dead letters in ``dlq``);
    its answer."""
    rnd, running = run.rnd, run.running
    op = rnd.random()
    pick = f"j{rnd.randint(1, max(run.made, 1)):04d}"
    try:
        if op < 0.25:
            batch = []
            for _ in range(rnd.randint(1, 3)):
                run.made += 1
                job = Job(job_id=f"j{run.made:04d}", job_type=rnd.choice("ab"), priority=rnd.randint(1, 10))
                job.max_retries = rnd.choice([0, 1, 2])
                if run.made > 3 and rnd.random() < 0.3:
                    job.depends_on = [f"j{rnd.randint(1, run.made - 1):04d}"]
                batch.append(job)
            return queue.enqueue_many(batch)
        if op < 0.5 and running:
            job_id, token = running.pop(rnd.randrange(len(running)))
            if op < 0.35:
                retry_at = clock.now() + rnd.choice([0.0, 1.0])
                return queue.fail(job_id, token=token, error="x", retry_at=retry_at).status
            if op < 0.45:
                return queue.complete(job_id, token=token).status
            if op < 0.48:
                return queue.bury(job_id, token=token, error="dead", dead_letter=dlq, dlq_max=5).status
            return queue.release(job_id, token=token).status
        if op < 0.55:
            return queue.retry(pick, with_dependents=rnd.random() < 0.5, dead_letter=dlq)
        if op < 0.58:
            return queue.replay(pick).status
        if op < 0.61:
            queue.delete(pick)
            run.running = [entry for entry in running if entry[0] != pick]
            return ("deleted", pick)
        if op < 0.64:
            statuses = [rnd.choice(list(JobStatus))]
            return queue.purge(statuses=statuses, older_than=clock.now() - 2.0)
        if op < 0.7:
            lost = sorted(queue.reclaim_expired(max_lost=2, dead_letter=dlq, dlq_max=5))
            run.running = [entry for entry in running if entry[0] not in lost]
            return lost
        claims = queue.claim_many("w", lease_s=rnd.choice([2.0, 50.0]), limit=rnd.choice([1, 2, 4]))
        running += [(claim.job.job_id, claim.token) for claim in claims]
        return [claim.job.job_id for claim in claims]
    except TypedqError as exc:
        return type(exc).__name__


def test_failure_paths_answer_as_the_in_memory_queue(
    queue: Queue, store_factory: Callable[[str], Queue], clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Enqueues with dependencies and retry budgets, claims with short and long leases,
    failures with retries, completions, burials into a capped dead-letter queue,
    releases, retries with and without dependents, replays, deletes, purges and lease
    rescues, 300 steps, many at one clock reading: each step answers the same
    on both queues, and at the end both queues and both dead-letter queues hold the
    same jobs in the same states."""
    dlq = store_factory("conf-dead")
    reference, reference_dlq = JobQueue("conf", clock=clock), JobQueue("conf-dead", clock=clock)
    runs = [(q, d, _Run(random.Random("failures"))) for q, d in ((queue, dlq), (reference, reference_dlq))]
    with caplog.at_level(logging.ERROR):  # the dead letters the cap drops are logged
        for step in range(300):
            clock.advance(random.Random(f"failures-{step}").choice([0.0, 0.25, 1.0, 3.0]))
            answers = [_failure_step(q, d, run, clock) for q, d, run in runs]
            assert answers[0] == answers[1], f"step {step}"
    for ours, theirs in ((queue, reference), (dlq, reference_dlq)):
        assert ours.count_by_status() == theirs.count_by_status()
        assert _held(ours) == _held(theirs)


def _held(queue: Queue) -> list[tuple[object, ...]]:
    """What a queue holds, for comparison: each job's id, status, retries and error."""
    return sorted((d["job_id"], d["status"], d["retry_count"], d["error"]) for d in queue.export_jobs())
