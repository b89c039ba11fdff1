"""The ``Queue`` protocol: the one contract every storage backend implements.

A worker, the manager and the CLI only ever talk to this protocol, so backends are
interchangeable. Each method that changes state is **one atomic transition**: the backend
performs it under one lock, one SQL transaction or one script, so a reader never sees
half of it and a crash never leaves half of it behind.

Leases and fencing: :meth:`Queue.claim` marks the best ready job RUNNING for a worker and
hands back a *token* (the job's ``attempt`` number). ``complete``, ``complete_many``,
``fail``, ``bury``, ``release`` and ``extend_lease`` must present that token; once a lease
expired and the job was given to someone else, the old token is stale and every call with
it raises :class:`~typedq.errors.StaleLeaseError` (``complete_many`` returns it in that
completion's place), so a slow worker can never overwrite the result of a newer attempt.

Readiness: a job is *ready* when it is PENDING, due (``scheduled_at`` is None or not in
the future) and every job in its ``depends_on`` is COMPLETED. When a job in ``depends_on``
ends FAILED, DEAD or CANCELLED, each job depending on it (and theirs, transitively) is
marked FAILED with an error naming it, in the same transition. A dependency must already
be in the queue (or in the same ``enqueue_many`` batch), so a cycle can only be formed
within one batch, and it is refused.

Named locks (:meth:`Queue.lock`) live beside the jobs, scoped like them by the queue's
name and store, each acquisition with a fencing token (see ``_locks``); so do the
queue's schedules (periodic jobs, :class:`ScheduleEntry`), whose state the scheduler
advances with a compare-and-set fenced by its leader lock.

Dead letters: ``bury``, ``reclaim_expired`` and ``retry`` take a ``dead_letter`` queue.
A job that goes DEAD is then copied into it *in the same transition* (a crash can never
leave a dead job without its dead letter, nor a dead letter of a job that is not dead),
and a retry takes the dead letter back out in the same transition as the job's re-opening.
This needs both queues in one store: the memory backend takes both queues' locks (in a
fixed order), SQLite needs the same file (one transaction), Redis the same server,
database and key prefix (one script). Any other pair is refused with
:class:`~typedq.errors.ConfigError` before anything is written
(:meth:`Queue.check_dead_letter`). With ``dlq_max``, the dead-letter queue keeps at most
that many dead letters: the oldest are dropped in the same transition (each with its
DEAD row in its own queue, when it is still there), logged, and counted
(:meth:`Queue.count_dropped` of the dead-letter queue).

Job control: :meth:`Queue.renew_lease` is the heartbeat's renewal, which also reports
whether the job's cancellation was requested (so a worker on any host learns of it within
one heartbeat); :meth:`Queue.set_progress` and :meth:`Queue.append_logs` store what a
running handler reports, fenced by the lease token like a completion, kept with the job
(``Job.progress``, :meth:`Queue.get_logs`); :meth:`Queue.reorder` moves a ready job
inside its priority level (see ``_control``).

Backends keep no policy: retries, events and validation of payloads live above them.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Final, NamedTuple, Protocol, runtime_checkable

from typedq.backends._locks import Lock, LockState
from typedq.backends._schedules import ScheduleEntry
from typedq.backends._unique import UniqueSweep
from typedq.clock import Clock
from typedq.errors import TypedqError
from typedq.job import Job, JobLogLine, JobProgress, JobStatus, Priority
from typedq.policy import ClaimPolicy

__all__ = [
    "WORKER_RETENTION_S",
    "Claim",
    "Completion",
    "LeaseRenewal",
    "Lock",
    "LockState",
    "Queue",
    "ScheduleEntry",
    "UniqueSweep",
    "WorkerInfo",
]

#: How long a worker that stopped heartbeating stays listed (as dead) in the registry.
WORKER_RETENTION_S: Final = 3600.0


class Claim(NamedTuple):
    """A job handed to a worker: the job, its lease token and the lease deadline."""

    job: Job
    token: int
    lease_until: float


class Completion(NamedTuple):
    """One finished job for :meth:`Queue.complete_many`: its id, lease token and result."""

    job_id: str
    token: int
    result: Any = None


class LeaseRenewal(NamedTuple):
    """What a heartbeat learns (:meth:`Queue.renew_lease`): the new lease deadline and
    whether the job's cancellation was requested meanwhile."""

    lease_until: float
    cancel_requested: bool


