"""``JobQueue``: the specification's in-memory queue (heap + dict + tombstones).

Every job lives in a dict keyed by id (O(1) lookup and status updates). A PENDING job is
in exactly one of three places:

* the *ready heap* (``heapq``), ordered like ``Job.__lt__``: higher priority, then
  earlier ``scheduled_at``, then earlier ``created_at``, then arrival order;
* the *delayed heap*, ordered by due time, for jobs whose ``scheduled_at`` is in the
  future; due jobs move to the ready heap before every read of it;
* the *blocked* table, for jobs with unfinished dependencies, each with a counter of
  dependencies not yet COMPLETED. A reverse index (dependency → dependents) lets a
  completion release exactly its dependents, never scanning all jobs.

A job that leaves a heap other than by being popped (cancelled, re-prioritised, status
changed) is not searched for: its heap entry becomes a *tombstone*, recognised by a stale
sequence number and skipped when popped. The heap is compacted when tombstones pass 25%
of it. One lock guards everything and is held only for the bookkeeping, never while a
handler runs.
"""

from __future__ import annotations

import heapq
import itertools
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final

from typedq.backends._graph import check_batch_acyclic, dependency_order
from typedq.backends.base import Claim, Completion, Queue
from typedq.clock import Clock, system_clock
from typedq.errors import (
    DependencyCycleError,
    DuplicateJobError,
    InvalidJobError,
    InvalidTransitionError,
    JobNotFoundError,
    StaleLeaseError,
    TypedqError,
    UnknownDependencyError,
)
from typedq.job import MAX_PRIORITY, MAX_TRACEBACK, MIN_PRIORITY, TRACEBACK_KEY, UNSCHEDULED, Job, JobStatus
from typedq.serializers.base import FrameCodec

__all__ = ["JobQueue"]

_PENDING: Final = JobStatus.PENDING
_RUNNING: Final = JobStatus.RUNNING
_COMPLETED: Final = JobStatus.COMPLETED
_FAILING: Final = frozenset({JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED})
#: Compaction is not worth it for tiny heaps.
_COMPACT_MIN: Final = 64


