"""Connections of the Redis backend: one pool per server and process, driver errors mapped.

* :func:`client_for` hands out a ``redis.Redis`` on this process's pool for a server (one
  pool per host, port, db, user and options, shared by every queue object of the
  process). A child after ``fork()`` never uses its parent's pool: the registry is keyed
  by ``os.getpid()`` and a child builds its own (the parent's sockets are left to it).
  With Sentinel the pool is redis-py's ``SentinelConnectionPool``: every new connection
  asks the sentinels (in turn) for the service's master, and a connection that finds
  its server demoted to a replica (``READONLY``, or a blocked ``BLPOP`` unblocked by the
  failover) is dropped with a ``ConnectionError``, so the next call reaches the new
  master.
* Script calls (every transition) keep their connections between calls: a connection
  taken from the pool by :func:`evalsha` goes back to the pool's *held* list, not to the
  pool, and the next call takes it from there. redis-py's checkout and return cost a
  loaded machine about 20 µs a call (two locks, metrics hooks, an event, a ``poll``);
  the held list costs the ``poll`` alone (the check the pool makes: a connection the
  server closed, or with unread bytes, is reconnected before use). Only pools without a
  ``max_connections`` bound hold connections: a held one is not in the pool for other
  commands, so a bound pool could be exhausted by them. A failed call's connection is
  closed and given back to the pool.
* Clients never retry a command by themselves: a script whose reply was lost may have
  run, and running a transition twice is not the same as once. A lost connection is a
  :class:`~typedq.errors.BackendUnavailableError`; the caller decides.
* The scripts that take many arguments (adding jobs, completing a batch) take them
  *packed* (:func:`pack_args`): one MessagePack array in ``ARGV[1]``, which the script
  unpacks first (``_redis_lua.UNPACK``). The server spends about 0.6 µs on every
  argument of a command before the script runs (a batch of 1,000 jobs sends some
  13,000); one argument of the same bytes costs it a few, and packing them costs the
  client less than encoding them one by one. A packed script's arguments are text and
  bytes only, as the scripts compare them with text (a MessagePack integer would be a
  Lua number); a batch too big for one argument is sent as it was, argument by
  argument, which the script takes too.
* :func:`map_errors` turns driver errors into typedq errors, once, for every call.
* :func:`check_server` runs when a queue opens: a queue still in key layout 1 is moved to
  the current layout (:func:`migrate_layout`), the queue's fixed keys must be of their
  type or absent (a key of another type is refused, never overwritten), the key layout
  version must be known, and a ``maxmemory-policy`` other than ``noeviction`` (Redis
  would evict jobs under memory pressure) is logged once as a warning, or refused with a
  ``BackendConfigError`` when the URL says ``eviction=refuse``. It writes only what is
  missing, so a queue opens (for reading) on a full server or a read-only replica.
* A write refused because the server is full (``maxmemory`` reached under
  ``noeviction``: ``OOM``) or read-only (a replica: ``READONLY``) is a
  ``BackendWritesRefusedError`` naming the server (a ``BackendWriteError`` and a
  ``BackendUnavailableError``); a script is refused at its first write, so nothing of it
  is stored.
* :func:`check_epoch` notices that the server lost its data. Each prefix of a server
  holds an *epoch marker*, ``{prefix:}:epoch`` (the key of the empty queue name, which no
  queue has), a random value written once when it is missing. A process remembers the
  value it saw; after a command failed on the connection (the server went away) and on
  every worker heartbeat, it reads the marker again. A marker gone or changed means the
  server came back without the data (restarted without persistence, flushed, failed over
  to a replica that had not received it): logged once as an ERROR, "backend state lost",
  and the new marker is adopted, so each loss is told once per process.
"""

from __future__ import annotations

import logging
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Final

import msgpack  # type: ignore[import-untyped]  # msgpack ships no type information

from typedq.backends._redis_keys import (
    FIXED_KEYS,
    LAYOUT_VERSION,
    STATUSES,
    RedisSettings,
    legacy_base_key,
    queue_counts,
)
from typedq.errors import (
    BackendConfigError,
    BackendDataError,
    BackendError,
    BackendUnavailableError,
    BackendWritesRefusedError,
    ConfigError,
)
from typedq.job import TERMINAL_STATUSES

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.exceptions import RedisClusterException
    from redis.retry import Retry
    from redis.sentinel import Sentinel, SentinelConnectionPool, SentinelManagedSSLConnection
