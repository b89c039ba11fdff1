"""The ``Job`` dataclass, ``JobStatus`` and ``Priority``: the specification's data model.

A :class:`Job` is the unit of work. Its fields are the original specification's, with
their defaults, plus a few that the queue protocol needs to run jobs safely across
workers (``queue``, ``attempt``, ``worker_id``, ``lease_until``, ``started_at``,
``finished_at``, ``lost_count``, ``cancel_requested``, ``run_alone``, ``traceback``).
Every job is validated when it is constructed, so an invalid job cannot be built, let
alone enqueued.

``to_dict()`` returns plain JSON-safe data and ``from_dict(to_dict(job)) == job``.

``traceback`` holds the traceback text of the last failure a worker recorded (bounded to
the last :data:`MAX_TRACEBACK` characters). Older typedq kept it in
``metadata["typedq.traceback"]`` (:data:`TRACEBACK_KEY`); such data is still read: the
text moves to ``traceback`` (see :func:`take_legacy_traceback`).
"""

from __future__ import annotations

import copy
import math
import os
import re
import threading
import time
from dataclasses import dataclass, field, fields
from enum import IntEnum, StrEnum
from typing import Any, Final

from typedq.errors import InvalidJobError

__all__ = [
    "LEVELS",
    "MAX_COUNT",
    "MAX_EPOCH",
    "MAX_JOB_ID_LENGTH",
    "MAX_PRIORITY",
    "MAX_TIMEOUT_S",
    "MAX_TRACEBACK",
    "MIN_EPOCH",
    "MIN_PRIORITY",
    "TERMINAL_STATUSES",
    "TRACEBACK_KEY",
    "UNSCHEDULED",
    "UTF8_TEXT",
    "Job",
    "JobLogLine",
    "JobProgress",
    "JobStatus",
    "Priority",
    "check_failure_text",
    "level_index",
    "lone_surrogate",
    "parse_priority",
    "storable_text",
    "take_legacy_traceback",
    "utf8_text",
    "validate_job_id",
]

MIN_PRIORITY: Final = 1
MAX_PRIORITY: Final = 10
#: The largest ``max_retries``, ``retry_count``, ``attempt`` and ``lost_count`` (2**31 - 1):
#: every backend stores it exactly (SQLite's 64-bit INTEGER, JSON, a Redis hash).
MAX_COUNT: Final = 2**31 - 1
#: The longest ``timeout_seconds``, a billion seconds (about 31 years): below
#: ``threading.TIMEOUT_MAX``, so a worker can always wait that long.
MAX_TIMEOUT_S: Final = 1_000_000_000
#: Epoch times (``created_at``, ``scheduled_at``, ``lease_until``, ``started_at``,
#: ``finished_at``) lie in ``datetime``'s range, years 1 to 9999 UTC.
MIN_EPOCH: Final = -62_135_596_800
MAX_EPOCH: Final = 253_402_300_799
MAX_JOB_ID_LENGTH: Final = 128
MAX_JOB_TYPE_LENGTH: Final = 200
#: Where typedq before ``Job.traceback`` kept the last failure's traceback, in ``metadata``.
#: Read only: a job stored or exported that way gets the text as its ``traceback``.
TRACEBACK_KEY: Final = "typedq.traceback"
#: The most characters of ``Job.traceback``: backends keep the last ones (the innermost
#: frames and the exception line).
MAX_TRACEBACK: Final = 8192
#: The most log lines (``JobContext.log``) a job keeps: the newest ones.
MAX_JOB_LOGS: Final = 200
#: The most characters of one log line or progress message (longer ones are cut).
MAX_LOG_LINE: Final = 1000
#: The ``scheduled_at`` a job without one sorts by: before every time, as SQL sorts NULL.
UNSCHEDULED: Final = -math.inf

# Letters, digits and ``_ . : @ + = -``: safe as a file name part, a URL path segment and
# inside a Redis key, and wide enough for UUIDs, ULIDs and "order:42"-style ids.
_JOB_ID_RE: Final = re.compile(rf"[A-Za-z0-9_.:@+=-]{{1,{MAX_JOB_ID_LENGTH}}}")


