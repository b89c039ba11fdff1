"""The Redis backend's Lua scripts: every state transition of a queue is one of them.

Each script is its body after the helpers of ``_redis_lua_common.COMMON`` it uses (key
names and the helpers that keep the indexes right; see ``_redis_lua_common.script``).
``KEYS[1]`` is the queue's base key ``{prefix}:{queue}``; every key a script touches
starts with ``{prefix}``, the hash tag of every queue of the prefix (one Redis Cluster
slot), so a script may also touch another queue of the prefix (the dead-letter queue:
``KEYS[2]``). Times and lease deadlines come in ``ARGV`` from the client's clock as exact
decimal text and are stored as given: Lua turns a number into text with 14 significant
digits, so a script never formats a float itself. The one reading of the server's clock
(``TIME``, in whole milliseconds) is the lease deadline by the server's clock that claims
and renewals also record (field ``ls``), for the reaper's liveness rule (see ``_RECLAIM``).

The key layout (``B`` is the base key) is described in ``_redis_keys``. Scripts return
plain arrays: a job as ``{id, field, value, ...}`` (its hash), a refusal as a status
word the client turns into a typed error.
"""

from __future__ import annotations

import string
from typing import Final

from typedq.backends._redis_lua_common import script
from typedq.backends._redis_lua_unique import TAKE_UNIQUE as _TAKE_UNIQUE
from typedq.job import JobStatus

__all__ = ["PACKED", "SCRIPTS", "UNPACK"]

# ARGV: now, count, then per job (HashCodec.enqueue_args): id, type, status, where, its
# argument, the values of the fields p, ca, mr, q, pl and sk, the count of its other
# fields, those fields (name, value, ...); then the unique keys (see _unique): their
# count, then per key: the job's index in the batch, the key, the hold's end ('' for
# none) and the holder's states (comma-separated). 'where' is the index a job goes into
# beside its status's, as the client judged it from the job and now: 'r' the ready sets
# (a PENDING job ready now; the argument: its ready member's head, see mkrk), 'p' placed
# by place() (a PENDING job with dependencies, to be run alone or due later), 'l' the
# leases (a leased RUNNING job; the lease deadline), 'f' its status's finish times (an
# ended job; its finish time), '' none.
#
# $judge_placed, $take_unique and $place are the parts only jobs to place or unique keys
# need (see _enqueue). A job's arrival number and the ready sets' score go to the server
# as text: a Lua number given to redis.call is formatted anew (printf's %.17g) each time,
# about 0.3 us a job over the three uses and two scores.
_ENQUEUE: Final = r"""
local now = tonumber(ARGV[1])
local count = tonumber(ARGV[2])
local ids, at, keys = {}, {}, {}
local batch = {}
local i = 3
for j = 1, count do
  local id = ARGV[i]
  ids[j], at[j], keys[j] = id, i, jk(id)
  batch[id] = true
  i = i + 12 + tonumber(ARGV[i + 11])
end
-- Judge every job before writing anything: a batch is all-or-nothing. One EXISTS tells
-- whether any job's key is taken; only then is each one's type read, in batch order.
local taken = false
for lo = 1, count, 4000 do
  if redis.call('EXISTS', unpack(keys, lo, math.min(count, lo + 3999))) > 0 then taken = true end
end
for j = 1, count do
  if taken then
    local kind = redis.call('TYPE', keys[j])['ok']
    if kind == 'hash' then return {'duplicate', ids[j]} end
    if kind ~= 'none' then return {'wrongtype', keys[j], kind} end
  end
$judge_placed
end
$take_unique
local newtype = false
-- Index writes of the common jobs are gathered and made one command per key.
local b = gather(count)
local SUBMITTED = B .. ':submitted'
local first = redis.call('INCRBY', B .. ':seq', count) - count
local tkeys = {}  -- per job type: its type index and ready set keys
for j = 1, count do
  local a = at[j]
  local id, t, s, where, arg = ARGV[a], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
  local n = string.format('%d', first + j)  -- text: a number would be formatted per use
  local tk = tkeys[t]
  if not tk then
    tk = {tyk(t), rtk(t)}
    tkeys[t] = tk
    if redis.call('HEXISTS', SUBMITTED, t) == 0 then newtype = true end
  end
  redis.call(
    'HSET', keys[j], 't', t, 's', s, 'n', n, 'p', ARGV[a + 5], 'ca', ARGV[a + 6], 'mr', ARGV[a + 7],
    'q', ARGV[a + 8], 'pl', ARGV[a + 9], 'sk', ARGV[a + 10],
    unpack(ARGV, a + 12, a + 11 + tonumber(ARGV[a + 11]))
  )
  b.zadd(tk[1], n, id)
  b.incr(SUBMITTED, t, 1)
$place
    enter(b, id, t, n, s)
    if where == 'r' then
      local rk = arg .. string.format('%012x', n) .. id
      b.zadd(READY, '0', rk)
      b.zadd(tk[2], '0', rk)
      note(t, true)
    elseif where == 'l' then
      b.zadd(LEASES, arg, id)
    elseif where == 'f' then
      b.zadd(fnk(s), arg, id)
    end
  end
end
b.flush()
for _, u in ipairs(uniques) do redis.call('HSET', B .. ':unique', u[1], u[2]) end
wake()
-- A waiter for any job type watches the wake lists of the types it knows of, and this
-- list for new ones (see _redis_wait).
if newtype and redis.call('LPUSH', WAKE, '1') > 128 then redis.call('LTRIM', WAKE, 0, 63) end
return count
"""


