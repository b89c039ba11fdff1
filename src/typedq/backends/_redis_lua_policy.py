"""The Redis backend's claim under a :class:`~typedq.policy.ClaimPolicy`, one Lua script.

The plain claim (``_redis_lua._CLAIM``) stays the strict-priority fast path; a queue with
a policy claims with ``claim_policy`` instead, which decides and claims in one atomic
step (the same moves as the plain claim for each job it takes):

* limits: the queue's RUNNING count is the size of ``B:st:RUNNING`` and a job type's is
  its field of ``B:running``, both O(1), whoever claimed the jobs. A rate's recent
  claim times are the list ``B:lim:rl:<key>``, newest first (key ``""`` for the queue's
  rate, else the job type; trimmed to the rate's count once it holds 64 more): a claim
  is allowed when the list's N-th time (N the rate's count) is missing or older than
  the rate's period, one ``LINDEX``;
* each level's next job is the first member of its band of ``B:ready`` (or of each
  ``B:rt:<type>`` a worker asks for): ready members start with ``10 - priority`` as one
  hex digit, so a level is a ``ZRANGEBYLEX`` range, O(log n);
* the fairness virtual times are the hash ``B:lim:fair`` (fields 0-4 per level, 5 the
  queue's), and the choice is ``typedq.policy.pick_level``'s, written again in Lua; without
  ``max_wait_s`` the levels are tried in the order of their virtual start times, so a
  claim reads the heads of the first level that has a job only.

Each job it takes goes into RUNNING as the plain claim takes it (``claim_one``).

A claim for any job type (no types given) that must skip job types held back by a limit
walks a level's band at most :data:`SCAN_MAX` members deep; workers always give the types
they handle, which needs no walk.
"""

from __future__ import annotations

from typing import Final

from typedq.backends._redis_lua_common import script

__all__ = ["POLICY_SCRIPTS", "SCAN_MAX"]

#: The deepest a claim for any job type walks a level past jobs a limit holds back.
SCAN_MAX: Final = 1000

