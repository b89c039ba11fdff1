"""Connections of the Redis backend: one pool per server and process, driver errors mapped.

* :func:`client_for` hands out a ``redis.Redis`` on this process's pool for a server (one
  pool per host, port, db, user and options, shared by every queue object of the
  process). A child after ``fork()`` never uses its parent's pool: the registry is keyed
  by ``os.getpid()`` and a child builds its own (the parent's sockets are left to it).
* Clients never retry a command by themselves: a script whose reply was lost may have
  run, and running a transition twice is not the same as once. A lost connection is a
  :class:`~typedq.errors.BackendUnavailableError`; the caller decides.
* :func:`map_errors` turns driver errors into typedq errors, once, for every call.
* :func:`check_server` runs when a queue opens: a queue still in key layout 1 is moved to
  the current layout (:func:`migrate_layout`), the queue's fixed keys must be of their
  type or absent (a key of another type is refused, never overwritten), the key layout
  version must be known, and a ``maxmemory-policy`` other than ``noeviction`` is logged
  once as a warning (Redis would evict jobs under memory pressure).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any, Final

from typedq.backends._redis_keys import FIXED_KEYS, LAYOUT_VERSION, RedisSettings, legacy_base_key
from typedq.errors import BackendDataError, BackendError, BackendUnavailableError, ConfigError
from typedq.job import TERMINAL_STATUSES

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ConfigError(
        "backend", "redis://", "the redis driver: pip install 'typedq[redis]'"
    ) from exc

__all__ = [
    "check_server",
    "client_for",
    "load_scripts",
    "map_errors",
    "migrate_layout",
    "queue_names",
    "release_client",
]

logger = logging.getLogger("typedq.backends.redis")

_lock = threading.Lock()
# (pid, pool key) -> [pool, users]
_pools: dict[tuple[int, tuple[Any, ...]], list[Any]] = {}
_warned: set[tuple[Any, ...]] = set()
# (pid, pool key) of the servers this process loaded its scripts on
_loaded: set[tuple[int, tuple[Any, ...]]] = set()
_WRONGTYPE: Final = "WRONGTYPE"


def client_for(settings: RedisSettings) -> redis.Redis:
    """A client on this process's pool for ``settings``' server (made on first use)."""
    key = (os.getpid(), settings.pool_key())
    with _lock:
        entry = _pools.get(key)
        if entry is None:
            for stale in [k for k in _pools if k[0] != key[0]]:
                del _pools[stale]  # a parent's pools: its sockets are not ours to use
            kwargs: dict[str, Any] = {
                "host": settings.host,
                "port": settings.port,
                "db": settings.db,
                "username": settings.username,
                "password": settings.password,
                "socket_timeout": settings.socket_timeout,
                "socket_connect_timeout": settings.socket_connect_timeout,
                "health_check_interval": settings.health_check_interval,
                "retry": Retry(NoBackoff(), 0),
                "max_connections": settings.max_connections,
                "client_name": "typedq",
            }
            if settings.tls:
                kwargs["connection_class"] = redis.SSLConnection
            entry = _pools[key] = [redis.ConnectionPool(**kwargs), 0]
        entry[1] += 1
        pool = entry[0]
    return redis.Redis(connection_pool=pool)


def load_scripts(client: redis.Redis, settings: RedisSettings, scripts: Iterable[Any]) -> None:
    """Load the scripts on the server once per process (``SCRIPT LOAD``, one pipeline), so
    the first call of each is an ``EVALSHA`` that hits; one that was flushed since is
    loaded again on ``NOSCRIPT`` by redis-py's ``Script``."""
    key = (os.getpid(), settings.pool_key())
    if key in _loaded:
        return
    with client.pipeline(transaction=False) as pipe:
        for script in scripts:
            pipe.script_load(script.script)
        pipe.execute()
    _loaded.add(key)


def release_client(settings: RedisSettings) -> None:
    """One queue object of this process is done with its server; the last closes the pool."""
    key = (os.getpid(), settings.pool_key())
    with _lock:
        entry = _pools.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] <= 0:
            del _pools[key]
            entry[0].disconnect()


@contextmanager
def map_errors(settings: RedisSettings) -> Iterator[None]:
    """Turn driver errors into typedq errors naming the server (password masked).

    Raises:
        BackendUnavailableError: the server is down, refused, or timed out.
        BackendDataError: a key under the queue's prefix has another type.
        BackendError: any other error the server returned.
    """
    try:
        yield
    except redis.AuthenticationError as exc:
        raise BackendUnavailableError(f"Redis at {settings.masked_url} refused the login: {exc}") from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise BackendUnavailableError(
            f"Redis at {settings.masked_url} is unavailable: {type(exc).__name__}: {exc}"
        ) from exc
    except redis.ResponseError as exc:
        if str(exc).startswith(_WRONGTYPE) or _WRONGTYPE in str(exc):
            raise BackendDataError(
                f"Redis at {settings.masked_url}: a key under prefix {settings.prefix!r} has a type "
                f"typedq does not use there ({exc}); typedq will not overwrite it"
            ) from exc
        raise BackendError(f"Redis at {settings.masked_url} refused a command: {exc}") from exc
    except redis.RedisError as exc:
        raise BackendError(f"Redis at {settings.masked_url}: {type(exc).__name__}: {exc}") from exc


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a ``SCAN ... MATCH`` pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


