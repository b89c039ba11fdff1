"""``JobQueueManager`` end to end: config validation, routing, workers, stats, dead letters.

Real worker threads on the in-memory backend, no mocks of typedq. Covers the
specification's manager and the reliability rows D4, G3 (replay), H7 (submit side) and
H8. Tests synchronise with ``wait_until`` / ``wait_for_completion`` deadlines.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.helpers import wait_until

from typedq import (
    ConfigError,
    EventHandler,
    InvalidJobError,
    Job,
    JobNotFoundError,
    JobQueue,
    JobQueueManager,
    JobStatus,
    NoHandlerError,
    QueueNotFoundError,
    TypedqError,
)
from typedq.serializers.base import MAX_HEADER_SIZE

pytestmark = pytest.mark.timeout(30)

#: Lease knobs of the reliability tests (RELIABILITY.md §4a).
FAST_LEASES = {"lease_s": 1.0, "heartbeat_s": 0.25, "reaper_s": 0.1}


@pytest.fixture
def make_manager() -> Iterator[Callable[..., JobQueueManager]]:
    """Build managers that are closed (workers stopped) at teardown."""
    managers: list[JobQueueManager] = []

    def _make(config: dict[str, Any] | None = None, **kwargs: Any) -> JobQueueManager:
        config = {"poll_interval": 0.02, **(config or {})}
        manager = JobQueueManager(config, **kwargs)
        managers.append(manager)
        return manager

    yield _make
    for manager in managers:
        manager.close(timeout=10)


# -- H8: configuration -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "field", "suggestion"),
    [
        ({"max_worker": 2}, "max_worker", "max_workers"),
        ({"heartbeat": 1.0}, "heartbeat", "heartbeat_s"),
        ({"queues": {"emails": {"default_prority": 3}}}, "queues.emails.default_prority", "default_priority"),
    ],
)
def test_unknown_option_is_refused_with_did_you_mean(
    config: dict[str, Any], field: str, suggestion: str
) -> None:
    with pytest.raises(ConfigError) as info:
        JobQueueManager(config)
    assert info.value.field == field
    message = str(info.value)
    assert f"did you mean {suggestion!r}" in message
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, TypedqError)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        ({"lease_s": 1.0, "heartbeat_s": 0.5}, "lease_s"),  # lease must exceed 2 × heartbeat
        ({"lease_s": 0.4, "heartbeat_s": 0.25}, "lease_s"),
        ({"heartbeat_s": -1.0}, "heartbeat_s"),
        ({"lease_s": -5.0}, "lease_s"),
        ({"shutdown_grace_s": -0.1}, "shutdown_grace_s"),
        ({"reaper_s": 0}, "reaper_s"),
        ({"poll_interval": -1}, "poll_interval"),
        ({"base_delay": -1.0}, "base_delay"),
        ({"max_workers": -1}, "max_workers"),
        ({"max_workers": 1.5}, "max_workers"),
        ({"max_workers": 0}, "max_workers"),  # a worker with no threads runs nothing
        ({"queues": {"q": {"max_workers": 0}}}, "queues.q.max_workers"),
        ({"max_payload_size": 40}, "max_payload_size"),  # below the longest frame header
        ({"default_priority": 11}, "default_priority"),
        ({"jitter": 2.0}, "jitter"),
        ({"max_lost": 0}, "max_lost"),
        ({"unique_sweep_rest_s": -1}, "unique_sweep_rest_s"),
        ({"unique_sweep_rest_s": "1m"}, "unique_sweep_rest_s"),
        ({"dlq_max": 0}, "dlq_max"),
        ({"dlq_max": "many"}, "dlq_max"),
        ({"result_ttl": 0}, "result_ttl"),
        ({"result_ttl": "7d"}, "result_ttl"),
        ({"history_limit": 0}, "history_limit"),
        ({"queues": {"q": {"poll_interval": 0}}}, "queues.q.poll_interval"),
        ({"queues": ["q"]}, "queues"),
    ],
)
def test_out_of_range_values_are_refused(config: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        JobQueueManager(config)
    assert info.value.field == field
    assert field in str(info.value)


def test_payload_limit_minimum_is_the_frame_header() -> None:
    with pytest.raises(ConfigError, match=r"an int >= 41 ") as info:
        JobQueueManager({"max_payload_size": MAX_HEADER_SIZE - 1})
    assert info.value.value == MAX_HEADER_SIZE - 1
    JobQueueManager({"max_payload_size": MAX_HEADER_SIZE, "serializer": "json"}).close()


def test_lease_error_names_the_allowed_range() -> None:
    with pytest.raises(ConfigError, match=r"heartbeat_s") as info:
        JobQueueManager({"lease_s": 1.0, "heartbeat_s": 0.5})
    assert info.value.value == 1.0


@pytest.mark.parametrize("url", ["nonsense", "", "ftp://host/q", "redisx://localhost", 42])
def test_bad_backend_url_is_a_config_error(url: object) -> None:
    with pytest.raises(ConfigError) as info:
        JobQueueManager({"backend": url})
    assert info.value.field == "backend"
    assert "memory://" in str(info.value) or "memory" in str(info.value)


def test_valid_config_is_accepted(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager({**FAST_LEASES, "queues": {"emails": {"max_workers": 2}, "reports": {}}})
    assert set(manager.queues) == {"default", "emails", "reports"}


# -- queues and handlers -----------------------------------------------------------------


def test_create_and_get_queue(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager()
    created = manager.create_queue("images", max_workers=2, default_priority=7)
    assert manager.get_queue("images") is created
    assert created.name == "images"
    assert manager.create_queue("images") is created  # idempotent, keeps the jobs
    with pytest.raises(QueueNotFoundError) as info:
        manager.get_queue("imagez")
    assert isinstance(info.value, KeyError)
    assert "imagez" in str(info.value)
    assert "images" in str(info.value)  # lists the known queues
    with pytest.raises(ConfigError):
        manager.create_queue("bad", max_workerz=1)
    with pytest.raises(ConfigError):
        manager.create_queue("")


def test_handlers_route_jobs_to_their_queue(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager({"queues": {"emails": {}}})
    manager.register_handler("send_email", lambda p: f"sent to {p['to']}", queue="emails")
    manager.register_handler("resize", lambda p: p["w"] // 2, queue="images")  # created on demand
    manager.register_handler("noop", lambda p: None)

    email = manager.submit("send_email", {"to": "a@example.org"})
    image = manager.submit("resize", {"w": 640})
    other = manager.submit("noop", {})
    assert isinstance(email, str)
    assert email in manager.get_queue("emails")
    assert image in manager.get_queue("images")
    assert other in manager.get_queue("default")
    assert manager.get_job(email).queue == "emails"

    manager.start_workers()
    assert manager.wait_for_completion([email, image, other], timeout=10)
    assert manager.get_job(email).result == "sent to a@example.org"
    assert manager.get_job(image).result == 320


def test_submit_unregistered_type_raises_no_handler(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager()
    manager.register_handler("known", lambda p: None)
    with pytest.raises(NoHandlerError) as info:
        manager.submit("unknown_type", {})
    assert isinstance(info.value, ValueError)
    assert "unknown_type" in str(info.value)
    assert "known" in str(info.value)
    assert manager.get_stats()["total_submitted"] == 0
    assert manager.get_queue("default").size == 0


def test_unknown_submit_option_suggests_the_right_one(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager()
    manager.register_handler("t", lambda p: None)
    with pytest.raises(InvalidJobError) as info:
        manager.submit("t", {}, priorty=3)
    assert info.value.field == "priorty"
    assert "did you mean 'priority'" in str(info.value)
    with pytest.raises(InvalidJobError) as bad_priority:
        manager.submit("t", {}, priority=0)
    assert bad_priority.value.field == "priority"
    with pytest.raises(InvalidJobError) as bad_timeout:
        manager.submit("t", {}, timeout_seconds=-1)
    assert bad_timeout.value.field == "timeout_seconds"
    assert manager.get_queue("default").size == 0


def test_register_handler_validates(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager()
    with pytest.raises(InvalidJobError):
        manager.register_handler("  ", lambda p: None)
    with pytest.raises(ConfigError):
        manager.register_handler("t", "not callable")  # type: ignore[arg-type]  # the point of the test


def test_default_priority_comes_from_config(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager({"default_priority": 3, "queues": {"urgent": {"default_priority": 9}}})
    manager.register_handler("low", lambda p: None)
    manager.register_handler("high", lambda p: None, queue="urgent")
    assert manager.get_job(manager.submit("low", {})).priority == 3
    assert manager.get_job(manager.submit("high", {})).priority == 9
    assert manager.get_job(manager.submit("high", {}, priority=2)).priority == 2


# -- workers -----------------------------------------------------------------------------


def test_start_workers_respects_max_workers(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager({"max_workers": 3, "queues": {"small": {"max_workers": 1}}})
    first = manager.start_workers()
    again = manager.start_workers()
    assert len(first) == 4  # 3 for default + 1 for small
    assert again == []
    assert manager.start_workers("default", count=5) == []
    stats = manager.get_stats()
    assert stats["workers_per_queue"] == {"default": 3, "small": 1}
    assert len(manager.workers("default")) == 3
    assert len({w.worker_id for w in manager.workers()}) == 4
    with pytest.raises(QueueNotFoundError):
        manager.start_workers("missing")


def test_stop_workers_graceful_finishes_running_jobs(
    make_manager: Callable[..., JobQueueManager], release: threading.Event
) -> None:
    manager = make_manager({"max_workers": 2})
    running = threading.Event()

    def slow(payload: dict[str, Any]) -> str:
        running.set()
        release.wait(10)
        return "finished"

    manager.register_handler("slow", slow)
    job_id = manager.submit("slow", {})
    manager.start_workers()
    assert running.wait(5)
    threading.Timer(0.2, release.set).start()  # let the job finish while stop_workers waits
    abandoned = manager.stop_workers(graceful=True, timeout=10)
    assert abandoned == []
    assert manager.get_job(job_id).status is JobStatus.COMPLETED
    assert manager.get_job(job_id).result == "finished"
    assert manager.workers() == []
    assert manager.get_stats()["workers_per_queue"] == {"default": 0}
    assert manager.get_stats()["total_completed"] == 1  # stats survive the workers
    assert len(manager.start_workers()) == 2  # and workers can be started again


@pytest.mark.timeout(20)
def test_stop_workers_abandons_a_handler_that_ignores_stop(
    make_manager: Callable[..., JobQueueManager], release: threading.Event
) -> None:
    """D4: stop_workers returns within grace + 0.5 s, reports 1 abandoned worker, and the
    job comes back through its lease."""
    manager = make_manager({"max_workers": 2, **FAST_LEASES})
    spinning = threading.Event()

    def busy_loop(payload: dict[str, Any]) -> str:
        spinning.set()
        while not release.is_set():
            pass  # a CPU-bound handler that never looks at stop
        return "late"

    manager.register_handler("busy", busy_loop)
    job_id = manager.submit("busy", {})
    manager.start_workers()
    assert spinning.wait(5)
    busy = next(w for w in manager.workers() if w.current_job_id == job_id)

    began = time.monotonic()
    abandoned = manager.stop_workers(graceful=True, timeout=0.5)
    took = time.monotonic() - began
    assert took < 0.5 + 0.5, f"stop_workers took {took:.2f}s"
    assert abandoned == [busy.worker_id]
    assert busy.is_alive()

    # No heartbeats for the abandoned job: the reaper gives it back once the lease expires.
    wait_until(lambda: manager.get_job(job_id).status is JobStatus.PENDING, timeout=1.0 + 0.1 + 2)
    assert manager.get_job(job_id).lost_count == 1

    release.set()
    busy.join(5)
    assert not busy.is_alive()
    assert manager.get_job(job_id).status is JobStatus.PENDING  # the stale result was refused

    manager.start_workers()
    assert manager.wait_for_completion([job_id], timeout=5)
    assert manager.get_job(job_id).result == "late"
    assert manager.get_job(job_id).attempt == 2


def test_wait_for_completion_true_and_false(
    make_manager: Callable[..., JobQueueManager], release: threading.Event
) -> None:
    manager = make_manager()
    manager.register_handler("blocked", lambda p: release.wait(10))
    manager.register_handler("quick", lambda p: p)
    quick = manager.submit("quick", {"a": 1})
    blocked = manager.submit("blocked", {})
    manager.start_workers()
    assert manager.wait_for_completion([quick], timeout=5) is True

    began = time.monotonic()
    assert manager.wait_for_completion([quick, blocked], timeout=0.2) is False
    assert 0.2 <= time.monotonic() - began < 1.0
    release.set()
    assert manager.wait_for_completion([quick, blocked], timeout=5) is True
    assert manager.wait_for_completion([], timeout=0) is True
    with pytest.raises(JobNotFoundError):
        manager.wait_for_completion(["no-such-job"], timeout=1)


# -- statistics --------------------------------------------------------------------------


def test_get_stats_keys_and_values(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager({"base_delay": 0.0, "queues": {"other": {"max_workers": 1}}})
    tries: dict[str, int] = {}

    def flaky(payload: dict[str, Any]) -> str:
        tries[payload["k"]] = tries.get(payload["k"], 0) + 1
        if tries[payload["k"]] == 1:
            raise RuntimeError("first attempt fails")
        return "ok"

    def doomed(payload: dict[str, Any]) -> None:
        raise RuntimeError("always")

    manager.register_handler("ok", lambda p: "ok")
    manager.register_handler("flaky", flaky)
    manager.register_handler("doomed", doomed, queue="other")
    ids = [manager.submit("ok", {}) for _ in range(5)]
    ids += [manager.submit("flaky", {"k": k}) for k in "ab"]
    ids.append(manager.submit("doomed", {}, max_retries=1))
    manager.start_workers()
    assert manager.wait_for_completion(ids, timeout=10)
    manager.stop_workers()

    stats = manager.get_stats()
    required = {
        "total_submitted", "total_completed", "total_failed", "total_dead",
        "jobs_per_queue", "workers_per_queue",
    }
    extras = {
        "total_retried", "status_per_queue", "dead_letter_size", "dead_letters_dropped", "total_purged",
    }
    assert set(stats) == required | extras
    assert stats["total_submitted"] == 8
    assert stats["total_completed"] == 7
    assert stats["total_failed"] == 2 + 2  # failed attempts: 1 per flaky job, 2 for the doomed one
    assert stats["total_retried"] == 3
    assert stats["total_dead"] == 1
    assert stats["jobs_per_queue"] == {"default": 7, "other": 1}
    assert stats["workers_per_queue"] == {"default": 0, "other": 0}
    assert stats["status_per_queue"]["default"]["COMPLETED"] == 7
    assert stats["status_per_queue"]["other"]["DEAD"] == 1
    assert stats["dead_letter_size"] == 1
    assert stats["dead_letters_dropped"] == 0


# -- dead letters ------------------------------------------------------------------------


def test_replay_dead_letter(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager({"base_delay": 0.0, "queues": {"jobs": {}}})
    healed = threading.Event()

    def sometimes(payload: dict[str, Any]) -> str:
        if not healed.is_set():
            raise ConnectionError("downstream is down")
        return "recovered"

    manager.register_handler("call", sometimes, queue="jobs")
    job_id = manager.submit("call", {"n": 1}, max_retries=2)
    manager.start_workers()
    assert manager.wait_for_completion([job_id], timeout=10)
    dlq = manager.get_dead_letter_queue()
    assert isinstance(dlq, JobQueue)
    # The copy lands just after DEAD is visible (see test_dead_job_is_replayable_once_dead).
    wait_until(lambda: job_id in dlq)
    assert dlq.get_job(job_id).error == "ConnectionError: downstream is down"
    assert dlq.get_job(job_id).retry_count == 2
    assert manager.get_job(job_id).status is JobStatus.DEAD

    manager.stop_workers()
    assert manager.replay_dead_letter(job_id) == job_id
    job = manager.get_queue("jobs").get_job(job_id)
    assert (job.status, job.retry_count, job.error) == (JobStatus.PENDING, 0, None)
    assert job_id not in dlq

    healed.set()
    manager.start_workers()
    assert manager.wait_for_completion([job_id], timeout=10)
    assert manager.get_job(job_id).result == "recovered"
    with pytest.raises(JobNotFoundError):
        manager.replay_dead_letter(job_id)  # no longer a dead letter


def test_always_failing_job_dies_after_max_retries_and_replays_fresh(
    make_manager: Callable[..., JobQueueManager],
) -> None:
    """G3: max_retries=3 → exactly 4 attempts, the DLQ keeps the last error, and a replay
    starts a fresh sequence of 4 attempts."""
    manager = make_manager({"base_delay": 0.0})
    attempts: list[int] = []

    def always(payload: dict[str, Any]) -> None:
        attempts.append(1)
        raise ValueError(f"failure number {len(attempts)}")

    manager.register_handler("always", always)
    job_id = manager.submit("always", {}, max_retries=3)
    manager.start_workers()
    assert manager.wait_for_completion([job_id], timeout=10)
    wait_until(lambda: job_id in manager.get_dead_letter_queue())  # see test_dead_job_is_replayable_once_dead
    dead = manager.get_dead_letter_queue().get_job(job_id)
    assert len(attempts) == 4
    assert dead.status is JobStatus.DEAD
    assert dead.error == "ValueError: failure number 4"
    assert dead.retry_count == 3

    manager.replay_dead_letter(job_id)
    assert manager.get_job(job_id).retry_count == 0
    wait_until(lambda: job_id in manager.get_dead_letter_queue(), timeout=10)
    assert len(attempts) == 8
    again = manager.get_dead_letter_queue().get_job(job_id)
    assert (again.retry_count, again.error) == (3, "ValueError: failure number 8")
    assert manager.get_stats()["total_dead"] == 2


def test_dlq_max_keeps_the_newest_dead_letters_and_get_stats_counts_the_dropped(
    make_manager: Callable[..., JobQueueManager], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="typedq.backends")
    manager = make_manager({"dlq_max": 2, "max_workers": 1})

    def broken(payload: dict[str, Any]) -> None:
        raise RuntimeError(f"broken {payload['n']}")

    manager.register_handler("broken", broken)
    ids = [manager.submit("broken", {"n": n}, max_retries=0, priority=10 - n) for n in range(5)]
    manager.start_workers()
    # Not wait_for_completion: a dropped dead letter takes its job with it (an unknown id).
    wait_until(lambda: manager.get_stats()["total_dead"] == 5, timeout=10)
    manager.stop_workers()
    dlq = manager.get_dead_letter_queue()
    assert [j.job_id for j in dlq.list_jobs()] == ids[3:]
    assert [j.error for j in dlq.list_jobs()] == ["RuntimeError: broken 3", "RuntimeError: broken 4"]
    stats = manager.get_stats()
    assert (stats["dead_letter_size"], stats["dead_letters_dropped"], stats["total_dead"]) == (2, 3, 5)
    assert stats["status_per_queue"]["default"]["DEAD"] == 2  # dropped letters took their rows
    assert any("dropped the oldest" in r.getMessage() for r in caplog.records)
    for job_id in ids[:3]:
        with pytest.raises(JobNotFoundError):
            manager.replay_dead_letter(job_id)


def test_replay_puts_a_dead_letter_back_on_a_queue_that_lost_the_job(
    make_manager: Callable[..., JobQueueManager],
) -> None:
    """The dead letter is all that is left (its row was deleted): the replay puts it back
    on its queue and takes it out of the dead-letter queue, in one transition."""
    manager = make_manager({"queues": {"jobs": {}}})
    manager.register_handler("once", lambda p: "ok", queue="jobs")
    queue = manager.get_queue("jobs")
    job_id = manager.submit("once", {"n": 1})
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    queue.bury(job_id, token=claim.token, error="boom", dead_letter=manager.get_dead_letter_queue())
    queue.delete(job_id)
    assert manager.replay_dead_letter(job_id) == job_id
    assert queue.get_job(job_id).status is JobStatus.PENDING
    assert manager.get_dead_letter_queue().size == 0
    manager.start_workers()
    assert manager.wait_for_completion([job_id], timeout=10)
    assert manager.get_job(job_id).result == "ok"


def test_a_worker_with_a_dead_letter_queue_of_another_store_is_refused(tmp_path: Any) -> None:
    from typedq import Worker
    from typedq.backends import SQLiteQueue

    queue = SQLiteQueue(tmp_path / "jobs.db", name="jobs")
    try:
        with pytest.raises(ConfigError, match="dead_letter"):
            Worker(queue, {}, dead_letter_queue=JobQueue("dead-letter"))
    finally:
        queue.close()


def test_the_reaper_purges_results_past_result_ttl_and_memory_keeps_a_bounded_history(
    make_manager: Callable[..., JobQueueManager],
) -> None:
    from typedq import FakeClock

    clock = FakeClock()
    manager = make_manager({**FAST_LEASES, "result_ttl": 60.0, "history_limit": 3}, clock=clock)
    manager.register_handler("ok", lambda p: p["n"])
    queue = manager.get_queue("default")
    assert isinstance(queue, JobQueue)
    assert queue.history_limit == 3
    for n in range(5):
        manager.submit("ok", {"n": n})
    manager.start_workers()
    wait_until(lambda: manager.get_stats()["total_completed"] == 5)
    assert queue.size == 3  # the history limit: the two that finished first are gone
    waiting = manager.submit("ok", {"n": 9}, delay_s=3600)
    clock.advance(61)
    wait_until(lambda: queue.size == 1)  # the reaper's next pass (every 0.1 s)
    assert [j.job_id for j in queue.list_jobs()] == [waiting]
    assert manager.get_stats()["total_purged"] == 3


class _PauseOnLog(logging.Handler):
    """Blocks the logging thread on the first record containing ``needle``: a test hook
    that holds a worker at a known point without touching typedq."""

    def __init__(self, needle: str) -> None:
        super().__init__()
        self.needle = needle
        self.reached = threading.Event()
        self.proceed = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage() and not self.reached.is_set():
            self.reached.set()
            self.proceed.wait(10)


def test_dead_job_is_replayable_once_dead(make_manager: Callable[..., JobQueueManager]) -> None:
    """Once ``wait_for_completion`` reports a job finished because it is DEAD, the job
    must be in the dead-letter queue and ``replay_dead_letter`` must accept it.

    The job's death and its dead letter are one transition (``queue.bury`` with
    ``dead_letter``); the worker logs after it. The pause below (on that log line) holds
    the worker where a copy made in a second step would still be missing.
    """
    gate = _PauseOnLog("dead-letter")
    worker_logger = logging.getLogger("typedq.worker")
    worker_logger.addHandler(gate)
    try:
        manager = make_manager()

        def broken(payload: dict[str, Any]) -> None:
            raise RuntimeError("broken")

        manager.register_handler("broken", broken)
        job_id = manager.submit("broken", {}, max_retries=0)
        manager.start_workers()
        assert gate.reached.wait(5)
        assert manager.wait_for_completion([job_id], timeout=5)
        assert manager.get_job(job_id).status is JobStatus.DEAD
        in_dlq = job_id in manager.get_dead_letter_queue()
        replay_error: Exception | None = None
        try:
            manager.replay_dead_letter(job_id)
        except JobNotFoundError as exc:
            replay_error = exc
    finally:
        gate.proceed.set()
        worker_logger.removeHandler(gate)
    assert in_dlq, "the job is DEAD but not (yet) in the dead-letter queue"
    assert replay_error is None, f"replay of a DEAD job failed: {replay_error}"


@pytest.mark.timeout(20)
def test_stats_count_a_job_finished_by_an_abandoned_worker(
    make_manager: Callable[..., JobQueueManager], release: threading.Event
) -> None:
    """``stop_workers(timeout=...)`` abandons a busy worker, which may still complete its
    job while its lease is valid: the job is COMPLETED, so ``total_completed`` must
    count it (get_stats must agree with the job states)."""
    manager = make_manager({"max_workers": 1})
    running = threading.Event()

    def slow(payload: dict[str, Any]) -> str:
        running.set()
        release.wait(10)
        return "done late"

    manager.register_handler("slow", slow)
    job_id = manager.submit("slow", {})
    (worker,) = manager.start_workers()
    assert running.wait(5)
    assert manager.stop_workers(timeout=0.1) == [worker.worker_id]
    release.set()
    worker.join(5)
    assert not worker.is_alive()
    job = manager.get_job(job_id)
    assert (job.status, job.result) == (JobStatus.COMPLETED, "done late")  # the lease was still valid
    stats = manager.get_stats()
    assert stats["status_per_queue"]["default"]["COMPLETED"] == 1
    assert stats["total_completed"] == 1, "a COMPLETED job is missing from total_completed"


# -- lifecycle and composition -----------------------------------------------------------


def test_context_manager_starts_and_stops_workers() -> None:
    baseline = threading.active_count()
    manager = JobQueueManager({"max_workers": 2, "poll_interval": 0.02})
    manager.register_handler("echo", lambda p: p["v"])
    with manager as entered:
        assert entered is manager
        assert len(manager.workers()) == 2
        ids = [manager.submit("echo", {"v": i}) for i in range(20)]
        assert manager.wait_for_completion(ids, timeout=10)
    assert manager.workers() == []
    assert [manager.get_job(i).result for i in ids] == list(range(20))
    wait_until(lambda: threading.active_count() <= baseline)
    with pytest.raises(ConfigError):
        manager.start_workers()  # closed


def test_handler_may_submit_jobs(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager({"max_workers": 2})
    children: list[str] = []

    def fan_out(payload: dict[str, Any]) -> int:
        for i in range(payload["n"]):
            children.append(manager.submit("leaf", {"i": i}))
        return payload["n"]

    manager.register_handler("fan_out", fan_out)
    manager.register_handler("leaf", lambda p: p["i"] * 10)
    manager.start_workers()
    parents = [manager.submit("fan_out", {"n": 25}) for _ in range(4)]
    assert manager.wait_for_completion(parents, timeout=10)
    assert len(children) == 100
    assert manager.wait_for_completion(children, timeout=10)
    assert sorted(manager.get_job(c).result for c in children) == sorted([i * 10 for i in range(25)] * 4)
    assert manager.get_stats()["total_submitted"] == 104


def test_handler_may_stop_the_workers(make_manager: Callable[..., JobQueueManager]) -> None:
    """A "shutdown" job: a handler calling ``stop_workers()`` stops every worker and its
    own job completes (``Worker.stop`` already refuses to join its own thread; the
    manager must too, instead of raising ``RuntimeError: cannot join current thread``)."""
    manager = make_manager({"max_workers": 2})
    manager.register_handler("shutdown", lambda p: manager.stop_workers(timeout=5))
    workers = manager.start_workers()
    job_id = manager.submit("shutdown", {}, max_retries=0)
    assert manager.wait_for_completion([job_id], timeout=10)
    job = manager.get_job(job_id)
    assert (job.status, job.error) == (JobStatus.COMPLETED, None)
    wait_until(lambda: not any(w.is_alive() for w in workers))
    assert manager.workers() == []


def test_dependency_chain_runs_in_order(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager({"max_workers": 4})
    ran: list[tuple[str, str, float]] = []
    lock = threading.Lock()

    def step(payload: dict[str, Any]) -> str:
        with lock:
            ran.append(("start", payload["name"], time.monotonic()))
        with lock:
            ran.append(("end", payload["name"], time.monotonic()))
        return payload["name"]

    manager.register_handler("step", step)
    a = manager.submit("step", {"name": "A"})
    b = manager.submit("step", {"name": "B"}, depends_on=[a])
    c = manager.submit("step", {"name": "C"}, depends_on=[b])
    assert manager.get_queue("default").ready_count() == 1  # only A may run
    manager.start_workers()
    assert manager.wait_for_completion([a, b, c], timeout=10)
    assert [(kind, name) for kind, name, _ in ran] == [
        ("start", "A"), ("end", "A"), ("start", "B"), ("end", "B"), ("start", "C"), ("end", "C"),
    ]
    assert [manager.get_job(i).status for i in (a, b, c)] == [JobStatus.COMPLETED] * 3


def test_dead_parent_fails_the_chain(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager({"base_delay": 0.0})
    ran: list[str] = []

    def parent(payload: dict[str, Any]) -> None:
        raise RuntimeError("parent broke")

    manager.register_handler("parent", parent)
    manager.register_handler("child", lambda p: ran.append(p["name"]))
    a = manager.submit("parent", {}, max_retries=1)
    b = manager.submit("child", {"name": "B"}, depends_on=[a])
    c = manager.submit("child", {"name": "C"}, depends_on=[b])
    manager.start_workers()
    assert manager.wait_for_completion([a, b, c], timeout=10)
    assert ran == []
    assert manager.get_job(a).status is JobStatus.DEAD
    job_b, job_c = manager.get_job(b), manager.get_job(c)
    assert job_b.status is JobStatus.FAILED
    assert a in (job_b.error or "")
    assert "DEAD" in (job_b.error or "")
    assert job_c.status is JobStatus.FAILED
    assert b in (job_c.error or "")


def test_cyclic_or_unknown_dependencies_are_refused(make_manager: Callable[..., JobQueueManager]) -> None:
    manager = make_manager()
    manager.register_handler("t", lambda p: None)
    a = manager.submit("t", {}, job_id="a")
    with pytest.raises(InvalidJobError):
        manager.submit("t", {}, job_id="self", depends_on=["self"])
    with pytest.raises(InvalidJobError) as info:
        manager.submit("t", {}, depends_on=["does-not-exist"])
    assert "does-not-exist" in str(info.value)
    assert manager.get_queue("default").size == 1
    assert a == "a"


# -- events through the manager ----------------------------------------------------------


class OrderRecorder(EventHandler):
    """Records (event, job_id) pairs in call order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.started = threading.Event()

    def add(self, name: str, job: Job) -> None:
        with self.lock:
            self.events.append((name, job.job_id))

    def on_job_submitted(self, job: Job) -> None:
        self.add("submitted", job)

    def on_job_started(self, job: Job, worker_id: str) -> None:
        self.add("started", job)
        self.started.set()

    def on_job_completed(self, job: Job, result: Any) -> None:
        self.add("completed", job)


