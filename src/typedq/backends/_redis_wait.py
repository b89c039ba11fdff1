"""How an idle worker of the Redis backend waits for work without polling.

Every transition that makes a job ready (enqueue, release, fail, a dependency's
completion, update_status or replay to PENDING) pushes a token to the queue's wake list
``{prefix}:{queue}:wake`` in its script (at most 16 a transition; the list is trimmed to 64
tokens). A waiter blocks in ``BLPOP`` on that list, so it wakes as soon as any process
of any host adds work; one token wakes one waiter, and a wake-up that finds the job
taken by another worker simply waits again.

``interrupt()`` must wake the threads of one queue object, and only them: each
:class:`Waiters` has its own list ``{prefix}:{queue}:intr:<random>`` that its waiters
``BLPOP`` on together with the wake list. ``interrupt()`` pushes one token per thread
blocked at that moment (tokens left over expire within a minute) and bumps a counter
that a thread about to block checks first, so an interrupt that comes between a waiter's
check for ready jobs and its ``BLPOP`` is never lost.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Final

__all__ = ["DUE_GUARD_S", "MIN_BLOCK_S", "Waiters"]

#: Tokens an interrupt leaves behind expire after this many milliseconds.
_INTERRUPT_TTL_MS: Final = 60_000
#: Shortest BLPOP timeout worth blocking for (Redis reads 0 as "forever").
MIN_BLOCK_S: Final = 0.01
#: A wait that ends at a delayed job's due time blocks in BLPOP only until this long
#: before it, then sleeps the rest in the client: the server ends a BLPOP 5 ms late at the
#: median and up to ~25 ms late (measured on Redis 7.0, hz 10), the client's sleep within
#: a fraction of a millisecond. A wake token pushed in that last stretch is seen when the
#: sleep ends (at most this much later).
DUE_GUARD_S: Final = 0.03


class Waiters:
    """The threads of one queue object blocked for work, and how to wake them."""

    def __init__(self, base: str) -> None:
        self.wake_key = f"{base}:wake"
        self.intr_key = f"{base}:intr:{uuid.uuid4().hex}"
        self._lock = threading.Lock()
        self._sleeping = threading.Condition(self._lock)
        self._waiting = 0
        self._interrupts = 0

    @property
    def waiting(self) -> int:
        """How many threads are blocked right now."""
        return self._waiting

    def mark(self) -> int:
        """The interrupt count before a wait begins (pass it to :meth:`block`)."""
        with self._lock:
            return self._interrupts

    def block(self, client: Any, seen: int, timeout_s: float) -> bool:
        """``BLPOP`` the wake and interrupt lists for up to ``timeout_s`` seconds, unless
        an interrupt came since :meth:`mark` returned ``seen``; return whether a token
        (or that interrupt) ended the wait."""
        with self._lock:
            if self._interrupts != seen:
                return True
            self._waiting += 1
        try:
            return client.blpop([self.intr_key, self.wake_key], timeout=timeout_s) is not None
        finally:
            with self._lock:
                self._waiting -= 1

    def sleep(self, seen: int, timeout_s: float) -> None:
        """Sleep here for ``timeout_s`` seconds, or until :meth:`interrupt` (or one since
        ``seen``): the last stretch before a delayed job falls due, which the server's
        ``BLPOP`` timeout would end several milliseconds late."""
        with self._sleeping:
            if self._interrupts == seen:
                self._sleeping.wait_for(lambda: self._interrupts != seen, timeout_s)

    def interrupt(self, client: Any) -> None:
        """Wake every thread blocked in :meth:`block` (and stop those about to block)."""
        with self._lock:
            self._interrupts += 1
            waiting = self._waiting
            self._sleeping.notify_all()
        if waiting:
            with client.pipeline(transaction=True) as pipe:
                pipe.lpush(self.intr_key, *(["1"] * waiting))
                pipe.pexpire(self.intr_key, _INTERRUPT_TTL_MS)
                pipe.execute()
