"""The in-memory backend's claims under a :class:`~typedq.policy.ClaimPolicy`.

Under the queue's lock, like every transition: the limits are checked against the jobs
RUNNING now (counted per job type as they start and end, never by a walk of them) and
the recent claim times, each level's next claimable job is the top of its
ready heaps (one heap per job type and level), and :func:`~typedq.policy.pick_level`
chooses among them. Strict priority without limits never comes here (the plain claim is
the fast path).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass
from typing import Final

from typedq.backends._memory_state import MemoryState, ReadyEntry
from typedq.job import UNSCHEDULED, Job, JobStatus, level_index
from typedq.policy import ClaimPolicy, Rate, RateWindow, pick_level

__all__ = ["MemoryPolicy"]

_RUNNING: Final = JobStatus.RUNNING


@dataclass(frozen=True, slots=True)
class _Plan:
    """A policy's checks, as a claim walks them: whether it looks at each level's head,
    the types with a concurrency limit (and the limit), those with a rate limit (the
    rate and the type's window of claim times), the queue's rate and window."""

    policy: ClaimPolicy
    by_level: bool
    capped: tuple[tuple[str, int], ...]
    rated: dict[str, tuple[Rate, RateWindow]]
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
        """What a claim under ``policy`` must check, worked out once per policy."""
        plan = self._policy_plan
        if plan is None or plan.policy is not policy:
            limits = policy.limits.items()
            plan = self._policy_plan = _Plan(
                policy=policy,
                by_level=policy.by_level,
                capped=tuple(
                    (t, lim.max_concurrency) for t, lim in limits if lim.max_concurrency is not None
                ),
                rated={t: (lim.rate, self._window(t)) for t, lim in limits if lim.rate is not None},
                window=None if policy.rate is None else (policy.rate, self._window("")),
            )
        return plan

    def _pop_by_policy(
        self, policy: ClaimPolicy, job_types: Collection[str] | None, limit: int, now: float
    ) -> list[Job]:
        """Pop up to ``limit`` jobs as ``policy`` chooses them, limits counted. Lock held."""
        self._promote_due()
        plan = self._plan(policy)
        capped, rated, window = plan.capped, plan.rated, plan.window
        taken: list[Job] = []
        running = self._counts[_RUNNING]
        most = policy.max_concurrency
        by_type: Counter[str] | None = None
        if capped:
            # A copy: the counts claimed in this call are added below, before they are RUNNING.
            by_type = Counter(self._running_types)
        blocked: set[str] = set()
        while len(taken) < limit:
            if most is not None and running >= most:
                break
            if window is not None and not window[1].allows(window[0], now):
                break
            if by_type is not None:
                blocked = {t for t, cap in capped if by_type[t] >= cap}
            if rated:
                blocked.update(t for t, (per, ring) in rated.items() if not ring.allows(per, now))
            if plan.by_level:
                job = self._pop_one(policy, job_types, blocked, now)
            elif blocked:
                # Strict order among the types not blocked: the plain claim's.
                wanted = {key[0] for key in self._ready} if job_types is None else job_types
                job = self._pop_ready([t for t in wanted if t not in blocked])
            else:
                job = self._pop_ready(job_types)
            if job is None:
                break
            taken.append(job)
            running += 1
            job_type = job.job_type
            if by_type is not None:
                by_type[job_type] += 1
            if window is not None:
                window[1].take(window[0], now)
            type_rate = rated.get(job_type)
            if type_rate is not None:
                type_rate[1].take(type_rate[0], now)
        return taken

    def _pop_one(
        self, policy: ClaimPolicy, job_types: Collection[str] | None, blocked: set[str], now: float
    ) -> Job | None:
        """Pop the job ``policy`` chooses among each level's next one (weighted fairness,
        aging), none of a ``blocked`` type. Lock held."""
        jobs = self._jobs
        while True:
            best: list[ReadyEntry | None] = [None] * 5
            heaps: list[list[ReadyEntry] | None] = [None] * 5
            for heap in self._heads(job_types):
                top = heap[0]
                if blocked and jobs[top[4]].job_type in blocked:
                    continue
                level = level_index(-top[0])
                current = best[level]
                if current is None or top < current:
                    best[level], heaps[level] = top, heap
            chosen_level: int | None = pick_level(
                policy,
                [None if top is None else (top[2] if top[1] == UNSCHEDULED else top[1]) for top in best],
                self._fair,
                now,
            )
            if chosen_level is None:
                return None
            chosen = heaps[chosen_level]
            assert chosen is not None  # pick_level chose a level with a head
            job = self._take_top(chosen)
            if job is not None:
                return job

    def _ready_by_level(self) -> list[int]:
        """Ready jobs per level, CRITICAL first. Lock held."""
        self._promote_due()
        out = [0] * 5
        for (_, level), count in self._ready_count.items():
            out[level] += count
        return out

