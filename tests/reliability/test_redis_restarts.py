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

from typedq.job import Job, JobStatus

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
        resumed = stack.events.first_after(back)
        assert sorted(resumed) == sorted(w.worker_id for w in workers), resumed
        assert max(resumed.values()) <= RESUME_S, resumed
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