except ImportError as exc:  # pragma: no cover - exercised without the extra installed
    raise ConfigError(
        "backend", "redis://", "the redis driver: pip install 'typedq[redis]'"
    ) from exc

__all__ = [
    "Link",
    "ServerState",
    "check_epoch",
    "check_server",
    "client_for",
    "connect_kwargs",
    "epoch_key",
    "evalsha",
    "held_connections",
    "load_scripts",
    "map_errors",
    "migrate_layout",
    "queue_names",
    "release_client",
    "server_state",
]

#: hiredis's packer: the scripts' calls are packed in one C call (see _pack).
_hiredis_pack: Callable[[tuple[Any, ...]], bytes] | None
try:
    from hiredis import pack_command as _hiredis_pack
except ImportError:  # pragma: no cover - hiredis comes with typedq[redis]
    _hiredis_pack = None

logger = logging.getLogger("typedq.backends.redis")

_lock = threading.Lock()
# (pid, pool key) -> [pool, users, sentinel manager or None, held connections or None]
_pools: dict[tuple[int, tuple[Any, ...]], list[Any]] = {}
_warned: set[tuple[Any, ...]] = set()
# (pid, pool key) of the servers this process loaded its scripts on
_loaded: set[tuple[int, tuple[Any, ...]]] = set()
_WRONGTYPE: Final = "WRONGTYPE"


