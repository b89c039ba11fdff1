"""Two hosts on one Redis queue: a rescue across hosts goes by the registry heartbeat,
never by a pid.

Host A is a real ``typedq worker`` process started with ``TYPEDQ_HOSTNAME=host-a``;
host B is this process, its host name set to ``host-b``, its clock 120 s ahead of A's
(hosts' clocks disagree; by B's clock every lease of A has long expired). Both run the
ledger app of ``test_process_workers`` with the knobs of RELIABILITY.md §4a.

* While A is live (its registry heartbeat renewed, its lease renewed by the server's
  clock), B's reaper leaves A's running job alone, for many lease lengths.
* Once A stops (SIGSTOP: its pid stays alive on this machine, so a pid check would call
  it live), its heartbeat goes stale within a lease and B rescues the job and runs it:
  the rescue comes after the heartbeat's TTL, not at once, and within lease + reaper +
  1 s of the stop.
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
from tests.reliability.ledger import Ledger, read_entries
from tests.reliability.pool import FAST, Pool, alive
from tests.reliability.test_process_workers import RESCUE_S, _Work

import typedq._identity
import typedq.worker
from typedq._identity import parse_worker_id
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager

pytestmark = [pytest.mark.chaos, pytest.mark.redis]

SKEW_S = 120.0


class _Skewed:
    """The system clock, ``skew_s`` seconds ahead."""

    def __init__(self, skew_s: float) -> None:
        self.skew_s = skew_s

    def now(self) -> float:
        return time.time() + self.skew_s

    def monotonic(self) -> float:
        return time.monotonic()


@pytest.fixture
def backend() -> Iterator[str]:
    with redis_test_url() as url:
        yield url


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_host_b_rescues_host_a_job_only_once_a_heartbeat_is_stale(
    tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(typedq._identity, "HOST", "host-b")
    monkeypatch.setattr(typedq.worker, "HOST", "host-b")
    with Pool(tmp_path, backend, "--concurrency", "1", env={"TYPEDQ_HOSTNAME": "host-a"}) as host_a:
        assert host_a.proc.poll() is None
        admin = JobQueueManager({"backend": backend})
        queue = admin.get_queue("default")
        # Attempt 1 runs for a minute; a second attempt is quick.
        queue.enqueue(Job.create("work", {"mode": "long", "s": 60}, job_id="held"))
        wait_until(lambda: queue.get_job("held").status is JobStatus.RUNNING, timeout=20,
                   message="host A runs the job")
        owner = queue.get_job("held").worker_id or ""
        parsed = parse_worker_id(owner)
        assert parsed is not None
        assert parsed[0] == "host-a"
        a_pid = parsed[1]

        host_b = JobQueueManager(
            {**FAST, "backend": backend, "poll_interval": 0.02, "max_workers": 1}, clock=_Skewed(SKEW_S)
        )
        ledger = Ledger(tmp_path / "ledger")
        host_b.register_handler("work", _Work(ledger))
        try:
            host_b.start_workers()
            # Host A is live: for 3 leases B's reaper, whose clock says A's lease expired
            # two minutes ago, takes nothing.
            deadline = time.monotonic() + 3 * FAST["lease_s"]
            while time.monotonic() < deadline:
                job = queue.get_job("held")
                assert (job.status, job.attempt, job.worker_id) == (JobStatus.RUNNING, 1, owner)
                time.sleep(0.05)
            assert host_b._reaper.reclaimed_total == 0
            hosts = {info.host for info in queue.workers()}
            assert hosts == {"host-a", "host-b"}

            os.kill(a_pid, signal.SIGSTOP)  # alive by its pid, silent in the registry
            stopped = time.time()
            assert alive(a_pid)
            wait_until(lambda: queue.get_job("held").status is JobStatus.COMPLETED, timeout=10,
                       message="host B rescued and ran the job")
            rerun = [e for e in read_entries(tmp_path / "ledger") if e.kind == "start" and e.attempt == 2]
            assert [e.pid for e in rerun] == [os.getpid()]
            latency = rerun[0].t - stopped
            # The heartbeat and the lease (TTL 1 s by the server's clock) had up to a
            # heartbeat (0.25 s) less to run at the stop; no sooner, and within the bound.
            assert FAST["lease_s"] - FAST["heartbeat_s"] - 0.05 <= latency <= RESCUE_S, latency
            done = queue.get_job("held")
            assert (done.attempt, done.lost_count) == (2, 1)
            assert (parse_worker_id(done.worker_id or "") or ("",))[0] == "host-b"
        finally:
            os.kill(a_pid, signal.SIGCONT)
            host_b.close(graceful=False)
            ledger.close()
            admin.close(graceful=False)
    print(f"hosts: host A's job kept for {3 * FAST['lease_s']:.0f} s by a reaper 120 s ahead; "
          f"rescued {latency:.2f} s after host A stopped")
