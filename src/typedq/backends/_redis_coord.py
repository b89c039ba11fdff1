"""Coordination state of the Redis backend: named locks, in two hashes of the queue.

``B:locks`` maps a lock's name to its holder as JSON (``o`` owner, ``t`` token, ``e``
deadline, all strings, so no number is ever reformatted by Lua); ``B:fences`` maps the
name to its fence counter, which ``HINCRBY`` raises on every acquisition and nothing
ever lowers or deletes. Acquire, renew and release are each one Lua script (the
``SET NX PX`` pattern with a compare on the token, done on the queue's clock rather than
the server's key expiry, so a lock expires when the queue's clock says so, FakeClock
included). Both keys are under the queue's hash tag, beside its jobs.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from typedq.backends import _redis_conn as conn
from typedq.backends._locks import Lock, LockState, check_lock_args, check_owner
from typedq.backends._redis_keys import RedisSettings
from typedq.clock import Clock

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

#: The scripts of this module, registered with the queue's own (``_redis_lua.SCRIPTS``).
COORD_SCRIPTS: Final = {"lock": _LOCK}


def _num(value: float) -> str:
    """A time as exact text (Lua would round it to 14 digits)."""
    return repr(float(value))


class RedisCoordination:
    """Named locks of one Redis queue; mixed into ``RedisQueue``."""

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
