"""The Redis backend's Lua scripts: every state transition of a queue is one of them.

Each script is ``_COMMON`` (key names and the helpers that keep the indexes right)
followed by its body. ``KEYS[1]`` is the queue's base key ``{prefix}:{queue}``; every key a
script touches starts with ``{prefix}``, the hash tag of every queue of the prefix (one
Redis Cluster slot), so a script may also touch another queue of the prefix (the
dead-letter queue: ``KEYS[2]``). Times and lease deadlines come in ``ARGV`` from the client's clock as
exact decimal text and are stored as given: Lua turns a number into text with 14
significant digits, so a script never formats a float itself.

The key layout (``B`` is the base key) is described in ``_redis_keys``. Scripts return
plain arrays: a job as ``{id, field, value, ...}`` (its hash), a refusal as a status
word the client turns into a typed error.
"""

from __future__ import annotations

from typing import Final

__all__ = ["SCRIPTS"]

_COMMON: Final = r"""
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
local function stk(s) return B .. ':st:' .. s end
local function tyk(t) return B .. ':ty:' .. t end
local function rtk(t) return B .. ':rt:' .. t end
local function dpk(id) return B .. ':dependents:' .. id end
local function cgk(n) return B .. ':cg:' .. n end
local FAILING = {FAILED = true, DEAD = true, CANCELLED = true}
local PREFIX_LEN = 45  -- priority digit, 32 hex of schedule and creation, 12 hex of arrival

-- The ready member: it sorts as jobs are claimed (see _redis_keys.sort_hex).
local function mkrk(p, sk, n, id)
  return string.format('%x', 10 - tonumber(p)) .. sk .. string.format('%012x', tonumber(n)) .. id
end

local function wake(n)
  if n > 0 then
    local tokens = {}
    for i = 1, math.min(n, 16) do tokens[i] = '1' end
    if redis.call('LPUSH', WAKE, unpack(tokens)) > 64 then redis.call('LTRIM', WAKE, 0, 63) end
  end
end

-- Status bookkeeping: the hash, the counters and the status index.
local function move(id, k, n, old, new)
  redis.call('HSET', k, 's', new)
  redis.call('HINCRBY', COUNTS, old, -1)
  redis.call('HINCRBY', COUNTS, new, 1)
  redis.call('ZREM', stk(old), id)
  redis.call('ZADD', stk(new), n, id)
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
    redis.call('HDEL', k, 'cg', 'lu')
  else
    redis.call('HDEL', k, 'lu')
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

# ARGV: now, count, then per job: id, type, status, field count, fields...
_ENQUEUE: Final = r"""
local now = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local jobs = {}
local batch = {}
local i = 3
for j = 1, count do
  local id, t, s, nf = ARGV[i], ARGV[i + 1], ARGV[i + 2], tonumber(ARGV[i + 3])
  jobs[j] = {id, t, s, i + 4, nf}
  batch[id] = true
  i = i + 4 + nf
end
-- Judge every job before writing anything: a batch is all-or-nothing.
for _, job in ipairs(jobs) do
  local id = job[1]
  local kind = redis.call('TYPE', jk(id))['ok']
  if kind == 'hash' then return {'duplicate', id} end
  if kind ~= 'none' then return {'wrongtype', jk(id), kind} end
  if job[3] == 'PENDING' then
    for f = job[4], job[4] + job[5] - 1, 2 do
      if ARGV[f] == 'd' then
        for _, dep in ipairs(cjson.decode(ARGV[f + 1])) do
          if not batch[dep] and redis.call('EXISTS', jk(dep)) == 0 then
            return {'unknown', id, dep}
          end
        end
      end
    end
  end
