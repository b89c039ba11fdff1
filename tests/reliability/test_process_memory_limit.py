"""Process workers under a memory limit (RELIABILITY.md §4b: G2).

A pool of 2 worker processes, each capped with ``RLIMIT_AS`` by the ``memory_limit_mb``
setting, runs quick jobs while one handler allocates 1 GiB. The allocation fails inside
the handler with ``MemoryError``: its job fails like any failure (retried as configured,
then dead-lettered), its process keeps serving, and the parent and the other child are
untouched. (Had the allocation killed its process instead, the job would be rescued and
counted as a lost worker: that path is G1's, in ``test_process_workers``.)

``python -m typedq worker --app tests.reliability.test_process_memory_limit:make_app`` runs
as a real process tree on a SQLite file in ``tmp_path``; the app writes the O_APPEND
ledger and a pid file, and the test polls them and the database with deadlines. Then: a
cap too low for a child to start stops the pool with a ``ConfigError`` naming the setting,
and ``typedq worker --memory-limit`` reaches the children. (The setting's validation is
tested with the ``processes`` setting's, in ``tests/integration/test_process_setting.py``.)
"""

from __future__ import annotations

import os
import resource
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from tests.helpers import wait_until
from tests.reliability.ledger import Ledger, LedgerEntry, read_entries
from tests.reliability.pool import FAST, Pool, alive, enqueue_work
from tests.reliability.rss import rss_bytes

from typedq.backends.base import Queue
from typedq.cli import main
from typedq.errors import ConfigError
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager
from typedq.process import run_worker_processes

pytestmark = pytest.mark.chaos

APP = "tests.reliability.test_process_memory_limit:make_app"
#: The cap of each worker process, MiB. RELIABILITY.md's G2 says 256 MiB, but ``RLIMIT_AS``
#: counts address space, not resident memory. Measured (Python 3.11, x86_64 glibc): a worker
#: process of this app maps about 50 MiB before its threads start and about 410 MiB once
#: its 6 threads run (2 workers, the manager's background threads: an 8 MiB stack each,
#: and glibc reserves a 64 MiB malloc arena per thread), while its resident set is about
#: 45 MiB. Capped at 256 MiB it still starts, because arenas that do not fit are not made,
#: but it then maps about 224 MiB: some 30 MiB to spare, which depends on how many arenas
#: got made, so any job could hit the cap, not only the 1 GiB one. Hence baseline + 256
#: MiB: room for the quick jobs, and still far below what the hog asks for.
LIMIT_MB = 416 + 256
#: What the hog handler allocates.
HOG_BYTES = 1 << 30


# -- the application the worker processes run ----------------------------------------------


class _Work:
    """Ledger ``start``; ``hog`` allocates :data:`HOG_BYTES`, ``ok`` sleeps ``s``; ledger
    ``end`` (never reached by a hog under the cap)."""

    takes_job = True

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def __call__(self, job: Job) -> int:
        self.ledger.start(job.job_id, job.attempt, job.attempt)
        if job.payload.get("mode") == "hog":
            block = bytearray(HOG_BYTES)
            block[-1] = 1  # touch it: an allocation that succeeded is really there
            del block
        else:
            time.sleep(float(job.payload.get("s", 0.0)))
        self.ledger.end(job.job_id, job.attempt, job.attempt)
        return os.getpid()


def make_app() -> JobQueueManager:
    """The app of every worker process; configured by ``TYPEDQ_TEST_*`` variables."""
    folder = Path(os.environ["TYPEDQ_TEST_DIR"])
    manager = JobQueueManager(
        {
            **FAST, "backend": os.environ["TYPEDQ_TEST_BACKEND"], "poll_interval": 0.02,
            "base_delay": 0.05, "jitter": 0.0, "memory_limit_mb": LIMIT_MB,
        }
    )
    (folder / "pids").mkdir(exist_ok=True)
    (folder / "pids" / str(os.getpid())).touch()
    manager.register_handler("work", _Work(Ledger(folder / "ledger")))
    return manager


# -- the harness ---------------------------------------------------------------------------


def _address_space_limit(pid: int) -> str:
    """The soft and hard ``Max address space`` of ``pid`` as /proc shows them."""
    with open(f"/proc/{pid}/limits") as limits:
        for line in limits:
            if line.startswith("Max address space"):
                return " ".join(line.split()[3:5])
    raise AssertionError(f"no address space limit in /proc/{pid}/limits")


def _entries(folder: Path) -> list[LedgerEntry]:
    path = folder / "ledger"
    return read_entries(path) if path.exists() else []


def _open_in(folder: Path) -> set[int]:
    """The pids running a handler now (a ``start`` without its ``end``)."""
    ended = {(e.job_id, e.attempt) for e in _entries(folder) if e.kind == "end"}
    return {e.pid for e in _entries(folder) if e.kind == "start" and (e.job_id, e.attempt) not in ended}


def _all_in(queue: Queue, ids: list[str], status: JobStatus) -> bool:
    return all(queue.get_job(i).status is status for i in ids)


def _wait(
    pool: Pool, queue: Queue, predicate: Callable[[], object], message: str, timeout: float = 20.0
) -> None:
    """:func:`wait_until`, failing with the jobs' states and the pool's log."""
    try:
        wait_until(predicate, timeout=timeout, message=message)
    except AssertionError as exc:
        jobs = {j.job_id: (j.status.name, j.attempt, j.error) for j in queue.list_jobs(limit=100)}
        raise AssertionError(f"{exc}\njobs: {jobs}\npool log:\n{pool.log}") from None


