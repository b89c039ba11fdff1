"""The conformance suite's fixtures: every test here runs once per backend variant.

``queue`` is the queue under test, named ``"conf"``; ``queue_factory(name, codec=None)``
builds more queues of the same variant on the same store (a fresh one to import into,
say), with the variant's codec unless one is given. All of them read the test's ``clock``
(a FakeClock), so tests move time instead of sleeping.

A variant is a backend with or without a codec, on one handle or two:

* **codec**: the store is written with a non-default frame codec, :data:`VARIANT_CODEC`
  (msgpack, zstd even for small values, every frame signed), so the whole protocol is run
  through the serializer chain a deployment may configure, not only through the default
  JSON frames (and, on memory, through the copy a codec makes at enqueue and completion).
* **2handles**: the queue under test is :class:`~tests.conformance._handles.TwoHandles`,
  two objects on one store (SQLite: two ``SQLiteQueue`` on one file; Redis: two
  ``RedisQueue`` on one prefix, each with its own connection pool) whose calls alternate,
  so state one object keeps for itself cannot make a test pass. Memory has no second
  handle: a ``JobQueue`` *is* its store (another object is another, empty queue), so it
  has no 2handles variant; processes sharing a store are tested in
  ``test_shared_store.py``, on the durable backends.

Tiers (the fast suite must stay quick): every backend on its own, memory with a codec,
and the combined "codec + 2handles" variant of each shared store run by default; the
other halves of the cross product ("codec" alone, "2handles" alone) are ``slow``. A test
whose time is real time (heartbeats) runs its extra variants only in the slow tier:
see :func:`variants`.

To add a backend, add one store fixture (``open(name, codec, second)`` -> a new handle)
and its :class:`Variant` entries; nothing else. A backend needing a server adds
``pytest.mark.redis``-like marks and calls ``tests.helpers.skip_or_fail`` in its fixture
when the server does not answer. Only the chosen variant's fixture is built
(``request.getfixturevalue``).
"""

from __future__ import annotations

import contextlib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import pytest
from tests.conformance._handles import TwoHandles
from tests.helpers import import_or_skip, redis_available, skip_or_fail

from typedq.backends.base import Queue
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.job import Job, level_index
from typedq.serializers import get_serializer
from typedq.serializers.base import FrameCodec

#: The codec of the "codec" variants: another serializer than the default, compression
#: tried on every value (``min_size=0``), and every frame signed with the job id.
VARIANT_CODEC = get_serializer(
    "msgpack+zstd", min_size=0, pickle_key=b"conformance-signing-key-32-bytes", sign_all=True
)


class QueueFactory(Protocol):
    """Builds a queue of the variant under test by name (with the variant's codec unless
    ``codec`` is given); every queue is closed at teardown."""

    def __call__(self, name: str, *, codec: FrameCodec | None = None) -> Queue: ...


#: ``open(name, codec, second)``: one more handle on the test's store. ``second`` asks
#: for a handle sharing nothing in this process with the first (Redis: its own pool).
OpenHandle = Callable[[str, "FrameCodec | None", bool], Queue]


def _closing(made: list[Queue]) -> None:
    for q in made:
        q.close()


@pytest.fixture
def memory_store(clock: FakeClock) -> Iterator[OpenHandle]:
    """In-memory queues: ``JobQueue(name, clock=clock, codec=codec)``; no second handle."""
    made: list[Queue] = []

    def open_handle(name: str, codec: FrameCodec | None, second: bool) -> Queue:
        assert not second, "a memory queue has no second handle"
        made.append(JobQueue(name, clock=clock, codec=codec))
        return made[-1]

    yield open_handle
    _closing(made)


@pytest.fixture
def sqlite_store(clock: FakeClock, tmp_path: Path) -> Iterator[OpenHandle]:
    """SQLite queues, every name in one file (as a deployment shares one)."""
    made: list[Queue] = []
    path = tmp_path / "conformance.db"

    def open_handle(name: str, codec: FrameCodec | None, second: bool) -> Queue:
        made.append(SQLiteQueue(path, name=name, clock=clock, codec=codec))
        return made[-1]

    yield open_handle
    _closing(made)