end
local woken = 0
-- Index writes of the common jobs are gathered and made one command per key.
local adds = {}
local function add(key, score, member)
  local list = adds[key]
  if not list then
    list = {}
    adds[key] = list
  end
  list[#list + 1] = score
  list[#list + 1] = member
end
local counted = {}
local first = redis.call('INCRBY', B .. ':seq', count) - count
for j, job in ipairs(jobs) do
  local id, t, s = job[1], job[2], job[3]
  local k = jk(id)
  local n = first + j
  local fields = {}
  local sk, p, lu, sa, d, ra
  for f = job[4], job[4] + job[5] - 1, 2 do
    local name = ARGV[f]
    fields[#fields + 1] = name
    fields[#fields + 1] = ARGV[f + 1]
    if name == 'sk' then sk = ARGV[f + 1] elseif name == 'p' then p = ARGV[f + 1]
    elseif name == 'lu' then lu = ARGV[f + 1] elseif name == 'sa' then sa = ARGV[f + 1]
    elseif name == 'd' then d = true elseif name == 'ra' then ra = true end
  end
  local rk = mkrk(p, sk, n, id)
  redis.call('HSET', k, 't', t, 's', s, 'n', n, 'rk', rk, unpack(fields))
  add(ALL, n, id)
  add(tyk(t), n, id)
  if s == 'PENDING' and (d or ra or (sa and tonumber(sa) > now)) then
    -- placing may fail the job at once: its status index is written now
    redis.call('HINCRBY', COUNTS, s, 1)
    redis.call('ZADD', stk(s), n, id)
    place(id, now)
  else
    counted[s] = (counted[s] or 0) + 1
    add(stk(s), n, id)
    if s == 'PENDING' then
      add(READY, 0, rk)
      add(rtk(t), 0, rk)
    elseif s == 'RUNNING' and lu then
      add(LEASES, lu, id)
    end
  end
  if s == 'PENDING' then woken = woken + 1 end
end
for status, c in pairs(counted) do redis.call('HINCRBY', COUNTS, status, c) end
for key, list in pairs(adds) do
  for lo = 1, #list, 4000 do
    redis.call('ZADD', key, unpack(list, lo, math.min(#list, lo + 3999)))
  end
end
wake(woken)
return count
"""

# ARGV: now, mode ('claim', 'dequeue' or 'peek'), limit, worker, lease_until, ntypes, types...
_CLAIM: Final = r"""
local now = tonumber(ARGV[1])
local mode = ARGV[2]
local limit = tonumber(ARGV[3])
local ntypes = tonumber(ARGV[6])
promote(now)
if redis.call('SCARD', ALONE) > 0 then limit = 1 end
local members
if ntypes == 0 then
  members = redis.call('ZRANGEBYLEX', READY, '-', '+', 'LIMIT', 0, limit)
else
  members = {}
  for t = 7, 6 + ntypes do
    for _, m in ipairs(redis.call('ZRANGEBYLEX', rtk(ARGV[t]), '-', '+', 'LIMIT', 0, limit)) do
      members[#members + 1] = m
    end
  end
  if ntypes > 1 then
    table.sort(members, function(a, b)
      return string.sub(a, 1, PREFIX_LEN) < string.sub(b, 1, PREFIX_LEN)
    end)
  end
  while #members > limit do table.remove(members) end
end
local out = {}
if mode == 'peek' then
  if members[1] then
    local id = string.sub(members[1], PREFIX_LEN + 1)
    out[1] = {id, redis.call('HGETALL', jk(id))}
  end
  return out
end
local cg = false
if mode == 'claim' and #members > 1 then cg = redis.call('INCR', B .. ':cgseq') end
for j, m in ipairs(members) do
  local id = string.sub(m, PREFIX_LEN + 1)
  local k = jk(id)
  local v = redis.call('HMGET', k, 't', 'n', 'ra')
  redis.call('ZREM', READY, m)
  redis.call('ZREM', rtk(v[1]), m)
  if v[3] then
    redis.call('HDEL', k, 'ra')
    redis.call('SREM', ALONE, id)
  end
  move(id, k, v[2], 'PENDING', 'RUNNING')
  redis.call('HINCRBY', k, 'a', 1)
  if mode == 'claim' then
    redis.call('HSET', k, 'w', ARGV[4], 'sd', ARGV[1], 'lu', ARGV[5])
    redis.call('ZADD', LEASES, ARGV[5], id)
    if cg then
      redis.call('HSET', k, 'cg', cg)
      redis.call('SADD', cgk(cg), id)
    end
  else
    redis.call('HSET', k, 'sd', ARGV[1])
  end
  out[j] = {id, redis.call('HGETALL', k)}
end
return out
"""

# ARGV: now, then per completion: id, token, result ('' for none), has_result, want_job.
# Each outcome: {'ok', priority, cancel_requested} (+ the hash when wanted), or a refusal.
_COMPLETE: Final = r"""
local now = tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV, 5 do
  local id, token = ARGV[i], ARGV[i + 1]
  local k = jk(id)
  local refused = refuse(k, token)
  if refused then
    out[#out + 1] = refused
  else
    leave_running(id, k)
    move(id, k, redis.call('HGET', k, 'n'), 'RUNNING', 'COMPLETED')
    if ARGV[i + 3] == '1' then
      redis.call('HSET', k, 'f', ARGV[1], 'r', ARGV[i + 2])
    else
      redis.call('HSET', k, 'f', ARGV[1])
    end
    release_dependents(id, now)
    local v = redis.call('HMGET', k, 'p', 'cr')
    if ARGV[i + 4] == '1' then
      out[#out + 1] = {'ok', v[1], v[2] or '0', redis.call('HGETALL', k)}
    else
      out[#out + 1] = {'ok', v[1], v[2] or '0'}
    end
  end
end
return out
"""

# ARGV: now, id, token, action, then per action:
#   fail:    error, retry_at, retry_at's sort hex, traceback ('' = none)
#   bury:    error, traceback ('' = none), dlq_max ('' = none); with KEYS[2], the
#            dead-letter queue: the dead letter goes there (see put_dead_letter)
#   release: (nothing)
#   extend:  lease_until
#   undecodable: error (a claim's fenced bury of a job it cannot decode)
_LEASED: Final = r"""
local now = tonumber(ARGV[1])
local id, token, action = ARGV[2], ARGV[3], ARGV[4]
local k = jk(id)
local refused = refuse(k, token)
if refused then return refused end
if action == 'bury' and KEYS[2] then
  refused = check_letter(KEYS[2], id)
  if refused then return refused end
end
if action == 'extend' then
  redis.call('HSET', k, 'lu', ARGV[5])
  redis.call('ZADD', LEASES, ARGV[5], id)
  return {'ok'}
end
leave_running(id, k)
local n = redis.call('HGET', k, 'n')
if action == 'fail' then
  local v = redis.call('HMGET', k, 'sk', 'p')
  local sk = ARGV[7] .. string.sub(v[1], 17)
  redis.call('HINCRBY', k, 'rc', 1)
  redis.call('HSET', k, 'e', ARGV[5], 'sa', ARGV[6], 'sk', sk, 'rk', mkrk(v[2], sk, n, id))
  redis.call('HSET', k, 'tb', ARGV[8])  -- '' when none: cleared, never a layout-1 leftover
  redis.call('HDEL', k, 'w')
  move(id, k, n, 'RUNNING', 'PENDING')
  schedule(id, now)
  wake(1)
elseif action == 'release' then
  redis.call('HDEL', k, 'w')
  move(id, k, n, 'RUNNING', 'PENDING')
  schedule(id, now)
  wake(1)
else  -- bury, undecodable
  redis.call('HSET', k, 'e', ARGV[5], 'f', ARGV[1])
  redis.call('HSET', k, 'tb', action == 'bury' and ARGV[6] or '')
  move(id, k, n, 'RUNNING', 'DEAD')
  fail_dependents(id, now)
  if action == 'bury' and KEYS[2] then
    local dropped = {}
    put_dead_letter(id, KEYS[2], tonumber(ARGV[7]), dropped)
    return {'ok', redis.call('HGETALL', k), dropped}
  end
end
return {'ok', redis.call('HGETALL', k)}
"""

# ARGV: now, max_lost, limit, dlq_max ('' = none); KEYS[2]: the dead-letter queue, if any.
# Returns {the ids given back, the dead letters dropped}.
_RECLAIM: Final = r"""
local now = tonumber(ARGV[1])
local max_lost = tonumber(ARGV[2])
local dropped = {}
local ids = redis.call('ZRANGEBYSCORE', LEASES, '-inf', '(' .. ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
if KEYS[2] then
  for _, id in ipairs(ids) do
    local refused = check_letter(KEYS[2], id)
    if refused then return refused end
  end
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
        if KEYS[2] then put_dead_letter(id, KEYS[2], tonumber(ARGV[4]), dropped) end
      else
        to_status(id, k, 'RUNNING', 'PENDING', now)
      end
    end
    done[#done + 1] = id
  else
    redis.call('ZREM', LEASES, id)
  end
end
return {done, dropped}
"""

# ARGV: now, action, id, (value). Management transitions; a refusal is a status word.
# retry: with KEYS[2] (the dead-letter queue), the job's dead letter is taken back out,
# and put back here first when this queue no longer holds the job.
_MANAGE: Final = r"""
local now = tonumber(ARGV[1])
local action, id = ARGV[2], ARGV[3]
local k = jk(id)
if action == 'retry' and KEYS[2] then
  local refused = check_letter(KEYS[2], id) or restore(id, KEYS[2])
  if refused then return refused end
end
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
  redis.call('HSET', k, 'tb', '')
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
    redis.call('HSET', rk_, 'tb', '')
    to_status(rid, rk_, w[1], 'PENDING', now)
  end
  if KEYS[2] then take_back(id, KEYS[2]) end
  return {'ok', reopened}
elseif action == 'delete' then
  if s == 'RUNNING' then return {'state', s} end
  -- A deleted dependency can never complete: its waiting dependents fail.
  forget(id, k, s)
  return {'ok'}
end
return redis.error_reply('unknown action ' .. action)
"""

# ARGV: index key suffix ('all', 'st:S' or 'ty:T'), job type filter ('' = none), after
# (a job id, '#<arrival number>', or '' for none), newest ('1'/'0'), offset, limit.
# Returns {'missing'} for an unknown after id, else {'ok', {id, hash, arrival}...}.
# Reads only.
_LIST: Final = r"""
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

#: Script name -> Lua source.
SCRIPTS: Final = {
    "enqueue": _COMMON + _ENQUEUE,
    "claim": _COMMON + _CLAIM,
    "complete": _COMMON + _COMPLETE,
    "leased": _COMMON + _LEASED,
    "reclaim": _COMMON + _RECLAIM,
    "manage": _COMMON + _MANAGE,
    "list": _COMMON + _LIST,
}