@dataclass
class WorkerInfo:
    """A worker's entry in its queue's registry; the worker renews it every heartbeat.

    ``last_seen`` and ``started_at`` are epoch times of the worker's clock; the entry is
    *live* while ``last_seen`` is at most ``ttl_s`` old. ``stop_pid`` is the process to
    signal (SIGTERM) to stop the worker gracefully: the worker's own process, or the
    supervisor of a process pool (which would otherwise replace a stopped child).
    """

    worker_id: str
    queue: str
    host: str
    pid: int
    job_types: tuple[str, ...]
    version: str
    started_at: float
    last_seen: float
    ttl_s: float
    stop_pid: int
    jobs_done: int = 0
    jobs_failed: int = 0
    current: tuple[str, ...] = field(default_factory=tuple)
    #: Per-job-type outcome counters and wait / run-time histograms (JSON; the shape of
    #: ``typedq._worker_metrics``), read by the metrics exporter.
    metrics: dict[str, Any] = field(default_factory=dict)

    def alive(self, now: float) -> bool:
        """Whether the worker heartbeated within ``ttl_s`` of ``now``."""
        return now - self.last_seen <= self.ttl_s

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data (tuples as lists)."""
        data = asdict(self)
        data["job_types"] = list(self.job_types)
        data["current"] = list(self.current)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerInfo:
        """Rebuild an entry from :meth:`to_dict` data; keys this version does not know
        (written by a newer typedq) are ignored, missing ones take their defaults."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        return cls(**{**values, "job_types": tuple(data["job_types"]), "current": tuple(data["current"])})


