"""The manager's unique jobs (``submit(unique_key=...)``, ``JobType(unique=...)``), per-job
and per-type retry policies, and failure callbacks in thread and process workers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from tests.helpers import wait_until

from typedq import DuplicateJobError, JobQueueManager, JobStatus, JobType, PermanentError, RetryPolicy
from typedq.backends._unique import UNIQUE_META
from typedq.clock import FakeClock
from typedq.errors import ConfigError, InvalidJobError
from typedq.job import Job
from typedq.retry import RETRY_META

REPO = Path(__file__).resolve().parents[2]


@contextmanager
def idle(config: dict[str, Any] | None = None, **kwargs: Any) -> Iterator[JobQueueManager]:
    """A manager that starts no workers (``with JobQueueManager()`` starts them)."""
    manager = JobQueueManager(config, **kwargs)
    try:
        yield manager
    finally:
        manager.close()


class Fetch(BaseModel):
    url: str
    depth: int = 1


def _noop(payload: Any) -> None:
    return None


def test_submit_with_a_held_key_returns_the_holders_id_or_raises() -> None:
    with idle() as manager:
        manager.register_handler("fetch", _noop)
        first = manager.submit("fetch", {"u": 1}, unique_key="fetch:1")
        assert manager.submit("fetch", {"u": 1}, unique_key="fetch:1") == first
        with pytest.raises(DuplicateJobError) as info:
            manager.submit("fetch", {"u": 1}, unique_key="fetch:1", on_conflict="raise")
        assert (info.value.existing_id, info.value.unique_key) == (first, "fetch:1")
        assert manager.get_stats()["total_submitted"] == 1
        stored = manager.get_job(first).metadata[UNIQUE_META]
        assert stored == {"key": "fetch:1", "for_s": None, "states": ["PENDING", "RUNNING"]}
        other = manager.submit("fetch", {}, unique_key="fetch:2", unique_for=timedelta(minutes=5),
                               unique_states=["PENDING"])
        assert manager.get_job(other).metadata[UNIQUE_META] == {
            "key": "fetch:2", "for_s": 300.0, "states": ["PENDING"],
        }


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"unique_key": "k", "on_conflict": "ignore"}, "on_conflict"),
        ({"unique_key": ""}, "unique_key"),
        ({"unique_key": "k", "unique_for": 0}, "unique_for"),
        ({"unique_key": "k", "unique_states": ["DONE"]}, "unique_states"),
        ({"unique_for": 5}, "unique_for"),
    ],
)
def test_bad_unique_options_name_their_field(fields: dict[str, Any], field: str) -> None:
    with idle() as manager:
        manager.register_handler("t", _noop)
        with pytest.raises(InvalidJobError) as info:
            manager.submit("t", {}, **fields)
        assert info.value.field == field
        assert manager.get_queue("default").size == 0


def test_a_job_types_unique_fields_or_function_make_the_key() -> None:
    by_url = JobType("fetch", Fetch, unique_fields=("url",), unique_for=60)
    by_fn = JobType("crawl", Fetch, unique=lambda p: p.url.lower())
    with idle() as manager:
        manager.register(by_url, lambda p: None)
        manager.register(by_fn, lambda p: None)
        a = manager.enqueue(by_url, Fetch(url="https://a", depth=1))
        assert manager.enqueue(by_url, Fetch(url="https://a", depth=2)).job_id == a.job_id
        assert manager.enqueue(by_url, Fetch(url="https://b")).job_id != a.job_id
        assert a.job().metadata[UNIQUE_META]["key"] == 'fetch:{"url":"https://a"}'
        assert a.job().metadata[UNIQUE_META]["for_s"] == 60.0
        c = manager.enqueue(by_fn, Fetch(url="https://C"))
        assert manager.enqueue(by_fn, Fetch(url="https://c")).job_id == c.job_id
        assert c.job().metadata[UNIQUE_META]["key"] == "crawl:https://c"
        # An explicit key wins over the type's.
        assert manager.enqueue(by_fn, Fetch(url="https://c"), unique_key="mine").job_id != c.job_id
    with pytest.raises(ConfigError) as info:
        JobType("bad", Fetch, unique_fields=("nope",))
    assert info.value.field == "unique_fields"
    with pytest.raises(ConfigError) as info:
        JobType("bad", Fetch, unique_fields=("url",), unique_states=["LATER"])
    assert info.value.field == "unique_states"


def test_a_policys_max_retries_is_the_default_of_its_jobs() -> None:
    with idle() as manager:
        manager.register_handler("t", _noop, retry=RetryPolicy.fixed(5, max_retries=7))
        typed = manager.submit("t", {})
        assert manager.get_job(typed).max_retries == 7
        own = manager.submit("t", {}, retry=RetryPolicy(delays=[1, 2], max_retries=2))
        job = manager.get_job(own)
        assert (job.max_retries, job.metadata[RETRY_META]["delays"]) == (2, [1.0, 2.0])
        assert manager.get_job(manager.submit("t", {}, max_retries=1)).max_retries == 1
        with pytest.raises(ConfigError) as info:
            manager.submit("t", {}, retry=RetryPolicy.custom(lambda n, e: 1))
        assert info.value.field == "retry"


def test_on_failure_and_on_dead_run_once_in_a_thread_worker() -> None:
    seen: list[tuple[str, str, str]] = []

    def on_dead(job: Job, error: BaseException) -> None:
        seen.append(("dead", job.job_id, type(error).__name__))

    def on_failure(job: Job, error: BaseException) -> None:
        seen.append(("type", job.job_id, str(error)))

    def charge(payload: Any) -> None:
        raise PermanentError("card declined")

    config = {"poll_interval": 0.01, "base_delay": 0.0}
    with idle(config, on_dead=on_dead) as manager:
        manager.register_handler("charge", charge, on_failure=on_failure)
        job_id = manager.submit("charge", {}, max_retries=5)
        manager.start_workers()
        assert manager.wait_for_completion([job_id], timeout=10)
        assert manager.get_job(job_id).status is JobStatus.DEAD
        wait_until(lambda: len(seen) == 2)
    assert sorted(seen) == [("dead", job_id, "PermanentError"), ("type", job_id, "card declined")]


# -- process workers -----------------------------------------------------------------------


def make_failure_app() -> JobQueueManager:
    """The app of the process-worker test: its callbacks append to files in TYPEDQ_TEST_DIR."""
    folder = Path(os.environ["TYPEDQ_TEST_DIR"])

    def record(name: str) -> Any:
        def callback(job: Job, error: BaseException) -> None:
            with open(folder / name, "a") as f:
                f.write(f"{job.job_id} {os.getpid()} {type(error).__name__}\n")
            if name == "on_failure":
                raise RuntimeError("alerting is down")  # logged; changes nothing

        return callback

    def flaky(payload: Any) -> None:
        raise ValueError("always")

    manager = JobQueueManager(
        {"backend": os.environ["TYPEDQ_TEST_BACKEND"], "poll_interval": 0.02, "base_delay": 0.01},
        on_dead=record("on_dead"),
    )
    manager.register_handler("flaky", flaky, retry=RetryPolicy.fixed(0.01), on_failure=record("on_failure"))
    return manager


@pytest.mark.slow  # two worker processes: seconds; the callbacks' logic is the thread worker's
@pytest.mark.timeout(60)
def test_callbacks_run_in_process_workers(tmp_path: Path) -> None:
    backend = f"sqlite:///{tmp_path / 'jobs.db'}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TYPEDQ_")}
    env.update(TYPEDQ_TEST_DIR=str(tmp_path), TYPEDQ_TEST_BACKEND=backend)
    with idle({"backend": backend}) as producer:
        producer.register_handler("flaky", _noop)
        ids = [producer.submit("flaky", {"n": n}, max_retries=2) for n in range(4)]
        app = "tests.integration.test_unique_and_failures:make_failure_app"
        log = tmp_path / "pool.log"
        with open(log, "wb") as out:
            pool = subprocess.Popen(
                [sys.executable, "-m", "typedq", "worker", "--app", app, "--processes", "2"],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            assert producer.wait_for_completion(ids, timeout=40), log.read_text()
            wait_until(
                lambda: all(
                    (tmp_path / name).exists() and len((tmp_path / name).read_text().splitlines()) == 4
                    for name in ("on_dead", "on_failure")
                ),
                timeout=20,
            )
        finally:
            pool.send_signal(signal.SIGTERM)
            try:
                pool.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(pool.pid, signal.SIGKILL)
                pool.wait()
        for job_id in ids:
            job = producer.get_job(job_id)
            assert (job.status, job.retry_count) == (JobStatus.DEAD, 2)
    for name in ("on_dead", "on_failure"):
        lines = [line.split() for line in (tmp_path / name).read_text().splitlines()]
        assert sorted(line[0] for line in lines) == sorted(ids)  # once per job
        assert {line[2] for line in lines} == {"ValueError"}
        assert os.getpid() not in {int(line[1]) for line in lines}  # in the worker processes
    assert "alerting is down" in log.read_text()


def test_a_job_the_reaper_buries_calls_the_callbacks_once() -> None:
    """A worker lost ``max_lost`` times: the reaper's process calls on_failure and on_dead
    with a JobFailedError naming the loss."""
    clock = FakeClock()
    seen: list[tuple[str, str, str]] = []
    manager = JobQueueManager(
        {"max_lost": 1, "lease_s": 5.0, "heartbeat_s": 1.0},
        clock=clock, on_dead=lambda job, error: seen.append(("dead", job.job_id, str(error))),
    )
    try:
        manager.register_handler(
            "t", _noop, on_failure=lambda job, error: seen.append(("type", job.job_id, type(error).__name__))
        )
        job_id = manager.submit("t", {})
        queue = manager.get_queue("default")
        assert queue.claim("a-worker-that-dies", lease_s=5.0) is not None
        clock.advance(6)
        assert manager._reaper.sweep() == 1
        assert manager.get_job(job_id).status is JobStatus.DEAD
    finally:
        manager.close()
    assert [kind for kind, _, _ in sorted(seen)] == ["dead", "type"]
    assert ("type", job_id, "JobFailedError") in seen
    assert "worker lost" in next(text for kind, _, text in seen if kind == "dead")


@pytest.mark.parametrize(("rest", "swept_again"), [(None, 0), (0, 1)])
def test_the_managers_reaper_rests_between_unique_sweeps_as_configured(
    rest: float | None, swept_again: int
) -> None:
    """``unique_sweep_rest_s`` reaches the manager's reaper: by default it rests a minute
    after a whole round of a queue's released keys; with 0 it sweeps on every pass."""
    config = {} if rest is None else {"unique_sweep_rest_s": rest}
    manager = JobQueueManager(config)
    try:
        manager.register_handler("t", _noop)
        for i in range(3):
            manager.submit("t", {}, job_id=f"j{i}", unique_key=f"k{i}")
        assert manager.cancel("j0")
        assert manager._reaper.sweep() == 0  # nothing reclaimed; the sweep is counted apart
        assert manager._reaper.unique_swept_total == 1
        assert manager.cancel("j1")
        manager._reaper.sweep()
        assert manager._reaper.unique_swept_total == 1 + swept_again
    finally:
        manager.close()
