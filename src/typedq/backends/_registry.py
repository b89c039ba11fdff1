"""The backend registry: one place that maps a URL scheme to its backend.

Each :class:`Backend` says how to open a queue from a URL (with its name, clock and
codec), whether processes and hosts can share it, whether it is durable, how to list the
queues its store holds, and where its data lives on this machine when it is a file.
Optional backends import their driver only when a URL of theirs is opened; a missing
driver is a ``ConfigError`` naming the extra to install. The manager, the CLI, the demo
and the serving code ask this registry instead of testing URL prefixes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue, parse_sqlite_url
from typedq.clock import Clock
from typedq.errors import ConfigError
from typedq.serializers.base import FrameCodec

if TYPE_CHECKING:
    from typedq.backends.base import Queue

__all__ = ["BACKENDS", "Backend", "backend_for"]

#: ``opener(url, name, clock, codec)``
Opener = Callable[[str, str, Clock, "FrameCodec | None"], "Queue"]
#: ``lister(queue)``: the names of the queues of the store ``queue`` is on.
Lister = Callable[["Queue"], list[str]]


@dataclass(frozen=True)
class Backend:
    """What typedq knows of one storage backend.

    Attributes:
        name: the backend's name (``"memory"``, ``"sqlite"``, ``"redis"``).
        schemes: the URL schemes it serves.
        open: ``open(url, name, clock, codec)`` returns the queue ``name``.
        shared: whether several processes can use one queue (worker processes).
        multi_host: whether processes of several hosts can use one queue.
        durable: whether jobs outlive the process that enqueued them.
        extra: the ``typedq[...]`` extra its driver comes with, or None.
        local_path: the file a URL names on this host, for file backends.
        list_queues: the names of every queue of the store a queue of it is on (those
            holding jobs or schedules), sorted; None for a store that lives in one
            process, whose queues are the ones that process made.
    """

    name: str
    schemes: tuple[str, ...]
    open: Opener
    shared: bool
    multi_host: bool
    durable: bool
    extra: str | None = None
    local_path: Callable[[str], Path] | None = None
    list_queues: Lister | None = None


def _open_memory(url: str, name: str, clock: Clock, codec: FrameCodec | None) -> Queue:
    return JobQueue(name, clock=clock, codec=codec)


def _open_sqlite(url: str, name: str, clock: Clock, codec: FrameCodec | None) -> Queue:
    path, options = parse_sqlite_url(url)
    durability = options.get("durability", "normal")
    return SQLiteQueue(path, name=name, clock=clock, codec=codec, durability=durability)


def _sqlite_path(url: str) -> Path:
    return Path(parse_sqlite_url(url)[0])


def _sqlite_queues(queue: Queue) -> list[str]:
    if not isinstance(queue, SQLiteQueue):
        raise TypeError(f"a SQLite queue, not {type(queue).__name__}")
    return queue.queue_names()


def _redis_queues(queue: Queue) -> list[str]:
    from typedq.backends.redis import RedisQueue  # noqa: PLC0415  # needs the optional driver

    if not isinstance(queue, RedisQueue):
        raise TypeError(f"a Redis queue, not {type(queue).__name__}")
    return queue.queue_names()


def _open_redis(url: str, name: str, clock: Clock, codec: FrameCodec | None) -> Queue:
    try:
        import redis  # noqa: F401, PLC0415  # optional driver: imported only for a redis:// URL
    except ImportError as exc:
        raise ConfigError(
            "backend", url.split("://", 1)[0] + "://...", "a backend whose driver is installed: "
            "pip install 'typedq[redis]'"
        ) from exc
    from typedq.backends.redis import RedisQueue  # noqa: PLC0415  # needs the optional driver

    return RedisQueue(url, name=name, clock=clock, codec=codec)


#: Every backend this build knows, by name.
BACKENDS: Final = {
    b.name: b
    for b in (
        Backend("memory", ("memory",), _open_memory, shared=False, multi_host=False, durable=False),
        Backend(
            "sqlite", ("sqlite",), _open_sqlite, shared=True, multi_host=False, durable=True,
            local_path=_sqlite_path, list_queues=_sqlite_queues,
        ),
        Backend(
            "redis",
            ("redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster"),
            _open_redis,
            shared=True, multi_host=True, durable=True, extra="redis", list_queues=_redis_queues,
        ),
    )
}
_BY_SCHEME: Final = {scheme: b for b in BACKENDS.values() for scheme in b.schemes}
#: URL schemes this build can open.
SCHEMES: Final = tuple(_BY_SCHEME)


def backend_for(url: object) -> Backend:
    """The backend a URL names.

    Raises:
        ConfigError: ``url`` is not a URL, or names an unknown scheme (field ``backend``).
    """
    if not isinstance(url, str) or "://" not in url:
        raise ConfigError("backend", url, f"a URL such as 'memory://'; schemes: {', '.join(SCHEMES)}")
    backend = _BY_SCHEME.get(url.split("://", 1)[0].lower())
    if backend is None:
        raise ConfigError("backend", url, f"a URL with one of the schemes: {', '.join(SCHEMES)}")
    return backend
