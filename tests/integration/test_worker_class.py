"""Which worker the manager starts for a queue: ``worker_class`` and ``concurrency``."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from typedq import AsyncWorker, JobQueueManager, JobStatus, Worker
from typedq.errors import ConfigError
from typedq.shell import register_shell_jobs


async def async_handler(payload: dict[str, Any]) -> int:
    await asyncio.sleep(0)
    return 1


def sync_handler(payload: dict[str, Any]) -> int:
    return 2


def test_auto_picks_async_only_when_every_handler_is_async() -> None:
    manager = JobQueueManager({"scheduler": False})
    try:
        assert manager.worker_class("default") == "thread"  # no handler yet
        manager.register_handler("a", async_handler)
        register_shell_jobs(manager)  # not counted
        assert manager.worker_class("default") == "async"
        manager.register_handler("s", sync_handler, queue="other")
        assert manager.worker_class("default") == "async"
        assert manager.worker_class("other") == "thread"
        manager.register_handler("s2", sync_handler)
        assert manager.worker_class("default") == "thread"
    finally:
        manager.close()


def test_the_setting_overrides_auto_and_sets_concurrency() -> None:
    manager = JobQueueManager(
        {
            "scheduler": False, "max_workers": 1,
            "queues": {"io": {"worker_class": "async", "concurrency": 7}, "cpu": {"worker_class": "thread"}},
        }
    )
    try:
        manager.register_handler("s", sync_handler, queue="io")
        manager.register_handler("a", async_handler, queue="cpu")
        (io_worker,) = manager.start_workers("io")
        (cpu_worker,) = manager.start_workers("cpu")
        assert isinstance(io_worker, AsyncWorker)
        assert io_worker.concurrency == 7
        assert type(cpu_worker) is Worker
        # Each runs the other kind of handler too: sync in the pool, async with its own loop.
        ids = [manager.submit("s", {}), manager.submit("a", {})]
        assert manager.wait_for_completion(ids, timeout=10)
        assert [manager.get_job(i).result for i in ids] == [2, 1]
    finally:
        manager.close()


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"worker_class": "fibers"}, "worker_class"),
        ({"concurrency": 0}, "concurrency"),
        ({"queues": {"q": {"concurrency": 10_001}}}, "queues.q.concurrency"),
        ({"queues": {"q": {"worker_class": None}}}, "queues.q.worker_class"),
    ],
)
def test_bad_settings_name_the_field(settings: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        JobQueueManager(settings)
    assert info.value.field == field


def test_stop_past_the_grace_cancels_async_tasks_and_gives_their_jobs_back() -> None:
    entered = threading.Event()

    async def forever(payload: dict[str, Any]) -> None:
        entered.set()
        await asyncio.sleep(3600)

    manager = JobQueueManager({"scheduler": False, "max_workers": 1})
    try:
        manager.register_handler("forever", forever)
        job_id = manager.submit("forever", {})
        (worker,) = manager.start_workers()
        assert entered.wait(10)
        assert manager.stop_workers(timeout=0.1) == []  # cancelled, not abandoned
        assert not worker.is_alive()
        job = manager.get_job(job_id)
        assert (job.status, job.retry_count) == (JobStatus.PENDING, 0)  # interrupted, not failed
    finally:
        manager.close()
