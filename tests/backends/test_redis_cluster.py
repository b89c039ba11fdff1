"""The Redis backend on a Redis Cluster: ``redis+cluster://`` URLs and a private 3-node
Cluster (``tests/redis_cluster.py``).

URL parsing needs no server. The smoke tests here share one Cluster for the module
(about a second to start) and skip with a reason without ``redis-server`` or
``redis-cli`` (a failure under ``TYPEDQ_REQUIRE_SERVICES=1``). The whole conformance
suite runs on a Cluster in the slow tier (variant ``redis_cluster-codec-2handles``).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.helpers import import_or_skip, wait_until

from typedq import JobQueueManager
from typedq.backends import backend_for, open_queue
from typedq.backends._redis_keys import parse_redis_url
from typedq.errors import BackendUnavailableError, ConfigError, StaleLeaseError
from typedq.job import Job, JobStatus

# -- URLs -------------------------------------------------------------------------------------


def test_cluster_urls_are_parsed_with_their_options() -> None:
    s = parse_redis_url("redis+cluster://bob:s3cr%40t@n1.example,n2.example:7001,[::1]:7002?prefix=app&socket_timeout=2")
    assert s.cluster
    assert s.nodes == (("n1.example", 6379), ("n2.example", 7001), ("::1", 7002))
    assert (s.host, s.port, s.db, s.username, s.password) == ("n1.example", 6379, 0, "bob", "s3cr@t")
    assert (s.prefix, s.socket_timeout, s.tls) == ("app", 2.0, False)
    assert "s3cr" not in s.masked_url
    assert "s3cr" not in repr(s)
    tls = parse_redis_url("rediss+cluster://h:7000/0")
    assert (tls.cluster, tls.tls, tls.nodes, tls.db) == (True, True, (("h", 7000),), 0)
    assert backend_for("redis+cluster://h:7000").name == "redis"
    assert backend_for("rediss+cluster://h:7000").name == "redis"
    # A Cluster and a single server at the same address never share a pool.
    assert parse_redis_url("redis+cluster://h:7000").pool_key() != parse_redis_url("redis://h:7000").pool_key()


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("redis+cluster://h:7000/1", "backend.db"),
        ("redis+cluster://h:7000/x", "backend.db"),
        ("redis+cluster://h:99999", "backend"),
        ("redis+cluster://h1,,h2", "backend"),
        ("redis+cluster://h?nope=1", "backend.nope"),
        ("redis+cluster://h?prefix=a{b}", "backend.prefix"),
    ],
)
def test_bad_cluster_urls_name_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_redis_url(url)
    assert info.value.field == field


def test_a_cluster_no_node_of_which_answers_is_unavailable_naming_the_url() -> None:
    import_or_skip("redis")
    from tests.reliability.redis_server import free_port

    url = f"redis+cluster://bob:hunter2@127.0.0.1:{free_port()}?prefix=x"
    with pytest.raises(BackendUnavailableError) as info:
        open_queue(url, name="q")
    assert "redis+cluster://bob:***@127.0.0.1:" in str(info.value)
    assert "hunter2" not in str(info.value)


# -- on a private Cluster ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import_or_skip("redis")
    from tests.redis_cluster import RedisCluster3

    made = RedisCluster3(Path(tmp_path_factory.mktemp("cluster"))).start()
    yield made
    made.close()


def _slot_owner(cluster: Any, prefix: str) -> int:
    """The port of the node that owns the slot of ``prefix``'s hash tag."""
    client = cluster.nodes[0].client()
    try:
        slot = int(client.execute_command("CLUSTER", "KEYSLOT", f"{{{prefix}}}"))
        for lo, hi, primary, *_ in client.execute_command("CLUSTER", "SLOTS"):
            if lo <= slot <= hi:
                return int(primary[1])
    finally:
        client.close()
    raise AssertionError(f"no node owns slot {slot}")


def _keys_by_node(cluster: Any, prefix: str) -> dict[int, int]:
    found: dict[int, int] = {}
    for node in cluster.nodes:
        client = node.client()
        try:
            n = len(list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000)))
        finally:
            client.close()
        if n:
            found[node.port] = n
    return found


