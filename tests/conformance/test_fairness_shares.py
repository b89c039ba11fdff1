"""Weighted fairness over 10,000 claims: every level gets its weight's share.

The test moves 10,000 jobs through each backend, so only each backend as it is (no codec,
one handle) runs in the fast tier; its codec and two-handle variants are ``slow`` (the
fixture of ``real_time`` modules).
"""

from __future__ import annotations

from tests.conformance.conftest import claim_levels, make_queue_factory_fixture

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.job import LEVELS, Job
from typedq.policy import DEFAULT_WEIGHTS, ClaimPolicy

queue_factory = make_queue_factory_fixture(real_time=True)


def test_weighted_fairness_serves_each_level_its_share(queue: Queue, clock: FakeClock) -> None:
    """10,000 claims from a backlog of every level: each level within 5% of its weight."""
    queue.set_claim_policy(ClaimPolicy(fairness="weighted"))
    total = sum(DEFAULT_WEIGHTS)
    jobs = [
        Job(job_type="t", priority=int(level), created_at=clock.now())
        for level, weight in zip(LEVELS, DEFAULT_WEIGHTS, strict=True)
        for _ in range(10_000 * weight // total + 40)
    ]
    queue.enqueue_many(jobs)
    got = claim_levels(queue, 10_000)
    for index, weight in enumerate(DEFAULT_WEIGHTS):
        share = got[index] / 10_000
        assert abs(share - weight / total) <= 0.05 * weight / total, (index, got)
