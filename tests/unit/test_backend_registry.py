"""The backend registry: one place maps a URL scheme to its backend and what it is."""

from __future__ import annotations

from pathlib import Path

import pytest

from typedq.backends import BACKENDS, SCHEMES, backend_for, open_queue
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.errors import ConfigError
from typedq.job import Job


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


def test_a_shared_store_lists_its_queues_through_the_registry(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    lister = backend_for(url).list_queues
    assert lister is not None
    first, second = open_queue(url, name="emails"), open_queue(url, name="reports")
    try:
        assert lister(first) == []
        first.enqueue(Job(job_type="t"))
        second.enqueue(Job(job_type="t"))
        assert lister(first) == lister(second) == ["emails", "reports"]
        with pytest.raises(TypeError, match="SQLite"):
            lister(JobQueue("x"))
    finally:
        first.close()
        second.close()
    # A memory store is its process's own: the manager knows its queues.
    assert backend_for("memory://").list_queues is None
    assert backend_for("redis://h").list_queues is not None
