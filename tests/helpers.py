"""Small helpers shared by every test folder: import them as ``from tests.helpers import ...``.

Keep this module small and its names stable; other folders depend on it.

* :func:`wait_until`: poll a condition against a deadline (tests never sleep to
  synchronise).
* :func:`wait_while_progressing`: wait for a count to reach a target for as long as it
  keeps growing (work whose duration depends on the machine), failing on a stall.
* :func:`load_scaled`: a time bound stretched by how busy the machine is, for bounds
  on work the machine's load slows (process start or teardown), never on logic.
* :func:`interrupt_when`: SIGINT this process once a condition holds, to stop a worker
  or a pool running in the main thread.
* :func:`stop_and_join`: a fixture's teardown of the workers it started.
* :func:`spawn_module`: ``python -m <module> ARGS`` of this repository, with text pipes
  (a context manager: leaving it closes the pipes and waits for the process).
* :data:`REQUIRE_SERVICES`: set ``TYPEDQ_REQUIRE_SERVICES=1`` (CI) to turn a missing
  service into a failure instead of a skip.
* :func:`redis_available` and :func:`skip_or_fail`: guard tests that need a server.
"""

from __future__ import annotations

import importlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType
from typing import NoReturn

import pytest

from typedq.worker import Worker

__all__ = [
    "REPO",
    "REQUIRE_SERVICES",
    "SkewedClock",
    "import_or_skip",
    "interrupt_when",
    "load_scaled",
    "redis_available",
    "skip_or_fail",
    "spawn_module",
    "wait_until",
    "wait_while_progressing",
]

#: The repository's root: the working directory of the processes tests start.
REPO = Path(__file__).resolve().parents[1]

#: The most :func:`load_scaled` stretches a bound.
MAX_LOAD_SCALE = 6.0


def load_scaled(seconds: float) -> float:
    """``seconds`` times the 1-minute load average per core, between 1x (an idle
    machine: the bound as written) and :data:`MAX_LOAD_SCALE` x."""
    try:
        load = os.getloadavg()[0]
    except OSError:  # not available here: the bound as written
        return seconds
    return seconds * min(MAX_LOAD_SCALE, max(1.0, load / (os.cpu_count() or 1)))


#: When true, a service a test needs (Redis, ...) must be there: no skips.
REQUIRE_SERVICES = os.environ.get("TYPEDQ_REQUIRE_SERVICES") == "1"


def wait_until(
    predicate: Callable[[], object],
    timeout: float = 5.0,
    interval: float = 0.005,
    *,
    message: str | None = None,
) -> None:
    """Call ``predicate`` every ``interval`` seconds until it returns a truthy value.

    Args:
        predicate: the condition; called at least once, also after the deadline passed.
        timeout: seconds before giving up.
        interval: seconds between calls.
        message: what was awaited, for the failure message.

    Raises:
        AssertionError: the predicate was still falsy after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return
        if time.monotonic() >= deadline:
            what = message or getattr(predicate, "__name__", repr(predicate))
            raise AssertionError(f"timed out after {timeout:g}s waiting until {what}")
        time.sleep(interval)


def wait_while_progressing(
    count: Callable[[], int],
    target: int,
    *,
    stall_s: float,
    interval: float = 0.05,
    message: str,
) -> None:
    """Wait until ``count()`` reaches ``target``, for as long as it keeps growing.

    For work whose length depends on the machine (a backlog drained by worker
    processes): a fixed deadline fails on a slow machine or after a short run-up; a
    stall, no growth for ``stall_s`` seconds, is what a hang looks like.

    Raises:
        AssertionError: ``count()`` did not grow for ``stall_s`` seconds; the message
            gives ``message``, the count and the target.
    """
    best = count()
    last_growth = time.monotonic()
    while best < target:
        time.sleep(interval)
        now = count()
        if now > best:
            best, last_growth = now, time.monotonic()
        elif time.monotonic() - last_growth >= stall_s:
            raise AssertionError(f"stalled for {stall_s:g}s at {now} of {target} waiting until {message}")


@contextmanager
def interrupt_when(done: Callable[[], bool], timeout: float = 20.0) -> Iterator[None]:
    """Send SIGINT to this process once ``done()`` holds (or ``timeout`` passes) while the
    block runs: for a worker or pool that runs in the main thread until a signal.

    The signal is only sent while the block still runs, so the code in it must install
    its handler before ``done()`` can hold (a worker does so before it starts jobs).
    """
    finished = threading.Event()

    def stopper() -> None:
        deadline = time.monotonic() + timeout
        while not finished.is_set() and time.monotonic() < deadline and not done():
            time.sleep(0.02)
        if not finished.is_set():
            os.kill(os.getpid(), signal.SIGINT)

    thread = threading.Thread(target=stopper, daemon=True)
    thread.start()
    try:
        yield
    finally:
        finished.set()
        thread.join(timeout)


def stop_and_join(workers: list[Worker], timeout: float = 10.0) -> None:
    """Ask every worker to stop, then wait for each (a fixture's teardown): all stop at
    once rather than one after another. Fails the test if one does not stop in time."""
    for worker in workers:
        worker.stop()
    for worker in workers:
        assert worker.stop(wait=True, timeout=timeout), f"{worker.worker_id} did not stop"


def redis_available(host: str = "127.0.0.1", port: int = 6379, timeout: float = 0.5) -> bool:
    """Return whether a Redis server answers PING at ``host:port``.

    Uses a bare socket, so it works without the ``redis`` package installed.
    """
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return False
    # "+PONG" normally; "-NOAUTH ..." still means a server is there.
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test (or the test module, called at its top) for a missing service, or
    fail it when services are required."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (TYPEDQ_REQUIRE_SERVICES=1)")
    pytest.skip(reason, allow_module_level=True)


class SkewedClock:
    """The system clock, ``skew_s`` seconds ahead (another host's clock, which disagrees)."""

    def __init__(self, skew_s: float) -> None:
        self.skew_s = skew_s

    def now(self) -> float:
        return time.time() + self.skew_s

    def monotonic(self) -> float:
        return time.monotonic()


def import_or_skip(module: str) -> ModuleType:
    """``module``, imported; a missing one (a service's driver) skips the test or the
    test module, or fails it when services are required (pytest.importorskip would skip
    it silently even then)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        skip_or_fail(f"{module} is not installed (pip install -e '.[dev]')")


def spawn_module(module: str, *args: str) -> subprocess.Popen[str]:
    """Start ``python -m module ARGS`` from the repository's root, with text pipes for
    stdin and stdout (stderr discarded)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
