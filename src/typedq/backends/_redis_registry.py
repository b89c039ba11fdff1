"""The Redis backend's reads and writes outside the job transitions: the worker registry,
counts of jobs by type, and listing jobs (pages of the arrival indexes, read by the
``list`` script).

The registry is two keys of the queue: ``B:workers`` (worker id -> its entry as JSON)
and ``B:wseen`` (the same ids by last heartbeat), plus one key per live worker,
``B:alive:<worker id>``, that expires ``ttl_s`` after its last heartbeat *by the
server's clock*: the reaper's liveness rule reads it (a worker of another host cannot
be checked by its pid, and the hosts' clocks may disagree). A heartbeat writes all
three in one ``MULTI``; entries not renewed for ``WORKER_RETENTION_S`` are forgotten on
the next heartbeat of any worker. ``B:wretired`` holds the retired-workers totals (JSON):
an entry's figures are added to it by the script that removes
the entry (unregistered or forgotten): the ``retire`` script removes an entry only if it
is still the one read (compare-and-remove), so each worker is counted exactly once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any, Final

from typedq.backends import _redis_conn as conn
from typedq.backends._control import export_record
from typedq.backends._redis_keys import HashCodec, RedisSettings
from typedq.backends._redis_lua_common import COMMON
from typedq.backends._worker_totals import flat_figures, from_flat
from typedq.backends.base import WORKER_RETENTION_S, WorkerInfo
from typedq.errors import InvalidJobError, JobNotFoundError
from typedq.job import Job, JobStatus

__all__ = [
    "REGISTRY_SCRIPTS",
    "count_by_type",
    "export_jobs",
    "list_jobs",
    "register_worker",
    "retired_metrics",
    "unregister_worker",
    "workers",
]

logger = logging.getLogger("typedq.backends.redis")

#: Runs one of the queue's scripts: ``run(name, args)``.
Run = Callable[[str, Sequence[Any]], Any]

#: The key (after the queue's base) of the retired-workers totals: a hash of the
#: figures of ``_worker_totals.flat_figures``.
RETIRED: Final = "wretired"
#: Attempts to retire an entry renewed between the read and the script.
_RETIRE_TRIES: Final = 5

# ARGV: worker id, its entry as read, then (figure name, 'i' or 'f', value) triples.
# Compare-and-remove: only the entry as read is removed and folded, so an entry is
# folded once however many callers race (each heartbeat that finds it old, the worker
# unregistering), and an entry renewed meanwhile is left alone.
_RETIRE: Final = r"""
local wk, id = B .. ':workers', ARGV[1]
if redis.call('HGET', wk, id) ~= ARGV[2] then return 0 end
redis.call('HDEL', wk, id)
redis.call('ZREM', B .. ':wseen', id)
redis.call('DEL', B .. ':alive:' .. id)
local tk = B .. ':wretired'
for i = 3, #ARGV, 3 do
  if ARGV[i + 1] == 'i' then
    redis.call('HINCRBY', tk, ARGV[i], ARGV[i + 2])
  else
    redis.call('HINCRBYFLOAT', tk, ARGV[i], ARGV[i + 2])
  end