# -- G2 ------------------------------------------------------------------------------------


@pytest.mark.slow  # RELIABILITY.md's tier for G2; the start-up and option tests run always
@pytest.mark.timeout(60)
def test_g2_a_handler_past_the_memory_limit_fails_its_job_and_nothing_else(
    tmp_path: Path, backend: str, queue: Queue
) -> None:
    with Pool(tmp_path, backend, "--processes", "2", "--concurrency", "2", "--grace", "5", app=APP) as pool:
        children = set(pool.wait_full(2))
        # Each child caps itself, soft and hard, once it has built the app (its pid file
        # is written while it does), before it starts its worker threads.
        cap = LIMIT_MB << 20
        _wait(pool, queue, lambda: all(_address_space_limit(p) == f"{cap} {cap}" for p in children),
              "both children capped", timeout=10.0)
        parent_rss = rss_bytes(pool.proc.pid)
        # The parent keeps the limit it was started with (this process's).
        own = " ".join("unlimited" if v == resource.RLIM_INFINITY else str(v)
                       for v in resource.getrlimit(resource.RLIMIT_AS))
        assert _address_space_limit(pool.proc.pid) == own

        # Quick jobs keep both children busy; the hog comes while they run.
        during = enqueue_work(queue, [{"s": 0.3}] * 10, prefix="during")
        _wait(pool, queue, lambda: _open_in(tmp_path) == children, "both children busy")
        [hog] = enqueue_work(queue, [{"mode": "hog"}], prefix="hog", priority=10, max_retries=1)
        _wait(pool, queue, lambda: queue.get_job(hog).status is JobStatus.DEAD, "hog dead")
        hog_starts = [e for e in _entries(tmp_path) if e.job_id == hog]
        after = enqueue_work(queue, [{"s": 0.2}] * 8, prefix="after")
        _wait(pool, queue, lambda: _all_in(queue, [*during, *after], JobStatus.COMPLETED),
              "the other jobs completed")

        # A failure like any other: one retry, then the dead-letter queue; no worker lost.
        dead = queue.get_job(hog)
        assert dead.error == "MemoryError"
        assert "bytearray(HOG_BYTES)" in (dead.traceback or "")
        assert (dead.retry_count, dead.lost_count) == (1, 0)
        assert [(e.kind, e.attempt) for e in hog_starts] == [("start", 1), ("start", 2)]
        assert {e.pid for e in hog_starts} <= children
        # The hog ran while other jobs ran, and its process served jobs afterwards.
        others = [e for e in _entries(tmp_path) if e.job_id != hog]
        spans = {(e.job_id, e.attempt): e.t for e in others if e.kind == "start"}
        ends = {(e.job_id, e.attempt): e.t for e in others if e.kind == "end"}
        assert any(spans[k] <= h.t <= ends[k] for h in hog_starts for k in spans), "no overlap"
        last_hog = max(e.t for e in hog_starts)
        for pid in {e.pid for e in hog_starts}:
            assert any(e.pid == pid and e.kind == "end" and e.t > last_hog for e in others), pid
        assert {queue.get_job(i).result for i in [*during, *after]} <= children

        # Same children (none died or was replaced), the parent untouched.
        assert set(pool.worker_pids()) == children
        assert alive(pool.proc.pid)
        assert rss_bytes(pool.proc.pid) - parent_rss < 16 << 20
        pool.proc.send_signal(signal.SIGTERM)
        assert pool.proc.wait(30.0) == 0, pool.log
    assert "0 restarts" in pool.log


# -- caps too low to start, and the CLI option ---------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.parametrize(
    ("limit_mb", "why"),
    [
        # Less than the interpreter and typedq map before any thread starts (about 50 MiB):
        # refused before the worker threads start.
        (8, "is below the"),
        # More than that, but too little for the stacks of the worker threads (8 MiB each):
        # refused as they start, at once, not after 3 children failed the same way.
        (80, "is too low for a worker process to start its worker threads"),
    ],
)
def test_a_limit_too_low_for_a_child_to_start_stops_the_pool_with_the_field(
    backend: str, limit_mb: int, why: str
) -> None:
    with pytest.raises(ConfigError) as info:
        run_worker_processes(
            None, config={"backend": backend}, processes=2, memory_limit_mb=limit_mb, handle_signals=False
        )
    assert info.value.field == "memory_limit_mb"
    assert f"memory_limit_mb={limit_mb} " in str(info.value)
    assert why in str(info.value)


@pytest.mark.timeout(30)
def test_the_cli_option_reaches_the_worker_processes(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # A cap no child can start under: the child's refusal shows the option got there.
    code = main(["worker", "--memory-limit", "8", "--processes", "1", "--backend", backend])
    assert code == 2
    assert "Error: memory_limit_mb=8 is below the" in capsys.readouterr().err


def test_the_cli_option_is_refused_without_worker_processes(
    backend: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["worker", "--memory-limit", "512", "--processes", "0", "--backend", backend])
    assert code == 2
    assert "--memory-limit caps worker processes" in capsys.readouterr().err
