"""The Redis backend's Lua scripts: every state transition of a queue is one of them.

Each script is ``_COMMON`` (key names and the helpers that keep the indexes right)
followed by its body: the hot path's here (enqueue, claim, complete, leased calls), the
others' (reclaim, management, listing) in ``_redis_lua_admin``. ``KEYS[1]`` is the
queue's base key ``{prefix:queue}``; every key a script touches starts with it, so all
of a queue's keys share one hash tag (one Redis Cluster slot). Times and lease deadlines
come in ``ARGV`` from the client's clock as exact decimal text and are stored as given:
Lua turns a number into text with 14 significant digits, so a script never formats a
float itself. The one reading of the server's clock (``TIME``, in whole milliseconds) is
the lease deadline by the server's clock that claims and renewals also record (field
``ls``), for the reaper's liveness rule (see ``RECLAIM`` in ``_redis_lua_admin``).

The key layout (``B`` is the base key) is described in ``_redis_keys``. Scripts return
plain arrays: a job as ``{id, field, value, ...}`` (its hash), a refusal as a status
word the client turns into a typed error.
"""

from __future__ import annotations

from typing import Final

from typedq.backends._redis_lua_admin import LIST, MANAGE, RECLAIM

__all__ = ["SCRIPTS"]

_COMMON: Final = r"""
local B = KEYS[1]
local READY = B .. ':ready'
local DELAYED = B .. ':delayed'
local LEASES = B .. ':leases'
local COUNTS = B .. ':counts'
local ALL = B .. ':all'
local ALONE = B .. ':alone'
local WAKE = B .. ':wake'
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
local ls = mode == 'claim' and #members > 0 and server_deadline(now, ARGV[5])
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
    redis.call('HSET', k, 'w', ARGV[4], 'sd', ARGV[1], 'lu', ARGV[5], 'ls', ls)
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
#   fail:    error, retry_at, retry_at's sort hex, metadata frame ('' = unchanged), has_md
#   bury:    error, metadata frame, has_md
#   release: (nothing)
#   extend:  lease_until
#   undecodable: error (a claim's fenced bury of a job it cannot decode)
_LEASED: Final = r"""
local now = tonumber(ARGV[1])
local id, token, action = ARGV[2], ARGV[3], ARGV[4]
local k = jk(id)
local refused = refuse(k, token)
if refused then return refused end
if action == 'extend' then
  redis.call('HSET', k, 'lu', ARGV[5], 'ls', server_deadline(now, ARGV[5]))
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
  if ARGV[9] == '1' then redis.call('HSET', k, 'md', ARGV[8]) end
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
  if action == 'bury' and ARGV[7] == '1' then redis.call('HSET', k, 'md', ARGV[6]) end
  move(id, k, n, 'RUNNING', 'DEAD')
  fail_dependents(id, now)
end
return {'ok', redis.call('HGETALL', k)}
"""

#: Script name -> Lua source.
SCRIPTS: Final = {
    "enqueue": _COMMON + _ENQUEUE,
    "claim": _COMMON + _CLAIM,
    "complete": _COMMON + _COMPLETE,
    "leased": _COMMON + _LEASED,
    "reclaim": _COMMON + RECLAIM,
    "manage": _COMMON + MANAGE,
    "list": _COMMON + LIST,
}