end
return 1
"""
#: The registry's script, registered with the queue's others.
REGISTRY_SCRIPTS: Final = {"retire": COMMON + _RETIRE}
#: Jobs read per round trip when counting by type.
_PAGE: Final = 1000


def register_worker(client: Any, run: Run, settings: RedisSettings, base: str, info: WorkerInfo) -> None:
    """Add or renew ``info``; forget entries older than the retention (their figures
    added to the retired totals)."""
    cutoff = info.last_seen - WORKER_RETENTION_S
    with conn.map_errors(settings):
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(f"{base}:workers", info.worker_id, json.dumps(info.to_dict()))
            pipe.zadd(f"{base}:wseen", {info.worker_id: info.last_seen})
            pipe.set(f"{base}:alive:{info.worker_id}", 1, px=max(1, round(info.ttl_s * 1000)))
            pipe.zrangebyscore(f"{base}:wseen", "-inf", f"({cutoff!r}")
            old = pipe.execute()[3]
        if old:  # rare: fold and remove each entry that is still the one read
            raws = client.hmget(f"{base}:workers", old)
            for raw_id, raw in zip(old, raws, strict=True):
                if raw is not None:
                    _retire(run, raw_id.decode(), raw, _metrics_of(raw))


def unregister_worker(
    client: Any, run: Run, settings: RedisSettings, base: str, worker_id: str, *, final: WorkerInfo | None
) -> None:
    """Remove a worker's entry (unknown ids are ignored), its figures (``final``'s when
    given) added to the retired totals in the same script."""
    with conn.map_errors(settings):
        for _ in range(_RETIRE_TRIES):
            raw = client.hget(f"{base}:workers", worker_id)
            if raw is None:
                return  # removed already, and counted then
            metrics = _metrics_of(raw) if final is None else final.metrics
            if _retire(run, worker_id, raw, metrics):
                return
    logger.warning("worker %s: its registry entry kept changing; left to go stale", worker_id)


def _metrics_of(raw: bytes) -> dict[str, Any]:
    try:
        metrics = json.loads(raw).get("metrics")
    except (ValueError, AttributeError):
        return {}  # an entry typedq cannot read counts nothing
    return metrics if isinstance(metrics, dict) else {}


def _retire(run: Run, worker_id: str, raw: bytes, metrics: dict[str, Any]) -> bool:
    """Run the ``retire`` script: whether the entry was still ``raw`` (then removed and
    its figures added)."""
    args: list[Any] = [worker_id, raw]
    for name, value in flat_figures(metrics):
        args += (name, "i" if isinstance(value, int) else "f", repr(value))
    return bool(run("retire", args))


def retired_metrics(client: Any, settings: RedisSettings, base: str) -> dict[str, Any]:
    """The retired-workers totals (``WorkerInfo.metrics`` shape)."""
    with conn.map_errors(settings):
        raw = client.hgetall(f"{base}:{RETIRED}")
    return from_flat((name.decode(), value) for name, value in raw.items())


def workers(client: Any, settings: RedisSettings, base: str) -> list[WorkerInfo]:
    """Every registered worker, oldest first."""
    with conn.map_errors(settings):
        stored = client.hvals(f"{base}:workers")
    found = [WorkerInfo.from_dict(json.loads(raw)) for raw in stored]
    return sorted(found, key=lambda w: (w.started_at, w.worker_id))


def count_by_type(client: Any, settings: RedisSettings, base: str, status: str) -> dict[str, int]:
    """Jobs of each type in ``status``: the status index read in pages, one pipeline each."""
    counts: dict[str, int] = {}
    start = 0
    with conn.map_errors(settings):
        while True:
            ids = client.zrange(f"{base}:st:{status}", start, start + _PAGE - 1)
            if not ids:
                return counts
            with client.pipeline(transaction=False) as pipe:
                for raw in ids:
                    pipe.hget(f"{base}:j:{raw.decode()}", "t")
                for job_type in pipe.execute():
                    if job_type is not None:
                        name = job_type.decode()
                        counts[name] = counts.get(name, 0) + 1
            start += _PAGE


def list_jobs(
    run: Run,
    hashes: HashCodec,
    queue: str,
    *,
    status: JobStatus | None,
    job_type: str | None,
    limit: int,
    offset: int,
    after: str | None,
    newest: bool,
) -> list[Job]:
    """``RedisQueue.list_jobs``: one page of an index (all jobs, a status or a type).

    Raises:
        InvalidJobError: a negative ``limit`` or ``offset``.
        JobNotFoundError: ``after`` names no job of the queue.
    """
    if limit < 0 or offset < 0:
        raise InvalidJobError("limit", (limit, offset), "limit >= 0 and offset >= 0")
    if status is not None:
        index, jtype = f"st:{JobStatus(status).value}", job_type or ""
    elif job_type is not None:
        index, jtype = f"ty:{job_type}", ""
    else:
        index, jtype = "all", ""
    reply = run("list", [index, jtype, after or "", 1 if newest else 0, offset, limit])
    if reply[0] == b"missing":
        raise JobNotFoundError(str(after), queue=queue)
    return [hashes.job(raw_id.decode(), flat) for raw_id, flat, _ in reply[1:]]


def export_jobs(run: Run, hashes: HashCodec) -> list[dict[str, Any]]:
    """``RedisQueue.export_jobs``: every job as ``Job.to_dict()`` data, in pages of 1,000."""
    out: list[dict[str, Any]] = []
    after = ""
    while True:
        reply = run("list", ["all", "", after, 0, 0, _PAGE])
        for raw_id, flat, _ in reply[1:]:
            out.append(export_record(hashes.job(raw_id.decode(), flat), hashes.logs(flat)))
        if len(reply) - 1 < _PAGE:
            return out
        after = f"#{int(reply[-1][2])}"
