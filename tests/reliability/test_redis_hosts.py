"""Two hosts on one Redis queue rescue each other's jobs through the registry heartbeat,
never by a pid.

Host A and host B are real ``typedq worker`` processes of the ledger app of
``test_process_workers`` (the knobs of RELIABILITY.md §4a), started with
``TYPEDQ_HOSTNAME=host-a`` and ``host-b``; B's clock runs 120 s ahead of A's (hosts'
clocks disagree). Each way round:

* While the owner is live (its registry heartbeat renewed, its lease renewed by the
  server's clock), the other host's reaper leaves its running job alone for three lease
  lengths, although by B's clock every lease of A expired two minutes ago, and by A's
  clock every lease of B holds for two more minutes.
* Once the owner stops (SIGSTOP: its pid stays alive on this machine, so a pid check
  would call it live), its heartbeat goes stale within a lease and the other host rescues
  the job and runs it: after the heartbeat's TTL, not at once, and within
  lease + reaper + 1 s of the stop.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conformance.conftest import redis_test_url
from tests.helpers import wait_until
from tests.reliability.ledger import read_entries
from tests.reliability.pool import FAST, Pool, alive
from tests.reliability.test_process_workers import RESCUE_S

from typedq._identity import parse_worker_id
from typedq.backends.base import Queue
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager

pytestmark = [pytest.mark.chaos, pytest.mark.redis]

SKEW_S = 120.0


@pytest.fixture
def backend() -> Iterator[str]:
    with redis_test_url() as url:
        yield url


def _owner(queue: Queue, job_id: str, host: str) -> tuple[str, int]:
    """The worker id and pid of the process of ``host`` running ``job_id`` (attempt 1)."""
    wait_until(lambda: queue.get_job(job_id).status is JobStatus.RUNNING, timeout=20,
               message=f"{host} runs {job_id}")
    job = queue.get_job(job_id)
    parsed = parse_worker_id(job.worker_id or "")
    assert parsed is not None
    assert (parsed[0], job.attempt) == (host, 1)
    return job.worker_id or "", parsed[1]


def _rescued(queue: Queue, folder: Path, job_id: str, owner: tuple[str, int], by: str) -> float:
    """Keep ``owner``'s job for three leases, stop the owner, then see ``by`` rescue and run
    it; return how long after the stop attempt 2 started."""
    worker_id, pid = owner
    deadline = time.monotonic() + 3 * FAST["lease_s"]
    while time.monotonic() < deadline:
        job = queue.get_job(job_id)
        assert (job.status, job.attempt, job.worker_id) == (JobStatus.RUNNING, 1, worker_id)
        time.sleep(0.05)
    os.kill(pid, signal.SIGSTOP)  # alive by its pid, silent in the registry
    stopped = time.time()
    assert alive(pid)
    wait_until(lambda: queue.get_job(job_id).status is JobStatus.COMPLETED, timeout=10,
               message=f"{by} rescued and ran {job_id}")
    rerun = [e for e in read_entries(folder / "ledger") if e.job_id == job_id and e.attempt == 2]
    assert [e.kind for e in rerun] == ["start", "end"]
    done = queue.get_job(job_id)
    assert (done.attempt, done.lost_count) == (2, 1)
    assert (parse_worker_id(done.worker_id or "") or ("",))[0] == by
    latency = rerun[0].t - stopped
    # The heartbeat and the lease (TTL 1 s by the server's clock) had up to a heartbeat
    # (0.25 s) less to run at the stop; no sooner, and within the bound.
    assert FAST["lease_s"] - FAST["heartbeat_s"] - 0.05 <= latency <= RESCUE_S, latency
    return latency


@pytest.mark.timeout(90)
def test_two_hosts_rescue_each_others_jobs_only_once_a_heartbeat_is_stale(
    tmp_path: Path, backend: str
) -> None:
    admin = JobQueueManager({"backend": backend})
    queue = admin.get_queue("default")
    stopped: list[int] = []
    # Attempt 1 of a job runs for a minute; a second attempt is quick. A runs two at a
    # time: its first job's attempt 1 still runs when it rescues B's.
    host_a = Pool(
        tmp_path, backend, "--processes", "1", "--concurrency", "2", env={"TYPEDQ_HOSTNAME": "host-a"}
    )
    host_b: Pool | None = None
    try:
        host_a.wait_full(1)
        queue.enqueue(Job.create("work", {"mode": "long", "s": 60}, job_id="held-by-a"))
        owner_a = _owner(queue, "held-by-a", "host-a")
        # B starts once A holds the job.
        host_b = Pool(tmp_path, backend, "--processes", "1", "--concurrency", "1",
                      env={"TYPEDQ_HOSTNAME": "host-b", "TYPEDQ_TEST_CLOCK_SKEW": str(SKEW_S)})
        host_b.wait_full(1)
        wait_until(lambda: {info.host for info in queue.workers()} == {"host-a", "host-b"}, timeout=20,
                   message="both hosts registered")
        stopped.append(owner_a[1])
        b_took = _rescued(queue, tmp_path, "held-by-a", owner_a, by="host-b")

        # A is stopped: B takes the next job, then A comes back and B stops.
        queue.enqueue(Job.create("work", {"mode": "long", "s": 60}, job_id="held-by-b"))
        owner_b = _owner(queue, "held-by-b", "host-b")
        os.kill(owner_a[1], signal.SIGCONT)
        stopped.remove(owner_a[1])
        stopped.append(owner_b[1])
        a_took = _rescued(queue, tmp_path, "held-by-b", owner_b, by="host-a")
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        host_a.__exit__(None, None, None)
        if host_b is not None:
            host_b.__exit__(None, None, None)
        admin.close(graceful=False)
    print(f"hosts: each job kept for {3 * FAST['lease_s']:.0f} s by a reaper 120 s off its owner's clock; "
          f"rescued {b_took:.2f} s (by B) and {a_took:.2f} s (by A) after its owner stopped")
