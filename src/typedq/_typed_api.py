"""The typed half of ``JobQueueManager``: ``handler``, ``register``, ``enqueue``, ``of``.

:class:`TypedAPI` is mixed into the manager. Its methods tie a :class:`~typedq.typed.JobType`
``[P, R]`` to the untyped machinery underneath (``register_handler`` and ``submit``), so that
mypy checks every handler and every submission against the job type:

* ``@manager.handler(jt)`` / ``manager.register(jt, fn)`` accept a function taking ``P`` and
  returning ``R`` (or an ``async def`` returning ``R``);
* ``manager.enqueue(jt, payload, **options)`` accepts only a ``P`` and returns a
  :class:`JobRef` ``[R]`` whose ``result()`` is an ``R``;
* ``manager.of(jt).enqueue(payload)`` is the same with the job type bound first, so a wrong
  payload reads "expected Resize" in mypy's message.
"""

from __future__ import annotations

import inspect
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, TypedDict, TypeVar, Unpack, overload

from pydantic import BaseModel

from typedq.context import JobContext, invoke
from typedq.errors import JobFailedError, WaitTimeoutError
from typedq.job import Job, JobProgress, JobStatus
from typedq.retry import FailureCallback, RetryPolicy
from typedq.typed import VERSION_KEY, JobType

if TYPE_CHECKING:
    from typedq.worker import Handler

__all__ = ["BoundJobType", "EnqueueOptions", "JobRef", "TypedAPI", "TypedHandler"]

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")


class EnqueueOptions(TypedDict, total=False):
    """Keyword options of a typed submission; each defaults to the job type's setting."""

    priority: int
    scheduled_at: float
    delay_s: float
    max_retries: int
    timeout_seconds: float
    metadata: dict[str, Any]
    depends_on: list[str]
    job_id: str
    queue: str
    unique_key: str
    unique_for: float | timedelta
    unique_states: Sequence[JobStatus | str]
    on_conflict: Literal["return", "raise"]
    retry: RetryPolicy


class TypedHandler(Generic[P, R]):
    """Wraps a typed handler for the worker: loads ``P`` from the job, dumps ``R`` back.

    The worker hands it the whole ``Job`` (``takes_job``), so the payload version stored
    with the job picks the migrations to run before validation.
    """

    takes_job = True

    def __init__(self, job_type: JobType[P, R], fn: Callable[..., R] | Callable[..., Awaitable[R]]) -> None:
        self.job_type = job_type
        self.fn = fn
        #: Whether ``fn`` is an ``async def``: the worker then awaits what a call returns.
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__name__ = getattr(fn, "__name__", job_type.name)

    def __call__(self, job: Job, ctx: JobContext | None = None) -> Any:
        """Load the payload, call the function (with ``ctx`` when it takes one) and dump
        its result; for an ``async def`` function, return the coroutine that does so (the
        worker awaits it)."""
        payload = self.job_type.load(job.payload, JobType.version_of(job))
        out: Any = invoke(self.fn, payload, ctx)
        if self.is_async:
            return self._finish(out)
        return self.job_type.dump_result(out)

    async def _finish(self, out: Any) -> Any:
        return self.job_type.dump_result(await out)


class _Manager(ABC):
    """What the typed API needs from the manager it is mixed into."""

    @abstractmethod
    def register_handler(
        self,
        job_type: str,
        handler: Handler,
        queue: str = "default",
        *,
        retry: RetryPolicy | None = None,
        on_failure: FailureCallback | None = None,
    ) -> None:
        """Implemented by ``JobQueueManager``."""

    @abstractmethod
    def submit(self, job_type: str, payload: dict[str, Any] | None = None, **job_fields: Any) -> str:
        """Implemented by ``JobQueueManager``."""

    @abstractmethod
    def get_job(self, job_id: str) -> Job:
        """Implemented by ``JobQueueManager``."""

    @abstractmethod
    def wait_for_completion(self, job_ids: Iterable[str], timeout: float | None = None) -> bool:
        """Implemented by ``JobQueueManager``."""

    @abstractmethod
    def cancel(self, job_id: str) -> bool:
        """Implemented by ``JobQueueManager``."""


class JobRef(Generic[R]):
    """A handle on a submitted typed job; ``result()`` is typed ``R``."""

    def __init__(self, manager: _Manager, job_type: JobType[Any, R], job_id: str) -> None:
        self._manager = manager
        self.job_type = job_type
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"JobRef({self.job_type.name!r}, {self.job_id!r})"

    def job(self) -> Job:
        """The stored job as it is now."""
        return self._manager.get_job(self.job_id)

    def status(self) -> JobStatus:
        """The job's current status."""
        return self.job().status

    def progress(self) -> JobProgress | None:
        """The progress the job's handler last reported (``ctx.progress``), or None."""
        return self.job().progress

    def cancel(self) -> bool:
        """Cancel the job (see ``Queue.cancel``)."""
        return self._manager.cancel(self.job_id)

    def result(self, timeout: float | None = None) -> R:
        """Wait for the job to end and return its typed result.

        Raises:
            WaitTimeoutError: it has not ended within ``timeout`` seconds.
            JobFailedError: it ended FAILED, DEAD or CANCELLED.
        """
        if not self._manager.wait_for_completion([self.job_id], timeout):
            raise WaitTimeoutError(self.job_id, timeout or 0.0, self.status().value)
        job = self.job()
        if job.status is not JobStatus.COMPLETED:
            raise JobFailedError(self.job_id, job.status.value, job.error)
        return self.job_type.load_result(job.result)


