"""The ``processes`` setting: how many worker processes ``run_worker_processes`` starts when
it is not told (RELIABILITY.md A6, H8). Real spawned processes drain a SQLite file. Also
the validation of ``memory_limit_mb``, the cap of each worker process (what a capped
process does: ``tests/reliability/test_process_memory_limit.py``).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.helpers import interrupt_when

from typedq._identity import parse_worker_id
from typedq.errors import ConfigError
from typedq.job import JobStatus
from typedq.manager import JobQueueManager
from typedq.process import PoolReport, apply_memory_limit, run_worker_processes
from typedq.shell import register_shell_jobs


@pytest.fixture
def backend(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
def producer(backend: str) -> Iterator[JobQueueManager]:
    manager = JobQueueManager({"backend": backend})
    register_shell_jobs(manager)
    yield manager
    manager.close(graceful=False)


def _run_until(
    done: Callable[[], bool], start: Callable[[], PoolReport], timeout: float = 20.0
) -> PoolReport:
    """Run the pool in this (main) thread; SIGINT it once ``done()`` holds."""
    with interrupt_when(done, timeout):
        report = start()
    assert done(), "the pool stopped before the jobs were done"
    return report


def _worker_pids(manager: JobQueueManager, job_ids: list[str]) -> set[int]:
    owners = [parse_worker_id(manager.get_job(i).worker_id or "") for i in job_ids]
    return {owner[1] for owner in owners if owner is not None}


@pytest.mark.timeout(60)
def test_the_configs_processes_setting_is_used(backend: str, producer: JobQueueManager) -> None:
    ids = [producer.submit("shell", {"command": "true"}, job_id=f"j{n}") for n in range(6)]
    report = _run_until(
        lambda: all(producer.get_job(i).status is JobStatus.COMPLETED for i in ids),
        lambda: run_worker_processes(None, config={"backend": backend, "processes": 2}, concurrency=2),
    )
    assert (report.exit_code, report.completed, report.restarts) == (0, 6, 0)
    assert os.getpid() not in _worker_pids(producer, ids)


@pytest.mark.timeout(60)
def test_the_apps_processes_setting_is_used(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the app module is imported from the working directory
    (tmp_path / "settingapp.py").write_text(
        "from typedq.manager import JobQueueManager\n"
        f"manager = JobQueueManager({{'backend': {backend!r}, 'processes': 2}})\n"
        "manager.register_handler('double', lambda p: p['n'] * 2)\n"
    )
    producer = JobQueueManager({"backend": backend})
    try:
        producer.register_handler("double", lambda p: None)
        ids = [producer.submit("double", {"n": n}, job_id=f"d{n}") for n in range(4)]
        report = _run_until(
            lambda: all(producer.get_job(i).status is JobStatus.COMPLETED for i in ids),
            lambda: run_worker_processes("settingapp:manager", concurrency=1),
        )
        assert (report.exit_code, report.completed) == (0, 4)
        assert [producer.get_job(i).result for i in ids] == [0, 2, 4, 6]
        assert os.getpid() not in _worker_pids(producer, ids)
    finally:
        producer.close(graceful=False)
        sys.modules.pop("settingapp", None)  # loaded here to read its setting


def test_the_setting_is_validated_with_the_field_and_the_range() -> None:
    with pytest.raises(ConfigError) as info:
        JobQueueManager({"processes": -1})
    assert (info.value.field, info.value.allowed) == ("processes", "an int >= 0")
    with pytest.raises(ConfigError) as info:
        JobQueueManager({"processes": 1.5})
    assert info.value.field == "processes"
    with pytest.raises(ConfigError) as info:
        JobQueueManager({"proceses": 2})
    assert "did you mean 'processes'?" in str(info.value)
    manager = JobQueueManager({"processes": 4})
    assert manager.config["processes"] == 4  # read by run_worker_processes; start_workers runs threads
    manager.close()


def test_the_memory_limit_setting_is_validated_with_the_field_and_the_range() -> None:
    for bad in (0, -5, 1.5, "256", True):
        with pytest.raises(ConfigError) as info:
            JobQueueManager({"memory_limit_mb": bad})
        assert (info.value.field, info.value.allowed) == ("memory_limit_mb", "None or an int >= 1")
        assert "memory_limit_mb" in str(info.value)
    with pytest.raises(ConfigError) as typo:
        JobQueueManager({"memory_limit": 256})
    assert "did you mean 'memory_limit_mb'?" in str(typo.value)
    for good in (None, 1024):
        manager = JobQueueManager({"memory_limit_mb": good})
        assert manager.config["memory_limit_mb"] == good
        manager.close()
    with JobQueueManager() as manager:
        assert manager.config["memory_limit_mb"] is None  # no limit by default


def test_a_bad_memory_limit_is_refused_before_any_process_starts(backend: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        run_worker_processes(None, config={"backend": backend}, processes=1, memory_limit_mb=0)
    assert info.value.field == "memory_limit_mb"
    with pytest.raises(ConfigError) as setting:
        run_worker_processes(None, config={"backend": backend, "processes": 1, "memory_limit_mb": 0.5})
    assert setting.value.field == "memory_limit_mb"
    assert time.monotonic() - started < 1.0
    with pytest.raises(ConfigError) as direct:
        apply_memory_limit(-1)
    assert direct.value.field == "memory_limit_mb"


def test_no_processes_to_run_is_refused_before_any_starts(backend: str) -> None:
    started = time.monotonic()
    with pytest.raises(ConfigError) as info:
        run_worker_processes(None, config={"backend": backend})  # the setting's default, 0
    assert info.value.field == "processes"
    assert "processes=0" in str(info.value)
    with pytest.raises(ConfigError) as memory:  # A6: memory:// jobs cannot cross processes
        run_worker_processes(None, config={"backend": "memory://", "processes": 2})
    assert memory.value.field == "backend"
    assert "cannot be used with worker processes" in str(memory.value)
    assert time.monotonic() - started < 1.0  # refused without starting a process
