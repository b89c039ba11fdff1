"""The conformance suite's fixtures: every test here runs once per backend.

``queue`` is the backend under test, named ``"conf"``; ``queue_factory(name)`` builds
more queues of the same backend (a fresh one to import into, say). All of them read the
test's ``clock`` (a FakeClock), so tests move time instead of sleeping.

To add a backend, add one factory fixture and one entry to ``BACKENDS``; nothing else::

    @pytest.fixture
    def sqlite_queue(clock: FakeClock, tmp_path: Path) -> Iterator[QueueFactory]:
        made: list[Queue] = []

        def make(name: str) -> Queue:
            made.append(SQLiteQueue(tmp_path / f"{name}.db", name=name, clock=clock))
            return made[-1]

        yield make
        for q in made:
            q.close()

    BACKENDS = [..., pytest.param("sqlite_queue", id="sqlite")]

A backend needing a server adds ``marks=pytest.mark.redis`` to its param and calls
``tests.helpers.skip_or_fail`` in its fixture when the server does not answer. Only the
chosen backend's fixture is built (``request.getfixturevalue``).
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import redis_available, skip_or_fail

from typedq.backends.base import Queue
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.job import Job

#: Builds a queue of the backend under test, by name; closed at teardown.
QueueFactory = Callable[[str], Queue]


@pytest.fixture
def memory_queue(clock: FakeClock) -> Iterator[QueueFactory]:
    """Factory of in-memory queues: ``JobQueue(name, clock=clock)``."""
    made: list[Queue] = []

    def make(name: str) -> Queue:
        made.append(JobQueue(name, clock=clock))
        return made[-1]

    yield make
    for q in made:
        q.close()


@pytest.fixture
def sqlite_queue(clock: FakeClock, tmp_path: Path) -> Iterator[QueueFactory]:
    """Factory of SQLite queues: ``SQLiteQueue(tmp_path / f"{name}.db", name=name)``."""
    made: list[Queue] = []

    def make(name: str) -> Queue:
        made.append(SQLiteQueue(tmp_path / f"{name}.db", name=name, clock=clock))
        return made[-1]

    yield make
    for q in made:
        q.close()


@pytest.fixture
def redis_queue(clock: FakeClock) -> Iterator[QueueFactory]:
    """Factory of Redis queues on 127.0.0.1:6379 under a prefix of their own; only the
    prefix's keys are deleted at teardown."""
    if not redis_available():
        skip_or_fail("no Redis server answers on 127.0.0.1:6379")
    from typedq.backends.redis import RedisQueue

    prefix = f"typedq-test-{uuid.uuid4().hex[:12]}"
    made: list[Queue] = []

    def make(name: str) -> Queue:
        made.append(RedisQueue(f"redis://127.0.0.1:6379/0?prefix={prefix}", name=name, clock=clock))
        return made[-1]

    yield make
    for q in made:
        q.close()
    delete_redis_prefix(prefix)


def delete_redis_prefix(prefix: str) -> None:
    """Delete every key under ``prefix`` (and no other) on the test server: the keys of
    key layout 2 (``{prefix}:...``) and of layout 1 (``{prefix:queue}:...``)."""
    import redis

    client = redis.Redis(host="127.0.0.1", port=6379, db=0)
    try:
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
        keys += client.scan_iter(match=f"{{{prefix}:*", count=1000)
        for start in range(0, len(keys), 500):
            client.unlink(*keys[start : start + 500])
    finally:
        client.close()


#: One param per backend: the name of its factory fixture.
BACKENDS = [
    pytest.param("memory_queue", id="memory"),
    pytest.param("sqlite_queue", id="sqlite"),
    pytest.param("redis_queue", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=BACKENDS)
def queue_factory(request: pytest.FixtureRequest) -> QueueFactory:
    """The backend under test, as a factory of queues."""
    factory: QueueFactory = request.getfixturevalue(request.param)
    return factory


@pytest.fixture
def queue(queue_factory: QueueFactory) -> Queue:
    """The queue under test: ``"conf"`` on the backend under test."""
    return queue_factory("conf")


@pytest.fixture
def store_factory(queue: Queue, queue_factory: QueueFactory, clock: FakeClock) -> Iterator[QueueFactory]:
    """Builds more queues in the store of ``queue``, by name: for SQLite, queues of its
    file (``queue_factory`` gives each queue a file of its own); for memory and Redis,
    ``queue_factory``'s queues already share the store (the process; the key prefix)."""
    if not isinstance(queue, SQLiteQueue):
        yield queue_factory
        return
    made: list[Queue] = []

    def make(name: str) -> Queue:
        made.append(SQLiteQueue(queue.path, name=name, clock=clock))
        return made[-1]

    yield make
    for q in made:
        q.close()


@pytest.fixture
def foreign_queue(
    queue: Queue, queue_factory: QueueFactory, clock: FakeClock, tmp_path: Path
) -> Iterator[Queue]:
    """A queue of another store than ``queue``'s: a SQLite file for memory, another file
    for SQLite, another key prefix for Redis."""
    if isinstance(queue, JobQueue):
        other: Queue = SQLiteQueue(tmp_path / "foreign.db", name="foreign", clock=clock)
    elif isinstance(queue, SQLiteQueue):
        other = queue_factory("foreign")
    else:
        from typedq.backends.redis import RedisQueue

        prefix = f"typedq-test-{uuid.uuid4().hex[:12]}"
        other = RedisQueue(f"redis://127.0.0.1:6379/0?prefix={prefix}", name="foreign", clock=clock)
    yield other
    other.close()
    if not isinstance(queue, JobQueue | SQLiteQueue):
        delete_redis_prefix(prefix)


@pytest.fixture
def make_job(clock: FakeClock) -> Callable[..., Job]:
    """``make_job(**overrides)``: a valid Job of type ``"task"`` created at ``clock.now()``."""

    def make(**overrides: Any) -> Job:
        fields: dict[str, Any] = {"job_type": "task", "created_at": clock.now()}
        fields.update(overrides)
        return Job(**fields)

    return make


@pytest.fixture
def switch_threads_often() -> Iterator[None]:
    """Make the interpreter switch threads far more often, so races get their chance."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)
