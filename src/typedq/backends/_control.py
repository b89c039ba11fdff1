"""Job control shared by every backend: checks of ``reorder`` arguments, the new order
key a reorder gives a job, and the bounds of progress messages and job logs.

The claim order is (priority desc, ``scheduled_at`` with None first, ``created_at``,
arrival). A reorder never touches the priority: it gives the job a new
(``scheduled_at``, ``created_at``) inside its priority level, computed here from the
neighbours the backend read in the same transition.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, Final

from typedq.errors import InvalidJobError, InvalidTransitionError
from typedq.job import MAX_JOB_LOGS, MAX_LOG_LINE, UNSCHEDULED, Job, JobLogLine, JobProgress, JobStatus

__all__ = [
    "LOGS_KEY",
    "POSITIONS",
    "OrderKey",
    "check_reorder",
    "clip",
    "current_progress",
    "decode_logs",
    "decode_progress",
    "encode_logs",
    "encode_progress",
    "export_record",
    "logs_of_record",
    "new_order_key",
    "not_ready",
    "order_key",
    "other_level",
    "stamped",
    "trimmed_logs",
]

#: The key of a job's log lines in an ``export_jobs()`` record.
LOGS_KEY: Final = "logs"
#: The positions ``reorder`` takes.
POSITIONS: Final = ("front", "back")
#: A job's place inside its priority level: (``scheduled_at``, ``created_at``).
OrderKey = tuple[float | None, float]
#: How far before or after its neighbour a job moved to an end of its level is put, s.
_STEP_S: Final = 1.0


def check_reorder(job_id: str, before: str | None, position: str | None) -> None:
    """Refuse bad ``reorder`` arguments.

    Raises:
        InvalidJobError: not exactly one of ``before`` and ``position``, a position
            other than "front" and "back", or ``before`` naming the job itself.
    """
    if (before is None) == (position is None):
        raise InvalidJobError(
            "position", position, "exactly one of before=<job id> or position='front'|'back'"
        )
    if position is not None and position not in POSITIONS:
        raise InvalidJobError("position", position, "'front' or 'back'")
    if before is not None and before == job_id:
        raise InvalidJobError("before", before, "another job's id (a job cannot move before itself)")


def not_ready(job_id: str, status: JobStatus | str, field: str = "job_id") -> InvalidTransitionError:
    """The error for a reorder of a job that is not ready to run."""
    return InvalidTransitionError(
        field, job_id,
        "a ready PENDING job (due, its dependencies completed) to reorder; "
        f"this one is {JobStatus(status).value}" + (" but not ready" if status == JobStatus.PENDING else ""),
    )


def other_level(before: str, job: Job) -> InvalidJobError:
    """The error for ``before`` naming a job of another priority than ``job``'s."""
    return InvalidJobError(
        "before", before,
        f"a ready job of the same priority as {job.job_id} ({job.priority}): "
        "reorder moves a job inside its priority level",
    )


def order_key(key: OrderKey) -> tuple[float, float]:
    """The sortable form of an order key (None sorts before every time)."""
    sched, created = key
    return (UNSCHEDULED if sched is None else sched, created)


def new_order_key(
    job: Job,
    *,
    before: str | None,
    position: str | None,
    anchor: OrderKey | None,
    previous: OrderKey | None = None,
) -> OrderKey | None:
    """The order key that puts ``job`` where asked, or None when it is there already.

    Args:
        job: the job to move.
        before: the job to move it before (then ``anchor`` is that job's key and
            ``previous`` the key of the ready job just before it, the moved job left out).
        position: "front" (``anchor``: the first key of the level, the job left out) or
            "back" (``anchor``: the last one).
        anchor: see above; None when the level holds no other ready job.
        previous: see ``before``.
    """
    mine = order_key((job.scheduled_at, job.created_at))
    if anchor is None:
        return None
    sched, created = anchor
    if position == "front":
        if mine < order_key(anchor):
            return None
        return (None, created - _STEP_S) if sched is None else (None, job.created_at)
    if position == "back":
        if mine > order_key(anchor):
            return None
        return (sched, created + _STEP_S)
    if previous is None or previous[0] != sched:
        return (sched, created - _STEP_S)
    return (sched, (previous[1] + created) / 2)


def clip(text: str) -> str:
    """``text`` cut to :data:`MAX_LOG_LINE` characters."""
    return text if len(text) <= MAX_LOG_LINE else text[: MAX_LOG_LINE - 1] + "…"


def encode_progress(progress: JobProgress) -> str:
    """The stored form of a progress (JSON text)."""
    return json.dumps(progress.to_dict(), separators=(",", ":"))


def decode_progress(raw: str | bytes | None) -> JobProgress | None:
    """Read a stored progress; None for none (or one that cannot be read)."""
    if not raw:
        return None
    try:
        return JobProgress.from_dict(json.loads(raw))
    except (ValueError, TypeError):
        return None


def encode_logs(lines: Sequence[JobLogLine]) -> str:
    """The stored form of a job's log (a JSON list)."""
    return json.dumps([line.to_dict() for line in lines], separators=(",", ":"))


def decode_logs(raw: str | bytes | None) -> list[JobLogLine]:
    """Read a stored log; an empty list for none."""
    if not raw:
        return []
    try:
        data = json.loads(raw)
    except ValueError:
        return []
    return [JobLogLine.from_dict(item) for item in data] if isinstance(data, list) else []


def trimmed_logs(old: Sequence[JobLogLine], new: Sequence[JobLogLine]) -> list[JobLogLine]:
    """``old`` then ``new`` (each line clipped), the newest :data:`MAX_JOB_LOGS` kept."""
    lines = [*old, *(JobLogLine(line.at, line.attempt, clip(line.message)) for line in new)]
    return lines[-MAX_JOB_LOGS:]


def current_progress(progress: JobProgress | None, attempt: int) -> JobProgress | None:
    """``progress`` when the job's current attempt reported it, else None.

    A new attempt starts with no progress: what an earlier (failed, lost or
    interrupted) attempt reported is not shown as the new one's. Job logs, by contrast,
    are kept across attempts, each line marked with its attempt.
    """
    return progress if progress is not None and progress.attempt == attempt else None


def stamped(progress: JobProgress, token: int) -> JobProgress:
    """``progress`` as the report of attempt ``token`` (what ``set_progress`` stores)."""
    return progress if progress.attempt == token else replace(progress, attempt=token)


def export_record(job: Job, logs: Sequence[JobLogLine]) -> dict[str, Any]:
    """One job of ``export_jobs()``: ``Job.to_dict()`` data plus its ``logs``."""
    data = job.to_dict()
    data[LOGS_KEY] = [line.to_dict() for line in logs]
    return data


def logs_of_record(data: dict[str, Any], index: int) -> list[JobLogLine]:
    """Take the ``logs`` of an ``export_jobs()`` record out of it (missing: none),
    clipped and bounded like logged lines.

    Raises:
        InvalidJobError: ``logs`` is not a list of dicts; the field is named
            ``jobs_data[i].logs``.
    """
    raw = data.pop(LOGS_KEY, None)
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(item, dict) for item in raw):
        raise InvalidJobError(
            f"jobs_data[{index}].{LOGS_KEY}", raw,
            "a list of {at, attempt, message} dicts (JobLogLine.to_dict())",
        )
    return trimmed_logs((), [JobLogLine.from_dict(item) for item in raw])
