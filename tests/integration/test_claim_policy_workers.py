"""Claim policies with real worker threads, configured through the manager: a job type's
concurrency limit holds across every worker and is reached; weighted fairness lets BATCH
jobs run while CRITICAL ones keep coming; level names in the manager's config and API.
And a worker never claims in a hot loop while jobs are ready that it cannot take: of
types it does not handle, or held back by a limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.conftest import redis_test_url
from tests.helpers import wait_until

from typedq import ClaimPolicy, Job, JobQueueManager, JobStatus, Priority
from typedq._serve import queue_weights
from typedq.backends import open_queue
from typedq.errors import ConfigError, InvalidJobError
from typedq.worker import Worker

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each backend: memory, a SQLite file, the Redis server under a prefix of its own."""
    if request.param != "redis":
        yield "memory://" if request.param == "memory" else f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    with redis_test_url() as url:
        yield url


@pytest.fixture
def managers() -> Iterator[list[JobQueueManager]]:
    made: list[JobQueueManager] = []
    yield made
    for manager in made:
        manager.close(timeout=10.0)


def _started(
    managers: list[JobQueueManager], backend: str, workers: int, policy: dict[str, Any]
) -> JobQueueManager:
    """A manager on ``backend`` whose ``workers`` workers claim one job at a time under
    ``policy`` (closed at teardown); its handlers and jobs are the caller's."""
    config = {"max_workers": workers, "batch_size": 1, "poll_interval": 0.01, "claim_policy": policy}
    manager = JobQueueManager({"backend": backend, **config})
    managers.append(manager)
    return manager


@pytest.mark.parametrize(
    ("policy", "cap"),
    [({"limits": {"payments": {"max_concurrency": 2}}}, 2), ({"max_concurrency": 3}, 3)],
    ids=["type-limit", "queue-limit"],
)
def test_a_concurrency_limit_holds_across_workers_and_is_reached(
    backend: str, managers: list[JobQueueManager], policy: dict[str, Any], cap: int
) -> None:
    """Six workers: never more than the limit at once, of the job type or of the queue,
    and that many at their peak; jobs of other types run past a type's limit."""
    manager = _started(managers, backend, 6, policy)
    lock = threading.Lock()
    running, peak = 0, 0

    def work(payload: dict[str, Any]) -> None:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.02)  # the work: long enough for every worker to try a claim meanwhile
        with lock:
            running -= 1

    manager.register_handler("payments", work)
    manager.register_handler("email", lambda payload: None)
    ids = [manager.submit("payments", {"n": i}) for i in range(24)]
    ids += [manager.submit("email", {"n": i}, priority="batch") for i in range(10)]
    manager.start_workers()
    wait_until(lambda: all(manager.get_job(i).status is JobStatus.COMPLETED for i in ids), timeout=30.0)
    assert peak == cap


def _most_in_a_window(times: list[float], period_s: float) -> int:
    """The most of ``times`` in any window (t - period_s, t]."""
    times = sorted(times)
    most, low = 0, 0
    for high, at in enumerate(times):
        while times[low] <= at - period_s:
            low += 1
        most = max(most, high - low + 1)
    return most


def test_a_rate_limit_holds_across_workers_and_is_reached(
    backend: str, managers: list[JobQueueManager]
) -> None:
    # 25 jobs at 10 a second: at least two seconds; the claim times the backend stored
    # show the window never held more than 10 claims, and some window held exactly 10.
    manager = _started(managers, backend, 4, {"limits": {"api": {"rate": "10/s"}}})
    manager.register_handler("api", lambda payload: None)
    ids = [manager.submit("api", {"n": i}) for i in range(25)]
    manager.start_workers()
    wait_until(lambda: all(manager.get_job(i).status is JobStatus.COMPLETED for i in ids), timeout=30.0)
    started = [manager.get_job(i).started_at for i in ids]
    assert all(isinstance(at, float) for at in started)
    claims = [at for at in started if at is not None]
    assert _most_in_a_window(claims, 1.0) == 10
    assert max(claims) - min(claims) >= 2.0


