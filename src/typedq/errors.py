"""The typedq exception hierarchy.

Every error typedq raises derives from :class:`TypedqError`. Each leaf also derives from
the builtin a caller would naturally catch, so ``except ValueError`` or ``except KeyError``
keeps working for code written against the original specification::

    TypedqError
    ├── InvalidJobError (ValueError)            bad job fields at creation or enqueue
    │   ├── DuplicateJobError                   a job id that already exists, or a held unique key
    │   ├── UnknownDependencyError              depends_on names no job of the queue
    │   ├── DependencyCycleError                depends_on would close a cycle
    │   └── PayloadValidationError              payload does not fit the job type's model
    ├── NoHandlerError (ValueError)             no handler registered for a job type
    ├── ConfigError (ValueError)                bad configuration value or option name
    ├── JobNotFoundError (KeyError)             no job with that id
    ├── QueueNotFoundError (KeyError)           no queue with that name
    ├── ScheduleNotFoundError (KeyError)        no schedule with that name
    ├── JobTimeoutError (TimeoutError)          a handler ran past its timeout
    ├── WaitTimeoutError (TimeoutError)         waiting for a job's outcome took too long
    ├── JobFailedError (RuntimeError)           a job ended without a result
    ├── JobCancelledError (RuntimeError)        a handler stopped: its job's cancel was requested
    ├── PermanentError (RuntimeError)           raised by a handler: the job dies, never retried
    ├── StaleLeaseError (RuntimeError)          a lease token that is no longer current
    ├── InvalidTransitionError (ValueError)     a state change the job's state forbids
    ├── BackendError (RuntimeError)             storage failed
    │   ├── BackendUnavailableError (ConnectionError)
    │   ├── BackendWriteError                   storage refused a write (full, read-only)
    │   │   └── BackendWritesRefusedError       a server up that refuses writes for now
    │   │                                       (also a BackendUnavailableError)
    │   ├── BackendConfigError                  storage configured in a way typedq refuses
    │   ├── BackendDataError                    storage holds data typedq did not write
    │   └── QueueClosedError                    a call on a queue after its close
    ├── SerializationError (ValueError)         a value cannot be encoded
    │   ├── PayloadTooLargeError                encoded or decoded size over the limit
    │   └── ResultSerializationError            a handler's result cannot be stored
    ├── DeserializationError (ValueError)       stored bytes cannot be decoded
    │   ├── UnknownCodecError                   unknown serializer or codec tag
    │   ├── SignatureError                      missing or wrong signature
    │   └── UnsafeSerializerError               pickle data while pickle is disabled
    └── PayloadVersionError (ValueError)        payload version newer than the code knows

Messages name the field, the value and what is allowed; the same facts are kept as
attributes (``field``, ``value``, ``allowed``) so programs need not parse messages.

This module imports nothing from typedq: it is the bottom layer.
"""

from __future__ import annotations

from typing import Any, NamedTuple

__all__ = [
    "MAX_LISTED_ERRORS",
    "BackendConfigError",
    "BackendDataError",
    "BackendError",
    "BackendUnavailableError",
    "BackendWriteError",
    "BackendWritesRefusedError",
    "ConfigError",
    "DependencyCycleError",
    "DeserializationError",
    "DuplicateJobError",
    "FieldProblem",
    "InvalidJobError",
    "InvalidTransitionError",
    "JobCancelledError",
    "JobFailedError",
    "JobNotFoundError",
    "JobTimeoutError",
    "NoHandlerError",
    "PayloadTooLargeError",
    "PayloadValidationError",
    "PayloadVersionError",
    "PermanentError",
    "QueueClosedError",
    "QueueNotFoundError",
    "ResultSerializationError",
    "ScheduleNotFoundError",
    "SerializationError",
    "SignatureError",
    "StaleLeaseError",
    "TypedqError",
    "UnknownCodecError",
    "UnknownDependencyError",
    "UnsafeSerializerError",
    "WaitTimeoutError",
]

