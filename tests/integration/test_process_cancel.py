"""Forced cancel of a running job in a worker process: the handler ignores the request,
so after ``cancel_grace_s`` its worker records the job CANCELLED (dependents FAILED) and
the process is replaced by a fresh one; the pool goes on running jobs. A real process
tree (``python -m typedq worker``) on a SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import wait_until

from typedq import JobContext, JobQueueManager, JobStatus

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
APP = "tests.integration.test_process_cancel:make_app"
CONFIG = {"lease_s": 1.0, "heartbeat_s": 0.2, "reaper_s": 0.1, "cancel_grace_s": 0.5, "poll_interval": 0.02}


def make_app() -> JobQueueManager:
    """The app every worker process builds: ``stubborn`` ignores cancellation."""
    folder = Path(os.environ["TYPEDQ_TEST_DIR"])
    manager = JobQueueManager({**CONFIG, "backend": os.environ["TYPEDQ_TEST_BACKEND"]})

    def stubborn(payload: dict[str, object], ctx: JobContext) -> str:
        (folder / f"running-{os.getpid()}").touch()
        time.sleep(1e9)
        return "never"

    manager.register_handler("stubborn", stubborn)
    manager.register_handler("quick", lambda payload: os.getpid())
    return manager


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPEDQ_")}
    env.update(TYPEDQ_TEST_DIR=str(tmp_path), TYPEDQ_TEST_BACKEND=f"sqlite:///{tmp_path / 'jobs.db'}")
    with open(tmp_path / "pool.log", "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "typedq", "worker", "--app", APP, "-P", "1", "--concurrency", "1"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    yield proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_forced_cancel_replaces_the_worker_process(tmp_path: Path, pool: subprocess.Popen[bytes]) -> None:
    with JobQueueManager({**CONFIG, "backend": f"sqlite:///{tmp_path / 'jobs.db'}"}) as manager:
        job_id = manager.submit("stubborn", {}, queue="default")
        child = manager.submit("quick", {}, depends_on=[job_id], queue="default")
        wait_until(lambda: list(tmp_path.glob("running-*")), timeout=30, message="the job runs")
        (marker,) = tmp_path.glob("running-*")
        pid = int(marker.name.split("-")[1])
        assert manager.cancel(job_id) is False  # running: asked to stop
        wait_until(lambda: manager.get_job(job_id).status is JobStatus.CANCELLED, timeout=10)
        assert manager.get_job(child).status is JobStatus.FAILED
        wait_until(lambda: not _alive(pid), timeout=10, message="the process running it exits")
        after = manager.submit("quick", {}, queue="default")
        assert manager.wait_for_completion([after], timeout=30)
        done = manager.get_job(after)
        assert done.status is JobStatus.COMPLETED
        assert done.result != pid  # a fresh process
        assert manager.get_job(job_id).status is JobStatus.CANCELLED
    pool.send_signal(signal.SIGTERM)
    assert pool.wait(30) == 0, (tmp_path / "pool.log").read_text()
    assert "cancel requested, still running" in (tmp_path / "pool.log").read_text()
