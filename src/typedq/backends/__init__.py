"""Storage backends behind the ``Queue`` protocol, chosen by URL.

``open_queue("memory://", name="default")`` returns a :class:`JobQueue`. The URL scheme
picks the backend; switching backends changes no application code.
"""

from __future__ import annotations

from typedq.backends.base import Claim, Queue
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue, parse_sqlite_url
from typedq.clock import Clock, system_clock
from typedq.errors import ConfigError
from typedq.serializers.base import FrameCodec

__all__ = ["SCHEMES", "Claim", "JobQueue", "Queue", "SQLiteQueue", "open_queue"]

#: URL schemes this build can open.
SCHEMES = ("memory", "sqlite")


def open_queue(
    url: str,
    *,
    name: str = "default",
    clock: Clock = system_clock,
    codec: FrameCodec | None = None,
) -> Queue:
    """Open the queue named ``name`` on the backend ``url`` names.

    Args:
        url: ``memory://``; ``sqlite:///relative/jobs.db`` or ``sqlite:////abs/jobs.db``,
            optionally ``?durability=full`` (see ``SCHEMES``).
        name: the queue's name.
        clock: the time source.
        codec: how payloads and results are encoded. Durable backends store its frames;
            the memory backend holds objects and, when given a codec, round-trips each
            payload through it at enqueue (size limit and isolation from the caller).

    Raises:
        ConfigError: the URL is malformed or names an unknown scheme (field ``backend``).
        BackendError: the backend refused to open (see its class).
    """
    text: object = url
    if not isinstance(text, str) or "://" not in text:
        raise ConfigError("backend", url, f"a URL such as 'memory://'; schemes: {', '.join(SCHEMES)}")
    scheme = url.split("://", 1)[0].lower()
    if scheme == "memory":
        return JobQueue(name, clock=clock, codec=codec)
    if scheme == "sqlite":
        path, options = parse_sqlite_url(url)
        durability = options.get("durability", "normal")
        return SQLiteQueue(path, name=name, clock=clock, codec=codec, durability=durability)
    raise ConfigError("backend", url, f"a URL with one of the schemes: {', '.join(SCHEMES)}")
