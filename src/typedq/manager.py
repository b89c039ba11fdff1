"""``JobQueueManager``: the specification's front door.

The manager turns a config dict into named queues on one backend, keeps the handler
registry (job type → handler and target queue), submits jobs, runs worker threads with a
shared lease keeper, a reaper and the scheduler of periodic jobs (declared through
``ScheduleAPI``, in ``_schedule_api``), keeps the dead-letter queue, and reports statistics.

Locking: the queue registry, the handler registry and the worker registry each have their
own lock, taken only to change the registry; reads of a registry are single dict lookups.
The one nesting is worker lock → nothing else, and no registry lock is held while a
queue is called or a handler runs, so a handler may submit jobs freely.
"""

from __future__ import annotations

import difflib
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, cast

from typedq._config import (
    DEFAULT_CONFIG,
    QUEUE_DEFAULTS,
    SUBMIT_FIELDS,
    validate_config,
    validate_queue_settings,
)
from typedq._job_control import JobControlAPI
from typedq._queue_group import QueueGroup
from typedq._schedule_api import ScheduleAPI
from typedq._submit import check_on_conflict, submit_metadata
from typedq._validate import require_number
from typedq._waiting import CompletionWaiters, NotifyingEvents, wait_for_jobs
from typedq._worker_failures import call_failure_callbacks
from typedq._worker_support import handler_is_async
from typedq.aworker import AsyncWorker
from typedq.backends import JobQueue, Queue, backend_for, open_queue
from typedq.backends.base import WorkerInfo
from typedq.clock import Clock, system_clock
from typedq.errors import (
    ConfigError,
    DuplicateJobError,
    InvalidJobError,
    JobFailedError,
    JobNotFoundError,
    NoHandlerError,
    QueueNotFoundError,
)
from typedq.events import EventHandler, safe_call
from typedq.job import TERMINAL_STATUSES, Job, JobStatus, parse_priority
from typedq.leases import LeaseKeeper, Reaper
from typedq.retry import FailureCallback, FailureRules, RetryPolicy
from typedq.scheduler import Scheduler
from typedq.serializers import FrameCodec, get_serializer
from typedq.worker import Handler, Worker, WorkerStats

if TYPE_CHECKING:
    from typedq.aio import AsyncJobQueueManager

__all__ = ["DEAD_LETTER_QUEUE", "DEFAULT_CONFIG", "JobQueueManager"]

#: The reserved name of the dead-letter queue.
DEAD_LETTER_QUEUE = "dead-letter"

logger = logging.getLogger("typedq.manager")

def _make_codec(config: Mapping[str, Any]) -> FrameCodec | None:
    """The payload codec: the configured serializer; JSON for durable backends by default.

    The memory backend holds payloads by reference unless a serializer is configured.
    """
    name = config["serializer"]
    if name is None:
        if not backend_for(config["backend"]).durable:
            return None
        name = "json"
    require_number("max_payload_size", config["max_payload_size"], minimum=1, integer=True)
    return get_serializer(name, pickle_key=config["pickle_key"], max_size=config["max_payload_size"])


