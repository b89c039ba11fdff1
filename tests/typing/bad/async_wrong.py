"""Async misuses that mypy must reject, each marked on its line with an E comment."""

from __future__ import annotations

from pydantic import BaseModel

from typedq import AsyncJobQueueManager, JobQueueManager
from typedq.typed import JobType


class Fetch(BaseModel):
    url: str


class Other(BaseModel):
    name: str


fetch = JobType("fetch", Fetch, result=int)
manager = JobQueueManager()


@manager.handler(fetch)  # E: "Callable[[Fetch], Coroutine[Any, Any, str]]"
async def returns_wrong_type(p: Fetch) -> str:
    return p.url


async def client_code(jobs: AsyncJobQueueManager) -> None:
    await jobs.enqueue(fetch, Other(name="x"))  # E: Cannot infer value of type parameter "P"
    ref = await jobs.enqueue(fetch, Fetch(url="u"))
    text: str = await ref.result()  # E: Incompatible types in assignment
    print(text)
    await jobs.enqueue(fetch, Fetch(url="u"), priorty=1)  # E: did you mean "priority"
