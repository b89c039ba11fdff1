"""Waiting for jobs of a SQLite file (``_sqlite_wait``): one poller per file and process.

The cross-process wake-up itself is tested with a real second process in
``test_sqlite_processes.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.helpers import wait_until

from typedq.backends._sqlite_wait import ReadySignal
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.job import Job


def _waiter(
    signal: ReadySignal,
    timeout: float,
    has_ready: Callable[[], bool],
    version: Callable[[], int],
    woke: list[tuple[bool, float]],
) -> threading.Thread:
    """A thread that waits on ``signal`` and records (its answer, when it returned)."""

    def wait() -> None:
        ready = signal.wait(
            timeout, has_ready=has_ready, next_due=lambda: None, now=time.time, version=version
        )
        woke.append((ready, time.monotonic()))

    return threading.Thread(target=wait)


@pytest.mark.timeout(30)
def test_one_waiting_thread_at_a_time_polls_for_other_connections_commits() -> None:
    signal = ReadySignal(watch_s=0.002)
    inside, most, calls = [0], [0], [0]
    lock = threading.Lock()

    def version() -> int:
        with lock:
            inside[0] += 1
            calls[0] += 1
            most[0] = max(most[0], inside[0])
        time.sleep(0.001)
        with lock:
            inside[0] -= 1
        return 1

    woke: list[tuple[bool, float]] = []
    threads = [_waiter(signal, timeout, lambda: False, version, woke) for timeout in (0.3, 0.2, 0.25, 0.15)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert [ready for ready, _ in woke] == [False] * 4
    assert calls[0] > 10  # polled all along
    assert most[0] == 1  # but never by two threads at once


@pytest.mark.timeout(30)
def test_a_waiter_takes_the_watch_over_when_the_watcher_leaves() -> None:
    signal = ReadySignal(watch_s=0.002)
    committed_at = time.monotonic() + 0.8  # after the first watcher's timeout

    def version() -> int:
        return 2 if time.monotonic() >= committed_at else 1

    def has_ready() -> bool:
        return time.monotonic() >= committed_at

    woke: list[tuple[bool, float]] = []
    short = _waiter(signal, 0.3, has_ready, version, woke)
    long = _waiter(signal, 20.0, has_ready, version, woke)
    short.start()
    wait_until(lambda: signal._watched, timeout=5, message="the short waiter watches")
    long.start()
    short.join(10)
    long.join(10)
    assert not long.is_alive()
    assert [ready for ready, _ in woke] == [False, True]
    assert woke[1][1] < committed_at + 5.0  # seen by the new watcher, not at its 20 s timeout


def test_the_queue_objects_of_a_process_on_one_file_share_one_signal(
    tmp_path: Path, clock: FakeClock
) -> None:
    a = SQLiteQueue(tmp_path / "jobs.db", name="a", clock=clock)
    b = SQLiteQueue(tmp_path / "jobs.db", name="b", clock=clock)
    other = SQLiteQueue(tmp_path / "other.db", name="a", clock=clock)
    try:
        assert a._signal is b._signal
        assert a._signal is not other._signal
    finally:
        for queue in (a, b, other):
            queue.close()


@pytest.mark.timeout(30)
def test_a_commit_to_another_queue_of_the_file_does_not_make_this_queue_ready(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The watcher wakes every waiter on the file; each looks for its own queue's jobs."""
    mine = SQLiteQueue(tmp_path / "jobs.db", name="mine", clock=clock)
    theirs = SQLiteQueue(tmp_path / "jobs.db", name="theirs", clock=clock)
    try:
        assert mine.wait_ready(0.05) is False
        theirs.enqueue(Job(job_type="t", job_id="theirs-1"))
        assert mine.wait_ready(0.05) is False
        assert theirs.wait_ready(0.05) is True
    finally:
        mine.close()
        theirs.close()