def test_aging_with_workers_serves_an_overdue_batch_job_inside_a_critical_backlog(
    backend: str, managers: list[JobQueueManager]
) -> None:
    manager = _started(managers, backend, 2, {"max_wait_s": {"batch": 0.3}})
    manager.register_handler("t", lambda payload: time.sleep(0.01))
    late = manager.submit("t", {}, priority="batch")
    critical = [manager.submit("t", {}, priority="critical") for _ in range(200)]
    manager.start_workers()
    wait_until(lambda: manager.get_job(late).status is JobStatus.COMPLETED, timeout=30.0)
    job = manager.get_job(late)
    assert job.started_at is not None
    # Strict priority would run it after all 200 CRITICAL jobs; it ran once it had waited
    # past its level's bound, and not before, with the CRITICAL backlog still there.
    assert job.started_at - job.created_at >= 0.3
    wait_until(lambda: all(manager.get_job(i).status is JobStatus.COMPLETED for i in critical), timeout=30.0)
    after = [i for i in critical if (manager.get_job(i).started_at or 0.0) > job.started_at]
    assert len(after) >= 50, len(after)


def test_weighted_fairness_with_workers_runs_batch_jobs_under_a_critical_backlog(
    backend: str, managers: list[JobQueueManager]
) -> None:
    config: dict[str, Any] = {
        "backend": backend,
        "max_workers": 2,
        "batch_size": 1,
        "poll_interval": 0.01,
        "queues": {
            "default": {"claim_policy": {"fairness": "weighted", "weights": {"critical": 4, "batch": 1}}}
        },
    }
    manager = JobQueueManager(config)
    managers.append(manager)
    order: list[int] = []
    lock = threading.Lock()

    def work(payload: dict[str, Any]) -> None:
        with lock:
            order.append(payload["p"])

    manager.register_handler("t", work)
    for _ in range(100):
        manager.submit("t", {"p": 10}, priority="critical")
    for _ in range(40):
        manager.submit("t", {"p": 1}, priority=Priority.BATCH)
    manager.start_workers()
    wait_until(lambda: len(order) == 140, timeout=30.0)
    first = order[:100]
    # Strict priority would run all 100 CRITICAL jobs first; weighted 4:1 gives BATCH 1/5.
    assert 15 <= first.count(1) <= 25, first


def test_level_names_in_config_and_manager(tmp_path: Path, managers: list[JobQueueManager]) -> None:
    manager = JobQueueManager({"backend": "memory://", "queues": {"bulk": {"default_priority": "low"}}})
    managers.append(manager)
    job_id = manager.submit("t", {}, queue="bulk")
    assert manager.get_job(job_id).priority == Priority.LOW
    manager.set_priority(job_id, "high")
    assert manager.get_job(job_id).priority == 7
    assert manager.count_by_priority()["bulk"]["HIGH"] == 1
    with pytest.raises(InvalidJobError, match="priority"):
        manager.set_priority(job_id, "soon")
    with pytest.raises(ConfigError, match=r"queues\.bulk\.default_priority"):
        JobQueueManager({"queues": {"bulk": {"default_priority": "urgent"}}})
    with pytest.raises(ConfigError, match=r"queues\.bulk\.claim_policy\.limits\.x\.rate"):
        JobQueueManager({"queues": {"bulk": {"claim_policy": {"limits": {"x": {"rate": "fast"}}}}}})
    with pytest.raises(ConfigError, match=r"claim_policy\.fairness"):
        JobQueueManager({"claim_policy": {"fairness": "round-robin"}})


@pytest.mark.parametrize(
    ("weights", "opening", "reports_in_40"),
    [({"emails": 3, "reports": 1}, "eereeere" * 2, 10), ({"emails": 1, "reports": 1}, "er" * 8, 20)],
    ids=["3:1", "round-robin"],
)
def test_a_worker_serves_several_queues_by_weight(
    backend: str, managers: list[JobQueueManager], weights: dict[str, int], opening: str, reports_in_40: int
) -> None:
    manager = JobQueueManager({"backend": backend, "batch_size": 1, "poll_interval": 0.01})
    managers.append(manager)
    order: list[str] = []
    manager.register_handler("email", lambda payload: order.append("e"), queue="emails")
    manager.register_handler("report", lambda payload: order.append("r"), queue="reports")
    ids = [manager.submit("email", {}) for _ in range(30)] + [manager.submit("report", {}) for _ in range(30)]
    assert manager.get_job(ids[0]).queue == "emails"
    started = manager.start_workers(queues=weights, count=1)
    assert [w.queue.name for w in started] == ["emails+reports"]
    wait_until(lambda: all(manager.get_job(i).status is JobStatus.COMPLETED for i in ids), timeout=30.0)
    # Both queues have work from the start: interleaved by weight (three emails to one
    # report, or one each in turn), neither drained first.
    assert "".join(order[:16]) == opening
    assert order[:40].count("r") == reports_in_40
    with pytest.raises(ConfigError, match=r"queues\.emails"):
        manager.start_workers(queues={"emails": 0}, count=1)