class JobStatus(StrEnum):
    """The states of a job.

    ``PENDING`` jobs wait to run (a future ``scheduled_at`` or unfinished dependencies
    keep them from being ready); ``SCHEDULED`` is a state a caller may set to hold a job
    back; ``RUNNING`` jobs are leased to a worker; ``COMPLETED`` succeeded; ``FAILED``
    could not run because a dependency failed; ``DEAD`` used up its retries and sits in
    the dead-letter queue; ``CANCELLED`` was cancelled before it finished.
    """

    PENDING = "PENDING"
    SCHEDULED = "SCHEDULED"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    DEAD = "DEAD"
    CANCELLED = "CANCELLED"


#: States a job never leaves by itself (``DEAD`` leaves only by replay).
TERMINAL_STATUSES: Final = frozenset(
    {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED}
)


@dataclass(frozen=True, slots=True)
class JobProgress:
    """How far a running job got, as its handler last reported (``JobContext.progress``).

    ``done`` out of ``total`` (None: unknown total), an optional ``message``, the time it
    was stored (``updated_at``, epoch) and the attempt that reported it.
    """

    done: float
    total: float | None = None
    message: str | None = None
    updated_at: float = 0.0
    attempt: int = 0

    @property
    def fraction(self) -> float | None:
        """``done / total`` clamped to 0..1, or None without a (positive) total."""
        if self.total is None or self.total <= 0:
            return None
        return min(1.0, max(0.0, self.done / self.total))

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data."""
        return {
            "done": self.done, "total": self.total, "message": self.message,
            "updated_at": self.updated_at, "attempt": self.attempt,
        }

    @classmethod
    def from_dict(cls, data: Any) -> JobProgress:
        """Rebuild from :meth:`to_dict` data.

        Raises:
            InvalidJobError: ``data`` is not such a dict.
        """
        if not isinstance(data, dict) or not _is_number(data.get("done")):
            raise InvalidJobError("progress", data, "None or a dict from JobProgress.to_dict()")
        total = data.get("total")
        message = data.get("message")
        return cls(
            done=data["done"],
            total=total if _is_number(total) else None,
            message=message if isinstance(message, str) else None,
            updated_at=float(data.get("updated_at") or 0.0),
            attempt=int(data.get("attempt") or 0),
        )


@dataclass(frozen=True, slots=True)
class JobLogLine:
    """One line a handler logged (``JobContext.log``): when, in which attempt, what."""

    at: float
    attempt: int
    message: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe data."""
        return {"at": self.at, "attempt": self.attempt, "message": self.message}

    @classmethod
    def from_dict(cls, data: Any) -> JobLogLine:
        """Rebuild from :meth:`to_dict` data (a malformed entry reads as an empty line)."""
        if not isinstance(data, dict):
            return cls(0.0, 0, str(data))
        return cls(float(data.get("at") or 0.0), int(data.get("attempt") or 0), str(data.get("message", "")))


class Priority(IntEnum):
    """The five named priority levels on the 1 (lowest) to 10 (highest) scale.

    Any int from 1 to 10 is a priority; each belongs to one level, two values a level
    (see :meth:`level_of`)::

        level     value  band
        CRITICAL  10     9-10
        HIGH       7     7-8
        NORMAL     5     5-6
        LOW        3     3-4
        BATCH      1     1-2

    ``LOWEST`` is a deprecated alias of ``BATCH`` (the same value, 1). Wherever a
    priority is accepted, a level's name is too, in any case (``"high"``).
    """

    CRITICAL = 10
    HIGH = 7
    NORMAL = 5
    LOW = 3
    BATCH = 1
    #: Deprecated: the name typedq used for 1 before the five levels; ``BATCH`` now.
    LOWEST = 1

    @classmethod
    def level_of(cls, priority: int) -> Priority:
        """The level a priority value from 1 to 10 belongs to (9 is CRITICAL, 2 BATCH)."""
        return LEVELS[level_index(priority)]


