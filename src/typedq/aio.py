"""``AsyncJobQueueManager``: the manager's client API for asyncio code.

For FastAPI, aiohttp or any coroutine: every method is awaited and never blocks the event
loop. ::

    async with AsyncJobQueueManager({"backend": "redis://localhost:6379/0"}) as jobs:
        ref = await jobs.enqueue(resize, Resize(url="u", width=3))   # AsyncJobRef[str]
        url = await ref.result(timeout=30)                            # a str

How each call keeps the loop free:

* **waiting** (``wait_for_job``, ``wait_for_completion``, ``AsyncJobRef.result``) polls
  the job's status with ``asyncio.sleep`` between reads (1 ms at first, doubling up to
  :data:`~typedq._waiting.MAX_POLL_S`). On Redis each read is a ``redis.asyncio`` call on
  the caller's loop (``RedisQueue.async_status_reader``); elsewhere it runs in the
  client's thread pool.
* **everything else** (submitting, reads, cancel) calls the sync manager in the client's
  thread pool (``threads`` threads). SQLite's driver (``sqlite3``) only has blocking
  calls, which may wait for the database's write lock: run on the loop they would stall
  every other coroutine, in a thread they stall only that thread. On Redis, submissions
  run the same Lua scripts as the sync backend, through its connection pool, also in the
  thread pool; only the waits use ``redis.asyncio``.

The wrapped :class:`~typedq.manager.JobQueueManager` is available as ``.manager`` (to
register handlers, or start workers in this process: ``await jobs.start_workers()``).
A manager made elsewhere gives its own client as ``manager.aio``.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Any, Generic, TypeVar, Unpack

from pydantic import BaseModel

from typedq._typed_api import EnqueueOptions
from typedq._validate import require_number
from typedq._waiting import MAX_POLL_S
from typedq.backends.base import Queue
from typedq.clock import Clock, system_clock
from typedq.errors import JobFailedError, JobNotFoundError, WaitTimeoutError
from typedq.events import EventHandler
from typedq.job import TERMINAL_STATUSES, Job, JobStatus
from typedq.manager import JobQueueManager
from typedq.typed import JobType
from typedq.worker import Worker

__all__ = ["DEFAULT_THREADS", "AsyncBoundJobType", "AsyncJobQueueManager", "AsyncJobRef"]

P = TypeVar("P", bound=BaseModel)
R = TypeVar("R")
T = TypeVar("T")

#: Threads of an async client's pool (the sync backend's calls run there).
DEFAULT_THREADS = 8
_FIRST_POLL_S = 0.001


class AsyncJobRef(Generic[R]):
    """A handle on a submitted typed job for asyncio code; ``await result()`` is an ``R``."""

    def __init__(self, client: AsyncJobQueueManager, job_type: JobType[Any, R], job_id: str) -> None:
        self._client = client
        self.job_type = job_type
        self.job_id = job_id

    def __repr__(self) -> str:
        return f"AsyncJobRef({self.job_type.name!r}, {self.job_id!r})"

    async def job(self) -> Job:
        """The stored job as it is now."""
        return await self._client.get_job(self.job_id)

    async def status(self) -> JobStatus:
        """The job's current status."""
        return (await self.job()).status

    async def cancel(self) -> bool:
        """Cancel the job (see ``JobQueueManager.cancel``)."""
        return await self._client.cancel(self.job_id)

    async def result(self, timeout: float | None = None) -> R:
        """Wait for the job to end and return its typed result.

        Raises:
            WaitTimeoutError: it has not ended within ``timeout`` seconds.
            JobFailedError: it ended FAILED, DEAD or CANCELLED.
        """
        job = await self._client.wait_for_job(self.job_id, timeout)
        if job.status is not JobStatus.COMPLETED:
            raise JobFailedError(self.job_id, job.status.value, job.error)
        return self.job_type.load_result(job.result)


class AsyncBoundJobType(Generic[P, R]):
    """A job type bound to an async client: ``await jobs.of(jt).enqueue(payload)``."""

    def __init__(self, client: AsyncJobQueueManager, job_type: JobType[P, R]) -> None:
        self._client = client
        self.job_type = job_type

    async def enqueue(self, payload: P, **options: Unpack[EnqueueOptions]) -> AsyncJobRef[R]:
        """Submit one job of this type; see :meth:`AsyncJobQueueManager.enqueue`."""
        return await self._client.enqueue(self.job_type, payload, **options)

    def ref(self, job_id: str) -> AsyncJobRef[R]:
        """A typed handle on an already submitted job of this type."""
        return AsyncJobRef(self._client, self.job_type, job_id)


