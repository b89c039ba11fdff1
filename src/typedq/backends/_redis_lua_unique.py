"""The Redis backend's unique keys: the Lua helper the enqueue script judges them with.

Each queue keeps its unique keys in one hash, ``B:unique`` (``B`` the queue's base key,
under the prefix's hash tag like every key of the queue): field the key, value
``holder id <TAB> until <TAB> states`` (``until`` empty for no time limit, the states
comma-separated). The enqueue script reads an entry and the holder's status (field ``s``
of its job hash) before it writes anything, and takes the free keys with the jobs, so a
key is judged and taken atomically (see ``_unique`` for when a key is held).
"""

from __future__ import annotations

from typing import Final

__all__ = ["TAKE_UNIQUE"]

#: ``take_unique(jobs, i, now)``: judges the unique keys given in ARGV from index ``i``
#: (after the jobs). Returns ``{'unique', job id, key, holder id}`` for the first key
#: held (by a job of the queue, or by an earlier job of the batch), else the list of
#: ``{key, entry}`` to write.
TAKE_UNIQUE: Final = r"""
local function take_unique(jobs, i, now)
  local nu = tonumber(ARGV[i] or '0')
  local out = {}
  local taken = {}
  for u = 1, nu do
    local b = i + (u - 1) * 4
    local id, key, until_, states = jobs[tonumber(ARGV[b + 1])][1], ARGV[b + 2], ARGV[b + 3], ARGV[b + 4]
    local holder = taken[key]
    if not holder then
      local entry = redis.call('HGET', B .. ':unique', key)
      if entry then
        local hid, huntil, hstates = string.match(entry, '^([^\t]*)\t([^\t]*)\t(.*)$')
        if hid and hid ~= id and (huntil == '' or tonumber(huntil) > now) then
          local s = redis.call('HGET', jk(hid), 's')
          if s and string.find(',' .. hstates .. ',', ',' .. s .. ',', 1, true) then holder = hid end
        end
      end
    end
    if holder then return {'unique', id, key, holder} end
    taken[key] = id
    out[#out + 1] = {key, id .. '\t' .. until_ .. '\t' .. states}
  end
  return out
end
"""