#: The five levels, highest first (index = :func:`level_index`).
LEVELS: Final = (Priority.CRITICAL, Priority.HIGH, Priority.NORMAL, Priority.LOW, Priority.BATCH)
_LEVEL_NAMES: Final = "CRITICAL, HIGH, NORMAL, LOW, BATCH (any case)"
_PRIORITY_ALLOWED: Final = (
    f"an int from {MIN_PRIORITY} (lowest) to {MAX_PRIORITY} (highest) or a level name: {_LEVEL_NAMES}"
)


def level_index(priority: int) -> int:
    """0 for CRITICAL (9-10), 1 HIGH (7-8), 2 NORMAL (5-6), 3 LOW (3-4), 4 BATCH (1-2)."""
    return (MAX_PRIORITY - priority) // 2


def parse_priority(value: object, *, field_name: str = "priority") -> int:
    """The priority ``value`` means: an int from 1 to 10, or a level's name in any case.

    Raises:
        InvalidJobError: anything else; the message names ``field_name`` and the
            allowed values.
    """
    if type(value) is int or (isinstance(value, int) and not isinstance(value, bool)):
        if MIN_PRIORITY <= value <= MAX_PRIORITY:
            return int(value)
    elif isinstance(value, str):
        member = Priority.__members__.get(value.strip().upper())
        if member is not None:
            return int(member)
    raise InvalidJobError(field_name, value, _PRIORITY_ALLOWED)


#: What a text field of a job may hold beside its other rules.
UTF8_TEXT: Final = "text UTF-8 can encode (no lone surrogates)"


def lone_surrogate(value: str) -> int | None:
    """The index of the first lone surrogate in ``value``, or None when it has none.

    UTF-8 has no form for a lone surrogate (what ``surrogateescape`` decoding leaves in a
    ``str``, a file name's undecodable bytes), so no backend or serializer can keep text
    that has one."""
    if value.isascii():
        return None
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def utf8_text(value: str) -> bool:
    """Whether every backend can store ``value``: it has no lone surrogate
    (:func:`lone_surrogate`)."""
    return lone_surrogate(value) is None


def storable_text(value: str) -> str:
    """``value`` as every backend can store it: a lone surrogate written as its escape
    (``\\udcff``), the rest unchanged. For text typedq records itself (a handler's
    error message and traceback), so that a failure is recorded whatever its text."""
    if utf8_text(value):
        return value
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def check_failure_text(error: object, traceback: object) -> None:
    """Check the ``error`` and ``traceback`` a failure records (``fail``, ``bury``) as
    ``Job`` checks its fields, before anything is written (of a traceback, the last
    ``MAX_TRACEBACK`` characters, which are what is kept).

    Raises:
        InvalidJobError: ``error`` is not text UTF-8 can encode, or ``traceback`` is
            neither None nor such text; the message names the field.
    """
    if type(error) is not str or not utf8_text(error):
        raise InvalidJobError("error", error, f"a string: {UTF8_TEXT}")
    if traceback is not None and (type(traceback) is not str or not utf8_text(traceback[-MAX_TRACEBACK:])):
        shown = traceback if type(traceback) is not str else f"<{len(traceback)} characters>"
        raise InvalidJobError("traceback", shown, f"None or a string: {UTF8_TEXT}")


def validate_job_id(value: object, *, field_name: str = "job_id") -> str:
    """Return ``value`` if it is a valid job id, else raise ``InvalidJobError``.

    Raises:
        InvalidJobError: not a string, empty, longer than 128 characters, or with a
            character outside letters, digits and ``_ . : @ + = -``.
    """
    if type(value) is not str:
        raise InvalidJobError(field_name, value, "a string")
    if _JOB_ID_RE.fullmatch(value) is None:
        raise InvalidJobError(
            field_name,
            value,
            f"1 to {MAX_JOB_ID_LENGTH} characters from letters, digits and _ . : @ + = -",
        )
    return value


