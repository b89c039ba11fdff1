"""The Redis backend's reads and writes outside the job transitions: the worker registry
and counts of jobs by type.

The registry is two keys of the queue: ``B:workers`` (worker id -> its entry as JSON)
and ``B:wseen`` (the same ids by last heartbeat), plus one key per live worker,
``B:alive:<worker id>``, that expires ``ttl_s`` after its last heartbeat *by the
server's clock*: the reaper's liveness rule reads it (a worker of another host cannot
be checked by its pid, and the hosts' clocks may disagree). A heartbeat writes all
three in one ``MULTI``; entries not renewed for ``WORKER_RETENTION_S`` are forgotten on
the next heartbeat of any worker.
"""

from __future__ import annotations

import json
from typing import Any, Final

from typedq.backends import _redis_conn as conn
from typedq.backends._redis_keys import RedisSettings
from typedq.backends.base import WORKER_RETENTION_S, WorkerInfo

__all__ = ["count_by_type", "register_worker", "unregister_worker", "workers"]

#: Jobs read per round trip when counting by type.
_PAGE: Final = 1000


def register_worker(client: Any, settings: RedisSettings, base: str, info: WorkerInfo) -> None:
    """Add or renew ``info``; forget entries older than the retention."""
    cutoff = info.last_seen - WORKER_RETENTION_S
    with conn.map_errors(settings):
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(f"{base}:workers", info.worker_id, json.dumps(info.to_dict()))
            pipe.zadd(f"{base}:wseen", {info.worker_id: info.last_seen})
            pipe.set(f"{base}:alive:{info.worker_id}", 1, px=max(1, round(info.ttl_s * 1000)))
            pipe.zrangebyscore(f"{base}:wseen", "-inf", f"({cutoff!r}")
            old = pipe.execute()[3]
        if old:
            with client.pipeline(transaction=True) as pipe:
                pipe.hdel(f"{base}:workers", *old)
                pipe.zrem(f"{base}:wseen", *old)
                pipe.delete(*(f"{base}:alive:{raw.decode()}" for raw in old))
                pipe.execute()


def unregister_worker(client: Any, settings: RedisSettings, base: str, worker_id: str) -> None:
    """Remove a worker's entry (unknown ids are ignored)."""
    with conn.map_errors(settings), client.pipeline(transaction=True) as pipe:
        pipe.hdel(f"{base}:workers", worker_id)
        pipe.zrem(f"{base}:wseen", worker_id)
        pipe.delete(f"{base}:alive:{worker_id}")
        pipe.execute()


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