_MAX_REPR = 80


def _short(value: object) -> str:
    """A bounded repr, so a huge or hostile value never floods a message or a log."""
    text = repr(value)
    return text if len(text) <= _MAX_REPR else text[: _MAX_REPR - 3] + "..."


class TypedqError(Exception):
    """Root of every error raised by typedq."""


class _FieldError(TypedqError):
    """An error about one named field: keeps ``field``, ``value`` and ``allowed``."""

    def __init__(
        self, field: str, value: Any, allowed: str, *, message: str | None = None
    ) -> None:
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(message or f"{field}={_short(value)} is invalid: {allowed}")


class InvalidJobError(_FieldError, ValueError):
    """A job field has a value that is not allowed."""


class DuplicateJobError(InvalidJobError):
    """A job with this id already exists in the queue, or its unique key is held.

    With ``unique_key``, the job was refused because another job of the queue holds that
    key (see "Unique jobs" in the README): ``existing_id`` names it and ``field`` is
    ``"unique_key"``. Otherwise ``field`` is ``"job_id"``.
    """

    def __init__(
        self,
        job_id: str,
        *,
        queue: str | None = None,
        unique_key: str | None = None,
        existing_id: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.unique_key = unique_key
        self.existing_id = existing_id
        where = f" in queue {queue!r}" if queue else ""
        if unique_key is None:
            super().__init__(
                "job_id",
                job_id,
                "a job id that is not already used",
                message=f"job_id={_short(job_id)} already exists{where}",
            )
            return
        super().__init__(
            "unique_key",
            unique_key,
            "a unique key no job of the queue holds",
            message=(
                f"unique_key={_short(unique_key)} of job {_short(job_id)} is held by job "
                f"{_short(existing_id)}{where}"
            ),
        )


class UnknownDependencyError(InvalidJobError):
    """``depends_on`` names a job the queue does not hold."""

    def __init__(self, job_id: str, dependency: str, *, queue: str | None = None) -> None:
        self.job_id = job_id
        self.dependency = dependency
        where = f"queue {queue!r}" if queue else "the queue"
        super().__init__(
            "depends_on",
            dependency,
            f"ids of jobs already in {where}",
            message=(
                f"depends_on of job {_short(job_id)} names {_short(dependency)}, "
                f"which is not a job in {where}; a dependency must be enqueued first, "
                "in the same queue (or in the same enqueue_many batch)"
            ),
        )


class DependencyCycleError(InvalidJobError):
    """``depends_on`` would make the dependency graph cyclic."""

    def __init__(self, cycle: list[str]) -> None:
        self.cycle = cycle
        path = " -> ".join(cycle)
        super().__init__(
            "depends_on",
            cycle,
            "dependencies that form no cycle",
            message=f"depends_on would create a dependency cycle: {path}",
        )


#: How many bad fields a :class:`PayloadValidationError` message lists before
#: "and N more" (all of them stay in its ``errors`` attribute).
MAX_LISTED_ERRORS = 10


class FieldProblem(NamedTuple):
    """One bad field of a payload: its dotted ``path``, what is wrong, the input given."""

    path: str
    message: str
    value: Any


class PayloadValidationError(InvalidJobError):
    """A payload does not validate against its job type's model.

    ``field``, ``value`` and ``allowed`` describe the first bad field; ``errors`` holds
    every bad field as a :class:`FieldProblem` (path, what is wrong, the input), and the
    message lists up to :data:`MAX_LISTED_ERRORS` of them, then "and N more".
    """

    def __init__(
        self,
        field: str,
        value: Any,
        allowed: str,
        *,
        message: str | None = None,
        errors: tuple[FieldProblem, ...] | None = None,
    ) -> None:
        self.errors = errors if errors else (FieldProblem(field, allowed, value),)
        super().__init__(field, value, allowed, message=message)

    @classmethod
    def from_problems(cls, where: str, problems: list[FieldProblem]) -> PayloadValidationError:
        """One error naming every problem (up to :data:`MAX_LISTED_ERRORS`) of ``where``.

        Args:
            where: what was validated ("payload of 'resize'"), for the message.
            problems: the bad fields, at least one, in the validator's order.
        """
        listed = "; ".join(
            f"field {p.path!r}: {p.message}; got {_short(p.value)}"
            for p in problems[:MAX_LISTED_ERRORS]
        )
        more = len(problems) - MAX_LISTED_ERRORS
        tail = f"; and {more} more" if more > 0 else ""
        count = f"{len(problems)} invalid fields: " if len(problems) > 1 else ""
        first = problems[0]
        return cls(
            first.path,
            first.value,
            first.message,
            message=f"{where}: {count}{listed}{tail}",
            errors=tuple(problems),
        )


class NoHandlerError(_FieldError, ValueError):
    """No handler is registered for a job type."""

    def __init__(self, job_type: str, known: list[str] | None = None) -> None:
        known_text = ", ".join(sorted(known)) if known else "none registered"
        super().__init__(
            "job_type",
            job_type,
            f"a job type with a registered handler ({known_text})",
            message=f"no handler for job_type={_short(job_type)}; registered: {known_text}",
        )


class ConfigError(_FieldError, ValueError):
    """A configuration value or option name is not allowed."""


class JobNotFoundError(TypedqError, KeyError):
    """No job with this id exists."""

    def __init__(self, job_id: str, *, queue: str | None = None) -> None:
        self.job_id = job_id
        self.queue = queue
        where = f" in queue {queue!r}" if queue else ""
        self.message = f"no job with job_id={_short(job_id)}{where}"
        super().__init__(self.message)

    def __str__(self) -> str:
        # KeyError.__str__ would quote the message; keep it readable.
        return self.message


class QueueNotFoundError(TypedqError, KeyError):
    """No queue with this name exists."""

    def __init__(self, name: str, known: list[str]) -> None:
        self.name = name
        self.known = known
        self.message = f"no queue named {_short(name)}; queues: {', '.join(sorted(known)) or 'none'}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class ScheduleNotFoundError(TypedqError, KeyError):
    """No schedule with this name exists (in the queue, or any queue, searched)."""

    def __init__(self, name: str, *, queue: str | None = None) -> None:
        self.name = name
        self.queue = queue
        where = f" in queue {queue!r}" if queue else ""
        self.message = f"no schedule named {_short(name)}{where}"
        super().__init__(self.message)

    def __str__(self) -> str:
        return self.message


class JobTimeoutError(TypedqError, TimeoutError):
    """A handler ran longer than its job's ``timeout_seconds``."""

    def __init__(self, job_id: str, timeout_s: float) -> None:
        self.job_id = job_id
        self.timeout_s = timeout_s
        super().__init__(f"job {job_id} timed out after {timeout_s:g}s")


class WaitTimeoutError(TypedqError, TimeoutError):
    """A wait for a job's outcome ran out of time (the job itself goes on)."""

    def __init__(self, job_id: str, timeout_s: float, status: str) -> None:
        self.job_id = job_id
        self.timeout_s = timeout_s
        self.status = status
        super().__init__(f"job {job_id} is still {status} after waiting {timeout_s:g}s")


class JobFailedError(TypedqError, RuntimeError):
    """A job whose result was asked for ended FAILED, DEAD or CANCELLED."""

    def __init__(self, job_id: str, status: str, error: str | None) -> None:
        self.job_id = job_id
        self.status = status
        self.error = error
        super().__init__(f"job {job_id} ended {status}: {error or 'no error recorded'}")


class JobCancelledError(TypedqError, RuntimeError):
    """A handler stopped because its job's cancellation was requested.

    Raised by a handler (a shell job whose command was stopped, or any handler that
    checks ``cancel_requested``): the worker records the job CANCELLED, not failed, and
    does not retry it.
    """

    def __init__(self, job_id: str, detail: str = "") -> None:
        self.job_id = job_id
        self.detail = detail
        super().__init__(f"job {job_id} was cancelled while running" + (f": {detail}" if detail else ""))

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.job_id, self.detail))


