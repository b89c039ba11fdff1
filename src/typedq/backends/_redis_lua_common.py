"""The helpers every Lua script of the Redis backend is built on (``COMMON``, ``script``).

They name a queue's keys (``use(base)`` switches them to another queue of the prefix, the
dead-letter queue), keep the status, running, ready, delayed, lease, finish-time and
dependency indexes right as a job moves, take a ready job into RUNNING (``claim_one``,
shared by the plain and the policy claim), and put dead letters into, and take them back
out of, a dead-letter queue. The key layout is described in ``_redis_keys``.

Index writes go through a writer: ``W`` writes at once; ``gather(n)`` gathers a script's
writes and makes them one command per key (and one ``HINCRBY`` per counter field) at its
``flush()``, so a batch of jobs costs a few commands more than one job. A batch only
gathers writes the script does not read back before it flushes, and never removes a
member it added.

:func:`script` builds a script from its body and only the helpers it uses: every helper
a script defines costs the server time on every call, used or not.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["COMMON", "script"]

#: The helpers; a script gets the ones its body uses (see :func:`script`).
COMMON: Final = r"""
-- The keys of the queue the helpers work on: the script's queue (KEYS[1]) unless use()
-- switches them to another queue of the prefix (the dead-letter queue, KEYS[2]).
local B, READY, DELAYED, LEASES, ALONE, WAKE, RUNS
local function use(base)
  B = base
  READY = B .. ':ready'
  DELAYED = B .. ':delayed'
  LEASES = B .. ':leases'
  ALONE = B .. ':alone'
  WAKE = B .. ':wake'
  RUNS = B .. ':running'
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

-- The ready member: it sorts as jobs are claimed (see _redis_keys.sort_hex). Made from
-- the job's fields when needed, never stored (a job hash stays small).
local function mkrk(p, sk, n, id)
  return string.format('%x', 10 - tonumber(p)) .. sk .. string.format('%012x', tonumber(n)) .. id
end

-- Index writes made at once (flush: nothing left to write).
local W = {
  zadd = function(key, score, member) redis.call('ZADD', key, score, member) end,
  zrem = function(key, member) redis.call('ZREM', key, member) end,
  sadd = function(key, member) redis.call('SADD', key, member) end,
  srem = function(key, member) redis.call('SREM', key, member) end,
  incr = function(key, field, by) redis.call('HINCRBY', key, field, by) end,
  flush = function() end,
}

