"""Async uses that must type-check cleanly under mypy --strict: async typed handlers, the
async client's typed refs, the async worker."""

from __future__ import annotations

from typing import assert_type

from pydantic import BaseModel

from typedq import AsyncJobQueueManager, AsyncJobRef, AsyncWorker, Job, JobQueue, JobQueueManager
from typedq.typed import JobType


class Fetch(BaseModel):
    url: str


fetch = JobType("fetch", Fetch, result=int)
manager = JobQueueManager({"queues": {"io": {"worker_class": "async", "concurrency": 50}}})


@manager.handler(fetch)
async def do_fetch(p: Fetch) -> int:
    return len(p.url)


async def client_code() -> None:
    async with AsyncJobQueueManager(manager=manager) as jobs:
        ref = await jobs.enqueue(fetch, Fetch(url="u"), priority=3)
        assert_type(ref, AsyncJobRef[int])
        assert_type(await ref.result(timeout=1.0), int)
        assert_type(await jobs.wait_for_job(ref.job_id), Job)
        again = jobs.ref(fetch, ref.job_id)
        assert_type(await again.result(), int)
        assert_type(await jobs.submit("fetch", {"url": "u"}), str)


worker = AsyncWorker(JobQueue("io"), manager.handlers, concurrency=10)
assert_type(worker.concurrency, int)