@runtime_checkable
class Queue(Protocol):
    """The storage contract of a job queue.

    Built-in backends subclass it explicitly, so a missing method is a type error.
    """

    @property
    def name(self) -> str:
        """The queue's name."""
        ...

    @property
    def clock(self) -> Clock:
        """The clock the queue reads due times and lease deadlines from."""
        ...

    # -- adding -------------------------------------------------------------------------

    def enqueue(self, job: Job) -> str:
        """Add one job; return its id.

        Atomic. A job whose status is not PENDING is stored as it is (this is how a
        dead-letter queue holds dead jobs); only PENDING jobs are indexed to run.

        Raises:
            DuplicateJobError: a job with this id exists.
            UnknownDependencyError: a PENDING job depends on an id the queue lacks.
            DependencyCycleError: the job depends on itself.
        """
        ...

    def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        """Add many jobs all-or-nothing; return their ids in order.

        Jobs in the batch may depend on each other in any order.

        Raises:
            DuplicateJobError, UnknownDependencyError, DependencyCycleError: as
                :meth:`enqueue`, for the first offending job; nothing is stored.
        """
        ...

    # -- the specification's reads and writes -------------------------------------------

    def dequeue(self) -> Job | None:
        """Take the best ready job without a lease, or return None at once.

        The job is RUNNING when returned (so no other worker can take it) and its
        ``attempt`` is incremented; it is never reclaimed by lease expiry. Workers use
        :meth:`claim` instead.
        """
        ...

    def peek(self) -> Job | None:
        """Return the job :meth:`dequeue` would take, without taking it."""
        ...

    def get_job(self, job_id: str) -> Job:
        """Return the job with this id.

        Raises:
            JobNotFoundError: no such job (also a ``KeyError``).
        """
        ...

    def update_status(self, job_id: str, status: JobStatus) -> None:
        """Set a job's status, keeping every index consistent; O(1) for the memory backend.

        Setting PENDING makes the job eligible again; COMPLETED releases its dependents;
        FAILED, DEAD and CANCELLED fail them. A job that ends this way without a
        ``finished_at`` gets the current time (see :meth:`purge`).

        Raises:
            JobNotFoundError: no such job.
        """
        ...

    @property
    def size(self) -> int:
        """How many jobs the queue holds, in every state."""
        ...

    def ready_count(self) -> int:
        """How many jobs are ready to run now."""
        ...

    # -- leases -------------------------------------------------------------------------

    def claim(
        self, worker_id: str, *, lease_s: float, job_types: Collection[str] | None = None
    ) -> Claim | None:
        """Atomically take the best ready job for ``worker_id`` with a lease.

        The job becomes RUNNING, its ``attempt`` is incremented (the new token), and its
        lease runs ``lease_s`` seconds from now. With ``job_types``, only a job of one of
        those types is taken (the others wait for workers that handle them; an empty
        collection takes nothing). Returns None when no such job is ready. A claim
        clears the job's ``run_alone``.
        """
        ...

    def claim_many(
        self, worker_id: str, *, lease_s: float, limit: int, job_types: Collection[str] | None = None
    ) -> list[Claim]:
        """Claim up to ``limit`` ready jobs (of ``job_types``) in one transition, best first.

        While a PENDING job of the queue has ``run_alone`` set, at most one job is
        claimed: see :meth:`reclaim_expired`.
        """
        ...

    def complete(self, job_id: str, *, token: int, result: Any = None) -> Job:
        """RUNNING → COMPLETED with ``result``; release dependents. Returns the job.

        Raises:
            JobNotFoundError: no such job.
            StaleLeaseError: the job is not RUNNING under ``token``.
        """
        ...

    def complete_many(self, completions: Sequence[Completion]) -> list[Job | TypedqError]:
        """Complete many RUNNING jobs in one transition (a group commit); one outcome each.

        Each completion is fenced on its own, as :meth:`complete`. The outcome in its
        place is the completed job, or the error that refused it: ``StaleLeaseError``,
        ``JobNotFoundError``, or a ``SerializationError`` for a result that cannot be
        stored. A refused completion changes nothing and does not stop the others;
        every accepted one is committed together, before this returns, so no job is
        reported done before its completion is durable.

        Raises:
            BackendError: storage failed; nothing of the batch was written.
        """
        ...

    def fail(
        self,
        job_id: str,
        *,
        token: int,
        error: str,
        retry_at: float,
        traceback: str | None = None,
    ) -> Job:
        """RUNNING → PENDING for a retry at ``retry_at``: ``retry_count`` + 1, error kept.

        ``traceback`` becomes the job's ``traceback`` (its last ``MAX_TRACEBACK``
        characters; None clears the previous failure's).

        Raises:
            JobNotFoundError: no such job.
            StaleLeaseError: the job is not RUNNING under ``token``.
        """
        ...

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
        """RUNNING → DEAD (the dead-letter state) with ``error``; fail dependents.

        ``traceback`` becomes the job's ``traceback``, as in :meth:`fail`. With
        ``dead_letter``, a copy of the dead job (its ``queue`` field naming the queue it
        died in) goes into that queue in the same transition, replacing an older copy
        with its id; with ``dlq_max`` too, the oldest dead letters beyond ``dlq_max``
        are dropped in it, also in the same transition (see the module docstring).
        Returns the job as this queue now holds it.

        Raises:
            ConfigError: ``dead_letter`` is not a queue of this store (nor this queue
                itself), or ``dlq_max`` is not an int >= 1; nothing is written.
            JobNotFoundError: no such job.
            StaleLeaseError: the job is not RUNNING under ``token``.
        """
        ...

    def release(self, job_id: str, *, token: int) -> Job:
        """RUNNING → PENDING without counting a failure (the worker was interrupted).

        Raises:
            JobNotFoundError: no such job.
            StaleLeaseError: the job is not RUNNING under ``token``.
        """
        ...

    def extend_lease(self, job_id: str, *, token: int, lease_s: float) -> float:
        """Push the lease deadline to ``lease_s`` seconds from now; return it.

        Raises:
            JobNotFoundError: no such job.
            StaleLeaseError: the job is not RUNNING under ``token``.
        """
        ...

    def renew_lease(self, job_id: str, *, token: int, lease_s: float) -> LeaseRenewal:
        """:meth:`extend_lease`, also reporting whether cancellation was requested.

        The heartbeat's call: a worker learns of a :meth:`cancel` of its running job
        (from any process or host) within one heartbeat. Atomic, fenced like
        :meth:`extend_lease`.

        Raises:
            JobNotFoundError: no such job.
            StaleLeaseError: the job is not RUNNING under ``token``.
        """
        ...

    def set_progress(self, job_id: str, *, token: int, progress: JobProgress) -> None:
        """Store the running job's progress (it becomes ``Job.progress``).

        Fenced like :meth:`complete`: a worker whose lease is gone cannot overwrite the
        progress of a newer attempt. It is stored as the progress of attempt ``token``
        (its ``attempt`` field set to it) and stays with the job after it ends, until the
        job is claimed again: a new attempt starts with none (``Job.progress`` is None).

        Raises:
            JobNotFoundError: no such job.
            StaleLeaseError: the job is not RUNNING under ``token``.
        """
        ...

    def append_logs(self, job_id: str, *, token: int, lines: Sequence[JobLogLine]) -> None:
        """Add log lines to the running job's log, keeping the newest ``MAX_JOB_LOGS``.

        Atomic and fenced like :meth:`set_progress`; lines longer than ``MAX_LOG_LINE``
        characters are cut.

        Raises:
            JobNotFoundError: no such job.
            StaleLeaseError: the job is not RUNNING under ``token``.
        """
        ...

    def get_logs(self, job_id: str) -> list[JobLogLine]:
        """The job's log lines, oldest first (at most ``MAX_JOB_LOGS``).

        Raises:
            JobNotFoundError: no such job.
        """
        ...

    def reorder(self, job_id: str, *, before: str | None = None, position: str | None = None) -> Job:
        """Move a PENDING job within its priority level; return it.

        ``position="front"`` puts it before every ready job of its priority,
        ``"back"`` after every ready job of its priority, ``before=other`` right before
        ``other`` (a PENDING job of the same priority). Priority always wins: the move
        rewrites the job's order key inside its level (``scheduled_at`` and
        ``created_at``, the keys after priority in the claim order), never its priority.
        Atomic.

        Raises:
            JobNotFoundError: ``job_id`` (or ``before``) names no job of this queue.
            InvalidJobError: not exactly one of ``before`` and ``position``, a
                ``position`` other than "front" or "back", or ``before`` of another
                priority or not PENDING (the message names the field).
            InvalidTransitionError: the job is not PENDING.
        """
        ...

    def reclaim_expired(
        self,
        *,
        max_lost: int = 3,
        limit: int = 1000,
        dead_letter: Queue | None = None,
        dlq_max: int | None = None,
    ) -> list[str]:
        """Give back up to ``limit`` RUNNING jobs whose lease has expired; return their ids.

        An expired lease is one its owner no longer renews. (SQLite also spares a lease
        whose owner is a live process of this host that renewed it within ``lease_s``
        by the host's monotonic clock, so a jump of the wall clock rescues nothing.)
        Each rescue is a compare-and-set on (RUNNING, same token, lease expired), so a
        job whose owner finished meanwhile is never touched.

        A job claimed alone has its ``lost_count`` incremented: lost ``max_lost`` times
        it goes DEAD ("worker lost N×"); a job whose cancellation was requested goes
        CANCELLED; the others go back to PENDING with ``run_alone`` set (a job that has
        taken its worker down is never claimed in a batch again). Jobs claimed together
        in one batch (same ``worker_id`` and ``started_at``, still RUNNING) cannot tell which of them
        was running when their worker died: each goes back to PENDING with
        ``run_alone`` set and its ``lost_count`` unchanged (CANCELLED if cancellation
        was requested), and while such a job waits, claims take one job at a time. A
        job that kills its worker is so found alone and counted, never its batch-mates.

        With ``dead_letter`` (and ``dlq_max``), a job that goes DEAD is copied into
        ``dead_letter`` in the same transition, as in :meth:`bury`.

        Raises:
            ConfigError: as :meth:`bury`, for ``dead_letter`` and ``dlq_max``.
        """
        ...

    # -- management ---------------------------------------------------------------------

    def cancel(self, job_id: str, *, token: int | None = None) -> bool:
        """Cancel a job; return True when it is now CANCELLED.

        A PENDING or SCHEDULED job becomes CANCELLED (its dependents FAILED). A RUNNING
        job is only *asked* to stop (``cancel_requested``) and False is returned; a job
        that already ended is left alone and False is returned.

        With ``token``, the worker holding the job's lease records that it stopped the
        job: RUNNING under ``token`` → CANCELLED (its dependents FAILED), fenced like
        :meth:`complete`.

        Raises:
            JobNotFoundError: no such job.
            StaleLeaseError: with ``token``, the job is not RUNNING under it.
        """
        ...

    def set_priority(self, job_id: str, priority: int | str) -> None:
        """Change a job's priority; a PENDING job is re-ordered at once.

        ``priority`` is an int from 1 to 10 or a level name in any case (``"high"``,
        see :class:`~typedq.job.Priority`).

        Raises:
            JobNotFoundError: no such job.
            InvalidJobError: ``priority`` neither 1-10 nor a level name.
        """
        ...

    def replay(self, job_id: str) -> Job:
        """DEAD → PENDING with ``retry_count`` 0 and no error or traceback: a fresh run.

        Raises:
            JobNotFoundError: no such job.
            InvalidTransitionError: the job is not DEAD.
        """
        ...

    def retry(
        self, job_id: str, *, with_dependents: bool = False, dead_letter: Queue | None = None
    ) -> list[str]:
        """FAILED, DEAD or CANCELLED → PENDING as a fresh run; return the ids re-opened.

        The job's ``retry_count``, ``lost_count``, error, traceback, result and schedule
        are reset.
        With ``with_dependents``, every job that ended FAILED because this one did
        (its error names it as a dependency), transitively, is re-opened too and waits
        for it again. With ``dead_letter``, the job's copy there is removed (a replay
        from the dead-letter queue), and when this queue no longer holds the job, the
        copy is put back here first and re-opened. All in one transition; the job's id
        comes first.

        Raises:
            ConfigError: ``dead_letter`` is not a queue of this store (nothing written).
            JobNotFoundError: neither this queue nor ``dead_letter`` holds the job.
            InvalidTransitionError: the job is PENDING, RUNNING, SCHEDULED or COMPLETED.
        """
        ...

    def purge(self, *, statuses: Collection[JobStatus], older_than: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` jobs in ``statuses`` that finished before ``older_than``
        (their ``finished_at``, an epoch time), oldest first; return how many went.

        One transition per call (a bounded batch: call again while it returns
        ``limit``). Each job goes as :meth:`delete` removes it, so the dependency graph
        stays consistent (a finished job has no dependent waiting on it). A job that
        ended without a ``finished_at`` (stored so by hand) is never purged.

        Raises:
            InvalidTransitionError: a status in ``statuses`` is not COMPLETED, FAILED,
                DEAD or CANCELLED (only jobs that ended are purged).
            InvalidJobError: ``limit`` is negative.
        """
        ...

    def sweep_unique_keys(self, *, cursor: str = "", limit: int = 1000) -> UniqueSweep:
        """Remove the unique-key entries that no longer hold their key, examining about
        ``limit`` entries from ``cursor`` on; return how many went and the next cursor.

        An entry holds its key while its job exists, is in one of the entry's states and
        its ``unique_for`` has not passed (see "Unique jobs" in the README); the others
        are dead weight, which the next submit of their key would replace. One
        transition per call, so a submit taking a key at the same moment either comes
        first (its entry holds, and stays) or finds the entry gone; an entry that holds
        is never removed. Start with ``cursor=""`` and pass the returned cursor back
        until it is ``""`` again (a whole round; entries added meanwhile may be seen on
        the next one). The cursor is each backend's own text.

        Raises:
            InvalidJobError: ``cursor`` is not one a sweep of this backend returned, or
                ``limit`` is not an int >= 1.
        """
        ...

    def delete(self, job_id: str) -> None:
        """Remove a job that is not RUNNING (acknowledge a dead letter, prune a result).

        Raises:
            JobNotFoundError: no such job.
            InvalidTransitionError: the job is RUNNING.
        """
        ...

    def set_claim_policy(self, policy: ClaimPolicy | None) -> None:
        """Claim by ``policy`` from now on (None: strict priority, no limits).

        The policy is this handle's configuration; the state it needs (fairness virtual
        times, recent claim times) is kept in the store, shared by every handle, and
        changed by each claim in its atomic transition. See :mod:`typedq.policy`.
        """
        ...

    @property
    def claim_policy(self) -> ClaimPolicy | None:
        """The policy claims follow (None: strict priority, no limits)."""
        ...

    def count_by_priority(self) -> dict[Priority, int]:
        """How many jobs are ready to run now per priority level (every level present).

        Ready: PENDING, due and unblocked, as :meth:`ready_count` counts them; a cheap
        read on every backend (index counts, no scan of the jobs).
        """
        ...

    def count_by_status(self) -> dict[JobStatus, int]:
        """Return how many jobs are in each status (every status present, maybe 0)."""
        ...

    def count_scheduled(self) -> int:
        """How many PENDING jobs are due later than now (delayed, or waiting to retry).

        They are part of the PENDING count. A cheap read on every backend: the size of
        memory's delayed heap, a count on Redis's delayed set by due time (O(log n)), and
        on SQLite a range of the index of delayed jobs (it reads only the entries of jobs
        due later).
        """
        ...

    def check_dead_letter(self, dead_letter: Queue) -> None:
        """Check that ``dead_letter`` can take this queue's dead jobs in one transition.

        Raises:
            ConfigError: ``dead_letter`` is this queue itself, or not a queue of the same
                store (memory: a ``JobQueue``; SQLite: the same file; Redis: the same
                server, database and key prefix); the message names both.
        """
        ...

    def count_dropped(self) -> int:
        """How many dead letters this queue, as a dead-letter queue, dropped to stay
        within ``dlq_max``, ever (kept in the store: every process sees the same count)."""
        ...

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
        """Return up to ``limit`` jobs, oldest first, optionally filtered.

        A read; no transition. Order is insertion order (the order jobs were added),
        which a job keeps for life.

        Args:
            status: only jobs in this status.
            job_type: only jobs of this type.
            limit: the most jobs to return.
            offset: skip this many matching jobs first (after ``after``, if given).
            after: a job id, the cursor of keyset pagination: the listing continues
                after that job in the same order, whatever that job's status or type.
                A backend finds the position without scanning the jobs before it.
            newest: newest first instead of oldest first.

        Raises:
            JobNotFoundError: ``after`` names no job of this queue.
            InvalidJobError: ``limit`` or ``offset`` is negative.
        """
        ...

    def count_by_type(self, status: JobStatus = JobStatus.PENDING) -> dict[str, int]:
        """Return how many jobs of each job type are in ``status`` (types with none left out)."""
        ...

    def count_submitted(self) -> dict[str, int]:
        """Return how many jobs were ever submitted to the queue, per job type.

        A monotonic count: each job added by :meth:`enqueue`, :meth:`enqueue_many` or
        :meth:`import_jobs` counts once, and nothing decreases it (completion, purge,
        delete). Dead letters copied into a dead-letter queue, replays and retries are
        not submissions. Kept by the backend (not in a process's memory), so every
        process reads the same counts; read in O(job types).
        """
        ...

    def export_jobs(self) -> list[dict[str, Any]]:
        """Return every job as ``Job.to_dict()`` data (its ``progress`` included) plus
        its log lines under ``"logs"`` (``JobLogLine.to_dict()`` dicts), oldest first."""
        ...

    def import_jobs(self, jobs_data: Iterable[dict[str, Any]]) -> list[str]:
        """Add jobs from ``export_jobs()`` data, all-or-nothing; return their ids.

        Each job keeps its progress and its log lines (a record without ``"logs"``, as
        older versions exported, has none), stored in the same atomic step as the jobs.

        Raises:
            InvalidJobError: a record is malformed; as :meth:`enqueue_many` otherwise.
        """
        ...

    # -- the worker registry ------------------------------------------------------------

    def register_worker(self, info: WorkerInfo) -> None:
        """Add or renew ``info`` in the queue's worker registry (a heartbeat).

        Entries not renewed for :data:`WORKER_RETENTION_S` are forgotten, their figures
        added to :meth:`retired_metrics` in the same atomic step.
        """
        ...

    def unregister_worker(self, worker_id: str, *, final: WorkerInfo | None = None) -> None:
        """Remove a worker that stopped on its own; an unknown id is ignored.

        In the same atomic step the worker's figures (``final.metrics``: what it did up
        to its stop, when given; else its entry's, as of its last heartbeat) are added
        to the queue's retired-workers totals (:meth:`retired_metrics`), once: an entry
        already removed (forgotten after :data:`WORKER_RETENTION_S`, whose figures were
        added then) adds nothing.
        """
        ...

    def retired_metrics(self) -> dict[str, Any]:
        """The summed figures (``WorkerInfo.metrics`` shape) of every worker whose entry
        was removed: unregistered, or forgotten after :data:`WORKER_RETENTION_S` (those
        entries' figures are added when they are forgotten). With the figures of the
        entries listed by :meth:`workers`, each worker is counted exactly once."""
        ...

    def workers(self) -> list[WorkerInfo]:
        """The registered workers of this queue, live and recently dead, oldest first."""
        ...

    # -- named locks --------------------------------------------------------------------

    def lock(self, name: str, ttl_s: float) -> Lock:
        """A handle on the named lock ``name`` of this queue's store (see ``_locks``).

        Raises:
            ConfigError: ``name`` is empty or longer than 200 characters, or ``ttl_s`` is
                not a finite number > 0.
        """
        ...

    def acquire_lock(self, name: str, *, owner: str, ttl_s: float) -> int | None:
        """Take lock ``name`` for ``owner`` if it is free or expired; return the new token.

        Atomic: the lock's fence counter is incremented and the holder set in one
        transition; the counter is never reset (a release or an expiry keeps it), so
        every token is greater than every earlier one of that lock. Returns None while
        another (or the same) owner holds it.

        Raises:
            ConfigError: a bad name, owner or ``ttl_s``.
        """
        ...

    def renew_lock(self, name: str, *, token: int, ttl_s: float) -> bool:
        """Push the deadline of lock ``name`` to ``ttl_s`` from now if ``token`` holds it.

        Atomic compare-and-extend. False (and nothing changed) when the token is stale:
        the lock expired, was released, or was taken under a newer token.
        """
        ...

    def release_lock(self, name: str, *, token: int) -> bool:
        """Free lock ``name`` if ``token`` holds it; False (nothing changed) otherwise.

        Atomic compare-and-delete; the fence counter is kept.
        """
        ...

    def lock_state(self, name: str) -> LockState | None:
        """Who holds lock ``name`` now; None when it is free or its deadline passed."""
        ...

    # -- schedules ----------------------------------------------------------------------

    def put_schedule(self, entry: ScheduleEntry) -> ScheduleEntry:
        """Store a schedule of this queue; return it as stored.

        Atomic. A new name is stored as given. For an existing name whose definition
        (every field but the state) is unchanged, nothing changes; a changed definition
        replaces the stored one together with ``next_run_at``, keeping ``paused`` and
        ``last_run_at``. Many processes may so declare the same schedule at start-up.

        Raises:
            ConfigError: the name is invalid, or the payload or options are not JSON-safe.
        """
        ...

    def get_schedule(self, name: str) -> ScheduleEntry:
        """Return the schedule ``name`` of this queue.

        Raises:
            ScheduleNotFoundError: no such schedule (also a ``KeyError``).
        """
        ...

    def list_schedules(self) -> list[ScheduleEntry]:
        """Every schedule of this queue, by name."""
        ...

    def remove_schedule(self, name: str) -> bool:
        """Delete the schedule ``name``; False when there was none."""
        ...

    def pause_schedule(self, name: str, *, paused: bool, next_run_at: float | None = None) -> ScheduleEntry:
        """Set the schedule's ``paused`` flag (and ``next_run_at`` when given); return it.

        Raises:
            ScheduleNotFoundError: no such schedule.
        """
        ...

    def advance_schedule(
        self,
        name: str,
        *,
        expected: float,
        next_run_at: float | None,
        last_run_at: float | None,
        fence: tuple[str, int] | None = None,
    ) -> bool:
        """Record that the slots up to ``last_run_at`` fired: a compare-and-set.

        Atomic: only when the schedule's ``next_run_at`` is still ``expected`` and, with
        ``fence`` (a lock name and token), that lock of this queue is still held under
        that token, are ``next_run_at`` and ``last_run_at`` set; otherwise nothing
        changes and False is returned (another scheduler advanced it, or this one's
        leadership was lost).
        """
        ...

    # -- waiting ------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float, job_types: Collection[str] | None = None) -> bool:
        """Block until a job may be ready, :meth:`interrupt` is called, or ``timeout_s``.

        With ``job_types`` (what the caller claims with; None: any type), only jobs of
        those types count: jobs ready of other types neither end the wait nor make it
        return True, so a worker that handles some types waits while others' jobs wait
        for their workers, and the wake-up of a job of its types is never taken by a
        waiter of other types.

        Returns whether such a job is ready. Never spins: a backend that cannot be
        notified of another process's jobs sleeps, or polls a cheap change counter at a
        bounded rate (SQLite: ``PRAGMA data_version`` every 10 ms, one thread per file
        and process).
        """
        ...

    def interrupt(self) -> None:
        """Wake every thread blocked in :meth:`wait_ready`."""
        ...

    def close(self) -> None:
        """Release connections and files; the queue is unusable afterwards."""
        ...
