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
from typing import Final

from typedq.backends._memory_state import MemoryState, ReadyEntry
from typedq.job import UNSCHEDULED, Job, JobStatus, level_index
from typedq.policy import ClaimPolicy, RateWindow, pick_level

__all__ = ["MemoryPolicy"]

_RUNNING: Final = JobStatus.RUNNING


class MemoryPolicy(MemoryState):
    """Claims by policy, and the counts per level; the lock is held by callers."""

    def _init_policy(self) -> None:
        self._policy: ClaimPolicy | None = None
        # Weighted fairness: five levels' virtual times, then the queue's.
        self._fair = [0.0] * 6
        # Sliding windows of recent claim times: "" for the queue's rate, else by job type.
        self._windows: dict[str, RateWindow] = {}

    def _window(self, key: str) -> RateWindow:
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = RateWindow()
        return window

    def _pop_by_policy(
        self, policy: ClaimPolicy, job_types: Collection[str] | None, limit: int, now: float
    ) -> list[Job]:
        """Pop up to ``limit`` jobs as ``policy`` chooses them, limits counted. Lock held."""
        self._promote_due()
        taken: list[Job] = []
        limits = policy.limits
        running = self._counts[_RUNNING]
        # A copy: the counts claimed in this call are added below, before they are RUNNING.
        by_type = Counter(self._running_types) if limits else Counter[str]()
        while len(taken) < limit:
            if policy.max_concurrency is not None and running >= policy.max_concurrency:
                break
            if policy.rate is not None and not self._window("").allows(policy.rate, now):
                break
            blocked = {
                job_type
                for job_type, lim in limits.items()
                if (lim.max_concurrency is not None and by_type[job_type] >= lim.max_concurrency)
                or (lim.rate is not None and not self._window(job_type).allows(lim.rate, now))
            }
            job = self._pop_one(policy, job_types, blocked, now)
            if job is None:
                break
            taken.append(job)
            running += 1
            job_type = job.job_type
            by_type[job_type] += 1
            if policy.rate is not None:
                self._window("").take(policy.rate, now)
            lim = limits.get(job_type)
            if lim is not None and lim.rate is not None:
                self._window(job_type).take(lim.rate, now)
        return taken

    def _pop_one(
        self, policy: ClaimPolicy, job_types: Collection[str] | None, blocked: set[str], now: float
    ) -> Job | None:
        while True:
            best: list[list[ReadyEntry] | None] = [None] * 5
            jobs = self._jobs
            for heap in self._heads(job_types):
                top = heap[0]
                if blocked and jobs[top[4]].job_type in blocked:
                    continue
                level = level_index(-top[0])
                current = best[level]
                if current is None or top < current[0]:
                    best[level] = heap
            chosen_level: int | None
            if policy.by_level:
                heads: list[float | None] = []
                for found in best:
                    if found is None:
                        heads.append(None)
                    else:
                        _, sched, created, _, _ = found[0]
                        heads.append(created if sched == UNSCHEDULED else sched)
                chosen_level = pick_level(policy, heads, self._fair, now)
            else:
                chosen_level = next((i for i, found in enumerate(best) if found is not None), None)
            if chosen_level is None:
                return None
            chosen = best[chosen_level]
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

