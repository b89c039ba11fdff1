"""``typedq.context``: how a handler takes its JobContext (decided once per handler),
and what the context stores: rate-limited progress and logs, fenced by the lease token."""

from __future__ import annotations

import functools
from typing import Any

import pytest

from typedq import JobContext
from typedq.backends.memory import JobQueue
from typedq.clock import FakeClock
from typedq.context import POSITIONAL, _cache, accepts_context, call_handler, invoke
from typedq.errors import JobCancelledError
from typedq.events import EventHandler
from typedq.job import Job, JobProgress


def plain(payload: dict[str, Any]) -> str:
    return "plain"


def positional(payload: dict[str, Any], ctx: JobContext) -> str:
    return f"ctx:{ctx.job_id}"


def named_context(payload: dict[str, Any], context: Any) -> str:
    return "context"


def annotated(payload: dict[str, Any], job_ctx: JobContext) -> str:
    return "annotated"


def keyword_only(payload: dict[str, Any], *, ctx: JobContext | None = None) -> str:
    return f"kw:{ctx is not None}"


def other_second(payload: dict[str, Any], retries: int = 3) -> int:
    return retries


class Handler:
    def run(self, payload: dict[str, Any], ctx: JobContext) -> str:
        return "method"


@pytest.mark.parametrize(
    ("fn", "how"),
    [
        (plain, None),
        (positional, POSITIONAL),
        (named_context, POSITIONAL),
        (annotated, POSITIONAL),
        (keyword_only, "ctx"),
        (other_second, None),
        (Handler().run, POSITIONAL),
        (len, None),
        (functools.partial(positional, {}), None),
    ],
    ids=lambda v: getattr(v, "__name__", repr(v))[:20],
)
def test_accepts_context(fn: Any, how: str | None) -> None:
    assert accepts_context(fn) == how


def test_the_signature_is_read_once_per_handler(monkeypatch: pytest.MonkeyPatch) -> None:
    def handler(payload: dict[str, Any], ctx: JobContext) -> None: ...

    from typedq import context

    calls = []
    real = context._decide
    monkeypatch.setattr(context, "_decide", lambda fn: calls.append(fn) or real(fn))
    for _ in range(5):
        accepts_context(handler)
    assert len(calls) == 1
    assert handler in _cache


def test_call_handler_passes_the_context_only_to_handlers_that_take_it() -> None:
    job = Job(job_id="j1", job_type="t", payload={"a": 1})
    ctx = JobContext(job, token=1)
    assert call_handler(plain, job, ctx) == "plain"
    assert call_handler(positional, job, ctx) == "ctx:j1"
    assert call_handler(keyword_only, job, ctx) == "kw:True"
    assert call_handler(other_second, job, ctx) == 3
    assert call_handler(plain, job, None) == "plain"
    assert invoke(keyword_only, {}, None) == "kw:False"


def test_cancellation_is_seen_and_raised() -> None:
    ctx = JobContext(Job(job_id="j1", job_type="t"), token=2)
    assert not ctx.cancelled
    assert ctx.attempt == 2
    ctx.check_cancelled()
    assert ctx.request_cancel() is True
    assert ctx.request_cancel() is False
    assert ctx.cancelled
    assert ctx.wait_cancelled(0)
    with pytest.raises(JobCancelledError, match="j1"):
        ctx.check_cancelled()


class _Progress(EventHandler):
    def __init__(self) -> None:
        self.seen: list[JobProgress] = []

    def on_job_progress(self, job: Job, progress: JobProgress) -> None:
        self.seen.append(progress)


def test_progress_is_rate_limited_and_the_last_report_is_stored_on_flush() -> None:
    queue = JobQueue(clock=FakeClock())
    queue.enqueue(Job(job_id="j", job_type="t"))
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    events = _Progress()
    ctx = JobContext(claim.job, token=claim.token, queue=queue, events=events, interval_s=3600)
    ctx.progress(1, 10, "first")  # the first write is at once
    ctx.progress(2, 10)
    ctx.progress(3, 10, "third")  # within the interval: kept, not stored
    ctx.log("step %d", 3)
    stored = queue.get_job("j").progress
    assert stored is not None
    assert stored.done == 1
    assert stored.message == "first"
    assert queue.get_logs("j") == []
    ctx.flush()
    stored = queue.get_job("j").progress
    assert stored is not None
    assert (stored.done, stored.total, stored.message) == (3, 10, "third")
    assert [line.message for line in queue.get_logs("j")] == ["step 3"]
    assert [p.done for p in events.seen] == [1, 3]


def test_a_refused_write_ends_the_contexts_writes() -> None:
    clock = FakeClock()
    queue = JobQueue(clock=clock)
    queue.enqueue(Job(job_id="j", job_type="t"))
    old = queue.claim("w1", lease_s=1)
    assert old is not None
    clock.advance(2)
    queue.reclaim_expired()
    new = queue.claim("w2", lease_s=30)
    assert new is not None
    queue.set_progress("j", token=new.token, progress=JobProgress(5, 10))
    ctx = JobContext(old.job, token=old.token, queue=queue, interval_s=0)
    ctx.progress(9, 10, "stale")
    assert ctx.lease_lost
    ctx.progress(10, 10)
    stored = queue.get_job("j").progress
    assert stored is not None
    assert stored.done == 5
