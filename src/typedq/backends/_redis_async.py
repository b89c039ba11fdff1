"""Reading job statuses of the Redis backend with ``redis.asyncio``, for asyncio callers.

The async client API (``typedq.aio``) waits for jobs by polling their status. On Redis it
does so with a ``redis.asyncio`` client: one ``HGET B:j:<job_id> s`` per poll, awaited on
the caller's event loop, no thread involved. Every other call of the async client goes
through the sync backend in a thread (its scripts, codecs and error mapping are the sync
backend's; this module only reads one field).

Sentinel URLs use ``redis.asyncio.sentinel`` with the same settings as the sync pool.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aredis
from redis.asyncio.sentinel import Sentinel as AsyncSentinel

from typedq.backends._redis_conn import connect_kwargs
from typedq.backends._redis_keys import RedisSettings
from typedq.errors import BackendUnavailableError
from typedq.job import JobStatus

__all__ = ["AsyncStatusReader"]

_STATUS = {s.value.encode(): s for s in JobStatus}


class AsyncStatusReader:
    """Reads the status of one queue's jobs with ``redis.asyncio``.

    Args:
        settings: the queue's parsed URL.
        base: the queue's base key (``_redis_keys.base_key``).
    """

    def __init__(self, settings: RedisSettings, base: str) -> None:
        self._base = base
        self._masked = settings.masked_url
        kwargs = connect_kwargs(settings, "typedq-aio")
        if settings.sentinels:
            sentinel = AsyncSentinel(
                list(settings.sentinels),
                sentinel_kwargs={"password": settings.sentinel_password},
                ssl=settings.tls,
                **kwargs,
            )
            self._client: Any = sentinel.master_for(settings.service or "mymaster")
        else:
            self._client = aredis.Redis(host=settings.host, port=settings.port, ssl=settings.tls, **kwargs)

    async def status(self, job_id: str) -> JobStatus | None:
        """The job's status, or None when the queue holds no such job.

        Raises:
            BackendUnavailableError: the server did not answer.
        """
        try:
            raw = await self._client.hget(f"{self._base}:j:{job_id}", "s")
        except (aredis.ConnectionError, aredis.TimeoutError, OSError) as exc:
            raise BackendUnavailableError(f"redis server {self._masked} unavailable: {exc}") from exc
        return None if raw is None else _STATUS[raw]

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._client.aclose()
