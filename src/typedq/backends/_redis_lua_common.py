"""The helpers every Lua script of the Redis backend starts with (``COMMON``).

They name a queue's keys (``use(base)`` switches them to another queue of the prefix, the
dead-letter queue), keep the status, ready, delayed, lease, finish-time and dependency
indexes right as a job moves, and put dead letters into, and take them back out of, a
dead-letter queue. ``_redis_lua`` appends each script's body; the key layout is described
in ``_redis_keys``.
"""

from __future__ import annotations

from typing import Final

__all__ = ["COMMON"]

#: The helpers, prepended to every script.
COMMON: Final = r"""
-- The keys of the queue the helpers work on: the script's queue (KEYS[1]) unless use()
-- switches them to another queue of the prefix (the dead-letter queue, KEYS[2]).
local B, READY, DELAYED, LEASES, COUNTS, ALL, ALONE, WAKE
local function use(base)
  B = base
  READY = B .. ':ready'
  DELAYED = B .. ':delayed'
  LEASES = B .. ':leases'
  COUNTS = B .. ':counts'
  ALL = B .. ':all'
  ALONE = B .. ':alone'
  WAKE = B .. ':wake'
end
use(KEYS[1])
-- '{prefix}': the hash tag every queue of the prefix shares.
local TAG = string.match(KEYS[1], '^{[^}]*}')
local function jk(id) return B .. ':j:' .. id end
local function alk(w) return B .. ':alive:' .. w end

-- The server's clock in milliseconds, and a lease deadline by it as integer text.
local function server_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function server_deadline(now, until_)
  return string.format('%.0f', server_ms() + (tonumber(until_) - now) * 1000)
end
local function stk(s) return B .. ':st:' .. s end
local function tyk(t) return B .. ':ty:' .. t end
local function rtk(t) return B .. ':rt:' .. t end
local function dpk(id) return B .. ':dependents:' .. id end
local function cgk(n) return B .. ':cg:' .. n end
local FAILING = {FAILED = true, DEAD = true, CANCELLED = true}
local ENDED = {COMPLETED = true, FAILED = true, DEAD = true, CANCELLED = true}
-- The jobs that ended in a status, by finish time (purges).
local function fnk(s) return B .. ':fin:' .. s end
local PREFIX_LEN = 45  -- priority digit, 32 hex of schedule and creation, 12 hex of arrival

-- The ready member: it sorts as jobs are claimed (see _redis_keys.sort_hex).
local function mkrk(p, sk, n, id)
  return string.format('%x', 10 - tonumber(p)) .. sk .. string.format('%012x', tonumber(n)) .. id
end

local function wake(n)
  if n > 0 then
    local tokens = {}
    for i = 1, math.min(n, 16) do tokens[i] = '1' end
    -- trimmed back to 64 once past 128: one LTRIM every 64 pushes, not one a push
    if redis.call('LPUSH', WAKE, unpack(tokens)) > 128 then redis.call('LTRIM', WAKE, 0, 63) end
  end
end

-- Status bookkeeping: the hash, the counters and the status index.
-- A job that ends is indexed by finish time: now, the finish time every transition that
-- ends a job writes ('f').
local function move(id, k, n, old, new)
  redis.call('HSET', k, 's', new)
  redis.call('HINCRBY', COUNTS, old, -1)
  redis.call('HINCRBY', COUNTS, new, 1)
  redis.call('ZREM', stk(old), id)
  redis.call('ZADD', stk(new), n, id)
  if ENDED[old] then redis.call('ZREM', fnk(old), id) end
  if ENDED[new] then redis.call('ZADD', fnk(new), ARGV[1], id) end
end

-- An unblocked PENDING job goes to the delayed set or the ready sets.
local function schedule(id, now)
  local k = jk(id)
  local v = redis.call('HMGET', k, 'sa', 'rk', 't', 'ra')
  if v[1] and tonumber(v[1]) > now then
    redis.call('ZADD', DELAYED, v[1], id)
  else
    redis.call('ZADD', READY, 0, v[2])
    redis.call('ZADD', rtk(v[3]), 0, v[2])
  end
  if v[4] then redis.call('SADD', ALONE, id) end
end

-- Drop a blocked job's edges from its dependencies' reverse index.
local function drop_edges(id, k)
  local d = redis.call('HGET', k, 'd')
  if d then
    for _, dep in ipairs(cjson.decode(d)) do redis.call('SREM', dpk(dep), id) end
  end
  redis.call('HDEL', k, 'bb')
end

-- A job ended FAILED, DEAD or CANCELLED: its waiting dependents fail, transitively.
local function fail_dependents(root, now)
  local stack = {root}
  while #stack > 0 do
    local pid = table.remove(stack)
    local dk = dpk(pid)
    local waiting = redis.call('SMEMBERS', dk)
    if #waiting > 0 then
      redis.call('DEL', dk)
      local ps = redis.call('HGET', jk(pid), 's')
      for _, cid in ipairs(waiting) do
        local ck = jk(cid)
        local cv = redis.call('HMGET', ck, 'bb', 'n', 's')
        if cv[1] and cv[3] == 'PENDING' then
          drop_edges(cid, ck)
          redis.call('SREM', ALONE, cid)
          move(cid, ck, cv[2], 'PENDING', 'FAILED')
          redis.call('HSET', ck, 'e', 'dependency ' .. pid .. ' is ' .. ps, 'f', ARGV[1])
          stack[#stack + 1] = cid
        end
      end
    end
  end
end

-- A job COMPLETED: dependents whose last dependency it was become ready.
local function release_dependents(id, now)
  local dk = dpk(id)
  local waiting = redis.call('SMEMBERS', dk)
  if #waiting == 0 then return 0 end
  redis.call('DEL', dk)
  local released = 0
  for _, cid in ipairs(waiting) do
    local ck = jk(cid)
    if redis.call('HEXISTS', ck, 'bb') == 1 then
      if redis.call('HINCRBY', ck, 'bb', -1) <= 0 then
        redis.call('HDEL', ck, 'bb')
        schedule(cid, now)
        released = released + 1
      end
    end
  end
  wake(released)
  return released
end

-- A job just made PENDING: blocked, failed on a failed dependency, delayed or ready.
local function place(id, now)
  local k = jk(id)
  local d = redis.call('HGET', k, 'd')
  if d then
    local unfinished = {}
    for _, dep in ipairs(cjson.decode(d)) do
      local ds = redis.call('HGET', jk(dep), 's')
      if not ds or FAILING[ds] then
        move(id, k, redis.call('HGET', k, 'n'), 'PENDING', 'FAILED')
        redis.call('HSET', k, 'e', 'dependency ' .. dep .. ' is ' .. (ds or 'missing'), 'f', ARGV[1])
        fail_dependents(id, now)
        return
      end
      if ds ~= 'COMPLETED' then unfinished[#unfinished + 1] = dep end
    end
    if #unfinished > 0 then
      for _, dep in ipairs(unfinished) do redis.call('SADD', dpk(dep), id) end
      redis.call('HSET', k, 'bb', #unfinished)
      return
    end
  end
  schedule(id, now)
end

-- Take a PENDING job out of whichever index holds it.
local function unplace(id, k)
  local v = redis.call('HMGET', k, 'rk', 't', 'bb')
  if redis.call('ZREM', READY, v[1]) == 1 then
    redis.call('ZREM', rtk(v[2]), v[1])
  elseif redis.call('ZREM', DELAYED, id) == 0 and v[3] then
    drop_edges(id, k)
  end
  redis.call('SREM', ALONE, id)
end

-- A RUNNING job leaves its lease and its claim group.
local function leave_running(id, k)
  redis.call('ZREM', LEASES, id)
  local cg = redis.call('HGET', k, 'cg')
  if cg then
    redis.call('SREM', cgk(cg), id)
    redis.call('HDEL', k, 'cg', 'lu', 'ls')
  else
    redis.call('HDEL', k, 'lu', 'ls')
  end
end

-- Due delayed jobs (at most 1000 a call) move to the ready sets.
local function promote(now)
  local due = redis.call('ZRANGEBYSCORE', DELAYED, '-inf', ARGV[1], 'LIMIT', 0, 1000)
  for _, id in ipairs(due) do
    redis.call('ZREM', DELAYED, id)
    local v = redis.call('HMGET', jk(id), 'rk', 't')
    redis.call('ZADD', READY, 0, v[1])
    redis.call('ZADD', rtk(v[2]), 0, v[1])
  end
end

-- Leased calls: nil when the job is RUNNING under the token, else the refusal.
local function refuse(k, token)
  local v = redis.call('HMGET', k, 's', 'a')
  if not v[1] then return {'missing'} end
  if v[1] ~= 'RUNNING' or v[2] ~= token then return {'stale', v[1], v[2] or '0'} end
  return nil
end

-- Delete a job that is not RUNNING from the current queue; its waiting dependents fail.
local function forget(id, k, s)
  if s == 'PENDING' then unplace(id, k) end
  redis.call('HINCRBY', COUNTS, s, -1)
  redis.call('ZREM', stk(s), id)
  if ENDED[s] then redis.call('ZREM', fnk(s), id) end
  redis.call('HSET', k, 's', 'CANCELLED')
  fail_dependents(id, tonumber(ARGV[1]))
  redis.call('ZREM', ALL, id)
  redis.call('ZREM', tyk(redis.call('HGET', k, 't')), id)
  redis.call('DEL', k, dpk(id))
end

-- Add a job, as another queue holds it (a flat HGETALL), to the current queue in status s
-- (not PENDING nor RUNNING): a dead letter (origin: the name of the queue it died in), or
-- one put back for a retry (origin nil: its queue field is kept).
local function insert_copy(id, flat, s, origin)
  local k = jk(id)
  local fields, vals = {}, {}
  for i = 1, #flat, 2 do
    local f = flat[i]
    -- the arrival number, ready member, claim group and blocked count are the queue's own
    if f ~= 'n' and f ~= 'rk' and f ~= 'cg' and f ~= 'bb' and f ~= 's' then
      fields[#fields + 1] = f
      fields[#fields + 1] = flat[i + 1]
      vals[f] = flat[i + 1]
    end
  end
  local n = redis.call('INCR', B .. ':seq')
  redis.call('HSET', k, 's', s, 'n', n, 'rk', mkrk(vals['p'], vals['sk'], n, id), unpack(fields))
  if origin then redis.call('HSET', k, 'q', origin) end
  redis.call('ZADD', ALL, n, id)
  redis.call('ZADD', tyk(vals['t']), n, id)
  redis.call('ZADD', stk(s), n, id)
  redis.call('HINCRBY', COUNTS, s, 1)
  if ENDED[s] and vals['f'] then redis.call('ZADD', fnk(s), vals['f'], id) end
end

-- The job id of the current queue just went DEAD: its copy goes into the dead-letter queue
-- dlb (replacing an older copy), which then keeps at most dlq_max (a number, or nil)
-- dead letters: the oldest are dropped, each with its own row when that is still DEAD.
-- The ids dropped are appended to dropped. The current queue stays the same.
local function put_dead_letter(id, dlb, dlq_max, dropped)
  local src = B
  local flat = redis.call('HGETALL', jk(id))
  use(dlb)
  local k = jk(id)
  local s = redis.call('HGET', k, 's')
  if s then
    if s == 'RUNNING' then leave_running(id, k) end
    forget(id, k, s)
  end
  insert_copy(id, flat, 'DEAD', string.match(src, '^{[^}]*}:{(.*)}$'))
  local over = dlq_max and redis.call('ZCARD', stk('DEAD')) - dlq_max or 0
  if over > 0 then
    for _, lid in ipairs(redis.call('ZRANGE', stk('DEAD'), 0, over - 1)) do
      local lk = jk(lid)
      local origin = redis.call('HGET', lk, 'q')
      forget(lid, lk, 'DEAD')
      dropped[#dropped + 1] = lid
      local ob = origin and (TAG .. ':{' .. origin .. '}')
      if ob and ob ~= dlb then
        use(ob)
        local ok = jk(lid)
        if redis.call('TYPE', ok)['ok'] == 'hash' and redis.call('HGET', ok, 's') == 'DEAD' then
          forget(lid, ok, 'DEAD')
        end
        use(dlb)
      end
    end
    redis.call('HINCRBY', B .. ':meta', 'dropped', over)
  end
  use(src)
end

-- Checked before anything is written: the dead letter of id in dlb has a hash's place
-- (a key of another type there would stop the script half-way). A refusal, or nil.
local function check_letter(dlb, id)
  local key = dlb .. ':j:' .. id
  local kind = redis.call('TYPE', key)['ok']
  if kind ~= 'none' and kind ~= 'hash' then return {'wrongtype', key, kind} end
  return nil
end

-- Before a retry from the dead-letter queue dlb: when the current queue no longer holds
-- the job, its dead letter is put back as a DEAD row. A refusal, or nil.
local function restore(id, dlb)
  if redis.call('EXISTS', jk(id)) == 1 then return nil end
  local src = B
  use(dlb)
  local flat = redis.call('HGETALL', jk(id))
  local s = redis.call('HGET', jk(id), 's')
  use(src)
  if not s then return {'missing'} end
  if s ~= 'DEAD' then return {'state', s} end
  insert_copy(id, flat, 'DEAD')
  return nil
end

-- A retried job's dead letter leaves the dead-letter queue dlb.
local function take_back(id, dlb)
  local src = B
  use(dlb)
  local k = jk(id)
  local s = redis.call('HGET', k, 's')
  if s and s ~= 'RUNNING' then forget(id, k, s) end
  use(src)
end

-- Any status to any status, every index kept right (update_status, rescues).
local function to_status(id, k, old, new, now)
  if old == new then return end
  if old == 'PENDING' then unplace(id, k) elseif old == 'RUNNING' then leave_running(id, k) end
  move(id, k, redis.call('HGET', k, 'n'), old, new)
  if new == 'PENDING' then
    place(id, now)
    wake(1)
  elseif new == 'COMPLETED' then
    release_dependents(id, now)
  elseif FAILING[new] then
    fail_dependents(id, now)
  end
end
"""
