"""Process workers and graceful shutdown.

:func:`run_worker_processes` starts N worker processes (``spawn`` start method) that claim
from one shared backend (SQLite file, Redis): each child imports the application by
reference (``"module:attribute"``, a ``JobQueueManager`` or a zero-argument callable
returning one, so its handlers are registered in the child), starts ``concurrency``
worker threads per queue, and runs the manager's lease keeper and reaper, so a job whose
process died is given back once its lease expires. The parent supervises:

* it replaces a child that died unexpectedly, keeping the pool at full size. A child that
  dies before it is ready is replaced after a backoff (jittered exponential from
  :data:`RESPAWN_BASE_S`, capped at :data:`RESPAWN_MAX_S`), so a pool whose children
  cannot start does not spin;
* on the first SIGTERM or SIGINT it asks every child to stop gracefully, on the second
  to stop at once; it exits 0 after a graceful stop;
* a child that cannot start (the app does not import, ``memory://``, or it exits on its
  own before it is ready :data:`_MAX_STARTUP_FAILURES` times in a row) stops the pool with
  a typed error instead of being restarted forever. A child *killed by a signal* before
  it is ready (kill -9, the OOM killer) did not fail to start: it is replaced, with the
  backoff, however often that happens.

Each child runs :func:`typedq._serve.serve` (the shutdown contract is described there):
stop claiming, let running jobs finish for the grace period, give the rest back to the
queue with ``Queue.release`` (interrupted, not failed); nothing is lost either way.

Children ignore SIGINT (a Ctrl-C in a terminal reaches the whole process group: the
parent alone decides), treat SIGTERM as "stop gracefully" (repeating it changes nothing,
so a service manager that signals every process of the group does not force a hard stop)
and SIGQUIT as "stop at once".

A handler that ran past its ``timeout_seconds`` in a child is failed by its worker thread
(a :class:`~typedq.errors.JobTimeoutError`, counted as a failed attempt); a thread cannot be
killed, so the child then gives its other running jobs back and exits, and the parent starts
a fresh one: the stuck handler dies with its process. A handler still running
``cancel_grace_s`` after its job's cancellation was requested is treated alike: its worker
records the job CANCELLED, and the child is replaced.

With a memory limit (the ``memory_limit_mb`` setting, or ``memory_limit_mb=``), each child
caps its own address space with ``RLIMIT_AS`` (:func:`apply_memory_limit`) once it has
built the app, before it claims a job. An allocation past the cap fails in the code that
asked for it: a handler's ``MemoryError`` fails its job like any exception (retried as
configured, then dead-lettered), and the child serves on. Should a child die of it
instead, it is replaced and its job is rescued by its lease, counted as a lost worker
(``max_lost``). The parent and the other children are not limited.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import os
import random
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from types import FrameType
from typing import Any, Final, NoReturn

from typedq._config import validate_config, validate_queue_settings
from typedq._identity import set_supervisor
from typedq._memory_limit import MIB, apply_memory_limit, start_error
from typedq._serve import (
    ServeReport,
    StopRequest,
    announce_stop,
    check_shared_backend,
    load_app,
    release_in_flight,
    serve,
    stop_signals,
)
from typedq._validate import require_number
from typedq.errors import ConfigError, TypedqError
from typedq.manager import JobQueueManager
from typedq.shell import register_shell_jobs
from typedq.worker import Worker

__all__ = [
    "PoolReport",
    "ProcessPool",
    "ServeReport",
    "StopRequest",
    "WorkerProcessError",
    "apply_memory_limit",
    "check_shared_backend",
    "load_app",
    "release_in_flight",
    "run_worker_processes",
    "serve",
    "stop_signals",
]

logger = logging.getLogger("typedq.process")

#: A child exits with this code to get rid of a handler thread stuck past its timeout.
EXIT_RECYCLE: Final = 75
#: A child exits with this code when it could not start (it has sent the error first).
EXIT_STARTUP: Final = 3
#: After the grace period, how long the parent waits for children before SIGKILL.
_KILL_MARGIN_S: Final = 5.0
#: After an immediate stop, how long the parent waits for children before SIGKILL.
_IMMEDIATE_KILL_S: Final = 2.0
#: Children that exit on their own before they are ready this many times in a row stop
#: the pool (a child killed by a signal is not counted).
_MAX_STARTUP_FAILURES: Final = 3
#: The first wait before replacing a child that died before it was ready, seconds.
RESPAWN_BASE_S: Final = 0.1
#: The longest wait before replacing a child that died before it was ready, seconds.
RESPAWN_MAX_S: Final = 5.0


def respawn_delay(deaths: int) -> float:
    """The wait before replacing a slot's child after ``deaths`` deaths in a row before
    ready: exponential from :data:`RESPAWN_BASE_S`, capped at :data:`RESPAWN_MAX_S`, then
    jittered down to half (children killed together are not restarted in lockstep)."""
    ceiling = min(RESPAWN_MAX_S, RESPAWN_BASE_S * 2.0 ** min(max(deaths, 1) - 1, 30))
    return ceiling * random.uniform(0.5, 1.0)


class WorkerProcessError(TypedqError, RuntimeError):
    """A worker process could not start (other than a configuration error)."""


# -- the process pool ----------------------------------------------------------------------


@dataclass(frozen=True)
class _ChildSpec:
    """What a worker process needs to build its manager (picklable)."""

    app_ref: str | None
    config: dict[str, Any] | None
    queues: tuple[str, ...] | None
    concurrency: int | None
    worker_class: str | None
    grace_s: float | None
    shell_jobs: bool
    log_level: str
    cwd: str
    memory_limit_mb: int | None = None


def _child_manager(spec: _ChildSpec) -> tuple[JobQueueManager, int | None]:
    """Build the child's manager, then cap the child's memory if a limit is set (before
    any worker thread starts, so no job runs without it); return the manager and the
    limit in MiB (None: no limit)."""
    manager = load_app(spec.app_ref) if spec.app_ref is not None else JobQueueManager(spec.config)
    try:
        check_shared_backend(manager.config["backend"])
        if spec.shell_jobs:
            register_shell_jobs(manager)
        limit_mb: int | None = spec.memory_limit_mb
        if limit_mb is None:
            limit_mb = manager.config["memory_limit_mb"]
        if limit_mb is not None:
            applied = apply_memory_limit(limit_mb)
            logger.info("worker process %s: address space capped at %d MiB", os.getpid(), applied // MIB)
    except BaseException:
        manager.close(graceful=False)
        raise
    return manager, limit_mb


def _error_info(exc: BaseException) -> dict[str, Any]:
    return {
        "config": isinstance(exc, ConfigError),
        "type": type(exc).__name__,
        "message": str(exc),
        "field": getattr(exc, "field", None),
        "value": repr(getattr(exc, "value", None)),
        "allowed": getattr(exc, "allowed", None),
    }


def _exit_child(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    # Handler threads may still run (abandoned): never wait for them at exit.
    os._exit(code)


def _child_main(spec: _ChildSpec, conn: multiprocessing.connection.Connection) -> None:
    """The body of a worker process (module level, so ``spawn`` can import it)."""
    stop = StopRequest()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, stop.graceful)
    signal.signal(signal.SIGQUIT, stop.now)
    logging.basicConfig(
        level=spec.log_level, stream=sys.stderr,
        format=f"%(asctime)s typedq[{os.getpid()}] %(levelname)s %(name)s: %(message)s",
    )
    os.chdir(spec.cwd)
    set_supervisor(os.getppid())  # `typedq worker stop` signals the pool, not this child
    try:
        manager, limit_mb = _child_manager(spec)
    except BaseException as exc:
        with contextlib.suppress(Exception):
            conn.send(("error", _error_info(exc)))
            conn.close()
        _exit_child(EXIT_STARTUP)
    parent = os.getppid()

    def watchdog() -> str | None:
        return "the parent process exited" if os.getppid() != parent else None

    started = False

    def on_started(workers: list[Worker]) -> None:
        nonlocal started
        started = True
        grace = manager.config["shutdown_grace_s"] if spec.grace_s is None else spec.grace_s
        conn.send(("ready", os.getpid(), len(workers), grace))

    code = 0
    try:
        report = serve(
            manager, queues=spec.queues, concurrency=spec.concurrency, grace_s=spec.grace_s,
            worker_class=spec.worker_class,
            stop=stop, recycle_on_timeout=True, watchdog=watchdog, on_started=on_started,
            announce=False,
        )
        if report.reason.startswith("a handler thread"):
            code = EXIT_RECYCLE
            logger.warning("restarting this worker process: %s", report.reason)
        with contextlib.suppress(Exception):
            conn.send(("stopped", asdict(report)))
    except BaseException as exc:
        logger.exception("worker process failed")
        code = 1
        limit_error = None if started or limit_mb is None else start_error(limit_mb, exc)
        if limit_error is not None:
            # Every child would fail alike: stop the pool with the reason, not after 3 tries.
            with contextlib.suppress(Exception):
                conn.send(("error", _error_info(limit_error)))
            code = EXIT_STARTUP
    finally:
        with contextlib.suppress(Exception):
            manager.close(graceful=False)
        with contextlib.suppress(Exception):
            conn.close()
    _exit_child(code)


@contextlib.contextmanager
def _signal_wakeup() -> Iterator[int | None]:
    """A pipe whose read end turns readable when a signal arrives (``signal.set_wakeup_fd``).

    A Python signal handler runs in the main thread between bytecodes, so a wait in that
    thread resumes its timeout after the handler ran; with this fd among what it waits
    on, it returns at once instead. Yields None off the main thread (signals are handled
    only there); the previous wakeup fd is restored after the block.
    """
    if threading.current_thread() is not threading.main_thread():
        yield None
        return
    read_fd, write_fd = os.pipe()
    os.set_blocking(read_fd, False)
    os.set_blocking(write_fd, False)
    previous = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
    try:
        yield read_fd
    finally:
        signal.set_wakeup_fd(previous)
        os.close(read_fd)
        os.close(write_fd)


def _drain(fd: int) -> None:
    with contextlib.suppress(BlockingIOError):
        while os.read(fd, 512):
            pass


@dataclass
class PoolReport:
    """What a :class:`ProcessPool` run did, summed over its children's reports."""

    exit_code: int = 0
    completed: int = 0
    failed: int = 0
    released: int = 0
    restarts: int = 0
    immediate: bool = False


