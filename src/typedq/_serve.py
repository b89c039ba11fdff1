"""Serving jobs in one process until told to stop, and the shutdown contract.

:func:`serve` is the loop a worker process (or ``typedq worker`` without ``--processes``)
runs until a :class:`StopRequest` is raised by a signal. Its shutdown sequence:

1. stop claiming (every worker thread is told to stop after its current job);
2. let running jobs finish for up to ``grace_s`` seconds;
3. give the jobs still running back to the queue with ``Queue.release(job_id,
   token=...)``: PENDING again, counted as *interrupted* (neither ``retry_count`` nor
   ``lost_count`` moves), then kill their shell commands;
4. an immediate stop (a second signal) skips step 2. Nothing is lost either way: a job
   that could not be released (its process was killed) is rescued by a reaper when its
   lease expires.

Python cannot kill a thread: a handler that ignores the stop keeps running until its
process exits, and its late result is refused (its lease token is stale).
"""

from __future__ import annotations

import contextlib
import gc
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Final

from typedq._validate import require_number
from typedq.backends import backend_for
from typedq.errors import ConfigError, StaleLeaseError
from typedq.manager import JobQueueManager
from typedq.shell import kill_running_commands
from typedq.worker import Worker

__all__ = [
    "ServeReport",
    "StopRequest",
    "announce_stop",
    "check_shared_backend",
    "load_app",
    "release_in_flight",
    "serve",
    "stop_signals",
    "tune_gc_for_serving",
]

logger = logging.getLogger("typedq.process")
_worker_log = logging.getLogger("typedq.worker")

#: The young-generation threshold of the garbage collector in a serving process (at least).
SERVING_GC_THRESHOLD: Final = 10_000
#: How long a timed-out handler thread may linger before its process is recycled.
_STUCK_SETTLE_S: Final = 0.25
_TICK_S: Final = 0.02


def tune_gc_for_serving() -> None:
    """Set the garbage collector up for a process that serves jobs until it stops.

    A worker keeps each batch of claimed jobs alive while it runs them: a few thousand
    containers (every job with its payload, metadata and lease bookkeeping). At CPython's
    young-generation threshold (700) the collector runs several times a batch, frees
    nothing (reference counting frees a job's garbage) and promotes the batch from one
    generation to the next: about 6 % of draining quick jobs. So the threshold is raised
    to at least :data:`SERVING_GC_THRESHOLD` (a higher one, or a disabled collector,
    is left as the application set it), and the objects of start-up (modules, the
    application), which live as long as the process, are frozen out of full collections.
    Cycles are still collected.
    """
    gc.freeze()
    first, *older = gc.get_threshold()
    if first < SERVING_GC_THRESHOLD:
        gc.set_threshold(SERVING_GC_THRESHOLD, *older)


# -- stop requests ------------------------------------------------------------------------


