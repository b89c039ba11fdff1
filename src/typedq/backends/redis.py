"""``RedisQueue``: a durable queue in Redis, shared by the processes of many hosts.

This module owns the Redis backend's public class. Beside it: the key layout, URL form
and job <-> hash encoding in ``_redis_keys``; connections, error mapping and the checks
made at open in ``_redis_conn``; the Lua scripts in ``_redis_lua``; waiting for work in
``_redis_wait``; named locks in ``_redis_coord``.

How it runs:

* Every state transition is one Lua script (enqueue and enqueue_many, claim and
  claim_many, complete and complete_many, fail, bury, release, extend_lease,
  reclaim_expired, cancel, set_priority, replay, update_status, delete; each releasing or
  failing dependents in the same script). Scripts are registered once per process and
  called by SHA (``EVALSHA``); a server that lost them (restart, ``SCRIPT FLUSH``) gets
  them again on ``NOSCRIPT``.
* Adding jobs: the client judges which index each job goes into (the ready sets, the
  leases, a finish-time index, or ``place()`` for jobs with dependencies, to be run alone
  or due later) from the job and the time it sends, and a batch with no job to place and
  no unique key runs a smaller script (``enqueue_direct``), without those helpers; one
  such job (``enqueue``) a smaller one still (``enqueue_one``): the same writes in a
  straight line, without the batch's tables and loops or the shared Lua helpers.
* Claim order is the order of every backend (priority desc, scheduled_at with None
  first, created_at, arrival), encoded in one sorted-set member (see ``_redis_keys``).
  Delayed jobs sit in their own sorted set by due time; each claim first promotes the
  due ones (at most 1,000).
* Times come from the queue's clock: due times and lease deadlines are the client's
  clock readings, so the clocks of the hosts sharing a queue should agree (NTP). Claims
  and renewals also record the lease deadline by the server's ``TIME``, and the worker
  registry keeps each live worker's heartbeat as a key expiring by the server's clock:
  ``reclaim_expired`` keeps an expired lease while its owner is live and the lease holds
  by the server's clock (a reaper whose clock runs ahead rescues nothing from a live
  worker of any host; no pid is ever checked), and rescues a lease expired by the
  server's clock whatever the caller's clock says (a clock behind the others', or
  stepped back, keeps no dead worker's job).
* A claim decodes its jobs after the script ran; a job whose stored payload or metadata
  cannot be decoded is moved to DEAD by a second script, fenced on the claim just made,
  with the reason as its error; the others are handed out (when all were such jobs, the
  claim is made again). Reads never fail on such bytes: the job is returned with
  ``payload={}`` and the problem and raw bytes under ``metadata["typedq.undecodable"]``.
* ``size``, ``count_by_status`` and ``ready_count`` read the sizes of sets the scripts
  maintain (no counter is written for them); ``list_jobs`` pages an index by arrival (a
  status or a job type; all jobs: the status indexes merged), never every job.
  ``count_submitted`` reads the per-type counter the enqueue script adds to.
* Idle workers block in ``BLPOP`` on the queue's wake list, which every transition that
  makes work ready pushes to, and on a list of their own queue object that
  :meth:`RedisQueue.interrupt` pushes to: no polling.

Durability is Redis's: with ``appendonly yes`` and ``appendfsync everysec`` (the usual
setting) a crash of the machine may lose the last second or two of transitions;
``appendfsync always`` loses none; RDB snapshots alone lose everything since the last
snapshot. A server that came back without its data is reported (``_redis_conn``,
the epoch marker). Set ``maxmemory-policy noeviction`` (warned about, or refused with
``eviction=refuse``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Collection, Iterable, Sequence
from typing import Any, Final

from typedq.backends import _redis_conn as conn
from typedq.backends import _redis_coord as coord
from typedq.backends._control import encode_logs
from typedq.backends._graph import check_batch_acyclic, dependency_order, jobs_from_export
from typedq.backends._redis_async import AsyncStatusReader
from typedq.backends._redis_control import CONTROL_SCRIPTS, RedisJobControl
from typedq.backends._redis_dead import RedisDeadLetters
from typedq.backends._redis_keys import HashCodec, base_key, parse_redis_url, sort_hex
from typedq.backends._redis_lua import PACKED, SCRIPTS
from typedq.backends._redis_lua_policy import POLICY_SCRIPTS
from typedq.backends._redis_lua_unique import UNIQUE_SCRIPTS, RedisUniqueKeys
from typedq.backends._redis_reads import RedisReads
from typedq.backends._redis_registry import REGISTRY_SCRIPTS
from typedq.backends._redis_wait import MIN_BLOCK_S, Waiters
from typedq.backends._unique import UniqueSpec, unique_of
from typedq.backends.base import Claim, Completion, Queue
from typedq.clock import Clock, system_clock
from typedq.errors import (
    BackendDataError,
    BackendError,
    ConfigError,
    DependencyCycleError,
    DeserializationError,
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
    parse_priority,
)
from typedq.policy import ClaimPolicy
from typedq.serializers.base import FrameCodec

__all__ = ["RedisQueue", "parse_redis_url"]

_PENDING: Final = JobStatus.PENDING
_COMPLETED: Final = JobStatus.COMPLETED
#: Most claims remembered for complete(); half are forgotten when it is passed.
_INFLIGHT_MAX: Final = 8192
#: Every script a queue registers: its transitions and its locks'.
_SCRIPTS: Final = {
    **SCRIPTS, **coord.COORD_SCRIPTS, **POLICY_SCRIPTS, **CONTROL_SCRIPTS, **REGISTRY_SCRIPTS,
    **UNIQUE_SCRIPTS,
}


def _num(value: float) -> str:
    """A time or number as exact text (Lua would round it to 14 digits)."""
    return repr(float(value))


def _unique_args(specs: Sequence[tuple[int, UniqueSpec]], now: float) -> list[Any]:
    """The enqueue script's unique-key arguments: per key, the job's position in the
    script's batch (from 1), the key, the hold's end ('' for none) and the states."""
    args: list[Any] = [str(len(specs))]
    for index, spec in specs:
        until = spec.until(now)
        args += (str(index), spec.key, "" if until is None else _num(until), spec.states_text)
    return args


def _max_arg(dlq_max: int | None) -> str | int:
    """A script's dlq_max argument: '' for none."""
    return "" if dlq_max is None else dlq_max