def test_events_from_submit_to_completion(make_manager: Callable[..., JobQueueManager]) -> None:
    rec = OrderRecorder()
    manager = make_manager(event_handler=rec)
    manager.register_handler("t", lambda p: None)
    ids = [manager.submit("t", {}) for _ in range(10)]
    manager.start_workers()
    assert manager.wait_for_completion(ids, timeout=10)
    wait_until(lambda: len(rec.events) == 30)
    for job_id in ids:
        assert [e for e, j in rec.events if j == job_id] == ["submitted", "started", "completed"]


def test_submitted_event_precedes_started_with_a_slow_callback(
    make_manager: Callable[..., JobQueueManager],
) -> None:
    """A monitoring callback that does I/O in on_job_submitted must still see
    ``submitted`` before ``started`` for the same job.

    The manager emits ``on_job_submitted`` *after* the job is enqueued, so a running
    worker can claim, start and finish the job while the submitted callback is still
    running: the monitor then sees started/completed before submitted.
    """

    class SlowSubmitted(OrderRecorder):
        def on_job_submitted(self, job: Job) -> None:
            self.started.wait(0.5)  # e.g. a network call to a metrics sink
            super().on_job_submitted(job)

    rec = SlowSubmitted()
    manager = make_manager(event_handler=rec)
    manager.register_handler("t", lambda p: None)
    manager.start_workers()
    job_id = manager.submit("t", {})
    assert manager.wait_for_completion([job_id], timeout=5)
    wait_until(lambda: len(rec.events) == 3)
    assert [e for e, _ in rec.events] == ["submitted", "started", "completed"]