class AsyncJobQueueManager:
    """The manager's API as coroutines (see the module docstring).

    Args:
        config: the manager's config, when ``manager`` is not given.
        event_handler: the manager's event handler, when ``manager`` is not given.
        manager: a manager to wrap (it is closed by :meth:`close` only when this client
            made it).
        clock: the manager's clock, when ``manager`` is not given.
        threads: threads of the pool the sync calls run in (an int from 1 to 256).

    Raises:
        ConfigError: an option of the config, or ``threads``, out of range.
    """

    def __init__(
        self,
        config: Mapping[str, Any] | None = None,
        event_handler: EventHandler | None = None,
        *,
        manager: JobQueueManager | None = None,
        clock: Clock = system_clock,
        threads: int = DEFAULT_THREADS,
    ) -> None:
        require_number("threads", threads, minimum=1, maximum=256, integer=True)
        self._owns = manager is None
        self.manager = JobQueueManager(config, event_handler, clock=clock) if manager is None else manager
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="typedq-aio")
        # Queue name -> its redis.asyncio status reader (Redis queues only).
        self._readers: dict[str, Any] = {}
        self._closed = False

    # -- plumbing -----------------------------------------------------------------------

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a sync call in the client's thread pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, functools.partial(fn, *args, **kwargs))

    def _reader(self, queue: Queue) -> Any:
        """The ``redis.asyncio`` status reader of a Redis queue, or None."""
        reader = self._readers.get(queue.name)
        if reader is None:
            make = getattr(queue, "async_status_reader", None)
            if make is None:
                return None
            reader = self._readers[queue.name] = make()
        return reader

    # -- submitting ---------------------------------------------------------------------

    async def submit(self, job_type: str, payload: dict[str, Any] | None = None, **job_fields: Any) -> str:
        """Submit an untyped job; see ``JobQueueManager.submit``. Returns its id."""
        return await self._call(self.manager.submit, job_type, payload, **job_fields)

    async def enqueue(
        self, job_type: JobType[P, R], payload: P, **options: Unpack[EnqueueOptions]
    ) -> AsyncJobRef[R]:
        """Submit a typed job; see ``JobQueueManager.enqueue``.

        Returns:
            A handle whose ``await result()`` is an ``R``.

        Raises:
            PayloadValidationError: ``payload`` is not a valid ``P``.
            NoHandlerError, InvalidJobError: as ``submit``.
        """
        ref = await self._call(self.manager.enqueue, job_type, payload, **options)
        return AsyncJobRef(self, job_type, ref.job_id)

    def of(self, job_type: JobType[P, R]) -> AsyncBoundJobType[P, R]:
        """Bind ``job_type``: ``await jobs.of(jt).enqueue(payload)`` (a wrong payload then
        reads "expected <model>" in mypy's message)."""
        return AsyncBoundJobType(self, job_type)

    def ref(self, job_type: JobType[Any, R], job_id: str) -> AsyncJobRef[R]:
        """A typed handle on an already submitted job of ``job_type``."""
        return AsyncJobRef(self, job_type, job_id)

    # -- reading and control --------------------------------------------------------------

    async def get_job(self, job_id: str) -> Job:
        """The job ``job_id`` from whichever queue holds it.

        Raises:
            JobNotFoundError: no queue holds it.
        """
        return await self._call(self.manager.get_job, job_id)

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job; see ``JobQueueManager.cancel``."""
        return await self._call(self.manager.cancel, job_id)

    async def get_stats(self) -> dict[str, Any]:
        """The manager's statistics (``JobQueueManager.get_stats``)."""
        return await self._call(self.manager.get_stats)

    # -- waiting ------------------------------------------------------------------------

    async def wait_for_job(self, job_id: str, timeout: float | None = None) -> Job:
        """Wait until the job ends (COMPLETED, FAILED, DEAD or CANCELLED); return it.

        Raises:
            JobNotFoundError: no queue holds ``job_id`` (or it was purged meanwhile).
            WaitTimeoutError: it has not ended within ``timeout`` seconds (the job goes on).
        """
        if timeout is not None:
            require_number("timeout", timeout, minimum=0)
        deadline = None if timeout is None else time.monotonic() + timeout
        job = await self.get_job(job_id)
        if job.status in TERMINAL_STATUSES:
            return job
        queue = self.manager.get_queue(job.queue)
        reader = self._reader(queue)
        pause = _FIRST_POLL_S
        status: JobStatus | None = job.status
        while True:
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise WaitTimeoutError(job_id, timeout or 0.0, status.value if status else "unknown")
            await asyncio.sleep(pause if left is None else min(pause, left))
            pause = min(pause * 2, MAX_POLL_S)
            if reader is not None:
                status = await reader.status(job_id)
                if status is None:
                    raise JobNotFoundError(job_id, queue=queue.name)
            else:
                status = (await self._call(queue.get_job, job_id)).status
            if status in TERMINAL_STATUSES:
                return await self._call(queue.get_job, job_id)

    async def wait_for_completion(self, job_ids: Iterable[str], timeout: float | None = None) -> bool:
        """Wait until every job of ``job_ids`` has ended; False at the timeout.

        Raises:
            JobNotFoundError: an id no queue holds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        for job_id in dict.fromkeys(job_ids):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            try:
                await self.wait_for_job(job_id, left)
            except WaitTimeoutError:
                return False
        return True

    # -- workers and lifecycle ------------------------------------------------------------

    async def start_workers(self, queue: str | None = None, count: int | None = None) -> list[Worker]:
        """Start workers in this process (``JobQueueManager.start_workers``); each runs in
        its own thread (an async worker runs its own event loop, not the caller's)."""
        return await self._call(self.manager.start_workers, queue, count)

    @property
    def closed(self) -> bool:
        """Whether the client was closed (its calls then fail)."""
        return self._closed

    def shutdown_threads(self) -> None:
        """Close the client without awaiting: stop its thread pool (calls in progress
        finish). The manager calls it when it closes; its Redis readers, bound to the
        event loop that made them, are closed only by :meth:`close`."""
        self._closed = True
        self._pool.shutdown(wait=False)

    async def close(self) -> None:
        """Close the Redis readers and the thread pool; close the manager when this client
        made it (its workers stop gracefully, in a thread)."""
        if self._closed:
            return
        self._closed = True
        readers, self._readers = list(self._readers.values()), {}
        for reader in readers:
            await reader.aclose()
        try:
            if self._owns:
                await self._call(self.manager.close)
        finally:
            self._pool.shutdown(wait=False)

    async def __aenter__(self) -> AsyncJobQueueManager:
        """Return the client (workers are started only by :meth:`start_workers`)."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the client (see :meth:`close`)."""
        await self.close()

    def __repr__(self) -> str:
        return f"AsyncJobQueueManager({self.manager!r})"