def _traceback_arg(traceback: str | None) -> str:
    """A script's traceback argument: its last ``MAX_TRACEBACK`` characters, '' for none."""
    return "" if traceback is None else traceback[-MAX_TRACEBACK:]


class RedisQueue(
    coord.RedisCoordination, RedisJobControl, RedisReads, RedisDeadLetters, RedisUniqueKeys, Queue
):
    """A durable job queue stored in Redis; safe across threads, processes and hosts.

    Args:
        url: ``redis://[user:pass@]host:port/db?prefix=typedq``, ``rediss://`` (TLS) or
            ``redis+sentinel://`` (the master Sentinel names); see
            :func:`~typedq.backends._redis_keys.parse_redis_url` for the forms and options.
        name: the queue's name (its keys are under ``{prefix}:{name}``; see
            ``_redis_keys`` for why the hash tag is the prefix).
        clock: the time source for due times and lease deadlines (tests pass a
            ``FakeClock``).
        codec: how payloads, metadata and results are stored; ``FrameCodec("json")``
            when omitted.

    Raises:
        ConfigError: a bad URL, option or queue name.
        BackendUnavailableError: the server does not answer (the URL is named, its
            password masked).
        BackendDataError: a key of the queue has a type typedq does not use there.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        name: str = "default",
        clock: Clock = system_clock,
        codec: FrameCodec | None = None,
    ) -> None:
        given: object = name
        if not isinstance(given, str) or not given:
            raise ConfigError("name", name, "a non-empty queue name")
        self._settings = settings = parse_redis_url(url)
        self._base = base = base_key(settings.prefix, name)
        self._name = name
        self._clock = clock
        self._hashes = HashCodec(codec if codec is not None else FrameCodec("json"))
        self._waiters = Waiters(base)
        self._closed = False
        self._inflight: dict[tuple[str, int], Job] = {}
        self._link = conn.Link(settings, base, _SCRIPTS, name=name, packed=PACKED)
        self._policy: ClaimPolicy | None = None
        self._policy_wire: str | None = None
        self._link.open()

    # -- connection ---------------------------------------------------------------------

    @property
    def _r(self) -> Any:
        """This process's client (see ``_redis_conn.Link``)."""
        return self._link.client

    def _run(self, script: str, args: Sequence[Any], dlq: str | None = None) -> Any:
        """Run one registered script (EVALSHA; loaded again on NOSCRIPT); ``dlq``, the base
        key of a dead-letter queue of the prefix, is its ``KEYS[2]``.

        Raises:
            QueueClosedError: the queue was closed.
        """
        if self._closed:
            raise QueueClosedError(f"the Redis queue {self._name!r} at {self.url} is closed; nothing was run")
        return self._link.run(script, args, dlq)

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
    def url(self) -> str:
        """The server's URL, password masked."""
        return self._settings.masked_url

    @property
    def key_prefix(self) -> str:
        """The base key every key of this queue starts with: ``{prefix}:{name}``."""
        return self._base

    @property
    def size(self) -> int:
        """How many jobs the queue holds, in every state (the status indexes' sizes)."""
        return sum(self.count_by_status().values())

    def __repr__(self) -> str:
        return f"RedisQueue({self.url!r}, name={self._name!r})"

    def queue_names(self) -> list[str]:
        """The name of every queue under this prefix that holds jobs or schedules (not only
        this one), sorted.

        Not part of the ``Queue`` protocol: it describes the server, not the queue. An
        operator's read: it ``SCAN``s the database for the queues' ``meta`` keys (one per
        queue), then reads each one's status index sizes.
        """
        with conn.map_errors(self._settings):
            return conn.queue_names(self._r, self._settings.prefix)

    # -- adding -------------------------------------------------------------------------

    def enqueue(self, job: Job) -> str:
        """Add one job in one script; see :meth:`Queue.enqueue`."""
        if job.depends_on and job.job_id in job.depends_on and job.status is _PENDING:
            raise DependencyCycleError([job.job_id, job.job_id])
        now = self._clock.now()
        args: list[Any] = [_num(now), "1"]
        placed = self._hashes.enqueue_args(job, now, args)
        spec = unique_of(job)
        if spec is not None:
            args += _unique_args([(1, spec)], now)
        self._added(self._run("enqueue" if placed or spec is not None else "enqueue_one", args))
        return job.job_id

    def enqueue_many(self, jobs: Sequence[Job]) -> list[str]:
        """Add many jobs all-or-nothing, in one script; see :meth:`Queue.enqueue_many`.

        Raises:
            SerializationError: a job's payload, metadata or result cannot be encoded;
                the message names ``jobs[i]`` and the job id. Nothing is stored.
        """
        return self._enqueue_batch(jobs, {})

    def _enqueue_batch(self, jobs: Sequence[Job], logs: dict[str, list[JobLogLine]]) -> list[str]:
        """``enqueue_many``, storing ``logs`` (by job id) in the jobs' hashes, in the same script."""
        batch: dict[str, Job] = {}
        now = self._clock.now()
        # The script's arguments are written as the jobs are checked; a batch with
        # dependencies has its jobs' arguments put in dependency order after.
        args: list[Any] = [_num(now), "0"]
        starts: list[int] = []
        has_deps = placed = False
        put = self._hashes.enqueue_args
        for index, job in enumerate(jobs):
            job_id = job.job_id
            if job_id in batch:
                raise DuplicateJobError(job_id, queue=self._name)
            batch[job_id] = job
            starts.append(len(args))
            try:
                if put(job, now, args, encode_logs(logs[job_id]) if job_id in logs else None):
                    placed = True
            except SerializationError as exc:
                exc.args = (f"jobs[{index}]: {exc}",)
                raise
            if job.depends_on:
                has_deps = True
                if job.status is _PENDING and job_id in job.depends_on:
                    raise DependencyCycleError([job_id, job_id])
        if not batch:
            return []
        args[1] = str(len(batch))
        position: dict[str, int] = {}
        if has_deps:
            check_batch_acyclic(batch)
            starts.append(len(args))
            spans = {job_id: (starts[i], starts[i + 1]) for i, job_id in enumerate(batch)}
            ordered: list[Any] = args[:2]
            for index, job in enumerate(dependency_order(batch), start=1):
                lo, hi = spans[job.job_id]
                ordered += args[lo:hi]
                position[job.job_id] = index
            args = ordered
        # In the batch's order, so the first of two jobs with one key takes it.
        specs = [
            (position[job_id] if has_deps else index, spec)
            for index, (job_id, job) in enumerate(batch.items(), start=1)
            if (spec := unique_of(job)) is not None
        ]
        if specs:
            args += _unique_args(specs, now)
        self._added(self._run("enqueue" if placed or specs else "enqueue_direct", args))
        return list(batch)

    def _added(self, reply: Any) -> None:
        if isinstance(reply, list):
            kind = reply[0].decode()
            if kind == "duplicate":
                raise DuplicateJobError(reply[1].decode(), queue=self._name)
            if kind == "unique":
                raise DuplicateJobError(
                    reply[1].decode(), queue=self._name,
                    unique_key=reply[2].decode(), existing_id=reply[3].decode(),
                )
            if kind == "unknown":
                raise UnknownDependencyError(reply[1].decode(), reply[2].decode(), queue=self._name)
            raise self._wrong_type(reply)

    def _wrong_type(self, reply: list[Any]) -> BackendDataError:
        """A script's refusal ``{'wrongtype', key, type}``: nothing was written."""
        return BackendDataError(
            f"Redis at {self.url}: key {reply[1].decode()} is a {reply[2].decode()}, where typedq "
            "keeps a job hash; typedq will not overwrite it"
        )

    def import_jobs(self, jobs_data: Iterable[dict[str, Any]]) -> list[str]:
        """Add jobs from ``export_jobs()`` data all-or-nothing; see :meth:`Queue.import_jobs`."""
        return self._enqueue_batch(*jobs_from_export(jobs_data))

    # -- claiming -----------------------------------------------------------------------

    def _take(
        self,
        mode: str,
        limit: int,
        worker_id: str = "",
        until: str = "",
        job_types: Collection[str] | None = None,
    ) -> list[Job]:
        """Take up to ``limit`` ready jobs in one script, burying undecodable ones."""
        if limit <= 0:
            return []
        types: list[str] = [] if job_types is None else sorted(set(job_types))
        if job_types is not None and not types:
            return []
        decode = self._hashes.job
        while True:
            now = _num(self._clock.now())
            if mode == "claim" and self._policy_wire is not None:
                overdue = self._overdue(float(now))
                args = [now, limit, worker_id, until, self._policy_wire, len(types), *types, *overdue]
                got = self._run("claim_policy", args)
            else:
                got = self._run("claim", [now, mode, limit, worker_id, until, len(types), *types])
            taken: list[Job] = []
            bad: list[tuple[str, int, DeserializationError]] = []
            for raw_id, flat in got:
                job_id = raw_id.decode()
                try:
                    taken.append(decode(job_id, flat, strict=True))
                except DeserializationError as exc:
                    attempt = int(dict(zip(flat[::2], flat[1::2], strict=True)).get(b"a", 0))
                    bad.append((job_id, attempt, exc))
            for job_id, attempt, problem in bad:
                self._run("leased", [now, job_id, attempt, "undecodable", str(problem)])
                conn.logger.warning(
                    "job %s of queue %r moved to DEAD at claim: %s", job_id, self._name, problem
                )
            if taken or not got:
                break
        if mode == "claim":
            inflight = self._inflight
            for job in taken:
                inflight[job.job_id, job.attempt] = job
            if len(inflight) > _INFLIGHT_MAX:
                for key in list(itertools.islice(inflight, _INFLIGHT_MAX // 2)):
                    inflight.pop(key, None)
        return taken

    def claim(
        self, worker_id: str, *, lease_s: float, job_types: Collection[str] | None = None
    ) -> Claim | None:
        """Take the best ready job with a lease; see :meth:`Queue.claim`.

        ``job_types``: only jobs of these types are claimed (None: any; empty: none).
        """
        until = self._clock.now() + lease_s
        taken = self._take("claim", 1, worker_id, _num(until), job_types)
        return Claim(taken[0], taken[0].attempt, until) if taken else None

    def claim_many(
        self, worker_id: str, *, lease_s: float, limit: int, job_types: Collection[str] | None = None
    ) -> list[Claim]:
        """Claim up to ``limit`` ready jobs in one script; see :meth:`Queue.claim_many`.

        While a job to be run alone (a batch rescue) is ready, at most one is claimed.
        """
        until = self._clock.now() + lease_s
        taken = self._take("claim", limit, worker_id, _num(until), job_types)
        return [Claim(job, job.attempt, until) for job in taken]

    def dequeue(self) -> Job | None:
        """Take the best ready job without a lease; see :meth:`Queue.dequeue`."""
        taken = self._take("dequeue", 1)
        return taken[0] if taken else None

    def peek(self) -> Job | None:
        """Return the job :meth:`dequeue` would take, without taking it."""
        got = self._run("claim", [_num(self._clock.now()), "peek", 1, "", "", 0])
        if not got:
            return None
        return self._hashes.job(got[0][0].decode(), got[0][1])

    # -- leased transitions -------------------------------------------------------------

    def _refused(self, job_id: str, token: int, reply: list[Any]) -> TypedqError:
        if reply[0] == b"missing":
            return JobNotFoundError(job_id, queue=self._name)
        if reply[0] == b"wrongtype":
            return self._wrong_type(reply)
        status, attempt = reply[1].decode(), int(reply[2])
        if status != "RUNNING":
            return StaleLeaseError(job_id, token, reason=f"the job is {status}, not RUNNING")
        return StaleLeaseError(job_id, token, reason=f"attempt {attempt} holds the lease now")

    def complete(self, job_id: str, *, token: int, result: Any = None) -> Job:
        """RUNNING → COMPLETED and release dependents, in one script; see :meth:`Queue.complete`.

        The returned job is the one this object handed out at claim (as with the memory
        backend) with its completion applied, when it still has it.
        """
        outcome = self.complete_many([Completion(job_id, token, result)])[0]
        if isinstance(outcome, TypedqError):
            raise outcome
        return outcome

    def complete_many(self, completions: Sequence[Completion]) -> list[Job | TypedqError]:
        """Complete many jobs in one script (a group commit); see :meth:`Queue.complete_many`."""
        outcomes: list[Job | TypedqError | None] = [None] * len(completions)
        places: list[tuple[int, str, int, Any, Job | None]] = []
        args: list[Any] = [_num(self._clock.now())]
        inflight = self._inflight
        encode = self._hashes.encode_result
        for index, (job_id, token, result) in enumerate(completions):
            try:
                blob = encode(job_id, result)
            except SerializationError as exc:
                outcomes[index] = exc
                continue
            cached = inflight.pop((job_id, token), None)
            places.append((index, job_id, token, result, cached))
            has = blob is not None
            args += (job_id, str(token), blob if has else b"", "1" if has else "0", "0" if cached else "1")
        if places:
            now = float(args[0])
            replies = self._run("complete", args)
            for (index, job_id, token, result, cached), reply in zip(places, replies, strict=True):
                if reply[0] != b"ok":
                    outcomes[index] = self._refused(job_id, token, reply)
                    continue
                if cached is None:
                    job = self._hashes.job(job_id, reply[3])
                    job.result = result
                else:
                    job = cached
                    job.status = _COMPLETED
                    job.result = result
                    job.finished_at = now
                    job.lease_until = None
                    job.priority = int(reply[1])
                    job.cancel_requested = reply[2] == b"1"
                outcomes[index] = job
        return [o for o in outcomes if o is not None]

    def _leased(self, job_id: str, token: int, action: str, *extra: Any, dlq: str | None = None) -> list[Any]:
        reply = self._run("leased", [_num(self._clock.now()), job_id, token, action, *extra], dlq)
        if reply[0] != b"ok":
            raise self._refused(job_id, token, reply)
        return reply  # type: ignore[no-any-return]  # the script's reply array

    def fail(
        self, job_id: str, *, token: int, error: str, retry_at: float, traceback: str | None = None
    ) -> Job:
        """RUNNING → PENDING for a retry at ``retry_at``; see :meth:`Queue.fail`."""
        check_failure_text(error, traceback)
        self._inflight.pop((job_id, token), None)
        reply = self._leased(
            job_id, token, "fail", error, _num(retry_at), sort_hex(retry_at), _traceback_arg(traceback)
        )
        return self._hashes.job(job_id, reply[1])

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
        """RUNNING → DEAD, fail dependents and put the dead letter into ``dead_letter``, in
        one script; see :meth:`Queue.bury`."""
        check_failure_text(error, traceback)
        dlq = self._dead_letter_base(dead_letter, dlq_max)
        self._inflight.pop((job_id, token), None)
        reply = self._leased(
            job_id, token, "bury", error, _traceback_arg(traceback), _max_arg(dlq_max), dlq=dlq
        )
        if len(reply) > 2:
            self._log_dropped(dead_letter, dlq_max, reply[2])
        return self._hashes.job(job_id, reply[1])

    def release(self, job_id: str, *, token: int) -> Job:
        """RUNNING → PENDING, not counted as a failure; see :meth:`Queue.release`."""
        self._inflight.pop((job_id, token), None)
        return self._hashes.job(job_id, self._leased(job_id, token, "release")[1])

    def extend_lease(self, job_id: str, *, token: int, lease_s: float) -> float:
        """Push the lease deadline; see :meth:`Queue.extend_lease`."""
        until = self._clock.now() + lease_s
        self._leased(job_id, token, "extend", _num(until))
        return until

    def reclaim_expired(
        self,
        *,
        max_lost: int = 3,
        limit: int = 1000,
        dead_letter: Queue | None = None,
        dlq_max: int | None = None,
    ) -> list[str]:
        """Give back expired leases in one script; see :meth:`Queue.reclaim_expired`.

        A job claimed in a batch (``claim_many``) whose batch-mates are still RUNNING goes
        back PENDING to be claimed alone, its ``lost_count`` unchanged: nobody knows which
        job of the batch was running. Every other rescue counts a loss. A job that goes
        DEAD has its dead letter put into ``dead_letter`` in the same script.
        """
        dlq = self._dead_letter_base(dead_letter, dlq_max)
        if limit <= 0:
            return []
        args = [_num(self._clock.now()), max_lost, limit, _max_arg(dlq_max)]
        reply = self._run("reclaim", args, dlq)
        if reply[0] == b"wrongtype":
            raise self._wrong_type(reply)
        done, dropped = reply
        self._log_dropped(dead_letter, dlq_max, dropped)
        return [raw.decode() for raw in done]

    # -- management ---------------------------------------------------------------------

    def _manage(self, job_id: str, action: str, *extra: Any, dlq: str | None = None) -> list[Any]:
        reply = self._run("manage", [_num(self._clock.now()), action, job_id, *extra], dlq)
        if reply[0] == b"missing":
            raise JobNotFoundError(job_id, queue=self._name)
        return reply  # type: ignore[no-any-return]  # the script's reply array

    def update_status(self, job_id: str, status: JobStatus) -> None:
        """Set a job's status in one script, keeping indexes and dependents right."""
        self._manage(job_id, "status", JobStatus(status).value)

    def cancel(self, job_id: str, *, token: int | None = None) -> bool:
        """Cancel a job in one script; see :meth:`Queue.cancel`."""
        if token is None:
            return bool(self._manage(job_id, "cancel")[1])
        self._inflight.pop((job_id, token), None)
        reply = self._manage(job_id, "cancel", token)
        if reply[0] == b"stale":
            raise self._refused(job_id, token, reply)
        return True

    def set_claim_policy(self, policy: ClaimPolicy | None) -> None:
        """Claim by ``policy`` from now on; see :meth:`Queue.set_claim_policy`."""
        self._policy = None if policy is None or policy.is_strict else policy
        self._policy_wire = None if self._policy is None else json.dumps(self._policy.to_wire())

    def _overdue(self, now: float) -> list[str]:
        """Per level, the sort hex of the due time a head must be older than to be overdue."""
        policy = self._policy
        if policy is None:
            return [""] * 5
        return ["" if bound is None else sort_hex(now - bound) for bound in policy.max_wait_s]

    @property
    def claim_policy(self) -> ClaimPolicy | None:
        """The policy claims follow (None: strict priority, no limits)."""
        return self._policy

    def count_by_priority(self) -> dict[Priority, int]:
        """Ready jobs per priority level; see :meth:`Queue.count_by_priority`."""
        got = self._run("by_level", [_num(self._clock.now())])
        return {level: int(count) for level, count in zip(LEVELS, got, strict=True)}

    def set_priority(self, job_id: str, priority: int | str) -> None:
        """Change a job's priority (an int or a level name); a PENDING job is re-ordered at once."""
        priority = parse_priority(priority)
        self._manage(job_id, "priority", priority)

    def replay(self, job_id: str) -> Job:
        """DEAD → PENDING with retry_count 0 and no error; see :meth:`Queue.replay`."""
        reply = self._manage(job_id, "replay")
        if reply[0] == b"state":
            raise InvalidTransitionError("status", reply[1].decode(), "DEAD (only dead jobs can be replayed)")
        return self._hashes.job(job_id, reply[1])

    def retry(
        self, job_id: str, *, with_dependents: bool = False, dead_letter: Queue | None = None
    ) -> list[str]:
        """FAILED, DEAD or CANCELLED → PENDING (with dependents), taking the job's dead letter
        back out of ``dead_letter``, in one script; see :meth:`Queue.retry`."""
        dlq = self._dead_letter_base(dead_letter)
        reply = self._manage(job_id, "retry", "1" if with_dependents else "0", dlq=dlq)
        if reply[0] == b"wrongtype":
            raise self._wrong_type(reply)
        if reply[0] == b"state":
            raise InvalidTransitionError(
                "status", reply[1].decode(), "FAILED, DEAD or CANCELLED (a job that ended without completing)"
            )
        return [raw.decode() for raw in reply[1]]

    def delete(self, job_id: str) -> None:
        """Remove a job that is not RUNNING; its waiting dependents fail. See :meth:`Queue.delete`."""
        reply = self._manage(job_id, "delete")
        if reply[0] == b"state":
            raise InvalidTransitionError(
                "status", reply[1].decode(), "any state but RUNNING (cancel it first)"
            )

    # -- waiting ------------------------------------------------------------------------

    def wait_ready(self, timeout_s: float, job_types: Collection[str] | None = None) -> bool:
        """Block until a job (of ``job_types``, when given) may be ready, :meth:`interrupt`,
        or ``timeout_s``; see :meth:`Queue.wait_ready`.

        Blocks in ``BLPOP`` on the wake lists of those job types and this object's
        interrupt list (see ``_redis_wait``) for at most ``timeout_s``, the next delayed
        job's due time and half the socket timeout; a wake-up may find nothing ready
        (False). The token of a job made ready counts as a job ready without asking the
        server again: the caller's claim follows at once (and, as after any answer, may
        find the job taken by another worker).
        """
        types = None if job_types is None else sorted(set(job_types))
        seen = self._waiters.mark()
        ready, due, known = self._idle_check(types)
        if ready or self._closed:
            return bool(ready)
        keys = self._waiters.keys(known if types is None else types)
        wait = min(timeout_s, self._settings.socket_timeout / 2)
        if due is not None and due - self._clock.now() <= wait:
            # The wait ends at the due time: the waiter's own token ends it then (see
            # Waiters.block_until_due), and once it has come a job is due: the caller
            # claims at once, without another round trip to ask.
            with conn.map_errors(self._settings):
                made_ready = self._waiters.block_until_due(self._r, seen, due - self._clock.now(), keys)
            return made_ready or self._clock.now() >= due or self._idle_check(types)[0] > 0
        if wait < MIN_BLOCK_S:
            return False
        with conn.map_errors(self._settings):
            made_ready = self._waiters.block(self._r, seen, wait, keys)
        return made_ready or self._idle_check(types)[0] > 0

    def _idle_check(self, job_types: list[str] | None) -> tuple[int, float | None, list[str]]:
        """For a waiter for ``job_types`` (None: any): the jobs of those types ready now,
        the next due time and, for any type, the job types to watch (``_redis_lua._IDLE``,
        which also drops the stale wake tokens of ready jobs). The delayed jobs fallen due
        count whatever their type: the claim before the wait promoted those due then."""
        now = _num(self._clock.now())
        args = [now, "1"] if job_types is None else [now, "0", *job_types]
        ready, due, known = self._run("idle", args)
        return int(ready), None if due is None else float(due), [t.decode() for t in known]

    def interrupt(self) -> None:
        """Wake every thread blocked in :meth:`wait_ready` on this queue object.

        Never raises: when the server cannot be reached the waiters' own ``BLPOP`` fails
        at its timeout, and no thread blocks again after this call.
        """
        try:
            with conn.map_errors(self._settings):
                self._waiters.interrupt(self._r)
        except BackendError as exc:
            conn.logger.debug("could not wake the waiters of queue %r: %s", self._name, exc)

    def async_status_reader(self) -> AsyncStatusReader:
        """A ``redis.asyncio`` reader of this queue's job statuses, for asyncio callers
        (``typedq.aio`` polls with it without a thread); the caller closes it."""
        return AsyncStatusReader(self._settings, self._base)

    def close(self) -> None:
        """Wake waiters and give back this object's share of the connection pool."""
        if self._closed:
            return
        self._closed = True
        try:
            self.interrupt()
        finally:
            self._link.release()