_ID_BATCH: Final = 256
_id_state = threading.local()


def take_legacy_traceback(metadata: dict[str, Any], traceback: str | None) -> str | None:
    """Move a traceback kept the old way, in ``metadata[TRACEBACK_KEY]``, out of ``metadata``.

    For data written before ``Job.traceback`` existed: the key is removed from ``metadata``
    (a dict the caller owns) and its text, bounded, is returned when ``traceback`` is
    None; otherwise ``traceback`` is returned (a newer failure's, which wins).
    """
    legacy = metadata.pop(TRACEBACK_KEY, None)
    if traceback is None and isinstance(legacy, str):
        return legacy[-MAX_TRACEBACK:]
    return traceback


def _new_id() -> str:
    """A random UUID4 string, like ``str(uuid.uuid4())``, without a syscall per id.

    ``uuid4()`` reads ``os.urandom(16)`` on every call; that syscall releases the GIL and
    made every submit hand control to a waiting worker thread. Here each thread reads 4 KiB
    of OS randomness at a time and cuts ids from it: the same source, the same format.
    """
    state = _id_state
    try:
        pool = state.pool
        offset = state.offset
    except AttributeError:
        pool, offset = b"", 0
    if offset >= len(pool):
        pool, offset = os.urandom(16 * _ID_BATCH), 0
        state.pool = pool
    state.offset = offset + 16
    h = pool[offset : offset + 16].hex()
    # The version nibble becomes 4 and the variant nibble 10xx (RFC 4122), as
    # uuid.UUID(version=4) sets them.
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{'89ab'[int(h[16], 16) & 3]}{h[17:20]}-{h[20:]}"


def _is_int(value: object) -> bool:
    return type(value) is int or (isinstance(value, int) and not isinstance(value, bool))


def _is_number(value: object) -> bool:
    return (type(value) is float or _is_int(value)) and math.isfinite(value)  # type: ignore[arg-type]  # checked to be int or float


def _is_epoch(value: object) -> bool:
    """A finite int or float epoch time from year 1 to year 9999 (``MIN_EPOCH..MAX_EPOCH``)."""
    return _is_number(value) and MIN_EPOCH <= value <= MAX_EPOCH  # type: ignore[operator]  # checked to be a number


_EPOCH_RANGE: Final = f"a finite epoch time from {MIN_EPOCH} to {MAX_EPOCH} (years 1 to 9999)"
_COUNTERS: Final = ("max_retries", "retry_count", "attempt", "lost_count")
_TIMES: Final = ("lease_until", "started_at", "finished_at")


