"""Cancelling a RUNNING shell job stops its command and ends the job CANCELLED.

The worker owns a shell job's process: once ``cancel`` flags the running job, the handler
sees ``cancel_requested`` (read every 0.25 s while the command runs), sends SIGTERM to
the command's process group, SIGKILL after the grace if the group is still there, and
the worker records CANCELLED: not failed, not retried, dependents FAILED,
``on_job_cancelled`` called. Real commands, memory and SQLite backends.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_until

from typedq.events import EventHandler
from typedq.job import Job, JobStatus
from typedq.manager import JobQueueManager
from typedq.shell import SHELL_JOB_TYPE, register_shell_jobs, shell_payload

GRACE_S = 1.0


class _Cancelled(EventHandler):
    def __init__(self) -> None:
        self.ids: list[str] = []

    def on_job_cancelled(self, job: Job) -> None:
        self.ids.append(job.job_id)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` runs (zombies, dead but unreaped, do not)."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_bytes().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != b"Z":
            return True
    return False


@pytest.fixture(params=["memory", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def events() -> _Cancelled:
    return _Cancelled()


@pytest.fixture
def manager(backend: str, events: _Cancelled) -> Iterator[JobQueueManager]:
    m = JobQueueManager({"backend": backend, "poll_interval": 0.01, "base_delay": 0.01}, event_handler=events)
    register_shell_jobs(m, cancel_grace_s=GRACE_S)
    yield m
    m.close(timeout=5.0)


def _start_and_cancel(manager: JobQueueManager, command: str, pid_file: Path) -> tuple[str, str, int, float]:
    """Run ``command`` (which writes its pid to ``pid_file``), then cancel it while it runs."""
    job_id = manager.submit(SHELL_JOB_TYPE, shell_payload(command, shell=True), max_retries=3)
    child = manager.submit(SHELL_JOB_TYPE, shell_payload("true"), depends_on=[job_id])
    manager.start_workers(count=1)
    wait_until(lambda: pid_file.exists() and pid_file.read_text().strip(), timeout=10.0, message="running")
    pgid = int(pid_file.read_text())
    assert manager.get_job(job_id).status is JobStatus.RUNNING
    assert _group_alive(pgid)
    assert manager.cancel(job_id) is False  # running: only asked to stop
    return job_id, child, pgid, time.monotonic()


def _assert_cancelled(
    manager: JobQueueManager, events: _Cancelled, job_id: str, child: str, pgid: int
) -> None:
    job = manager.get_job(job_id)
    assert job.status is JobStatus.CANCELLED
    assert (job.retry_count, job.attempt) == (0, 1)  # not a failure, not retried
    assert not _group_alive(pgid)
    assert manager.wait_for_completion([child], timeout=5.0)
    assert manager.get_job(child).status is JobStatus.FAILED
    assert events.ids == [job_id]


def test_cancelling_a_running_shell_job_stops_it(
    manager: JobQueueManager, events: _Cancelled, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    job_id, child, pgid, asked = _start_and_cancel(manager, f"echo $$ > {pid_file}; exec sleep 30", pid_file)
    wait_until(
        lambda: manager.get_job(job_id).status is JobStatus.CANCELLED, timeout=GRACE_S + 1.0,
        message="CANCELLED within grace + 1 s",
    )
    assert time.monotonic() - asked <= GRACE_S + 1.0
    _assert_cancelled(manager, events, job_id, child, pgid)
    assert manager.get_stats()["total_failed"] == 0


def test_a_command_ignoring_sigterm_is_killed_after_the_grace(
    manager: JobQueueManager, events: _Cancelled, tmp_path: Path
) -> None:
    pid_file = tmp_path / "pid"
    command = f"trap '' TERM; echo $$ > {pid_file}; sleep 30"
    job_id, child, pgid, asked = _start_and_cancel(manager, command, pid_file)
    wait_until(
        lambda: manager.get_job(job_id).status is JobStatus.CANCELLED, timeout=GRACE_S + 1.0,
        message="CANCELLED within grace + 1 s",
    )
    took = time.monotonic() - asked
    assert GRACE_S <= took <= GRACE_S + 1.0, took  # SIGTERM was ignored: SIGKILL after the grace
    _assert_cancelled(manager, events, job_id, child, pgid)
