"""Dead letters of the in-memory backend: moves that change two ``JobQueue`` objects at once.

A bury with a dead-letter queue, a reclaim that kills a job, and a retry from the
dead-letter queue each change the source queue and the dead-letter queue in one step: both
queues' locks are held, taken in a fixed order (each queue's creation rank, lowest
first), so two such steps in opposite directions can never deadlock.

When the dead-letter queue drops its oldest dead letters to stay within ``dlq_max``, the
dead job's own row goes too when it is still DEAD: at once when that row is in the queue
holding the other lock, otherwise just after the locks are released (by then the row is
deleted only if it is still DEAD). A memory queue dies with its process, so no crash can
come between the two.
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Final

from typedq._validate import require_number
from typedq.backends._memory_state import MemoryState
from typedq.errors import ConfigError, InvalidTransitionError, JobNotFoundError
from typedq.job import Job, JobStatus

if TYPE_CHECKING:
    from typedq.backends.base import Queue

__all__ = [
    "Dropped",
    "both_locked",
    "check_pair",
    "dead_copy",
    "drop_rows",
    "put_dead_letter",
    "restore",
    "take_back",
]

logger = logging.getLogger("typedq.backends.memory")

_DEAD: Final = JobStatus.DEAD

#: A dead letter dropped by the cap whose row is in another queue: (that queue, job id).
Dropped = tuple["weakref.ReferenceType[MemoryState] | None", str]


def check_pair(
    source: MemoryState, dead_letter: Queue | None, dlq_max: int | None = None
) -> MemoryState | None:
    """The dead-letter queue as a memory queue, or None when none is given.

    Raises:
        ConfigError: ``dead_letter`` is not an in-memory queue, or is ``source`` itself;
            ``dlq_max`` is not None or an int >= 1.
    """
    require_number("dlq_max", dlq_max, minimum=1, integer=True, allow_none=True)
    if dead_letter is None:
        return None
    if not isinstance(dead_letter, MemoryState):
        raise ConfigError(
            "dead_letter", repr(dead_letter),
            f"an in-memory queue (JobQueue) like queue {source._name!r}: a dead job and its "
            "dead letter change in one step only within one store",
        )
    if dead_letter is source:
        raise ConfigError("dead_letter", repr(dead_letter), "another queue than the one the job is in")
    return dead_letter


@contextlib.contextmanager
def both_locked(first: MemoryState, second: MemoryState) -> Iterator[None]:
    """Hold both queues' locks, taken lowest rank first."""
    low, high = (first, second) if first._rank < second._rank else (second, first)
    with low._cond, high._cond:
        yield


def dead_copy(source: MemoryState, job: Job, **dead: object) -> Job:
    """The dead letter of ``job``, a RUNNING job of ``source`` about to go DEAD with the
    fields ``dead`` (error, traceback, finished_at): built *before* the job changes, so
    nothing is half-done should the job not copy. Lock held."""
    data = job.to_dict()
    data.update(dead, status=_DEAD.value, lease_until=None, queue=source._name)
    return Job.from_dict(data)


def put_dead_letter(source: MemoryState, dlq: MemoryState, copy: Job, dlq_max: int | None) -> list[Dropped]:
    """Put the dead letter ``copy`` (see :func:`dead_copy`) of a job of ``source`` into
    ``dlq`` and apply the cap. Both locks held.

    Returns the dropped dead letters whose rows are in other queues, for
    :func:`drop_rows` once the locks are released.
    """
    dlq._senders[source._name] = source
    old = dlq._jobs.get(copy.job_id)
    if old is not None:
        dlq._remove(old)
    dlq._insert(copy)
    if dlq_max is None or dlq._counts[_DEAD] <= dlq_max:
        return []
    later: list[Dropped] = []
    dropped: list[str] = []
    status = dlq._status
    for letter in list(dlq._jobs.values()):
        if dlq._counts[_DEAD] <= dlq_max:
            break
        if status[letter.job_id] is not _DEAD:
            continue
        dlq._remove(letter)
        dropped.append(letter.job_id)
        if letter.queue == source._name:
            row = source._jobs.get(letter.job_id)
            if row is not None and source._status[letter.job_id] is _DEAD:
                source._remove(row)
        else:
            sender = dlq._senders.get(letter.queue)
            later.append((None if sender is None else weakref.ref(sender), letter.job_id))
    dlq._dropped += len(dropped)
    logger.warning(
        "dead-letter queue %r holds dlq_max=%d dead letters: dropped the oldest %d (%s)",
        dlq._name, dlq_max, len(dropped), ", ".join(dropped[:10]),
    )
    return later


def drop_rows(later: list[Dropped]) -> None:
    """Delete the rows of dropped dead letters that are still DEAD (no lock held)."""
    for ref, job_id in later:
        queue = None if ref is None else ref()
        if queue is None:
            continue
        with queue._cond:
            row = queue._jobs.get(job_id)
            if row is not None and queue._status[job_id] is _DEAD:
                queue._remove(row)


def restore(source: MemoryState, dlq: MemoryState, job_id: str) -> None:
    """Before a retry from the dead-letter queue: when ``source`` no longer holds the
    job, put its dead letter back as a DEAD row. Both locks held.

    Raises:
        JobNotFoundError: neither queue holds the job.
    """
    if job_id in source._jobs:
        return
    letter = dlq._jobs.get(job_id)
    if letter is None:
        raise JobNotFoundError(job_id, queue=source._name)
    if dlq._status[job_id] is not _DEAD:
        raise InvalidTransitionError("status", dlq._status[job_id].value, "DEAD (a dead letter)")
    source._insert(Job.from_dict(letter.to_dict()))


def take_back(dlq: MemoryState, job_id: str) -> None:
    """A retried job's dead letter leaves the dead-letter queue. Its lock held."""
    letter = dlq._jobs.get(job_id)
    if letter is not None:
        dlq._remove(letter)
