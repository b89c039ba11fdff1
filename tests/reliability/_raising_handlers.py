"""Handlers of the exception-heavy soak (L2, ``test_exception_soak``): every one holds
1 MiB in a local (a ``bytearray``, its pages written) and raises :class:`HandlerError`.
They live in a module of their own so that a frame of theirs is known by its file
(``f_code.co_filename == __file__``) and an exception of theirs by its class.

* :func:`raise_plain`: allocates, raises.
* :func:`raise_chained`: a helper allocates and raises; the handler raises a second
  error ``from`` it (a chain: two tracebacks, two frames holding locals).
* :func:`raise_late`: allocates, sleeps ``payload["sleep_s"]`` (longer than its job's
  ``timeout_seconds``), raises: the worker has failed the job with ``JobTimeoutError``
  by then, and the error reaches only the abandoned helper thread.

``TYPEDQ_L2_KEEP_EVERY=N`` (a mutation switch, unset in every real run) keeps every
N-th job's error in :data:`KEPT`, a module-level list, as a leaking handler would: the
soak must then fail.
"""

from __future__ import annotations

import os
import time
from typing import Any

__all__ = ["KEPT", "LOCALS_BYTES", "HandlerError", "raise_chained", "raise_late", "raise_plain"]

#: The size of each handler's local.
LOCALS_BYTES = 1 << 20
_KEEP_EVERY = int(os.environ.get("TYPEDQ_L2_KEEP_EVERY", "0"))
#: The errors kept by the mutation switch (empty otherwise).
KEPT: list[BaseException] = []


class HandlerError(Exception):
    """What every handler here raises."""


def _ballast() -> bytearray:
    """1 MiB, every page written (so it is resident, not just reserved)."""
    ballast = bytearray(LOCALS_BYTES)
    ballast[::4096] = b"\x01" * (LOCALS_BYTES // 4096)
    return ballast


def _raise(exc: HandlerError, n: int) -> None:
    if _KEEP_EVERY and n % _KEEP_EVERY == 0:
        KEPT.append(exc)
    raise exc


def raise_plain(payload: dict[str, Any]) -> None:
    n = int(payload["n"])
    ballast = _ballast()
    _raise(HandlerError(f"job {n} failed holding {len(ballast)} bytes"), n)


def _inner(n: int) -> None:
    ballast = _ballast()
    raise HandlerError(f"job {n}: inner step failed holding {len(ballast)} bytes")


def raise_chained(payload: dict[str, Any]) -> None:
    n = int(payload["n"])
    ballast = _ballast()
    try:
        _inner(n)
    except HandlerError as inner:
        error = HandlerError(f"job {n} failed holding {len(ballast)} bytes")
        error.__cause__ = inner
        _raise(error, n)


def raise_late(payload: dict[str, Any]) -> None:
    n = int(payload["n"])
    ballast = _ballast()
    time.sleep(float(payload["sleep_s"]))  # the job's work, past its timeout
    _raise(HandlerError(f"job {n} failed late holding {len(ballast)} bytes"), n)
