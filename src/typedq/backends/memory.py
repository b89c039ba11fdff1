"""``JobQueue``: the specification's in-memory queue (heap + dict + tombstones).

This module owns the public class and its transitions; where each job sits (ready heaps
per job type, the delayed heap, the blocked table, tombstones) and the moves between those
places are in ``_memory_state``; named locks in ``_memory_coord``; moves that change a
dead-letter queue too are in ``_memory_dead``. One lock guards everything and is held only
for the bookkeeping, never while a handler runs (a move into or out of a dead-letter queue
holds both queues' locks).
"""

from __future__ import annotations

import contextlib
import threading
from collections import Counter
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

from typedq._validate import require_number
from typedq.backends import _memory_dead as dead_letters
from typedq.backends._frames import FrameFields
from typedq.backends._graph import check_batch_acyclic, dependency_order, jobs_from_export
from typedq.backends._memory_control import MemoryControl
from typedq.backends._memory_coord import MemoryCoordination
from typedq.backends._memory_policy import MemoryPolicy
from typedq.backends._memory_reads import MemoryReads
from typedq.backends._memory_state import FAILING, MemoryState
from typedq.backends._memory_unique import MemoryUniqueKeys
from typedq.backends._retention import check_purge
from typedq.backends._unique import UniqueSpec, unique_of
from typedq.backends.base import Claim, Completion, Queue, WorkerInfo
from typedq.clock import Clock, system_clock
from typedq.errors import (
    DependencyCycleError,
    DuplicateJobError,
    InvalidTransitionError,
    JobNotFoundError,
    QueueClosedError,
    SerializationError,
    StaleLeaseError,
    TypedqError,
    UnknownDependencyError,
)
from typedq.job import (
    LEVELS,
    MAX_TRACEBACK,
    Job,
    JobLogLine,
    JobStatus,
    Priority,
    check_failure_text,
    level_index,
    parse_priority,
)
from typedq.policy import ClaimPolicy
from typedq.serializers.base import FrameCodec

__all__ = ["JobQueue"]

_PENDING: Final = JobStatus.PENDING
_RUNNING: Final = JobStatus.RUNNING
_COMPLETED: Final = JobStatus.COMPLETED
#: What ``retry`` re-opens.
_RETRYABLE: Final = FAILING