@dataclass
class _Child:
    slot: int
    process: multiprocessing.process.BaseProcess
    conn: multiprocessing.connection.Connection
    ready: bool = False
    conn_open: bool = True


class ProcessPool:
    """N worker processes, kept at full size until stopped (see the module docstring).

    Args:
        spec: what each child runs.
        processes: how many children.
    """

    def __init__(self, spec: _ChildSpec, processes: int) -> None:
        require_number("processes", processes, minimum=1, integer=True)
        self._spec = spec
        self.processes = processes
        self._ctx = multiprocessing.get_context("spawn")
        self._children: dict[int, _Child] = {}
        self._error: dict[str, Any] | None = None
        self._startup_failures = 0
        # Per slot: deaths before ready in a row, and when its replacement is due.
        self._early_deaths: dict[int, int] = {}
        self._respawn_at: dict[int, float] = {}
        self._grace = spec.grace_s or 0.0
        self.stop = StopRequest()
        self.report = PoolReport()

    @property
    def pids(self) -> list[int]:
        """The pids of the live children."""
        return [c.process.pid for c in self._children.values() if c.process.pid and c.process.is_alive()]

    def _spawn(self, slot: int) -> None:
        receiver, sender = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_child_main, args=(self._spec, sender), name=f"typedq-worker-{slot}", daemon=False
        )
        # Children ignore SIGINT from birth (the disposition survives exec): a terminal's
        # Ctrl-C reaches the whole group, and only the parent decides what it means.
        previous = signal.getsignal(signal.SIGINT)
        in_main = threading.current_thread() is threading.main_thread()
        if in_main:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            process.start()
        finally:
            if in_main:
                signal.signal(signal.SIGINT, previous)
        sender.close()
        self._children[slot] = _Child(slot, process, receiver)
        logger.info("started worker process %s (slot %d)", process.pid, slot)

    def _respawn_due(self) -> None:
        """Start the replacements whose backoff is over (none once a stop was requested)."""
        if self.stop.requested:
            self._respawn_at.clear()
            return
        now = time.monotonic()
        for slot, due in list(self._respawn_at.items()):
            if due <= now:
                del self._respawn_at[slot]
                self._spawn(slot)

    def _signal_all(self, signum: int) -> None:
        for child in self._children.values():
            if child.process.pid is not None and child.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(child.process.pid, signum)

    def _read(self, child: _Child) -> None:
        while child.conn_open:
            try:
                if not child.conn.poll():
                    return
                message = child.conn.recv()
            except (EOFError, OSError):
                child.conn_open = False
                child.conn.close()
                return
            kind = message[0]
            if kind == "ready":
                child.ready = True
                self._grace = max(self._grace, float(message[3]))
                self._startup_failures = 0
                self._early_deaths.pop(child.slot, None)
            elif kind == "error":
                self._error = message[1]
                logger.error(
                    "worker process %s could not start: %s", child.process.pid, self._error["message"]
                )
                self.stop.graceful()
            elif kind == "stopped":
                data = message[1]
                self.report.completed += data["completed"]
                self.report.failed += data["failed"]
                self.report.released += len(data["released"])

    def _reap(self, child: _Child) -> None:
        process = child.process
        process.join()
        pid, code = process.pid, process.exitcode
        self._read(child)
        if child.conn_open:
            child.conn.close()
            child.conn_open = False
        del self._children[child.slot]
        with contextlib.suppress(ValueError):
            process.close()
        if self.stop.requested:
            return
        if not child.ready:
            killed = code is not None and code < 0
            if not killed:
                self._startup_failures += 1
                if self._startup_failures >= _MAX_STARTUP_FAILURES:
                    self._error = self._error or {
                        "config": False, "type": "WorkerProcessError",
                        "message": f"worker processes exit before they are ready (exit code {code})",
                    }
                    self.stop.graceful()
                    return
            deaths = self._early_deaths[child.slot] = self._early_deaths.get(child.slot, 0) + 1
            delay = respawn_delay(deaths)
            how = f"exited with code {code}"
            if killed and code is not None:
                how = f"was killed by {_signal_name(-code)}"
            logger.warning(
                "worker process %s %s before it was ready; starting a replacement in %.2fs",
                pid, how, delay,
            )
            self.report.restarts += 1
            self._respawn_at[child.slot] = time.monotonic() + delay
            return
        if code == EXIT_RECYCLE:
            logger.info("worker process %s recycled after a handler timeout; replacing it", pid)
        else:
            logger.warning("worker process %s died (exit code %s); starting a replacement", pid, code)
        self.report.restarts += 1
        self._spawn(child.slot)

    def run(self) -> PoolReport:
        """Start the children and supervise them until :attr:`stop` is requested.

        Signal handlers are the caller's business (see :func:`run_worker_processes`):
        they call ``pool.stop.escalate``.

        Returns:
            The report; ``exit_code`` is 0 after a graceful stop and 128 + the signal
            number after an immediate one.

        Raises:
            ConfigError: a child refused its configuration (``memory://``, a bad app).
            WorkerProcessError: children keep dying before they are ready.
        """
        with _signal_wakeup() as wake:
            return self._supervise(wake)

    def _wait(self, wake: int | None) -> None:
        """Wait up to 50 ms (less when a replacement is due) for a child to send or end, or
        for a signal (``wake``: a stop is forwarded to the children at once)."""
        waitables: list[Any] = [c.process.sentinel for c in self._children.values()]
        waitables += [c.conn for c in self._children.values() if c.conn_open]
        timeout = 0.05
        if self._respawn_at:
            timeout = min(timeout, max(0.0, min(self._respawn_at.values()) - time.monotonic()))
        if wake is not None:
            waitables.append(wake)
        if waitables:
            multiprocessing.connection.wait(waitables, timeout=timeout)
            if wake is not None:
                _drain(wake)
        else:
            time.sleep(timeout)  # only replacements are due: nothing to wait on

    def _supervise(self, wake: int | None) -> PoolReport:
        """:meth:`run`'s body; ``wake`` (if not None) turns readable when a signal arrives."""
        forwarded = 0
        kill_at: float | None = None
        try:
            for slot in range(self.processes):
                if self.stop.requested:
                    break
                self._spawn(slot)
            while self._children or self._respawn_at:
                self._respawn_due()
                self._wait(wake)
                for child in list(self._children.values()):
                    self._read(child)
                if self.stop.level > forwarded:
                    forwarded = self.stop.level
                    immediate = self.stop.immediate
                    announce_stop(self.stop, self._grace)
                    self._signal_all(signal.SIGQUIT if immediate else signal.SIGTERM)
                    wait_s = _IMMEDIATE_KILL_S if immediate else self._grace + _KILL_MARGIN_S
                    kill_at = time.monotonic() + wait_s
                for child in list(self._children.values()):
                    if not child.process.is_alive():
                        self._reap(child)
                if kill_at is not None and time.monotonic() > kill_at:
                    logger.error("worker processes did not stop in time; killing them (leases save the jobs)")
                    self._signal_all(signal.SIGKILL)
                    kill_at = None
        finally:
            self._signal_all(signal.SIGKILL)
            for child in list(self._children.values()):
                child.process.join()
                if child.conn_open:
                    child.conn.close()
                with contextlib.suppress(ValueError):
                    child.process.close()
            self._children.clear()
        if self._error is not None:
            info = self._error
            if info.get("config"):
                raise ConfigError(
                    str(info.get("field") or "app"), info.get("value"), str(info.get("allowed") or ""),
                    message=info["message"],
                )
            raise WorkerProcessError(info["message"])
        self.report.immediate = self.stop.immediate
        self.report.exit_code = 128 + (self.stop.signum or signal.SIGTERM) if self.stop.immediate else 0
        return self.report


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def _configured_processes(app_ref: str | None, config: Mapping[str, Any] | None) -> int:
    """The ``processes`` setting of the manager the children will build."""
    if app_ref is None:
        settings = validate_config(config)
    else:
        probe = load_app(app_ref)
        try:
            settings = probe.config
        finally:
            probe.close(graceful=False)
    check_shared_backend(settings["backend"])
    count = int(settings["processes"])
    if count < 1:
        raise ConfigError(
            "processes", count, "an int >= 1",
            message=(
                f"processes={count} in the manager's config means thread workers; set it to 1 "
                "or more, or pass processes=, to run worker processes"
            ),
        )
    return count