# KEYS[1]: the queue's base key.
# ARGV: now, limit, worker, lease_until, policy as JSON (ClaimPolicy.to_wire), ntypes, types...,
# then per level the sort hex of (now - max_wait_s) ('' for a level without a bound): a head
# whose due time sorts before it is overdue, told by comparing bytes, not reading the job.
_CLAIM_POLICY: Final = r"""
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local P = cjson.decode(ARGV[5])
local ntypes = tonumber(ARGV[6])
promote(now)
if redis.call('SCARD', ALONE) > 0 then limit = 1 end
local LIM = B .. ':lim:'
local UNSCHEDULED = string.rep('0', 16)

-- Limits: RUNNING counts and rate windows.
local running = 0
if P.mc > 0 then running = redis.call('ZCARD', stk('RUNNING')) end
local limited = {}
for t, l in pairs(P.l) do
  if l.mc > 0 then limited[#limited + 1] = t end
end
local by_type = running_by_type(limited)
-- A rate's window: its list of claim times, newest first, and the claims this call made.
local windows = {}
local function window(key, rate)
  windows[key] = {h = LIM .. 'rl:' .. key, taken = 0, n = rate[1], p = rate[2]}
end
if P.r ~= 0 then window('', P.r) end
for t, l in pairs(P.l) do
  if l.r ~= 0 then window(t, l.r) end
end
local function allows(w)
  if w.taken >= w.n then return false end
  local oldest = redis.call('LINDEX', w.h, w.n - 1 - w.taken)
  return (not oldest) or tonumber(oldest) <= now - w.p
end
local function take(w) w.taken = w.taken + 1 end

-- Fairness state.
local fair = nil
if P.f == 1 then
  fair = {0, 0, 0, 0, 0, 0}
  local v = redis.call('HMGET', LIM .. 'fair', '0', '1', '2', '3', '4', '5')
  for i = 1, 6 do if v[i] then fair[i] = tonumber(v[i]) end end
end
local aging = false
for i = 1, 5 do if P.mw[i] >= 0 then aging = true end end
local by_level = P.f == 1 or aging

local types = {}
for t = 7, 6 + ntypes do types[#types + 1] = ARGV[t] end

-- The first member of [lo, hi) of one ready set whose job type is not held back.
local function first_in(key, lo, hi, blocked, walk)
  if not walk then
    local got = redis.call('ZRANGEBYLEX', key, lo, hi, 'LIMIT', 0, 1)
    return got[1]
  end
  local offset = 0
  while offset < SCAN_MAX do
    local got = redis.call('ZRANGEBYLEX', key, lo, hi, 'LIMIT', offset, 100)
    if #got == 0 then return nil end
    for _, m in ipairs(got) do
      local t = redis.call('HGET', jk(string.sub(m, PREFIX_LEN + 1)), 't')
      if not blocked[t] then return m end
    end
    offset = offset + #got
  end
  return nil
end

-- The best member of [lo, hi) over the sets a claim may take from.
local function head(lo, hi, blocked, any_blocked)
  if ntypes == 0 then return first_in(READY, lo, hi, blocked, any_blocked) end
  local best = nil
  for _, t in ipairs(types) do
    if not blocked[t] then
      local m = first_in(rtk(t), lo, hi, blocked, false)
      if m and (not best or string.sub(m, 1, PREFIX_LEN) < string.sub(best, 1, PREFIX_LEN)) then best = m end
    end
  end
  return best
end

local function level_head(level, blocked, any_blocked)
  local lo, hi = '[' .. string.format('%x', 2 * level), '(' .. string.format('%x', 2 * level + 2)
  return head(lo, hi, blocked, any_blocked)
end

-- Level i (1-5) is chosen: its virtual time moves on.
local function charge(i)
  local start = math.max(fair[i], fair[6])
  fair[i] = start + 1.0 / P.w[i]
  fair[6] = start
end

local function choose(blocked, any_blocked)
  if not by_level then return head('-', '+', blocked, any_blocked) end
  if not aging then  -- fairness alone: the level of the earliest start that has a job
    local vt = fair[6]
    local order = {1, 2, 3, 4, 5}
    table.sort(order, function(a, b)
      local sa, sb = math.max(fair[a], vt), math.max(fair[b], vt)
      if sa ~= sb then return sa < sb end
      return a < b
    end)
    for _, i in ipairs(order) do
      local m = level_head(i - 1, blocked, any_blocked)
      if m then
        charge(i)
        return m
      end
    end
    return nil
  end
  local members, heads = {}, {}
  for level = 0, 4 do
    local m = level_head(level, blocked, any_blocked)
    members[level + 1] = m
    local limit_hex = ARGV[7 + ntypes + level]
    if m and limit_hex ~= '' then
      local since_hex = string.sub(m, 2, 17)
      if since_hex == UNSCHEDULED then since_hex = string.sub(m, 18, 33) end
      if since_hex < limit_hex then  -- overdue: read its due time to rank it
        local v = redis.call('HMGET', jk(string.sub(m, PREFIX_LEN + 1)), 'sa', 'ca')
        heads[level + 1] = tonumber(v[1] or v[2])
      end
    end
  end
  local chosen, overdue = nil, nil
  for i = 1, 5 do
    local since, bound = heads[i], P.mw[i]
    if since and (not overdue or now - since - bound > overdue) then
      chosen, overdue = i, now - since - bound
    end
  end
  if not fair then
    if not chosen then
      for i = 1, 5 do if members[i] then chosen = i break end end
    end
    return chosen and members[chosen]
  end
  local vt = fair[6]
  if not chosen then
    local best = nil
    for i = 1, 5 do
      if members[i] then
        local start = math.max(fair[i], vt)
        if not best or start < best then chosen, best = i, start end
      end
    end
    if not chosen then return nil end
  end
  charge(chosen)
  return members[chosen]
end

local claimed = {}
local lease = false
while #claimed < limit do
  if P.mc > 0 and running >= P.mc then break end
  if windows[''] and not allows(windows['']) then break end
  local blocked, any_blocked = {}, false
  for t, l in pairs(P.l) do
    if (l.mc > 0 and by_type[t] >= l.mc) or (windows[t] and not allows(windows[t])) then
      blocked[t] = true
      any_blocked = true
    end
  end
  local m = choose(blocked, any_blocked)
  if not m then break end
  lease = lease or {ARGV[3], ARGV[4], server_deadline(now, ARGV[4])}
  -- W: the next choice reads the ready sets this claim takes m out of
  local id, t = claim_one(W, m, lease, false)
  claimed[#claimed + 1] = id
  running = running + 1
  if by_type[t] then by_type[t] = by_type[t] + 1 end
  if windows[''] then take(windows['']) end
  if windows[t] then take(windows[t]) end
end
for _, w in pairs(windows) do
  if w.taken > 0 then
    local times = {}
    for i = 1, w.taken do times[i] = ARGV[1] end
    if redis.call('LPUSH', w.h, unpack(times)) > w.n + 64 then redis.call('LTRIM', w.h, 0, w.n - 1) end
  end
end
if fair then
  redis.call('HSET', LIM .. 'fair', '0', fair[1], '1', fair[2], '2', fair[3], '3', fair[4], '4', fair[5],
    '5', fair[6])
end
if #claimed > 1 then
  local cg = redis.call('INCR', B .. ':cgseq')
  for _, id in ipairs(claimed) do
    redis.call('HSET', jk(id), 'cg', cg)
    redis.call('SADD', cgk(cg), id)
  end
end
local out = {}
for j, id in ipairs(claimed) do out[j] = {id, redis.call('HGETALL', jk(id))} end
return out
"""

# KEYS[1]: the queue's base key. ARGV: now. Ready jobs per level, CRITICAL first.
_BY_LEVEL: Final = r"""
promote(tonumber(ARGV[1]))
local out = {}
for level = 0, 4 do
  out[level + 1] = redis.call('ZLEXCOUNT', READY, '[' .. string.format('%x', 2 * level),
    '(' .. string.format('%x', 2 * level + 2))
end
return out
"""

#: Script name -> Lua source, registered with the queue's own.
POLICY_SCRIPTS: Final = {
    "claim_policy": script(f"local SCAN_MAX = {SCAN_MAX}\n" + _CLAIM_POLICY),
    "by_level": script(_BY_LEVEL),
}