# One job with nothing to place and no unique key ('enqueue_one': what enqueue() sends
# most), ARGV as _ENQUEUE's for a batch of one. The same writes as _ENQUEUE's for the job,
# in a straight line and on its own, without COMMON's helpers: defining them (key
# builders, the writers, wake, enter) took a fifth of the call's time on the server,
# more than a single job's index writes. test_redis checks that both scripts leave the
# same keys with the same contents for every kind of job.
_ENQUEUE_ONE: Final = r"""
local B = KEYS[1]
local id, t, s, where, arg = ARGV[3], ARGV[4], ARGV[5], ARGV[6], ARGV[7]
local k = B .. ':j:' .. id
if redis.call('EXISTS', k) > 0 then
  local kind = redis.call('TYPE', k)['ok']
  if kind == 'hash' then return {'duplicate', id} end
  return {'wrongtype', k, kind}
end
if where == 'p' then
  return redis.error_reply('job ' .. id .. ' is to be placed: not for enqueue_one')
end
local n = string.format('%d', redis.call('INCR', B .. ':seq'))
redis.call(
  'HSET', k, 't', t, 's', s, 'n', n, 'p', ARGV[8], 'ca', ARGV[9], 'mr', ARGV[10],
  'q', ARGV[11], 'pl', ARGV[12], 'sk', ARGV[13], unpack(ARGV, 15, 14 + tonumber(ARGV[14]))
)
redis.call('ZADD', B .. ':ty:' .. t, n, id)
local newtype = redis.call('HINCRBY', B .. ':submitted', t, 1) == 1
redis.call('ZADD', B .. ':st:' .. s, n, id)
if s == 'RUNNING' then redis.call('HINCRBY', B .. ':running', t, 1) end
if where == 'r' then
  local rk = arg .. string.format('%012x', n) .. id
  redis.call('ZADD', B .. ':ready', '0', rk)
  redis.call('ZADD', B .. ':rt:' .. t, '0', rk)
elseif where == 'l' then
  redis.call('ZADD', B .. ':leases', arg, id)
elseif where == 'f' then
  redis.call('ZADD', B .. ':fin:' .. s, arg, id)
end
if s == 'PENDING' then  -- ready ('r'): a job to place never comes here
  local wk = B .. ':wake:' .. t
  if redis.call('LPUSH', wk, 'r') > 128 then redis.call('LTRIM', wk, 0, 63) end
end
if newtype and redis.call('LPUSH', B .. ':wake', '1') > 128 then redis.call('LTRIM', B .. ':wake', 0, 63) end
return 1
"""


