"""``AsyncJobQueueManager`` on every backend: typed submissions and results awaited from a
coroutine, waits that leave the event loop free, failures and unknown ids as typed errors,
and async workers started from the client.

Each test runs its coroutine with ``asyncio.run``; workers run in their own threads.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import BaseModel
from tests.conformance.conftest import redis_test_url

from typedq import AsyncJobQueueManager, AsyncWorker, JobQueueManager
from typedq.errors import ConfigError, JobFailedError, JobNotFoundError, WaitTimeoutError
from typedq.job import JobStatus
from typedq.typed import JobType

pytestmark = pytest.mark.timeout(30)


class Num(BaseModel):
    n: int


double = JobType("aio-double", Num, result=int)
broken = JobType("aio-broken", Num, result=int, max_retries=0)


@pytest.fixture(
    params=[
        pytest.param("memory", id="memory"),
        pytest.param("sqlite", id="sqlite"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
    ]
)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """``memory://``, a SQLite file in ``tmp_path``, or a Redis prefix of the test's own
    (its keys deleted at teardown)."""
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'aio.db'}"
    else:
        with redis_test_url() as url:
            yield url


def client(url: str) -> AsyncJobQueueManager:
    jobs = AsyncJobQueueManager({"backend": url, "scheduler": False, "max_workers": 1})

    async def do_double(p: Num) -> int:
        await asyncio.sleep(0)
        return p.n * 2

    async def do_broken(p: Num) -> int:
        raise ValueError(f"cannot handle {p.n}")

    jobs.manager.register(double, do_double)
    jobs.manager.register(broken, do_broken)
    return jobs


def test_enqueue_and_await_typed_results(backend_url: str) -> None:
    async def main() -> None:
        async with client(backend_url) as jobs:
            started = await jobs.start_workers()
            assert [type(w) for w in started] == [AsyncWorker]  # all-async queue
            refs = [await jobs.enqueue(double, Num(n=n)) for n in range(5)]
            results = await asyncio.gather(*(ref.result(timeout=10) for ref in refs))
            assert results == [0, 2, 4, 6, 8]
            job = await jobs.wait_for_job(refs[0].job_id, timeout=5)
            assert job.status is JobStatus.COMPLETED
            assert await refs[1].status() is JobStatus.COMPLETED
            bound = await jobs.of(double).enqueue(Num(n=50), priority=9)
            assert await bound.result(timeout=10) == 100
            job_id = await jobs.submit("aio-double", {"n": 21})
            assert await jobs.ref(double, job_id).result(timeout=10) == 42

    asyncio.run(main())


def test_waiting_leaves_the_loop_free(backend_url: str) -> None:
    """No worker runs: the wait times out, and meanwhile other coroutines kept running."""

    async def main() -> None:
        async with client(backend_url) as jobs:
            ref = await jobs.enqueue(double, Num(n=1))
            ticks = 0

            async def ticker() -> None:
                nonlocal ticks
                while True:
                    ticks += 1
                    await asyncio.sleep(0.005)

            task = asyncio.create_task(ticker())
            with pytest.raises(WaitTimeoutError, match="PENDING"):
                await ref.result(timeout=0.3)
            task.cancel()
            assert ticks >= 3  # a blocking wait would have let it tick at most once
            assert not await jobs.wait_for_completion([ref.job_id], timeout=0.01)

    asyncio.run(main())


def test_failed_jobs_and_unknown_ids_raise_typed_errors(backend_url: str) -> None:
    async def main() -> None:
        async with client(backend_url) as jobs:
            await jobs.start_workers()
            ref = await jobs.enqueue(broken, Num(n=7))
            with pytest.raises(JobFailedError, match="cannot handle 7"):
                await ref.result(timeout=10)
            with pytest.raises(JobNotFoundError):
                await jobs.wait_for_job("no-such-job", timeout=1)
            with pytest.raises(ConfigError, match="timeout"):
                await jobs.wait_for_job(ref.job_id, timeout=-1)

    asyncio.run(main())


def test_cancel_a_pending_job(backend_url: str) -> None:
    async def main() -> None:
        async with client(backend_url) as jobs:
            ref = await jobs.enqueue(double, Num(n=1))
            assert await ref.cancel()
            job = await jobs.wait_for_job(ref.job_id, timeout=5)
            assert job.status is JobStatus.CANCELLED
            with pytest.raises(JobFailedError, match="CANCELLED"):
                await ref.result(timeout=5)

    asyncio.run(main())


def test_redis_waits_use_redis_asyncio(backend_url: str) -> None:
    async def main() -> None:
        async with client(backend_url) as jobs:
            ref = await jobs.enqueue(double, Num(n=2))
            with pytest.raises(WaitTimeoutError):  # no worker yet: the wait polls
                await ref.result(timeout=0.05)
            await jobs.start_workers()
            assert await ref.result(timeout=10) == 4
            readers = list(jobs._readers.values())
            if backend_url.startswith("redis"):
                from typedq.backends._redis_async import AsyncStatusReader

                assert [type(r) for r in readers] == [AsyncStatusReader]
            else:
                assert readers == []  # polled through the thread pool

    asyncio.run(main())


def test_threads_are_validated() -> None:
    with pytest.raises(ConfigError, match="threads"):
        AsyncJobQueueManager(threads=0)


def test_manager_aio_is_a_client_bound_to_the_manager(backend_url: str) -> None:
    manager = JobQueueManager({"backend": backend_url, "scheduler": False, "max_workers": 1})

    async def do_double(p: Num) -> int:
        return p.n * 2

    manager.register(double, do_double)
    try:
        jobs = manager.aio
        assert isinstance(jobs, AsyncJobQueueManager)
        assert jobs.manager is manager
        assert manager.aio is jobs  # one client per manager

        async def main() -> None:
            async with manager.aio as aio:
                await aio.start_workers()
                ref = await aio.enqueue(double, Num(n=21))
                assert await ref.result(timeout=10) == 42
                assert (await aio.get_job(ref.job_id)).status is JobStatus.COMPLETED

        asyncio.run(main())
        assert jobs.closed
        # Closing the client left the manager open; the next use gets a new client.
        assert manager.get_stats()["total_completed"] == 1
        again = manager.aio
        assert again is not jobs
        assert not again.closed
        assert asyncio.run(again.submit(double.name, {"n": 1}))
    finally:
        manager.close()
    assert again.closed  # closing the manager stops its client's threads
