"""The in-memory backend's bookkeeping: where each job is, and what moves it.

Every job lives in a dict keyed by id (O(1) lookup and status updates). The queue keeps
each job's status in its own table (``_status``), never trusting ``job.status``: the
queue holds the caller's ``Job`` objects, and a caller may assign ``job.status`` itself.
Such a change is adopted (counts, indexes and dependents fixed) the next time the queue
meets the job, and a job whose own status is no longer PENDING is never handed out.

A PENDING job is in exactly one of three places:

* a *ready heap*, one per job type and priority level (so a claim limited to some types
  never walks the jobs of other types, and a claim policy finds each level's next job
  at a heap's top), ordered like ``Job.__lt__``: higher priority, then earlier
  ``scheduled_at``, then earlier ``created_at``, then arrival order; a claim compares
  the heads of the heaps it may take from;
* the *delayed heap*, ordered by due time, for jobs whose ``scheduled_at`` is in the
  future; due jobs move to a ready heap before every read of them;
* the *blocked* table, for jobs with unfinished dependencies, each with a counter of
  dependencies not yet COMPLETED. A reverse index (dependency → dependents) lets a
  completion release exactly its dependents, never scanning all jobs.

A job that ended (COMPLETED, FAILED, DEAD, CANCELLED) with a ``finished_at`` is also in
its status's *finished* table, in the order jobs finished: ``purge`` and the history limit
take the oldest from its front without scanning. A table whose order an import broke (a
job added with an older ``finished_at`` than the newest there) is sorted again before it
is next read. Completions are not checked (the hot path): they finish in the order of the
clock's readings, so only a wall clock set back can put one out of order, which at worst
delays the purge of the jobs behind it by that jump.

A job that leaves a heap other than by being popped (cancelled, re-prioritised, status
changed) is not searched for: its heap entry becomes a *tombstone*, recognised by a stale
sequence number and skipped when popped. A heap is compacted when tombstones pass 25% of
it. One lock guards everything and is held only for the bookkeeping, never while a
handler runs.
"""

from __future__ import annotations

import heapq
import itertools
import math
import threading
import weakref
from collections import Counter
from collections.abc import Collection
from typing import Final

from typedq.clock import Clock
from typedq.errors import JobNotFoundError, StaleLeaseError
from typedq.job import TERMINAL_STATUSES, UNSCHEDULED, Job, JobLogLine, JobStatus, level_index

__all__ = ["FAILING", "HISTORY", "HeapKey", "MemoryState", "ReadyEntry"]

_PENDING: Final = JobStatus.PENDING
_RUNNING: Final = JobStatus.RUNNING
_COMPLETED: Final = JobStatus.COMPLETED
#: Statuses that fail the jobs waiting on a job.
FAILING: Final = frozenset({JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED})
#: The statuses ``history_limit`` bounds (as the manager's ``result_ttl`` purges them).
HISTORY: Final = (JobStatus.COMPLETED, JobStatus.CANCELLED)
#: Compaction is not worth it for tiny heaps.
_COMPACT_MIN: Final = 64

#: A ready-heap entry: (-priority, scheduled_at or UNSCHEDULED, created_at, seq, job_id).
ReadyEntry = tuple[int, float, float, int, str]
#: A ready heap's key: (job type, priority level index, 0 CRITICAL .. 4 BATCH).
HeapKey = tuple[str, int]
#: The priority levels' indexes, CRITICAL first.
_LEVELS: Final = range(5)
#: Creation ranks of queues: the order two queues' locks are taken in (``_memory_dead``).
_RANKS: Final = itertools.count()


