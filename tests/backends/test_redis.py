"""What only the Redis backend has: Lua by SHA, NOSCRIPT, key types, URLs, errors, fork.

The shared server (127.0.0.1:6379) is used under a key prefix of each test's own; tests
that flush scripts, change settings or stop the server start a private ``redis-server``
on a free port. The protocol semantics at the end (claims by type, batch rescues, cursor
listings) belong in the conformance suite once every backend has them.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.conftest import delete_redis_prefix
from tests.helpers import SkewedClock, import_or_skip, redis_available, skip_or_fail, wait_until

from typedq.backends import backend_for, open_queue
from typedq.backends._redis_keys import parse_redis_url, ready_member, sort_hex
from typedq.backends._unique import UNIQUE_META
from typedq.backends.base import Completion
from typedq.clock import FakeClock, system_clock
from typedq.errors import (
    BackendDataError,
    BackendError,
    BackendUnavailableError,
    ConfigError,
    DuplicateJobError,
    JobNotFoundError,
)
from typedq.job import Job, JobStatus
from typedq.policy import ClaimPolicy, Limit

redis = import_or_skip("redis")

pytestmark = pytest.mark.redis

ROOT = Path(__file__).resolve().parents[2]
MakeQueue = Callable[..., Any]


def job(job_id: str, **fields: Any) -> Job:
    fields.setdefault("job_type", "t")
    fields.setdefault("created_at", 1000.0)
    return Job(job_id=job_id, **fields)


@pytest.fixture
def prefix() -> Iterator[str]:
    if not redis_available():
        skip_or_fail("no Redis server answers on 127.0.0.1:6379")
    name = f"typedq-test-{uuid.uuid4().hex[:12]}"
    yield name
    delete_redis_prefix(name)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1_000_000.0)


@pytest.fixture
def make_queue(prefix: str, clock: FakeClock) -> Iterator[MakeQueue]:
    from typedq.backends.redis import RedisQueue

    made: list[RedisQueue] = []

    def make(name: str = "q", url: str | None = None) -> RedisQueue:
        made.append(RedisQueue(url or f"redis://127.0.0.1:6379/0?prefix={prefix}", name=name, clock=clock))
        return made[-1]

    yield make
    for q in made:
        q.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_server(tmp_path: Path) -> Iterator[int]:
    """A redis-server of this test's own (scripts may be flushed, settings changed, the
    server stopped); its port."""
    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail("redis-server is not installed")
        return
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: redis_available(port=port), timeout=10, message="the private redis-server answers")
        yield port
    finally:
        proc.kill()
        proc.wait(10)


# -- scripts --------------------------------------------------------------------------------


def test_scripts_are_loaded_once_and_called_by_sha(private_server: int, clock: FakeClock) -> None:
    from typedq.backends.redis import _SCRIPTS, RedisQueue

    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0", name="q", clock=clock)
    admin = redis.Redis(port=private_server)
    try:
        for i in range(20):
            queue.enqueue(job(f"j{i}"))
        while claim := queue.claim("w", lease_s=30):
            queue.complete(claim.job.job_id, token=claim.token)
        stats = admin.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] >= 41
        assert "cmdstat_eval" not in stats  # never the source with every call
        loads = stats.get("cmdstat_script|load", {}).get("calls", 0)
        assert loads <= len(_SCRIPTS)  # the transitions' scripts and the locks'
        # The scripts the calls used are cached on the server under their SHA.
        shas = [s.sha for s in queue._link.scripts.values()]  # what the client calls
        assert admin.script_exists(*shas).count(True) >= 3
    finally:
        queue.close()
        admin.close()


def test_scripts_come_back_after_script_flush(private_server: int, clock: FakeClock) -> None:
    from typedq.backends.redis import RedisQueue

    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0", name="q", clock=clock)
    admin = redis.Redis(port=private_server)
    try:
        queue.enqueue(job("a"))
        admin.script_flush()
        queue.enqueue(job("b"))  # NOSCRIPT -> loaded again -> run once
        claims = queue.claim_many("w", lease_s=30, limit=10)
        assert [c.job.job_id for c in claims] == ["a", "b"]
        assert queue.size == 2
    finally:
        queue.close()
        admin.close()


# -- key types ------------------------------------------------------------------------------


def test_a_fixed_key_of_another_type_is_refused_and_left_alone(prefix: str, make_queue: MakeQueue) -> None:
    client = redis.Redis()
    client.set(f"{{{prefix}}}:{{q}}:ready", "not ours")
    with pytest.raises(BackendDataError, match=r"ready is a string"):
        make_queue("q")
    assert client.get(f"{{{prefix}}}:{{q}}:ready") == b"not ours"
    client.close()


def test_a_job_key_of_another_type_is_refused_and_nothing_is_written(
    prefix: str, make_queue: MakeQueue
) -> None:
    queue = make_queue("q")
    client = redis.Redis()
    client.set(f"{{{prefix}}}:{{q}}:j:taken", "someone else's")
    with pytest.raises(BackendDataError, match="j:taken is a string"):
        queue.enqueue_many([job("fine"), job("taken")])
    with pytest.raises(BackendDataError, match="j:taken is a string"):
        queue.enqueue(job("taken"))  # one job: its own script, the same refusal
    assert client.get(f"{{{prefix}}}:{{q}}:j:taken") == b"someone else's"
    assert queue.size == 0
    with pytest.raises(JobNotFoundError):
        queue.get_job("fine")
    client.close()


# -- URLs and errors ------------------------------------------------------------------------


def test_urls_are_parsed_with_their_options() -> None:
    s = parse_redis_url("rediss://bob:s3cr%40t@cache.example:6380/3?prefix=app.jobs&socket_timeout=2.5")
    assert (s.host, s.port, s.db, s.username, s.password, s.tls) == (
        "cache.example", 6380, 3, "bob", "s3cr@t", True
    )
    assert (s.prefix, s.socket_timeout) == ("app.jobs", 2.5)
    assert "s3cr" not in s.masked_url
    assert "s3cr" not in repr(s)
    plain = parse_redis_url("redis://localhost")
    assert (plain.port, plain.db, plain.prefix, plain.tls, plain.password) == (6379, 0, "typedq", False, None)
    assert backend_for("rediss://h").name == backend_for("redis://h").name == "redis"
    assert backend_for("redis://h").multi_host


@pytest.mark.parametrize(
    ("url", "field"),
    [
        ("redis://h/x", "backend.db"),
        ("redis://h?nope=1", "backend.nope"),
        ("redis://h?prefix=a{b}", "backend.prefix"),
        ("redis://h?socket_timeout=-1", "backend.socket_timeout"),
        ("redis://h:99999", "backend"),
    ],
)
def test_bad_urls_name_the_field(url: str, field: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_redis_url(url)
    assert info.value.field == field


def test_a_queue_name_with_a_brace_is_refused(make_queue: MakeQueue) -> None:
    with pytest.raises(ConfigError, match="name"):
        make_queue("a{b}")


def test_an_unavailable_server_is_a_typed_error_naming_the_url_without_password() -> None:
    port = _free_port()  # nothing listens there
    with pytest.raises(BackendUnavailableError) as info:
        open_queue(f"redis://u:hunter2@127.0.0.1:{port}/0?socket_connect_timeout=1", name="q")
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "hunter2" not in str(info.value)
    assert "***" in str(info.value)


def test_a_server_that_goes_away_gives_a_typed_error(private_server: int, clock: FakeClock) -> None:
    from typedq.backends.redis import RedisQueue

    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0?socket_timeout=2", name="q", clock=clock)
    queue.enqueue(job("a"))
    admin = redis.Redis(port=private_server)
    with contextlib.suppress(redis.ConnectionError):
        admin.shutdown(nosave=True)
    wait_until(lambda: not redis_available(port=private_server), message="the server stopped")
    with pytest.raises(BackendUnavailableError, match=str(private_server)):
        queue.enqueue(job("b"))
    with pytest.raises(BackendUnavailableError):
        queue.claim("w", lease_s=10)
    queue.close()


def test_an_evicting_server_is_warned_about_once(
    private_server: int, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    from typedq.backends.redis import RedisQueue

    admin = redis.Redis(port=private_server)
    admin.config_set("maxmemory-policy", "allkeys-lru")
    admin.close()
    url = f"redis://127.0.0.1:{private_server}/0"
    with caplog.at_level(logging.WARNING, logger="typedq.backends.redis"):
        RedisQueue(url, name="a", clock=clock).close()
        RedisQueue(url, name="b", clock=clock).close()
    warnings = [r for r in caplog.records if "maxmemory-policy" in r.getMessage()]
    assert len(warnings) == 1
    assert "allkeys-lru" in warnings[0].getMessage()
    assert "noeviction" in warnings[0].getMessage()


def test_the_driver_missing_is_a_config_error_naming_the_extra(tmp_path: Path) -> None:
    blocker = tmp_path / "redis.py"
    blocker.write_text("raise ImportError('no redis here')\n")
    code = (
        "from typedq.backends import open_queue\n"
        "from typedq.errors import ConfigError\n"
        "try:\n    open_queue('redis://127.0.0.1:6379/0')\n"
        "except ConfigError as exc:\n    print('ConfigError', exc)\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT / "src")])}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60, check=False
    )
    assert "ConfigError" in done.stdout, done.stdout + done.stderr
    assert "typedq[redis]" in done.stdout


# -- processes ------------------------------------------------------------------------------


def test_a_forked_child_opens_its_own_connections(make_queue: MakeQueue) -> None:
    queue = make_queue("q")
    queue.enqueue(job("before"))
    parent_client = queue._r  # the client of this process
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: use the queue object it inherited
        code = 1
        try:
            child_client = queue._r
            queue.enqueue(job("from-child"))
            ok = child_client is not parent_client and queue.get_job("before").job_id == "before"
            code = 0 if ok else 3
        finally:
            os.write(write, bytes([code]))
            os._exit(code)
    os.close(write)
    # The parent keeps using its own connections meanwhile.
    for i in range(50):
        queue.enqueue(job(f"parent-{i}"))
    assert os.read(read, 1) == b"\x00"
    os.close(read)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert queue.get_job("from-child").job_id == "from-child"
    assert queue.size == 52


# -- connections ----------------------------------------------------------------------------


def _typedq_clients(port: int) -> int:
    admin = redis.Redis(port=port)
    try:
        return sum(1 for c in admin.client_list() if c.get("name") == "typedq")
    finally:
        admin.close()


def test_script_calls_keep_their_connections_between_calls(private_server: int, clock: FakeClock) -> None:
    import threading

    from typedq.backends.redis import RedisQueue

    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0", name="q", clock=clock)
    for i in range(20):
        queue.enqueue(job(f"a{i}"))
    held = queue._link._held
    assert held is not None
    assert len(held) == 1  # one thread: one connection, taken once and kept
    opened = _typedq_clients(private_server)
    for i in range(20):
        queue.enqueue(job(f"b{i}"))
    assert _typedq_clients(private_server) == opened  # no connection opened per call

    def add(t: int) -> None:
        for i in range(25):
            queue.enqueue(job(f"t{t}-{i}"))

    threads = [threading.Thread(target=add, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert queue.size == 240
    assert 1 <= len(held) <= 8  # at most one a thread that called at once
    queue.close()
    assert held == []
    wait_until(lambda: _typedq_clients(private_server) == 0, message="close() closed every connection")


def test_a_held_connection_the_server_closed_is_reconnected_before_use(
    private_server: int, clock: FakeClock
) -> None:
    from typedq.backends.redis import RedisQueue

    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0", name="q", clock=clock)
    admin = redis.Redis(port=private_server)

    def kill_held() -> None:
        held = queue._link._held
        assert held is not None
        assert len(held) == 1
        conn = held[0]
        conn.send_command("CLIENT", "ID")
        admin.client_kill_filter(_id=conn.read_response())

    queue.enqueue(job("a"))
    kill_held()
    queue.enqueue(job("b"))  # checked as the pool checks its own: reconnected, sent
    kill_held()
    assert queue.get_job("a").job_id == "a"  # a read through the pool
    queue.enqueue(job("c"))
    assert queue.size == 3
    admin.close()
    queue.close()


def test_a_bounded_pool_keeps_no_connection_out_of_it(private_server: int, clock: FakeClock) -> None:
    from typedq.backends.redis import RedisQueue

    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0?max_connections=2", name="q", clock=clock)
    assert queue._link._held is None
    for i in range(10):
        queue.enqueue(job(f"j{i}"))
        assert queue.get_job(f"j{i}").status is JobStatus.PENDING  # a pool command between calls
    assert queue.size == 10
    queue.close()


# -- stored bytes ---------------------------------------------------------------------------


def test_claims_bury_undecodable_jobs_and_reads_describe_them(prefix: str, make_queue: MakeQueue) -> None:
    queue = make_queue("q")
    queue.enqueue_many([job("bad", priority=9), job("ok"), job("child", depends_on=["bad"])])
    client = redis.Redis()
    client.hset(f"{{{prefix}}}:{{q}}:j:bad", "pl", b"\xc1\x09garbage")
    claims = queue.claim_many("w", lease_s=30, limit=5)
    assert [c.job.job_id for c in claims] == ["ok"]
    dead = queue.get_job("bad")
    assert dead.status is JobStatus.DEAD
    assert dead.error is not None
    assert "payload" in dead.error
    assert dead.payload == {}
    assert "payload" in dead.metadata["typedq.undecodable"]
    assert queue.get_job("child").status is JobStatus.FAILED
    exported = queue.export_jobs()
    assert {d["job_id"] for d in exported} == {"bad", "ok", "child"}
    client.close()


# -- the claim order's encoding -------------------------------------------------------------


def test_sort_hex_sorts_as_the_floats_sort() -> None:
    values = [float("-inf"), -1e300, -5.0, -1.5, -1e-300, -0.0, 0.0, 1e-300, 0.5, 1.0, 1.7e9, 1e300]
    values.append(float("inf"))
    hexes = [sort_hex(v) for v in values]
    assert hexes == sorted(hexes)
    assert sort_hex(-0.0) == sort_hex(0.0)
    assert all(h > "0" * 16 for h in hexes)  # a job without scheduled_at sorts first


# -- script calls ---------------------------------------------------------------------------


def test_complete_many_is_one_script_call(private_server: int, clock: FakeClock) -> None:
    from typedq.backends.redis import RedisQueue

    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0", name="q", clock=clock)
    admin = redis.Redis(port=private_server)
    try:
        queue.enqueue_many([job(f"j{i}") for i in range(50)])
        claims = queue.claim_many("w", lease_s=30, limit=50)
        admin.config_resetstat()
        done = queue.complete_many([Completion(c.job.job_id, c.token, i) for i, c in enumerate(claims)])
        assert all(isinstance(d, Job) and d.status is JobStatus.COMPLETED for d in done)
        assert admin.info("commandstats")["cmdstat_evalsha"]["calls"] == 1
    finally:
        queue.close()
        admin.close()


def test_a_batch_claim_and_complete_write_each_index_once(private_server: int, clock: FakeClock) -> None:
    from typedq.backends.redis import RedisQueue

    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0", name="q", clock=clock)
    admin = redis.Redis(port=private_server)
    try:
        queue.enqueue_many([job(f"j{i}") for i in range(100)])
        admin.config_resetstat()
        claims = queue.claim_many("w", lease_s=30, limit=100)
        queue.complete_many([Completion(c.job.job_id, c.token, None) for c in claims])
        stats = admin.info("commandstats")
        assert len(claims) == 100
        # one command per index and script, none per job: claim takes the jobs out of
        # the two ready sets and PENDING, complete out of the lease set and RUNNING
        assert stats["cmdstat_zrem"]["calls"] == 5
        # claim puts them in RUNNING and the lease set, complete in COMPLETED and its
        # finish-time index
        assert stats["cmdstat_zadd"]["calls"] == 4
        assert stats["cmdstat_sadd"]["calls"] == stats["cmdstat_srem"]["calls"] == 1  # the claim group
        assert stats["cmdstat_hincrby"]["calls"] == 2  # the type's RUNNING count, up and down
        assert queue.count_by_status()[JobStatus.COMPLETED] == 100
    finally:
        queue.close()
        admin.close()


def test_a_batch_enqueue_writes_each_index_once_and_reads_no_job_key_when_none_is_taken(
    private_server: int, clock: FakeClock
) -> None:
    from typedq.backends.redis import RedisQueue

    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0", name="q", clock=clock)
    admin = redis.Redis(port=private_server)
    try:
        admin.config_resetstat()
        queue.enqueue_many([job(f"j{i}") for i in range(100)])
        stats = admin.info("commandstats")
        assert stats["cmdstat_exists"]["calls"] == 1  # every job's key at once
        assert "cmdstat_type" not in stats
        assert stats["cmdstat_hset"]["calls"] == 100
        # the type index, PENDING, and the two ready sets
        assert stats["cmdstat_zadd"]["calls"] == 4
        admin.config_resetstat()
        with pytest.raises(DuplicateJobError, match="j7"):
            queue.enqueue_many([job("new"), job("j7"), job("j8")])
        stats = admin.info("commandstats")
        assert stats["cmdstat_type"]["calls"] == 2  # up to the first job whose key is taken
        assert "cmdstat_hset" not in stats
        assert queue.size == 100
    finally:
        queue.close()
        admin.close()


@pytest.mark.parametrize("many", [False, True], ids=["enqueue", "enqueue_many"])
def test_enqueued_ready_members_are_those_the_scripts_make_from_the_hash(
    make_queue: MakeQueue, prefix: str, clock: FakeClock, many: bool
) -> None:
    queue = make_queue("q")
    jobs = [
        job("low", priority=1),
        job("high", priority=10, created_at=999.5),
        job("due", priority=7, scheduled_at=clock.now() - 5),
        job("now", priority=4, scheduled_at=clock.now()),
        job("later", priority=4, scheduled_at=clock.now() + 5),
    ]
    if many:
        queue.enqueue_many(jobs)
    else:
        for one in jobs:
            queue.enqueue(one)
    client = redis.Redis()
    base = f"{{{prefix}}}:{{q}}"
    expected = []
    for one in jobs[:4]:
        p, sk, n = client.hmget(f"{base}:j:{one.job_id}", "p", "sk", "n")
        expected.append(ready_member(int(p), sk, int(n), one.job_id))
    assert sorted(client.zrange(f"{base}:ready", 0, -1)) == sorted(expected)
    assert sorted(client.zrange(f"{base}:rt:t", 0, -1)) == sorted(expected)
    assert client.zrange(f"{base}:delayed", 0, -1) == [b"later"]
    assert [queue.dequeue().job_id for _ in range(4)] == ["high", "due", "now", "low"]
    client.close()


def test_jobs_to_place_or_with_unique_keys_take_the_full_enqueue_script(
    make_queue: MakeQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    queue = make_queue("q")
    ran: list[str] = []
    run = queue._link.run
    monkeypatch.setattr(queue._link, "run", lambda script, *a: ran.append(script) or run(script, *a))
    queue.enqueue(job("plain"))
    queue.enqueue_many([job("p1"), job("p2", priority=9), job("done", status=JobStatus.COMPLETED)])
    queue.enqueue(job("child", depends_on=["plain"]))
    queue.enqueue(job("later", scheduled_at=clock.now() + 60))
    queue.enqueue(job("alone", run_alone=True))
    queue.enqueue(job("keyed", metadata={UNIQUE_META: {"key": "k"}}))
    queue.enqueue_many([job("b1"), job("b2", depends_on=["b1"])])
    assert ran == ["enqueue_one", "enqueue_direct"] + ["enqueue"] * 5
    assert queue.get_job("child").status is JobStatus.PENDING
    assert queue.count_by_status()[JobStatus.PENDING] == 9


def _stored(base: str) -> dict[str, Any]:
    """Every key under ``base`` (named without it), with its type and contents."""
    client = redis.Redis()
    out: dict[str, Any] = {}
    try:
        for key in client.scan_iter(match=f"{base}:*", count=1000):
            kind = client.type(key).decode()
            if kind == "hash":
                value: Any = client.hgetall(key)
            elif kind == "zset":
                value = client.zrange(key, 0, -1, withscores=True)
            elif kind == "list":
                value = client.lrange(key, 0, -1)
            elif kind == "set":
                value = sorted(client.smembers(key))
            else:
                value = client.get(key)
            out[key.decode()[len(base) :]] = (kind, value)
    finally:
        client.close()
    return out


def test_the_one_job_script_writes_what_the_batch_script_writes_for_the_job(
    make_queue: MakeQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``enqueue`` runs its own script (enqueue_one); ``enqueue_many`` of the same job the
    batch script: both leave the same keys, with the same contents, for every kind of job
    the one-job script takes."""
    now = clock.now()
    kinds = [
        job("ready", priority=7, metadata={"m": 1}, timeout_seconds=5.0),
        job("other-type", job_type="other", max_retries=9),
        job("due", scheduled_at=now - 10),
        job(
            "leased", status=JobStatus.RUNNING, lease_until=now + 30, started_at=now, worker_id="w", attempt=1
        ),
        job("unleased", status=JobStatus.RUNNING, job_type="other"),
        job("done", status=JobStatus.COMPLETED, finished_at=now, result={"ok": True}, attempt=1),
        job("failed", status=JobStatus.FAILED, finished_at=now, error="boom", retry_count=2, lost_count=1),
        job("dead", status=JobStatus.DEAD, finished_at=now, traceback="Traceback ..."),
        job("cancelled", status=JobStatus.CANCELLED, finished_at=now, cancel_requested=True),
    ]
    one, many = make_queue("one"), make_queue("many")
    ran: list[str] = []
    for queue in (one, many):
        run = queue._link.run
        monkeypatch.setattr(
            queue._link, "run", lambda script, *a, run=run: ran.append(script) or run(script, *a)
        )
    for each in kinds:
        one.enqueue(each)
        many.enqueue_many([each])
    assert ran == ["enqueue_one", "enqueue_direct"] * len(kinds)
    assert _stored(one.key_prefix) == _stored(many.key_prefix)
    assert one.count_by_status() == many.count_by_status()


