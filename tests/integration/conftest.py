"""Fixtures shared by the integration tests."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.conformance.conftest import shared_store_url  # the fixture, re-exported
from tests.helpers import stop_and_join

from typedq.backends.base import Queue
from typedq.worker import Worker

__all__ = ["shared_store_url"]


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event blocked handlers wait on; set at teardown so no thread is left stuck."""
    event = threading.Event()
    yield event
    event.set()


@pytest.fixture
def start_worker() -> Iterator[Callable[..., Worker]]:
    """Build and start workers (``poll_interval`` 0.05 s unless given); every one is
    stopped and joined at teardown."""
    workers: list[Worker] = []

    def _start(queue: Queue, handlers: dict[str, Callable[..., Any]], **kwargs: Any) -> Worker:
        kwargs.setdefault("poll_interval", 0.05)
        worker = Worker(queue, handlers, **kwargs)
        workers.append(worker)
        worker.start()
        return worker

    yield _start
    stop_and_join(workers)
