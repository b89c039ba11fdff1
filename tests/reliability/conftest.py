"""Fixtures of the reliability tests.

* ``redis_servers``: a factory of private ``redis-server`` processes
  (:class:`tests.reliability.redis_server.RedisServer`), each in a folder of the test's
  ``tmp_path`` and started before it is returned; every one still running is stopped at
  teardown. ``redis_servers({"appendonly": "yes"})`` passes ``redis-server`` options.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest
from tests.reliability.redis_server import RedisServer

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
