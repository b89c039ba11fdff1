"""``typedq workers``, ``typedq worker stop``, ``typedq retry``, replay with dependents and
what ``typedq status`` says of jobs no live worker handles (the worker registry)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from tests.helpers import wait_until
from tests.integration import test_cli
from tests.integration.test_cli import ON_EVERY_STORE, Run, _json, _make_dead

from typedq.job import JobStatus
from typedq.manager import JobQueueManager

backend = test_cli.backend
run = test_cli.run
manager = test_cli.manager

ROOT = Path(__file__).resolve().parents[2]

#: The worker registry and these commands work alike on every store the CLI is used with.
pytestmark = ON_EVERY_STORE


def test_workers_lists_idle_workers_of_this_process_and_their_types(
    run: Run, manager: JobQueueManager
) -> None:
    manager.register_handler("email", lambda p: None)
    manager.start_workers(count=2)
    try:
        wait_until(lambda: len(manager.registered_workers()) == 2, timeout=10, message="registered")
        listed = _json(run("workers", "--json"))
        assert len(listed) == 2
        for entry in listed:
            assert entry["alive"] is True
            assert entry["pid"] == os.getpid()
            assert entry["queue"] == "default"
            assert entry["job_types"] == ["email"]
            assert entry["current"] == []
        assert "email" in run("workers").stdout
    finally:
        manager.stop_workers()
    assert _json(run("workers", "--json")) == []  # a graceful stop unregisters


def test_status_says_how_many_jobs_wait_for_a_type_no_live_worker_handles(
    run: Run, manager: JobQueueManager
) -> None:
    manager.register_handler("email", lambda p: None)
    manager.submit("resize", {}, job_id="r1", queue="default")
    manager.submit("resize", {}, job_id="r2", queue="default")
    manager.start_workers(count=1)
    try:
        wait_until(lambda: len(manager.registered_workers()) == 1, timeout=10, message="registered")
        report = _json(run("status", "--json"))["registry"]
        assert report["unhandled"] == {"default": {"resize": 2}}
        text = run("status").stdout
        assert "waiting for a job type no live worker of 'default' handles: resize (2)" in text
        assert "workers: 1 live, 0 dead" in text
    finally:
        manager.stop_workers()
    assert manager.get_job("r1").status is JobStatus.PENDING  # never buried


def test_retry_runs_a_failed_job_and_its_dependents_again(run: Run, manager: JobQueueManager) -> None:
    _make_dead(manager, "parent")
    manager.submit("anything", {}, job_id="child", depends_on=["parent"], queue="default")
    assert manager.get_job("child").status is JobStatus.FAILED
    assert _json(run("retry", "child", "--without-dependents", "--json")) == {"child": ["child"]}
    assert manager.get_job("child").status is JobStatus.FAILED  # its parent is still DEAD
    result = run("retry", "parent")
    assert result.exit_code == 0, result.output
    assert "parent: PENDING again, with 1 dependent(s)" in result.stdout
    assert manager.get_job("parent").status is JobStatus.PENDING
    assert manager.get_job("child").status is JobStatus.PENDING


def test_retry_refuses_a_job_that_did_not_end_badly(run: Run, manager: JobQueueManager) -> None:
    manager.submit("anything", {}, job_id="waiting", queue="default")
    result = run("retry", "waiting")
    assert result.exit_code == 2
    assert "PENDING" in result.output


def test_dlq_replay_reopens_the_dependents_by_default_and_says_how_many(
    run: Run, manager: JobQueueManager
) -> None:
    _make_dead(manager, "d1")
    manager.submit("anything", {}, job_id="c1", depends_on=["d1"], queue="default")
    manager.submit("anything", {}, job_id="c2", depends_on=["c1"], queue="default")
    result = run("dlq", "replay", "d1")
    assert result.exit_code == 0, result.output
    assert "and 2 dependent job(s) that had failed with them, PENDING again" in result.stdout
    assert {manager.get_job(j).status for j in ("d1", "c1", "c2")} == {JobStatus.PENDING}


@pytest.mark.timeout(60)
def test_worker_stop_stops_the_workers_of_this_backend_gracefully(backend: str, tmp_path: Path) -> None:
    env = {**os.environ, "TYPEDQ_BACKEND": backend, "PYTHONPATH": str(ROOT / "src")}
    env.pop("TYPEDQ_CONFIG", None)
    typedq = [sys.executable, "-m", "typedq"]
    JobQueueManager({"backend": backend}).close()
    worker = subprocess.Popen(
        [*typedq, "worker", "--processes", "2"], cwd=tmp_path, env=env,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    watcher = JobQueueManager({"backend": backend})
    try:
        wait_until(lambda: sum(w.alive(w.last_seen) for w in watcher.registered_workers()) >= 2,
                   timeout=30, message="both worker processes registered")
        entries = watcher.registered_workers()
        assert {w.stop_pid for w in entries} == {worker.pid}  # the pool, not its children
        stopped = subprocess.run(
            [*typedq, "worker", "stop", "--timeout", "30"], cwd=tmp_path, env=env,
            capture_output=True, text=True, timeout=45, check=False,
        )
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert "sent SIGTERM to 1 process(es) (" in stopped.stdout
        assert stopped.stdout.strip().endswith(f"): {worker.pid}")
        assert worker.wait(timeout=30) == 0
        assert watcher.registered_workers() == []
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        if worker.stderr is not None:
            worker.stderr.close()
        watcher.close(graceful=False)
