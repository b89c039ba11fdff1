"""Fixtures shared by the integration tests."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest


@pytest.fixture
def release() -> Iterator[threading.Event]:
    """An event blocked handlers wait on; set at teardown so no thread is left stuck."""
    event = threading.Event()
    yield event
    event.set()