class JobQueue(Queue):
    """A thread-safe in-memory job queue; the specification's ``JobQueue``.

    Args:
        name: the queue's name.
        clock: the time source (tests pass a ``FakeClock``).
        codec: when given, each payload is encoded at enqueue (refusing one over the
            size limit with ``PayloadTooLargeError``) and the queue keeps the decoded
            copy, so later changes to the caller's dict do not reach the job. Without
            one (the default, and the fastest), payloads are held by reference.
    """

    def __init__(
        self, name: str = "default", *, clock: Clock = system_clock, codec: FrameCodec | None = None
    ) -> None:
        self._name = name
        self._clock = clock
        self._codec = codec
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._jobs: dict[str, Job] = {}
        self._seq = itertools.count()
        # ready heap entries: (-priority, scheduled_at or UNSCHEDULED, created_at, seq, job_id)
        self._ready: list[tuple[int, float, float, int, str]] = []
        self._ready_live: dict[str, int] = {}
        # delayed heap entries: (due, seq, job_id)
        self._delayed: list[tuple[float, int, str]] = []
        self._delayed_live: dict[str, int] = {}
        self._blocked: dict[str, int] = {}
        self._dependents: dict[str, list[str]] = {}
        self._running: dict[str, None] = {}
        self._counts: dict[JobStatus, int] = dict.fromkeys(JobStatus, 0)
        # Threads blocked in wait_ready; notify() is skipped when there are none (it
        # costs microseconds on the enqueue hot path).
        self._waiting = 0
        self._compactions = 0

    # -- properties ---------------------------------------------------------------------

    @property
    def name(self) -> str:
        """The queue's name."""
        return self._name

    @property
    def clock(self) -> Clock:
        """The queue's clock."""
        return self._clock

    @property
    def size(self) -> int:
        """How many jobs the queue holds, in every state."""
        return len(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __repr__(self) -> str:
        return f"JobQueue(name={self._name!r}, size={len(self._jobs)})"

    @property
    def tombstones(self) -> int:
        """How many dead entries the ready heap holds right now."""
        return len(self._ready) - len(self._ready_live)

    @property
    def compactions(self) -> int:
        """How many times the ready heap has been compacted."""
        return self._compactions

    # -- adding -------------------------------------------------------------------------

    def enqueue(self, job: Job) -> str:
        """Add one job; see :meth:`Queue.enqueue`."""
        job_id = job.job_id
        if self._codec is not None:
            self._isolate(job)
        with self._cond:
            if job_id in self._jobs:
                raise DuplicateJobError(job_id, queue=self._name)
            deps = job.depends_on
            if deps:
                self._check_dependencies(job, {})
            self._insert(job)
            if self._waiting:
                self._cond.notify()
        return job_id

    def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        """Add many jobs all-or-nothing; see :meth:`Queue.enqueue_many`."""
        batch: dict[str, Job] = {}
        for job in jobs:
            if job.job_id in batch:
                raise DuplicateJobError(job.job_id, queue=self._name)
            batch[job.job_id] = job
        if self._codec is not None:
            for job in batch.values():
                self._isolate(job)
        with self._cond:
            for job in batch.values():
                if job.job_id in self._jobs:
                    raise DuplicateJobError(job.job_id, queue=self._name)
                if job.depends_on:
                    self._check_dependencies(job, batch)
            check_batch_acyclic(batch)
            for job in dependency_order(batch):
                self._insert(job)
            self._cond.notify_all()
        return list(batch)

    def import_jobs(self, jobs_data: Iterable[dict[str, Any]]) -> list[str]:
        """Add jobs from ``export_jobs()`` data all-or-nothing; see :meth:`Queue.import_jobs`."""
        jobs = []
        for index, data in enumerate(jobs_data):
            try:
                jobs.append(Job.from_dict(data))
            except InvalidJobError as exc:
                raise InvalidJobError(
                    f"jobs_data[{index}].{exc.field}", exc.value, exc.allowed
                ) from exc
        return self.enqueue_many(jobs)

    def _isolate(self, job: Job) -> None:
        """Round-trip the payload through the codec (size limit, no shared references)."""
        assert self._codec is not None
        context = job.job_id.encode()
        job.payload = self._codec.decode(self._codec.encode(job.payload, context=context), context=context)

    def _check_dependencies(self, job: Job, batch: dict[str, Job]) -> None:
        if job.status is not _PENDING:
            return  # only jobs that will run need their dependencies present
        for dep in job.depends_on:
            if dep == job.job_id:
                raise DependencyCycleError([dep, dep])
            if dep not in self._jobs and dep not in batch:
                raise UnknownDependencyError(job.job_id, dep, queue=self._name)

    def _insert(self, job: Job) -> None:
        """Store a validated job and index it by its status. Lock held.

        ``job.queue`` is left as the submitter set it: a dead-letter queue keeps the name
        of the queue each dead job came from.
        """
        self._jobs[job.job_id] = job
        status = job.status
        self._counts[status] += 1
        if status is _PENDING:
            self._place(job)
        elif status is _RUNNING:
            self._running[job.job_id] = None

    # -- placing PENDING jobs -----------------------------------------------------------

    def _place(self, job: Job) -> None:
        """Put a PENDING job where it belongs: blocked, delayed or ready. Lock held."""
        if job.depends_on:
            unfinished: list[str] = []
            jobs = self._jobs
            for dep_id in job.depends_on:
                dep = jobs.get(dep_id)
                if dep is None:
                    self._fail_dependents_of_job(job, dep_id, "missing")
                    return
                dep_status = dep.status
                if dep_status is _COMPLETED:
                    continue
                if dep_status in _FAILING:
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
        self._set_status(job, JobStatus.FAILED)
        job.error = f"dependency {dep_id} is {dep_status}"
        job.finished_at = self._clock.now()
        self._fail_dependents(job.job_id)

    def _schedule(self, job: Job) -> None:
        """Put an unblocked PENDING job on the delayed or ready heap. Lock held."""
        sched = job.scheduled_at
        seq = next(self._seq)
        if sched is not None and sched > self._clock.now():
            self._delayed_live[job.job_id] = seq
            heapq.heappush(self._delayed, (sched, seq, job.job_id))
        else:
            self._ready_live[job.job_id] = seq
            heapq.heappush(
                self._ready,
                (-job.priority, UNSCHEDULED if sched is None else sched, job.created_at, seq, job.job_id),
            )

    def _unplace(self, job_id: str) -> None:
        """Take a PENDING job out of whatever index holds it (tombstoning heap entries)."""
        if self._ready_live.pop(job_id, None) is not None:
            self._maybe_compact()
        elif self._delayed_live.pop(job_id, None) is None and self._blocked.pop(job_id, 0):
            # Drop the job's edges from the reverse index, so placing it again later
            # cannot count a dependency twice.
            for dep_id in self._jobs[job_id].depends_on:
                waiting = self._dependents.get(dep_id)
                if waiting is not None and job_id in waiting:
                    waiting.remove(job_id)
                    if not waiting:
                        del self._dependents[dep_id]

    def _promote_due(self) -> None:
        """Move due jobs from the delayed heap to the ready heap. Lock held."""
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

    def _maybe_compact(self) -> None:
        heap = self._ready
        if len(heap) >= _COMPACT_MIN and (len(heap) - len(self._ready_live)) * 4 > len(heap):
            live = self._ready_live
            self._ready = [e for e in heap if live.get(e[4]) == e[3]]
            heapq.heapify(self._ready)
            self._compactions += 1

    def _pop_ready(self) -> Job | None:
        """Pop the best live ready job, skipping tombstones. Lock held."""
        self._promote_due()
        heap = self._ready
        live = self._ready_live
        while heap:
            entry = heapq.heappop(heap)
            job_id = entry[4]
            if live.get(job_id) == entry[3]:
                del live[job_id]
                return self._jobs[job_id]
        return None

    # -- status bookkeeping -------------------------------------------------------------

    def _set_status(self, job: Job, status: JobStatus) -> None:
        counts = self._counts
        counts[job.status] -= 1
        counts[status] += 1
        job.status = status

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
        self._cond.notify_all()

    def _fail_dependents(self, job_id: str) -> None:
        """A job ended FAILED, DEAD or CANCELLED: fail its dependents, transitively."""
        stack = [job_id]
        now = self._clock.now()
        while stack:
            parent_id = stack.pop()
            waiting = self._dependents.pop(parent_id, None)
            if not waiting:
                continue
            parent_status = self._jobs[parent_id].status
            for dep_id in waiting:
                if self._blocked.pop(dep_id, None) is None:
                    continue
                child = self._jobs[dep_id]
                self._set_status(child, JobStatus.FAILED)
                child.error = f"dependency {parent_id} is {parent_status}"
                child.finished_at = now
                stack.append(dep_id)

    def _leave_running(self, job: Job) -> None:
        self._running.pop(job.job_id, None)
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
        if job.status is not _RUNNING:
            raise StaleLeaseError(job_id, token, reason=f"the job is {job.status}, not RUNNING")
        if job.attempt != token:
            raise StaleLeaseError(
                job_id, token, reason=f"attempt {job.attempt} holds the lease now"
            )
        return job

    def _to_status(self, job: Job, status: JobStatus) -> None:
        """Move a job to ``status`` from whatever it is, fixing every index. Lock held."""
        old = job.status
        if old is status:
            return
        if old is _PENDING:
            self._unplace(job.job_id)
        elif old is _RUNNING:
            self._leave_running(job)
        self._set_status(job, status)
        if status is _PENDING:
            self._place(job)
            self._cond.notify()
        elif status is _RUNNING:
            self._running[job.job_id] = None
        elif status is _COMPLETED:
            self._release_dependents(job.job_id)
        elif status in _FAILING:
            self._fail_dependents(job.job_id)

    # -- the specification's operations -------------------------------------------------

    def dequeue(self) -> Job | None:
        """Take the best ready job without a lease; see :meth:`Queue.dequeue`."""
        with self._lock:
            job = self._pop_ready()
            if job is None:
                return None
            self._set_status(job, _RUNNING)
            job.attempt += 1
            job.started_at = self._clock.now()
            self._running[job.job_id] = None
            return job

    def peek(self) -> Job | None:
        """Return the job ``dequeue`` would take, without taking it."""
        with self._lock:
            self._promote_due()
            heap = self._ready
            live = self._ready_live
            while heap:
                entry = heap[0]
                if live.get(entry[4]) == entry[3]:
                    return self._jobs[entry[4]]
                heapq.heappop(heap)  # drop the tombstone while we are here
            return None

    def get_job(self, job_id: str) -> Job:
        """Return the job with this id; raise ``JobNotFoundError`` (a KeyError) if absent."""
        job = self._jobs.get(job_id)
        if job is None:
            raise JobNotFoundError(job_id, queue=self._name)
        return job

    def update_status(self, job_id: str, status: JobStatus) -> None:
        """Set a job's status in O(1), keeping the indexes consistent."""
        status = JobStatus(status)
        with self._cond:
            self._to_status(self._get(job_id), status)

    def ready_count(self) -> int:
        """How many jobs are ready to run now."""
        with self._lock:
            self._promote_due()
            return len(self._ready_live)

    # -- leases -------------------------------------------------------------------------

    def claim(self, worker_id: str, *, lease_s: float) -> Claim | None:
        """Take the best ready job with a lease; see :meth:`Queue.claim`."""
        with self._lock:
            job = self._pop_ready()
            if job is None:
                return None
            return self._lease(job, worker_id, lease_s)

    def claim_many(self, worker_id: str, *, lease_s: float, limit: int) -> list[Claim]:
        """Claim up to ``limit`` ready jobs; see :meth:`Queue.claim_many`."""
        claims: list[Claim] = []
        with self._lock:
            while len(claims) < limit:
                job = self._pop_ready()
                if job is None:
                    break
                claims.append(self._lease(job, worker_id, lease_s))
        return claims

    def _lease(self, job: Job, worker_id: str, lease_s: float) -> Claim:
        now = self._clock.now()
        counts = self._counts
        counts[_PENDING] -= 1
        counts[_RUNNING] += 1
        job.status = _RUNNING
        token = job.attempt = job.attempt + 1
        job.worker_id = worker_id
        job.started_at = now
        until = job.lease_until = now + lease_s
        self._running[job.job_id] = None
        return Claim(job, token, until)

    def complete(self, job_id: str, *, token: int, result: Any = None) -> Job:
        """RUNNING → COMPLETED; see :meth:`Queue.complete`."""
        with self._lock:
            return self._complete(job_id, token, result, self._clock.now())

    def complete_many(self, completions: Sequence[Completion]) -> list[Job | TypedqError]:
        """Complete many jobs under one lock; see :meth:`Queue.complete_many`."""
        outcomes: list[Job | TypedqError] = []
        with self._lock:
            now = self._clock.now()
            for job_id, token, result in completions:
                try:
                    outcomes.append(self._complete(job_id, token, result, now))
                except (StaleLeaseError, JobNotFoundError) as exc:
                    outcomes.append(exc)
        return outcomes

    def _complete(self, job_id: str, token: int, result: Any, now: float) -> Job:
        """RUNNING → COMPLETED under the lock; release dependents."""
        job = self._get_leased(job_id, token)
        counts = self._counts
        counts[_RUNNING] -= 1
        counts[_COMPLETED] += 1
        job.status = _COMPLETED
        job.result = result
        job.finished_at = now
        job.lease_until = None
        del self._running[job_id]
        if job_id in self._dependents:
            self._release_dependents(job_id)
        return job

    def fail(
        self,
        job_id: str,
        *,
        token: int,
        error: str,
        retry_at: float,
        traceback: str | None = None,
    ) -> Job:
        """RUNNING → PENDING for a retry; see :meth:`Queue.fail`."""
        with self._cond:
            job = self._get_leased(job_id, token)
            self._leave_running(job)
            job.retry_count += 1
            job.error = error
            if traceback is not None:
                job.metadata = {**job.metadata, TRACEBACK_KEY: traceback[-MAX_TRACEBACK:]}
            job.scheduled_at = retry_at
            job.worker_id = None
            self._set_status(job, _PENDING)
            self._schedule(job)
            self._cond.notify()
            return job

    def bury(
        self, job_id: str, *, token: int, error: str, traceback: str | None = None
    ) -> Job:
        """RUNNING → DEAD; see :meth:`Queue.bury`."""
        with self._lock:
            job = self._get_leased(job_id, token)
            self._leave_running(job)
            job.error = error
            if traceback is not None:
                job.metadata = {**job.metadata, TRACEBACK_KEY: traceback[-MAX_TRACEBACK:]}
            job.finished_at = self._clock.now()
            self._set_status(job, JobStatus.DEAD)
            self._fail_dependents(job_id)
            return job

    def release(self, job_id: str, *, token: int) -> Job:
        """RUNNING → PENDING, not counted as a failure; see :meth:`Queue.release`."""
        with self._cond:
            job = self._get_leased(job_id, token)
            self._leave_running(job)
            job.worker_id = None
            self._set_status(job, _PENDING)
            self._schedule(job)
            self._cond.notify()
            return job

    def extend_lease(self, job_id: str, *, token: int, lease_s: float) -> float:
        """Push the lease deadline; see :meth:`Queue.extend_lease`."""
        with self._lock:
            job = self._get_leased(job_id, token)
            until = job.lease_until = self._clock.now() + lease_s
            return until

    def reclaim_expired(self, *, max_lost: int = 3, limit: int = 1000) -> list[str]:
        """Give back jobs whose lease expired; see :meth:`Queue.reclaim_expired`."""
        reclaimed: list[str] = []
        with self._cond:
            now = self._clock.now()
            for job_id in list(self._running):
                if len(reclaimed) >= limit:
                    break
                job = self._jobs[job_id]
                if job.lease_until is None or job.lease_until >= now:
                    continue
                job.lost_count += 1
                job.worker_id = None
                reclaimed.append(job_id)
                if job.cancel_requested:
                    job.finished_at = now
                    self._to_status(job, JobStatus.CANCELLED)
                elif job.lost_count >= max_lost:
                    job.error = f"worker lost {job.lost_count}×"
                    job.finished_at = now
                    self._to_status(job, JobStatus.DEAD)
                else:
                    self._to_status(job, _PENDING)
        return reclaimed

    # -- management ---------------------------------------------------------------------

    def cancel(self, job_id: str) -> bool:
        """Cancel a job; see :meth:`Queue.cancel`."""
        with self._lock:
            job = self._get(job_id)
            if job.status is _PENDING or job.status is JobStatus.SCHEDULED:
                job.finished_at = self._clock.now()
                self._to_status(job, JobStatus.CANCELLED)
                return True
            if job.status is _RUNNING:
                job.cancel_requested = True
            return False

    def set_priority(self, job_id: str, priority: int) -> None:
        """Change a job's priority, re-ordering it if PENDING."""
        if type(priority) is not int or not MIN_PRIORITY <= priority <= MAX_PRIORITY:
            raise InvalidJobError(
                "priority", priority, f"an int from {MIN_PRIORITY} to {MAX_PRIORITY}"
            )
        with self._lock:
            job = self._get(job_id)
            if job.priority == priority:
                return
            job.priority = priority
            if job_id in self._ready_live:
                del self._ready_live[job_id]  # the old entry becomes a tombstone
                self._schedule(job)
                self._maybe_compact()

    def replay(self, job_id: str) -> Job:
        """DEAD → PENDING with retry_count 0; see :meth:`Queue.replay`."""
        with self._cond:
            job = self._get(job_id)
            if job.status is not JobStatus.DEAD:
                raise InvalidTransitionError(
                    "status", job.status.value, "DEAD (only dead jobs can be replayed)"
                )
            job.retry_count = 0
            job.lost_count = 0
            job.error = None
            job.result = None
            job.finished_at = None
            job.scheduled_at = None
            job.cancel_requested = False
            self._to_status(job, _PENDING)
            return job

    def delete(self, job_id: str) -> None:
        """Remove a job that is not RUNNING; see :meth:`Queue.delete`."""
        with self._lock:
            job = self._get(job_id)
            if job.status is _RUNNING:
                raise InvalidTransitionError(
                    "status", job.status.value, "any state but RUNNING (cancel it first)"
                )
            if job.status is _PENDING:
                self._unplace(job_id)
            # A deleted dependency can never complete: its waiting dependents fail.
            self._set_status(job, JobStatus.CANCELLED)
            self._fail_dependents(job_id)
            self._counts[JobStatus.CANCELLED] -= 1
            del self._jobs[job_id]

    def count_by_status(self) -> dict[JobStatus, int]:
        """Return how many jobs are in each status."""
        with self._lock:
            return dict(self._counts)

    def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        job_type: str | None = None,
        limit: int = 100,
        offset: int = 0,
        after: str | None = None,
        newest: bool = False,
    ) -> list[Job]:
        """Return up to ``limit`` jobs in insertion order (``newest``: reversed), optionally
        filtered, continuing after job ``after``; see :meth:`Queue.list_jobs`."""
        if limit < 0 or offset < 0:
            raise InvalidJobError("limit", (limit, offset), "limit >= 0 and offset >= 0")
        with self._lock:
            ordered: Iterable[Job] = reversed(self._jobs.values()) if newest else self._jobs.values()
            matching: Iterator[Job] = iter(ordered)
            if after is not None:
                self._get(after)  # an unknown cursor is an error, not an empty page
                for job in matching:
                    if job.job_id == after:
                        break
            if status is not None:
                matching = (j for j in matching if j.status is status)
            if job_type is not None:
                matching = (j for j in matching if j.job_type == job_type)
            return list(itertools.islice(matching, offset, offset + limit))

    def export_jobs(self) -> list[dict[str, Any]]:
        """Return every job as ``Job.to_dict()`` data, in insertion order."""
        with self._lock:
            jobs = list(self._jobs.values())
        return [job.to_dict() for job in jobs]

    # -- waiting ------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float) -> bool:
        """Block until a job may be ready, an interrupt, or ``timeout_s`` seconds."""
        with self._cond:
            self._promote_due()
            if self._ready_live:
                return True
            wait = timeout_s
            if self._delayed:
                wait = min(wait, max(0.0, self._delayed[0][0] - self._clock.now()))
            self._waiting += 1
            try:
                self._cond.wait(wait)
            finally:
                self._waiting -= 1
            self._promote_due()
            return bool(self._ready_live)

    def interrupt(self) -> None:
        """Wake every thread blocked in :meth:`wait_ready`."""
        with self._cond:
            self._cond.notify_all()

    def close(self) -> None:
        """Nothing to release; wakes waiters so workers can exit."""
        self.interrupt()
