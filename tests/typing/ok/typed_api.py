"""Typed-API uses that must type-check cleanly under mypy --strict (the async ones too:
async typed handlers, the async client's typed refs, the async worker)."""

from __future__ import annotations

from typing import Any, assert_type

from pydantic import BaseModel

from typedq import (
    AsyncJobQueueManager,
    AsyncJobRef,
    AsyncWorker,
    Job,
    JobContext,
    JobProgress,
    JobQueue,
    JobQueueManager,
    JobRef,
    RetryPolicy,
)
from typedq.typed import JobType, TypedJob


class Resize(BaseModel):
    url: str
    width: int


class Thumb(BaseModel):
    path: str
    sizes: list[int]


resize = JobType("resize", Resize, result=str, version=2)
thumbs = JobType("thumbs", Thumb, result=list[str])
notify = JobType("notify", Thumb)  # no result type: R is None

assert_type(resize, JobType[Resize, str])
assert_type(notify, JobType[Thumb, None])


@resize.migration(from_version=1)
def _v1(old: dict[str, Any]) -> dict[str, Any]:
    return {**old, "width": old.pop("size")}


manager = JobQueueManager()


@manager.handler(resize)
def do_resize(p: Resize) -> str:
    return f"{p.url}@{p.width}"


@manager.handler(thumbs)
async def do_thumbs(p: Thumb) -> list[str]:
    return [f"{p.path}:{s}" for s in p.sizes]


def do_notify(p: Thumb) -> None:
    return None


manager.register(notify, do_notify)

ref = manager.enqueue(resize, Resize(url="u", width=3), priority=7)
assert_type(ref.result(timeout=1.0), str)
bound = manager.of(thumbs).enqueue(Thumb(path="p", sizes=[1]), delay_s=0.5)
assert_type(bound.result(), list[str])
assert_type(do_resize(Resize(url="u", width=1)), str)
view = TypedJob.of(resize, ref.job())
assert_type(view.payload, Resize)


# -- async ------------------------------------------------------------------------------


class Fetch(BaseModel):
    url: str


fetch = JobType("fetch", Fetch, result=int)
io_manager = JobQueueManager({"queues": {"io": {"worker_class": "async", "concurrency": 50}}})


@io_manager.handler(fetch)
async def do_fetch(p: Fetch) -> int:
    return len(p.url)


async def client_code() -> None:
    async with AsyncJobQueueManager(manager=io_manager) as jobs:
        aref = await jobs.enqueue(fetch, Fetch(url="u"), priority=3)
        assert_type(aref, AsyncJobRef[int])
        assert_type(await aref.result(timeout=1.0), int)
        assert_type(await jobs.wait_for_job(aref.job_id), Job)
        bound_ref = await jobs.of(fetch).enqueue(Fetch(url="v"), delay_s=0.5)
        assert_type(await bound_ref.result(), int)
        again = jobs.ref(fetch, aref.job_id)
        assert_type(await again.result(), int)
        assert_type(await jobs.submit("fetch", {"url": "u"}), str)


worker = AsyncWorker(JobQueue("io"), io_manager.handlers, concurrency=10)
assert_type(worker.concurrency, int)

# Unique keys and retry policies: the job type's settings are typed by its payload model.
fetch_once = JobType(
    "fetch", Resize, result=str, unique=lambda p: p.url, unique_for=60,
    retry=RetryPolicy(delays=[1, 5, 30]), on_failure=lambda job, error: None,
)
by_fields = JobType("fetch2", Resize, unique_fields=("url",), unique_states=["PENDING"])
once = manager.enqueue(fetch_once, Resize(url="u", width=1), unique_key="k", on_conflict="raise")
assert_type(once, JobRef[str])
manager.enqueue(by_fields, Resize(url="u", width=1), retry=RetryPolicy.fixed(5), unique_for=2.5)


# -- handlers taking a JobContext --------------------------------------------------


@manager.handler(resize)
def with_context_(p: Resize, ctx: JobContext) -> str:
    ctx.progress(1, 2, "half")
    ctx.log("resizing %s", p.url)
    ctx.check_cancelled()
    assert_type(ctx.cancelled, bool)
    assert_type(ctx.attempt, int)
    return p.url


@manager.handler(resize)
async def async_with_context(p: Resize, ctx: JobContext) -> str:
    return f"{p.url}:{ctx.job_id}"


def registered_(p: Resize, ctx: JobContext) -> str:
    return p.url


manager.register(resize, registered_)
ctx_ref = manager.enqueue(resize, Resize(url="u", width=1))
assert_type(ctx_ref.progress(), JobProgress | None)