class JobQueue(MemoryReads, MemoryControl, MemoryCoordination, MemoryPolicy, MemoryUniqueKeys, Queue):
    """A thread-safe in-memory job queue; the specification's ``JobQueue``.

    Args:
        name: the queue's name.
        clock: the time source (tests pass a ``FakeClock``).
        codec: when given, each job's payload, metadata and result are encoded when
            they are handed over (enqueue, complete) and the queue keeps the decoded
            copy, as a durable backend would: a value the codec cannot carry is refused
            with the same typed error (``SerializationError`` naming the field and the
            job, ``PayloadTooLargeError`` over the size limit), later changes to the
            caller's dicts do not reach the job, and values come back as the codec
            carries them (a tuple as a list). Without one (the default, and the
            fastest), they are held by reference.
        history_limit: the most COMPLETED and CANCELLED jobs the queue keeps; the one
            that finished first goes as one more ends (None, the default: all).

    Raises:
        ConfigError: ``history_limit`` is not None or an int >= 1.
    """

    def __init__(
        self,
        name: str = "default",
        *,
        clock: Clock = system_clock,
        codec: FrameCodec | None = None,
        history_limit: int | None = None,
    ) -> None:
        super().__init__(name, clock)
        self._codec = codec
        self._frames = None if codec is None else FrameFields(codec)
        self._workers: dict[str, WorkerInfo] = {}
        self._init_unique()
        # The figures of workers whose entries were removed (see _worker_totals).
        self._retired_metrics: dict[str, Any] = {}
        self._init_coordination()
        self._init_policy()
        self.history_limit = history_limit
        # Closed: new jobs are refused (a JobQueue *is* its store: a job added after its
        # close would be held by an object nobody reads any more).
        self._closed = False

    @property
    def history_limit(self) -> int | None:
        """The most COMPLETED and CANCELLED jobs kept (None: no limit); settable."""
        return self._history_limit

    @history_limit.setter
    def history_limit(self, value: int | None) -> None:
        require_number("history_limit", value, minimum=1, integer=True, allow_none=True)
        with self._cond:
            self._history_limit = value
            self._trim_history()

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
        """How many jobs the queue holds, in every state (under the lock: a batch being
        added counts whole or not at all)."""
        with self._lock:
            return len(self._jobs)

    def __len__(self) -> int:
        return self.size

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._jobs

    def __repr__(self) -> str:
        return f"JobQueue(name={self._name!r}, size={len(self._jobs)})"

    @property
    def tombstones(self) -> int:
        """How many dead entries the ready heaps hold right now."""
        return sum(len(heap) for heap in self._ready.values()) - len(self._ready_live)

    @property
    def compactions(self) -> int:
        """How many times the ready heap has been compacted."""
        return self._compactions

    # -- adding -------------------------------------------------------------------------

    def enqueue(self, job: Job) -> str:
        """Add one job; see :meth:`Queue.enqueue`."""
        job_id = job.job_id
        spec = unique_of(job)
        if self._codec is not None:
            self._isolate(job)
        with self._cond:
            if self._closed:
                raise self._closed_error()
            if job_id in self._jobs:
                raise DuplicateJobError(job_id, queue=self._name)
            deps = job.depends_on
            if deps:
                self._check_dependencies(job, {})
            if spec is not None:
                now = self._clock.now()
                self._check_unique(job_id, spec, now, {})
                self._take_unique(job_id, spec, now)
            self._insert(job)
            self._submitted[job.job_type] += 1
            self._wake_one(job.job_type)
        return job_id

    def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        """Add many jobs all-or-nothing; see :meth:`Queue.enqueue_many`."""
        return self._enqueue_batch(jobs, {})

    def _enqueue_batch(self, jobs: Sequence[Job], logs: dict[str, list[JobLogLine]]) -> list[str]:
        """``enqueue_many``, storing ``logs`` (by job id) with the jobs under one lock."""
        batch: dict[str, Job] = {}
        specs: list[tuple[str, UniqueSpec]] = []
        for job in jobs:
            if job.job_id in batch:
                raise DuplicateJobError(job.job_id, queue=self._name)
            batch[job.job_id] = job
            spec = unique_of(job)
            if spec is not None:
                specs.append((job.job_id, spec))
        if self._codec is not None:
            for index, job in enumerate(batch.values()):
                try:
                    self._isolate(job)
                except SerializationError as exc:
                    exc.args = (f"jobs[{index}]: {exc}",)
                    raise
        with self._cond:
            if self._closed:
                raise self._closed_error()
            for job in batch.values():
                if job.job_id in self._jobs:
                    raise DuplicateJobError(job.job_id, queue=self._name)
                if job.depends_on:
                    self._check_dependencies(job, batch)
            check_batch_acyclic(batch)
            if specs:
                now = self._clock.now()
                taken: dict[str, str] = {}
                for job_id, spec in specs:
                    self._check_unique(job_id, spec, now, taken)
                    taken[spec.key] = job_id
                for job_id, spec in specs:
                    self._take_unique(job_id, spec, now)
            for job in dependency_order(batch):
                self._insert(job)
            self._submitted.update(job.job_type for job in batch.values())
            self._logs.update(logs)
            self._wake_all()
        return list(batch)

    def import_jobs(self, jobs_data: Iterable[dict[str, Any]]) -> list[str]:
        """Add jobs from ``export_jobs()`` data all-or-nothing; see :meth:`Queue.import_jobs`."""
        return self._enqueue_batch(*jobs_from_export(jobs_data))

    def _isolate(self, job: Job) -> None:
        """Round-trip the payload, metadata and result through the codec, as a durable
        backend stores them (size limit, typed errors, no shared references).

        Raises:
            SerializationError: a field cannot be encoded; the message names the field
                and the job (the type is kept, e.g. ``PayloadTooLargeError``).
        """
        assert self._codec is not None
        assert self._frames is not None
        payload, metadata, result, _ = self._frames.blobs(job)
        decode, context = self._codec.decode, job.job_id.encode()
        job.payload = decode(payload, context=context)
        if metadata is not None:
            job.metadata = decode(metadata, context=context)
        if result is not None:
            job.result = decode(result, context=context)

    def _carried(self, job_id: str, result: Any) -> Any:
        """``result`` as the codec carries it (the queue has one).

        Raises:
            SerializationError: the codec cannot carry it (the message names the job).
        """
        assert self._frames is not None
        if result is None:
            return result
        blob = self._frames.encode_result(job_id, result)
        assert blob is not None
        return self._frames.codec.decode(blob, context=job_id.encode())

    def _check_dependencies(self, job: Job, batch: dict[str, Job]) -> None:
        if job.status is not _PENDING:
            return  # only jobs that will run need their dependencies present
        for dep in job.depends_on:
            if dep == job.job_id:
                raise DependencyCycleError([dep, dep])
            if dep not in self._jobs and dep not in batch:
                raise UnknownDependencyError(job.job_id, dep, queue=self._name)

    # -- the specification's operations -------------------------------------------------

    def dequeue(self) -> Job | None:
        """Take the best ready job without a lease; see :meth:`Queue.dequeue`."""
        with self._lock:
            job = self._pop_ready()
            if job is None:
                return None
            self._set_status(job, _RUNNING)
            job.attempt += 1
            job.progress = None  # a new attempt starts with none (see Queue.set_progress)
            job.started_at = self._clock.now()
            self._add_running(job)
            return job

    def peek(self) -> Job | None:
        """Return the job ``dequeue`` would take, without taking it."""
        with self._cond:
            return self._peek_ready()

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

    def claim(
        self, worker_id: str, *, lease_s: float, job_types: Collection[str] | None = None
    ) -> Claim | None:
        """Take the best ready job with a lease; see :meth:`Queue.claim`."""
        with self._cond:
            policy = self._policy
            if policy is not None:
                now = self._clock.now()
                job = self._pop_by_policy(policy, job_types, now)
                return None if job is None else self._lease(job, worker_id, lease_s, now)
            job = self._pop_ready(job_types)
            if job is None:
                return None
            return self._lease(job, worker_id, lease_s, self._clock.now())

    def claim_many(
        self, worker_id: str, *, lease_s: float, limit: int, job_types: Collection[str] | None = None
    ) -> list[Claim]:
        """Claim up to ``limit`` ready jobs; see :meth:`Queue.claim_many`."""
        claims: list[Claim] = []
        with self._cond:
            if self._alone:
                limit = min(limit, 1)
            now = self._clock.now()
            policy = self._policy
            while len(claims) < limit:
                # Under a policy, each job is leased before the next is chosen: the
                # limits count it as RUNNING.
                job = self._pop_ready(job_types) if policy is None else self._pop_by_policy(
                    policy, job_types, now
                )
                if job is None:
                    break
                claims.append(self._lease(job, worker_id, lease_s, now))
            if len(claims) > 1:  # one claim group: a rescue tells the batch's jobs by it
                group, running = next(self._claim_groups), self._running
                for claim in claims:
                    running[claim.job.job_id] = group
        return claims

    def _lease(self, job: Job, worker_id: str, lease_s: float, now: float) -> Claim:
        counts = self._counts
        counts[_PENDING] -= 1
        counts[_RUNNING] += 1
        job_id = job.job_id
        job.status = self._status[job_id] = _RUNNING
        if job.run_alone:
            job.run_alone = False
            self._alone.discard(job_id)
        token = job.attempt = job.attempt + 1
        job.progress = None  # a new attempt starts with none (see Queue.set_progress)
        job.worker_id = worker_id
        job.started_at = now
        until = job.lease_until = now + lease_s
        self._add_running(job)
        self._lease_mono[job_id] = self._clock.monotonic() + lease_s
        return Claim(job, token, until)

    def complete(self, job_id: str, *, token: int, result: Any = None) -> Job:
        """RUNNING → COMPLETED; see :meth:`Queue.complete`."""
        if self._frames is not None:
            result = self._carried(job_id, result)
        with self._lock:
            return self._complete(job_id, token, result, self._clock.now())

    def complete_many(self, completions: Sequence[Completion]) -> list[Job | TypedqError]:
        """Complete many jobs under one lock; see :meth:`Queue.complete_many`."""
        carried: list[tuple[Any, SerializationError | None]] = []
        if self._frames is None:
            carried = [(result, None) for _, _, result in completions]
        else:
            for job_id, _, result in completions:
                try:
                    carried.append((self._carried(job_id, result), None))
                except SerializationError as exc:
                    carried.append((None, exc))
        outcomes: list[Job | TypedqError] = []
        with self._lock:
            now = self._clock.now()
            for (job_id, token, _), (result, refused) in zip(completions, carried, strict=True):
                if refused is not None:
                    outcomes.append(refused)
                    continue
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
        job.status = self._status[job_id] = _COMPLETED
        job.result = result
        job.finished_at = now
        job.lease_until = None
        self._drop_running(job)
        # self._finish(job, _COMPLETED) for the hot path: completions come in the order
        # of the clock's readings, so the table stays in finish order without a check.
        self._done[job_id] = None
        if self._history_limit is not None:
            self._trim_history()
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
        check_failure_text(error, traceback)
        with self._cond:
            job = self._get_leased(job_id, token)
            self._leave_running(job)
            job.retry_count += 1
            job.error = error
            job.traceback = None if traceback is None else traceback[-MAX_TRACEBACK:]
            job.scheduled_at = retry_at
            job.worker_id = None
            self._set_status(job, _PENDING)
            self._schedule(job)
            self._wake_one(job.job_type)
            return job

    def bury(
        self,
        job_id: str,
        *,
        token: int,
        error: str,
        traceback: str | None = None,
        dead_letter: Queue | None = None,
        dlq_max: int | None = None,
    ) -> Job:
        """RUNNING → DEAD, with the dead letter put into ``dead_letter`` under both locks;
        see :meth:`Queue.bury`."""
        check_failure_text(error, traceback)
        dlq = dead_letters.check_pair(self, dead_letter, dlq_max)
        later: list[dead_letters.Dropped] = []
        with self._locked_with(dlq):
            job = self._get_leased(job_id, token)
            kept = None if traceback is None else traceback[-MAX_TRACEBACK:]
            now = self._clock.now()
            copy = None
            if dlq is not None:
                copy = dead_letters.dead_copy(self, job, error=error, traceback=kept, finished_at=now)
            self._leave_running(job)
            job.error = error
            job.traceback = kept
            job.finished_at = now
            self._set_status(job, JobStatus.DEAD)
            self._fail_dependents(job_id)
            if dlq is not None and copy is not None:
                later = dead_letters.put_dead_letter(self, dlq, copy, dlq_max)
        dead_letters.drop_rows(later)
        return job

    def _locked_with(self, other: MemoryState | None) -> contextlib.AbstractContextManager[Any]:
        """This queue's lock, and ``other``'s too (in rank order) when given."""
        return self._cond if other is None else dead_letters.both_locked(self, other)

    def release(self, job_id: str, *, token: int) -> Job:
        """RUNNING → PENDING, not counted as a failure; see :meth:`Queue.release`."""
        with self._cond:
            job = self._get_leased(job_id, token)
            self._leave_running(job)
            job.worker_id = None
            self._set_status(job, _PENDING)
            self._schedule(job)
            self._wake_one(job.job_type)
            return job

    def extend_lease(self, job_id: str, *, token: int, lease_s: float) -> float:
        """Push the lease deadline; see :meth:`Queue.extend_lease`."""
        with self._lock:
            job = self._get_leased(job_id, token)
            until = job.lease_until = self._clock.now() + lease_s
            self._lease_mono[job_id] = self._clock.monotonic() + lease_s
            return until

    def reclaim_expired(
        self,
        *,
        max_lost: int = 3,
        limit: int = 1000,
        dead_letter: Queue | None = None,
        dlq_max: int | None = None,
    ) -> list[str]:
        """Give back jobs whose lease expired; see :meth:`Queue.reclaim_expired`.

        A lease is judged by the clock's monotonic reading when a claim or renewal of
        this queue set it (every owner is of this process), so a step of the wall clock
        either way changes nothing; a lease without one (a RUNNING job imported) by the
        wall clock.
        """
        dlq = dead_letters.check_pair(self, dead_letter, dlq_max)
        reclaimed: list[str] = []
        later: list[dead_letters.Dropped] = []
        with self._locked_with(dlq):
            now, mono_now = self._clock.now(), self._clock.monotonic()
            jobs, lease_mono = self._jobs, self._lease_mono
            groups = dict(self._running)
            # How many RUNNING jobs each batch claim still holds.
            held = Counter(group for group in groups.values() if group)
            for job_id, group in groups.items():
                if len(reclaimed) >= limit:
                    break
                job = jobs[job_id]
                if job.lease_until is None:
                    continue
                due = lease_mono.get(job_id)
                if job.lease_until >= now if due is None else due >= mono_now:
                    continue
                in_batch = group > 0 and held[group] > 1
                job.worker_id = None
                reclaimed.append(job.job_id)
                if not in_batch:
                    job.lost_count += 1
                if job.cancel_requested:
                    job.finished_at = now
                    self._to_status(job, JobStatus.CANCELLED)
                    continue
                # Claimed alone from now on: never again in a batch it could take down.
                job.run_alone = True
                if not in_batch and job.lost_count >= max_lost:
                    job.error = f"worker lost {job.lost_count}×"
                    job.finished_at = now
                    copy = None if dlq is None else dead_letters.dead_copy(self, job)
                    self._to_status(job, JobStatus.DEAD)
                    if dlq is not None and copy is not None:
                        later += dead_letters.put_dead_letter(self, dlq, copy, dlq_max)
                else:
                    self._to_status(job, _PENDING)
        dead_letters.drop_rows(later)
        return reclaimed

    # -- management ---------------------------------------------------------------------

    def cancel(self, job_id: str, *, token: int | None = None) -> bool:
        """Cancel a job; see :meth:`Queue.cancel`."""
        with self._cond:
            if token is not None:
                job = self._get_leased(job_id, token)
                job.finished_at = self._clock.now()
                self._to_status(job, JobStatus.CANCELLED)
                return True
            job = self._get(job_id)
            status = self._status[job_id]
            if status is _PENDING or status is JobStatus.SCHEDULED:
                job.finished_at = self._clock.now()
                self._to_status(job, JobStatus.CANCELLED)
                return True
            if status is _RUNNING:
                job.cancel_requested = True
            return False

    def set_priority(self, job_id: str, priority: int | str) -> None:
        """Change a job's priority (an int or a level name), re-ordering it if PENDING."""
        priority = parse_priority(priority)
        with self._cond:
            job = self._get(job_id)
            if job.priority == priority:
                return
            old = (job.job_type, level_index(job.priority))
            job.priority = priority
            if job_id in self._ready_live:
                del self._ready_live[job_id]  # the old entry becomes a tombstone
                self._ready_count[old] -= 1
                self._schedule(job)
                self._maybe_compact(old)

    def replay(self, job_id: str) -> Job:
        """DEAD → PENDING with retry_count 0; see :meth:`Queue.replay`."""
        with self._cond:
            job = self._get(job_id)
            status = self._status[job_id]
            if status is not JobStatus.DEAD:
                raise InvalidTransitionError("status", status.value, "DEAD (only dead jobs can be replayed)")
            self._reopen(job)
            return job

    def retry(
        self, job_id: str, *, with_dependents: bool = False, dead_letter: Queue | None = None
    ) -> list[str]:
        """FAILED, DEAD or CANCELLED → PENDING, with dependents, taking the job's dead letter
        back under both locks; see :meth:`Queue.retry`."""
        dlq = dead_letters.check_pair(self, dead_letter)
        with self._locked_with(dlq):
            if dlq is not None:
                dead_letters.restore(self, dlq, job_id)
            job = self._get(job_id)
            status = self._status[job_id]
            if status not in _RETRYABLE:
                raise InvalidTransitionError(
                    "status", status.value, "FAILED, DEAD or CANCELLED (a job that ended without completing)"
                )
            dependents = self._failed_because_of(job_id) if with_dependents else []
            self._reopen(job)
            for child in dependents:
                self._reopen(child)
            if dlq is not None:
                dead_letters.take_back(dlq, job_id)
            return [job_id, *(child.job_id for child in dependents)]

    def _reopen(self, job: Job) -> None:
        """A job that ended goes back to PENDING as a fresh run. Lock held."""
        job.retry_count = 0
        job.lost_count = 0
        job.error = None
        job.traceback = None
        job.result = None
        job.finished_at = None
        job.scheduled_at = None
        job.cancel_requested = False
        job.run_alone = False
        job.worker_id = None
        self._to_status(job, _PENDING)

    def purge(self, *, statuses: Collection[JobStatus], older_than: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` jobs of ``statuses`` that finished before ``older_than``,
        from the front of each status's finished table; see :meth:`Queue.purge`."""
        wanted = check_purge(statuses, limit)
        purged = 0
        with self._cond:
            for status in wanted:
                while purged < limit:
                    job = self._oldest_finished(status)
                    if job is None or job.finished_at is None or job.finished_at >= older_than:
                        break
                    self._remove(job)
                    purged += 1
        return purged

    def delete(self, job_id: str) -> None:
        """Remove a job that is not RUNNING; see :meth:`Queue.delete`."""
        with self._cond:
            job = self._get(job_id)
            status = self._status[job_id]
            if status is _RUNNING:
                raise InvalidTransitionError(
                    "status", status.value, "any state but RUNNING (cancel it first)"
                )
            self._remove(job)

    def set_claim_policy(self, policy: ClaimPolicy | None) -> None:
        """Claim by ``policy`` from now on; see :meth:`Queue.set_claim_policy`."""
        with self._cond:
            self._policy = None if policy is None or policy.is_strict else policy

    @property
    def claim_policy(self) -> ClaimPolicy | None:
        """The policy claims follow (None: strict priority, no limits)."""
        return self._policy

    def count_by_priority(self) -> dict[Priority, int]:
        """Ready jobs per priority level; see :meth:`Queue.count_by_priority`."""
        with self._lock:
            return dict(zip(LEVELS, self._ready_by_level(), strict=True))

    def count_by_status(self) -> dict[JobStatus, int]:
        """Return how many jobs are in each status."""
        with self._lock:
            return dict(self._counts)

    def count_submitted(self) -> dict[str, int]:
        """Jobs ever submitted to the queue, per job type; see :meth:`Queue.count_submitted`."""
        with self._lock:
            return dict(self._submitted)

    def count_scheduled(self) -> int:
        """PENDING jobs due later; see :meth:`Queue.count_scheduled`."""
        with self._lock:
            self._promote_due()
            return len(self._delayed_live)

    def check_dead_letter(self, dead_letter: Queue) -> None:
        """Refuse a dead-letter queue that is not another ``JobQueue``; see
        :meth:`Queue.check_dead_letter`."""
        dead_letters.check_pair(self, dead_letter)

    def count_dropped(self) -> int:
        """Dead letters this queue dropped to stay within ``dlq_max``; see :meth:`Queue.count_dropped`."""
        return self._dropped

    # -- waiting ------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float, job_types: Collection[str] | None = None) -> bool:
        """Block until a job (of ``job_types``, when given) may be ready, an interrupt, or
        ``timeout_s`` seconds; see :meth:`Queue.wait_ready`."""
        types = None if job_types is None else frozenset(job_types)
        with self._cond:
            self._promote_due()
            if self._has_ready(types):
                return True
            wait = timeout_s
            if self._delayed:
                wait = min(wait, max(0.0, self._delayed[0][0] - self._clock.now()))
            if types is None:
                self._waiting += 1
                try:
                    self._cond.wait(wait)
                finally:
                    self._waiting -= 1
            else:
                mine = threading.Condition(self._lock)
                self._typed_waiters[mine] = types
                try:
                    mine.wait(wait)
                finally:
                    self._typed_waiters.pop(mine, None)  # gone when woken
            self._promote_due()
            return self._has_ready(types)

    def _has_ready(self, types: frozenset[str] | None) -> bool:
        """Whether a job (of ``types``, when given) is ready. Lock held."""
        if types is None:
            return bool(self._ready_live)
        return any(n for (job_type, _), n in self._ready_count.items() if job_type in types)

    def interrupt(self) -> None:
        """Wake every thread blocked in :meth:`wait_ready`."""
        with self._cond:
            self._wake_all()

    def close(self) -> None:
        """Refuse new jobs from now on (:class:`QueueClosedError`); wake waiters so workers
        can exit. The jobs it holds stay readable, and running ones can still end."""
        with self._cond:
            self._closed = True
            self._wake_all()

    def close_if_idle(self) -> int:
        """Close the queue (see :meth:`close`) if every job it holds has ended, in one step
        under its lock, so no job can arrive between the check and the close.

        Returns:
            How many jobs have not ended (PENDING or RUNNING): 0 when it was closed;
            otherwise it was left open.
        """
        with self._cond:
            unfinished = self._counts[_PENDING] + self._counts[_RUNNING]
            if unfinished == 0:
                self._closed = True
                self._wake_all()
            return unfinished

    def _closed_error(self) -> QueueClosedError:
        return QueueClosedError(f"memory queue {self._name!r} is closed: it takes no new jobs")