def test_the_direct_enqueue_script_refuses_a_job_to_place_before_writing(
    make_queue: MakeQueue, clock: FakeClock
) -> None:
    from typedq.backends.redis import _num

    queue = make_queue("q")
    now = clock.now()
    args: list[Any] = [_num(now), "2"]
    queue._hashes.enqueue_args(job("fine"), now, args)
    assert queue._hashes.enqueue_args(job("later", scheduled_at=now + 60), now, args)
    with pytest.raises(BackendError, match="later is to be placed"):
        queue._run("enqueue_direct", args)
    one: list[Any] = [_num(now), "1"]
    queue._hashes.enqueue_args(job("later", scheduled_at=now + 60), now, one)
    with pytest.raises(BackendError, match="later is to be placed"):
        queue._run("enqueue_one", one)
    assert queue.size == 0


def _packed_workload(queue: Any, clock: FakeClock) -> None:
    """Every kind of call a packed script serves: one job and batches of every kind (to
    place, unique, with dependencies, ended, with counters at their largest), and
    completions with and without a result, wanted back or not."""
    from typedq.job import MAX_COUNT, MAX_PRIORITY, MIN_PRIORITY

    now = clock.now()
    queue.enqueue(job("one", priority=MAX_PRIORITY, max_retries=MAX_COUNT))
    queue.enqueue(job("keyed", metadata={UNIQUE_META: {"key": "k"}}))
    queue.enqueue_many([
        job("low", priority=MIN_PRIORITY, payload={"b": "\u00e9\U0001f600"}),
        job("child", depends_on=["low"]),
        job("later", scheduled_at=now + 60),
        job("held", metadata={UNIQUE_META: {"key": "k2"}}),
        job(
            "failed", status=JobStatus.FAILED, finished_at=now, error="boom",
            attempt=MAX_COUNT, retry_count=MAX_COUNT, lost_count=MAX_COUNT,
        ),
    ])
    claims = queue.claim_many("w", lease_s=30.0, limit=10)
    assert {c.job.job_id for c in claims} == {"one", "keyed", "low", "held"}
    outcomes = queue.complete_many(
        [Completion(c.job.job_id, c.token, {"n": i} if i % 2 else None) for i, c in enumerate(claims)]
    )
    assert all(isinstance(o, Job) and o.status is JobStatus.COMPLETED for o in outcomes)


