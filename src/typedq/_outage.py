"""How the runtime (workers, the lease keeper, the reaper) lives through a storage outage.

* :class:`Outage` logs an outage once: one WARNING when the first call fails, one INFO
  saying how long it lasted when a call succeeds again; the failures in between are only
  counted. A Redis server that is down for a minute must not turn every heartbeat of
  every job into a traceback.
* :class:`Backoff` spaces the attempts of one caller: the bound doubles after each failure
  from ``min_s`` up to ``max_s``, and each wait is drawn at random between ``low`` × the
  bound and the bound, so the workers of many processes and hosts that lost the server at
  the same moment do not come back to it in lockstep.
"""

from __future__ import annotations

import logging
import random
import time

from typedq.errors import BackendDataError, BackendError

__all__ = ["Backoff", "Outage", "is_outage"]


def is_outage(exc: BaseException) -> bool:
    """Whether ``exc`` is the storage failing (unreachable, busy, refusing writes).

    Not a :class:`~typedq.errors.BackendDataError` (data typedq did not write): that one
    does not pass, and is logged in full each time.
    """
    return isinstance(exc, BackendError) and not isinstance(exc, BackendDataError)


class Outage:
    """The outage state of one caller, logged once per outage.

    Args:
        logger: where to log.
        what: who is calling, for the messages ("worker w-1", "the reaper").
    """

    def __init__(self, logger: logging.Logger, what: str) -> None:
        self._logger = logger
        self._what = what
        self.since: float | None = None
        self.failures = 0
        self.outages = 0
        #: ``time.monotonic()`` when the last outage ended (a call succeeded again).
        self.ended_at: float | None = None

    @property
    def active(self) -> bool:
        """Whether the last call failed."""
        return self.since is not None

    def failed(self, exc: BaseException, doing: str) -> None:
        """A call failed: log it when it is the first of an outage, else count it."""
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.outages += 1
            self._logger.warning(
                "%s could not %s; retrying until the storage answers "
                "(logged once until then): %s",
                self._what, doing, exc,
            )

    def ok(self) -> None:
        """A call succeeded: log the end of the outage, if there was one."""
        since = self.since
        if since is not None:
            self.since = None
            self.ended_at = time.monotonic()
            self._logger.info(
                "%s: the storage answers again after %.1f s", self._what, time.monotonic() - since
            )


class Backoff:
    """Jittered exponential waits between attempts after failures.

    Args:
        min_s: the bound of the first wait.
        max_s: the largest bound.
        low: the shortest wait, as a share of the bound.
    """

    def __init__(self, min_s: float, max_s: float, *, low: float = 0.5) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self.low = low
        self._bound = 0.0

    @property
    def bound(self) -> float:
        """The bound of the last wait (0 before the first failure)."""
        return self._bound

    def next(self) -> float:
        """The wait before the next attempt (a failure just happened)."""
        self._bound = min(self.max_s, max(self.min_s, self._bound * 2))
        return self._bound * random.uniform(self.low, 1.0)

    def reset(self) -> None:
        """An attempt succeeded: the next failure waits ``min_s`` again."""
        self._bound = 0.0