class StopRequest:
    """How far a stop has been requested: 0 = run, 1 = stop gracefully, 2 = stop at once.

    Its handlers only assign attributes, so they are safe as signal handlers (they never
    take a lock the interrupted code might hold).
    """

    def __init__(self) -> None:
        self.level = 0
        self.signum: int | None = None

    @property
    def requested(self) -> bool:
        """Whether a stop (graceful or immediate) was requested."""
        return self.level >= 1

    @property
    def immediate(self) -> bool:
        """Whether an immediate stop was requested."""
        return self.level >= 2

    def escalate(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """The first call asks for a graceful stop, the next for an immediate one."""
        self.signum = signum or self.signum
        self.level = min(2, self.level + 1)

    def graceful(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """Ask for a graceful stop; repeating it changes nothing."""
        self.signum = signum or self.signum
        self.level = max(1, self.level)

    def now(self, signum: int = 0, frame: FrameType | None = None) -> None:
        """Ask for an immediate stop."""
        self.signum = signum or self.signum
        self.level = 2


@contextlib.contextmanager
def stop_signals(
    handlers: Mapping[int, Callable[[int, FrameType | None], None]],
) -> Iterator[None]:
    """Install signal handlers for the block, restoring the previous ones after it.

    Signals can only be handled in the main thread; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum, handler in handlers.items()}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


# -- loading the application ---------------------------------------------------------------


def load_app(ref: str) -> JobQueueManager:
    """Import ``"module:attribute"`` and return the ``JobQueueManager`` it names.

    The attribute may be a manager or a zero-argument callable returning one. The
    current directory is put on ``sys.path`` first, as ``python -m`` would.

    Raises:
        ConfigError: the reference is malformed, the module does not import, the
            attribute is missing, or it is not (and does not return) a manager.
    """
    allowed = "'module:attribute' naming a JobQueueManager or a zero-argument callable returning one"
    given: object = ref
    if not isinstance(given, str):
        raise ConfigError("app", ref, allowed)
    module_name, sep, attr = ref.partition(":")
    if not sep or not module_name.strip() or not attr.strip():
        raise ConfigError("app", ref, allowed)
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        logger.debug("importing %s failed", module_name, exc_info=True)
        raise ConfigError(
            "app", ref, allowed,
            message=f"cannot import module {module_name!r} of app {ref!r}: {type(exc).__name__}: {exc}",
        ) from exc
    obj: object = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(
                "app", ref, allowed, message=f"module {module_name!r} has no attribute {attr!r} (app {ref!r})"
            ) from None
    if not isinstance(obj, JobQueueManager) and callable(obj):
        obj = obj()
    if not isinstance(obj, JobQueueManager):
        raise ConfigError("app", ref, allowed, message=f"app {ref!r} is a {type(obj).__name__}: {allowed}")
    return obj


def check_shared_backend(backend: object) -> None:
    """Refuse a backend that worker processes cannot share.

    Raises:
        ConfigError: ``backend`` is ``memory://``, whose jobs live inside one process.
    """
    if not backend_for(backend).shared:
        raise ConfigError(
            "backend", backend,
            "a backend that processes share (sqlite:///path/jobs.db, redis://host:6379/0)",
            message=(
                f"backend={backend!r} cannot be used with worker processes: its jobs live inside "
                "one process. Use sqlite:///path/jobs.db or redis://..., or thread workers "
                "(--processes 0 / the processes setting 0)"
            ),
        )


# -- serving in one process ----------------------------------------------------------------


@dataclass
class ServeReport:
    """What :func:`serve` did."""

    completed: int = 0
    #: Failed attempts that were recorded (each retried or dead); an interrupted job's
    #: refused failure is not one.
    failed: int = 0
    retried: int = 0
    dead: int = 0
    released: list[str] = field(default_factory=list)
    abandoned_threads: int = 0
    immediate: bool = False
    reason: str = ""


def release_in_flight(workers: Iterable[Worker]) -> list[str]:
    """Give the jobs these workers hold back to their queues; return their ids.

    The jobs claimed but not started, then the one each is running. Each release is
    ``Queue.release(job_id, token=...)``: a compare-and-set on the worker's own lease,
    so a job that finished (or was given to another worker) a moment ago is left alone.
    Its lease is no longer renewed, and the handler's late result is refused as stale. A
    job that cannot be released is rescued when its lease expires.
    """
    released: list[str] = []
    for worker in workers:
        if not worker.is_alive():
            continue
        released += worker.give_back_unstarted()
        queue = worker.queue
        for job_id, token in worker.in_flight():
            worker.lease_keeper.discard(queue, job_id)
            try:
                queue.release(job_id, token=token)
            except (StaleLeaseError, KeyError):
                continue
            except Exception:
                logger.exception("could not give job %s back; its lease will expire instead", job_id)
                continue
            released.append(job_id)
    return released


class _StaleFilter(logging.Filter):
    """Drops the worker's "stale lease" warnings about jobs this process gave back."""

    def __init__(self, job_ids: Iterable[str]) -> None:
        super().__init__()
        self._needles = tuple(f"job {job_id} " for job_id in job_ids)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.WARNING or "stale" not in record.getMessage():
            return True
        message = record.getMessage()
        return not any(needle in message for needle in self._needles)


def announce_stop(stop: StopRequest, grace_s: float) -> None:
    """Log what a stop request means, so whoever sent the signal knows what happens next."""
    why = signal.Signals(stop.signum).name if stop.signum else "stop"
    if stop.immediate:
        logger.warning("%s again: stopping at once; running jobs go back to the queue", why)
    else:
        logger.warning(
            "%s: stopping gracefully: no new jobs, running ones may finish for %gs, then go back "
            "to the queue; send it again to stop at once", why, grace_s,
        )


def _stuck_thread(workers: Sequence[Worker], seen: dict[int, float]) -> bool:
    """Whether a handler thread abandoned after a timeout, or still running after its
    job's cancellation was forced, has lingered too long."""
    now = time.monotonic()
    for worker in workers:
        for thread in (*worker.abandoned_threads, *worker.cancel_overdue):
            if thread.is_alive() and now - seen.setdefault(id(thread), now) >= _STUCK_SETTLE_S:
                return True
    return False


def _shut_down(
    workers: Sequence[Worker], stop: StopRequest, report: ServeReport, grace: float, *, announce: bool
) -> None:
    """Steps 1-4 of the module docstring; fills ``report.released`` and ``immediate``."""
    announced = 0
    for worker in workers:
        worker.stop()
    deadline = time.monotonic() + grace
    while True:
        if announce and stop.level > announced:
            announced = stop.level
            announce_stop(stop, grace)
        if (
            not any(w.is_alive() for w in workers)
            or stop.immediate
            or report.immediate
            or time.monotonic() >= deadline
        ):
            break
        time.sleep(_TICK_S)
    report.immediate = report.immediate or stop.immediate
    report.released = release_in_flight(workers)
    for worker in workers:
        # An async worker's tasks are cancelled (their jobs were just given back).
        worker.cancel_running()
    if not report.released:
        return
    # The late outcome of a released job is refused as stale: expected, not news.
    quiet = _StaleFilter(report.released)
    _worker_log.addFilter(quiet)
    try:
        kill_running_commands()
        logger.warning(
            "gave %d running job(s) back to the queue (interrupted, not failed): %s",
            len(report.released), ", ".join(report.released[:10]),
        )
        # Shell handlers return as soon as their command is killed: let them (unless the
        # stop is immediate).
        settle = time.monotonic() + (0.0 if report.immediate else 0.5)
        while any(w.is_alive() for w in workers) and time.monotonic() < settle:
            time.sleep(_TICK_S)
    finally:
        _worker_log.removeFilter(quiet)


def queue_weights(names: Sequence[str]) -> dict[str, int] | None:
    """``["emails=3", "reports=1"]`` -> ``{"emails": 3, "reports": 1}``; None when no name
    carries a weight (one worker pool per queue). A name without one weighs 1.

    Raises:
        ConfigError: a weight that is not an int >= 1.
    """
    if not any("=" in name for name in names):
        return None
    weights: dict[str, int] = {}
    for item in names:
        name, _, weight = item.partition("=")
        if not weight:
            weights[name] = 1
            continue
        if not weight.isdigit() or int(weight) < 1:
            raise ConfigError(f"queues.{name}", weight, "a weight: an int >= 1 (name=weight)")
        weights[name] = int(weight)
    return weights


def serve(
    manager: JobQueueManager,
    *,
    queues: Sequence[str] | None = None,
    concurrency: int | None = None,
    grace_s: float | None = None,
    stop: StopRequest,
    recycle_on_timeout: bool = False,
    watchdog: Callable[[], str | None] | None = None,
    on_started: Callable[[list[Worker]], None] | None = None,
    announce: bool = True,
    worker_class: str | None = None,
) -> ServeReport:
    """Run worker threads until ``stop`` is requested, then shut down (module docstring).

    Args:
        manager: the application's manager; the caller closes it afterwards.
        queues: the queues to work (default: every queue of the manager). Given as
            ``name=weight`` (``["emails=3", "reports=1"]``), each worker serves all of
            them by weight (``manager.start_workers(queues=...)``), ``concurrency``
            workers (default: the first queue's ``max_workers``).
        concurrency: worker threads per queue (default: each queue's ``max_workers``); for
            a queue run by async workers (``JobQueueManager.worker_class``), one worker
            running this many jobs at once on its event loop.
        grace_s: how long running jobs may finish after a graceful stop (default: the
            manager's ``shutdown_grace_s``).
        stop: set by signal handlers; level 1 stops gracefully, level 2 at once.
        recycle_on_timeout: stop at once when a timed-out handler thread is still
            running (a worker *process* does this, so that its parent replaces it).
        watchdog: polled; a non-empty string stops gracefully with that reason.
        on_started: called with the started workers.
        announce: log when a stop is requested (a worker process leaves that to its parent).
        worker_class: ``"auto"``, ``"thread"`` or ``"async"`` for every queue served
            (default: each queue's ``worker_class`` setting).

    Raises:
        ConfigError: ``concurrency``, ``grace_s`` or ``worker_class`` out of range.
    """
    grace = manager.config["shutdown_grace_s"] if grace_s is None else grace_s
    require_number("grace_s", grace, minimum=0)
    if concurrency is not None:
        require_number("concurrency", concurrency, minimum=1, integer=True)
    tune_gc_for_serving()
    names = list(queues) if queues else list(manager.queues)
    workers: list[Worker] = []
    weights = queue_weights(names)
    if weights is not None:
        for name in weights:
            if name not in manager.queues:
                manager.create_queue(name)
        names = []
        workers += manager.start_workers(queues=weights, count=concurrency)
    for name in names:
        if worker_class is not None:
            manager.create_queue(name, worker_class=worker_class)
        elif name not in manager.queues:
            manager.create_queue(name)
        count = concurrency
        if concurrency is not None:
            if manager.worker_class(name) == "async":
                # One event loop running `concurrency` jobs at once.
                manager.create_queue(name, max_workers=1, concurrency=concurrency)
                count = 1
            else:
                manager.create_queue(name, max_workers=concurrency)
        workers += manager.start_workers(name, count=count)
    if on_started is not None:
        on_started(workers)
    report = ServeReport()
    seen: dict[int, float] = {}
    while not stop.requested:
        if watchdog is not None and (why := watchdog()):
            report.reason = why
            break
        if recycle_on_timeout and _stuck_thread(workers, seen):
            report.reason = "a handler thread is stuck past its timeout or a forced cancel"
            report.immediate = True
            break
        time.sleep(_TICK_S)
    if stop.requested:
        report.reason = f"signal {signal.Signals(stop.signum).name}" if stop.signum else "stop requested"
    _shut_down(workers, stop, report, grace, announce=announce)
    for worker in workers:
        report.completed += worker.stats.completed
        report.retried += worker.stats.retried
        report.dead += worker.stats.dead
    report.failed = report.retried + report.dead
    report.abandoned_threads = sum(1 for w in workers if w.is_alive()) + sum(
        1 for w in workers for t in w.abandoned_threads if t.is_alive()
    )
    return report