class MemoryState:
    """The indexes of one in-memory queue and the moves between them; lock held by callers.

    Args:
        name: the queue's name (for errors).
        clock: the time source.
    """

    def __init__(self, name: str, clock: Clock) -> None:
        self._name = name
        self._clock = clock
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        # The queue's own view of each job's status (see the module docstring).
        self._status: dict[str, JobStatus] = {}
        self._seq = itertools.count()
        self._ready: dict[HeapKey, list[ReadyEntry]] = {}
        # job id -> seq of its live entry in its ready heap; live entries per heap.
        self._ready_live: dict[str, int] = {}
        self._ready_count: dict[HeapKey, int] = {}
        # delayed heap entries: (due, seq, job_id)
        self._delayed: list[tuple[float, int, str]] = []
        self._delayed_live: dict[str, int] = {}
        self._blocked: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        # RUNNING job id -> its claim group: the number of the claim_many that took it
        # with others (0: claimed alone), to tell a batch's jobs at a rescue.
        self._running: dict[str, int] = {}
        # RUNNING job id -> its lease deadline by the clock's monotonic reading, set by
        # each claim and renewal: the reaper judges a lease by it, so a step of the wall
        # clock neither rescues a live job nor keeps a dead worker's (see reclaim_expired).
        self._lease_mono: dict[str, float] = {}
        self._claim_groups = itertools.count(1)
        # RUNNING jobs per job type (kept with _running: see _add_running), for claims
        # under per-type concurrency limits.
        self._running_types: Counter[str] = Counter()
        # Jobs ever submitted, per job type (Queue.count_submitted): only grows.
        self._submitted: Counter[str] = Counter()
        # PENDING jobs rescued from a batch whose worker died: while any waits, claims
        # take one job at a time (see Queue.reclaim_expired).
        self._alone: set[str] = set()
        self._counts: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        # Threads blocked in wait_ready for any job type; notify() is skipped when there
        # are none (it costs microseconds on the enqueue hot path). Those waiting for some
        # types only wait on a condition of their own (on the same lock), with the types
        # (see _wake_one).
        self._waiting = 0
        self._typed_waiters: dict[threading.Condition, frozenset[str]] = {}
        self._compactions = 0
        # Dead letters (see _memory_dead): the lock order, the dead letters dropped by
        # the cap, and the queues that sent dead letters here, by name.
        self._rank = next(_RANKS)
        self._dropped = 0
        self._senders: weakref.WeakValueDictionary[str, MemoryState] = weakref.WeakValueDictionary()
        # Jobs that ended, per status, in the order they finished (see the module
        # docstring): the latest finished_at added, and the tables whose order broke.
        self._finished: dict[JobStatus, dict[str, None]] = {s: {} for s in TERMINAL_STATUSES}
        self._fin_unsorted: set[JobStatus] = set()
        # COMPLETED's table, for the completion hot path (no enum lookup).
        self._done = self._finished[_COMPLETED]
        # The most COMPLETED and CANCELLED jobs kept (None: no limit).
        self._history_limit: int | None = None
        # Job logs (JobContext.log), by job id; forgotten with the job.
        self._logs: dict[str, list[JobLogLine]] = {}

    # -- storing ------------------------------------------------------------------------

    def _insert(self, job: Job) -> None:
        """Store a validated job and index it by its status. Lock held.

        ``job.queue`` is left as the submitter set it: a dead-letter queue keeps the name
        of the queue each dead job came from.
        """
        job_id = job.job_id
        self._jobs[job_id] = job
        status = self._status[job_id] = job.status
        self._counts[status] += 1
        if status is _PENDING:
            if job.run_alone:
                self._alone.add(job_id)
            self._place(job)
        elif status is _RUNNING:
            self._add_running(job)
        elif job.finished_at is not None:
            self._finish(job, status)

    # -- jobs that ended ----------------------------------------------------------------

    def _finish(self, job: Job, status: JobStatus) -> None:
        """Record that ``job`` (with its ``finished_at``) ended in ``status``. Lock held.

        Past ``history_limit`` COMPLETED and CANCELLED jobs, the oldest go.
        """
        finished = job.finished_at
        assert finished is not None
        table = self._finished[status]
        if table and status not in self._fin_unsorted:
            newest = self._jobs.get(next(reversed(table)))
            if newest is not None and finished < _finished_at(newest):
                self._fin_unsorted.add(status)  # an older job added late: sort before reading
        table[job.job_id] = None
        if self._history_limit is not None and status in HISTORY:
            self._trim_history()

    def _trim_history(self) -> None:
        """Forget the COMPLETED and CANCELLED jobs that finished first, past
        ``history_limit``. Lock held."""
        limit = self._history_limit
        if limit is None:
            return
        done, cancelled = self._done, self._finished[JobStatus.CANCELLED]
        while len(done) + len(cancelled) > limit:
            first = self._oldest_finished(_COMPLETED)
            if cancelled:
                other = self._oldest_finished(JobStatus.CANCELLED)
                if first is None or (other is not None and _finished_at(other) < _finished_at(first)):
                    first = other
            assert first is not None
            self._remove(first)

    def _oldest_finished(self, status: JobStatus) -> Job | None:
        """The job of ``status`` that finished first, or None. Lock held."""
        table = self._finished[status]
        if status in self._fin_unsorted:
            jobs = self._jobs
            order = sorted(table, key=lambda job_id: _finished_at(jobs[job_id]))
            table.clear()
            table.update(dict.fromkeys(order))
            self._fin_unsorted.discard(status)
        return self._jobs[next(iter(table))] if table else None

    # -- placing PENDING jobs -----------------------------------------------------------

    def _place(self, job: Job) -> None:
        """Put a PENDING job where it belongs: blocked, delayed or ready. Lock held."""
        if job.depends_on:
            unfinished: list[str] = []
            status = self._status
            for dep_id in job.depends_on:
                dep_status = status.get(dep_id)
                if dep_status is None:
                    self._fail_dependents_of_job(job, dep_id, "missing")
                    return
                if dep_status is _COMPLETED:
                    continue
                if dep_status in FAILING:
                    self._fail_dependents_of_job(job, dep_id, dep_status)
                    return
                unfinished.append(dep_id)
            if unfinished:
                # Indexed only once the job is known to wait: each (dependency, job) edge
                # is in the reverse index exactly once while the job is blocked.
                for dep_id in unfinished:
                    self._dependents.setdefault(dep_id, []).append(job.job_id)
                self._blocked[job.job_id] = len(unfinished)
                return
        self._schedule(job)

    def _fail_dependents_of_job(self, job: Job, dep_id: str, dep_status: object) -> None:
        job.error = f"dependency {dep_id} is {dep_status}"
        job.finished_at = self._clock.now()
        self._set_status(job, JobStatus.FAILED)
        self._fail_dependents(job.job_id)

    def _schedule(self, job: Job) -> None:
        """Put an unblocked PENDING job on the delayed heap or its ready heap. Lock held."""
        sched = job.scheduled_at
        seq = next(self._seq)
        if sched is not None and sched > self._clock.now():
            self._delayed_live[job.job_id] = seq
            heapq.heappush(self._delayed, (sched, seq, job.job_id))
            return
        self._ready_live[job.job_id] = seq
        key = (job.job_type, level_index(job.priority))
        heap = self._ready.get(key)
        if heap is None:
            heap = self._ready[key] = []
            self._ready_count[key] = 0
        self._ready_count[key] += 1
        heapq.heappush(
            heap, (-job.priority, UNSCHEDULED if sched is None else sched, job.created_at, seq, job.job_id)
        )

    def _unplace(self, job: Job) -> None:
        """Take a PENDING job out of whatever index holds it (tombstoning heap entries)."""
        job_id = job.job_id
        if self._ready_live.pop(job_id, None) is not None:
            key = (job.job_type, level_index(job.priority))
            self._ready_count[key] -= 1
            self._maybe_compact(key)
        elif self._delayed_live.pop(job_id, None) is None and self._blocked.pop(job_id, 0):
            # Drop the job's edges from the reverse index, so placing it again later
            # cannot count a dependency twice.
            for dep_id in job.depends_on:
                waiting = self._dependents.get(dep_id)
                if waiting is not None and job_id in waiting:
                    waiting.remove(job_id)
                    if not waiting:
                        del self._dependents[dep_id]

    def _promote_due(self) -> None:
        """Move due jobs from the delayed heap to their ready heaps. Lock held."""
        delayed = self._delayed
        if not delayed:
            return
        now = self._clock.now()
        live = self._delayed_live
        jobs = self._jobs
        while delayed and delayed[0][0] <= now:
            _, seq, job_id = heapq.heappop(delayed)
            if live.get(job_id) == seq:
                del live[job_id]
                self._schedule(jobs[job_id])

    def _maybe_compact(self, key: HeapKey) -> None:
        heap = self._ready[key]
        if len(heap) >= _COMPACT_MIN and (len(heap) - self._ready_count[key]) * 4 > len(heap):
            live = self._ready_live
            alive = [e for e in heap if live.get(e[4]) == e[3]]
            heapq.heapify(alive)
            self._ready[key] = alive
            self._compactions += 1

    def _heads(self, job_types: Collection[str] | None) -> list[list[ReadyEntry]]:
        """The ready heaps a claim may take from, each with a live entry on top. Lock held."""
        ready = self._ready
        if job_types is None:
            heaps = list(ready.values())
        else:
            heaps = [
                heap for job_type in job_types for level in range(5) if (heap := ready.get((job_type, level)))
            ]
        live = self._ready_live
        found = []
        for heap in heaps:
            while heap and live.get(heap[0][4]) != heap[0][3]:
                heapq.heappop(heap)  # a tombstone on top
            if heap:
                found.append(heap)
        if len(found) < len(heaps) and job_types is None:
            self._forget_empty()
        return found

    def _forget_empty(self) -> None:
        """Forget the heaps of types that have no ready job left. Lock held."""
        ready = self._ready
        for key in [k for k, heap in ready.items() if not heap]:
            del ready[key], self._ready_count[key]

    def _level_heads(
        self, job_types: Collection[str] | None, blocked: set[str] | None
    ) -> tuple[list[float | None], list[list[ReadyEntry] | None]]:
        """Per level, its next job among the heaps a claim may take from (of ``job_types``,
        none of a ``blocked`` type): when it became due (its ``scheduled_at``, else its
        ``created_at``) and the heap it tops; None where a level has none. As
        :meth:`_heads`, tombstones on top are dropped; a heap's key tells its entries'
        level and job type, so no job is looked up. Lock held."""
        since: list[float | None] = [None] * 5
        heaps: list[list[ReadyEntry] | None] = [None] * 5
        if job_types is None:
            self._forget_empty()
            job_types = {job_type for job_type, _ in self._ready}
        get = self._ready.get
        live = self._ready_live
        for level in _LEVELS:
            best: ReadyEntry | None = None
            for job_type in job_types:
                heap = get((job_type, level))
                if heap:
                    top = heap[0]
                    if live.get(top[4]) != top[3]:
                        live_top = self._live_top(heap)
                        if live_top is None:
                            continue
                        top = live_top
                    if blocked is not None and job_type in blocked:
                        continue
                    if best is None or top < best:
                        best, heaps[level] = top, heap
            if best is not None:
                since[level] = best[2] if best[1] == UNSCHEDULED else best[1]
        return since, heaps

    def _live_top(self, heap: list[ReadyEntry]) -> ReadyEntry | None:
        """Drop the tombstones on top of ``heap``; its live top, or None. Lock held."""
        live = self._ready_live
        while heap and live.get(heap[0][4]) != heap[0][3]:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def _pop_ready(self, job_types: Collection[str] | None = None) -> Job | None:
        """Pop the best live ready job (of ``job_types``, when given). Lock held.

        A job whose own ``status`` the caller changed meanwhile is adopted in that
        status instead, and the next one is taken: a job that is not PENDING is never
        handed out.
        """
        self._promote_due()
        while True:
            heaps = self._heads(job_types)
            if not heaps:
                return None
            best = heaps[0] if len(heaps) == 1 else min(heaps, key=lambda heap: heap[0])
            job = self._take_top(best)
            if job is not None:
                return job

    def _take_top(self, heap: list[ReadyEntry]) -> Job | None:
        """Pop the live entry on top of ``heap``: its job when PENDING, else None (the job
        is adopted in the status its caller gave it). Lock held."""
        entry = heapq.heappop(heap)
        job_id = entry[4]
        del self._ready_live[job_id]
        job = self._jobs[job_id]
        self._ready_count[job.job_type, level_index(-entry[0])] -= 1
        if job.status is _PENDING:
            return job
        self._adopt(job)
        return None

    def _peek_ready(self) -> Job | None:
        """The job :meth:`_pop_ready` would take, left where it is. Lock held."""
        self._promote_due()
        while True:
            heaps = self._heads(None)
            if not heaps:
                return None
            best = min(heaps, key=lambda heap: heap[0])
            job = self._jobs[best[0][4]]
            if job.status is _PENDING:
                return job
            self._take_top(best)

    # -- status bookkeeping -------------------------------------------------------------

    def _set_status(self, job: Job, status: JobStatus) -> None:
        """Record ``status`` for a job (counts, status table, the job). Lock held."""
        job_id = job.job_id
        old = self._status[job_id]
        counts = self._counts
        counts[old] -= 1
        counts[status] += 1
        self._status[job_id] = status
        job.status = status
        if old is _PENDING and self._alone:
            self._alone.discard(job_id)
        if old in TERMINAL_STATUSES:
            self._finished[old].pop(job_id, None)
        if status in TERMINAL_STATUSES:
            if job.finished_at is None:
                job.finished_at = self._clock.now()
            self._finish(job, status)

    def _adopt(self, job: Job) -> None:
        """Take on a status the caller assigned to ``job`` itself; the job is unplaced."""
        wanted = job.status
        job.status = self._status[job.job_id]
        self._enter(job, wanted)

    def _release_dependents(self, job_id: str) -> None:
        """A job COMPLETED: unblock dependents whose last dependency it was. Lock held."""
        waiting = self._dependents.pop(job_id, None)
        if not waiting:
            return
        blocked = self._blocked
        for dep_id in waiting:
            left = blocked.get(dep_id)
            if left is None:
                continue  # no longer blocked (cancelled or failed meanwhile)
            if left > 1:
                blocked[dep_id] = left - 1
            else:
                del blocked[dep_id]
                self._schedule(self._jobs[dep_id])
        self._wake_all()

    def _fail_dependents(self, job_id: str) -> None:
        """A job ended FAILED, DEAD or CANCELLED: fail its dependents, transitively."""
        stack = [job_id]
        now = self._clock.now()
        while stack:
            parent_id = stack.pop()
            waiting = self._dependents.pop(parent_id, None)
            if not waiting:
                continue
            parent_status = self._status[parent_id]
            for dep_id in waiting:
                if self._blocked.pop(dep_id, None) is None:
                    continue
                child = self._jobs[dep_id]
                child.error = f"dependency {parent_id} is {parent_status}"
                child.finished_at = now
                self._set_status(child, JobStatus.FAILED)
                stack.append(dep_id)

    def _remove(self, job: Job) -> None:
        """Forget a job that is not RUNNING; its waiting dependents fail. Lock held."""
        job_id = job.job_id
        old = self._status[job_id]
        if old is _PENDING:
            self._unplace(job)
            self._alone.discard(job_id)
        elif old in TERMINAL_STATUSES:
            self._finished[old].pop(job_id, None)
        self._counts[old] -= 1
        # A deleted dependency can never complete: its waiting dependents fail (naming
        # it CANCELLED).
        self._status[job_id] = job.status = JobStatus.CANCELLED
        if job_id in self._dependents:
            self._fail_dependents(job_id)
        del self._jobs[job_id], self._status[job_id]
        self._logs.pop(job_id, None)

    def _add_running(self, job: Job) -> None:
        """Index a job that became RUNNING. Lock held."""
        self._running[job.job_id] = 0
        self._running_types[job.job_type] += 1

    def _drop_running(self, job: Job) -> None:
        """Unindex a job that is no longer RUNNING. Lock held."""
        if self._running.pop(job.job_id, -1) >= 0:
            self._running_types[job.job_type] -= 1
        self._lease_mono.pop(job.job_id, None)

    def _leave_running(self, job: Job) -> None:
        self._drop_running(job)
        job.lease_until = None

    def _get(self, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id, queue=self._name)
        return job

    def _get_leased(self, job_id: str, token: int) -> Job:
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id, queue=self._name)
        status = self._status[job_id]
        if status is not _RUNNING:
            raise StaleLeaseError(job_id, token, reason=f"the job is {status}, not RUNNING")
        if job.attempt != token:
            raise StaleLeaseError(job_id, token, reason=f"attempt {job.attempt} holds the lease now")
        return job

    def _to_status(self, job: Job, status: JobStatus) -> None:
        """Move a job to ``status`` from whatever it is, fixing every index. Lock held."""
        old = self._status[job.job_id]
        if old is status:
            job.status = status
            return
        if old is _PENDING:
            self._unplace(job)
        elif old is _RUNNING:
            self._leave_running(job)
        self._enter(job, status)

    def _wake_one(self, job_type: str) -> None:
        """Wake one waiter for a job of ``job_type`` made ready (lock held): one waiting
        for that type, else one waiting for any type. Never one for other types only: it
        would take the wake-up and leave asleep the waiter that can claim the job."""
        for cond, types in self._typed_waiters.items():
            if job_type in types:
                # Out of the registry at once (as Condition.notify does with its own
                # waiters): the next job made ready before it runs wakes another one.
                del self._typed_waiters[cond]
                cond.notify()
                return
        if self._waiting:
            self._cond.notify()

    def _wake_all(self) -> None:
        """Wake every waiter (lock held): many jobs made ready, an interrupt, a close."""
        self._cond.notify_all()
        for cond in self._typed_waiters:
            cond.notify()
        self._typed_waiters.clear()

    def _enter(self, job: Job, status: JobStatus) -> None:
        """Record ``status`` for a job out of every index, and do what it implies."""
        self._set_status(job, status)
        if status is _PENDING:
            if job.run_alone:
                self._alone.add(job.job_id)
            self._place(job)
            self._wake_one(job.job_type)
        elif status is _RUNNING:
            self._add_running(job)
        elif status is _COMPLETED:
            self._release_dependents(job.job_id)
        elif status in FAILING:
            self._fail_dependents(job.job_id)

    def _failed_because_of(self, job_id: str) -> list[Job]:
        """The FAILED jobs that failed because ``job_id`` did, transitively, parents first.

        A scan of every job: a management call (retry with dependents), not a hot path.
        """
        children: dict[str, list[Job]] = {}
        status = self._status
        for job in self._jobs.values():
            if status[job.job_id] is JobStatus.FAILED and job.error and job.error.startswith("dependency "):
                parent = job.error.split(" ", 2)[1]
                if parent in job.depends_on:
                    children.setdefault(parent, []).append(job)
        found: list[Job] = []
        queue = [job_id]
        while queue:
            for child in children.pop(queue.pop(0), []):
                found.append(child)
                queue.append(child.job_id)
        return found


def _finished_at(job: Job) -> float:
    """A job's ``finished_at`` for ordering (a caller may have cleared it: first)."""
    finished = job.finished_at
    return -math.inf if finished is None else finished
