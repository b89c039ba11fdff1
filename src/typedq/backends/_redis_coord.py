"""Coordination state of the Redis backend: named locks and schedules, in hashes of the queue.

``B:locks`` maps a lock's name to its holder as JSON (``o`` owner, ``t`` token, ``e``
deadline, all strings, so no number is ever reformatted by Lua); ``B:fences`` maps the
name to its fence counter, which ``HINCRBY`` raises on every acquisition and nothing
ever lowers or deletes. Acquire, renew and release are each one Lua script (the
``SET NX PX`` pattern with a compare on the token, done on the queue's clock rather than
the server's key expiry, so a lock expires when the queue's clock says so, FakeClock
included). Both keys are under the queue's hash tag, beside its jobs.

Schedules: ``B:schedules`` maps a schedule's name to its definition (canonical JSON
written by Python, never rewritten by Lua), ``B:schedstate`` to its state as JSON of
strings (``n`` next_run_at, ``l`` last_run_at, ``""`` for None; ``p`` "1" when paused).
Each change is one script; ``advance`` reads the fencing lock in ``B:locks`` in the
same script, so a stale leader's compare-and-set is refused atomically.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from typedq.backends import _redis_conn as conn
from typedq.backends._locks import Lock, LockState, check_lock_args, check_owner
from typedq.backends._redis_keys import RedisSettings
from typedq.backends._schedules import ScheduleEntry, stored_definition
from typedq.clock import Clock
from typedq.errors import ScheduleNotFoundError

__all__ = ["COORD_SCRIPTS", "RedisCoordination"]

_LOCK: Final = r"""
local LOCKS = KEYS[1] .. ':locks'
local FENCES = KEYS[1] .. ':fences'
local action, name, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local raw = redis.call('HGET', LOCKS, name)
local cur = raw and cjson.decode(raw)
if action == 'acquire' then
  if cur and tonumber(cur.e) > now then return 0 end
  local token = redis.call('HINCRBY', FENCES, name, 1)
  redis.call('HSET', LOCKS, name, cjson.encode({o = ARGV[4], t = tostring(token), e = ARGV[5]}))
  return token
end
if not cur or cur.t ~= ARGV[4] then return 0 end
if action == 'renew' then
  if tonumber(cur.e) <= now then return 0 end
  cur.e = ARGV[5]
  redis.call('HSET', LOCKS, name, cjson.encode(cur))
  return 1
end
-- release: the holder goes, the fence counter stays
redis.call('HDEL', LOCKS, name)
if tonumber(cur.e) > now then return 1 end
return 0
"""

_SCHED: Final = r"""
local DEFS = KEYS[1] .. ':schedules'
local STATE = KEYS[1] .. ':schedstate'
local action, name = ARGV[1], ARGV[2]
if action == 'put' then
  local old = redis.call('HGET', DEFS, name)
  if not old then
    redis.call('HSET', DEFS, name, ARGV[3])
    redis.call('HSET', STATE, name, cjson.encode({n = ARGV[4], l = ARGV[5], p = ARGV[6]}))
  elseif old ~= ARGV[3] then
    local st = cjson.decode(redis.call('HGET', STATE, name))
    st.n = ARGV[4]
    redis.call('HSET', DEFS, name, ARGV[3])
    redis.call('HSET', STATE, name, cjson.encode(st))
  end
  return {redis.call('HGET', DEFS, name), redis.call('HGET', STATE, name)}
end
if action == 'remove' then
  redis.call('HDEL', STATE, name)
  return redis.call('HDEL', DEFS, name)
end
local raw = redis.call('HGET', STATE, name)
if not raw then return 0 end
local st = cjson.decode(raw)
if action == 'pause' then
  st.p = ARGV[3]
  if ARGV[4] ~= '-' then st.n = ARGV[4] end
  redis.call('HSET', STATE, name, cjson.encode(st))
  return {redis.call('HGET', DEFS, name), redis.call('HGET', STATE, name)}
end
-- advance: a compare-and-set on n, fenced by the leader's lock when one is named
if ARGV[7] ~= '' then
  local held = redis.call('HGET', KEYS[1] .. ':locks', ARGV[7])
  if not held then return 0 end
  local lock = cjson.decode(held)
  if lock.t ~= ARGV[8] or tonumber(lock.e) <= tonumber(ARGV[6]) then return 0 end
