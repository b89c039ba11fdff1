"""typedq: a typed job-queue SDK.

The original specification's names, with their semantics: :class:`Job`,
:class:`JobStatus`, :class:`JobQueue`, :class:`Worker`, :class:`EventHandler`,
:class:`JobQueueManager`. Around them: the :class:`Queue` protocol every backend
implements, retry policies, leases, clocks and the error hierarchy.
"""

from __future__ import annotations

from typedq.backends import Claim, JobQueue, Queue, open_queue
from typedq.clock import Clock, FakeClock, SystemClock
from typedq.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigError,
    DependencyCycleError,
    DeserializationError,
    DuplicateJobError,
    InvalidJobError,
    JobNotFoundError,
    JobTimeoutError,
    NoHandlerError,
    PayloadTooLargeError,
    QueueNotFoundError,
    SerializationError,
    StaleLeaseError,
    TypedqError,
    UnknownDependencyError,
)
from typedq.events import EventHandler
from typedq.job import Job, JobStatus, Priority
from typedq.leases import LeaseKeeper, Reaper
from typedq.manager import JobQueueManager
from typedq.retry import RetryPolicy
from typedq.worker import Worker

__version__ = "0.1.0"

__all__ = [
    "BackendError",
    "BackendUnavailableError",
    "Claim",
    "Clock",
    "ConfigError",
    "DependencyCycleError",
    "DeserializationError",
    "DuplicateJobError",
    "EventHandler",
    "FakeClock",
    "InvalidJobError",
    "Job",
    "JobNotFoundError",
    "JobQueue",
    "JobQueueManager",
    "JobStatus",
    "JobTimeoutError",
    "LeaseKeeper",
    "NoHandlerError",
    "PayloadTooLargeError",
    "Priority",
    "Queue",
    "QueueNotFoundError",
    "Reaper",
    "RetryPolicy",
    "SerializationError",
    "StaleLeaseError",
    "SystemClock",
    "TypedqError",
    "UnknownDependencyError",
    "Worker",
    "__version__",
    "open_queue",
]
