"""The in-memory backend's unique keys: one entry per key, judged under the queue's lock.

See ``_unique`` for when a key is held. The entries are a dict in the order keys were
first taken (a key taken again keeps its place), so a sweep's cursor is a position in it.
"""

from __future__ import annotations

from itertools import islice

from typedq.backends._memory_state import MemoryState
from typedq.backends._unique import UniqueSpec, UniqueSweep, bad_cursor, check_sweep, held
from typedq.errors import DuplicateJobError

__all__ = ["MemoryUniqueKeys"]

#: An entry: the holder's id, when the hold ends by time (None: never), its states.
_Entry = tuple[str, float | None, tuple[str, ...]]


class MemoryUniqueKeys(MemoryState):
    """Checks, takes and sweeps unique keys; enqueues hold the lock when they call in."""

    def _init_unique(self) -> None:
        self._unique: dict[str, _Entry] = {}

    def _holds(self, entry: _Entry, now: float) -> bool:
        holder_id, until, states = entry
        found = self._jobs.get(holder_id)
        return held(None if found is None else found.status.value, until, states, now)

    def _check_unique(self, job_id: str, spec: UniqueSpec, now: float, taken: dict[str, str]) -> None:
        """Refuse ``job_id`` when its key is held (by a job of the queue, or by one earlier in
        its batch: ``taken``); the caller holds the lock."""
        holder = taken.get(spec.key)
        if holder is None:
            entry = self._unique.get(spec.key)
            if entry is not None and self._holds(entry, now):
                holder = entry[0]
        if holder is not None:
            raise DuplicateJobError(job_id, queue=self._name, unique_key=spec.key, existing_id=holder)

    def _take_unique(self, job_id: str, spec: UniqueSpec, now: float) -> None:
        self._unique[spec.key] = (job_id, spec.until(now), spec.states)

    def sweep_unique_keys(self, *, cursor: str = "", limit: int = 1000) -> UniqueSweep:
        """Remove the entries not held among the ``limit`` from position ``cursor`` on,
        under the lock; see :meth:`Queue.sweep_unique_keys`."""
        check_sweep(cursor, limit)
        if cursor and not cursor.isdigit():
            raise bad_cursor(cursor)
        start = int(cursor or 0)
        with self._lock:
            now = self._clock.now()
            window = list(islice(self._unique.items(), start, start + limit))
            stale = [key for key, entry in window if not self._holds(entry, now)]
            for key in stale:
                del self._unique[key]
        # The removed entries were before the next position: it moves back by as many.
        done = len(window) < limit
        return UniqueSweep(len(stale), "" if done else str(start + len(window) - len(stale)))
