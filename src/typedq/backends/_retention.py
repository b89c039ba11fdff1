"""Arguments of ``Queue.purge``, checked the same way by every backend."""

from __future__ import annotations

from collections.abc import Collection
from typing import Final

from typedq.errors import InvalidJobError, InvalidTransitionError
from typedq.job import TERMINAL_STATUSES, JobStatus

__all__ = ["check_purge"]

_ENDED: Final = "COMPLETED, FAILED, DEAD or CANCELLED (only jobs that ended are purged)"


def check_purge(statuses: Collection[JobStatus], limit: object) -> tuple[JobStatus, ...]:
    """The statuses to purge, each once, in the order given.

    Raises:
        InvalidTransitionError: a status is not one a job ends in (naming it).
        InvalidJobError: ``limit`` is not an int >= 0.
    """
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidJobError("limit", limit, "an int >= 0")
    wanted: list[JobStatus] = []
    for given in statuses:
        try:
            status = JobStatus(given)
        except ValueError:
            raise InvalidTransitionError("statuses", given, _ENDED) from None
        if status not in TERMINAL_STATUSES:
            raise InvalidTransitionError("statuses", status.value, _ENDED)
        if status not in wanted:
            wanted.append(status)
    return tuple(wanted)
