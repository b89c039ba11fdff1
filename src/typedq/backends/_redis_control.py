"""Job control of the Redis backend: lease renewals that report a cancel request,
progress, job logs and reordering (see ``_control``), each one Lua script.

Progress and logs are fields of the job's hash (``pg``: the progress as JSON, ``lg``: the
log as a JSON list), so they go with the job when it is deleted or purged. A reorder
reads the neighbours of the job in the ready set, then moves it with a compare-and-set
on its ready member (retried when the job moved meanwhile).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

from typedq.backends import _control as control
from typedq.backends import _redis_conn as conn
from typedq.backends._redis_keys import UNSCHEDULED_HEX, RedisSettings, ready_member, sort_hex
from typedq.backends._redis_lua_common import script
from typedq.backends.base import LeaseRenewal
from typedq.clock import Clock
from typedq.errors import JobNotFoundError, TypedqError
from typedq.job import MAX_JOB_LOGS, Job, JobLogLine, JobProgress, JobStatus

__all__ = ["CONTROL_SCRIPTS", "RedisJobControl"]

# ARGV: now, action, id, then per action:
#   promote: (nothing; due delayed jobs move to the ready sets)
#   renew:    token, lease_until -> {'ok', cancel_requested}
#   progress: token, progress JSON
#   logs:     token, JSON list of new lines, the most lines kept
#   reorder:  the job's ready member as read, new scheduled_at ('' = none), created_at,
#             and their sort hex (32 digits)
_CONTROL: Final = r"""
local now, action, id = tonumber(ARGV[1]), ARGV[2], ARGV[3]
if action == 'promote' then
  promote(now)
  return {'ok'}
end
local k = jk(id)
if action == 'reorder' then
  local v = redis.call('HMGET', k, 's', 'p', 'sk', 'n', 't')
  if not v[1] then return {'missing'} end
  local old = mkrk(v[2], v[3], v[4], id)
  if v[1] ~= 'PENDING' or old ~= ARGV[4] or not redis.call('ZSCORE', READY, old) then
    return {'moved', v[1]}
  end
  local rk = mkrk(v[2], ARGV[7], v[4], id)
  redis.call('ZREM', READY, old)
  redis.call('ZREM', rtk(v[5]), old)
  if ARGV[5] == '' then redis.call('HDEL', k, 'sa') else redis.call('HSET', k, 'sa', ARGV[5]) end
  redis.call('HSET', k, 'ca', ARGV[6], 'sk', ARGV[7])
  redis.call('ZADD', READY, 0, rk)
  redis.call('ZADD', rtk(v[5]), 0, rk)
  return {'ok'}
end
local refused = refuse(k, ARGV[4])
if refused then return refused end
if action == 'renew' then
  redis.call('HSET', k, 'lu', ARGV[5], 'ls', server_deadline(now, ARGV[5]))
  redis.call('ZADD', LEASES, ARGV[5], id)
  return {'ok', redis.call('HGET', k, 'cr') or '0'}
end
if action == 'progress' then
  redis.call('HSET', k, 'pg', ARGV[5])
  return {'ok'}
end
-- logs
local cur = redis.call('HGET', k, 'lg')
local lines = cur and cjson.decode(cur) or {}
local new = cjson.decode(ARGV[5])
for i = 1, #new do lines[#lines + 1] = new[i] end
local max = tonumber(ARGV[6])
if #lines > max then
  local kept = {}
  for i = #lines - max + 1, #lines do kept[#kept + 1] = lines[i] end
  lines = kept
end
redis.call('HSET', k, 'lg', cjson.encode(lines))
return {'ok'}
"""

#: Script name -> Lua source.
CONTROL_SCRIPTS: Final = {"control": script(_CONTROL)}
#: Attempts of a reorder whose job moved between the read and the move.
_REORDER_TRIES: Final = 5


def _num(value: float) -> str:
    return repr(float(value))


def _level_bounds(member: bytes) -> tuple[bytes, bytes]:
    """The lexical range of the ready members of ``member``'s priority (its first digit)."""
    digit = member[:1]
    return b"[" + digit, b"(" + bytes([digit[0] + 1])


