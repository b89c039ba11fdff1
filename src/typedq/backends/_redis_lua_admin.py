"""The bodies of the Redis backend's scripts off the hot path: rescuing expired leases,
management transitions and listing. ``_redis_lua`` prefixes each with its ``_COMMON``
helpers (key names, index bookkeeping) and registers them; see it for the conventions.
"""

from __future__ import annotations

from typing import Final

__all__ = ["LIST", "MANAGE", "RECLAIM"]

# ARGV: now, max_lost, limit. Returns the ids given back.
#
# A lease expired by the caller's clock is kept while its owner is live (its registry
# heartbeat, ``B:alive:<worker>``, has not expired by the server's clock) and the lease
# has not expired by the server's clock either (``ls``): a reaper whose clock runs ahead
# rescues nothing from a live worker, and a live worker that stopped renewing a lease
# loses it. A job claimed before ``ls`` existed, or by an unregistered worker, goes by
# the caller's clock alone.
RECLAIM: Final = r"""
local now = tonumber(ARGV[1])
local max_lost = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local ids = {}
local offset = 0
local snow = nil
while #ids < limit do
  local page = redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(' .. ARGV[1], 'LIMIT', offset, limit)
  for _, id in ipairs(page) do
    local v = redis.call('HMGET', jk(id), 'w', 'ls')
    local kept = false
    if v[1] and v[2] then
      snow = snow or server_ms()
      kept = tonumber(v[2]) > snow and redis.call('EXISTS', alk(v[1])) == 1
    end
    if not kept and #ids < limit then ids[#ids + 1] = id end
  end
  if #page < limit then break end
  offset = offset + #page
end
-- First judge which jobs were claimed in a batch that is still running (others of the
-- same claim RUNNING, rescued with them or not): nobody knows which one was running.
local batched = {}
for _, id in ipairs(ids) do
  local cg = redis.call('HGET', jk(id), 'cg')
  batched[id] = cg and redis.call('SCARD', cgk(cg)) > 1
end
local done = {}
for _, id in ipairs(ids) do
  local k = jk(id)
  local v = redis.call('HMGET', k, 's', 'cr', 'n')
  if v[1] == 'RUNNING' then
    leave_running(id, k)
    redis.call('HDEL', k, 'w')
    if v[2] then
      if not batched[id] then redis.call('HINCRBY', k, 'lc', 1) end
      redis.call('HSET', k, 'f', ARGV[1])
      to_status(id, k, 'RUNNING', 'CANCELLED', now)
    elseif batched[id] then
      redis.call('HSET', k, 'ra', '1')
      to_status(id, k, 'RUNNING', 'PENDING', now)
    else
      local lost = redis.call('HINCRBY', k, 'lc', 1)
      redis.call('HSET', k, 'ra', '1')  -- claimed alone from now on
      if lost >= max_lost then
        redis.call('HSET', k, 'e', 'worker lost ' .. lost .. '×', 'f', ARGV[1])
        to_status(id, k, 'RUNNING', 'DEAD', now)
      else
        to_status(id, k, 'RUNNING', 'PENDING', now)
      end
    end
    done[#done + 1] = id
  else
    redis.call('ZREM', LEASES, id)
  end
end
return done
"""

