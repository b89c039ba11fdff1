"""``JobContext``: what a running handler may know and do about its own job.

A handler takes a context when it asks for one, in either way::

    def resize(payload, ctx): ...                      # a second parameter named ctx

    @manager.handler(resize_job)
    def resize(p: Resize, ctx: JobContext) -> str: ... # a parameter annotated JobContext

Through it the handler reports progress (:meth:`JobContext.progress`, stored with the job
and fenced by the lease token), logs lines kept with the job (:meth:`JobContext.log`), and
learns that its job's cancellation was requested (:attr:`JobContext.cancelled`,
:meth:`JobContext.check_cancelled`).

Writes are rate-limited: progress and log lines are stored at most once every
:data:`PROGRESS_INTERVAL_S`; what came in between is kept and stored on the next write,
the next heartbeat, or when the handler returns (:meth:`JobContext.flush`), so the last
report is never lost. A refused write (the lease is gone: another worker owns the job
now) is dropped, and so are all later ones: a stale worker cannot overwrite a newer
attempt's progress.

:func:`accepts_context` decides once per handler (cached) whether and how it takes the
context; :func:`call_handler` calls a handler with or without it. Every worker kind uses
these two, so a handler is called the same way everywhere.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from typedq.backends.base import Queue
from typedq.errors import JobCancelledError, StaleLeaseError
from typedq.events import EventHandler, safe_call
from typedq.job import Job, JobLogLine, JobProgress

__all__ = [
    "POSITIONAL",
    "PROGRESS_INTERVAL_S",
    "JobContext",
    "accepts_context",
    "call_handler",
    "invoke",
]

logger = logging.getLogger("typedq.job")

#: The shortest time between two writes of one job's progress or logs, seconds.
PROGRESS_INTERVAL_S: Final = 0.5
#: :func:`accepts_context`'s answer for a handler taking the context as its second
#: positional argument.
POSITIONAL: Final = ""
_CONTEXT_NAMES: Final = ("ctx", "context")
_ANNOTATION: Final = re.compile(r"\bJobContext\b")
_NO: Final = "-"
_NEVER: Final = -float("inf")
#: Handler (or its function) -> how it takes the context; cleared past _CACHE_MAX.
_cache: dict[Any, str] = {}
_CACHE_MAX: Final = 4096


class JobContext:
    """A running job's view of itself, handed to a handler that asks for it.

    Built by the worker for each run; handlers never build one (tests may, with
    ``queue=None``: then nothing is stored and progress is only kept on the object).

    Args:
        job: the job as claimed.
        token: the lease token of this run (the job's ``attempt``).
        queue: where progress and logs are stored; None stores nothing.
        worker_id: the worker running the job.
        events: receives ``on_job_progress`` after each stored progress.
        interval_s: the shortest time between two writes.
    """

    def __init__(
        self,
        job: Job,
        *,
        token: int,
        queue: Queue | None = None,
        worker_id: str | None = None,
        events: EventHandler | None = None,
        interval_s: float = PROGRESS_INTERVAL_S,
    ) -> None:
        # Built for every run, so kept cheap: no Event (created when a handler waits),
        # the write lock only once something is written.
        self.job = job
        self.token = token
        self.worker_id = worker_id
        self._queue = queue
        self._events = events
        self._interval_s = interval_s
        self._lock = threading.Lock()
        self._cancelled = False
        self._cancel_event: threading.Event | None = None
        self._cancel_seen_at: float | None = None
        self._last_write = _NEVER
        self._progress: JobProgress | None = None
        self._progress_dirty = False
        self._lines: list[JobLogLine] = []
        self._lost = False
        self._write_lock: threading.Lock | None = None
        #: The thread running the handler (set by the worker).
        self.thread: threading.Thread | None = None
        #: Set when the worker gave up waiting for a cancelled handler to stop and
        #: recorded the job CANCELLED itself: the handler's late result is refused.
        self.forced = False

    # -- what the handler reads ----------------------------------------------------------

    @property
    def job_id(self) -> str:
        """The job's id."""
        return self.job.job_id

    @property
    def attempt(self) -> int:
        """Which run of the job this is (1 for the first; the lease token)."""
        return self.token

    @property
    def cancelled(self) -> bool:
        """Whether cancellation of the job was requested (``manager.cancel``); the
        handler should stop soon: see :meth:`check_cancelled`."""
        return self._cancelled

    @property
    def lease_lost(self) -> bool:
        """Whether a write found that another worker owns the job now (its result
        would be refused: the handler may stop)."""
        return self._lost

    @property
    def last_progress(self) -> JobProgress | None:
        """The progress last reported through this context."""
        return self._progress

    def check_cancelled(self) -> None:
        """Raise :class:`~typedq.errors.JobCancelledError` when cancellation was
        requested: the worker then records the job CANCELLED (not failed, no retry).

        Raises:
            JobCancelledError: the job's cancellation was requested.
        """
        if self._cancelled:
            raise JobCancelledError(self.job.job_id, "cancellation requested")

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Block until cancellation is requested or ``timeout`` seconds pass; return
        whether it was (a handler that sleeps between steps can wait on this instead)."""
        with self._lock:
            event = self._cancel_event
            if event is None:
                event = self._cancel_event = threading.Event()
                if self._cancelled:
                    event.set()
        return event.wait(timeout)

    # -- what the handler reports ----------------------------------------------------------

    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report progress: ``done`` out of ``total`` (None: unknown), and a message.

        Stored with the job (``get_job(...).progress``) at most every
        ``PROGRESS_INTERVAL_S``; the latest report is always stored in the end.
        """
        report = JobProgress(
            done=done, total=total, message=None if message is None else str(message),
            updated_at=time.time(), attempt=self.token,
        )
        with self._lock:
            self._progress = report
            self._progress_dirty = True
        self._maybe_write()

    def log(self, message: object, *args: object) -> None:
        """Add a line to the job's log (kept with the job, the newest ``MAX_JOB_LOGS``).

        ``message % args`` when ``args`` are given, as with :mod:`logging`; the line is
        also logged on the ``typedq.job`` logger at INFO.
        """
        text = str(message) % args if args else str(message)
        logger.info("job %s: %s", self.job.job_id, text)
        with self._lock:
            self._lines.append(JobLogLine(time.time(), self.token, text))
        self._maybe_write()

    # -- what the worker does ---------------------------------------------------------------

    def request_cancel(self) -> bool:
        """Mark cancellation requested (the worker does, when it learns of it); return
        True the first time."""
        with self._lock:
            if self._cancelled:
                return False
            self._cancel_seen_at = time.monotonic()
            self._cancelled = True
            if self._cancel_event is not None:
                self._cancel_event.set()
            return True

    @property
    def cancel_seen_at(self) -> float | None:
        """When (``time.monotonic``) this run learnt that cancellation was requested."""
        return self._cancel_seen_at

    def _maybe_write(self) -> None:
        if time.monotonic() - self._last_write >= self._interval_s:
            self.flush()

    def flush(self) -> None:
        """Store what was reported and not stored yet (the worker calls this every
        heartbeat and when the handler returns). Never raises: a failed write is
        logged, a refused one ends this context's writes."""
        if not self._progress_dirty and not self._lines:
            return  # nothing new: the common case, no lock taken
        with self._lock:
            writing = self._write_lock
            if writing is None:
                writing = self._write_lock = threading.Lock()
        with writing:  # writes in report order, whichever thread flushes
            self._flush()

    def _flush(self) -> None:
        queue = self._queue
        with self._lock:
            self._last_write = time.monotonic()
            progress = self._progress if self._progress_dirty else None
            lines, self._lines = self._lines, []
            self._progress_dirty = False
            if queue is None or self._lost or (progress is None and not lines):
                return
        try:
            if lines:
                queue.append_logs(self.job.job_id, token=self.token, lines=lines)
            if progress is not None:
                queue.set_progress(self.job.job_id, token=self.token, progress=progress)
        except (StaleLeaseError, KeyError) as exc:
            self._lost = True
            logger.warning("progress of job %s not stored: %s", self.job.job_id, exc)
            return
        except Exception as exc:
            logger.warning("progress of job %s not stored (will retry): %s", self.job.job_id, exc)
            with self._lock:
                self._lines[:0] = lines
                if progress is not None and not self._progress_dirty:
                    self._progress_dirty = True
            return
        if progress is not None and self._events is not None:
            self.job.progress = progress
            safe_call(self._events.on_job_progress, self.job, progress)

    def __repr__(self) -> str:
        return f"JobContext({self.job.job_id!r}, attempt={self.token}, cancelled={self.cancelled})"


def _decide(fn: Callable[..., Any]) -> str:
    """How ``fn`` takes the context: POSITIONAL, a keyword's name, or ``_NO``."""
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):  # a builtin without a signature
        return _NO
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for param in params[1:]:
        annotation = param.annotation
        if annotation is param.empty:
            continue
        text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
        if isinstance(text, str) and _ANNOTATION.search(text):
            if param.kind is param.KEYWORD_ONLY:
                return param.name
            if len(positional) > 1 and positional[1] is param:
                return POSITIONAL
    if len(positional) > 1 and positional[1].name in _CONTEXT_NAMES:
        return POSITIONAL
    for param in params:
        if param.kind is param.KEYWORD_ONLY and param.name in _CONTEXT_NAMES:
            return param.name
    return _NO