def test_packed_scripts_are_given_text_and_bytes_only(
    make_queue: MakeQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A packed script's integer argument would reach Lua as a number, which compares
    unequal to the text the scripts compare it with (a token, a flag): every argument a
    packed script is given is text or bytes, and a job's numbers are stored as exact
    decimal text."""
    from typedq.backends import _redis_conn
    from typedq.job import MAX_COUNT, MAX_PRIORITY

    seen: list[Any] = []
    pack = _redis_conn.pack_args
    monkeypatch.setattr(_redis_conn, "pack_args", lambda args: seen.extend(args) or pack(args))
    queue = make_queue("q")
    _packed_workload(queue, clock)
    assert len(seen) > 50
    assert {type(a) for a in seen} <= {str, bytes}
    stored = redis.Redis().hgetall(f"{queue.key_prefix}:j:one")
    assert (stored[b"p"], stored[b"mr"]) == (str(MAX_PRIORITY).encode(), str(MAX_COUNT).encode())
    failed = queue.get_job("failed")
    assert (failed.attempt, failed.retry_count, failed.lost_count) == (MAX_COUNT,) * 3


def test_a_batch_too_big_to_pack_goes_argument_by_argument_and_stores_the_same(
    make_queue: MakeQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past ``PACK_MAX`` a packed script's arguments go one by one (a server refuses an
    argument over its ``proto-max-bulk-len``); the script takes both forms and stores
    the same."""
    from typedq.backends import _redis_conn

    packed = make_queue("packed")
    _packed_workload(packed, clock)
    sent: list[int] = []
    pack = _redis_conn.pack_args
    monkeypatch.setattr(_redis_conn, "PACK_MAX", 0)
    monkeypatch.setattr(_redis_conn, "pack_args", lambda args: sent.append(len(pack(args))) or pack(args))
    flat = make_queue("flat")
    _packed_workload(flat, clock)
    assert sent
    assert min(sent) > 1  # every call went argument by argument
    assert _stored(packed.key_prefix) == _stored(flat.key_prefix)


def test_count_submitted_counts_every_job_added_and_never_goes_down(make_queue: MakeQueue) -> None:
    queue = make_queue("q")
    assert queue.count_submitted() == {}
    queue.enqueue(job("a1", job_type="a"))
    queue.enqueue_many([job("a2", job_type="a"), job("b1", job_type="b"), job("b2", job_type="b")])
    queue.import_jobs([job("c1", job_type="c", status=JobStatus.COMPLETED, finished_at=1.0).to_dict()])
    with pytest.raises(DuplicateJobError):  # refused: nothing added, nothing counted
        queue.enqueue_many([job("a3", job_type="a"), job("a1", job_type="a")])
    claim = queue.claim("w", lease_s=30.0, job_types=["a"])
    assert claim is not None
    queue.complete(claim.job.job_id, token=claim.token)
    queue.delete("b1")
    assert queue.purge(statuses=[JobStatus.COMPLETED], older_than=2e9) == 2
    assert queue.count_submitted() == {"a": 2, "b": 2, "c": 1}
    assert make_queue("q").count_submitted() == {"a": 2, "b": 2, "c": 1}  # kept in the store
    assert make_queue("other").count_submitted() == {}


def test_running_counts_per_type_are_rebuilt_for_a_queue_written_without_them(
    prefix: str, make_queue: MakeQueue
) -> None:
    queue = make_queue("q")
    queue.enqueue_many([job(f"a{i}", job_type="a") for i in range(3)] + [job("b0", job_type="b")])
    first = queue.claim("w", lease_s=30.0, job_types=["a"])
    assert first is not None
    client = redis.Redis(host="127.0.0.1", port=6379)
    client.delete(f"{queue.key_prefix}:running")  # as a queue written before the counts
    client.close()
    queue.set_claim_policy(ClaimPolicy(limits={"a": Limit(max_concurrency=2)}))
    second = queue.claim("w", lease_s=30.0, job_types=["a", "b"])
    third = queue.claim("w", lease_s=30.0, job_types=["a", "b"])
    assert second is not None
    assert third is not None
    assert (second.job.job_type, third.job.job_type) == ("a", "b")  # a's limit of 2 reached
    assert queue.claim("w", lease_s=30.0, job_types=["a", "b"]) is None
    queue.complete(first.job.job_id, token=first.token)
    fourth = queue.claim("w", lease_s=30.0, job_types=["a", "b"])
    assert fourth is not None
    assert fourth.job.job_type == "a"


def test_queue_names_lists_the_queues_of_the_prefix_that_hold_jobs(make_queue: MakeQueue) -> None:
    first, second, empty = make_queue("alpha"), make_queue("beta:x"), make_queue("gamma")
    first.enqueue(job("a"))
    second.enqueue(job("b"))
    assert empty.queue_names() == ["alpha", "beta:x"]


# -- the key layout -------------------------------------------------------------------------


def test_every_key_of_every_queue_of_a_prefix_is_in_one_cluster_slot(
    prefix: str, make_queue: MakeQueue
) -> None:
    """Layout 2: the hash tag is the prefix, so a script may touch several queues of it
    (a bury into the dead-letter queue) on a Redis Cluster too."""
    from redis.crc import key_slot

    from typedq.backends.base import WorkerInfo

    queues = [make_queue(name) for name in ("default", "dead-letter", "a:j", "a")]
    for index, queue in enumerate(queues):
        queue.enqueue_many([job(f"x{index}"), job("meta"), job("child", depends_on=["meta"])])
        queue.claim_many("w", lease_s=30.0, limit=2)
        queue.register_worker(
            WorkerInfo("w", queue.name, "h", 1, ("t",), "v", 1.0, 1.0, 30.0, 1)
        )
        assert queue.key_prefix == f"{{{prefix}}}:{{{queue.name}}}"
    client = redis.Redis()
    keys = list(client.scan_iter(match=f"{{{prefix}}}:*", count=1000))
    client.close()
    assert len(keys) > 40
    assert {key_slot(key) for key in keys} == {key_slot(prefix.encode())}
    # Queue names with colons never share a key with another queue (job "meta" of queue
    # "a" beside the meta key of queue "a:j").
    assert [q.size for q in queues] == [3, 3, 3, 3]
    assert queues[0].queue_names() == ["a", "a:j", "dead-letter", "default"]


def test_a_queue_of_key_layout_1_is_moved_to_layout_2_when_opened(
    prefix: str,
    make_queue: MakeQueue,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    clock: FakeClock,
) -> None:
    """Layout 1 (``{prefix:queue}``, one slot a queue, the traceback inside the metadata
    frame) is renamed key by key in one MULTI by the first process that opens the queue."""
    import typedq.backends._redis_conn as redis_conn
    import typedq.backends.redis as redis_backend
    from typedq.backends._redis_keys import legacy_base_key
    from typedq.serializers.base import FrameCodec

    with monkeypatch.context() as patch:  # a typedq of layout 1 writes the queue
        patch.setattr(redis_backend, "base_key", legacy_base_key)
        patch.setattr(redis_conn, "LAYOUT_VERSION", 1)
        old = make_queue("q")
        old.enqueue_many([job("done"), job("dead"), job("waiting", depends_on=["dead2"]), job("dead2")])
        for _ in range(2):
            claim = old.claim("w", lease_s=30.0)
            assert claim is not None
            if claim.job.job_id == "done":
                old.complete("done", token=claim.token, result=42)
            else:
                old.bury(claim.job.job_id, token=claim.token, error="boom")
        running = old.claim("w", lease_s=30.0)
        assert running is not None
    client = redis.Redis()
    legacy = f"{{{prefix}:q}}"
    meta = FrameCodec("json").encode({"tenant": "t", "typedq.traceback": "Trace of dead"}, context=b"dead")
    client.hset(f"{legacy}:j:dead", "md", meta)  # where layout 1 kept the traceback
    client.hdel(f"{legacy}:j:dead", "tb")
    client.delete(*(f"{legacy}:fin:{s}" for s in ("COMPLETED", "DEAD")))  # layout 1 had none
    before = sorted(k.decode()[len(legacy) :] for k in client.scan_iter(match=f"{legacy}:*"))
    assert client.hget(f"{legacy}:meta", "layout") == b"1"

    caplog.set_level(logging.WARNING, logger="typedq.backends.redis")
    queue = make_queue("q")
    after = sorted(k.decode()[len(queue.key_prefix) :] for k in client.scan_iter(match=f"{{{prefix}}}:*"))
    assert list(client.scan_iter(match=f"{legacy}:*")) == []
    assert after == sorted([*before, ":fin:COMPLETED", ":fin:DEAD"])  # built from the jobs
    assert client.hget(f"{queue.key_prefix}:meta", "layout") == b"2"
    client.close()
    assert any("key layout 1" in r.getMessage() for r in caplog.records)

    assert queue.get_job("done").result == 42
    # The finish-time indexes of layout 2 are built from the jobs: purges find them.
    assert queue.purge(statuses=[JobStatus.COMPLETED], older_than=clock.now() + 1) == 1
    dead = queue.get_job("dead")
    assert (dead.status, dead.traceback, dead.metadata) == (JobStatus.DEAD, "Trace of dead", {"tenant": "t"})
    assert queue.count_by_status()[JobStatus.DEAD] == 1
    assert queue.get_job("waiting").status is JobStatus.PENDING  # still blocked on dead2
    queue.complete(running.job.job_id, token=running.token)
    assert queue.queue_names() == ["q"]
    make_queue("q").close()  # opening again renames nothing
    assert sum(1 for r in caplog.records if "key layout 1" in r.getMessage()) == 1


# -- dead letters ---------------------------------------------------------------------------


def test_a_dead_letter_key_of_another_type_refuses_the_bury_before_anything_is_written(
    prefix: str, make_queue: MakeQueue, clock: FakeClock
) -> None:
    """A Lua script that fails half-way keeps what it wrote: the dead-letter side is
    checked before the script writes anything."""
    queue, dlq = make_queue("q"), make_queue("dead-letter")
    queue.enqueue_many([job("j"), job("child", depends_on=["j"])])
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    client = redis.Redis()
    client.set(f"{dlq.key_prefix}:j:j", "someone else's")
    with pytest.raises(BackendDataError, match="j:j is a string"):
        queue.bury("j", token=claim.token, error="boom", dead_letter=dlq)
    assert queue.get_job("j").status is JobStatus.RUNNING
    assert queue.get_job("child").status is JobStatus.PENDING
    clock.advance(60)
    with pytest.raises(BackendDataError):
        queue.reclaim_expired(max_lost=1, dead_letter=dlq)
    assert queue.get_job("j").status is JobStatus.RUNNING
    assert client.get(f"{dlq.key_prefix}:j:j") == b"someone else's"
    client.close()


def test_a_dead_letter_queue_of_another_database_is_refused(make_queue: MakeQueue, prefix: str) -> None:
    queue = make_queue("q")
    same = make_queue("dead-letter", url=f"redis://127.0.0.1:6379/0?prefix={prefix}&socket_timeout=3")
    queue.check_dead_letter(same)  # other timeouts, the same keys: one store
    other = make_queue("dead-letter", url=f"redis://127.0.0.1:6379/1?prefix={prefix}")
    try:
        with pytest.raises(ConfigError, match="same server, database and prefix"):
            queue.check_dead_letter(other)
    finally:
        client = redis.Redis(db=1)
        keys = list(client.scan_iter(match=f"{{{prefix}}}:*"))
        if keys:
            client.unlink(*keys)
        client.close()


def test_the_dropped_count_is_kept_in_the_store(make_queue: MakeQueue) -> None:
    queue, dlq = make_queue("q"), make_queue("dead-letter")
    queue.enqueue_many([job(f"j{i}") for i in range(3)])
    for _ in range(3):
        claim = queue.claim("w", lease_s=30.0)
        assert claim is not None
        queue.bury(claim.job.job_id, token=claim.token, error="boom", dead_letter=dlq, dlq_max=1)
    assert dlq.count_dropped() == 2
    assert make_queue("dead-letter").count_dropped() == 2  # any process sees the same count
    assert queue.count_dropped() == 0


# -- a server that lost its data -------------------------------------------------------------


def test_a_flushed_server_is_reported_once_at_the_next_heartbeat(
    private_server: int, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    from typedq.backends.base import WorkerInfo
    from typedq.backends.redis import RedisQueue

    url = f"redis://127.0.0.1:{private_server}/0?prefix=lost"
    queue = RedisQueue(url, name="q", clock=clock)
    other = RedisQueue(url, name="other", clock=clock)
    queue.enqueue(job("a"))
    info = WorkerInfo("w", "q", "h", 1, ("t",), "0", clock.now(), clock.now(), 30.0, 1)
    admin = redis.Redis(port=private_server)
    with caplog.at_level(logging.ERROR, logger="typedq.backends.redis"):
        queue.register_worker(info)  # the marker is there: nothing to report
        assert admin.get("{lost:}:epoch") is not None
        admin.flushdb()  # no reconnect: only the heartbeat can tell
        queue.register_worker(info)
        queue.register_worker(info)
        other.register_worker(info)
    admin.close()
    reports = [r.getMessage() for r in caplog.records]
    assert len(reports) == 1, reports
    assert "backend state lost" in reports[0]
    assert f"127.0.0.1:{private_server}" in reports[0]
    assert "{lost:}:epoch" in reports[0]
    assert queue.queue_names() == []  # the job is gone; the queues are marked again
    queue.enqueue(job("b"))
    assert queue.queue_names() == ["q"]
    queue.close()
    other.close()


# -- liveness across hosts: the registry, by the server's clock ------------------------------


@pytest.mark.timeout(20)
def test_an_expired_lease_of_a_live_owner_is_kept_until_its_heartbeat_is_stale(
    prefix: str, make_queue: MakeQueue
) -> None:
    from typedq.backends.base import WorkerInfo
    from typedq.backends.redis import RedisQueue

    url = f"redis://127.0.0.1:6379/0?prefix={prefix}"
    host_a = RedisQueue(url, name="q", clock=system_clock)
    host_b = RedisQueue(url, name="q", clock=SkewedClock(60.0))  # its clock says every lease expired
    owner = "w@host-a:4242:1:ab"  # another host: no pid of it can be checked here

    last: list[float] = []

    def heartbeat() -> None:
        last[:] = [time.monotonic()]
        now = time.time()
        host_a.register_worker(WorkerInfo(owner, "q", "host-a", 4242, ("t",), "0", now, now, 1.0, 4242))

    try:
        for job_id, lease_s in (("live", 30.0), ("unrenewed", 0.3)):
            host_a.enqueue(job(job_id))
            assert host_a.claim(owner, lease_s=lease_s) is not None
        host_a.enqueue(job("orphan"))
        assert host_a.claim("w@host-c:1:1:cd", lease_s=30.0) is not None  # never registered
        heartbeat()
        assert host_b.reclaim_expired() == ["orphan"]  # no registry entry: the clock decides
        began = time.monotonic()
        renewed_for = 0.0
        while time.monotonic() < began + 1.5:  # host A is live: 0.2 s heartbeats, ttl 1 s
            heartbeat()
            got = host_b.reclaim_expired()
            assert "live" not in got, got
            if got:
                assert got == ["unrenewed"]  # a live owner loses a lease it stopped renewing
                renewed_for = time.monotonic() - began
            time.sleep(0.2)
        assert host_a.get_job("unrenewed").status is JobStatus.PENDING
        assert renewed_for >= 0.25  # kept while its lease lasted by the server's clock
        assert host_a.get_job("live").status is JobStatus.RUNNING
        # Host A stops heartbeating: its entry goes stale 1 s after the last heartbeat.
        found: list[str] = []
        wait_until(lambda: found.extend(host_b.reclaim_expired()) or found, timeout=5, interval=0.02)
        assert found == ["live"]
        assert 0.95 <= time.monotonic() - last[0] <= 3.0  # its lease had 28 s left by the server
    finally:
        host_a.close()
        host_b.close()


@pytest.mark.timeout(30)
def test_a_due_time_wait_ends_at_the_due_time_not_at_the_servers_timeout(private_server: int) -> None:
    """Redis ends a blocked BLPOP at its timeout only at an event-loop pass, up to 1/hz
    late (up to 1 s here, with hz 1): the waiter ends its own wait at the due time with a
    token, and the connection is clean for the claim that follows."""
    from typedq.backends.redis import RedisQueue

    redis.Redis(port=private_server).config_set("hz", 1)
    queue = RedisQueue(f"redis://127.0.0.1:{private_server}/0?prefix=due", name="q")
    try:
        lateness = []
        for n in range(3):
            due = time.time() + 0.1
            queue.enqueue(job(f"j{n}", scheduled_at=due))
            deadline = time.monotonic() + 10
            while not queue.wait_ready(5.0):  # the enqueue's own wake token ends one wait early
                assert time.monotonic() < deadline
            lateness.append(time.time() - due)
            claim = queue.claim("w", lease_s=10)
            assert claim is not None
            assert claim.job.job_id == f"j{n}"
        assert min(lateness) >= 0
        assert max(lateness) < 0.4  # the server's timeout: 0.5 s after the due time, then up to 1 s
    finally:
        queue.close()


# -- waking idle workers --------------------------------------------------------------------


def test_wake_tokens_go_to_the_list_of_the_jobs_type_and_say_whether_it_was_made_ready(
    prefix: str, make_queue: MakeQueue
) -> None:
    """A job made ready leaves 'r' on its type's list; one due later, '1' (the waiter
    asks); one blocked by a dependency, none. The first job of a type also leaves '1' on
    the queue's own list, for waiters for any type."""
    queue = make_queue("q")
    base = f"{{{prefix}}}:{{q}}"
    admin = redis.Redis(host="127.0.0.1", port=6379)

    def tokens(key: str) -> list[bytes]:
        found: list[bytes] = admin.lrange(key, 0, -1)
        admin.delete(key)
        return found

    try:
        queue.enqueue(job("now"))
        assert tokens(f"{base}:wake:t") == [b"r"]
        assert tokens(f"{base}:wake") == [b"1"]  # "t" is new
        queue.enqueue(job("later", scheduled_at=time.time() + 60))
        queue.enqueue_many([job("a"), job("b")])
        assert tokens(f"{base}:wake:t") == [b"r", b"r", b"1"]
        queue.enqueue_many([job("c"), job("d", depends_on=["c"]), job("e", job_type="u")])
        assert tokens(f"{base}:wake:t") == [b"r"]  # d waits for c: nothing to wake for
        assert tokens(f"{base}:wake:u") == [b"r"]
        assert tokens(f"{base}:wake") == [b"1"]  # "u" is new
    finally:
        admin.close()


@pytest.mark.timeout(30)
def test_a_waiter_woken_by_a_ready_job_claims_without_asking_again(private_server: int) -> None:
    """The token of a job made ready ends the wait with True and no other command: the
    worker's claim is the next round trip (pick-up latency: one round trip less)."""
    from typedq.backends.redis import RedisQueue

    url = f"redis://127.0.0.1:{private_server}/0?prefix=wake"
    waiter, producer = RedisQueue(url, name="q"), RedisQueue(url, name="q")
    admin = redis.Redis(port=private_server)
    woke: list[bool] = []
    try:
        producer.enqueue(job("known"))  # type "t" known: no new-type token besides
        assert waiter.claim("w", lease_s=30) is not None
        admin.delete("{wake}:{q}:wake")  # the new-type token "known" left
        thread = threading.Thread(target=lambda: woke.append(waiter.wait_ready(20.0, ["t"])), daemon=True)
        thread.start()
        wait_until(lambda: waiter._waiters.waiting == 1, timeout=10, message="the waiter blocks")
        time.sleep(0.05)  # its BLPOP has reached the server
        admin.config_resetstat()
        producer.enqueue(job("j"))
        thread.join(10)
        assert woke == [True]
        stats = admin.info("commandstats")
        assert stats["cmdstat_evalsha"]["calls"] == 1  # the enqueue; no check after the wake
        assert "cmdstat_zcard" not in stats
    finally:
        waiter.close()
        producer.close()
        admin.close()
