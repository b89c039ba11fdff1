"""Coordination state of the SQLite backend: named locks (table ``locks``) and schedules
(table ``schedules``).

``SQLiteCoordination`` is mixed into ``SQLiteQueue``. Each transition is one
``BEGIN IMMEDIATE`` transaction (``Connections.write``) that reads the queue's clock
*inside* the transaction, once it holds the write lock: a wait for the lock never
shortens a deadline it sets, nor makes an expired lock look alive.

A lock's row stays once made: ``token`` is its fence counter, and a release or an
expiry only clears ``owner`` and ``expires_at``, so the next acquisition's token is
greater than every earlier one, whatever process (or restart) took it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from typedq.backends._locks import Lock, LockState, check_lock_args, check_owner
from typedq.backends._schedules import ScheduleEntry, stored_definition
from typedq.backends._sqlite_db import Connections
from typedq.backends._sqlite_driver import sqlite3
from typedq.clock import Clock
from typedq.errors import ScheduleNotFoundError

__all__ = ["SCHEDULE_QUEUES", "SQLiteCoordination"]

_Conn = sqlite3.Connection

_TAKE: Final = """UPDATE locks SET owner = ?, token = token + 1, expires_at = ?
    WHERE queue = ? AND name = ? AND (expires_at IS NULL OR expires_at <= ?) RETURNING token"""
_FIRST: Final = """INSERT INTO locks (queue, name, owner, token, expires_at) VALUES (?, ?, ?, 1, ?)
    ON CONFLICT (queue, name) DO NOTHING RETURNING token"""
_RENEW: Final = """UPDATE locks SET expires_at = ?
    WHERE queue = ? AND name = ? AND token = ? AND owner IS NOT NULL AND expires_at > ?"""
_HELD_BY: Final = """SELECT expires_at FROM locks
    WHERE queue = ? AND name = ? AND token = ? AND owner IS NOT NULL"""
_FREE: Final = "UPDATE locks SET owner = NULL, expires_at = NULL WHERE queue = ? AND name = ?"
_STATE: Final = """SELECT owner, token, expires_at FROM locks
    WHERE queue = ? AND name = ? AND owner IS NOT NULL AND expires_at > ?"""

_SCHEDULE: Final = """SELECT definition, next_run_at, last_run_at, paused FROM schedules
    WHERE queue = ? AND name = ?"""
_SCHEDULES: Final = """SELECT definition, next_run_at, last_run_at, paused FROM schedules
    WHERE queue = ? ORDER BY name"""
_ADD_SCHEDULE: Final = """INSERT INTO schedules (queue, name, definition, next_run_at, last_run_at, paused)
    VALUES (?, ?, ?, ?, ?, ?)"""
_REDEFINE: Final = "UPDATE schedules SET definition = ?, next_run_at = ? WHERE queue = ? AND name = ?"
_REMOVE_SCHEDULE: Final = "DELETE FROM schedules WHERE queue = ? AND name = ?"
_PAUSE: Final = "UPDATE schedules SET paused = ? WHERE queue = ? AND name = ?"
_PAUSE_AT: Final = "UPDATE schedules SET paused = ?, next_run_at = ? WHERE queue = ? AND name = ?"
_ADVANCE: Final = """UPDATE schedules SET next_run_at = ?, last_run_at = ?
    WHERE queue = ? AND name = ? AND next_run_at = ?"""
#: The queues of the file that hold schedules (``queue_names`` adds them to the queues of jobs).
SCHEDULE_QUEUES: Final = "SELECT DISTINCT queue FROM schedules"
_FENCE_HELD: Final = """SELECT 1 FROM locks
    WHERE queue = ? AND name = ? AND token = ? AND owner IS NOT NULL AND expires_at > ?"""


def _entry(row: Sequence[Any]) -> ScheduleEntry:
    definition, next_run_at, last_run_at, paused = row
    return ScheduleEntry.from_stored(str(definition), next_run_at, last_run_at, bool(paused))


class SQLiteCoordination:
    """Named locks of one queue of a SQLite file."""

    _db: Connections
    _name: str
    _clock: Clock

    def lock(self, name: str, ttl_s: float) -> Lock:
        """A handle on lock ``name`` of this queue; see :meth:`Queue.lock`."""
        return Lock(self, name, ttl_s)

    def acquire_lock(self, name: str, *, owner: str, ttl_s: float) -> int | None:
        """Take the lock if free or expired, in one transaction; see :meth:`Queue.acquire_lock`."""
        check_lock_args(name, ttl_s)
        check_owner(owner)
        queue, clock = self._name, self._clock

        def tx(conn: _Conn) -> int | None:
            now = clock.now()
            row = conn.execute(_TAKE, (owner, now + ttl_s, queue, name, now)).fetchone()
            if row is None:
                row = conn.execute(_FIRST, (queue, name, owner, now + ttl_s)).fetchone()
            return None if row is None else int(row[0])

        return self._db.write(tx)

    def renew_lock(self, name: str, *, token: int, ttl_s: float) -> bool:
        """Extend the lock if ``token`` holds it, in one transaction; see :meth:`Queue.renew_lock`."""
        check_lock_args(name, ttl_s)
        queue, clock = self._name, self._clock

        def tx(conn: _Conn) -> bool:
            now = clock.now()
            return conn.execute(_RENEW, (now + ttl_s, queue, name, int(token), now)).rowcount == 1

        return self._db.write(tx)

    def release_lock(self, name: str, *, token: int) -> bool:
        """Free the lock if ``token`` holds it, in one transaction; see :meth:`Queue.release_lock`."""
        queue, clock = self._name, self._clock

        def tx(conn: _Conn) -> bool:
            row = conn.execute(_HELD_BY, (queue, name, int(token))).fetchone()
            if row is None:
                return False
            conn.execute(_FREE, (queue, name))
            return float(row[0]) > clock.now()

        return self._db.write(tx)

    def lock_state(self, name: str) -> LockState | None:
        """Who holds the lock now (one read); see :meth:`Queue.lock_state`."""
        rows = self._db.read(_STATE, (self._name, name, self._clock.now()))
        if not rows:
            return None
        owner, token, expires_at = rows[0]
        return LockState(name, str(owner), int(token), float(expires_at))

    # -- schedules ----------------------------------------------------------------------

    def put_schedule(self, entry: ScheduleEntry) -> ScheduleEntry:
        """Store a schedule in one transaction; see :meth:`Queue.put_schedule`."""
        definition = stored_definition(entry)
        queue = self._name

        def tx(conn: _Conn) -> ScheduleEntry:
            row = conn.execute(_SCHEDULE, (queue, entry.name)).fetchone()
            if row is None:
                conn.execute(
                    _ADD_SCHEDULE,
                    (queue, entry.name, definition, entry.next_run_at, entry.last_run_at, int(entry.paused)),
                )
            elif row[0] != definition:
                conn.execute(_REDEFINE, (definition, entry.next_run_at, queue, entry.name))
            else:
                return _entry(row)
            return _entry(conn.execute(_SCHEDULE, (queue, entry.name)).fetchone())

        return self._db.write(tx)

    def get_schedule(self, name: str) -> ScheduleEntry:
        """The schedule ``name`` (one read); see :meth:`Queue.get_schedule`."""
        rows = self._db.read(_SCHEDULE, (self._name, name))
        if not rows:
            raise ScheduleNotFoundError(name, queue=self._name)
        return _entry(rows[0])

    def list_schedules(self) -> list[ScheduleEntry]:
        """Every schedule, by name (one read); see :meth:`Queue.list_schedules`."""
        return [_entry(row) for row in self._db.read(_SCHEDULES, (self._name,))]

    def remove_schedule(self, name: str) -> bool:
        """Delete a schedule; see :meth:`Queue.remove_schedule`."""
        queue = self._name
        return self._db.write(lambda conn: conn.execute(_REMOVE_SCHEDULE, (queue, name)).rowcount == 1)

    def pause_schedule(self, name: str, *, paused: bool, next_run_at: float | None = None) -> ScheduleEntry:
        """Pause or resume a schedule in one transaction; see :meth:`Queue.pause_schedule`."""
        queue = self._name

        def tx(conn: _Conn) -> ScheduleEntry:
            if next_run_at is None:
                changed = conn.execute(_PAUSE, (int(bool(paused)), queue, name)).rowcount
            else:
                changed = conn.execute(_PAUSE_AT, (int(bool(paused)), next_run_at, queue, name)).rowcount
            if not changed:
                raise ScheduleNotFoundError(name, queue=queue)
            return _entry(conn.execute(_SCHEDULE, (queue, name)).fetchone())

        return self._db.write(tx)

    def advance_schedule(
        self,
        name: str,
        *,
        expected: float,
        next_run_at: float | None,
        last_run_at: float | None,
        fence: tuple[str, int] | None = None,
    ) -> bool:
        """Compare-and-set a schedule's state in one transaction, fenced by a lock;
        see :meth:`Queue.advance_schedule`."""
        queue, clock = self._name, self._clock

        def tx(conn: _Conn) -> bool:
            if fence is not None:
                held = conn.execute(_FENCE_HELD, (queue, fence[0], int(fence[1]), clock.now())).fetchone()
                if held is None:
                    return False
            args = (next_run_at, last_run_at, queue, name, expected)
            return conn.execute(_ADVANCE, args).rowcount == 1

        return self._db.write(tx)