class RedisJobControl:
    """The job-control transitions of ``RedisQueue``."""

    _name: str
    _clock: Clock
    _settings: RedisSettings
    _base: str

    if TYPE_CHECKING:  # RedisQueue's client, script runner and refusals

        @property
        def _r(self) -> Any: ...

        def _run(self, script: str, args: Sequence[Any], dlq: str | None = None) -> Any: ...

        def _refused(self, job_id: str, token: int, reply: list[Any]) -> TypedqError: ...

        def get_job(self, job_id: str) -> Job: ...

    def _control(self, action: str, job_id: str, token: int, *extra: Any) -> list[Any]:
        reply = self._run("control", [_num(self._clock.now()), action, job_id, token, *extra])
        if reply[0] != b"ok":
            raise self._refused(job_id, token, reply)
        return reply  # type: ignore[no-any-return]  # the script's reply array

    def renew_lease(self, job_id: str, *, token: int, lease_s: float) -> LeaseRenewal:
        """Push the lease deadline and report a cancel request; see :meth:`Queue.renew_lease`."""
        until = self._clock.now() + lease_s
        reply = self._control("renew", job_id, token, _num(until))
        return LeaseRenewal(until, reply[1] == b"1")

    def set_progress(self, job_id: str, *, token: int, progress: JobProgress) -> None:
        """Store a running job's progress; see :meth:`Queue.set_progress`."""
        self._control("progress", job_id, token, control.encode_progress(control.stamped(progress, token)))

    def append_logs(self, job_id: str, *, token: int, lines: Sequence[JobLogLine]) -> None:
        """Add lines to a running job's log; see :meth:`Queue.append_logs`."""
        new = control.trimmed_logs((), lines)
        self._control("logs", job_id, token, control.encode_logs(new), MAX_JOB_LOGS)

    def get_logs(self, job_id: str) -> list[JobLogLine]:
        """A job's log lines, oldest first; see :meth:`Queue.get_logs`."""
        key = f"{self._base}:j:{job_id}"
        with conn.map_errors(self._settings), self._r.pipeline(transaction=True) as pipe:
            pipe.exists(key)
            pipe.hget(key, "lg")
            exists, raw = pipe.execute()
        if not exists:
            raise JobNotFoundError(job_id, queue=self._name)
        return control.decode_logs(raw)

    def _ready_member(self, job_id: str, field: str) -> tuple[bytes, Job]:
        """The job's member in the ready set, and the job; refused when it is not ready."""
        job = self.get_job(job_id)
        with conn.map_errors(self._settings):
            priority, sk, n = self._r.hmget(f"{self._base}:j:{job_id}", "p", "sk", "n")
            member = None if n is None else ready_member(int(priority), sk, int(n), job_id)
            ready = member is not None and self._r.zscore(f"{self._base}:ready", member) is not None
        if member is None or job.status is not JobStatus.PENDING or not ready:
            raise control.not_ready(job_id, job.status, field)
        return member, job

    def _keys_of(self, members: list[bytes], skip: str) -> list[control.OrderKey]:
        ids = [m[45:].decode() for m in members]
        keys: list[control.OrderKey] = []
        with conn.map_errors(self._settings):
            for job_id in ids:
                if job_id == skip:
                    continue
                sched, created = self._r.hmget(f"{self._base}:j:{job_id}", "sa", "ca")
                keys.append((None if sched is None else float(sched), float(created)))
        return keys

    def reorder(self, job_id: str, *, before: str | None = None, position: str | None = None) -> Job:
        """Move a ready job inside its priority level; see :meth:`Queue.reorder`."""
        control.check_reorder(job_id, before, position)
        ready = f"{self._base}:ready"
        self._run("control", [_num(self._clock.now()), "promote", job_id])
        for _ in range(_REORDER_TRIES):
            member, job = self._ready_member(job_id, "job_id")
            low, high = _level_bounds(member)
            anchor: control.OrderKey | None = None
            previous: control.OrderKey | None = None
            with conn.map_errors(self._settings):
                if before is not None:
                    other_member, other = self._ready_member(before, "before")
                    if other.priority != job.priority:
                        raise control.other_level(before, job)
                    anchor = (other.scheduled_at, other.created_at)
                    found = self._r.zrevrangebylex(ready, b"(" + other_member, low, start=0, num=2)
                    keys = self._keys_of(found, job_id)
                    previous = keys[0] if keys else None
                elif position == "front":
                    keys = self._keys_of(self._r.zrangebylex(ready, low, high, start=0, num=2), job_id)
                    anchor = keys[0] if keys else None
                else:
                    keys = self._keys_of(self._r.zrevrangebylex(ready, high, low, start=0, num=2), job_id)
                    anchor = keys[0] if keys else None
            key = control.new_order_key(
                job, before=before, position=position, anchor=anchor, previous=previous
            )
            if key is None:
                return job
            sched, created = key
            sort = (UNSCHEDULED_HEX if sched is None else sort_hex(sched)) + sort_hex(created)
            args = [_num(self._clock.now()), "reorder", job_id, member, "" if sched is None else _num(sched),
                    _num(created), sort]
            reply = self._run("control", args)
            if reply[0] == b"missing":
                raise JobNotFoundError(job_id, queue=self._name)
            if reply[0] == b"ok":
                return self.get_job(job_id)
        raise control.not_ready(job_id, self.get_job(job_id).status)

