"""The backend registry: one place maps a URL scheme to its backend and what it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from typedq.backends import BACKENDS, SCHEMES, backend_for, open_queue
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.errors import ConfigError


def test_each_scheme_names_its_backend_and_what_it_is() -> None:
    assert set(SCHEMES) == {
        "memory", "sqlite", "redis", "rediss", "redis+sentinel", "rediss+sentinel", "redis+cluster",
        "rediss+cluster",
    }
    memory, sqlite, redis = backend_for("memory://"), backend_for("SQLite:///x.db"), backend_for("rediss://h")
    assert (memory.shared, memory.durable, memory.multi_host) == (False, False, False)
    assert (sqlite.shared, sqlite.durable, sqlite.multi_host) == (True, True, False)
    assert (redis.shared, redis.durable, redis.multi_host) == (True, True, True)
    assert redis.extra == "redis"
    assert sqlite.local_path is not None
    assert sqlite.local_path("sqlite:////tmp/jobs.db") == Path("/tmp/jobs.db")
    assert memory.local_path is None
    assert redis.local_path is None
    assert set(BACKENDS) == {"memory", "sqlite", "redis"}


@pytest.mark.parametrize("url", ["nope://x", "memory", 42, ""])
def test_an_unknown_or_malformed_url_is_a_config_error_naming_the_backend(url: object) -> None:
    with pytest.raises(ConfigError) as info:
        backend_for(url)
    assert info.value.field == "backend"


def test_open_queue_opens_through_the_registry(tmp_path: Path) -> None:
    assert isinstance(open_queue("memory://", name="a"), JobQueue)
    queue = open_queue(f"sqlite:///{tmp_path / 'jobs.db'}", name="b")
    assert isinstance(queue, SQLiteQueue)
    queue.close()
