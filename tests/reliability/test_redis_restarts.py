"""Redis restarted, crashed or emptied under a running stack (RELIABILITY.md §4b: E1, E2,
E3, E5).

Each test owns a private ``redis-server`` (``redis_servers``) and drives it: ``SHUTDOWN
SAVE`` and a restart on the same port (E1), ``kill -9`` with an append-only file fsynced
``always`` (E2) or ``everysec`` (E3), a restart of a server without persistence (E5).
Worker threads of one manager drain ``work`` jobs meanwhile and write the ledger; the
jobs that were RUNNING when the server went down are read from its saved files by a
second server started on a copy of them (nothing else can tell which claims the server
kept), and only those may run twice.
"""

from __future__ import annotations

import logging
import random
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.helpers import wait_until, wait_while_progressing
from tests.reliability._redis_stack import Stack, statuses
from tests.reliability.ledger import check
from tests.reliability.redis_server import RedisServer

from typedq.backends.redis import RedisQueue
from typedq.errors import BackendUnavailableError
from typedq.job import Job, JobStatus
from typedq.worker import Worker

pytestmark = [pytest.mark.redis_server_bin, pytest.mark.chaos]

MakeServer = Callable[..., RedisServer]
#: After the server is back, every worker claims again within this many seconds.
RESUME_S = 5.0
#: Client timeouts of these tests: an outage is noticed within a second or two.
TIMEOUTS = {"socket_timeout": 2, "socket_connect_timeout": 1}


def running_in_files(server: RedisServer, base: str, folder: Path) -> set[str]:
    """The ids RUNNING in ``server``'s saved files (RDB or AOF), read by a second server
    started on a copy of them while ``server`` is down."""
    copy = folder / f"snapshot-{time.monotonic_ns()}"
    shutil.copytree(server.folder, copy, ignore=shutil.ignore_patterns("redis.log"))
    snapshot = RedisServer(copy, server.options).start()
    try:
        client = snapshot.client()
        try:
            return {raw.decode() for raw in client.zrange(f"{base}:st:RUNNING", 0, -1)}
        finally:
            client.close()
    finally:
        snapshot.close()


def _drain(stack: Stack, total: int) -> None:
    wait_while_progressing(
        lambda: stack.queue.count_by_status()[JobStatus.COMPLETED], total, stall_s=15.0,
        message="every job completed",
    )


def _wait_back(workers: list[Worker], back: float) -> None:
    """Wait until each worker's calls succeed again (its outage ended), up to RESUME_S
    after ``back``; a worker may still be in its backoff when the others drained all."""
    wait_until(
        lambda: all(w.outage.ended_at is not None for w in workers),
        timeout=max(0.1, back + RESUME_S + 0.5 - time.monotonic()),
        message="every worker reached the server again",
    )


# -- E1: a graceful restart mid-run ----------------------------------------------------------


@pytest.mark.timeout(60)
def test_e1_a_restart_mid_run_loses_nothing_and_every_worker_resumes(
    tmp_path: Path, redis_servers: MakeServer
) -> None:
    server = redis_servers()
    stack = Stack(server.url(prefix="e1", **TIMEOUTS), tmp_path)
    ids = [f"e1-{i:05d}" for i in range(2000)]
    stack.queue.enqueue_many([Job.create("work", {"s": 0.004}, job_id=i) for i in ids])
    try:
        stack.start()
        workers = stack.manager.workers()
        wait_until(
            lambda: stack.queue.count_by_status()[JobStatus.COMPLETED] >= len(ids) // 4,
            timeout=20, message="a quarter of the jobs completed",
        )
        threads = threading.active_count()

        server.shutdown(save=True)
        in_flight = running_in_files(server, stack.queue.key_prefix, tmp_path)
        time.sleep(1.0)  # the outage: every worker meets a refused connection meanwhile
        server.start()
        back = time.monotonic()

        _drain(stack, len(ids))
        # Every worker met the outage and reached the server again (its first call that
        # succeeded: a claim, or the wait for work once the jobs ran out) soon after.
        assert all(w.outage.outages >= 1 for w in workers)
        _wait_back(workers, back)
        resumed = {w.worker_id: (w.outage.ended_at or 0.0) - back for w in workers}
        assert max(resumed.values()) <= RESUME_S, resumed
        assert stack.events.first_after(back)  # and jobs ran again
        assert all(w.is_alive() for w in workers)
        assert threading.active_count() == threads
        final = statuses(stack)
    finally:
        stack.close()

    report = check(stack.ledger.path, ids, statuses=final, in_flight_at_kill=in_flight)
    assert not report.lost, sorted(report.lost)[:10]
    assert not report.unexpected_dups, (sorted(report.unexpected_dups)[:10], len(in_flight))
    assert not report.dup_attempts
    print(f"E1: in flight at the restart {len(in_flight)}, run twice {len(report.dups)}, "
          f"resumed after {', '.join(f'{s:.2f}' for s in sorted(resumed.values()))} s")


# -- E2, E3: kill -9 of the server while producers enqueue -----------------------------------


class Producer(threading.Thread):
    """Enqueues ``work`` jobs one by one until the server fails; records when each
    ``enqueue()`` returned (wall time)."""

    def __init__(self, url: str, tag: str) -> None:
        super().__init__(name=f"producer-{tag}", daemon=True)
        self.queue = RedisQueue(url, name="default")
        self.tag = tag
        self.acked: dict[str, float] = {}
        self.tried: list[str] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        n = 0
        try:
            while True:
                job_id = f"{self.tag}-{n:06d}"
                n += 1
                self.tried.append(job_id)
                self.queue.enqueue(Job.create("work", {"s": 0.002}, job_id=job_id))
                self.acked[job_id] = time.time()
        except BackendUnavailableError as exc:
            self.error = exc
        except BaseException as exc:  # anything else fails the test
            self.error = exc
            raise