-- Index writes gathered: one command per key and command (4000 arguments at most), and
-- one HINCRBY per counter field, at flush(); for one job (n < 2), W: gathering one job's
-- writes would cost more than it saves.
local function gather(n)
  if n < 2 then return W end
  -- lists by command, then key (no command .. key string made per write)
  local lists, order, incrs = {ZADD = {}, ZREM = {}, SADD = {}, SREM = {}}, {}, {}
  local function list(cmd, key)
    local l = lists[cmd][key]
    if not l then
      l = {cmd, key}
      lists[cmd][key] = l
      order[#order + 1] = l
    end
    return l
  end
  local b = {}
  function b.zadd(key, score, member)
    local l = list('ZADD', key)
    l[#l + 1] = score
    l[#l + 1] = member
  end
  function b.zrem(key, member) local l = list('ZREM', key); l[#l + 1] = member end
  function b.sadd(key, member) local l = list('SADD', key); l[#l + 1] = member end
  function b.srem(key, member) local l = list('SREM', key); l[#l + 1] = member end
  function b.incr(key, field, by)
    local f = incrs[key]
    if not f then
      f = {}
      incrs[key] = f
    end
    f[field] = (f[field] or 0) + by
  end
  function b.flush()
    for _, l in ipairs(order) do
      for lo = 3, #l, 4000 do redis.call(l[1], l[2], unpack(l, lo, math.min(#l, lo + 3999))) end
    end
    for key, f in pairs(incrs) do
      for field, by in pairs(f) do
        if by ~= 0 then redis.call('HINCRBY', key, field, by) end
      end
    end
  end
  return b
end

-- Wake tokens (see _redis_wait), gathered per job type's wake list: key -> token, 'r'
-- while every job noted for it was made ready (else '1': the waiter asks), and how many.
local WOKE, WOKE_N = {}, {}
local function note(t, ready)
  local key = B .. ':wake:' .. t
  WOKE_N[key] = (WOKE_N[key] or 0) + 1
  WOKE[key] = (ready and WOKE[key] ~= '1') and 'r' or '1'
end
-- Push the tokens noted: at most 16 a list, each list trimmed back to 64 once past 128
-- (one LTRIM every 64 pushes, not one a push).
local function wake()
  for key, token in pairs(WOKE) do
    local tokens = {}
    for i = 1, math.min(WOKE_N[key], 16) do tokens[i] = token end
    if redis.call('LPUSH', key, unpack(tokens)) > 128 then redis.call('LTRIM', key, 0, 63) end
  end
  WOKE, WOKE_N = {}, {}
end

-- A job of type t and arrival n enters status s, or leaves it: its status index (the
-- counts are the indexes' sizes), and for RUNNING its type's count in B:running.
local function enter(w, id, t, n, s)
  w.zadd(stk(s), n, id)
  if s == 'RUNNING' then w.incr(RUNS, t, 1) end
end
local function leave(w, id, t, s)
  w.zrem(stk(s), id)
  if s == 'RUNNING' then w.incr(RUNS, t, -1) end
  if ENDED[s] then w.zrem(fnk(s), id) end
end

-- The indexes of a status change; a job that ends is indexed by finish time: now, the
-- finish time every transition that ends a job writes ('f'). t: the job type (read only
-- when RUNNING is one of the statuses and t is not given).
local function restatus(w, id, k, n, old, new, t)
  if not t and (old == 'RUNNING' or new == 'RUNNING') then t = redis.call('HGET', k, 't') end
  leave(w, id, t, old)
  enter(w, id, t, n, new)
  if ENDED[new] then w.zadd(fnk(new), ARGV[1], id) end
end

-- Status bookkeeping: the hash and the indexes.
local function move(id, k, n, old, new)
  redis.call('HSET', k, 's', new)
  restatus(W, id, k, n, old, new)
end

-- RUNNING jobs of each of the types (B:running, field '' marking it complete; a queue
-- written before it existed gets it rebuilt from the RUNNING index once).
local function running_by_type(types)
  local out = {}
  if #types == 0 then return out end
  if redis.call('HEXISTS', RUNS, '') == 0 then
    redis.call('DEL', RUNS)
    for _, id in ipairs(redis.call('ZRANGE', stk('RUNNING'), 0, -1)) do
      local t = redis.call('HGET', jk(id), 't')
      if t then redis.call('HINCRBY', RUNS, t, 1) end
    end
    redis.call('HSET', RUNS, '', '1')
  end
  local got = redis.call('HMGET', RUNS, unpack(types))
  for i, t in ipairs(types) do out[t] = tonumber(got[i] or '0') end
  return out
end

-- Take the ready member m into RUNNING, an attempt more: leased (lease: {worker, lease
-- deadline, the same by the server's clock}, claim group cg or false) or, without a
-- lease, dequeued. The ready sets lose m through w. Returns the job id and type.
local function claim_one(w, m, lease, cg)
  local id = string.sub(m, PREFIX_LEN + 1)
  local k = jk(id)
  local v = redis.call('HMGET', k, 't', 'n', 'ra', 'a')
  w.zrem(READY, m)
  w.zrem(rtk(v[1]), m)
  if v[3] then
    redis.call('HDEL', k, 'ra')
    redis.call('SREM', ALONE, id)
  end
  restatus(w, id, k, v[2], 'PENDING', 'RUNNING', v[1])
  local a = (v[4] and tonumber(v[4]) or 0) + 1
  if not lease then
    redis.call('HSET', k, 's', 'RUNNING', 'a', a, 'sd', ARGV[1])
  else
    local w_, lu, ls = lease[1], lease[2], lease[3]
    if cg then
      redis.call('HSET', k, 's', 'RUNNING', 'a', a, 'sd', ARGV[1], 'w', w_, 'lu', lu, 'ls', ls, 'cg', cg)
      w.sadd(cgk(cg), id)
    else
      redis.call('HSET', k, 's', 'RUNNING', 'a', a, 'sd', ARGV[1], 'w', w_, 'lu', lu, 'ls', ls)
    end
  end
  if lease then w.zadd(LEASES, lease[2], id) end
  return id, v[1]
end
-- An unblocked PENDING job goes to the delayed set or the ready sets (its wake token noted).
local function schedule(id, now)
  local k = jk(id)
  local v = redis.call('HMGET', k, 'sa', 't', 'ra', 'p', 'sk', 'n')
  if v[1] and tonumber(v[1]) > now then
    redis.call('ZADD', DELAYED, v[1], id)
    note(v[2], false)
  else
    local rk = mkrk(v[4], v[5], v[6], id)
    redis.call('ZADD', READY, 0, rk)
    redis.call('ZADD', rtk(v[2]), 0, rk)
    note(v[2], true)
  end
  if v[3] then redis.call('SADD', ALONE, id) end
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
  wake()
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
  local v = redis.call('HMGET', k, 'p', 'sk', 'n', 't', 'bb')
  local rk = mkrk(v[1], v[2], v[3], id)
  if redis.call('ZREM', READY, rk) == 1 then
    redis.call('ZREM', rtk(v[4]), rk)
  elseif redis.call('ZREM', DELAYED, id) == 0 and v[5] then
    drop_edges(id, k)
  end
  redis.call('SREM', ALONE, id)
end

-- A RUNNING job leaves its lease and its claim group (cg: the job's, false for none,
-- nil: read it); the index writes go through w (W when nil).
local function leave_running(id, k, w, cg)
  w = w or W
  w.zrem(LEASES, id)
  if cg == nil then cg = redis.call('HGET', k, 'cg') end
  if cg then
    w.srem(cgk(cg), id)
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
    local v = redis.call('HMGET', jk(id), 'p', 'sk', 'n', 't')
    local rk = mkrk(v[1], v[2], v[3], id)
    redis.call('ZADD', READY, 0, rk)
    redis.call('ZADD', rtk(v[4]), 0, rk)
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
  local t = redis.call('HGET', k, 't')
  leave(W, id, t, s)
  redis.call('HSET', k, 's', 'CANCELLED')
  fail_dependents(id, tonumber(ARGV[1]))
  redis.call('ZREM', tyk(t), id)
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
    -- the arrival number, claim group and blocked count are the queue's own (a ready
    -- member 'rk' was stored by older typedq)
    if f ~= 'n' and f ~= 'rk' and f ~= 'cg' and f ~= 'bb' and f ~= 's' then
      fields[#fields + 1] = f
      fields[#fields + 1] = flat[i + 1]
      vals[f] = flat[i + 1]
    end
  end
  local n = redis.call('INCR', B .. ':seq')
  redis.call('HSET', k, 's', s, 'n', n, unpack(fields))
  if origin then redis.call('HSET', k, 'q', origin) end
  redis.call('ZADD', tyk(vals['t']), n, id)
  enter(W, id, vals['t'], n, s)
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
    wake()
  elseif new == 'COMPLETED' then
    release_dependents(id, now)
  elseif FAILING[new] then
    fail_dependents(id, now)
  end
end
"""

#: Where a helper of ``COMMON`` begins: a line at column 0 starting ``local`` or ``--``.
_START: Final = re.compile(r"^(?:local|--)")
_DEFINES: Final = re.compile(r"^local\s+(?:function\s+)?([\w\s,]+?)\s*(?:=|\(|$)", re.MULTILINE)
_NAME: Final = re.compile(r"[A-Za-z_]\w*")


def _helpers(common: str) -> tuple[str, list[tuple[frozenset[str], frozenset[str], str]]]:
    """``common`` as its prelude (everything up to and with ``use(KEYS[1])``, in every
    script) and its helpers, in order: (names defined, names used, text)."""
    prelude, _, rest = common.partition("use(KEYS[1])\n")
    chunks: list[list[str]] = []
    previous = ""
    for line in rest.splitlines(keepends=True):
        if not chunks or (_START.match(line) and not previous.startswith("--")):
            chunks.append([])
        chunks[-1].append(line)
        previous = line
    helpers = []
    for lines in chunks:
        text = "".join(lines)
        code = "".join(line.split("--", 1)[0] + "\n" for line in lines)
        defined = {name.strip() for found in _DEFINES.findall(code) for name in found.split(",")}
        helpers.append((frozenset(defined), frozenset(_NAME.findall(code)) - defined, text))
    return prelude + "use(KEYS[1])\n", helpers


def script(body: str, common: str = COMMON) -> str:
    """A script: the prelude of ``common``, the helpers ``body`` uses (and the helpers
    they use, in their order in ``common``), then ``body``."""
    prelude, helpers = _helpers(common)
    wanted = set(_NAME.findall(body))
    chosen = [False] * len(helpers)
    grew = True
    while grew:
        grew = False
        for i, (defined, used, _) in enumerate(helpers):
            if not chosen[i] and defined & wanted:
                chosen[i] = True
                wanted |= used
                grew = True
    return prelude + "".join(text for i, (_, _, text) in enumerate(helpers) if chosen[i]) + body