class DeadRecorder(EventHandler):
    def __init__(self) -> None:
        self.dead: list[Job] = []

    def on_job_dead(self, job: Job) -> None:
        self.dead.append(job)


@pytest.mark.timeout(20)
def test_worker_lost_dead_letter_is_recorded_and_logged(
    make_manager: Callable[..., JobQueueManager],
    release: threading.Event,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A job whose worker is lost ``max_lost`` times goes DEAD through the reaper: it is
    copied to the DLQ, counted, announced, and logged like every dead-letter move, with
    job_id, job_type, retry_count and error (the specification's logging rule)."""
    caplog.set_level(logging.WARNING, logger="typedq")
    rec = DeadRecorder()
    manager = make_manager({**FAST_LEASES, "max_lost": 1, "max_workers": 1}, event_handler=rec)
    stuck = threading.Event()

    def hangs(payload: dict[str, Any]) -> None:
        stuck.set()
        release.wait(10)

    manager.register_handler("hang", hangs)
    job_id = manager.submit("hang", {}, max_retries=2)
    manager.start_workers()
    assert stuck.wait(5)
    assert len(manager.stop_workers(timeout=0.1)) == 1  # abandoned: its lease lapses
    wait_until(lambda: job_id in manager.get_dead_letter_queue(), timeout=1.0 + 0.1 + 2)

    job = manager.get_job(job_id)
    assert job.status is JobStatus.DEAD
    assert job.error == "worker lost 1×"
    assert manager.get_dead_letter_queue().get_job(job_id).error == "worker lost 1×"

    # The reaper counts, announces and logs the move after its transition committed.
    def dead_logged() -> list[str]:
        messages = [r.getMessage() for r in caplog.records]
        return [m for m in messages if job_id in m and "dead" in m]

    wait_until(lambda: rec.dead and dead_logged(), timeout=2.0)
    assert [j.job_id for j in rec.dead] == [job_id]
    assert manager.get_stats()["total_dead"] == 1
    logged = dead_logged()
    assert logged, "the dead-letter move was not logged"
    message = logged[0]
    assert "hang" in message
    assert "worker lost 1×" in message
    assert "retr" in message, f"retry_count missing from the dead-letter log: {message!r}"


def test_raising_submitted_callback_does_not_fail_submit(
    make_manager: Callable[..., JobQueueManager], caplog: pytest.LogCaptureFixture
) -> None:
    class Broken(EventHandler):
        def on_job_submitted(self, job: Job) -> None:
            raise RuntimeError("metrics sink down")

    caplog.set_level(logging.ERROR, logger="typedq.events")
    manager = make_manager(event_handler=Broken())
    manager.register_handler("t", lambda p: "ran")
    job_id = manager.submit("t", {})
    manager.start_workers()
    assert manager.wait_for_completion([job_id], timeout=5)
    assert manager.get_job(job_id).result == "ran"
    assert manager.get_stats()["total_submitted"] == 1
    assert any("on_job_submitted" in r.getMessage() for r in caplog.records)
