"""How an idle worker of the Redis backend waits for work without polling.

Every transition that makes a job ready or due later (enqueue, release, fail, a
dependency's completion, update_status or replay to PENDING) pushes a token, in its
script, to the wake list of the job's type, ``{prefix}:{queue}:wake:<job type>`` (at most
16 a transition and list; a list is trimmed to 64 tokens once it holds more than 128).
A waiter blocks in ``BLPOP`` on the lists of the job types it claims, so it wakes as soon
as any process of any host adds work it can take; one token wakes one waiter, and a
wake-up that finds the job taken by another worker simply waits again. A list per type
keeps a waiter for other types from taking the token and leaving the waiter that could
claim the job asleep until its timeout.

A token says what it stands for: ``r``, a job made ready now; ``1``, a job that is due
later or ready at once without the transition telling which (the waiter asks for ready
jobs and the next due time). A waiter woken by ``r`` claims at once, without that round
trip: the job may be gone by then, which its claim finds out as it would after the
round trip.

A waiter for any job type watches the lists of every type the queue has had, and the
queue's own list ``{prefix}:{queue}:wake``, which gets a token when the first job of a new
type is added (every waiter watches it: typedq before the lists per type pushed its
tokens there).

A wait that ends at a delayed job's due time does not trust the server's ``BLPOP``
timeout, which Redis honours only at its next event-loop pass (up to ``1/hz`` late, 100
ms by default): the waiting thread sends its ``BLPOP``, waits for the reply on its own
socket (``select``) only until the due time, and if none came by then pushes a token to
the object's interrupt list itself and reads the reply it ends
(:meth:`Waiters.block_until_due`). No other thread is involved: a timer thread (one more
thread to start per wait, to be scheduled at the due time and to hand the GIL back) made
the job start late by whatever the process's other threads and the machine's load
delayed it.

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
import time
import uuid
from typing import Any, Final

__all__ = ["MIN_BLOCK_S", "READY_TOKEN", "Waiters"]

logger = logging.getLogger("typedq.redis")

#: Tokens an interrupt leaves behind expire after this many milliseconds.
_INTERRUPT_TTL_MS: Final = 60_000
#: The wake token of a job made ready (see the module's doc).
READY_TOKEN: Final = b"r"
#: Shortest BLPOP timeout worth blocking for (Redis reads 0 as "forever").
MIN_BLOCK_S: Final = 0.01
#: How much longer than a due-time wait its BLPOP's own timeout is: the waiter's token
#: ends the wait; the server's timeout only backs it up.
_BACKSTOP_S: Final = 0.5
#: A socket wait's grain: Python waits on a socket with ``poll()``, in whole milliseconds
#: rounded up, so a due-time wait polls until this much before the due time and sleeps
#: the rest (to the microsecond).
_POLL_GRAIN_S: Final = 0.001


class Waiters:
    """The threads of one queue object blocked for work, and how to wake them."""

    def __init__(self, base: str) -> None:
        self.wake_key = f"{base}:wake"
        self.intr_key = f"{base}:intr:{uuid.uuid4().hex}"
        self._intr_key = self.intr_key.encode()
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

    def keys(self, job_types: list[str]) -> list[str]:
        """The wake lists a waiter for ``job_types`` watches: the queue's own, then each
        type's."""
        return [self.wake_key, *(f"{self.wake_key}:{job_type}" for job_type in job_types)]

    def block(self, client: Any, seen: int, timeout_s: float, keys: list[str]) -> bool:
        """``BLPOP`` the wake lists ``keys`` (see :meth:`keys`) and the interrupt list for
        up to ``timeout_s`` seconds, unless an interrupt came since :meth:`mark` returned
        ``seen``; return whether the wait ended on the token of a job made ready
        (:data:`READY_TOKEN`)."""
        return self._blpop(client, seen, timeout_s, None, keys)

    def block_until_due(self, client: Any, seen: int, timeout_s: float, keys: list[str]) -> bool:
        """:meth:`block` for a wait that ends at a delayed job's due time, ``timeout_s``
        from now: if no token came by then, this thread pushes one to the interrupt list
        itself, ending its ``BLPOP`` on time. The server's own ``BLPOP`` timeout is only
        the backstop: Redis ends a blocked command at its timeout only at its next
        event-loop pass, up to ``1/hz`` seconds late (100 ms with the default ``hz 10``).

        Returns whether the wait ended on the token of a job made ready; the caller looks
        for ready jobs otherwise (the due time's own token included). When another thread of this
        object takes that token first, it wakes instead (and looks for the due job);
        when a token came just after the due time, the one pushed then is left over: it
        ends one later wait of this object early (and expires within a minute).
        """
        return self._blpop(client, seen, timeout_s + _BACKSTOP_S, max(0.0, timeout_s), keys)

    def _blpop(self, client: Any, seen: int, timeout_s: float, due_s: float | None, keys: list[str]) -> bool:
        with self._lock:
            if self._interrupts != seen:
                return False  # interrupted before it blocked: no token came
            self._waiting += 1
        try:
            pool = self._pool(client)
            conn = pool.get_connection()
            try:
                conn.send_command("BLPOP", self.intr_key, *keys, timeout_s)
                if due_s is not None:
                    deadline = time.monotonic() + due_s
                    if not conn.can_read(timeout=max(0.0, due_s - _POLL_GRAIN_S)):
                        time.sleep(max(0.0, deadline - time.monotonic()))
                        self._alarm(client)
                reply = conn.read_response()
                return reply is not None and reply[1] == READY_TOKEN and reply[0] != self._intr_key
            except BaseException:
                conn.disconnect()  # a reply half read, or not read, must not reach the next user
                raise
            finally:
                pool.release(conn)
        finally:
            with self._lock:
                self._waiting -= 1

    def _pool(self, client: Any) -> Any:
        """The connection pool serving the lists: the client's, or on a Cluster the pool
        of the node of their slot (they share the queue's hash tag)."""
        pool = getattr(client, "connection_pool", None)
        if pool is None:
            pool = client.get_redis_connection(client.get_node_from_key(self.wake_key)).connection_pool
        return pool

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