def _kill_while_enqueuing(tmp_path: Path, redis_servers: MakeServer, fsync: str) -> tuple[int, int, float]:
    """Producers and workers run; the server is killed with ``kill -9`` and restarted.

    Returns (acknowledged enqueues, acknowledged enqueues lost, seconds from the oldest
    lost acknowledgement to the kill).
    """
    server = redis_servers({"appendonly": "yes", "appendfsync": fsync})
    url = server.url(prefix="e2", **TIMEOUTS)
    stack = Stack(url, tmp_path)
    producers = [Producer(url, f"p{i}") for i in range(4)]
    rng = random.Random(fsync)
    try:
        stack.start()
        for producer in producers:
            producer.start()
        wait_until(lambda: sum(len(p.acked) for p in producers) >= 1000, timeout=30,
                   message="1,000 enqueues acknowledged")
        time.sleep(rng.uniform(0.0, 0.3))
        server.kill()
        killed_at = time.time()
        for producer in producers:
            producer.join(10)
            assert isinstance(producer.error, BackendUnavailableError), producer.error
        in_flight = running_in_files(server, stack.queue.key_prefix, tmp_path)
        server.start()
        back = time.monotonic()

        stored = statuses(stack)
        acked = {i: t for p in producers for i, t in p.acked.items()}
        lost = {i: t for i, t in acked.items() if i not in stored}
        _drain(stack, len(stored))
        # The workers that met the outage (a short one may pass a busy worker by) reached
        # the server again soon after.
        met = [w for w in stack.manager.workers() if w.outage.outages]
        assert met
        _wait_back(met, back)
        resumed = {w.worker_id: (w.outage.ended_at or 0.0) - back for w in met}
        final = statuses(stack)
    finally:
        stack.close()
        for producer in producers:
            producer.queue.close()

    # Every stored job ran to completion (also those whose enqueue() did not return);
    # only the jobs RUNNING in the server's files ran twice.
    report = check(stack.ledger.path, stored, statuses=final, in_flight_at_kill=in_flight)
    assert not report.lost, sorted(report.lost)[:10]
    assert not report.unexpected_dups, sorted(report.unexpected_dups)[:10]
    assert not report.dup_attempts
    assert max(resumed.values()) <= RESUME_S, resumed
    oldest = killed_at - min(lost.values()) if lost else 0.0
    print(
        f"E2/E3 appendfsync {fsync}: {len(acked)} enqueues acknowledged, {len(lost)} lost "
        f"(oldest {oldest:.3f} s before the kill); {len(stored) - len(acked) + len(lost)} stored "
        f"without an acknowledgement; in flight {len(in_flight)}, run twice {len(report.dups)}; "
        f"workers resumed after {', '.join(f'{s:.2f}' for s in sorted(resumed.values()))} s"
    )
    return len(acked), len(lost), oldest


@pytest.mark.timeout(120)
def test_e2_kill_9_with_appendfsync_always_loses_no_acknowledged_enqueue(
    tmp_path: Path, redis_servers: MakeServer
) -> None:
    acked, lost, _ = _kill_while_enqueuing(tmp_path, redis_servers, "always")
    assert acked >= 1000
    assert lost == 0


@pytest.mark.timeout(120)
def test_e3_kill_9_with_appendfsync_everysec_loses_at_most_the_last_2_seconds(
    tmp_path: Path, redis_servers: MakeServer
) -> None:
    acked, lost, oldest = _kill_while_enqueuing(tmp_path, redis_servers, "everysec")
    assert acked >= 1000
    assert oldest <= 2.0, (lost, oldest)


# -- E5: a server without persistence comes back empty ---------------------------------------


def _lost(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if "backend state lost" in r.getMessage()]


@pytest.mark.timeout(60)
def test_e5_a_server_back_without_its_data_is_reported_once_and_workers_go_on(
    tmp_path: Path, redis_servers: MakeServer, caplog: pytest.LogCaptureFixture
) -> None:
    server = redis_servers()  # no RDB, no AOF: a restart loses everything
    url = server.url(prefix="e5", **TIMEOUTS)
    stack = Stack(url, tmp_path)
    before = [f"before-{i:04d}" for i in range(400)]
    stack.queue.enqueue_many([Job.create("work", {"s": 0.005}, job_id=i) for i in before])
    try:
        with caplog.at_level(logging.INFO):
            stack.start()
            workers = stack.manager.workers()
            wait_until(lambda: stack.queue.count_by_status()[JobStatus.COMPLETED] >= 100, timeout=20,
                       message="100 jobs completed")
            server.shutdown(save=False)
            time.sleep(0.5)
            server.start()
            wait_until(lambda: _lost(caplog), timeout=10, message="the loss is reported")

            after = [f"after-{i:04d}" for i in range(100)]
            stack.queue.enqueue_many([Job.create("work", {"s": 0.005}, job_id=i) for i in after])
            _drain(stack, len(after))
            assert all(w.is_alive() for w in workers)
            # Every worker, the keeper and the reaper reconnected: still one report.
            for worker in workers:
                stack.queue.register_worker(worker.info())
            reports = _lost(caplog)
            final = statuses(stack)  # read before close: a closed queue refuses every call
    finally:
        stack.close()
    assert len(reports) == 1, [r.getMessage() for r in reports]
    assert reports[0].levelno == logging.ERROR
    assert f"127.0.0.1:{server.port}" in reports[0].getMessage()
    assert set(final) == set(after)  # the jobs stored before are gone, as reported
    assert all(status is JobStatus.COMPLETED for status in final.values())