def _prefixes_on_two_nodes(cluster: Any) -> tuple[str, str]:
    first = f"typedq-test-{uuid.uuid4().hex[:12]}"
    while True:
        second = f"typedq-test-{uuid.uuid4().hex[:12]}"
        if _slot_owner(cluster, second) != _slot_owner(cluster, first):
            return first, second


@pytest.mark.redis_server_bin
@pytest.mark.timeout(60)
def test_queues_of_two_prefixes_are_served_by_two_nodes_each_in_one_slot(cluster: Any) -> None:
    prefixes = _prefixes_on_two_nodes(cluster)
    queues = [open_queue(cluster.url(p), name=name) for p in prefixes for name in ("a", "b")]
    try:
        for q in queues:
            q.enqueue_many([Job(job_type="t", job_id=f"{q.name}-{i}", payload={"i": i}) for i in range(5)])
            claims = q.claim_many("w", lease_s=30, limit=3)
            assert [c.job.payload["i"] for c in claims] == [0, 1, 2]
            q.complete(claims[0].job.job_id, token=claims[0].token, result="ok")
            q.fail(claims[1].job.job_id, token=claims[1].token, error="boom", retry_at=0.0)
            with pytest.raises(StaleLeaseError):
                q.complete(claims[1].job.job_id, token=claims[1].token)
            assert q.count_by_status()[JobStatus.RUNNING] == 1
            assert q.size == 5
        for prefix in prefixes:
            # Every key of a prefix (both queues) sits on the one node owning its slot.
            assert list(_keys_by_node(cluster, prefix)) == [_slot_owner(cluster, prefix)]
        assert queues[0].queue_names() == ["a", "b"]  # type: ignore[attr-defined]  # RedisQueue's
    finally:
        for q in queues:
            q.close()
        for prefix in prefixes:
            cluster.delete_prefix(prefix)


@pytest.mark.redis_server_bin
@pytest.mark.timeout(60)
def test_a_locked_leader_and_a_wakeup_on_a_cluster(cluster: Any) -> None:
    prefix = f"typedq-test-{uuid.uuid4().hex[:12]}"
    queue = open_queue(cluster.url(prefix), name="q")
    try:
        lock = queue.lock("leader", ttl_s=30)
        assert lock.acquire()
        assert not queue.lock("leader", ttl_s=30).acquire()
        lock.release()
        woke = threading.Event()

        def wait() -> None:
            if queue.wait_ready(10.0):
                woke.set()

        waiter = threading.Thread(target=wait)
        waiter.start()
        queue.enqueue(Job(job_type="t", job_id="j"))
        waiter.join(15)
        assert woke.is_set()
        # A wait for a delayed job's due time ends then, on the node of the queue's slot.
        due = time.time() + 0.1
        queue.enqueue(Job(job_type="t", job_id="later", scheduled_at=due))
        assert queue.claim("w", lease_s=30) is not None  # "j"
        deadline = time.monotonic() + 10
        while not queue.wait_ready(5.0):  # the enqueue's wake token ends one wait early
            assert time.monotonic() < deadline
        assert 0 <= time.time() - due < 0.4
        claim = queue.claim("w", lease_s=30)
        assert claim is not None
        assert claim.job.job_id == "later"
    finally:
        queue.close()
        cluster.delete_prefix(prefix)


@pytest.mark.redis_server_bin
@pytest.mark.timeout(60)
def test_a_manager_runs_jobs_on_a_cluster_with_registered_workers(cluster: Any) -> None:
    prefix = f"typedq-test-{uuid.uuid4().hex[:12]}"
    manager = JobQueueManager({"backend": cluster.url(prefix), "heartbeat_s": 0.2})
    try:
        manager.register_handler("double", lambda p: p["n"] * 2)
        ids = [manager.submit("double", {"n": n}) for n in range(20)]
        manager.start_workers(count=2)
        wait_until(lambda: len(manager.registered_workers()) == 2, timeout=10, message="registered")
        assert manager.wait_for_completion(ids, timeout=20)
        assert sorted(manager.get_job(i).result for i in ids) == [2 * n for n in range(20)]
    finally:
        manager.close()
        cluster.delete_prefix(prefix)
