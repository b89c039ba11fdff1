"""Fixtures of the reliability tests.

* ``redis_servers``: a factory of private ``redis-server`` processes
  (:class:`tests.reliability.redis_server.RedisServer`), each in a folder of the test's
  ``tmp_path`` and started before it is returned; every one still running is stopped at
  teardown. ``redis_servers({"appendonly": "yes"})`` passes ``redis-server`` options.
* ``backend``: the store of the process tests, a SQLite file in ``tmp_path`` (a module
  that runs on another store overrides it), and ``queue``: the default queue of a
  manager on ``backend``, closed at teardown.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from tests.reliability.redis_server import RedisServer

from typedq.backends.base import Queue
from typedq.manager import JobQueueManager

MakeServer = Callable[..., RedisServer]


@pytest.fixture
def redis_servers(tmp_path: Path) -> Iterator[MakeServer]:
    """Start private redis-servers: ``redis_servers(options=None, *, name="redis")``."""
    made: list[RedisServer] = []

    def make(options: Mapping[str, str] | None = None, *, name: str = "redis") -> RedisServer:
        server = RedisServer(tmp_path / f"{name}-{len(made)}", options)
        made.append(server)
        return server.start()

    yield make
    for server in made:
        server.close()


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def queue(backend: str) -> Iterator[Queue]:
    manager = JobQueueManager({"backend": backend})
    yield manager.get_queue("default")
    manager.close(graceful=False)
