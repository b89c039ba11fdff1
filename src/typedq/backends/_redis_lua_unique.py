"""The Redis backend's unique keys: the Lua the enqueue script judges them with, and the
sweep (its own script, ``sweep_unique``).

Each queue keeps its unique keys in one hash, ``B:unique`` (``B`` the queue's base key,
under the prefix's hash tag like every key of the queue): field the key, value
``holder id <TAB> until <TAB> states`` (``until`` empty for no time limit, the states
comma-separated). The enqueue script reads an entry and the holder's status (field ``s``
of its job hash) before it writes anything, and takes the free keys with the jobs, so a
key is judged and taken atomically (see ``_unique`` for when a key is held). The sweep
walks the hash with ``HSCAN`` (its cursor is the sweep's) and deletes, in the same script,
the entries it judges free.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

from typedq.backends._redis_lua_common import COMMON
from typedq.backends._unique import UniqueSweep, bad_cursor, check_sweep
from typedq.clock import Clock

__all__ = ["TAKE_UNIQUE", "UNIQUE_SCRIPTS", "RedisUniqueKeys"]

#: ``unique_holder(entry, now)``: the id of the job an entry's key is held by, or nil
#: when the entry holds it no longer (its time passed, its job is gone or out of its
#: states).
_HOLDER: Final = r"""
local function unique_holder(entry, now)
  local hid, huntil, hstates = string.match(entry, '^([^\t]*)\t([^\t]*)\t(.*)$')
  if not hid or (huntil ~= '' and tonumber(huntil) <= now) then return nil end
  local s = redis.call('HGET', jk(hid), 's')
  if s and string.find(',' .. hstates .. ',', ',' .. s .. ',', 1, true) then return hid end
  return nil
end
"""

#: ``take_unique(ids, i, now)``: judges the unique keys given in ARGV from index ``i``
#: (after the jobs; ``ids``: the batch's job ids, in order). Returns ``{'unique', job id,
#: key, holder id}`` for the first key held (by a job of the queue, or by an earlier job
#: of the batch), else the list of ``{key, entry}`` to write.
TAKE_UNIQUE: Final = _HOLDER + r"""
local function take_unique(ids, i, now)
  local nu = tonumber(ARGV[i] or '0')
  local out = {}
  local taken = {}
  for u = 1, nu do
    local b = i + (u - 1) * 4
    local id, key, until_, states = ids[tonumber(ARGV[b + 1])], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    local holder = taken[key]
    if not holder then
      local entry = redis.call('HGET', B .. ':unique', key)
      if entry then
        local hid = unique_holder(entry, now)
        if hid ~= id then holder = hid end
      end
    end
    if holder then return {'unique', id, key, holder} end
    taken[key] = id
    out[#out + 1] = {key, id .. '\t' .. until_ .. '\t' .. states}
  end
  return out
end
"""

# ARGV: now, cursor (an HSCAN cursor, '0' to start), count. Deletes the entries not held
# among those one HSCAN step returns; returns {removed, next cursor ('0' at the end)}.
_SWEEP: Final = r"""
local now = tonumber(ARGV[1])
local got = redis.call('HSCAN', B .. ':unique', ARGV[2], 'COUNT', ARGV[3])
local flat = got[2]
local removed = 0
for i = 1, #flat, 2 do
  if not unique_holder(flat[i + 1], now) then
    redis.call('HDEL', B .. ':unique', flat[i])
    removed = removed + 1
  end
end
return {removed, got[1]}
"""

#: Script name -> Lua source, registered with the queue's own.
UNIQUE_SCRIPTS: Final = {"sweep_unique": COMMON + _HOLDER + _SWEEP}


class RedisUniqueKeys:
    """The sweep of a ``RedisQueue``'s unique keys (a mixin)."""

    _clock: Clock

    def _run(self, script: str, args: Sequence[Any], dlq: str | None = None) -> Any:
        raise NotImplementedError  # ``RedisQueue._run``

    def sweep_unique_keys(self, *, cursor: str = "", limit: int = 1000) -> UniqueSweep:
        """Remove the entries not held among those one ``HSCAN`` step from ``cursor``
        returns (about ``limit``; all of a small hash), in one script; see
        :meth:`Queue.sweep_unique_keys`."""
        check_sweep(cursor, limit)
        if cursor and not cursor.isdigit():
            raise bad_cursor(cursor)
        removed, after = self._run("sweep_unique", [repr(float(self._clock.now())), cursor or "0", limit])
        after = after.decode() if isinstance(after, bytes) else str(after)
        return UniqueSweep(int(removed), "" if after == "0" else after)
