"""Lifecycle callbacks: the specification's ``EventHandler``.

A worker calls these as jobs move through their states. The default implementation does
nothing; subclass it and override what you need. Callbacks run in the worker's thread,
after the state change is stored, and must be quick. An exception raised by a callback is
logged and swallowed: monitoring never fails a job or stops a worker.
"""

from __future__ import annotations

import logging
from typing import Any

from typedq.job import Job, JobProgress

__all__ = ["EventHandler", "safe_call"]

logger = logging.getLogger("typedq.events")


class EventHandler:
    """No-op callbacks for every job transition; override the ones you need."""

    def on_job_submitted(self, job: Job) -> None:
        """A job was submitted (stored and waiting to run)."""

    def on_job_started(self, job: Job, worker_id: str) -> None:
        """Worker ``worker_id`` took the job and is about to run its handler."""

    def on_job_completed(self, job: Job, result: Any) -> None:
        """The handler returned ``result`` and the job is COMPLETED."""

    def on_job_failed(self, job: Job, error: BaseException | str) -> None:
        """An attempt failed: ``error`` is what the handler raised (or a description)."""

    def on_job_retried(self, job: Job, next_scheduled_at: float) -> None:
        """The failed job is PENDING again and runs no earlier than ``next_scheduled_at``."""

    def on_job_dead(self, job: Job) -> None:
        """The job used up its retries (or its worker was lost) and is DEAD."""

    def on_job_progress(self, job: Job, progress: JobProgress) -> None:
        """A running job's handler reported progress (``JobContext.progress``), and it
        was stored; called at most at the rate progress is stored."""

    def on_job_cancelled(self, job: Job) -> None:
        """The job was cancelled."""


def safe_call(method: Any, *args: Any) -> None:
    """Call an event callback; log and swallow anything it raises."""
    try:
        method(*args)
    except Exception:
        logger.exception("event callback %s raised; ignored", getattr(method, "__qualname__", method))
