"""Injected faults shared by the reliability tests (RELIABILITY.md §4d)."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from typedq.backends.base import Completion, LeaseRenewal, Queue
from typedq.errors import BackendError, BackendUnavailableError, TypedqError
from typedq.job import Job


class FailingRenewals:
    """A queue whose lease renewals (``extend_lease``, and ``renew_lease``, the
    heartbeat's call) raise ``BackendError`` while ``failing`` is set.

    Everything else goes to the wrapped queue. ``refused`` counts the failed renewals;
    every ``complete()`` call is recorded in ``completes`` as ``(job_id, token,
    outcome)``, the outcome being ``"ok"`` or the name of the exception raised.
    """

    def __init__(self, inner: Queue) -> None:
        self._inner = inner
        self.failing = threading.Event()
        self.refused = 0
        self.completes: list[tuple[str, int, str]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def extend_lease(self, job_id: str, *, token: int, lease_s: float) -> float:
        if self.failing.is_set():
            self.refused += 1
            raise BackendError(f"injected failure renewing the lease of {job_id}")
        return self._inner.extend_lease(job_id, token=token, lease_s=lease_s)

    def renew_lease(self, job_id: str, *, token: int, lease_s: float) -> LeaseRenewal:
        if self.failing.is_set():
            self.refused += 1
            raise BackendError(f"injected failure renewing the lease of {job_id}")
        return self._inner.renew_lease(job_id, token=token, lease_s=lease_s)

    def complete(self, job_id: str, *, token: int, result: Any = None) -> Job:
        try:
            done = self._inner.complete(job_id, token=token, result=result)
        except Exception as exc:
            self.completes.append((job_id, token, type(exc).__name__))
            raise
        self.completes.append((job_id, token, "ok"))
        return done


class FailingCompletions:
    """A queue whose ``complete`` and ``complete_many`` raise ``BackendError`` while
    ``failing`` is set (as a held write lock or a full disk would), writing nothing.

    Everything else goes to the wrapped queue; ``refused`` counts the failed calls.
    """

    def __init__(self, inner: Queue) -> None:
        self._inner = inner
        self.failing = threading.Event()
        self.refused = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _check(self) -> None:
        if self.failing.is_set():
            self.refused += 1
            raise BackendError("injected failure: the storage refused the write")

    def complete(self, job_id: str, *, token: int, result: Any = None) -> Job:
        self._check()
        return self._inner.complete(job_id, token=token, result=result)

    def complete_many(self, completions: Sequence[Completion]) -> list[Job | TypedqError]:
        self._check()
        return self._inner.complete_many(completions)


class Unreachable:
    """A queue that raises ``BackendUnavailableError`` from every call while ``down`` is
    set, as an unreachable server does (its ``name`` and ``clock`` still answer).

    ``calls`` holds ``(monotonic time, method, thread name)`` of every failed call.
    """

    def __init__(self, inner: Queue) -> None:
        self._inner = inner
        self.down = threading.Event()
        self.calls: list[tuple[float, str, str]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self._inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            if self.down.is_set():
                self.calls.append((time.monotonic(), name, threading.current_thread().name))
                raise BackendUnavailableError(f"storage at test://down is unavailable ({name})")
            return target(*args, **kwargs)

        return call

    @property
    def name(self) -> str:
        return self._inner.name

    @property
    def clock(self) -> Any:
        return self._inner.clock
