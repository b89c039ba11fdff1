"""typedq: a typed job-queue SDK.

The original specification's names, with their semantics: :class:`Job`,
:class:`JobStatus`, :class:`JobQueue`, :class:`Worker`, :class:`EventHandler`,
:class:`JobQueueManager`. Around them: the :class:`Queue` protocol every backend
implements, typed jobs (:class:`JobType`, :class:`TypedJob`, :class:`JobRef`),
serializers by name (:func:`get_serializer`), retry policies, leases, clocks and every
error of :mod:`typedq.errors`.
"""

from __future__ import annotations

from typedq._typed_api import JobRef
from typedq.aio import AsyncJobQueueManager, AsyncJobRef
from typedq.aworker import AsyncWorker
from typedq.backends import Claim, JobQueue, Queue, open_queue
from typedq.clock import Clock, FakeClock, SystemClock
from typedq.context import JobContext
from typedq.errors import (
    BackendConfigError,
    BackendDataError,
    BackendError,
    BackendUnavailableError,
    BackendWriteError,
    BackendWritesRefusedError,
    ConfigError,
    DependencyCycleError,
    DeserializationError,
    DuplicateJobError,
    FieldProblem,
    InvalidJobError,
    InvalidTransitionError,
    JobCancelledError,
    JobFailedError,
    JobNotFoundError,
    JobTimeoutError,
    NoHandlerError,
    PayloadTooLargeError,
    PayloadValidationError,
    PayloadVersionError,
    PermanentError,
    QueueClosedError,
    QueueNotFoundError,
    ResultSerializationError,
    ScheduleNotFoundError,
    SerializationError,
    SignatureError,
    StaleLeaseError,
    TypedqError,
    UnknownCodecError,
    UnknownDependencyError,
    UnsafeSerializerError,
    WaitTimeoutError,
)
from typedq.events import EventHandler
from typedq.job import Job, JobLogLine, JobProgress, JobStatus, Priority
from typedq.leases import LeaseKeeper, Reaper
from typedq.manager import JobQueueManager
from typedq.policy import ClaimPolicy, Limit, Rate
from typedq.retry import Retry, RetryPolicy
from typedq.serializers import get_serializer
from typedq.typed import JobType, TypedJob
from typedq.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "AsyncJobQueueManager",
    "AsyncJobRef",
    "AsyncWorker",
    "BackendConfigError",
    "BackendDataError",
    "BackendError",
    "BackendUnavailableError",
    "BackendWriteError",
    "BackendWritesRefusedError",
    "Claim",
    "ClaimPolicy",
    "Clock",
    "ConfigError",
    "DependencyCycleError",
    "DeserializationError",
    "DuplicateJobError",
    "EventHandler",
    "FakeClock",
    "FieldProblem",
    "InvalidJobError",
    "InvalidTransitionError",
    "Job",
    "JobCancelledError",
    "JobContext",
    "JobFailedError",
    "JobLogLine",
    "JobNotFoundError",
    "JobProgress",
    "JobQueue",
    "JobQueueManager",
    "JobRef",
    "JobStatus",
    "JobTimeoutError",
    "JobType",
    "LeaseKeeper",
    "Limit",
    "NoHandlerError",
    "PayloadTooLargeError",
    "PayloadValidationError",
    "PayloadVersionError",
    "PermanentError",
    "Priority",
    "Queue",
    "QueueClosedError",
    "QueueNotFoundError",
    "Rate",
    "Reaper",
    "ResultSerializationError",
    "Retry",
    "RetryPolicy",
    "ScheduleNotFoundError",
    "SerializationError",
    "SignatureError",
    "StaleLeaseError",
    "SystemClock",
    "TypedJob",
    "TypedqError",
    "UnknownCodecError",
    "UnknownDependencyError",
    "UnsafeSerializerError",
    "WaitTimeoutError",
    "Worker",
    "__version__",
    "get_serializer",
    "open_queue",
]