def accepts_context(fn: Callable[..., Any]) -> str | None:
    """Whether and how ``fn`` takes a :class:`JobContext`, decided once per callable.

    Returns:
        None: it does not; :data:`POSITIONAL` (``""``): as its second positional
        argument (named ``ctx`` or ``context``, or annotated ``JobContext``); a name:
        as that keyword-only argument.
    """
    return _answer(_how(fn))


def _how(fn: Callable[..., Any]) -> str:
    """:func:`accepts_context`'s answer as cached (``_NO`` for none)."""
    try:
        found = _cache.get(fn)
    except TypeError:  # unhashable: decide every time (cheap enough)
        return _decide(fn)
    if found is None:
        found = _decide(fn)
        if len(_cache) >= _CACHE_MAX:
            _cache.clear()  # handlers made on the fly (lambdas) must not grow it forever
        _cache[fn] = found
    return found


def _answer(found: str) -> str | None:
    return None if found == _NO else found


def invoke(fn: Callable[..., Any], arg: Any, ctx: JobContext | None) -> Any:
    """Call ``fn(arg)``, adding ``ctx`` the way ``fn`` takes it (see
    :func:`accepts_context`); without a context, or when ``fn`` takes none, ``fn(arg)``."""
    if ctx is None:
        return fn(arg)
    how = _how(fn)
    if how == _NO:
        return fn(arg)
    if how == POSITIONAL:
        return fn(arg, ctx)
    return fn(arg, **{how: ctx})


def call_handler(handler: Callable[..., Any], job: Job, ctx: JobContext | None) -> Any:
    """Run a registered handler for ``job``: with the whole job when it ``takes_job``
    (the typed API's wrappers), else with the payload; with ``ctx`` when it takes one.

    The one way every worker kind (threads, processes, the asyncio worker) calls a
    handler. The result is returned as the handler returned it (maybe an awaitable).
    """
    arg = job if getattr(handler, "takes_job", False) else job.payload
    return invoke(handler, arg, ctx)