class BoundJobType(Generic[P, R]):
    """A job type bound to a manager: ``manager.of(jt).enqueue(payload)``."""

    def __init__(self, manager: TypedAPI, job_type: JobType[P, R]) -> None:
        self._manager = manager
        self.job_type = job_type

    def enqueue(self, payload: P, **options: Unpack[EnqueueOptions]) -> JobRef[R]:
        """Submit one job of this type; see :meth:`TypedAPI.enqueue`."""
        return self._manager.enqueue(self.job_type, payload, **options)

    def ref(self, job_id: str) -> JobRef[R]:
        """A typed handle on an already submitted job of this type."""
        return JobRef(self._manager, self.job_type, job_id)


class _Registrar(Generic[P, R]):
    """The decorator ``manager.handler(jt)`` returns."""

    def __init__(self, manager: TypedAPI, job_type: JobType[P, R]) -> None:
        self._manager = manager
        self._job_type = job_type

    @overload
    def __call__(self, fn: Callable[[P], R]) -> Callable[[P], R]: ...

    @overload
    def __call__(self, fn: Callable[[P, JobContext], R]) -> Callable[[P, JobContext], R]: ...

    @overload
    def __call__(
        self, fn: Callable[[P], Coroutine[Any, Any, R]]
    ) -> Callable[[P], Coroutine[Any, Any, R]]: ...

    @overload
    def __call__(
        self, fn: Callable[[P, JobContext], Coroutine[Any, Any, R]]
    ) -> Callable[[P, JobContext], Coroutine[Any, Any, R]]: ...

    def __call__(self, fn: Any) -> Any:
        self._manager.register(self._job_type, fn)
        return fn


class TypedAPI(_Manager):
    """The typed methods of ``JobQueueManager``."""

    def handler(self, job_type: JobType[P, R]) -> _Registrar[P, R]:
        """Decorator: register the decorated function as ``job_type``'s handler.

        The function must take a ``P`` and return an ``R`` (``async def`` allowed).
        """
        return _Registrar(self, job_type)

    @overload
    def register(self, job_type: JobType[P, R], fn: Callable[[P], R]) -> None: ...

    @overload
    def register(self, job_type: JobType[P, R], fn: Callable[[P, JobContext], R]) -> None: ...

    @overload
    def register(
        self, job_type: JobType[P, R], fn: Callable[[P], Coroutine[Any, Any, R]]
    ) -> None: ...

    @overload
    def register(
        self, job_type: JobType[P, R], fn: Callable[[P, JobContext], Coroutine[Any, Any, R]]
    ) -> None: ...

    def register(self, job_type: JobType[P, R], fn: Any) -> None:
        """Register ``fn`` (taking ``P``, and optionally a ``JobContext``, returning ``R``)
        as ``job_type``'s handler.

        Its jobs go to ``job_type.queue``.
        """
        rules = job_type.rules
        self.register_handler(
            job_type.name, TypedHandler(job_type, fn), queue=job_type.queue,
            retry=rules.retry_policy, on_failure=rules.on_failure,
        )

    def enqueue(
        self, job_type: JobType[P, R], payload: P, **options: Unpack[EnqueueOptions]
    ) -> JobRef[R]:
        """Submit a typed job: the payload is validated, dumped and versioned.

        Returns:
            A typed handle whose ``result()`` is an ``R``.

        Raises:
            PayloadValidationError: ``payload`` is not a valid ``P``.
            NoHandlerError, InvalidJobError: as ``submit``.
        """
        data = job_type.dump(payload)
        fields: dict[str, Any] = dict(options)
        metadata = fields.get("metadata")
        fields["metadata"] = {**metadata, VERSION_KEY: job_type.version} if metadata else {
            VERSION_KEY: job_type.version
        }
        fields.setdefault("queue", job_type.queue)
        fields.setdefault("priority", job_type.priority)
        fields.setdefault("max_retries", job_type.max_retries)
        if job_type.timeout_s is not None:
            fields.setdefault("timeout_seconds", job_type.timeout_s)
        if "unique_key" not in fields:
            key = job_type.unique_key(payload, data)
            if key is not None:
                fields["unique_key"] = key
                if job_type.unique_for is not None:
                    fields.setdefault("unique_for", job_type.unique_for)
                if job_type.unique_states is not None:
                    fields.setdefault("unique_states", job_type.unique_states)
        job_id = self.submit(job_type.name, data, **fields)
        return JobRef(self, job_type, job_id)

    def of(self, job_type: JobType[P, R]) -> BoundJobType[P, R]:
        """Bind ``job_type`` to this manager: ``manager.of(jt).enqueue(payload)``."""
        return BoundJobType(self, job_type)