class PermanentError(TypedqError, RuntimeError):
    """Raised by a handler: the job failed for good; it goes to the dead-letter queue
    at once, whatever retries it has left and whatever its retry policy says.

    Wrap the cause (``raise PermanentError("no such account") from exc``); the job's
    ``error`` is this error's text.
    """


class StaleLeaseError(TypedqError, RuntimeError):
    """A lease token was presented that is no longer the job's current one.

    Raised when a worker whose lease expired (and whose job was given to another worker)
    tries to complete, fail, extend or release it: the newer attempt wins.
    """

    def __init__(self, job_id: str, token: int, *, reason: str) -> None:
        self.job_id = job_id
        self.token = token
        self.reason = reason
        super().__init__(f"lease token {token} of job {job_id} is stale: {reason}")


class InvalidTransitionError(_FieldError, ValueError):
    """A state change that the job's current state does not allow."""


class BackendError(TypedqError, RuntimeError):
    """The storage backend failed."""


class BackendUnavailableError(BackendError, ConnectionError):
    """The storage backend cannot be reached."""


class BackendWriteError(BackendError):
    """The storage backend refused a write (disk full, read-only file, ...)."""


class BackendWritesRefusedError(BackendWriteError, BackendUnavailableError):
    """The storage server answers but refuses writes for now: a Redis server full under
    ``maxmemory-policy noeviction``, or a read-only replica. A write error (nothing of the
    refused write was stored) and unavailability alike: a caller that retries on
    :class:`BackendUnavailableError` retries this too (memory may be freed, a replica
    promoted), and the message names the server's URL."""


