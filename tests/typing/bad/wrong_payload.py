"""Typed-API misuses that mypy must reject, each marked on its line with an E comment."""

from __future__ import annotations

from pydantic import BaseModel

from typedq import AsyncJobQueueManager, JobContext, JobQueueManager
from typedq.typed import JobType


class Resize(BaseModel):
    url: str


class Other(BaseModel):
    name: str


resize = JobType("resize", Resize, result=str)
manager = JobQueueManager()
manager.enqueue(resize, Other(name="x"))  # E: Cannot infer value of type parameter "P"
manager.of(resize).enqueue(Other(name="x"))  # E: incompatible type "Other"; expected "Resize"
manager.enqueue(resize, Resize(url="u"), priorty=3)  # E: did you mean "priority"


@manager.handler(resize)  # E: "Callable[[Other], str]"; expected "Callable[[Resize], str]"
def wrong_param(p: Other) -> str:
    return p.name


@manager.handler(resize)  # E: "Callable[[Resize], int]"; expected "Callable[[Resize], str]"
def wrong_return(p: Resize) -> int:
    return 1


def wrong_async(p: Resize) -> None:
    return None


manager.register(resize, wrong_async)  # E: "Callable[[Resize], None]"; expected "Callable[[Resize], str]"
ref = manager.enqueue(resize, Resize(url="u"))
n: int = ref.result()  # E: expression has type "str", variable has type "int"


class Fetch(BaseModel):
    url: str


fetch = JobType("fetch", Fetch, result=int)


@manager.handler(fetch)  # E: "Callable[[Fetch], Coroutine[Any, Any, str]]"
async def returns_wrong_type(p: Fetch) -> str:
    return p.url


async def client_code(jobs: AsyncJobQueueManager) -> None:
    await jobs.enqueue(fetch, Other(name="x"))  # E: Cannot infer value of type parameter "P"
    ref = await jobs.enqueue(fetch, Fetch(url="u"))
    text: str = await ref.result()  # E: Incompatible types in assignment
    print(text)
    await jobs.enqueue(fetch, Fetch(url="u"), priorty=1)  # E: did you mean "priority"
    await jobs.of(fetch).enqueue(Other(name="x"))  # E: incompatible type "Other"; expected "Fetch"
unique_by_wrong_model = JobType("u", Resize, unique=lambda p: p.nope)  # E: has no attribute "nope"
manager.enqueue(resize, Resize(url="u"), on_conflict="ignore")  # E: "on_conflict"


# -- handlers taking a JobContext --------------------------------------------------


@manager.handler(resize)  # E: incompatible type "Callable[[Other, JobContext], str]"
def wrong_payload(p: Other, ctx: JobContext) -> str:
    return p.name


@manager.handler(resize)  # E: incompatible type "Callable[[Resize, JobContext], int]"
def wrong_result(p: Resize, ctx: JobContext) -> int:
    return 1


@manager.handler(resize)  # E: incompatible type "Callable[[Resize, int], str]"
def context_not_a_context(p: Resize, ctx: int) -> str:
    return p.url


def use(ctx: JobContext) -> None:
    ctx.progress("half")  # E: incompatible type "str"; expected "float"
