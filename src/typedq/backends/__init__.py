"""Storage backends behind the ``Queue`` protocol, chosen by URL.

``open_queue("memory://", name="default")`` returns a :class:`JobQueue`. The URL scheme
picks the backend (see ``_registry``); switching backends changes no application code.
"""

from __future__ import annotations

from typedq.backends._registry import BACKENDS, SCHEMES, Backend, backend_for
from typedq.backends.base import Claim, Queue
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import Clock, system_clock
from typedq.serializers.base import FrameCodec

__all__ = [
    "BACKENDS",
    "SCHEMES",
    "Backend",
    "Claim",
    "JobQueue",
    "Queue",
    "SQLiteQueue",
    "backend_for",
    "open_queue",
]


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
            optionally ``?durability=full``; ``redis://[user:pass@]host:port/db?prefix=typedq``
            or ``rediss://`` (TLS), ``redis+sentinel://host:port[,host:port...]/service/db``,
            ``redis+cluster://host:port[,host:port...]`` (a Redis Cluster)
            (needs ``pip install 'typedq[redis]'``). See ``SCHEMES``.
        name: the queue's name.
        clock: the time source.
        codec: how payloads and results are encoded. Durable backends store its frames;
            the memory backend holds objects and, when given a codec, round-trips each
            payload, metadata and result through it when handed over (the same refusals
            as a durable backend, and isolation from the caller).

    Raises:
        ConfigError: the URL is malformed, names an unknown scheme (field ``backend``), or
            a backend whose driver is not installed (the message names the extra).
        BackendError: the backend refused to open (see its class).
    """
    return backend_for(url).open(url, name, clock, codec)