class BackendConfigError(BackendError):
    """The storage server is configured in a way typedq refuses (a Redis server that may
    evict keys, when told to refuse one). Names the server's setting (``field``), its
    value and what is allowed, and the server's ``url`` (password masked)."""

    def __init__(self, setting: str, value: Any, allowed: str, *, url: str) -> None:
        self.field = setting
        self.value = value
        self.allowed = allowed
        self.url = url
        super().__init__(f"{url}: {setting}={_short(value)} is refused: {allowed}")


class BackendDataError(BackendError):
    """The storage holds data typedq did not write where it keeps a queue (a Redis key
    of another type under the queue's prefix); typedq refuses to touch it."""


class QueueClosedError(BackendError):
    """A call on a queue object after it was closed (``Queue.close``,
    ``JobQueueManager.close``): nothing was read or written. A worker still running a
    job when its manager closed without waiting gets it for its late completion; the
    job's lease then expires and the job is rescued."""


class SerializationError(TypedqError, ValueError):
    """A value cannot be encoded by the configured serializer."""

    def __init__(self, message: str, *, path: str = "$") -> None:
        self.path = path
        super().__init__(message)


class PayloadTooLargeError(SerializationError):
    """An encoded (or, when reading, decoded) value is larger than the limit."""

    def __init__(self, size: int, limit: int, *, what: str = "payload") -> None:
        self.size = size
        self.limit = limit
        self.what = what
        super().__init__(f"{what} is {size} bytes, over the limit of {limit} bytes")


class ResultSerializationError(SerializationError):
    """A handler returned a value that cannot be stored as the job's result."""


class DeserializationError(TypedqError, ValueError):
    """Stored bytes cannot be decoded."""


class UnknownCodecError(DeserializationError):
    """Stored bytes name a serializer or codec this process does not know."""


class SignatureError(DeserializationError):
    """A signed frame's signature is missing or does not verify."""


class UnsafeSerializerError(DeserializationError):
    """Stored bytes were written by pickle, which is disabled here."""


class PayloadVersionError(_FieldError, ValueError):
    """A payload's version is newer than the job type this process knows."""
