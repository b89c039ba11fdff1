"""The Redis backend through Sentinel: ``redis+sentinel://`` URLs and a master found by name.

URL parsing needs no server. The other tests start their own servers on free ports in
the test's tmp dir (a master, a ``redis-server --sentinel`` watching it, and for the
failover a replica) and stop them; they skip with a reason when ``redis-server`` is not
installed or cannot run as a sentinel (a failure under ``TYPEDQ_REQUIRE_SERVICES=1``).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.helpers import import_or_skip, redis_available, skip_or_fail, wait_until

from typedq.backends import backend_for, open_queue
from typedq.backends._redis_keys import parse_redis_url
from typedq.backends.base import Claim, Queue
from typedq.errors import BackendUnavailableError, ConfigError
from typedq.job import Job, JobStatus

SERVICE = "typedq-master"

# -- URLs -------------------------------------------------------------------------------------


def test_sentinel_urls_are_parsed_with_their_options() -> None:
    s = parse_redis_url(
        "redis+sentinel://bob:s3cr%40t@s1.example,s2.example:26380,[::1]:5000/mymaster/3"
        "?prefix=app&socket_timeout=2&sentinel_password=hunter2"
    )
    assert s.sentinels == (("s1.example", 26379), ("s2.example", 26380), ("::1", 5000))
    assert (s.service, s.db, s.username, s.password, s.sentinel_password) == (
        "mymaster", 3, "bob", "s3cr@t", "hunter2"
    )
    assert (s.prefix, s.socket_timeout, s.tls) == ("app", 2.0, False)
    assert (s.host, s.port) == ("s1.example", 26379)
    for secret in ("s3cr", "hunter2"):
        assert secret not in s.masked_url
        assert secret not in repr(s)
    bare = parse_redis_url("rediss+sentinel://h/svc")
    assert (bare.sentinels, bare.service, bare.db, bare.tls, bare.password) == (
        (("h", 26379),), "svc", 0, True, None
    )
    assert backend_for("redis+sentinel://h/svc").name == "redis"
    # Two URLs naming other sentinels or another service never share a pool.
    assert parse_redis_url("redis+sentinel://h/a").pool_key() != parse_redis_url("redis+sentinel://h/b").pool_key()


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("redis+sentinel://h1,h2", "backend.service"),
        ("redis+sentinel://h1:26379/", "backend.service"),
        ("redis+sentinel://h1/bad{name}", "backend.service"),
        ("redis+sentinel://h1/svc/x", "backend.db"),
        ("redis+sentinel://h1/svc/0/1", "backend.db"),
        ("redis+sentinel://h1:99999/svc", "backend"),
        ("redis+sentinel://h1,,h2/svc", "backend"),
        ("redis+sentinel://h1/svc?nope=1", "backend.nope"),
        ("redis://h?sentinel_password=x", "backend.sentinel_password"),
    ],
)
def test_bad_sentinel_urls_name_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_redis_url(url)
    assert info.value.field == field


def test_a_bad_option_never_shows_a_password() -> None:
    with pytest.raises(ConfigError) as info:
        parse_redis_url("redis://h?sentinel_password=hunter2")
    assert "hunter2" not in str(info.value)


# -- private servers ---------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Servers:
    """Private redis-server processes of one test, stopped (by their pids) at teardown."""

    def __init__(self, binary: str, folder: Path) -> None:
        self.binary = binary
        self.folder = folder
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, name: str, *args: str, config: str | None = None) -> int:
        """Start one server in its own directory; return its port once it answers PING."""
        port = _free_port()
        folder = self.folder / name
        folder.mkdir()
        command = [self.binary]
        if config is not None:  # a sentinel rewrites its config file: it lives in the folder
            (folder / "sentinel.conf").write_text(f"port {port}\nbind 127.0.0.1\ndir {folder}\n{config}")
            command += [str(folder / "sentinel.conf"), "--sentinel"]
        else:
            command += ["--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                        "--dir", str(folder), *args]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        try:
            wait_until(
                lambda: proc.poll() is not None or redis_available(port=port),
                timeout=10,
                message=f"the private {name} answers",
            )
        except AssertionError:
            skip_or_fail(f"redis-server did not start as {name}")
        if proc.poll() is not None:
            skip_or_fail(f"redis-server cannot run as {name} (exit code {proc.returncode})")
        return port

    def stop(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    import_or_skip("redis")
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
        return
    made = Servers(binary, tmp_path)
    yield made
    made.stop()


def _sentinel_config(master: int) -> str:
    return (
        f"sentinel monitor {SERVICE} 127.0.0.1 {master} 1\n"
        f"sentinel down-after-milliseconds {SERVICE} 5000\n"
        f"sentinel failover-timeout {SERVICE} 10000\n"
    )


def _master_of(sentinel: int) -> int | None:
    import redis

    client = redis.Redis(port=sentinel)
    try:
        found = client.sentinel_get_master_addr_by_name(SERVICE)
    finally:
        client.close()
    return int(found[1]) if isinstance(found, tuple | list) else None


@pytest.fixture
def opened() -> Iterator[Callable[[str], Queue]]:
    made: list[Queue] = []

    def make(url: str) -> Queue:
        made.append(open_queue(url, name="q"))
        return made[-1]

    yield make
    for q in made:
        q.close()


def _prefix() -> str:
    return f"typedq-test-{uuid.uuid4().hex[:12]}"


# -- through a sentinel ------------------------------------------------------------------------


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_jobs_go_through_the_master_the_sentinel_names(
    servers: Servers, opened: Callable[[str], Queue]
) -> None:
    import redis

    master = servers.start("master")
    sentinel = servers.start("sentinel", config=_sentinel_config(master))
    wait_until(lambda: _master_of(sentinel) == master, timeout=10, message="the sentinel knows the master")
    dead = _free_port()  # listed first and down: the next sentinel is asked
    prefix = _prefix()
    queue = opened(f"redis+sentinel://127.0.0.1:{dead},127.0.0.1:{sentinel}/{SERVICE}/0?prefix={prefix}")

    queue.enqueue(Job(job_type="t", job_id="j", payload={"n": 1}))
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    assert claim.job.payload == {"n": 1}
    queue.complete("j", token=claim.token, result="done")
    assert queue.get_job("j").status is JobStatus.COMPLETED
    direct = redis.Redis(port=master)
    try:
        assert direct.hget(f"{{{prefix}}}:{{q}}:j:j", "s") == b"COMPLETED"
    finally:
        direct.close()


@pytest.mark.redis
@pytest.mark.timeout(60)
def test_a_service_the_sentinels_do_not_know_is_unavailable_naming_it(servers: Servers) -> None:
    master = servers.start("master")
    sentinel = servers.start("sentinel", config=_sentinel_config(master))
    with pytest.raises(BackendUnavailableError) as info:
        open_queue(f"redis+sentinel://127.0.0.1:{sentinel}/no-such-master/0", name="q")
    assert "no-such-master" in str(info.value)
    assert f"127.0.0.1:{sentinel}" in str(info.value)


@pytest.mark.redis
@pytest.mark.slow
@pytest.mark.timeout(120)
def test_after_a_failover_the_queue_reaches_the_promoted_replica(
    servers: Servers, opened: Callable[[str], Queue]
) -> None:
    import redis

    from typedq.backends.redis import RedisQueue

    master = servers.start("master")
    replica = servers.start("replica", "--replicaof", "127.0.0.1", str(master))
    to_replica, to_master = redis.Redis(port=replica), redis.Redis(port=master)
    to_sentinel: redis.Redis | None = None
    try:
        wait_until(
            lambda: to_replica.info("replication").get("master_link_status") == "up",
            timeout=20,
            message="the replica is in sync",
        )
        sentinel = servers.start("sentinel", config=_sentinel_config(master))
        to_sentinel = redis.Redis(port=sentinel)
        watcher = to_sentinel

        def promotable() -> bool:  # what the sentinel checks before it picks a replica
            for seen in watcher.sentinel_slaves(SERVICE):
                if int(seen["port"]) == replica:
                    return bool(seen.get("master-link-status") == "ok" and int(seen["info-refresh"]) < 5000)
            return False

        wait_until(promotable, timeout=20, interval=0.1, message="the sentinel may promote the replica")
        queue = opened(f"redis+sentinel://127.0.0.1:{sentinel}/{SERVICE}/0?prefix={_prefix()}")
        assert isinstance(queue, RedisQueue)
        base = queue.key_prefix
        queue.enqueue_many([Job(job_type="t", job_id=f"j{i}") for i in range(3)])
        wait_until(lambda: to_replica.exists(f"{base}:j:j2"), timeout=10, message="the replica has the jobs")

        to_sentinel.sentinel_failover(SERVICE)
        wait_until(lambda: _master_of(sentinel) == replica, timeout=30, message="the replica is promoted")
        wait_until(
            lambda: to_replica.info("replication").get("role") == "master",
            timeout=30,
            message="the promoted replica accepts writes",
        )
        # Until the sentinel turns the old master into a replica, it still takes writes
        # from clients connected to it (Sentinel's own window, see the README); then a
        # connection to it is refused once (READONLY) as a BackendUnavailableError, and
        # the next call asks the sentinel and reaches the new master.
        wait_until(
            lambda: to_master.info("replication").get("role") == "slave",
            timeout=30,
            message="the old master is demoted",
        )
        refused: list[BackendUnavailableError] = []
        claims: list[Claim | None] = []

        def claimed() -> bool:
            try:
                claims.append(queue.claim("w", lease_s=30))
            except BackendUnavailableError as exc:
                refused.append(exc)
                return False
            return True

        wait_until(claimed, timeout=20, interval=0.1, message="a claim reaches the new master")
        assert len(refused) <= 1, refused
        claim = claims[0]
        assert claim is not None
        assert claim.job.job_id == "j0"
        queue.complete("j0", token=claim.token)
        queue.enqueue(Job(job_type="t", job_id="after"))
        assert to_replica.hget(f"{base}:j:j0", "s") == b"COMPLETED"
        assert to_replica.exists(f"{base}:j:after")
    finally:
        to_replica.close()
        to_master.close()
        if to_sentinel is not None:
            to_sentinel.close()
