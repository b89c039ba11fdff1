"""Helpers of ``worker`` and ``aworker``: how a handler is called, error text, handler
calls with a timeout, giving claimed jobs back, and the version a worker reports in its
registry entry.

:func:`typedq.context.call_handler` is the one place a worker calls a handler: every
worker (thread or async) goes through it, so how a handler is given its job (and its
context) is decided once.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import traceback as tb_module
from collections.abc import Awaitable, Callable, Sequence
from importlib.metadata import PackageNotFoundError, version
from typing import Any, Final

from typedq._outage import is_outage
from typedq.backends.base import Queue
from typedq.context import JobContext, call_handler
from typedq.errors import JobNotFoundError, JobTimeoutError, StaleLeaseError
from typedq.job import Job, storable_text
from typedq.leases import LeaseKeeper

__all__ = [
    "VERSION",
    "call_with_timeout",
    "describe_error",
    "format_traceback",
    "give_back",
    "handler_is_async",
    "run_awaitable",
    "run_handler",
]

logger = logging.getLogger("typedq.worker")

#: Guards the lists of abandoned helper threads (see :func:`call_with_timeout`).
_ABANDONED_LOCK = threading.Lock()


def _typedq_version() -> str:
    try:
        return version("typedq")
    except PackageNotFoundError:
        return "unknown"


#: The typedq version a worker reports.
VERSION: Final = _typedq_version()

def handler_is_async(handler: Callable[[Any], Any]) -> bool:
    """Whether ``handler`` returns a coroutine to await (``async def``, or a wrapper of one
    with a true ``is_async`` attribute): the async worker runs it on its event loop; a
    plain function goes to its thread pool."""
    return bool(getattr(handler, "is_async", False)) or inspect.iscoroutinefunction(handler)


async def _await(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def run_handler(handler: Callable[..., Any], job: Job, ctx: JobContext | None = None) -> Any:
    """Call ``handler`` for ``job`` in this thread (``typedq.context.call_handler``, with
    ``ctx`` when it takes one) and return its result.

    An ``async def`` handler run by a thread worker gets an event loop of its own for
    this one call (``asyncio.run``); the async worker (``typedq.aworker``) runs them
    concurrently on one loop instead.
    """
    out = call_handler(handler, job, ctx)
    if inspect.isawaitable(out):
        return run_awaitable(out)
    return out


def run_awaitable(awaitable: Awaitable[Any]) -> Any:
    """Await ``awaitable`` on an event loop of its own (``asyncio.run``) and return its
    result: an ``async def`` handler run by a thread worker."""
    return asyncio.run(_await(awaitable))


def describe_error(exc: BaseException) -> str:
    """Return ``"Type: message"`` for an exception, even one whose ``__str__`` raises, as
    every backend can store it (a lone surrogate, as in a file name decoded with
    ``surrogateescape``, written as its escape: :func:`storable_text`)."""
    try:
        text = str(exc)
    except Exception:
        text = f"<unprintable {type(exc).__name__}>"
    name = type(exc).__name__
    return storable_text(f"{name}: {text}" if text else name)


def format_traceback(exc: BaseException) -> str | None:
    """The traceback text of ``exc`` as every backend can store it (:func:`storable_text`),
    or None when it cannot be formatted."""
    try:
        return storable_text("".join(tb_module.format_exception(exc)))
    except Exception:
        return None


def call_with_timeout(
    handler: Callable[..., Any],
    job: Job,
    timeout: float,
    name: str,
    abandoned: list[threading.Thread],
    *,
    ctx: JobContext | None = None,
) -> Any:
    """Run the handler (with ``ctx`` when it takes one) in a helper thread and wait
    ``timeout`` seconds for it.

    Past the timeout the helper (which Python cannot kill) is added to ``abandoned``
    (the helpers in it that have ended since are dropped: it lists those still running),
    its late result will be discarded, and ``JobTimeoutError`` is raised.
    """
    outcome: list[tuple[bool, Any]] = []
    done = threading.Event()

    def target() -> None:
        try:
            if ctx is not None:
                ctx.thread = threading.current_thread()
            outcome.append((True, run_handler(handler, job, ctx)))
        except BaseException as exc:  # handed back to the worker thread
            outcome.append((False, exc))
        finally:
            done.set()

    helper = threading.Thread(target=target, name=name, daemon=True)
    helper.start()
    if not done.wait(timeout):
        with _ABANDONED_LOCK:  # an async worker's helpers time out on several threads
            # Those that ended since are forgotten: a worker timing out job after job
            # would otherwise hold one finished thread per timeout, for ever.
            abandoned[:] = [thread for thread in abandoned if thread.is_alive()]
            abandoned.append(helper)
        logger.error(
            "job %s (%s) exceeded its %ss timeout; its thread %s keeps running "
            "(Python threads cannot be killed) and its result will be discarded",
            job.job_id, job.job_type, timeout, helper.name,
        )
        raise JobTimeoutError(job.job_id, timeout)
    ok, value = outcome[0]
    if ok:
        return value
    raise value


def give_back(
    queue: Queue, keeper: LeaseKeeper, held: Sequence[tuple[str, int]], worker_id: str
) -> list[str]:
    """Release each held ``(job id, lease token)`` (``Queue.release``); return the ids
    given back.

    A job whose lease is already gone is skipped. The first storage failure ends the
    give-backs (each further one would wait for the storage's timeout): the jobs not
    given back are no longer renewed, so their leases expire and a reaper rescues them;
    one WARNING names them.
    """
    released: list[str] = []
    for index, (job_id, token) in enumerate(held):
        keeper.discard(queue, job_id)
        try:
            queue.release(job_id, token=token)
        except (StaleLeaseError, JobNotFoundError):
            continue
        except Exception as exc:
            if not is_outage(exc):
                logger.exception("could not give job %s back; it is rescued once its lease expires", job_id)
                continue
            rest = [j for j, _ in held[index:]]
            keeper.forget_all(queue, rest)
            logger.warning(
                "worker %s could not give back %d job(s) (%s); they are rescued once their leases expire: %s",
                worker_id, len(rest), ", ".join(rest[:10]), exc,
            )
            break
        released.append(job_id)
    return released