#: The parts of the enqueue script for any batch ('enqueue').
_PLACING: Final = {
    "judge_placed": r"""  local a = at[j]
  if ARGV[a + 3] == 'p' then
    for f = a + 12, a + 11 + tonumber(ARGV[a + 11]), 2 do
      if ARGV[f] == 'd' then
        for _, dep in ipairs(cjson.decode(ARGV[f + 1])) do
          if not batch[dep] and redis.call('EXISTS', jk(dep)) == 0 then
            return {'unknown', ids[j], dep}
          end
        end
      end
    end
  end""",
    "take_unique": r"""local uniques = take_unique(ids, i, now)
if uniques[1] == 'unique' then return uniques end""",
    "place": r"""  if where == 'p' then
    -- placing may fail the job at once: its status index is written now
    enter(W, id, t, n, s)
    place(id, now)
  else""",
}
#: The same parts for a batch with no job to place and no unique key ('enqueue_direct').
_DIRECT: Final = {
    "judge_placed": r"""  if ARGV[at[j] + 3] == 'p' then
    return redis.error_reply('job ' .. ids[j] .. ' is to be placed: not for enqueue_direct')
  end""",
    "take_unique": "local uniques = {}",
    "place": "  do",
}


def _enqueue(*, placing: bool) -> str:
    """The enqueue script's body: with ``placing``, for any batch; without, for a batch
    with no job to place and no unique key ('enqueue_direct'), which then leaves out the
    helpers of placing and unique keys (defining them costs every call; a job to place is
    refused before anything is written)."""
    return string.Template(_ENQUEUE).substitute(_PLACING if placing else _DIRECT)


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
local lease = mode == 'claim' and #members > 0 and {ARGV[4], ARGV[5], server_deadline(now, ARGV[5])}
local b = gather(#members)
for j, m in ipairs(members) do out[j] = claim_one(b, m, lease, cg) end
b.flush()
for j, id in ipairs(out) do out[j] = {id, redis.call('HGETALL', jk(id))} end
return out
"""

# ARGV: now, then per completion: id, token, result ('' for none), has_result, want_job.
# Each outcome: {'ok', priority, cancel_requested} (+ the hash when wanted), or a refusal.
_COMPLETE: Final = r"""
local now = tonumber(ARGV[1])
local out = {}
local b = gather((#ARGV - 1) / 5)
for i = 2, #ARGV, 5 do
  local id, token = ARGV[i], ARGV[i + 1]
  local k = jk(id)
  local v = redis.call('HMGET', k, 's', 'a', 'n', 't', 'cg', 'p', 'cr')
  if not v[1] then
    out[#out + 1] = {'missing'}
  elseif v[1] ~= 'RUNNING' or v[2] ~= token then
    out[#out + 1] = {'stale', v[1], v[2] or '0'}
  else
    leave_running(id, k, b, v[5])
    restatus(b, id, k, v[3], 'RUNNING', 'COMPLETED', v[4])
    if ARGV[i + 3] == '1' then
      redis.call('HSET', k, 's', 'COMPLETED', 'f', ARGV[1], 'r', ARGV[i + 2])
    else
      redis.call('HSET', k, 's', 'COMPLETED', 'f', ARGV[1])
    end
    release_dependents(id, now)
    if ARGV[i + 4] == '1' then
      out[#out + 1] = {'ok', v[6], v[7] or '0', redis.call('HGETALL', k)}
    else
      out[#out + 1] = {'ok', v[6], v[7] or '0'}
    end
  end
end
b.flush()
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
  redis.call('HSET', k, 'lu', ARGV[5], 'ls', server_deadline(now, ARGV[5]))
  redis.call('ZADD', LEASES, ARGV[5], id)
  return {'ok'}
end
leave_running(id, k)
local n = redis.call('HGET', k, 'n')
if action == 'fail' then
  local sk = ARGV[7] .. string.sub(redis.call('HGET', k, 'sk'), 17)
  redis.call('HINCRBY', k, 'rc', 1)
  redis.call('HSET', k, 'e', ARGV[5], 'sa', ARGV[6], 'sk', sk)
  redis.call('HSET', k, 'tb', ARGV[8])  -- '' when none: cleared, never a layout-1 leftover
  redis.call('HDEL', k, 'w')
  move(id, k, n, 'RUNNING', 'PENDING')
  schedule(id, now)
  wake()
elseif action == 'release' then
  redis.call('HDEL', k, 'w')
  move(id, k, n, 'RUNNING', 'PENDING')
  schedule(id, now)
  wake()
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
#
# A lease expired by the caller's clock is kept while its owner is live (its registry
# heartbeat, ``B:alive:<worker>``, has not expired by the server's clock) and the lease
# has not expired by the server's clock either (``ls``): a reaper whose clock runs ahead
# rescues nothing from a live worker, and a live worker that stopped renewing a lease
# loses it. A lease expired by the server's clock is rescued even while the caller's
# clock says it holds: a client clock behind the others' (or stepped back) does not keep
# a dead worker's job. This second pass reads every lease not yet expired by the
# caller's clock (one HGET each): the RUNNING jobs, bounded by the workers' concurrency.
# A job claimed before ``ls`` existed goes by the caller's clock alone.
_RECLAIM: Final = r"""
local now = tonumber(ARGV[1])
local max_lost = tonumber(ARGV[2])
local dropped = {}
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
-- Leases not yet expired by the caller's clock whose deadline by the server's clock
-- passed: the job of a worker whose clock ran ahead, or seen by a reaper whose clock
-- stepped back, is rescued all the same (its owner renews nothing any more).
offset = 0
while #ids < limit do
  local page = redis.call('ZRANGEBYSCORE', LEASES, ARGV[1], '+inf', 'LIMIT', offset, limit)
  for _, id in ipairs(page) do
    local ls = redis.call('HGET', jk(id), 'ls')
    if ls and #ids < limit then
      snow = snow or server_ms()
      if tonumber(ls) <= snow then ids[#ids + 1] = id end
    end
  end
  if #page < limit then break end
  offset = offset + #page
end
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
  if ENDED[ARGV[4]] and s ~= ARGV[4] then
    -- A job that ends so keeps the finish time it had, or gets now.
    local f = redis.call('HGET', k, 'f')
    if f then redis.call('ZADD', fnk(ARGV[4]), f, id) else redis.call('HSET', k, 'f', ARGV[1]) end
  end
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
  local w = redis.call('HMGET', k, 'p', 'sk', 't')
  if w[1] == ARGV[4] then return {'ok'} end
  local old, rk = mkrk(w[1], w[2], v[2], id), mkrk(ARGV[4], w[2], v[2], id)
  redis.call('HSET', k, 'p', ARGV[4])
  if redis.call('ZREM', READY, old) == 1 then
    redis.call('ZREM', rtk(w[3]), old)
    redis.call('ZADD', READY, 0, rk)
    redis.call('ZADD', rtk(w[3]), 0, rk)
  end
  return {'ok'}
elseif action == 'replay' then
  if s ~= 'DEAD' then return {'state', s} end
  local sk = string.rep('0', 16) .. string.sub(redis.call('HGET', k, 'sk'), 17)
  redis.call('HSET', k, 'rc', 0, 'lc', 0, 'sk', sk)
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
    local w = redis.call('HMGET', rk_, 's', 'sk')
    local sk = string.rep('0', 16) .. string.sub(w[2], 17)
    redis.call('HSET', rk_, 'rc', 0, 'lc', 0, 'sk', sk)
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
# 'all' (every job) is the status indexes merged by arrival: each gives its first
# offset + limit. Reads only.
_LIST: Final = "local STATUSES = {" + ", ".join(f"'{s.value}'" for s in JobStatus) + "}\n" + r"""
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
if ARGV[1] == 'all' then
  local got = {}
  for _, s in ipairs(STATUSES) do
    index = stk(s)
    local part = page(0, offset + limit)
    for i = 1, #part, 2 do got[#got + 1] = {part[i], tonumber(part[i + 1]), part[i + 1]} end
  end
  table.sort(got, function(a, b)
    if newest then return a[2] > b[2] end
    return a[2] < b[2]
  end)
  for i = offset + 1, math.min(#got, offset + limit) do
    out[#out + 1] = {got[i][1], redis.call('HGETALL', jk(got[i][1])), got[i][3]}
  end
  return out
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

# ARGV: now, older_than, limit, then the statuses. Deletes up to limit jobs of those
# statuses that finished before older_than, oldest first (as delete does); returns how
# many.
_PURGE: Final = r"""
local left = tonumber(ARGV[3])
local purged = 0
for i = 4, #ARGV do
  if left <= 0 then break end
  local s = ARGV[i]
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', fnk(s), '-inf', '(' .. ARGV[2], 'LIMIT', 0, left)) do
    local k = jk(id)
    if redis.call('HGET', k, 's') == s then
      forget(id, k, s)
      purged = purged + 1
      left = left - 1
    else
      redis.call('ZREM', fnk(s), id)  -- not in that status any more: a stale entry
    end
  end
end
return purged
"""

# ARGV: now, any ('1': a waiter for any job type, '0': for the types that follow), then
# the job types. The check of a waiter about to block, or woken by a token that was not
# a ready job's (see _redis_wait): the jobs of those types ready now (their ready sets,
# and the delayed jobs due, which a claim promotes), the next due time (false for none),
# and for a waiter for any type, the types it is to watch (every type ever added). Each
# type with no job ready has its ready jobs' wake tokens dropped: each stands for a job
# claimed since (a token is left when no waiter was blocked), and would end a later wait
# as 'a job was made ready' with none there. The other tokens stay: one may tell a
# waiter that has not yet blocked of a new, earlier due time.
_IDLE: Final = r"""
local types = {}
if ARGV[2] == '1' then
  types = redis.call('HKEYS', B .. ':submitted')
else
  for i = 3, #ARGV do types[#types + 1] = ARGV[i] end
end
local ready = redis.call('ZCOUNT', DELAYED, '-inf', ARGV[1])
for _, t in ipairs(types) do
  local n = redis.call('ZCARD', rtk(t))
  if n == 0 then redis.call('LREM', B .. ':wake:' .. t, 0, 'r') end
  ready = ready + n
end
local head = redis.call('ZRANGE', DELAYED, 0, 0, 'WITHSCORES')
return {ready, head[2] or false, ARGV[2] == '1' and types or {}}
"""

#: The first lines of a script that takes its arguments packed (``_redis_conn.pack_args``):
#: one MessagePack array in ARGV[1] becomes ARGV (a local, which the helpers after it
#: see), or the arguments came one by one (a batch too big to pack; such a script always
#: takes more than one).
UNPACK: Final = "local ARGV = ARGV\nif #ARGV == 1 then ARGV = cmsgpack.unpack(ARGV[1]) end\n"

#: The scripts that take their arguments packed: those of many arguments (a job's dozen,
#: a batch's thousands).
PACKED: Final = frozenset({"enqueue", "enqueue_direct", "enqueue_one", "complete"})

#: Script name -> Lua source.
SCRIPTS: Final = {
    "enqueue": UNPACK + script(_TAKE_UNIQUE + _enqueue(placing=True)),
    "enqueue_direct": UNPACK + script(_enqueue(placing=False)),
    "enqueue_one": UNPACK + _ENQUEUE_ONE,
    "claim": script(_CLAIM),
    "complete": UNPACK + script(_COMPLETE),
    "leased": script(_LEASED),
    "reclaim": script(_RECLAIM),
    "manage": script(_MANAGE),
    "purge": script(_PURGE),
    "list": script(_LIST),
    "idle": script(_IDLE),
}
