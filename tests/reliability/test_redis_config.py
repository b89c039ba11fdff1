"""A Redis server set up in a way a job queue must not ignore (RELIABILITY.md §4b: E6).

Each test owns a private ``redis-server`` (``redis_servers``) and changes its settings:

* ``maxmemory-policy allkeys-lru``: one WARNING naming ``noeviction`` by default, a
  ``BackendConfigError`` at open with ``?eviction=refuse`` in the URL, nothing written;
* ``maxmemory`` reached under ``noeviction`` (the server answers ``OOM`` to a script's
  first write when it would add memory): an enqueue is a ``BackendWriteError`` naming
  the server, nothing of it stored; reads still answer, and claims and completions still
  work (their scripts first remove, and a script is never stopped halfway), so workers
  drain a full server;
* a read-only replica (a second private server started with ``--replicaof``): writes are
  a ``BackendWriteError`` naming the replica, nothing stored.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from tests.helpers import wait_until
from tests.reliability.redis_server import RedisServer

from typedq.backends.redis import RedisQueue
from typedq.errors import BackendConfigError, BackendUnavailableError, BackendWriteError, ConfigError
from typedq.job import Job, JobStatus

pytestmark = pytest.mark.redis_server_bin

MakeServer = Callable[..., RedisServer]


def _keys(server: RedisServer) -> list[bytes]:
    client = server.client()
    try:
        return sorted(client.keys("*"))
    finally:
        client.close()


def _job(job_id: str) -> Job:
    return Job.create("t", {"n": 1}, job_id=job_id)


# -- eviction policy ---------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_e6_an_evicting_server_is_warned_about_by_default(
    redis_servers: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_servers({"maxmemory-policy": "allkeys-lru"})
    with caplog.at_level(logging.WARNING, logger="typedq.backends.redis"):
        RedisQueue(server.url(prefix="e6"), name="a").close()
        RedisQueue(server.url(prefix="e6", eviction="warn"), name="b").close()
    warnings = [r.getMessage() for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "allkeys-lru" in warnings[0]
    assert "noeviction" in warnings[0]
    assert f"127.0.0.1:{server.port}" in warnings[0]


@pytest.mark.timeout(20)
def test_e6_an_evicting_server_is_refused_with_eviction_refuse_and_nothing_is_written(
    redis_servers: MakeServer,
) -> None:
    server = redis_servers({"maxmemory-policy": "allkeys-lru"})
    for _ in range(2):  # refused at every open, not only the first of the process
        with pytest.raises(BackendConfigError) as info:
            RedisQueue(server.url(prefix="e6", eviction="refuse"), name="q")
        error = info.value
        assert (error.field, error.value) == ("maxmemory-policy", "allkeys-lru")
        assert "noeviction" in error.allowed
        assert f"127.0.0.1:{server.port}" in str(error)
        assert "eviction=refuse" in str(error)
    assert _keys(server) == []
    client = server.client()
    client.config_set("maxmemory-policy", "noeviction")
    client.close()
    RedisQueue(server.url(prefix="e6", eviction="refuse"), name="q").close()  # now it opens


def test_e6_a_bad_eviction_option_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        RedisQueue("redis://127.0.0.1:1/0?eviction=maybe", name="q")
    assert info.value.field == "backend.eviction"
    assert info.value.value == "maybe"
    assert "refuse" in info.value.allowed


# -- a full server ---------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_e6_a_full_server_refuses_writes_with_a_typed_error_and_stores_nothing(
    redis_servers: MakeServer,
) -> None:
    server = redis_servers({"maxmemory-policy": "noeviction"})
    queue = RedisQueue(server.url(prefix="e6"), name="q")
    queue.enqueue(_job("kept"))
    admin = server.client()
    admin.set("ballast", b"x" * 4_000_000)
    admin.config_set("maxmemory", int(admin.info("memory")["used_memory"]) - 200_000)
    before = {key: admin.dump(key) for key in admin.keys("{e6:q}*")}
    try:
        calls = {
            "enqueue": lambda: queue.enqueue(_job("new")),
            "enqueue_many": lambda: queue.enqueue_many([_job("m1"), _job("m2")]),
        }
        for name, call in calls.items():
            with pytest.raises(BackendWriteError) as info:
                call()
            assert isinstance(info.value, BackendUnavailableError), name  # a caller retries it
            assert f"127.0.0.1:{server.port}" in str(info.value), name
            assert "maxmemory" in str(info.value), name
        # Nothing of a refused transition was stored; reads still answer.
        assert {key: admin.dump(key) for key in admin.keys("{e6:q}*")} == before
        assert queue.get_job("kept").status is JobStatus.PENDING
        assert queue.count_by_status()[JobStatus.PENDING] == 1
        assert [j.job_id for j in queue.list_jobs()] == ["kept"]
        RedisQueue(server.url(prefix="e6"), name="q").close()  # opening (reads) still works
        # Workers still drain it: a claim and a completion free memory before they add.
        claim = queue.claim("w", lease_s=10)
        assert claim is not None
        assert queue.complete("kept", token=claim.token, result="r").status is JobStatus.COMPLETED
    finally:
        admin.delete("ballast")
        admin.config_set("maxmemory", 0)
        admin.close()
    queue.enqueue(_job("new"))
    assert queue.size == 2
    queue.close()


# -- a read-only replica -----------------------------------------------------------------------


@pytest.mark.timeout(30)
def test_e6_a_read_only_replica_refuses_writes_with_a_typed_error_naming_it(
    redis_servers: MakeServer,
) -> None:
    primary = redis_servers({"repl-diskless-sync-delay": "0"})
    queue = RedisQueue(primary.url(prefix="e6"), name="q")
    queue.enqueue(_job("kept"))
    replica = redis_servers({"replicaof": f"127.0.0.1 {primary.port}"}, name="replica")
    wait_until(lambda: len(_keys(replica)) == len(_keys(primary)), timeout=10, message="the replica synced")
    on_replica = RedisQueue(replica.url(prefix="e6"), name="q")  # reads only: it opens
    try:
        assert on_replica.get_job("kept").status is JobStatus.PENDING
        keys = _keys(replica)
        for call in (
            lambda: on_replica.enqueue(_job("new")),
            lambda: on_replica.claim("w", lease_s=10),
            lambda: on_replica.cancel("kept"),
        ):
            with pytest.raises(BackendWriteError) as info:
                call()
            assert isinstance(info.value, BackendUnavailableError)
            assert f"127.0.0.1:{replica.port}" in str(info.value)
            assert "read-only replica" in str(info.value)
        assert _keys(replica) == keys
        # A queue the replica holds nothing of cannot even be opened (it would write).
        with pytest.raises(BackendWriteError, match=str(replica.port)):
            RedisQueue(replica.url(prefix="other"), name="q")
    finally:
        on_replica.close()
        queue.close()
