"""Periodic jobs on ``JobQueueManager``: ``schedule``, ``@periodic`` and the schedules'
management (list, pause, resume, remove).

:class:`ScheduleAPI` is mixed into the manager. A schedule is stored on the queue its
jobs go to (``Queue.put_schedule``), so every process of the backend sees it and any
of them may fire it (see :mod:`typedq.scheduler`); declaring the same schedule again,
in every process at start-up, changes nothing, and a changed declaration replaces it.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from datetime import timedelta
from typing import Any, Final, TypedDict, TypeVar, Unpack, overload

from pydantic import BaseModel

from typedq._config import unknown_key_error
from typedq._cron import CATCH_UP, Recurrence, every_seconds
from typedq._typed_api import TypedAPI, _Registrar
from typedq.backends._schedules import check_schedule_name
from typedq.backends.base import Queue, ScheduleEntry
from typedq.clock import Clock
from typedq.errors import ConfigError, InvalidJobError, ScheduleNotFoundError
from typedq.job import Job
from typedq.scheduler import Scheduler, recurrence_of, slot_job_id
from typedq.typed import VERSION_KEY, JobType

__all__ = ["ScheduleAPI", "ScheduleOptions"]

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")


class ScheduleOptions(TypedDict, total=False):
    """Options of the jobs a schedule makes; each defaults as for a submission, and
    ``overlap`` (default False) lets a slot's run start while an earlier one is still
    PENDING or RUNNING."""

    queue: str
    priority: int
    max_retries: int
    timeout_seconds: float
    metadata: dict[str, Any]
    overlap: bool


_OPTIONS: Final = frozenset(ScheduleOptions.__annotations__)


class _Periodic(_Registrar[P, R]):
    """The decorator ``manager.periodic(jt, ...)`` returns: schedules, then registers."""

    def __init__(self, manager: ScheduleAPI, job_type: JobType[P, R], schedule: Callable[[], object]) -> None:
        super().__init__(manager, job_type)
        self._schedule = schedule

    def __call__(self, fn: Any) -> Any:
        self._schedule()
        return super().__call__(fn)


class ScheduleAPI(TypedAPI):
    """The periodic-job methods of ``JobQueueManager``."""

    config: dict[str, Any]
    clock: Clock
    _handler_queue: dict[str, str]
    _queue_settings: dict[str, dict[str, Any]]
    _scheduler: Scheduler

    @property
    @abstractmethod
    def queues(self) -> dict[str, Queue]:
        """Implemented by ``JobQueueManager``."""

    @abstractmethod
    def create_queue(self, name: str, **config: Any) -> Queue:
        """Implemented by ``JobQueueManager``."""

    @abstractmethod
    def get_queue(self, name: str) -> Queue:
        """Implemented by ``JobQueueManager``."""

    @property
    def scheduler(self) -> Scheduler:
        """The scheduler this manager runs with its workers (``start_workers``)."""
        return self._scheduler

    @overload
    def schedule(
        self,
        job_type: JobType[P, Any],
        payload: P | None = None,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str = "UTC",
        name: str | None = None,
        catch_up: str = "latest",
        dst: str = "once",
        **options: Unpack[ScheduleOptions],
    ) -> ScheduleEntry: ...

    @overload
    def schedule(
        self,
        job_type: str,
        payload: dict[str, Any] | None = None,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str = "UTC",
        name: str | None = None,
        catch_up: str = "latest",
        dst: str = "once",
        **options: Unpack[ScheduleOptions],
    ) -> ScheduleEntry: ...

    def schedule(
        self,
        job_type: JobType[Any, Any] | str,
        payload: Any = None,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str = "UTC",
        name: str | None = None,
        catch_up: str = "latest",
        dst: str = "once",
        **options: Unpack[ScheduleOptions],
    ) -> ScheduleEntry:
        """Run a job of ``job_type`` periodically: by ``cron`` in ``tz``, or ``every``.

        Stored on the job type's queue; declaring it again (every process at start-up)
        changes nothing, a changed declaration replaces it (keeping whether it is
        paused). The first slot is the first one after now.

        Args:
            job_type: a ``JobType`` (the payload a ``P``, validated and versioned) or a
                job type name (the payload a JSON-safe dict).
            payload: each job's payload (default: empty; a typed job's model with its
                defaults).
            cron: a cron expression (5 fields, 6 with seconds first, or ``@hourly``,
                ``@daily``, ``@weekly``, ``@monthly``, ``@yearly``); exclusive with ``every``.
            every: an interval, a ``timedelta`` or seconds: whole seconds >= 1, slots
                aligned to the UTC epoch.
            tz: the IANA time zone of ``cron`` (``"Europe/Berlin"``).
            name: the schedule's name, unique in its queue (default: the job type's);
                1-100 letters, digits or ``_ . : -``.
            catch_up: slots missed while no scheduler ran: ``"latest"`` fires the latest
                once, ``"all"`` each (at most 100, the latest), ``"none"`` none.
            dst: ``"once"`` or ``"both"``: a fixed time repeated by a fall-back change
                fires at its first occurrence, or at both.
            **options: ``queue``, ``priority``, ``max_retries``, ``timeout_seconds``,
                ``metadata`` of each job; ``overlap``: False (the default) skips a slot
                that comes while the schedule's previous run is still PENDING or RUNNING
                (retries included), so two runs never overlap; True enqueues every slot.

        Returns:
            The schedule as stored (``next_run_at`` is its next slot).

        Raises:
            ConfigError: a bad rule, time zone, name, ``catch_up``, ``dst`` or option name.
            InvalidJobError: a bad job type, payload or job option (a ValueError).
            PayloadValidationError: a typed payload that does not fit its model.
        """
        for key in options:
            if key not in _OPTIONS:
                raise unknown_key_error("", key, _OPTIONS)
        fields: dict[str, Any] = dict(options)
        overlap = fields.pop("overlap", False)
        if not isinstance(overlap, bool):
            raise ConfigError("overlap", overlap, "True or False")
        if isinstance(job_type, JobType):
            type_name = job_type.name
            data = job_type.dump({} if payload is None else payload)  # a dict is validated first
            fields["metadata"] = {**(fields.get("metadata") or {}), VERSION_KEY: job_type.version}
            queue_name = fields.pop("queue", None) or job_type.queue
            fields.setdefault("priority", job_type.priority)
            fields.setdefault("max_retries", job_type.max_retries)
            if job_type.timeout_s is not None:
                fields.setdefault("timeout_seconds", job_type.timeout_s)
        else:
            given: object = job_type
            if not isinstance(given, str) or not given.strip():
                raise InvalidJobError("job_type", job_type, "a non-blank string or a JobType")
            type_name = job_type
            data = {} if payload is None else payload
            if not isinstance(data, dict):
                raise InvalidJobError("payload", payload, "a dict (JSON-safe) or None")
            queue_name = fields.pop("queue", None) or self._handler_queue.get(type_name) or "default"
            settings = self._queue_settings.get(queue_name, self.config)
            fields.setdefault("priority", settings["default_priority"])
            fields.setdefault("max_retries", settings["max_retries"])
        if catch_up not in CATCH_UP:
            raise ConfigError("catch_up", catch_up, "'none', 'latest' or 'all'")
        every_s = None if every is None else every_seconds(every)
        rule = Recurrence(cron=cron, every_s=every_s, tz=tz, dst=dst)
        sched_name = check_schedule_name(type_name if name is None else name)
        # The options as each job will carry them: refused now, not at every slot.
        Job.create(type_name, data, job_id=slot_job_id(sched_name, 0.0), queue=queue_name, **fields)
        queue = self.queues.get(queue_name) or self.create_queue(queue_name)
        entry = ScheduleEntry(
            name=sched_name,
            job_type=type_name,
            cron=None if cron is None else " ".join(cron.split()),
            every_s=None if every_s is None else float(every_s),
            tz=tz,
            payload=data,
            # overlap stored only when True: a definition declared before the option
            # existed stays the same definition.
            options={k: v for k, v in {**fields, "overlap": overlap or None}.items() if v is not None},
            catch_up=catch_up,
            dst=dst,
            next_run_at=rule.after(self.clock.now()),
        )
        return queue.put_schedule(entry)

    def periodic(
        self,
        job_type: JobType[P, R],
        payload: P | None = None,
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str = "UTC",
        name: str | None = None,
        catch_up: str = "latest",
        dst: str = "once",
        **options: Unpack[ScheduleOptions],
    ) -> _Registrar[P, R]:
        """Decorator: register the function as ``job_type``'s handler and schedule it
        (arguments as :meth:`schedule`; the schedule is checked and stored first)."""

        def declare() -> object:
            return self.schedule(
                job_type, payload, cron=cron, every=every, tz=tz, name=name,
                catch_up=catch_up, dst=dst, **options,
            )

        return _Periodic(self, job_type, declare)

    # -- managing schedules -------------------------------------------------------------

    def schedules(self) -> list[tuple[str, ScheduleEntry]]:
        """Every schedule of this manager's queues, as (queue name, schedule), by queue."""
        return [(name, entry) for name in sorted(self.queues) for entry in self.queues[name].list_schedules()]

    def _find_schedule(self, name: str, queue: str | None) -> tuple[Queue, ScheduleEntry]:
        if queue is not None:
            target = self.get_queue(queue)
            return target, target.get_schedule(name)
        found: list[tuple[Queue, ScheduleEntry]] = []
        for candidate in self.queues.values():
            try:
                found.append((candidate, candidate.get_schedule(name)))
            except KeyError:
                continue
        if not found:
            raise ScheduleNotFoundError(name)
        if len(found) > 1:
            names = ", ".join(sorted(q.name for q, _ in found))
            raise ConfigError("queue", None, f"one of {names}: schedule {name!r} is in several queues")
        return found[0]

    def pause_schedule(self, name: str, *, queue: str | None = None) -> ScheduleEntry:
        """Stop firing the schedule ``name`` (of ``queue``, or the one queue holding it).

        Raises:
            ScheduleNotFoundError: no such schedule.
            ConfigError: several queues hold one of that name and ``queue`` is None.
        """
        target, _ = self._find_schedule(name, queue)
        return target.pause_schedule(name, paused=True)

    def resume_schedule(self, name: str, *, queue: str | None = None) -> ScheduleEntry:
        """Fire the schedule ``name`` again from its next slot after now: the slots that
        passed while it was paused are skipped, whatever its ``catch_up``.

        Raises:
            ScheduleNotFoundError, ConfigError: as :meth:`pause_schedule`.
        """
        target, entry = self._find_schedule(name, queue)
        upcoming = recurrence_of(entry).after(self.clock.now())
        return target.pause_schedule(name, paused=False, next_run_at=upcoming)

    def remove_schedule(self, name: str, *, queue: str | None = None) -> bool:
        """Delete the schedule ``name``; jobs it already made stay.

        Raises:
            ScheduleNotFoundError, ConfigError: as :meth:`pause_schedule`.
        """
        target, _ = self._find_schedule(name, queue)
        return target.remove_schedule(name)

