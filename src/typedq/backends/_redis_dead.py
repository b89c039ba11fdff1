"""What a ``RedisQueue`` knows of its dead-letter queue, and its purge, beside ``redis``.

A dead-letter queue a script can change together with the queue must be another queue of
the same server, database and key prefix: every queue of a prefix shares the hash tag
``{prefix}`` (see ``_redis_keys``), so one script may touch both, on a Cluster too. The
scripts themselves (``put_dead_letter``, ``restore``, ``take_back``) are in ``_redis_lua``.
The number of dead letters a dead-letter queue dropped is the field ``dropped`` of its
``meta`` hash. A purge is the ``purge`` script: the jobs that ended in a status are kept by
finish time in ``B:fin:<STATUS>``, so a purge reads only what it deletes.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING, Any

from typedq._validate import require_number
from typedq.backends import _redis_conn as conn
from typedq.backends._redis_keys import RedisSettings
from typedq.backends._retention import check_purge
from typedq.clock import Clock
from typedq.errors import ConfigError
from typedq.job import JobStatus

if TYPE_CHECKING:
    from typedq.backends.base import Queue

__all__ = ["RedisDeadLetters"]

logger = logging.getLogger("typedq.backends.redis")


def _store(settings: RedisSettings) -> tuple[str, int, int, str]:
    """What makes two queues' keys one store: the server, the database and the prefix
    (not the credentials nor the timeouts a URL gives)."""
    return (settings.host, settings.port, settings.db, settings.prefix)


class RedisDeadLetters:
    """Checks a dead-letter queue and reads its drop counter (a mixin of ``RedisQueue``)."""

    _settings: RedisSettings
    _base: str
    _name: str
    _clock: Clock

    @property
    def _r(self) -> Any:
        raise NotImplementedError  # ``RedisQueue._r``

    def _run(self, script: str, args: Sequence[Any], dlq: str | None = None) -> Any:
        raise NotImplementedError  # ``RedisQueue._run``

    def purge(self, *, statuses: Collection[JobStatus], older_than: float, limit: int = 1000) -> int:
        """Delete up to ``limit`` jobs that ended before ``older_than``, in one script (the
        finish-time indexes, oldest first); see :meth:`Queue.purge`."""
        wanted = [status.value for status in check_purge(statuses, limit)]
        if not wanted or limit == 0:
            return 0
        now, before = repr(float(self._clock.now())), repr(float(older_than))
        return int(self._run("purge", [now, before, limit, *wanted]))

    def _dead_letter_base(self, dead_letter: Queue | None, dlq_max: int | None = None) -> str | None:
        """The base key of a dead-letter queue of this prefix, or None when none is given.

        Raises:
            ConfigError: as :meth:`check_dead_letter`; ``dlq_max`` not None or an int >= 1.
        """
        require_number("dlq_max", dlq_max, minimum=1, integer=True, allow_none=True)
        if dead_letter is None:
            return None
        other = dead_letter if isinstance(dead_letter, RedisDeadLetters) else None
        if other is None or _store(other._settings) != _store(self._settings):
            mine = self._settings
            raise ConfigError(
                "dead_letter", repr(dead_letter),
                f"a RedisQueue of the same server, database and prefix as queue {self._name!r} "
                f"({mine.masked_url}, prefix {mine.prefix!r}): a dead job and its dead letter "
                "change in one script only within one prefix",
            )
        if other._base == self._base:
            raise ConfigError("dead_letter", repr(dead_letter), "another queue than the one the job is in")
        return other._base

    def _log_dropped(self, dead_letter: Queue | None, dlq_max: int | None, dropped: list[bytes]) -> None:
        if dropped and dead_letter is not None:
            logger.warning(
                "dead-letter queue %r holds dlq_max=%s dead letters: dropped the oldest %d (%s)",
                dead_letter.name, dlq_max, len(dropped), ", ".join(raw.decode() for raw in dropped[:10]),
            )

    def check_dead_letter(self, dead_letter: Queue) -> None:
        """Refuse a dead-letter queue of another server, database or prefix; see
        :meth:`Queue.check_dead_letter`."""
        self._dead_letter_base(dead_letter)

    def count_dropped(self) -> int:
        """Dead letters this queue dropped to stay within ``dlq_max`` (its ``meta`` hash);
        see :meth:`Queue.count_dropped`."""
        with conn.map_errors(self._settings):
            raw = self._r.hget(f"{self._base}:meta", "dropped")
        return 0 if raw is None else int(raw)