@pytest.fixture
def redis_store(clock: FakeClock) -> Iterator[OpenHandle]:
    """Redis queues on 127.0.0.1:6379 under a prefix of their own; only the prefix's keys
    are deleted at teardown. A second handle gets a pool of its own: its URL differs in
    ``max_connections`` (the pool key), not in the server or the prefix."""
    if not redis_available():
        skip_or_fail("no Redis server answers on 127.0.0.1:6379")
    from typedq.backends.redis import RedisQueue

    prefix = f"typedq-test-{uuid.uuid4().hex[:12]}"
    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    made: list[Queue] = []

    def open_handle(name: str, codec: FrameCodec | None, second: bool) -> Queue:
        made.append(
            RedisQueue(url + ("&max_connections=1000" if second else ""), name=name, clock=clock, codec=codec)
        )
        return made[-1]

    yield open_handle
    _closing(made)
    delete_redis_prefix(prefix)


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A private 3-node Redis Cluster for the session (of each xdist worker), started on
    first use (see ``tests/redis_cluster.py``); skipped without redis-server/redis-cli."""
    import_or_skip("redis")
    from tests.redis_cluster import RedisCluster3

    cluster = RedisCluster3(tmp_path_factory.mktemp("redis-cluster")).start()
    yield cluster
    cluster.close()


@pytest.fixture
def redis_cluster_store(clock: FakeClock, redis_cluster: Any) -> Iterator[OpenHandle]:
    """Redis queues on a private 3-node Cluster (``redis+cluster://``) under a prefix of
    their own (one slot: every key shares the hash tag ``{prefix}``); a second handle
    gets a client of its own (its URL differs in ``max_connections``)."""
    from typedq.backends.redis import RedisQueue

    prefix = f"typedq-test-{uuid.uuid4().hex[:12]}"
    url = redis_cluster.url(prefix)
    made: list[Queue] = []

    def open_handle(name: str, codec: FrameCodec | None, second: bool) -> Queue:
        made.append(
            RedisQueue(url + ("&max_connections=1000" if second else ""), name=name, clock=clock, codec=codec)
        )
        return made[-1]

    yield open_handle
    _closing(made)
    redis_cluster.delete_prefix(prefix)


def claim_levels(queue: Queue, claims: int, *, batch: int = 100) -> Counter[int]:
    """Claim ``claims`` jobs in batches of ``batch``: how many came from each priority
    level, by level index (0 CRITICAL ... 4 BATCH)."""
    got: Counter[int] = Counter()
    while claims > 0:
        taken = queue.claim_many("w", lease_s=60.0, limit=min(batch, claims))
        assert taken, "the backlog ran dry"
        got.update(level_index(c.job.priority) for c in taken)
        claims -= len(taken)
    return got


@contextlib.contextmanager
def redis_test_url() -> Iterator[str]:
    """The test server's URL under a key prefix of the caller's own, whose keys are
    deleted on exit; skips (fails with ``TYPEDQ_REQUIRE_SERVICES=1``) when no server
    answers."""
    if not redis_available():
        skip_or_fail("no Redis server answers on 127.0.0.1:6379")
    prefix = f"typedq-test-{uuid.uuid4().hex[:12]}"
    try:
        yield f"redis://127.0.0.1:6379/0?prefix={prefix}"
    finally:
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


@dataclass(frozen=True)
class Variant:
    """One way of running the suite: a store, with or without the variant codec, with one
    handle or two; ``fast`` variants run in the default tier, the others are ``slow``."""

    store: str
    codec: bool = False
    two_handles: bool = False
    fast: bool = True
    marks: tuple[pytest.MarkDecorator, ...] = ()

    @property
    def id(self) -> str:
        return "-".join(
            [self.store.removesuffix("_store")] + ["codec"] * self.codec + ["2handles"] * self.two_handles
        )

    @property
    def base(self) -> bool:
        """The backend as it is: no codec, one handle."""
        return not self.codec and not self.two_handles


_REDIS = (pytest.mark.redis,)
_CLUSTER = (pytest.mark.redis_server_bin,)

#: Every variant, in the order the ids are listed.
VARIANTS = [
    Variant("memory_store"),
    Variant("memory_store", codec=True),
    Variant("sqlite_store"),
    Variant("sqlite_store", codec=True, two_handles=True),
    Variant("sqlite_store", codec=True, fast=False),
    Variant("sqlite_store", two_handles=True, fast=False),
    Variant("redis_store", marks=_REDIS),
    Variant("redis_store", codec=True, two_handles=True, marks=_REDIS),
    Variant("redis_store", codec=True, fast=False, marks=_REDIS),
    Variant("redis_store", two_handles=True, fast=False, marks=_REDIS),
    # A private 3-node Redis Cluster: the whole suite in the slow tier (a fast smoke of
    # the Cluster is tests/backends/test_redis_cluster.py).
    Variant("redis_cluster_store", codec=True, two_handles=True, fast=False, marks=_CLUSTER),
]


def variants(*, real_time: bool = False) -> list[Any]:
    """The ``queue_factory`` params: every variant, the slow ones marked ``slow``.

    With ``real_time`` (a module whose tests wait on the wall clock, seconds each), only
    the base variants stay in the fast tier. A module overrides the fixture with
    ``queue_factory = make_queue_factory_fixture(real_time=True)``.
    """
    params = []
    for v in VARIANTS:
        fast = v.base if real_time else v.fast
        marks = v.marks if fast else (*v.marks, pytest.mark.slow)
        params.append(pytest.param(v, id=v.id, marks=marks))
    return params


def make_queue_factory_fixture(*, real_time: bool = False) -> Any:
    """The ``queue_factory`` fixture over :func:`variants` (``real_time`` as there)."""

    @pytest.fixture(params=variants(real_time=real_time))
    def queue_factory(request: pytest.FixtureRequest) -> QueueFactory:
        """The variant under test, as a factory of queues on one store."""
        variant: Variant = request.param
        open_handle: OpenHandle = request.getfixturevalue(variant.store)

        def make(name: str, *, codec: FrameCodec | None = None) -> Queue:
            chosen = codec if codec is not None else (VARIANT_CODEC if variant.codec else None)
            first = open_handle(name, chosen, False)
            if not variant.two_handles:
                return first
            return cast(Queue, TwoHandles(first, open_handle(name, chosen, True)))

        return make

    return queue_factory


queue_factory = make_queue_factory_fixture()


#: The stores other objects, processes and hosts share, by URL (memory is not one: every
#: ``memory://`` queue is its own store).
SHARED_STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
]


@pytest.fixture(params=SHARED_STORES)
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty shared store (a file in ``tmp_path``; a Redis prefix of the
    test's own, whose keys are deleted at teardown), for ``open_queue`` here and in
    other processes."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'shared.db'}"
        return
    with redis_test_url() as url:
        yield url


@pytest.fixture
def queue(queue_factory: QueueFactory) -> Queue:
    """The queue under test: ``"conf"`` on the variant under test."""
    return queue_factory("conf")


@pytest.fixture
def store_factory(
    queue: Queue, queue_factory: QueueFactory, clock: FakeClock, request: pytest.FixtureRequest
) -> Iterator[QueueFactory]:
    """Builds more queues in the store of ``queue``, by name, with the variant's codec:
    for SQLite, queues of its file (``queue_factory`` gives each queue a file of its
    own); for memory and Redis, ``queue_factory``'s queues already share the store (the
    process; the key prefix)."""
    if not isinstance(queue, SQLiteQueue):
        yield queue_factory
        return
    variant: Variant = request.node.callspec.params["queue_factory"]
    codec = VARIANT_CODEC if variant.codec else None
    made: list[Queue] = []

    def make(name: str) -> Queue:
        made.append(SQLiteQueue(queue.path, name=name, clock=clock, codec=codec))
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
    store = queue._handles[0] if isinstance(queue, TwoHandles) else queue
    if isinstance(store, JobQueue | SQLiteQueue):
        # Memory: a SQLite file; SQLite: another file than the one every queue of the test shares.
        other: Queue = SQLiteQueue(tmp_path / "foreign.db", name="foreign", clock=clock)
    else:
        from typedq.backends.redis import RedisQueue

        prefix = f"typedq-test-{uuid.uuid4().hex[:12]}"
        other = RedisQueue(f"redis://127.0.0.1:6379/0?prefix={prefix}", name="foreign", clock=clock)
    yield other
    other.close()
    if not isinstance(store, JobQueue | SQLiteQueue):
        delete_redis_prefix(prefix)


@pytest.fixture
def make_job(clock: FakeClock) -> Callable[..., Job]:
    """``make_job(**overrides)``: a valid Job of type ``"task"`` created at ``clock.now()``."""

    def make(**overrides: Any) -> Job:
        fields: dict[str, Any] = {"job_type": "task", "created_at": clock.now()}
        fields.update(overrides)
        return Job(**fields)

    return make

