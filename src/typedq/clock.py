"""Time sources: the ``Clock`` protocol, the system clock, and a fake clock for tests.

Everything in typedq that reads time takes a clock, so tests move time instead of
sleeping. A clock has two readings that advance independently:

* ``now()``: wall time as a UTC epoch float. Used for what is stored: ``created_at``,
  ``scheduled_at``, lease deadlines.
* ``monotonic()``: a monotonic reading. Used for durations measured in one process:
  handler timeouts, shutdown grace periods, poll intervals.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FakeClock", "SystemClock", "system_clock"]


@runtime_checkable
class Clock(Protocol):
    """A source of wall time and monotonic time."""

    def now(self) -> float:
        """Return wall time as seconds since the UTC epoch."""
        ...

    def monotonic(self) -> float:
        """Return a monotonic reading in seconds, for measuring durations."""
        ...


class SystemClock:
    """The real clocks: :func:`time.time` and :func:`time.monotonic`."""

    __slots__ = ()

    # Bound to the C functions directly: these are called on every enqueue and claim.
    now = staticmethod(time.time)
    monotonic = staticmethod(time.monotonic)

    def __repr__(self) -> str:
        return "SystemClock()"


system_clock: Clock = SystemClock()


class FakeClock:
    """A clock that only moves when told to; thread-safe.

    Args:
        start: the initial wall time (epoch seconds).
        monotonic_start: the initial monotonic reading.
    """

    def __init__(self, start: float = 1_800_000_000.0, monotonic_start: float = 1_000.0) -> None:
        self._lock = threading.Lock()
        self._wall = start
        self._mono = monotonic_start

    def now(self) -> float:
        """Return the fake wall time."""
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        """Return the fake monotonic reading."""
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move both wall and monotonic time forward by ``seconds`` (≥ 0)."""
        if seconds < 0:
            raise ValueError(f"seconds={seconds!r} is invalid: must be >= 0 (use jump_wall)")
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Move only the wall clock, by any amount (an NTP step or a manual change)."""
        with self._lock:
            self._wall += seconds

    def __repr__(self) -> str:
        return f"FakeClock(now={self._wall!r}, monotonic={self._mono!r})"