end
if st.n == '' or tonumber(st.n) ~= tonumber(ARGV[3]) then return 0 end
st.n = ARGV[4]
st.l = ARGV[5]
redis.call('HSET', STATE, name, cjson.encode(st))
return 1
"""

#: The scripts of this module, registered with the queue's own (``_redis_lua.SCRIPTS``).
COORD_SCRIPTS: Final = {"lock": _LOCK, "sched": _SCHED}


def _num(value: float) -> str:
    """A time as exact text (Lua would round it to 14 digits)."""
    return repr(float(value))


def _text(value: float | None) -> str:
    return "" if value is None else _num(value)


def _time(text: str) -> float | None:
    return None if text == "" else float(text)


def _stored(definition: bytes | str, state: bytes | str) -> ScheduleEntry:
    """An entry from its definition and state as the hashes hold them."""
    st = json.loads(state)
    text = definition.decode() if isinstance(definition, bytes) else definition
    return ScheduleEntry.from_stored(text, _time(st["n"]), _time(st["l"]), st["p"] == "1")


class RedisCoordination:
    """Named locks and schedules of one Redis queue; mixed into ``RedisQueue``."""

    _name: str
    _clock: Clock
    _settings: RedisSettings
    _base: str

    if TYPE_CHECKING:  # RedisQueue's client and script runner

        @property
        def _r(self) -> Any: ...

        def _run(self, script: str, args: Sequence[Any]) -> Any: ...

    def lock(self, name: str, ttl_s: float) -> Lock:
        """A handle on lock ``name`` of this queue; see :meth:`Queue.lock`."""
        return Lock(self, name, ttl_s)

    def acquire_lock(self, name: str, *, owner: str, ttl_s: float) -> int | None:
        """Take the lock if free or expired, in one script; see :meth:`Queue.acquire_lock`."""
        check_lock_args(name, ttl_s)
        check_owner(owner)
        now = self._clock.now()
        token = int(self._run("lock", ["acquire", name, _num(now), owner, _num(now + ttl_s)]))
        return token or None

    def renew_lock(self, name: str, *, token: int, ttl_s: float) -> bool:
        """Extend the lock if ``token`` holds it, in one script; see :meth:`Queue.renew_lock`."""
        check_lock_args(name, ttl_s)
        now = self._clock.now()
        return bool(self._run("lock", ["renew", name, _num(now), str(int(token)), _num(now + ttl_s)]))

    def release_lock(self, name: str, *, token: int) -> bool:
        """Free the lock if ``token`` holds it, in one script; see :meth:`Queue.release_lock`."""
        return bool(self._run("lock", ["release", name, _num(self._clock.now()), str(int(token))]))

    def lock_state(self, name: str) -> LockState | None:
        """Who holds the lock now (one read); see :meth:`Queue.lock_state`."""
        return _lock_state(self._r, self._settings, self._base, name, self._clock.now())

    # -- schedules ----------------------------------------------------------------------

    def put_schedule(self, entry: ScheduleEntry) -> ScheduleEntry:
        """Store a schedule in one script; see :meth:`Queue.put_schedule`."""
        definition = stored_definition(entry)
        args = [
            "put", entry.name, definition, _text(entry.next_run_at), _text(entry.last_run_at),
            "1" if entry.paused else "0",
        ]
        stored, state = self._run("sched", args)
        return _stored(stored, state)

    def get_schedule(self, name: str) -> ScheduleEntry:
        """The schedule ``name`` (one round trip); see :meth:`Queue.get_schedule`."""
        with conn.map_errors(self._settings), self._r.pipeline(transaction=True) as pipe:
            pipe.hget(f"{self._base}:schedules", name)
            pipe.hget(f"{self._base}:schedstate", name)
            definition, state = pipe.execute()
        if definition is None or state is None:
            raise ScheduleNotFoundError(name, queue=self._name)
        return _stored(definition, state)

    def list_schedules(self) -> list[ScheduleEntry]:
        """Every schedule, by name (one round trip); see :meth:`Queue.list_schedules`."""
        with conn.map_errors(self._settings), self._r.pipeline(transaction=True) as pipe:
            pipe.hgetall(f"{self._base}:schedules")
            pipe.hgetall(f"{self._base}:schedstate")
            definitions, states = pipe.execute()
        names = sorted(k for k in definitions if k in states)
        return [_stored(definitions[k], states[k]) for k in names]

    def remove_schedule(self, name: str) -> bool:
        """Delete a schedule in one script; see :meth:`Queue.remove_schedule`."""
        return bool(self._run("sched", ["remove", name]))

    def pause_schedule(self, name: str, *, paused: bool, next_run_at: float | None = None) -> ScheduleEntry:
        """Pause or resume a schedule in one script; see :meth:`Queue.pause_schedule`."""
        at = "-" if next_run_at is None else _num(next_run_at)
        reply = self._run("sched", ["pause", name, "1" if paused else "0", at])
        if not reply:
            raise ScheduleNotFoundError(name, queue=self._name)
        return _stored(reply[0], reply[1])

    def advance_schedule(
        self,
        name: str,
        *,
        expected: float,
        next_run_at: float | None,
        last_run_at: float | None,
        fence: tuple[str, int] | None = None,
    ) -> bool:
        """Compare-and-set a schedule's state in one script, fenced by a lock;
        see :meth:`Queue.advance_schedule`."""
        lock_name, token = ("", "") if fence is None else (fence[0], str(int(fence[1])))
        args = [
            "advance", name, _num(expected), _text(next_run_at), _text(last_run_at),
            _num(self._clock.now()), lock_name, token,
        ]
        return bool(self._run("sched", args))


def _lock_state(client: Any, settings: RedisSettings, base: str, name: str, now: float) -> LockState | None:
    """Who holds lock ``name`` at ``now`` (one ``HGET``); None when free or expired."""
    with conn.map_errors(settings):
        raw = client.hget(f"{base}:locks", name)
    if raw is None:
        return None
    held = json.loads(raw)
    expires_at = float(held["e"])
    if expires_at <= now:
        return None
    return LockState(name, str(held["o"]), int(held["t"]), expires_at)
