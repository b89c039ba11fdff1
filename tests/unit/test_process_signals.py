"""The process pool's supervisor hears a stop signal at once (``_signal_wakeup``).

A Python signal handler runs in the main thread between bytecodes: a wait in that thread
resumes its timeout after the handler ran, so the pool forwarded a stop up to one wait
(50 ms) late. The wakeup pipe, among what the pool waits on, turns readable when a signal
arrives. End to end, D3 (``tests/reliability/test_process_workers``) holds the stop's
latency.
"""

from __future__ import annotations

import multiprocessing.connection
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

import pytest

from typedq.process import _signal_wakeup


@pytest.fixture
def usr1() -> Iterator[list[int]]:
    """A SIGUSR1 handler that records the signals it got."""
    got: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        got.append(signum)

    previous = signal.signal(signal.SIGUSR1, handler)
    yield got
    signal.signal(signal.SIGUSR1, previous)


def test_a_signal_makes_the_wakeup_fd_readable(usr1: list[int]) -> None:
    with _signal_wakeup() as wake:
        assert wake is not None
        assert multiprocessing.connection.wait([wake], timeout=0) == []
        os.kill(os.getpid(), signal.SIGUSR1)
        assert multiprocessing.connection.wait([wake], timeout=5.0) == [wake]
        assert os.read(wake, 16) == bytes([signal.SIGUSR1])
    assert usr1 == [signal.SIGUSR1]


def test_the_previous_wakeup_fd_is_restored() -> None:
    read_fd, write_fd = os.pipe()
    os.set_blocking(write_fd, False)
    before = signal.set_wakeup_fd(write_fd)
    try:
        with _signal_wakeup():
            own = signal.set_wakeup_fd(-1)  # set_wakeup_fd returns the fd it replaces
            signal.set_wakeup_fd(own)
            assert own not in (write_fd, -1)
        assert signal.set_wakeup_fd(write_fd) == write_fd
    finally:
        signal.set_wakeup_fd(before)
        os.close(read_fd)
        os.close(write_fd)


def test_off_the_main_thread_there_is_no_wakeup_fd() -> None:
    seen: list[int | None] = []

    def body() -> None:
        with _signal_wakeup() as wake:
            seen.append(wake)

    thread = threading.Thread(target=body)
    thread.start()
    thread.join()
    assert seen == [None]
