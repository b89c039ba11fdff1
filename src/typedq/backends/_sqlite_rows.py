"""Rows of the SQLite backend's ``jobs`` table, to and from :class:`~typedq.job.Job`.

Payloads, metadata and results are stored as codec frames (the job id is the frame
context). Reading never fails on bad stored bytes: :meth:`RowCodec.job` returns the job
with the undecodable field at its default (``payload={}``, ``metadata={}``,
``result=None``) and describes each problem under ``metadata["typedq.undecodable"]``::

    {"payload": {"error": "UnknownCodecError: unknown serializer tag 9 ...",
                 "raw_base64": "wQEJAAB7fQ=="}}

so ``get_job``, ``list_jobs`` and ``export_jobs`` still show such a job, raw bytes
included. ``RowCodec.job(row, strict=True)`` raises instead: the claim path uses it and
moves a job whose payload or metadata cannot be decoded to DEAD.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from operator import attrgetter
from typing import Any, Final

from typedq.backends._frames import UNDECODABLE_KEY, Blobs, FrameFields
from typedq.job import TRACEBACK_KEY, UNSCHEDULED, Job, JobStatus, take_legacy_traceback

__all__ = [
    "CLAIM_COLUMNS",
    "FRESH_COLUMNS",
    "INSERT_COLUMNS",
    "SELECT_COLUMNS",
    "UNDECODABLE_KEY",
    "Blobs",
    "RowCodec",
    "bindable",
    "ready_at_insert",
    "revalidate",
    "sort_key",
]

# Columns every read selects, in this order. The five a claim sets itself come last: a
# claim returns only the others (CLAIM_COLUMNS), since sqlite3 fetches each column of a
# row with several library calls.
_SELECTED: Final = (
    "job_id", "job_type", "priority", "scheduled_at", "created_at", "max_retries", "retry_count",
    "timeout_seconds", "error", "origin", "attempt", "finished_at", "lost_count",
    "cancel_requested", "depends_on", "payload", "metadata", "result", "traceback", "seq",
    "has_waiters", "run_alone", "status", "worker_id", "lease_until", "started_at",
)
#: Columns every read selects, in this order (see the index constants below).
SELECT_COLUMNS: Final = ", ".join(_SELECTED)
#: Columns a claim returns: :data:`SELECT_COLUMNS` but the five the claim sets
#: (run_alone, status, worker_id, lease_until, started_at), which the caller knows.
CLAIM_COLUMNS: Final = ", ".join(_SELECTED[:-5])
(
    ID, JOB_TYPE, PRIORITY, SCHEDULED, CREATED, MAX_RETRIES, RETRY_COUNT, TIMEOUT, ERROR, ORIGIN,
    ATTEMPT, FINISHED, LOST, CANCEL, DEPENDS, PAYLOAD, METADATA, RESULT, TRACEBACK, SEQ,
    HAS_WAITERS, ALONE, STATUS, WORKER, LEASE, STARTED,
) = range(len(_SELECTED))

#: Job attributes stored as they are, in INSERT order (``queue`` is stored as ``origin``).
_JOB_COLUMNS: Final = (
    "job_id",
    "job_type",
    "status",
    "priority",
    "scheduled_at",
    "created_at",
    "attempt",
    "worker_id",
    "lease_until",
    "started_at",
    "finished_at",
    "retry_count",
    "max_retries",
    "lost_count",
    "cancel_requested",
    "timeout_seconds",
    "queue",
    "error",
    "run_alone",
    "traceback",
)
# One C call reads every attribute (the enqueue hot path).
_fields: Final = attrgetter(*_JOB_COLUMNS)
# Positions in an INSERT row (the queue comes first, then _JOB_COLUMNS).
_STATUS_AT, _FINISHED_AT, _ERROR = (1 + _JOB_COLUMNS.index(c) for c in ("status", "finished_at", "error"))

#: Columns of an INSERT, in the order of :meth:`RowCodec.row`.
INSERT_COLUMNS: Final = ", ".join(
    (
        "queue",
        *(("origin" if c == "queue" else c) for c in _JOB_COLUMNS),
        "blocked_by",
        "delayed",
        "has_waiters",
        "payload",
        "metadata",
        "result",
        "depends_on",
    )
)

#: Columns every INSERT of a *fresh* job binds (:meth:`RowCodec.fresh_row`): the
#: columns left out hold their defaults (0 or NULL), so they are not bound at all.
FRESH_COLUMNS: Final = "queue, job_id, job_type, status, priority, created_at, max_retries, origin, payload"
#: Added to :data:`FRESH_COLUMNS` only when the job has a value for them: sqlite3 binds
#: None through its adapter lookup (about 1 us a value, see :func:`bindable`).
_SCHEDULED_COLUMNS: Final = ", scheduled_at, delayed"
_TIMEOUT_COLUMN: Final = ", timeout_seconds"
_METADATA_COLUMN: Final = ", metadata"
#: Frames up to this size are bound as a bytearray (see :func:`bindable`).
_COPY_UP_TO: Final = 4096
#: The run-time fields of a job that never ran, in the order of ``_run_state``.
_run_state: Final = attrgetter(
    "attempt", "worker_id", "lease_until", "started_at", "finished_at", "retry_count",
    "lost_count", "cancel_requested", "error", "result", "depends_on", "run_alone", "traceback",
)
_NEVER_RAN: Final[tuple[Any, ...]] = (0, None, None, None, None, 0, 0, False, None, None, [], False, None)

_STATUS: Final = {s.value: s for s in JobStatus}
_PENDING: Final = JobStatus.PENDING
_RUNNING: Final = JobStatus.RUNNING
# Statuses and flags are bound as exact str and int: sqlite3 looks a subclass (a
# StrEnum member, a bool) up in its adapter registry first (see bindable).
_STATUS_TEXT: Final = {s: s.value for s in JobStatus}
_STATUS_AT_FIELD: Final = _JOB_COLUMNS.index("status")
_CANCEL_AT_FIELD: Final = _JOB_COLUMNS.index("cancel_requested")
_ALONE_AT_FIELD: Final = _JOB_COLUMNS.index("run_alone")


def bindable(frame: bytes) -> bytes | bytearray:
    """``frame`` as sqlite3 binds it fastest.

    sqlite3 binds exact str, int, float and bytearray values directly but looks every
    other value, bytes and None included, up in its adapter registry first; on CPython
    3.11 that lookup raises and discards an AttributeError, about 1 us a value. Copying
    a frame of a few kB into a bytearray costs less than that; a larger one is bound as
    it is.
    """
    return bytearray(frame) if len(frame) <= _COPY_UP_TO else frame


def _delayed(job: Job, now: float) -> int:
    """1 when a PENDING job is due only later (it goes to the delayed index), else 0."""
    sched = job.scheduled_at
    return 1 if sched is not None and sched > now and job.status is _PENDING else 0


def ready_at_insert(job: Job, now: float) -> bool:
    """Whether ``job``, stored at ``now`` unblocked, enters the ready index (PENDING and
    not delayed)."""
    return job.status is _PENDING and not _delayed(job, now)


def _field_values(job: Job) -> list[Any]:
    """The values of :data:`_JOB_COLUMNS`, each of a type sqlite3 binds directly."""
    values = list(_fields(job))
    values[_STATUS_AT_FIELD] = _STATUS_TEXT[job.status]
    values[_CANCEL_AT_FIELD] = int(job.cancel_requested)
    values[_ALONE_AT_FIELD] = int(job.run_alone)
    return values


def sort_key(row: Sequence[Any]) -> tuple[int, float, float, int]:
    """Claim order of a selected row: priority desc, scheduled_at (None first), created_at, seq."""
    sched = row[SCHEDULED]
    return (-row[PRIORITY], UNSCHEDULED if sched is None else sched, row[CREATED], row[SEQ])


class RowCodec(FrameFields):
    """Encodes jobs into rows and decodes rows into jobs with one ``FrameCodec``
    (the frames themselves: :class:`~typedq.backends._frames.FrameFields`)."""

    # -- writing ------------------------------------------------------------------------

    @staticmethod
    def row(
        job: Job,
        queue: str,
        blobs: Blobs,
        now: float,
        *,
        blocked_by: int = 0,
        has_waiters: bool = False,
    ) -> tuple[Any, ...]:
        """The INSERT parameters for ``job`` as it is (see :data:`INSERT_COLUMNS`)."""
        return (queue, *_field_values(job), blocked_by, _delayed(job, now), int(has_waiters), *blobs)

    @staticmethod
    def fresh_row(job: Job, queue: str, blobs: Blobs, now: float) -> tuple[str, tuple[Any, ...]] | None:
        """The columns and INSERT parameters of a job that never ran and depends on
        nothing: :data:`FRESH_COLUMNS` and those of the optional ones that are not NULL.
        None for any other job (it needs :meth:`row`)."""
        if _run_state(job) != _NEVER_RAN:
            return None
        payload, metadata = blobs[0], blobs[1]
        values: tuple[Any, ...] = (
            queue, job.job_id, job.job_type, _STATUS_TEXT[job.status], job.priority,
            job.created_at, job.max_retries, job.queue, bindable(payload),
        )
        sched, timeout = job.scheduled_at, job.timeout_seconds
        if sched is None and timeout is None and metadata is None:
            return FRESH_COLUMNS, values
        columns = FRESH_COLUMNS
        if sched is not None:
            columns += _SCHEDULED_COLUMNS
            values += (sched, _delayed(job, now))
        if timeout is not None:
            columns += _TIMEOUT_COLUMN
            values += (timeout,)
        if metadata is not None:
            columns += _METADATA_COLUMN
            values += (bindable(metadata),)
        return columns, values

    @staticmethod
    def failed_row(job: Job, queue: str, blobs: Blobs, error: str, now: float) -> tuple[Any, ...]:
        """The INSERT parameters for ``job`` stored FAILED at ``now`` with ``error``
        (a dependency of it had already failed)."""
        row = [queue, *_field_values(job), 0, 0, 0, *blobs]
        row[_FINISHED_AT] = now
        row[_ERROR] = error
        row[_STATUS_AT] = "FAILED"
        return tuple(row)

    # -- reading ------------------------------------------------------------------------

    def job(
        self,
        row: Sequence[Any],
        *,
        result: Any = ...,
        strict: bool = False,
        claimed: tuple[str, float, float] | None = None,
    ) -> Job:
        """Build the job of a selected row (see :data:`SELECT_COLUMNS`).

        Args:
            row: the row.
            result: the result to use instead of decoding the stored one.
            strict: raise on an undecodable payload or metadata instead of describing it.
            claimed: for a row a claim returned (:data:`CLAIM_COLUMNS`), the
                ``(worker_id, started_at, lease_until)`` the claim set; the job is RUNNING.

        Raises:
            DeserializationError: with ``strict``, the payload or metadata cannot be
                decoded (or is not a dict); the message names the field and the job.
        """
        job_id = row[ID]
        context = job_id.encode()
        problems: dict[str, Any] = {}
        payload = self._field(row[PAYLOAD], context, "payload", problems, strict=strict, job_id=job_id)
        raw_meta = row[METADATA]
        metadata = (
            {}
            if raw_meta is None
            else self._field(raw_meta, context, "metadata", problems, strict=strict, job_id=job_id)
        )
        if result is ...:
            result = self.decode_result(row[RESULT], context, problems)
        depends_on = self.decode_depends(row[DEPENDS], problems)
        # NULL: not written since schema 7 (a row of schema 6 or older kept it in its metadata);
        # '': cleared (no traceback).
        traceback = row[TRACEBACK]
        if TRACEBACK_KEY in metadata:
            legacy = take_legacy_traceback(metadata, None)
            if traceback is None:
                traceback = legacy
        if not traceback:
            traceback = None
        if problems:
            metadata = {**metadata, UNDECODABLE_KEY: problems}
        if claimed is None:
            status, worker_id, lease_until, started_at, run_alone = (
                _STATUS[row[STATUS]], row[WORKER], row[LEASE], row[STARTED], bool(row[ALONE])
            )
        else:
            status, (worker_id, started_at, lease_until), run_alone = _RUNNING, claimed, False
        # Rows were validated when they were enqueued: skip Job.validate on this hot path.
        return Job.unchecked(
            job_id=job_id,
            job_type=row[JOB_TYPE],
            payload=payload,
            priority=row[PRIORITY],
            scheduled_at=row[SCHEDULED],
            created_at=row[CREATED],
            max_retries=row[MAX_RETRIES],
            retry_count=row[RETRY_COUNT],
            timeout_seconds=row[TIMEOUT],
            status=status,
            result=result,
            error=row[ERROR],
            metadata=metadata,
            depends_on=depends_on,
            queue=row[ORIGIN],
            attempt=row[ATTEMPT],
            worker_id=worker_id,
            lease_until=lease_until,
            started_at=started_at,
            finished_at=row[FINISHED],
            lost_count=row[LOST],
            cancel_requested=bool(row[CANCEL]),
            run_alone=run_alone,
            traceback=traceback,
        )


def revalidate(jobs: Iterable[Job]) -> None:
    """After SQLite refused an int beyond 64 bits (an ``OverflowError``, nothing written):
    raise the typed error naming the field.

    Jobs are validated when built; one changed by hand afterwards reaches SQLite as it
    is, and validating it again raises the ``InvalidJobError`` that names the field.
    """
    for job in jobs:
        job.validate(check_id=False)
