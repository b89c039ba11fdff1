"""Two handles on one store, seen as one queue (the conformance suite's "2handles" variants).

A durable backend is shared: another object, thread, process or host opens the same file
or key prefix and sees the same jobs. A test that only ever calls one object can pass on
state that object keeps for itself (a claim it remembers, a counter it caches, a waiter it
wakes directly) and so hide a bug another handle would show. :class:`TwoHandles` turns
every test into a two-handle test: each call goes to the other handle than the call
before it, so a job enqueued through one is claimed through the other, a token handed out
by one is presented to the other, and a write is read back through the other.

Waiting stays on one handle: :meth:`Queue.interrupt` wakes the waiters of the object it
is called on, by contract, so ``wait_ready`` and ``interrupt`` both go to the second
handle (the first one's writes must still wake it: that is tested by every waiting test).
A handle's configuration (``set_claim_policy``) is given to both handles.
"""

from __future__ import annotations

import itertools
from typing import Any

from typedq.backends.base import Queue

__all__ = ["TwoHandles"]

#: Calls that must reach the same object every time (the waiters of one object).
_PINNED = frozenset({"wait_ready", "interrupt"})
#: Configuration of a handle: given to both (every process on a store is configured alike).
_BOTH = frozenset({"set_claim_policy"})


class TwoHandles:
    """A :class:`Queue` whose calls alternate between two handles on one store.

    Attributes are looked up on the next handle, one turn per lookup (a property such as
    ``size`` is read through it too); a proxy passed to a call (a dead-letter queue) is
    given as its handle of the other side; ``wait_ready`` and ``interrupt`` always go to the
    second handle, ``name`` and ``clock`` to the first; ``close`` closes both.
    """

    def __init__(self, first: Queue, second: Queue) -> None:
        self._handles = (first, second)
        self._turns = itertools.count()  # next() is atomic: threads share the proxy

    def __getattr__(self, attr: str) -> Any:
        if attr.startswith("__"):
            raise AttributeError(attr)
        first, second = self._handles
        if attr in _PINNED:
            return getattr(second, attr)
        if attr in _BOTH:
            def both(*args: Any, **kwargs: Any) -> Any:
                for handle in reversed(self._handles):
                    result = getattr(handle, attr)(*args, **kwargs)
                return result

            return both
        if attr in ("name", "clock"):
            return getattr(first, attr)
        turn = next(self._turns) % 2
        found = getattr(self._handles[turn], attr)
        if not callable(found):
            return found

        def call(*args: Any, **kwargs: Any) -> Any:
            # Another proxy passed in (a dead-letter queue) is handed over as its handle of
            # the other side: the call crosses handles there too.
            args = tuple(a._handles[1 - turn] if isinstance(a, TwoHandles) else a for a in args)
            kwargs = {k: v._handles[1 - turn] if isinstance(v, TwoHandles) else v for k, v in kwargs.items()}
            return found(*args, **kwargs)

        return call

    def close(self) -> None:
        for handle in self._handles:
            handle.close()

    def __repr__(self) -> str:
        first, second = self._handles
        return f"TwoHandles({first!r}, {second!r})"