@dataclass(eq=True, slots=True)
class Job:
    """A unit of work: what to run (``job_type`` + ``payload``), when, and how often.

    Ordering (``__lt__``, used by heaps): higher ``priority`` first, then earlier
    ``scheduled_at`` (``None``, meaning "now", sorts first), then earlier ``created_at``.

    Raises:
        InvalidJobError: on construction, when any field has a value that is not allowed;
            the message names the field, the value and what is allowed.
    """

    job_id: str = field(default_factory=_new_id)
    job_type: str = ""
    payload: dict[str, Any] = field(default_factory=dict)
    priority: int = 5
    scheduled_at: float | None = None
    created_at: float = field(default_factory=time.time)
    max_retries: int = 3
    retry_count: int = 0
    timeout_seconds: float | None = None
    status: JobStatus = JobStatus.PENDING
    result: Any | None = None
    error: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    depends_on: list[str] = field(default_factory=list)
    # Fields the queue protocol maintains; callers normally leave them at their defaults.
    queue: str = "default"
    attempt: int = 0
    worker_id: str | None = None
    lease_until: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    lost_count: int = 0
    cancel_requested: bool = False
    #: Set when the job was given back from a batch whose worker died: it is then
    #: claimed alone, so a job that kills its worker is told apart from its batch-mates.
    run_alone: bool = False
    #: The traceback text of the last failure recorded (``fail``, ``bury``), at most
    #: :data:`MAX_TRACEBACK` characters; None when it has not failed or was run again.
    traceback: str | None = None
    #: The progress its handler last reported (see :class:`JobProgress`), or None. Not
    #: compared: two reads of one job are equal whatever progress each saw.
    progress: JobProgress | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self, *, check_id: bool = True) -> None:
        """Check every field; raise ``InvalidJobError`` naming the first bad one.

        Also normalises ``status`` given as a string and ``depends_on`` given as any
        iterable of ids (duplicates dropped, order kept).

        Args:
            check_id: also check ``job_id`` (skipped only for ids typedq generated).
        """
        if check_id:
            validate_job_id(self.job_id)
        jt = self.job_type
        if type(jt) is not str or not jt.strip() or len(jt) > MAX_JOB_TYPE_LENGTH or not utf8_text(jt):
            raise InvalidJobError(
                "job_type", jt, f"a non-blank string of at most {MAX_JOB_TYPE_LENGTH} characters, {UTF8_TEXT}"
            )
        if type(self.payload) is not dict:
            raise InvalidJobError("payload", self.payload, "a dict with string keys")
        self._validate_numbers()
        if type(self.status) is not JobStatus:
            try:
                self.status = JobStatus(self.status)
            except ValueError:
                allowed = ", ".join(s.value for s in JobStatus)
                raise InvalidJobError("status", self.status, f"one of {allowed}") from None
        if self.error is not None and (type(self.error) is not str or not utf8_text(self.error)):
            raise InvalidJobError("error", self.error, f"None or a string: {UTF8_TEXT}")
        if type(self.metadata) is not dict:
            raise InvalidJobError("metadata", self.metadata, "a dict with string keys")
        given: object = self.depends_on
        if given == []:  # the common case: nothing to check
            deps: list[str] = self.depends_on
        elif type(given) is list:
            deps = given
        elif isinstance(given, tuple | set | frozenset):
            deps = list(given)
        else:
            raise InvalidJobError("depends_on", given, "a list of job ids")
        if deps:
            for dep in deps:
                validate_job_id(dep, field_name="depends_on")
            if len(set(deps)) != len(deps):
                deps = list(dict.fromkeys(deps))
        self.depends_on = deps
        if type(self.queue) is not str or not self.queue or not utf8_text(self.queue):
            raise InvalidJobError("queue", self.queue, f"a non-empty queue name: {UTF8_TEXT}")
        if self.worker_id is not None and (type(self.worker_id) is not str or not utf8_text(self.worker_id)):
            raise InvalidJobError("worker_id", self.worker_id, f"None or a string: {UTF8_TEXT}")
        if type(self.cancel_requested) is not bool:
            raise InvalidJobError("cancel_requested", self.cancel_requested, "True or False")
        if type(self.run_alone) is not bool:
            raise InvalidJobError("run_alone", self.run_alone, "True or False")
        if self.progress is not None and type(self.progress) is not JobProgress:
            self.progress = JobProgress.from_dict(self.progress)
        tb = self.traceback
        if tb == "":
            self.traceback = None  # no traceback: stored and read back as None
        elif tb is not None and (type(tb) is not str or len(tb) > MAX_TRACEBACK or not utf8_text(tb)):
            raise InvalidJobError(
                "traceback", tb if type(tb) is not str else f"<{len(tb)} characters>",
                f"None or a string of at most {MAX_TRACEBACK} characters, {UTF8_TEXT}",
            )

    def _validate_numbers(self) -> None:
        """Check that every number field is of its type and inside its documented range."""
        prio = self.priority
        if type(prio) is not int or not MIN_PRIORITY <= prio <= MAX_PRIORITY:
            # A level name ("high") or a Priority becomes its int; anything else is refused.
            self.priority = parse_priority(prio)
        if self.scheduled_at is not None and not _is_epoch(self.scheduled_at):
            raise InvalidJobError("scheduled_at", self.scheduled_at, f"None or {_EPOCH_RANGE}")
        created = self.created_at
        if not (type(created) is float and MIN_EPOCH <= created <= MAX_EPOCH) and not _is_epoch(created):
            raise InvalidJobError("created_at", created, _EPOCH_RANGE)
        counters = (self.max_retries, self.retry_count, self.attempt, self.lost_count)
        if not all(type(v) is int and 0 <= v <= MAX_COUNT for v in counters):
            for name in _COUNTERS:
                value = getattr(self, name)
                if not _is_int(value) or not 0 <= value <= MAX_COUNT:
                    raise InvalidJobError(name, value, f"an int from 0 to {MAX_COUNT}")
        timeout = self.timeout_seconds
        if timeout is not None and (not _is_number(timeout) or not 0 < timeout <= MAX_TIMEOUT_S):
            raise InvalidJobError(
                "timeout_seconds", timeout, f"None or a number of seconds > 0 and <= {MAX_TIMEOUT_S}"
            )
        if self.lease_until is not None or self.started_at is not None or self.finished_at is not None:
            for name in _TIMES:
                value = getattr(self, name)
                if value is not None and not _is_epoch(value):
                    raise InvalidJobError(name, value, f"None or {_EPOCH_RANGE}")

    @classmethod
    def create(
        cls,
        job_type: str,
        payload: dict[str, Any] | None = None,
        *,
        priority: int | str = 5,
        scheduled_at: float | None = None,
        delay_s: float | None = None,
        max_retries: int = 3,
        timeout_seconds: float | None = None,
        metadata: dict[str, Any] | None = None,
        depends_on: list[str] | None = None,
        job_id: str | None = None,
        queue: str = "default",
        now: float | None = None,
    ) -> Job:
        """Build a validated job.

        Args:
            job_type: which handler runs it; a non-blank string.
            payload: the handler's argument; a dict (default empty).
            priority: 1 (lowest) to 10 (highest), or a level name (``"high"``).
            scheduled_at: run no earlier than this epoch time (years 1 to 9999).
            delay_s: run no earlier than ``delay_s`` seconds from now (exclusive with
                ``scheduled_at``).
            max_retries: how many times a failure is retried (0 to ``MAX_COUNT``).
            timeout_seconds: the handler's time limit (> 0, at most ``MAX_TIMEOUT_S``),
                or None.
            metadata: free-form data for the caller.
            depends_on: ids of jobs that must complete first.
            job_id: the id; a fresh UUID4 when omitted.
            queue: the name of the queue the job belongs to.
            now: the creation time; the current time when omitted.

        Raises:
            InvalidJobError: a field has a value that is not allowed.
        """
        created = time.time() if now is None else now
        if delay_s is not None:
            if scheduled_at is not None:
                raise InvalidJobError(
                    "delay_s", delay_s, "not both delay_s and scheduled_at; give one of them"
                )
            if not _is_number(delay_s) or delay_s < 0:
                raise InvalidJobError("delay_s", delay_s, "a number of seconds >= 0")
            scheduled_at = created + delay_s
        return cls(
            job_id=_new_id() if job_id is None else job_id,
            job_type=job_type,
            payload={} if payload is None else payload,
            priority=parse_priority(priority),
            scheduled_at=scheduled_at,
            created_at=created,
            max_retries=max_retries,
            timeout_seconds=timeout_seconds,
            metadata={} if metadata is None else metadata,
            depends_on=[] if depends_on is None else depends_on,
            queue=queue,
        )

    @classmethod
    def unchecked(
        cls,
        *,
        job_id: str,
        job_type: str,
        payload: dict[str, Any],
        priority: int,
        scheduled_at: float | None,
        created_at: float,
        max_retries: int,
        retry_count: int,
        timeout_seconds: float | None,
        status: JobStatus,
        result: Any | None,
        error: str | None,
        metadata: dict[str, Any],
        depends_on: list[str],
        queue: str,
        attempt: int,
        worker_id: str | None,
        lease_until: float | None,
        started_at: float | None,
        finished_at: float | None,
        lost_count: int,
        cancel_requested: bool,
        run_alone: bool = False,
        traceback: str | None = None,
        progress: JobProgress | None = None,
    ) -> Job:
        """Build a job from fields already validated once, without validating again.

        For backends rebuilding stored rows on hot paths (a claim builds one per job):
        every field must be given, with the type ``Job`` declares. Anything else must go
        through the constructor. Plain assignments, no loop: this is measurably faster.
        """
        job = object.__new__(cls)
        job.job_id = job_id
        job.job_type = job_type
        job.payload = payload
        job.priority = priority
        job.scheduled_at = scheduled_at
        job.created_at = created_at
        job.max_retries = max_retries
        job.retry_count = retry_count
        job.timeout_seconds = timeout_seconds
        job.status = status
        job.result = result
        job.error = error
        job.metadata = metadata
        job.depends_on = depends_on
        job.queue = queue
        job.attempt = attempt
        job.worker_id = worker_id
        job.lease_until = lease_until
        job.started_at = started_at
        job.finished_at = finished_at
        job.lost_count = lost_count
        job.cancel_requested = cancel_requested
        job.run_alone = run_alone
        job.traceback = traceback
        job.progress = progress
        return job

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return self.sort_key() < other.sort_key()

    def sort_key(self) -> tuple[int, float, float]:
        """The heap key: ``(-priority, scheduled_at or UNSCHEDULED, created_at)``."""
        sched = self.scheduled_at
        return (-self.priority, UNSCHEDULED if sched is None else sched, self.created_at)

    @property
    def is_terminal(self) -> bool:
        """Whether the job is COMPLETED, FAILED, DEAD or CANCELLED."""
        return self.status in TERMINAL_STATUSES

    def to_dict(self) -> dict[str, Any]:
        """Return every field as plain JSON-safe data (the status as its name).

        Mutable fields are copied, so the result is a snapshot.
        """
        data = {f.name: getattr(self, f.name) for f in _FIELDS}
        data["status"] = self.status.value
        for name in ("payload", "metadata", "result"):
            value = data[name]
            if isinstance(value, dict | list):
                data[name] = copy.deepcopy(value)
        data["depends_on"] = list(self.depends_on)
        data["progress"] = None if self.progress is None else self.progress.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        """Rebuild a job from ``to_dict()`` output.

        Unknown keys are refused (a typo would otherwise drop data silently); keys this
        version added may be missing, and take their defaults. Data without a
        ``traceback`` key that carries one in ``metadata["typedq.traceback"]`` (an export
        of an older typedq) gets it as its ``traceback``.

        Raises:
            InvalidJobError: ``data`` is not a dict, has an unknown key, lacks
                ``job_type``, or holds a value that is not allowed.
        """
        if not isinstance(data, dict):
            raise InvalidJobError("job", data, "a dict from Job.to_dict()")
        unknown = data.keys() - _FIELD_NAMES
        if unknown:
            first = sorted(unknown)[0]
            raise InvalidJobError(first, data[first], f"one of the fields {sorted(_FIELD_NAMES)}")
        if "job_type" not in data:
            raise InvalidJobError("job_type", None, "a non-blank string (the field is required)")
        kwargs = dict(data)
        for name in ("payload", "metadata", "result"):
            value = kwargs.get(name)
            if isinstance(value, dict | list):
                kwargs[name] = copy.deepcopy(value)
        if "depends_on" in kwargs and isinstance(kwargs["depends_on"], list):
            kwargs["depends_on"] = list(kwargs["depends_on"])
        metadata = kwargs.get("metadata")
        if "traceback" not in kwargs and isinstance(metadata, dict) and TRACEBACK_KEY in metadata:
            kwargs["traceback"] = take_legacy_traceback(metadata, None)
        return cls(**kwargs)


_FIELDS: Final = tuple(fields(Job))
_FIELD_NAMES: Final = frozenset(f.name for f in _FIELDS)