#: Keys watched while a queue of layout 1 is renamed: every transition of an older typedq
#: still running writes one of them, so its write makes the rename start over.
_WATCHED: Final = ("meta", "seq", "counts", "leases", "workers", "wake")


def migrate_layout(client: redis.Redis, settings: RedisSettings, name: str, base: str) -> int:
    """Rename the keys of queue ``name`` from key layout 1 (``{prefix:name}``) to ``base``.

    Does nothing (returns 0) when the queue has keys of the current layout or none of
    layout 1. Every key is renamed in one ``MULTI`` (all or none), watched against the
    writes of an older typedq still running (the rename then starts over). Returns how
    many keys were renamed.
    """
    old = legacy_base_key(settings.prefix, name)
    while True:
        if client.exists(f"{base}:meta") or not client.exists(f"{old}:meta"):
            return 0
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(*(f"{old}:{suffix}" for suffix in _WATCHED))  # type: ignore[no-untyped-call]  # redis-py leaves watch untyped
                keys = [k.decode() for k in pipe.scan_iter(match=f"{_glob_escape(old)}:*", count=1000)]
                pipe.multi()
                for key in keys:
                    pipe.rename(key, base + key[len(old) :])
                pipe.hset(f"{base}:meta", "layout", LAYOUT_VERSION)
                pipe.execute()
            except redis.WatchError:
                continue
        _index_finished(client, base)
        logger.warning(
            "Redis at %s: moved queue %r from key layout 1 (%s) to layout %d (%s): %d keys",
            settings.masked_url, name, old, LAYOUT_VERSION, base, len(keys),
        )
        return len(keys)


def _index_finished(client: redis.Redis, base: str) -> None:
    """Layout 2 keeps the jobs that ended by finish time (``B:fin:<STATUS>``, read by
    purges); a queue moved from layout 1 gets them built from its status indexes and the
    jobs' ``f`` fields (jobs without one are never purged, as on every backend)."""
    for status in TERMINAL_STATUSES:
        members: list[bytes] = client.zrange(f"{base}:st:{status.value}", 0, -1)  # type: ignore[assignment]  # bytes without withscores
        ids = [raw.decode() for raw in members]
        for lo in range(0, len(ids), 1000):
            chunk = ids[lo : lo + 1000]
            with client.pipeline(transaction=False) as pipe:
                for job_id in chunk:
                    pipe.hget(f"{base}:j:{job_id}", "f")
                finished = pipe.execute()
            scores = {job_id: float(f) for job_id, f in zip(chunk, finished, strict=True) if f is not None}
            if scores:
                client.zadd(f"{base}:fin:{status.value}", scores)


def check_server(client: redis.Redis, settings: RedisSettings, name: str, base: str) -> None:
    """Judge a queue's keys and the server's eviction policy before the queue is used.

    A queue of key layout 1 is first moved to the current layout (:func:`migrate_layout`).

    Raises:
        BackendDataError: a fixed key of the queue has another type, or the layout was
            written by a newer typedq (nothing is written).
    """
    migrate_layout(client, settings, name, base)
    with client.pipeline(transaction=False) as pipe:
        for suffix in FIXED_KEYS:
            pipe.type(f"{base}:{suffix}")
        pipe.hget(f"{base}:meta", "layout")
        replies = pipe.execute()
    for (suffix, want), got in zip(FIXED_KEYS.items(), replies, strict=False):
        kind = got.decode() if isinstance(got, bytes) else str(got)
        if kind not in ("none", want):
            raise BackendDataError(
                f"Redis at {settings.masked_url}: key {base}:{suffix} is a {kind}, where typedq keeps "
                f"a {want}; typedq will not overwrite it (use another prefix or queue name)"
            )
    layout = replies[-1]
    if layout is not None and int(layout) > LAYOUT_VERSION:
        raise BackendDataError(
            f"Redis at {settings.masked_url}: queue {base} was written by a newer typedq "
            f"(key layout {int(layout)}, this one knows {LAYOUT_VERSION})"
        )
    client.hsetnx(f"{base}:meta", "layout", LAYOUT_VERSION)
    server = settings.pool_key()
    if server in _warned:
        return
    _warned.add(server)
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:  # CONFIG is renamed or refused on managed servers
        return
    if policy is not None and policy != "noeviction":
        logger.warning(
            "Redis at %s has maxmemory-policy %s: under memory pressure it may evict jobs; "
            "set maxmemory-policy noeviction for a job queue",
            settings.masked_url,
            policy,
        )


def queue_names(client: redis.Redis, prefix: str) -> list[str]:
    """The names of the queues under ``prefix`` that hold jobs, sorted: a ``SCAN`` for their
    ``meta`` keys (one a queue), then one read of each one's counters."""
    head = f"{{{prefix}}}:{{"
    metas = client.scan_iter(match=f"{_glob_escape(head)}*}}:meta", count=1000)
    bases = sorted({k.decode()[: -len(":meta")] for k in metas})
    with client.pipeline(transaction=False) as pipe:
        for base in bases:
            pipe.hvals(f"{base}:counts")
        counts = pipe.execute()
    held = [sum(int(v) for v in values) for values in counts]
    return sorted(base[len(head) : -1] for base, n in zip(bases, held, strict=True) if n > 0)
