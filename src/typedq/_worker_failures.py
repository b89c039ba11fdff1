"""Private: the worker's failure rules: which retry policy a job gets, and the isolated
calls of the failure callbacks (``on_failure`` of the job's type, ``on_dead``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

from typedq.job import Job
from typedq.retry import RETRY_META, FailureCallback, FailureRules, RetryPolicy

__all__ = ["call_failure_callbacks", "policy_of"]

logger = logging.getLogger("typedq.worker")


def policy_of(job: Job, rules: Mapping[str, FailureRules], default: RetryPolicy) -> RetryPolicy:
    """The retry policy of ``job``: its own (stored in its metadata), else its type's,
    else ``default``. A stored policy that cannot be read is logged and skipped."""
    data = job.metadata.get(RETRY_META) if job.metadata else None
    if data is not None:
        try:
            return RetryPolicy.from_data(data)
        except (TypeError, ValueError) as exc:
            logger.warning("job %s has an unreadable retry policy, ignored: %s", job.job_id, exc)
    typed = rules.get(job.job_type)
    if typed is not None and typed.retry_policy is not None:
        return typed.retry_policy
    return default


def call_failure_callbacks(
    dead: Job, exc: BaseException, rules: Mapping[str, FailureRules], on_dead: FailureCallback | None
) -> None:
    """Call the job type's ``on_failure``, then ``on_dead``, each isolated: one that raises
    (anything: a callback must never end the worker thread) is logged, and the job stays
    DEAD with its dead letter."""
    typed = rules.get(dead.job_type)
    for name, callback in (("on_failure", None if typed is None else typed.on_failure), ("on_dead", on_dead)):
        if callback is None:
            continue
        try:
            callback(dead, exc)
        except BaseException:
            logger.exception(
                "%s callback %s raised for job %s (%s); ignored",
                name, getattr(callback, "__qualname__", callback), dead.job_id, dead.job_type,
            )
