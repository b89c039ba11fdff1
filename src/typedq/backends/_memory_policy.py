"""The in-memory backend's claims under a :class:`~typedq.policy.ClaimPolicy`.

Under the queue's lock, like every transition: the limits are checked against the jobs
RUNNING now (counted per job type as they start and end, never by a walk of them) and
the recent claim times, each level's next claimable job is the top of its
ready heaps (one heap per job type and level, walked by their keys), and
:func:`~typedq.policy.pick_level` chooses among them, for every policy (strict order
with limits too). Strict priority without limits never comes here (the plain claim is
the fast path).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from typedq.backends._memory_state import MemoryState
from typedq.job import Job, JobStatus
from typedq.policy import ClaimPolicy, Rate, RateWindow, pick_level

__all__ = ["MemoryPolicy"]

_RUNNING: Final = JobStatus.RUNNING


@dataclass(frozen=True, slots=True)
class _Plan:
    """A policy's checks, as a claim walks them: the types with a concurrency limit (and
    the limit), those with a rate limit (the rate and the type's window of claim times;
    also by type, for the claim's record), the queue's rate and window."""

    policy: ClaimPolicy
    capped: tuple[tuple[str, int], ...]
    rated: tuple[tuple[str, Rate, RateWindow], ...]
    rated_by_type: dict[str, tuple[Rate, RateWindow]]
    window: tuple[Rate, RateWindow] | None


class MemoryPolicy(MemoryState):
    """Claims by policy, and the counts per level; the lock is held by callers."""

    def _init_policy(self) -> None:
        self._policy: ClaimPolicy | None = None
        # Weighted fairness: five levels' virtual times, then the queue's.
        self._fair = [0.0] * 6
        # Sliding windows of recent claim times: "" for the queue's rate, else by job type.
        self._windows: dict[str, RateWindow] = {}
        self._policy_plan: _Plan | None = None

    def _window(self, key: str) -> RateWindow:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = RateWindow()
        return window

    def _plan(self, policy: ClaimPolicy) -> _Plan:
        """What a claim under ``policy`` must check, worked out once per policy (kept in
        ``_policy_plan`` until the policy changes)."""
        limits = policy.limits.items()
        rated = tuple((t, lim.rate, self._window(t)) for t, lim in limits if lim.rate is not None)
        plan = self._policy_plan = _Plan(
            policy=policy,
            capped=tuple((t, lim.max_concurrency) for t, lim in limits if lim.max_concurrency is not None),
            rated=rated,
            rated_by_type={t: (rate, ring) for t, rate, ring in rated},
            window=None if policy.rate is None else (policy.rate, self._window("")),
        )
        return plan

    def _pop_by_policy(
        self, policy: ClaimPolicy, job_types: Collection[str] | None, now: float
    ) -> Job | None:
        """Pop the job ``policy`` chooses, or None (nothing ready, or a limit reached), its
        claim counted in the rate windows. Lock held.

        The limits are checked against the jobs RUNNING now: a caller claiming several
        jobs leases each before it pops the next.
        """
        plan = self._policy_plan
        if plan is None or plan.policy is not policy:
            plan = self._plan(policy)
        most = policy.max_concurrency
        if most is not None and self._counts[_RUNNING] >= most:
            return None
        window = plan.window
        if window is not None and not window[1].allows(window[0], now):
            return None
        # Built only when a type is at its limit: most claims find none.
        blocked: set[str] | None = None
        if plan.capped:
            running = self._running_types
            for job_type, cap in plan.capped:
                if running.get(job_type, 0) >= cap:
                    if blocked is None:
                        blocked = set()
                    blocked.add(job_type)
        rated = plan.rated
        for job_type, per, ring in rated:
            if not ring.allows(per, now):
                if blocked is None:
                    blocked = set()
                blocked.add(job_type)
        job = self._pop_one(policy, job_types, blocked, now)
        if job is not None:
            if window is not None:
                window[1].take(window[0], now)
            if rated:
                type_rate = plan.rated_by_type.get(job.job_type)
                if type_rate is not None:
                    type_rate[1].take(type_rate[0], now)
        return job

    def _pop_one(
        self, policy: ClaimPolicy, job_types: Collection[str] | None, blocked: set[str] | None, now: float
    ) -> Job | None:
        """Pop the job ``policy`` chooses among each level's next one, none of a ``blocked``
        type. Lock held.

        Strict order too comes here (a policy with limits only): the best job is the
        best of the first level that has one, as :func:`~typedq.policy.pick_level` picks,
        and walking the heaps by level costs less than comparing all their tops."""
        self._promote_due()
        while True:
            heads, heaps = self._level_heads(job_types, blocked)
            chosen_level = pick_level(policy, heads, self._fair, now)
            if chosen_level is None:
                return None
            heap = heaps[chosen_level]
            assert heap is not None  # pick_level chose a level with a head
            job = self._take_top(heap)
            if job is not None:
                return job

    def _ready_by_level(self) -> list[int]:
        """Ready jobs per level, CRITICAL first. Lock held."""
        self._promote_due()
        out = [0] * 5
        for (_, level), count in self._ready_count.items():
            out[level] += count
        return out

