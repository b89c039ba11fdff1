"""How an idle worker of the Redis backend waits for work without polling.

Every transition that makes a job ready (enqueue, release, fail, a dependency's
completion, update_status or replay to PENDING) pushes a token to the queue's wake list
``{prefix}:{queue}:wake`` in its script (at most 16 a transition; the list is trimmed to 64
tokens once it holds more than 128). A waiter blocks in ``BLPOP`` on that list, so it
wakes as soon as any process of any host adds work; one token wakes one waiter, and a
wake-up that finds the job taken by another worker simply waits again.

A wait that ends at a delayed job's due time does not trust the server's ``BLPOP``
timeout, which Redis honours only at its next event-loop pass (up to ``1/hz`` late, 100
ms by default): a timer of the waiting process pushes a token to the object's interrupt
list at the due time (:meth:`Waiters.block_until_due`), which ends the ``BLPOP`` at once.

``interrupt()`` must wake the threads of one queue object, and only them: each
:class:`Waiters` has its own list ``{prefix}:{queue}:intr:<random>`` that its waiters
``BLPOP`` on together with the wake list. ``interrupt()`` pushes one token per thread
blocked at that moment (tokens left over expire within a minute) and bumps a counter
that a thread about to block checks first, so an interrupt that comes between a waiter's
check for ready jobs and its ``BLPOP`` is never lost.
"""

from __future__ import annotations

import logging
import threading
import uuid
from typing import Any, Final

__all__ = ["MIN_BLOCK_S", "Waiters"]

logger = logging.getLogger("typedq.redis")

#: Tokens an interrupt leaves behind expire after this many milliseconds.
_INTERRUPT_TTL_MS: Final = 60_000
#: Shortest BLPOP timeout worth blocking for (Redis reads 0 as "forever").
MIN_BLOCK_S: Final = 0.01
#: How much longer than a due-time wait its BLPOP's own timeout is: the timer's token
#: ends the wait; the server's timeout only backs it up.
_BACKSTOP_S: Final = 0.5


class Waiters:
    """The threads of one queue object blocked for work, and how to wake them."""

    def __init__(self, base: str) -> None:
        self.wake_key = f"{base}:wake"
        self.intr_key = f"{base}:intr:{uuid.uuid4().hex}"
        self._lock = threading.Lock()
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

    def block_until_due(self, client: Any, seen: int, timeout_s: float) -> bool:
        """:meth:`block` for a wait that ends at a delayed job's due time, ``timeout_s``
        from now: a timer of this process pushes a token to the interrupt list then,
        ending the ``BLPOP`` on time. The server's own ``BLPOP`` timeout is only the
        backstop: Redis ends a blocked command at its timeout only at its next event-loop
        pass, up to ``1/hz`` seconds late (100 ms with the default ``hz 10``).

        Returns whether a token (or an interrupt) ended the wait; the timer's token
        counts, so a caller looks for ready jobs either way. A token the timer pushed
        just after another one ended the wait is left over: it ends one later wait of
        this object early (and expires within a minute).
        """
        timer = threading.Timer(max(0.0, timeout_s), self._alarm, args=(client,))
        timer.daemon = True
        timer.start()
        try:
            return self.block(client, seen, timeout_s + _BACKSTOP_S)
        finally:
            timer.cancel()

    def _alarm(self, client: Any) -> None:
        """Push one token to the interrupt list (the due time of a waiter came)."""
        try:
            with client.pipeline(transaction=True) as pipe:
                pipe.lpush(self.intr_key, "1")
                pipe.pexpire(self.intr_key, _INTERRUPT_TTL_MS)
                pipe.execute()
        except Exception as exc:  # the waiter's BLPOP then ends at its backstop
            logger.debug("could not push the due-time token of %s: %s", self.intr_key, exc)

    def interrupt(self, client: Any) -> None:
        """Wake every thread blocked in :meth:`block` (and stop those about to block)."""
        with self._lock:
            self._interrupts += 1
            waiting = self._waiting
        if waiting:
            with client.pipeline(transaction=True) as pipe:
                pipe.lpush(self.intr_key, *(["1"] * waiting))
                pipe.pexpire(self.intr_key, _INTERRUPT_TTL_MS)
                pipe.execute()