class JobQueueManager(JobControlAPI, ScheduleAPI):
    """Queues, handlers and workers behind one object; the specification's manager.

    Args:
        config: settings (see ``DEFAULT_CONFIG``): ``queues`` maps queue names to
            per-queue settings (``max_workers``, ``default_priority``, ``poll_interval``,
            ``base_delay``, ``max_delay``, ``jitter``, ``max_retries``), which default to
            the top-level values of the same names; ``backend`` is the storage URL.
        event_handler: lifecycle callbacks (a no-op ``EventHandler`` by default).
        clock: the time source (tests pass a ``FakeClock``).
        on_dead: called once per job that dies (its retries used up, a permanent
            error, or its worker lost ``max_lost`` times), with the job and the error,
            in the worker that buried it (the reaper's process for a lost worker); a
            callback that raises is logged and changes nothing. Settable later.

    Raises:
        ConfigError: an unknown option (with a suggestion) or a value out of range.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        event_handler: EventHandler | None = None,
        *,
        clock: Clock = system_clock,
        on_dead: FailureCallback | None = None,
    ) -> None:
        self.config = validate_config(config)
        if on_dead is not None and not callable(on_dead):
            raise ConfigError("on_dead", on_dead, "a callable (job, error) or None")
        self.on_dead = on_dead
        self._failure_rules: dict[str, FailureRules] = {}
        self.event_handler = event_handler or EventHandler()
        self.clock = clock
        self.codec = _make_codec(self.config)
        self._queues_lock = threading.RLock()
        self._handlers_lock = threading.Lock()
        self._workers_lock = threading.RLock()
        self._stats_lock = threading.Lock()
        self._queues: dict[str, Queue] = {}
        self._queue_settings: dict[str, dict[str, Any]] = {}
        # Queues close_queue is closing: no worker may start on them meanwhile.
        self._closing: set[str] = set()
        self._handlers: dict[str, Handler] = {}
        self._handler_queue: dict[str, str] = {}
        self._workers: dict[str, list[Worker]] = {}
        self._stopping: list[Worker] = []
        self._retired = WorkerStats()
        self._submitted = 0
        self._reaped_dead = 0
        self._closed = False
        self._aio: AsyncJobQueueManager | None = None
        self._waiters = CompletionWaiters()
        self._worker_events: NotifyingEvents | None = None
        # On the configured backend: a JobQueue for memory://, a durable queue shared by
        # every process for the others.
        self._dead_letter = open_queue(
            self.config["backend"], name=DEAD_LETTER_QUEUE, clock=clock, codec=self.codec
        )
        self._keeper = LeaseKeeper(
            lease_s=self.config["lease_s"], heartbeat_s=self.config["heartbeat_s"]
        )
        self._reaper = Reaper(
            self._all_queues,
            interval_s=self.config["reaper_s"],
            max_lost=self.config["max_lost"],
            on_reclaimed=self._on_reclaimed,
            outage_grace_s=self.config["lease_s"],
            dead_letter=self._dead_letter,
            dlq_max=self.config["dlq_max"],
            result_ttl=self.config["result_ttl"],
            unique_sweep_rest_s=self.config["unique_sweep_rest_s"],
        )
        self._scheduler = Scheduler(
            self._all_queues, clock=clock, lock_s=self.config["scheduler_lock_s"], on_fired=self._on_fired
        )
        self.create_queue("default")
        for qname, qsettings in self.config["queues"].items():
            self.create_queue(qname, **qsettings)

    # -- queues -------------------------------------------------------------------------

    def create_queue(self, name: str, **config: Any) -> Queue:
        """Create the queue ``name`` (or update the settings of an existing one).

        Args:
            name: the queue's name.
            **config: per-queue settings overriding the top-level ones.

        Raises:
            ConfigError: an unknown setting or a value out of range.
        """
        given: object = name
        if not isinstance(given, str) or not given or given == DEAD_LETTER_QUEUE:
            raise ConfigError(
                "name", name, f"a non-empty queue name other than {DEAD_LETTER_QUEUE!r} (reserved)"
            )
        settings = validate_queue_settings(f"queues.{name}.", config)
        with self._queues_lock:
            queue = self._queues.get(name)
            if queue is None:
                queue = open_queue(
                    self.config["backend"], name=name, clock=self.clock, codec=self.codec
                )
                if isinstance(queue, JobQueue):
                    queue.history_limit = self.config["history_limit"]
                self._queues[name] = queue
                self._queue_settings[name] = {k: self.config[k] for k in QUEUE_DEFAULTS}
            self._queue_settings[name].update(settings)
            queue.set_claim_policy(self._queue_settings[name]["claim_policy"])
            return queue

    def set_priority(self, job_id: str, priority: int | str, *, queue: str | None = None) -> None:
        """Change a job's priority: an int from 1 to 10 or a level name (``"high"``).

        A PENDING job is re-ordered at once. Without ``queue``, the job is looked for in
        every queue of the manager.

        Raises:
            JobNotFoundError: no such job.
            InvalidJobError: ``priority`` is neither 1-10 nor a level name; the message
                names the field and the allowed values.
        """
        value = parse_priority(priority)
        names = list(self._queues) if queue is None else [queue]
        for name in names:
            found = self._queues.get(name) or self.create_queue(name)
            try:
                found.set_priority(job_id, value)
            except JobNotFoundError:
                continue
            return
        raise JobNotFoundError(job_id, queue=queue)

    def count_by_priority(self) -> dict[str, dict[str, int]]:
        """Ready jobs per priority level of every queue: queue -> level name -> count."""
        return {
            name: {level.name: count for level, count in queue.count_by_priority().items()}
            for name, queue in sorted(self._queues.items())
        }

    def get_queue(self, name: str) -> Queue:
        """Return the queue ``name``.

        Raises:
            QueueNotFoundError: no such queue (also a ``KeyError``).
        """
        queue = self._queues.get(name)
        if queue is None:
            raise QueueNotFoundError(name, list(self._queues))
        return queue

    def close_queue(self, name: str, graceful: bool = True, timeout: float | None = None) -> list[str]:
        """Stop the workers serving queue ``name`` and close it: it leaves this manager
        (``queues``, the reaper's and the scheduler's rounds) and its connections are
        released. Its jobs stay in the store: ``create_queue(name)``, ``submit`` to it or
        another process opens it again and finds them.

        The workers are stopped as :meth:`stop_workers` stops them (``graceful``,
        ``timeout``), those started for it with other queues (``start_workers(queues=
        {...})``) included. A job submitted to it while it closes is either stored or
        refused with :class:`~typedq.errors.QueueClosedError`, never half-written. On
        ``memory://`` a queue object holds its jobs, so a memory queue closes only once
        every job it holds has ended (its COMPLETED, FAILED, DEAD and CANCELLED jobs go
        with it).

        Returns:
            The ids of abandoned workers (see :meth:`stop_workers`).

        Raises:
            QueueNotFoundError: no such queue in this manager.
            ConfigError: ``name`` is ``"default"`` (the manager keeps it), another call is
                closing it, or a ``memory://`` queue still holds PENDING or RUNNING jobs
                (the message says how many); it stays open (with its workers stopped if
                the jobs came back while they stopped).
        """
        if name == "default":
            raise ConfigError("queue", name, "a queue other than 'default' (a manager keeps it)")
        queue = self.get_queue(name)
        memory = isinstance(queue, JobQueue)
        if memory and (waiting := queue.count_by_status()[JobStatus.PENDING]):
            raise self._unfinished_error(name, waiting)
        with self._workers_lock:
            if name in self._closing:
                raise ConfigError("queue", name, "a queue no other call is closing")
            self._closing.add(name)  # start_workers starts none on it from now on
            running = [w for w in self._workers_of(queue) if w.is_alive()]
            keys = [key for key, workers in self._workers.items() if set(workers) & set(running)]
        try:
            abandoned = [a for k in keys for a in self.stop_workers(k, graceful=graceful, timeout=timeout)]
            if not graceful:
                for worker in running:
                    if worker.is_alive():
                        worker.give_back_unstarted()
            with self._queues_lock:
                if self._queues.get(name) is not queue:
                    return abandoned  # another call closed it meanwhile (and it may be open anew)
                if memory and (unfinished := cast(JobQueue, queue).close_if_idle()):
                    raise self._unfinished_error(name, unfinished)
                del self._queues[name]
                del self._queue_settings[name]
        finally:
            with self._workers_lock:
                self._closing.discard(name)
        self._scheduler.resign(queue)
        queue.close()
        return abandoned

    @staticmethod
    def _unfinished_error(name: str, count: int) -> ConfigError:
        return ConfigError(
            "queue", name,
            f"a memory:// queue whose jobs have all ended ({count} PENDING or RUNNING: a memory "
            "queue holds its jobs, which would go with it)",
        )

    def _workers_of(self, queue: Queue) -> list[Worker]:
        """The workers serving ``queue``, alone or in a group. Workers lock held."""
        return [
            w for workers in self._workers.values() for w in workers
            if w.queue is queue or (isinstance(w.queue, QueueGroup) and queue in w.queue.queues)
        ]

    @property
    def queues(self) -> dict[str, Queue]:
        """A snapshot of the queues by name."""
        return dict(self._queues)

    def _all_queues(self) -> list[Queue]:
        return list(self._queues.values())

    # -- handlers -----------------------------------------------------------------------

    def register_handler(
        self,
        job_type: str,
        handler: Handler,
        queue: str = "default",
        *,
        retry: RetryPolicy | None = None,
        on_failure: FailureCallback | None = None,
    ) -> None:
        """Route jobs of ``job_type`` to ``queue`` and run them with ``handler``.

        The queue is created if it does not exist. Registering a type again replaces
        its handler (and its ``retry`` and ``on_failure``); running workers see the
        change at their next job.

        Args:
            job_type: the type's name.
            handler: takes the payload dict, returns the result.
            queue: where its jobs go.
            retry: the type's retry policy (None: the queue's); a job's own policy
                (``submit(retry=...)``) wins over it.
            on_failure: called once per job of the type that dies, with the job and the
                error, in the worker (isolated: a raising callback is logged).

        Raises:
            InvalidJobError: ``job_type`` is blank.
            ConfigError: ``handler`` or ``on_failure`` is not callable, ``retry`` not
                a ``RetryPolicy``.
        """
        given: object = job_type
        if not isinstance(given, str) or not given.strip():
            raise InvalidJobError("job_type", job_type, "a non-blank string")
        if not callable(handler):
            raise ConfigError("handler", handler, "a callable taking the payload dict")
        rules = FailureRules(retry, on_failure)
        if queue not in self._queues:
            self.create_queue(queue)
        with self._handlers_lock:
            self._handlers[job_type] = handler
            self._handler_queue[job_type] = queue
            if retry is None and on_failure is None:
                self._failure_rules.pop(job_type, None)
            else:
                self._failure_rules[job_type] = rules

    @property
    def handlers(self) -> dict[str, Handler]:
        """A snapshot of the handler registry."""
        return dict(self._handlers)

    def worker_class(self, queue: str) -> str:
        """The worker ``start_workers`` runs ``queue`` with: ``"async"`` or ``"thread"``.

        The queue's ``worker_class`` setting, or with ``"auto"`` (the default): async when
        every handler routed to the queue is an ``async def`` (there is at least one),
        thread otherwise. Handlers with a true ``any_worker`` attribute (the built-in
        shell jobs, which run as well in an async worker's thread pool) are not counted.

        Raises:
            QueueNotFoundError: no such queue.
        """
        self.get_queue(queue)
        chosen: str = self._queue_settings[queue]["worker_class"]
        if chosen != "auto":
            return chosen
        mine = [
            h for t, h in list(self._handlers.items())
            if self._handler_queue.get(t) == queue and not getattr(h, "any_worker", False)
        ]
        return "async" if mine and all(handler_is_async(h) for h in mine) else "thread"

    # -- submitting ---------------------------------------------------------------------

    def submit(self, job_type: str, payload: dict[str, Any] | None = None, **job_fields: Any) -> str:
        """Create a job, enqueue it on its handler's queue, and return its id.

        Args:
            job_type: a type with a registered handler.
            payload: the handler's argument.
            **job_fields: ``priority`` (default: the queue's ``default_priority``),
                ``scheduled_at`` or ``delay_s``, ``max_retries``, ``timeout_seconds``,
                ``metadata``, ``depends_on``, ``job_id``, ``queue`` (override routing);
                ``unique_key`` (no other job of the queue holding it may exist: see
                "Unique jobs" in the README), ``unique_for`` (seconds or a timedelta
                after which the key is released anyway), ``unique_states`` (the
                statuses in which the job holds its key; default PENDING and RUNNING),
                ``on_conflict`` (``"return"``, the default: a held key returns the
                holder's id and adds nothing; ``"raise"``: ``DuplicateJobError``);
                ``retry``, the job's own ``RetryPolicy`` (stored with it; its
                ``max_retries``, when set, is the job's default ``max_retries``).

        Returns:
            The new job's id, or the id of the job holding ``unique_key``.

        Raises:
            NoHandlerError: no handler is registered for ``job_type`` (a ValueError).
            InvalidJobError: a field is invalid or unknown, a dependency is missing, or
                a cycle would form (all ValueErrors).
            DuplicateJobError: ``job_id`` exists, or (with ``on_conflict="raise"``)
                ``unique_key`` is held.
            ConfigError: ``retry`` is not a ``RetryPolicy`` without a ``delay_fn``.
        """
        queue_name = job_fields.pop("queue", None) or self._handler_queue.get(job_type)
        if queue_name is None:
            raise NoHandlerError(job_type, list(self._handlers))
        for key, value in job_fields.items():
            if key not in SUBMIT_FIELDS:
                hint = difflib.get_close_matches(key, sorted(SUBMIT_FIELDS), n=1)
                raise InvalidJobError(
                    key, value,
                    f"one of {', '.join(sorted(SUBMIT_FIELDS))}"
                    + (f" (did you mean {hint[0]!r}?)" if hint else ""),
                )
        with self._queues_lock:  # a queue and its settings, not one closed in between
            queue = self._queues.get(queue_name) or self.create_queue(queue_name)
            settings = self._queue_settings[queue_name]
        on_conflict = check_on_conflict(job_fields.pop("on_conflict", "return"))
        extra = submit_metadata(job_fields, self._failure_rules.get(job_type))
        job_fields.setdefault("priority", settings["default_priority"])
        job_fields.setdefault("max_retries", settings["max_retries"])
        job = Job.create(job_type, payload, queue=queue_name, now=self.clock.now(), **job_fields)
        if extra:
            job.metadata = {**job.metadata, **extra}
        # The event comes first, so a monitor never sees a job start before it was
        # submitted; if storing the job is then refused, the caller gets the error.
        safe_call(self.event_handler.on_job_submitted, job)
        try:
            queue.enqueue(job)
        except DuplicateJobError as exc:
            if exc.unique_key is None or on_conflict == "raise" or exc.existing_id is None:
                raise
            return exc.existing_id
        with self._stats_lock:
            self._submitted += 1
        return job.job_id

    # -- jobs ---------------------------------------------------------------------------

    def get_job(self, job_id: str) -> Job:
        """Find a job in any queue (the dead-letter queue last).

        Raises:
            JobNotFoundError: no queue holds it.
        """
        for queue in self._all_queues():
            try:
                return queue.get_job(job_id)
            except KeyError:
                continue
        try:
            return self._dead_letter.get_job(job_id)
        except KeyError:
            raise JobNotFoundError(job_id) from None

    def cancel(self, job_id: str) -> bool:
        """Cancel a job wherever it is; True when it is now CANCELLED (see ``Queue.cancel``).

        A PENDING or SCHEDULED job is CANCELLED at once (its dependents FAILED). A
        RUNNING job is asked to stop (False is returned): its handler sees
        ``ctx.cancelled`` (a worker of this process at once, any other within one
        heartbeat) and may stop by raising ``JobCancelledError``; after
        ``cancel_grace_s`` its worker records it CANCELLED itself and refuses its late
        result (a worker process is replaced; a shell job's process group is killed).
        """
        job = self.get_job(job_id)
        cancelled = self.get_queue(job.queue).cancel(job_id)
        if cancelled:
            self._waiters.ended(job_id)
            safe_call(self.event_handler.on_job_cancelled, job)
        elif job.status is JobStatus.RUNNING:
            for worker in self.workers(job.queue):
                if worker.request_cancel(job_id):
                    break
        return cancelled

    def wait_for_completion(self, job_ids: Iterable[str], timeout: float | None = None) -> bool:
        """Wait until every job has ended (COMPLETED, FAILED, DEAD or CANCELLED).

        Driven by the workers' events: a job that ends in this process is dropped from the
        wait at once, without a read. The others (ended in another process, or before
        the call) are read in the order given, each once after it ended; a poll reads
        the first one not known to have ended, 1 ms apart at first, then up to 50 ms.

        Returns True when they all have, False when ``timeout`` seconds passed first.

        Raises:
            JobNotFoundError: an id belongs to no queue (raised when the wait reaches it).
        """
        queues: dict[str, Queue] = {}

        def status_of(job_id: str) -> JobStatus:
            queue = queues.get(job_id)
            if queue is None:
                job = self.get_job(job_id)
                queues[job_id] = self._queues.get(job.queue, self._dead_letter)
                return job.status
            return queue.get_job(job_id).status

        return wait_for_jobs(self._waiters, job_ids, status_of, timeout)

    def _events_for_workers(self) -> EventHandler:
        """The application's event handler, with the waiters told when a job ends."""
        current = self._worker_events
        if current is None or current.inner is not self.event_handler:
            current = self._worker_events = NotifyingEvents(self.event_handler, self._waiters)
        return current

    # -- workers ------------------------------------------------------------------------

    def start_workers(
        self, queue: str | None = None, count: int | None = None, *, queues: Mapping[str, int] | None = None
    ) -> list[Worker]:
        """Start worker threads for ``queue`` (every queue when None), up to ``max_workers``.

        Args:
            queue: the queue name, or None for all queues.
            count: how many to start per queue (default: up to its ``max_workers``);
                the total alive per queue never exceeds ``max_workers``.
            queues: instead of ``queue``, queue name -> weight: ``count`` workers (default
                the first queue's ``max_workers``) that each serve all of these queues,
                claiming from them in weighted round robin (``{"emails": 3, "reports":
                1}``: three emails claims to one reports claim while both have work,
                never one drained first; see ``typedq._queue_group``). The first queue's
                settings (poll interval, retries, batch size) apply.

        Returns:
            The workers started by this call.

        Raises:
            QueueNotFoundError: no such queue.
            ConfigError: ``count`` is negative, or ``close_queue`` is closing the queue
                (or one of ``queues``); with neither, such a queue is left out.
        """
        if count is not None:
            require_number("count", count, minimum=0, integer=True)
        if queues is not None:
            return self._start_group(queues, count)
        started: list[Worker] = []
        with self._workers_lock:
            if self._closed:
                raise ConfigError("manager", "closed", "an open manager (this one was closed)")
            if queue is not None:
                self._refuse_closing([queue])
            # Every queue: those close_queue is closing are left out.
            # (A copy first: create_queue may add to the registry meanwhile.)
            names = [n for n in list(self._queues) if n not in self._closing] if queue is None else [queue]
            for name in names:
                q = self.get_queue(name)
                settings = self._queue_settings[name]
                current = [w for w in self._workers.get(name, []) if w.is_alive()]
                active = sum(1 for w in current if not w.stopping)
                room = max(0, settings["max_workers"] - active)
                n = room if count is None else min(count, room)
                use_async = self.worker_class(name) == "async"
                options = self._worker_options(name, settings)
                if use_async:
                    options["concurrency"] = settings["concurrency"]
                for _ in range(n):
                    worker = (AsyncWorker if use_async else Worker)(
                        q, self._handlers, settings["poll_interval"], **options
                    )
                    current.append(worker)
                    started.append(worker)
                self._workers[name] = current
            self._launch(started)
        return started

    def _launch(self, started: list[Worker]) -> None:
        """Start ``started`` and, with the first of them, the lease keeper, the reaper and
        (when configured) the scheduler. Workers lock held."""
        if not started:
            return
        self._keeper.start()
        self._reaper.start()
        if self.config["scheduler"]:
            self._scheduler.start()
        for worker in started:
            worker.start()

    def _worker_options(self, name: str, settings: Mapping[str, Any]) -> dict[str, Any]:
        """The options every worker of queue (or queue group) ``name`` is started with."""
        return {
            "dead_letter_queue": self._dead_letter,
            "worker_id": f"{name}-worker",
            "event_handler": self._events_for_workers(),
            "retry_policy": RetryPolicy(
                base_delay=settings["base_delay"], jitter=settings["jitter"], max_delay=settings["max_delay"]
            ),
            "lease_s": self.config["lease_s"],
            "heartbeat_s": self.config["heartbeat_s"],
            "lease_keeper": self._keeper,
            "clock": self.clock,
            "batch_size": settings["batch_size"],
            "dlq_max": self.config["dlq_max"],
            "failure_rules": self._failure_rules,
            "on_dead": self._call_on_dead,
            "cancel_grace_s": self.config["cancel_grace_s"],
        }

    def _refuse_closing(self, names: Iterable[str]) -> None:
        """Raise if close_queue is closing one of ``names``. Workers lock held."""
        if closing := next((n for n in names if n in self._closing), None):
            raise ConfigError("queue", closing, "a queue close_queue is not closing (no worker starts on it)")

    def _start_group(self, weights: Mapping[str, int], count: int | None) -> list[Worker]:
        with self._workers_lock:
            if self._closed:
                raise ConfigError("manager", "closed", "an open manager (this one was closed)")
            self._refuse_closing(weights)
            if queue_error := next((n for n in weights if n not in self._queues), None):
                raise QueueNotFoundError(queue_error, list(self._queues))
            group = QueueGroup({self._queues[name]: weight for name, weight in weights.items()})
            first = next(iter(weights))
            settings = self._queue_settings[first]
            n = settings["max_workers"] if count is None else count
            options = self._worker_options(group.name, settings)
            started = [
                # A group has every method a worker calls on its queue, not the whole protocol.
                Worker(cast(Queue, group), self._handlers, settings["poll_interval"], **options)
                for _ in range(n)
            ]
            self._workers.setdefault(group.name, []).extend(started)
            self._launch(started)
        return started

    def stop_workers(
        self, queue: str | None = None, graceful: bool = True, timeout: float | None = None
    ) -> list[str]:
        """Stop the workers of ``queue`` (all when None).

        Each worker finishes its current job and exits. With ``graceful`` the call waits
        for that, up to ``timeout`` seconds (default: the ``shutdown_grace_s`` setting);
        a worker still busy then is *abandoned* (Python cannot kill a thread): its lease
        is no longer renewed, so a reaper gives its job back once the lease expires.

        Returns:
            The ids of abandoned workers (always empty unless ``graceful``).
        """
        grace = self.config["shutdown_grace_s"] if timeout is None else timeout
        with self._workers_lock:
            names = list(self._workers) if queue is None else [queue]
            targets = [(n, w) for n in names for w in self._workers.get(n, [])]
            for _, worker in targets:
                worker.stop()
        abandoned: list[str] = []
        me = threading.current_thread()
        if graceful:
            deadline = time.monotonic() + grace
            for name, worker in targets:
                if worker is me:
                    continue  # a handler stopping its own worker: it exits after this job
                worker.join(max(0.0, deadline - time.monotonic()))
                if worker.is_alive() and worker.cancel_running():
                    # An async worker's tasks are cancelled: their jobs go back to the queue.
                    worker.join(min(1.0, max(0.0, deadline + 1.0 - time.monotonic())))
                if worker.is_alive():
                    abandoned.append(worker.worker_id)
                    worker.give_back_unstarted()
                    self._keeper.forget_all(worker.queue, [job_id for job_id, _ in worker.in_flight()])
                    logger.warning(
                        "worker %s of queue %r did not stop within %.1fs; abandoned (its job "
                        "returns to the queue when its lease expires)", worker.worker_id, name, grace,
                    )
        with self._workers_lock:
            for name, worker in targets:
                workers = self._workers.get(name, [])
                if worker in workers:
                    workers.remove(worker)
                    # Still-running workers keep counting until their thread ends.
                    self._stopping.append(worker)
            self._retire_finished()
            if not any(self._workers.values()) and not self._stopping:
                self._keeper.stop()
                self._scheduler.stop()
        return abandoned

    def _retire_finished(self) -> None:
        """Fold the counters of stopped workers whose thread has ended. Workers lock held."""
        still: list[Worker] = []
        with self._stats_lock:
            for worker in self._stopping:
                if worker.is_alive():
                    still.append(worker)
                    continue
                for field in ("completed", "failed", "retried", "dead", "stale"):
                    total = getattr(self._retired, field) + getattr(worker.stats, field)
                    setattr(self._retired, field, total)
        self._stopping = still

    def workers(self, queue: str | None = None) -> list[Worker]:
        """The live workers of ``queue`` (all when None)."""
        with self._workers_lock:
            names = list(self._workers) if queue is None else [queue]
            return [w for n in names for w in self._workers.get(n, [])]

    def registered_workers(self) -> list[WorkerInfo]:
        """Every worker in the registries of this manager's queues (any process or
        host), live and recently dead, oldest first."""
        found = [info for queue in self._all_queues() for info in queue.workers()]
        return sorted(found, key=lambda w: (w.started_at, w.worker_id))

    def _on_fired(self, queue: Queue, job: Job) -> None:
        """A scheduler enqueued a slot's job: count it and tell the event handler."""
        with self._stats_lock:
            self._submitted += 1
        safe_call(self.event_handler.on_job_submitted, job)

    def _call_on_dead(self, job: Job, exc: BaseException) -> None:
        """The workers' ``on_dead``: the manager's, read when a job dies (settable)."""
        on_dead = self.on_dead
        if on_dead is not None:
            on_dead(job, exc)

    def _on_reclaimed(self, queue: Queue, job_ids: list[str]) -> None:
        for job_id in job_ids:
            try:
                job = queue.get_job(job_id)
            except KeyError:
                continue
            if job.status is JobStatus.DEAD:
                with self._stats_lock:
                    self._reaped_dead += 1
                # Its dead letter was put into the dead-letter queue by the reclaim itself.
                logger.error(
                    "job %s (%s) is dead after %d retries and moved to the dead-letter queue: %s",
                    job_id, job.job_type, job.retry_count, job.error,
                )
                safe_call(self.event_handler.on_job_dead, job)
                lost = JobFailedError(job_id, job.status.value, job.error)
                call_failure_callbacks(job, lost, self._failure_rules, self.on_dead)
            if job.status in TERMINAL_STATUSES:  # DEAD, or CANCELLED (cancel was requested)
                self._waiters.ended(job_id)

    # -- dead letters -------------------------------------------------------------------

    def get_dead_letter_queue(self) -> Queue:
        """The dead-letter queue, holding a copy of every dead job (at most ``dlq_max``).

        With ``memory://`` it is a ``JobQueue``; with a durable backend it is a queue of
        that backend (the same SQLite file, the same Redis prefix), named
        ``"dead-letter"``, shared by every process using it. A job's death and its copy
        here are one transition, as are a replay and the copy's removal.
        """
        return self._dead_letter

    def replay_dead_letter(self, job_id: str, *, with_dependents: bool = False) -> str:
        """Run a dead job again: retry_count 0, PENDING, on its original queue.

        Args:
            job_id: the dead job.
            with_dependents: also run again the jobs that FAILED because it died
                (``Queue.retry``); :meth:`retry` returns their ids.

        Returns:
            The job's id.

        Raises:
            JobNotFoundError: the dead-letter queue does not hold ``job_id``.
        """
        return self._replay(job_id, with_dependents)[0]

    def retry(self, job_id: str, *, with_dependents: bool = False) -> list[str]:
        """Run a job that ended without completing (FAILED, DEAD or CANCELLED) again.

        A dead job leaves the dead-letter queue. With ``with_dependents``, the jobs that
        FAILED because this one did run again too (after it), in the same transition.

        Returns:
            The ids run again: this job's first, then its dependents'.

        Raises:
            JobNotFoundError: no queue holds ``job_id``.
            InvalidTransitionError: the job is PENDING, RUNNING, SCHEDULED or COMPLETED.
        """
        job = self.get_job(job_id)
        if job.status is JobStatus.DEAD:
            return self._replay(job_id, with_dependents)
        return self.get_queue(job.queue).retry(
            job_id, with_dependents=with_dependents, dead_letter=self._dead_letter
        )

    def _replay(self, job_id: str, with_dependents: bool) -> list[str]:
        """Re-open a dead job on its queue and take its dead letter back, in one
        transition (``Queue.retry`` with ``dead_letter``); the dead letter is put back
        first when its queue no longer holds the job."""
        try:
            dead = self._dead_letter.get_job(job_id)
        except KeyError:
            dead = self._find_dead(job_id)
        origin = self._queues.get(dead.queue) or self.create_queue(dead.queue)
        reopened = origin.retry(job_id, with_dependents=with_dependents, dead_letter=self._dead_letter)
        logger.info(
            "replayed dead job %s (%s) on queue %r, with %d dependent(s)",
            job_id, dead.job_type, dead.queue, len(reopened) - 1,
        )
        return reopened

    def _find_dead(self, job_id: str) -> Job:
        """A DEAD job without a dead letter (buried without one, e.g. undecodable at
        claim), from its own queue."""
        for queue in self._all_queues():
            try:
                job = queue.get_job(job_id)
            except KeyError:
                continue
            if job.status is JobStatus.DEAD:
                return job
        raise JobNotFoundError(job_id, queue=self._dead_letter.name)

    # -- statistics ---------------------------------------------------------------------

    def get_stats(self) -> dict[str, Any]:
        """Counters and gauges.

        Returns:
            ``total_submitted``; ``total_completed``; ``total_failed`` (failed attempts,
            each retried or dead); ``total_retried``; ``total_dead`` (including jobs whose
            worker was lost too often); ``jobs_per_queue`` (name → jobs held);
            ``workers_per_queue`` (name → live workers); ``status_per_queue`` (name →
            status → count); ``dead_letter_size``; ``dead_letters_dropped`` (dead
            letters the dead-letter queue dropped to stay within ``dlq_max``, by every
            process using the store); ``total_purged`` (finished jobs this manager's
            reaper purged past ``result_ttl``).
        """
        with self._workers_lock:
            self._retire_finished()
            live = [w.stats for ws in self._workers.values() for w in ws]
            live += [w.stats for w in self._stopping]
            workers_per_queue = {
                n: sum(1 for w in self._workers.get(n, []) if w.is_alive()) for n in self._queues
            }
        with self._stats_lock:
            submitted = self._submitted
            totals = WorkerStats(**vars(self._retired))
            reaped_dead = self._reaped_dead
        for s in live:
            totals.completed += s.completed
            totals.failed += s.failed
            totals.retried += s.retried
            totals.dead += s.dead
        queues = self._all_queues()
        return {
            "total_submitted": submitted,
            "total_completed": totals.completed,
            "total_failed": totals.failed,
            "total_retried": totals.retried,
            "total_dead": totals.dead + reaped_dead,
            "jobs_per_queue": {q.name: q.size for q in queues},
            "workers_per_queue": workers_per_queue,
            "status_per_queue": {
                q.name: {s.value: c for s, c in q.count_by_status().items()} for q in queues
            },
            "dead_letter_size": self._dead_letter.size,
            "dead_letters_dropped": self._dead_letter.count_dropped(),
            "total_purged": self._reaper.purged_total,
        }

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def aio(self) -> AsyncJobQueueManager:
        """This manager's calls as coroutines: an :class:`~typedq.aio.AsyncJobQueueManager`
        bound to it (``await manager.aio.enqueue(jt, payload)``), made on first use and
        kept (a new one after it was closed). Closing it (``await manager.aio.close()``,
        or leaving ``async with manager.aio``) never closes this manager; closing this
        manager stops its thread pool. Use it from one event loop (the app's).
        """
        from typedq.aio import AsyncJobQueueManager  # noqa: PLC0415  (typedq.aio imports this module)

        with self._workers_lock:
            client = self._aio
            if client is None or client.closed:
                client = self._aio = AsyncJobQueueManager(manager=self)
            return client

    def close(self, graceful: bool = True, timeout: float | None = None) -> list[str]:
        """Stop every worker, the lease keeper and the reaper; close the queues.

        Without ``graceful`` nothing waits for running handlers: each worker is told to
        stop, the jobs it claimed but has not started are given back at once, and the
        queues are closed. A queue never closes a connection under a call in progress
        (SQLite waits up to ``CLOSE_WAIT_S`` for calls on other threads to end); a
        handler that finishes later cannot record its outcome (the queue raises
        ``QueueClosedError``, which its worker logs), so its job, no longer renewed,
        goes back to the queue when its lease expires. No job is lost.

        Returns:
            The ids of abandoned workers (see :meth:`stop_workers`).
        """
        with self._workers_lock:
            running = [w for workers in self._workers.values() for w in workers]
        abandoned = self.stop_workers(graceful=graceful, timeout=timeout)
        if not graceful:
            for worker in running:
                if worker.is_alive():
                    worker.give_back_unstarted()
        with self._workers_lock:
            self._closed = True
        self._scheduler.stop()
        self._reaper.stop()
        self._keeper.stop()
        for queue in self._all_queues():
            queue.close()
        self._dead_letter.close()
        if self._aio is not None:
            self._aio.shutdown_threads()
        return abandoned

    def __enter__(self) -> JobQueueManager:
        """Start the workers of every queue and return the manager."""
        self.start_workers()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Stop the workers gracefully (finishing running jobs) and close."""
        self.close()

    def __repr__(self) -> str:
        return f"JobQueueManager(queues={sorted(self._queues)}, backend={self.config['backend']!r})"