def test_queue_weights_on_the_command_line() -> None:
    assert queue_weights(["emails", "reports"]) is None
    assert queue_weights(["emails=3", "reports"]) == {"emails": 3, "reports": 1}
    with pytest.raises(ConfigError, match=r"queues\.emails"):
        queue_weights(["emails=0"])


def test_a_queue_group_worker_is_started_with_the_settings_of_a_queue_worker() -> None:
    with JobQueueManager({"backend": "memory://", "cancel_grace_s": 3.0, "dlq_max": 7}) as manager:
        manager.create_queue("emails")
        manager.create_queue("reports")
        [alone] = manager.start_workers("emails", count=1)
        [grouped] = manager.start_workers(queues={"emails": 3, "reports": 1}, count=1)
        for worker in (alone, grouped):
            assert worker.cancel_grace_s == 3.0
            assert worker.dlq_max == 7


def _cpu_over(seconds: float) -> float:
    """The CPU seconds this process used over ``seconds`` of real time (measured, not a
    wait for something)."""
    before = time.process_time()
    time.sleep(seconds)
    return time.process_time() - before


def test_a_worker_waits_while_only_jobs_of_other_types_are_ready(
    backend: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It blocks (no claim loop: it used a whole core on every backend) and is woken at
    once by a job of its type, not at its 5 s poll."""
    queue = open_queue(backend, name="idle")
    claims = 0
    claim = queue.claim

    def counted(*args: Any, **kwargs: Any) -> Any:
        nonlocal claims
        claims += 1
        return claim(*args, **kwargs)

    monkeypatch.setattr(queue, "claim", counted)
    started = threading.Event()
    worker = Worker(queue, {"a": lambda payload: started.set()}, poll_interval=5.0, batch_size=1)
    try:
        queue.enqueue(Job(job_type="b", payload={}))
        worker.start()
        time.sleep(0.3)  # it claims nothing and waits
        before = claims
        used = _cpu_over(0.5)
        assert used < 0.15, f"{used:.2f} s of CPU in 0.5 s"
        assert claims - before <= 1  # it waits for a job of its type, not claiming again and again
        began = time.monotonic()
        queue.enqueue(Job(job_type="a", payload={}))
        assert started.wait(10)
        assert time.monotonic() - began < 1.0
        assert queue.count_by_status()[JobStatus.PENDING] == 1  # the "b" job waits for its workers
    finally:
        worker.stop(wait=True, timeout=10)
        queue.close()


def test_workers_held_back_by_a_limit_wait_and_take_the_jobs_once_it_lifts(backend: str) -> None:
    queue = open_queue(backend, name="held")
    queue.set_claim_policy(ClaimPolicy(limits={"pay": {"max_concurrency": 1}}))
    release = threading.Event()
    ran: list[int] = []

    def pay(payload: dict[str, Any]) -> None:
        ran.append(payload["n"])
        release.wait(10)

    workers = [Worker(queue, {"pay": pay}, poll_interval=1.0, batch_size=1) for _ in range(2)]
    try:
        queue.enqueue_many([Job(job_type="pay", payload={"n": n}) for n in range(3)])
        for worker in workers:
            worker.start()
        wait_until(lambda: len(ran) == 1, timeout=10)
        time.sleep(0.2)  # the other worker finds the limit reached
        used = _cpu_over(0.5)
        assert used < 0.15, f"{used:.2f} s of CPU in 0.5 s"
        assert len(ran) == 1
        release.set()
        wait_until(lambda: queue.count_by_status()[JobStatus.COMPLETED] == 3, timeout=10)
    finally:
        release.set()
        for worker in workers:
            worker.stop(wait=True, timeout=10)
        queue.close()