def run_worker_processes(
    app_ref: str | None,
    *,
    processes: int | None = None,
    concurrency: int | None = None,
    queues: Sequence[str] | None = None,
    grace_s: float | None = None,
    config: Mapping[str, Any] | None = None,
    shell_jobs: bool = True,
    log_level: str = "WARNING",
    handle_signals: bool = True,
    worker_class: str | None = None,
    memory_limit_mb: int | None = None,
) -> PoolReport:
    """Run ``processes`` worker processes until SIGTERM/SIGINT; return the report.

    Args:
        app_ref: ``"module:attribute"`` of the application's manager (or of a
            zero-argument callable returning one); None to build a manager from
            ``config`` that runs shell-command jobs only.
        processes: how many worker processes (>= 1); None: the manager's ``processes``
            setting (of ``config``, or of the app's manager, loaded here to read it).
        concurrency: worker threads per queue in each process (default: the queue's
            ``max_workers``); for a queue run by async workers, one event loop per process
            running this many jobs at once (see ``typedq._serve.serve``).
        queues: the queues to work (default: all of the manager's).
        grace_s: how long running jobs may finish after the first signal (default: the
            manager's ``shutdown_grace_s``).
        config: manager config when ``app_ref`` is None.
        shell_jobs: register the ``"shell"`` job type in each child.
        log_level: the children's logging level.
        handle_signals: install SIGTERM/SIGINT handlers (main thread only).
        worker_class: ``"auto"``, ``"thread"`` or ``"async"`` for every queue (default:
            each queue's ``worker_class`` setting).
        memory_limit_mb: the address space each worker process may map, in MiB (see
            :func:`apply_memory_limit`); None: the manager's ``memory_limit_mb`` setting
            (None there too: no limit).

    Raises:
        ConfigError: ``memory://`` (its jobs cannot cross processes), a bad app
            reference or a bad setting; ``processes`` None and the setting 0; a memory
            limit below what a worker process maps before it starts its threads.
        WorkerProcessError: children keep dying before they are ready.
    """
    if processes is None:
        processes = _configured_processes(app_ref, config)
    require_number("processes", processes, minimum=1, integer=True)
    if concurrency is not None:
        require_number("concurrency", concurrency, minimum=1, integer=True)
    if grace_s is not None:
        require_number("grace_s", grace_s, minimum=0)
    if worker_class is not None:
        validate_queue_settings("", {"worker_class": worker_class})
    require_number("memory_limit_mb", memory_limit_mb, minimum=1, integer=True, allow_none=True)
    checked: dict[str, Any] | None = None
    if app_ref is None:
        checked = validate_config(config)
        check_shared_backend(checked["backend"])
        if grace_s is None:
            grace_s = checked["shutdown_grace_s"]
    elif config is not None:
        raise ConfigError("config", config, "None when app_ref is given (the app's manager has its config)")
    spec = _ChildSpec(
        app_ref=app_ref, config=checked, queues=tuple(queues) if queues else None,
        concurrency=concurrency, worker_class=worker_class, grace_s=grace_s, shell_jobs=shell_jobs,
        log_level=log_level, cwd=os.getcwd(), memory_limit_mb=memory_limit_mb,
    )
    pool = ProcessPool(spec, processes)
    handlers: dict[int, Callable[[int, FrameType | None], None]] = {}
    if handle_signals:
        handlers = {signal.SIGTERM: pool.stop.escalate, signal.SIGINT: pool.stop.escalate}
    with stop_signals(handlers):
        return pool.run()