class ServerState:
    """What this process knows of one server's prefix: the epoch marker it last saw,
    whether a command failed since (the next one checks the marker first), and the base
    keys of its queues there (marked with the layout again after a loss). ``lock`` is
    held by the thread checking the marker."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.epoch: str | None = None
        self.suspect = False
        self.bases: set[str] = set()
        self.losses = 0


# (pid, pool key, prefix) -> its state
_states: dict[tuple[int, tuple[Any, ...], str], ServerState] = {}


def server_state(settings: RedisSettings) -> ServerState:
    """This process's state of ``settings``' server and prefix (made on first use)."""
    key = (os.getpid(), settings.pool_key(), settings.prefix)
    with _lock:
        state = _states.get(key)
        if state is None:
            state = _states[key] = ServerState()
        return state


def epoch_key(prefix: str) -> str:
    """The epoch marker of a prefix: ``{prefix:}:epoch`` (no queue has an empty name)."""
    return f"{{{prefix}:}}:epoch"


def check_epoch(client: redis.Redis, settings: RedisSettings, state: ServerState) -> bool:
    """Read the prefix's epoch marker (writing one when it is missing) and compare it with
    the one this process saw; return False, after logging "backend state lost" once,
    when it is gone or changed.

    One thread of the process checks at a time, and the others do not wait for it (a
    wait behind a server that stopped answering would add its timeout to each of them):
    they return True at once.
    """
    if not state.lock.acquire(blocking=False):
        return True
    try:
        key = epoch_key(settings.prefix)
        fresh = f"{time.time():.6f}-{secrets.token_hex(8)}"
        raw = client.get(key)  # a read: a full server or a replica still answers it
        if raw is None:
            with client.pipeline(transaction=True) as pipe:
                pipe.set(key, fresh, nx=True)
                pipe.get(key)
                raw = pipe.execute()[1]
        current = raw.decode() if isinstance(raw, bytes) else str(raw)
        seen, state.epoch = state.epoch, current
        state.suspect = False
        if seen is None or seen == current:
            return True
        state.losses += 1
        for base in list(state.bases):
            client.hsetnx(f"{base}:meta", "layout", LAYOUT_VERSION)
    finally:
        state.lock.release()
    logger.error(
        "Redis at %s: backend state lost: the epoch marker %s was %s and is now %s, so the "
        "server came back without its data (restarted without persistence, flushed, or failed "
        "over to a replica that had not received it); every job stored before is gone",
        settings.masked_url, key, seen, "missing (written again)" if current == fresh else current,
    )
    return False


def connect_kwargs(settings: RedisSettings, client_name: str) -> dict[str, Any]:
    """What every connection to ``settings``' server is opened with (database, login,
    timeouts, a client name), by the sync pools and the asyncio client alike."""
    return {
        "db": settings.db,
        "username": settings.username,
        "password": settings.password,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.socket_connect_timeout,
        "client_name": client_name,
    }


def client_for(settings: RedisSettings) -> redis.Redis:
    """A client on this process's pool for ``settings``' server (made on first use)."""
    key = (os.getpid(), settings.pool_key())
    with _lock:
        entry = _pools.get(key)
        if entry is None:
            for stale in [k for k in _pools if k[0] != key[0]]:
                del _pools[stale]  # a parent's pools: its sockets are not ours to use
            kwargs = connect_kwargs(settings, "typedq") | {
                "health_check_interval": settings.health_check_interval,
                "retry": Retry(NoBackoff(), 0),
                "max_connections": settings.max_connections,
            }
            entry = _pools[key] = _new_pool(settings, kwargs)
        entry[1] += 1
        pool = entry[0]
    if settings.cluster:
        return pool  # type: ignore[no-any-return]  # the ClusterClient, shared by the process
    return redis.Redis(connection_pool=pool)


def _new_pool(settings: RedisSettings, kwargs: dict[str, Any]) -> list[Any]:
    """``[pool, 0, sentinel manager or None, held connections or None]`` for
    ``settings``' server (with a Cluster, the cluster client stands for the pool; see
    :func:`evalsha` for the held connections)."""
    if settings.cluster:
        from typedq.backends._redis_cluster import new_cluster_client  # noqa: PLC0415  # Cluster only

        with map_errors(settings):  # the client reads the slot map from a startup node now
            return [new_cluster_client(settings.nodes, kwargs, tls=settings.tls), 0, None, None]
    held: list[Any] | None = [] if settings.max_connections is None else None
    if not settings.sentinels:
        if settings.tls:
            kwargs["connection_class"] = redis.SSLConnection
        return [redis.ConnectionPool(host=settings.host, port=settings.port, **kwargs), 0, None, held]
    manager = Sentinel(
        list(settings.sentinels),
        sentinel_kwargs={
            "password": settings.sentinel_password,
            "socket_timeout": settings.socket_timeout,
            "socket_connect_timeout": settings.socket_connect_timeout,
            "retry": Retry(NoBackoff(), 0),
            "client_name": "typedq-sentinel",
        },
    )
    if settings.tls:
        kwargs["connection_class"] = SentinelManagedSSLConnection
    pool = SentinelConnectionPool(settings.service, manager, **kwargs)  # type: ignore[no-untyped-call]  # redis-py leaves it unannotated
    return [pool, 0, manager, held]


def held_connections(settings: RedisSettings) -> list[Any] | None:
    """The list of connections this process's script calls to ``settings``' server keep
    between calls (see :func:`evalsha`); None: they go back to the pool."""
    entry = _pools.get((os.getpid(), settings.pool_key()))
    return None if entry is None else entry[3]


def load_scripts(client: redis.Redis, settings: RedisSettings, scripts: Iterable[Any]) -> None:
    """Load the scripts on the server once per process (``SCRIPT LOAD``, one pipeline), so
    the first call of each is an ``EVALSHA`` that hits; one that was flushed since is
    loaded again on ``NOSCRIPT`` by redis-py's ``Script``."""
    key = (os.getpid(), settings.pool_key())
    if key in _loaded:
        return
    if settings.cluster:  # SCRIPT LOAD goes to every primary; a Cluster pipeline sends to one
        for script in scripts:
            client.script_load(script.script)
        _loaded.add(key)
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
            if entry[3] is not None:
                entry[3].clear()  # the pool's disconnect() below closes them (they are in use)
            if settings.cluster:
                entry[0].close()
            else:
                entry[0].disconnect()
            if entry[2] is not None:
                for sentinel in entry[2].sentinels:
                    sentinel.close()


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
    except RedisClusterException as exc:  # no node of a Cluster answers, or its slots are not served
        raise BackendUnavailableError(
            f"Redis Cluster at {settings.masked_url} is unavailable: {type(exc).__name__}: {exc}"
        ) from exc
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        state = _states.get((os.getpid(), settings.pool_key(), settings.prefix))
        if state is not None:
            state.suspect = True  # the server may come back without its data
        raise BackendUnavailableError(
            f"Redis at {settings.masked_url} is unavailable: {type(exc).__name__}: {exc}"
        ) from exc
    except redis.OutOfMemoryError as exc:
        raise BackendWritesRefusedError(
            f"Redis at {settings.masked_url} is full (maxmemory reached under maxmemory-policy "
            f"noeviction) and refused a write; nothing of it was stored: OOM {exc}"
        ) from exc
    except redis.ReadOnlyError as exc:
        raise BackendWritesRefusedError(
            f"Redis at {settings.masked_url} is a read-only replica and refused a write; nothing "
            f"of it was stored (point typedq at the primary): READONLY {exc}"
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
        BackendConfigError: the server may evict keys and the URL says
            ``eviction=refuse`` (nothing is written).
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
    _check_eviction(client, settings)
    if layout is None:
        client.hsetnx(f"{base}:meta", "layout", LAYOUT_VERSION)


def _check_eviction(client: redis.Redis, settings: RedisSettings) -> None:
    """Warn once per process and server (or refuse, with ``eviction=refuse``) a server
    whose ``maxmemory-policy`` is not ``noeviction``."""
    refuse = settings.eviction == "refuse"
    server = settings.pool_key()
    if server in _warned and not refuse:
        return
    try:
        policy = client.config_get("maxmemory-policy").get("maxmemory-policy")
    except redis.ResponseError:  # CONFIG is renamed or refused on managed servers
        return
    if policy is None or policy == "noeviction":
        return
    if refuse:
        raise BackendConfigError(
            "maxmemory-policy", policy,
            "noeviction (under memory pressure any other policy may evict jobs; the URL says "
            "eviction=refuse, eviction=warn would only warn)",
            url=f"Redis at {settings.masked_url}",
        )
    _warned.add(server)
    logger.warning(
        "Redis at %s has maxmemory-policy %s: under memory pressure it may evict jobs; "
        "set maxmemory-policy noeviction for a job queue (or eviction=refuse in the URL to "
        "refuse such a server)",
        settings.masked_url,
        policy,
    )


def queue_names(client: redis.Redis, prefix: str) -> list[str]:
    """The names of the queues under ``prefix`` that hold jobs or schedules, sorted: a
    ``SCAN`` for their ``meta`` keys (one a queue), then one read of each one's status
    index sizes and number of schedules."""
    head = f"{{{prefix}}}:{{"
    metas = client.scan_iter(match=f"{_glob_escape(head)}*}}:meta", count=1000)
    bases = sorted({k.decode()[: -len(":meta")] for k in metas})
    with client.pipeline(transaction=False) as pipe:
        for base in bases:
            queue_counts(pipe, base)
            pipe.hlen(f"{base}:schedules")
        replies = pipe.execute()
    step = len(STATUSES) + 1
    held = [sum(int(n) for n in replies[i : i + step]) for i in range(0, len(replies), step)]
    return sorted(base[len(head) : -1] for base, n in zip(bases, held, strict=True) if n > 0)


def _pack(conn: Any, command: tuple[Any, ...]) -> Any:
    """``command`` in the protocol: packed by hiredis in one call when it is installed
    (the scripts' arguments are str, bytes and int only, which it encodes as redis-py's
    encoder does: UTF-8, decimal), else by the connection (argument by argument)."""
    if _hiredis_pack is not None:
        return [_hiredis_pack(command)]
    return conn.pack_command(*command)


def evalsha(
    client: Any, script: Any, keys: Sequence[str], args: Sequence[Any], held: list[Any] | None = None
) -> Any:
    """``EVALSHA`` of a registered ``script`` on one connection of ``client``'s pool, read
    back on the same connection; on ``NOSCRIPT`` (the server lost its scripts) the script
    is loaded and called again. A connection that failed mid-call (anything but an error
    reply) is closed and given back to the pool, so no later call reads a stale reply.

    With ``held`` (the pool's held list, :func:`held_connections`), the connection comes
    from that list when it has one and goes back to it: the pool's own checkout and
    return cost more than the rest of a small call's client side. A held connection is
    checked before use as the pool checks its own (one ``poll``): one the server closed
    (a restart), or with bytes waiting, is reconnected, so the first call after a
    restart goes through as it does on a pooled connection. ``list.pop`` and ``append``
    are atomic, so threads share the list without a lock.
    """
    pool = client.connection_pool
    conn: Any = None
    if held is not None:
        try:
            conn = held.pop()
        except IndexError:
            pass
        else:
            try:
                stale = conn.can_read()
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                stale = True
            if stale:
                conn.disconnect()  # the send below connects it again
    if conn is None:
        conn = pool.get_connection()
    try:
        try:
            conn.send_packed_command(_pack(conn, ("EVALSHA", script.sha, len(keys), *keys, *args)))
            reply = conn.read_response()
        except redis.exceptions.NoScriptError:
            script.sha = client.script_load(script.script)
            conn.send_packed_command(_pack(conn, ("EVALSHA", script.sha, len(keys), *keys, *args)))
            reply = conn.read_response()
    except redis.ResponseError:
        _give_back(pool, conn, held)  # an error reply was read whole: the connection is fine
        raise
    except BaseException:
        conn.disconnect()
        pool.release(conn)
        raise
    _give_back(pool, conn, held)
    return reply


#: The largest packed argument sent (bytes); a bigger batch goes argument by argument
#: (a server refuses an argument over its ``proto-max-bulk-len``, 512 MiB by default).
PACK_MAX: Final = 64 * 1024 * 1024


def pack_args(args: Sequence[Any]) -> Sequence[Any]:
    """A packed script's arguments (text and bytes only) as one MessagePack array, or as
    they are when that would pass :data:`PACK_MAX` (the script takes both).

    Bytes go as MessagePack's raw type (``use_bin_type=False``): the server's MessagePack
    decoder knows no ``bin`` type; text goes as its UTF-8 bytes, as it does unpacked. A
    packer per call (0.25 µs more than a shared one), as calls come from many threads.
    """
    packed = msgpack.packb(args, use_bin_type=False)
    return (packed,) if len(packed) <= PACK_MAX else args


def _give_back(pool: Any, conn: Any, held: list[Any] | None) -> None:
    if held is None:
        pool.release(conn)
    else:
        held.append(conn)


class Link:
    """One queue object's way to its server: this process's client and registered scripts
    (a child after ``fork()`` opens its own), and the server's state it keeps an eye on.

    After a command failed on the connection, the first use of :attr:`client` checks
    that the server still holds its data (:func:`check_epoch`).
    """

    def __init__(
        self,
        settings: RedisSettings,
        base: str,
        scripts: Mapping[str, str],
        *,
        name: str,
        packed: frozenset[str] = frozenset(),
    ) -> None:
        self.settings = settings
        self.base = base
        self.name = name
        self._sources = scripts
        self._packed = packed
        self._keys = [base]
        self._pid = -1
        self._client: Any = None
        self._scripts: dict[str, Any] = {}
        self._held: list[Any] | None = None
        self.state = server_state(settings)

    def open(self) -> None:
        """The checks made when a queue opens (:func:`check_server`, the epoch marker)."""
        with map_errors(self.settings):
            check_server(self.client, self.settings, self.name, self.base)
            self.state.bases.add(self.base)
            check_epoch(self.client, self.settings, self.state)

    @property
    def client(self) -> Any:
        """This process's client of the server."""
        if self._pid != os.getpid():
            client = client_for(self.settings)
            self._scripts = {name: client.register_script(src) for name, src in self._sources.items()}
            with map_errors(self.settings):
                load_scripts(client, self.settings, self._scripts.values())
            self._client = client
            self._held = held_connections(self.settings)
            self._pid = os.getpid()
            state = server_state(self.settings)  # this process's, not a parent's
            if state is not self.state:
                state.epoch = state.epoch or self.state.epoch
                state.bases.add(self.base)
                self.state = state
        if self.state.suspect:
            with map_errors(self.settings):
                check_epoch(self._client, self.settings, self.state)
        return self._client

    @property
    def scripts(self) -> dict[str, Any]:
        """The registered scripts by name (each knows its SHA)."""
        return self._scripts

    def run(self, script: str, args: Sequence[Any], dlq: str | None = None) -> Any:
        """Run one registered script (EVALSHA; loaded again on NOSCRIPT); ``dlq``, the base
        key of a dead-letter queue of the same prefix, is its ``KEYS[2]``.

        On one server (or through Sentinel) the call takes a held connection (or one of
        the pool), sends ``EVALSHA`` and reads the reply itself (:func:`evalsha`),
        without redis-py's generic command path (its retry wrapper, of no retries here,
        and its timing hooks): a transition is most of typedq's traffic. A Cluster goes through
        redis-py's ``Script``, which finds the node of the keys' slot. The arguments of
        a script named in ``packed`` go packed (:func:`pack_args`).
        """
        client = self.client
        keys = self._keys if dlq is None else [self.base, dlq]
        if script in self._packed:
            args = pack_args(args)
        try:
            if self.settings.cluster:
                return self._scripts[script](keys, args, client)
            return evalsha(client, self._scripts[script], keys, args, self._held)
        except (redis.RedisError, RedisClusterException):
            with map_errors(self.settings):
                raise
        raise AssertionError("unreachable")  # map_errors raised

    def check_epoch(self) -> None:
        """Check the epoch marker now (a worker heartbeat does, see :func:`check_epoch`)."""
        client = self.client
        with map_errors(self.settings):
            check_epoch(client, self.settings, self.state)

    def release(self) -> None:
        """Give back this object's share of the process's pool (when it took one)."""
        if self._client is not None:
            release_client(self.settings)
