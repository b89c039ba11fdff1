"""Process workers running async handlers (``typedq worker --processes`` /
``run_worker_processes``): each process runs one event loop with ``concurrency`` jobs at
once. Real spawned processes drain a SQLite file."""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.helpers import interrupt_when

from typedq import AsyncWorker, Worker
from typedq._serve import StopRequest, serve
from typedq.errors import ConfigError
from typedq.job import JobStatus
from typedq.manager import JobQueueManager
from typedq.process import run_worker_processes

APP = """
import asyncio, os, threading, time
from typedq.manager import JobQueueManager

manager = JobQueueManager({{"backend": {backend!r}}})
started = []

async def gather(payload):
    # Every handler waits until all {n} have started: only {n} at once can finish.
    started.append(payload["i"])
    deadline = time.monotonic() + 20
    while len(started) < {n}:
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {{len(started)}} handlers ran at once")
        await asyncio.sleep(0.005)
    return [os.getpid(), threading.get_ident(), id(asyncio.get_running_loop())]

manager.register_handler("gather", gather)
"""


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def app(tmp_path: Path, backend: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.chdir(tmp_path)  # the app module is imported from the working directory
    (tmp_path / "asyncapp.py").write_text(APP.format(backend=backend, n=6))
    yield "asyncapp:manager"
    sys.modules.pop("asyncapp", None)


@pytest.mark.timeout(60)
def test_one_process_runs_concurrency_async_jobs_on_one_loop(app: str, backend: str) -> None:
    producer = JobQueueManager({"backend": backend})
    try:
        producer.register_handler("gather", lambda p: None)
        ids = [producer.submit("gather", {"i": i}) for i in range(6)]

        def done() -> bool:
            return all(producer.get_job(i).status is JobStatus.COMPLETED for i in ids)

        with interrupt_when(done, 40):
            report = run_worker_processes(app, processes=1, concurrency=6)
        assert done(), [producer.get_job(i).error for i in ids]
        assert (report.exit_code, report.completed) == (0, 6)
        owners = {tuple(producer.get_job(i).result) for i in ids}
        assert len(owners) == 1  # one process, one worker thread, one event loop
        (pid, _, _), = owners
        assert pid != os.getpid()
    finally:
        producer.close(graceful=False)


def test_serve_with_worker_class_async_runs_one_loop_per_queue() -> None:
    """``typedq worker --worker-class async -c 4``: one async worker per queue, 4 jobs at
    once, even for plain handlers (they run in its thread pool)."""
    manager = JobQueueManager({"scheduler": False})
    stop = StopRequest()
    started: list[Worker] = []
    try:
        manager.register_handler("plain", lambda p: p["n"] + 1)
        ids = [manager.submit("plain", {"n": n}) for n in range(5)]

        def stop_when_done() -> None:
            manager.wait_for_completion(ids, timeout=20)
            stop.graceful()

        threading.Thread(target=stop_when_done, daemon=True).start()
        report = serve(
            manager, concurrency=4, worker_class="async", stop=stop, grace_s=5,
            on_started=started.extend, announce=False,
        )
        assert [type(w) for w in started] == [AsyncWorker]
        assert isinstance(started[0], AsyncWorker)
        assert started[0].concurrency == 4
        assert report.completed == 5
        assert [manager.get_job(i).result for i in ids] == [1, 2, 3, 4, 5]
    finally:
        manager.close()


def test_run_worker_processes_refuses_an_unknown_worker_class() -> None:
    with pytest.raises(ConfigError) as info:
        run_worker_processes(None, processes=1, config={"backend": "sqlite:///x.db"}, worker_class="green")
    assert info.value.field == "worker_class"