# ARGV: now, action, id, (value). Management transitions; a refusal is a status word.
MANAGE: Final = r"""
local now = tonumber(ARGV[1])
local action, id = ARGV[2], ARGV[3]
local k = jk(id)
local v = redis.call('HMGET', k, 's', 'n')
local s = v[1]
if not s then return {'missing'} end
if action == 'status' then
  to_status(id, k, s, ARGV[4], now)
  return {'ok'}
elseif action == 'cancel' then
  if ARGV[4] then  -- the lease holder's cancellation of its RUNNING job, fenced
    local a = redis.call('HGET', k, 'a')
    if s ~= 'RUNNING' or a ~= ARGV[4] then return {'stale', s, a or '0'} end
    redis.call('HSET', k, 'f', ARGV[1])
    to_status(id, k, s, 'CANCELLED', now)
    return {'ok', 1}
  end
  if s == 'PENDING' or s == 'SCHEDULED' then
    redis.call('HSET', k, 'f', ARGV[1])
    to_status(id, k, s, 'CANCELLED', now)
    return {'ok', 1}
  end
  if s == 'RUNNING' then redis.call('HSET', k, 'cr', '1') end
  return {'ok', 0}
elseif action == 'priority' then
  local w = redis.call('HMGET', k, 'p', 'sk', 'rk', 't')
  if w[1] == ARGV[4] then return {'ok'} end
  local rk = mkrk(ARGV[4], w[2], v[2], id)
  redis.call('HSET', k, 'p', ARGV[4], 'rk', rk)
  if redis.call('ZREM', READY, w[3]) == 1 then
    redis.call('ZREM', rtk(w[4]), w[3])
    redis.call('ZADD', READY, 0, rk)
    redis.call('ZADD', rtk(w[4]), 0, rk)
  end
  return {'ok'}
elseif action == 'replay' then
  if s ~= 'DEAD' then return {'state', s} end
  local sk = string.rep('0', 16) .. string.sub(redis.call('HGET', k, 'sk'), 17)
  redis.call('HSET', k, 'rc', 0, 'lc', 0, 'sk', sk, 'rk', mkrk(redis.call('HGET', k, 'p'), sk, v[2], id))
  redis.call('HDEL', k, 'e', 'r', 'f', 'sa', 'cr')
  to_status(id, k, s, 'PENDING', now)
  return {'ok', redis.call('HGETALL', k)}
elseif action == 'retry' then
  if not FAILING[s] then return {'state', s} end
  -- The job, then (with dependents) every job FAILED because it failed, transitively.
  local reopened = {id}
  if ARGV[4] == '1' then
    local children = {}
    for _, cid in ipairs(redis.call('ZRANGE', stk('FAILED'), 0, -1)) do
      local w = redis.call('HMGET', jk(cid), 'e', 'd')
      if w[1] and w[2] and string.sub(w[1], 1, 11) == 'dependency ' then
        local parent = string.match(w[1], '^dependency (.-) is ')
        for _, dep in ipairs(cjson.decode(w[2])) do
          if dep == parent then
            children[parent] = children[parent] or {}
            table.insert(children[parent], cid)
          end
        end
      end
    end
    local i = 1
    while i <= #reopened do
      for _, cid in ipairs(children[reopened[i]] or {}) do table.insert(reopened, cid) end
      children[reopened[i]] = nil
      i = i + 1
    end
  end
  for _, rid in ipairs(reopened) do
    local rk_ = jk(rid)
    local w = redis.call('HMGET', rk_, 's', 'n', 'sk', 'p')
    local sk = string.rep('0', 16) .. string.sub(w[3], 17)
    redis.call('HSET', rk_, 'rc', 0, 'lc', 0, 'sk', sk, 'rk', mkrk(w[4], sk, w[2], rid))
    redis.call('HDEL', rk_, 'e', 'r', 'f', 'sa', 'cr', 'ra', 'w')
    to_status(rid, rk_, w[1], 'PENDING', now)
  end
  return {'ok', reopened}
elseif action == 'delete' then
  if s == 'RUNNING' then return {'state', s} end
  if s == 'PENDING' then unplace(id, k) end
  -- A deleted dependency can never complete: its waiting dependents fail.
  redis.call('HINCRBY', COUNTS, s, -1)
  redis.call('ZREM', stk(s), id)
  redis.call('HSET', k, 's', 'CANCELLED')
  fail_dependents(id, now)
  redis.call('ZREM', ALL, id)
  redis.call('ZREM', tyk(redis.call('HGET', k, 't')), id)
  redis.call('DEL', k, dpk(id))
  return {'ok'}
end
return redis.error_reply('unknown action ' .. action)
"""

# ARGV: index key suffix ('all', 'st:S' or 'ty:T'), job type filter ('' = none), after
# (a job id, '#<arrival number>', or '' for none), newest ('1'/'0'), offset, limit.
# Returns {'missing'} for an unknown after id, else {'ok', {id, hash, arrival}...}.
# Reads only.
LIST: Final = r"""
local index = B .. ':' .. ARGV[1]
local jtype, after = ARGV[2], ARGV[3]
local newest = ARGV[4] == '1'
local offset, limit = tonumber(ARGV[5]), tonumber(ARGV[6])
local lo, hi = '-inf', '+inf'
if after ~= '' then
  local n = string.sub(after, 2)
  if string.sub(after, 1, 1) ~= '#' then n = redis.call('HGET', jk(after), 'n') end
  if not n then return {'missing'} end
  if newest then hi = '(' .. n else lo = '(' .. n end
end
local out = {'ok'}
if limit == 0 then return out end
local function page(skip, count)
  if newest then
    return redis.call('ZREVRANGEBYSCORE', index, hi, lo, 'WITHSCORES', 'LIMIT', skip, count)
  end
  return redis.call('ZRANGEBYSCORE', index, lo, hi, 'WITHSCORES', 'LIMIT', skip, count)
end
if jtype == '' then
  local got = page(offset, limit)
  for i = 1, #got, 2 do out[#out + 1] = {got[i], redis.call('HGETALL', jk(got[i])), got[i + 1]} end
  return out
end
-- A status and a type: walk the status index, keeping the jobs of the type.
local skipped = 0
while true do
  local got = page(0, 500)
  if #got == 0 then return out end
  for i = 1, #got, 2 do
    local id = got[i]
    if redis.call('HGET', jk(id), 't') == jtype then
      if skipped < offset then
        skipped = skipped + 1
      else
        out[#out + 1] = {id, redis.call('HGETALL', jk(id)), got[i + 1]}
        if #out > limit then return out end
      end
    end
    if newest then hi = '(' .. got[i + 1] else lo = '(' .. got[i + 1] end
  end
end
"""
