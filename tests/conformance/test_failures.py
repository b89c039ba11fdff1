"""Retry strategies and failure callbacks, run by a real worker thread on every backend.

The worker picks the job's own policy (stored in its metadata), else its type's, else its
own; the policy decides the delay and which errors retry; a handler's ``PermanentError``
buries the job at once and its ``Retry(in_s=...)`` sets the delay. ``on_failure`` (per
type) and ``on_dead`` are called once per final failure, after the burial is recorded,
and a callback that raises loses nothing. Time is the test's FakeClock: a retry's
``scheduled_at`` is exactly the failure time plus the delay (no jitter is configured).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.conformance.conftest import QueueFactory
from tests.helpers import stop_and_join, wait_until

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import PermanentError
from typedq.job import Job, JobStatus
from typedq.retry import RETRY_META, FailureRules, Retry, RetryPolicy
from typedq.worker import Worker

MakeJob = Callable[..., Job]


@pytest.fixture
def dlq(queue_factory: QueueFactory, queue: Queue) -> Queue:
    return queue_factory("conf-dead")


@pytest.fixture
def run_worker(queue: Queue, dlq: Queue) -> Iterator[Callable[..., Worker]]:
    workers: list[Worker] = []

    def start(handlers: dict[str, Callable[[Any], Any]], **kwargs: Any) -> Worker:
        kwargs.setdefault("retry_policy", RetryPolicy.fixed(1000))
        worker = Worker(queue, handlers, 0.01, dead_letter_queue=dlq, batch_size=1, **kwargs)
        workers.append(worker)
        worker.start()
        return worker

    yield start
    stop_and_join(workers)


def _wait_for(queue: Queue, job_id: str, status: JobStatus, retry_count: int) -> Job:
    def there() -> bool:
        job = queue.get_job(job_id)
        return job.status is status and job.retry_count == retry_count

    wait_until(there, timeout=10, message=f"{job_id} {status} after {retry_count} retries")
    return queue.get_job(job_id)


def _delays(queue: Queue, clock: FakeClock, job_id: str, retries: int) -> list[float]:
    """Let ``job_id`` fail ``retries`` times; the delay each failure scheduled."""
    delays = []
    for n in range(1, retries + 1):
        job = _wait_for(queue, job_id, JobStatus.PENDING, n)
        assert job.scheduled_at is not None
        delays.append(job.scheduled_at - clock.now())
        clock.advance(job.scheduled_at - clock.now())  # due now: the worker runs it again
    return delays


def _boom(payload: Any) -> None:
    raise ValueError("boom")


def test_fixed_schedule_and_callable_policies_set_each_retry_delay(
    queue: Queue, make_job: MakeJob, clock: FakeClock, run_worker: Callable[..., Worker]
) -> None:
    def delay_fn(retry: int, error: BaseException | None) -> float:
        return 10.0 * retry + (0.5 if isinstance(error, ValueError) else 0.0)

    rules = {
        "fixed": FailureRules(RetryPolicy.fixed(7)),
        "schedule": FailureRules(RetryPolicy(delays=[1, 5, 30])),
        "callable": FailureRules(RetryPolicy.custom(delay_fn)),
    }
    run_worker(dict.fromkeys(rules, _boom), failure_rules=rules)
    expected = {"fixed": [7, 7, 7, 7], "schedule": [1, 5, 30, 30], "callable": [10.5, 20.5, 30.5, 40.5]}
    for name, delays in expected.items():  # one job at a time: the clock moves for it alone
        queue.enqueue(make_job(job_id=name, job_type=name, max_retries=4))
        assert _delays(queue, clock, name, 4) == delays
        dead = _wait_for(queue, name, JobStatus.DEAD, 4)
        assert "boom" in (dead.error or "")


def test_a_jobs_own_policy_wins_over_its_types_and_the_workers(
    queue: Queue, make_job: MakeJob, clock: FakeClock, run_worker: Callable[..., Worker]
) -> None:
    run_worker(
        {"t": _boom, "u": _boom},
        retry_policy=RetryPolicy.fixed(100),
        failure_rules={"t": FailureRules(RetryPolicy.fixed(20))},
    )
    own = {RETRY_META: RetryPolicy.fixed(3).to_data()}
    for job_id, job_type, metadata, delay in [
        ("own", "t", own, 3), ("typed", "t", {}, 20), ("plain", "u", {}, 100)
    ]:
        queue.enqueue(make_job(job_id=job_id, job_type=job_type, metadata=metadata, max_retries=1))
        assert _delays(queue, clock, job_id, 1) == [delay]
        _wait_for(queue, job_id, JobStatus.DEAD, 1)


def test_retry_on_and_dont_retry_on_choose_which_errors_retry(
    queue: Queue, make_job: MakeJob, run_worker: Callable[..., Worker]
) -> None:
    def raises(payload: dict[str, Any]) -> None:
        raise {"value": ValueError, "key": KeyError, "lookup": LookupError}[payload["e"]]("x")

    policy = RetryPolicy.fixed(50, retry_on=(LookupError,), dont_retry_on=("builtins.KeyError",))
    run_worker({"t": raises}, failure_rules={"t": FailureRules(policy)})
    queue.enqueue(make_job(job_id="value", job_type="t", payload={"e": "value"}))
    queue.enqueue(make_job(job_id="key", job_type="t", payload={"e": "key"}))
    queue.enqueue(make_job(job_id="lookup", job_type="t", payload={"e": "lookup"}))
    assert _wait_for(queue, "value", JobStatus.DEAD, 0).error is not None  # not in retry_on
    assert _wait_for(queue, "key", JobStatus.DEAD, 0).error is not None  # in dont_retry_on
    _wait_for(queue, "lookup", JobStatus.PENDING, 1)


def test_permanent_error_and_retry_raised_by_a_handler(
    queue: Queue, make_job: MakeJob, clock: FakeClock, run_worker: Callable[..., Worker]
) -> None:
    failures: list[tuple[str, str, type[BaseException]]] = []

    def on_failure(job: Job, error: BaseException) -> None:
        failures.append(("type", job.job_id, type(error)))

    def on_dead(job: Job, error: BaseException) -> None:
        assert job.status is JobStatus.DEAD
        failures.append(("dead", job.job_id, type(error)))

    def handler(payload: dict[str, Any]) -> None:
        if payload["do"] == "permanent":
            raise PermanentError("no such account")
        raise Retry(in_s=7)

    run_worker({"t": handler}, failure_rules={"t": FailureRules(on_failure=on_failure)}, on_dead=on_dead)
    queue.enqueue(make_job(job_id="perm", job_type="t", payload={"do": "permanent"}, max_retries=5))
    dead = _wait_for(queue, "perm", JobStatus.DEAD, 0)
    assert "no such account" in (dead.error or "")
    queue.enqueue(make_job(job_id="again", job_type="t", payload={"do": "retry"}, max_retries=2))
    assert _delays(queue, clock, "again", 2) == [7, 7]
    _wait_for(queue, "again", JobStatus.DEAD, 2)  # Retry counts: none left, so dead
    wait_until(lambda: len(failures) == 4)
    assert sorted(failures, key=str) == sorted(
        [
            ("type", "perm", PermanentError), ("dead", "perm", PermanentError),
            ("type", "again", Retry), ("dead", "again", Retry),
        ],
        key=str,
    )


def test_callbacks_run_once_per_final_failure_and_a_raising_one_loses_nothing(
    queue: Queue, dlq: Queue, make_job: MakeJob, clock: FakeClock,
    *, run_worker: Callable[..., Worker], caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []
    lock = threading.Lock()

    def exploding(job: Job, error: BaseException) -> None:
        with lock:
            calls.append(job.job_id)
        raise RuntimeError("the alerting service is down")

    def handler(payload: dict[str, Any]) -> str:
        if payload.get("fail"):
            raise ValueError("bad")
        return "ok"

    caplog.set_level(logging.ERROR, logger="typedq.worker")
    run_worker(
        {"t": handler},
        failure_rules={"t": FailureRules(RetryPolicy.fixed(1), on_failure=exploding)},
        on_dead=exploding,
    )
    queue.enqueue(make_job(job_id="f", job_type="t", payload={"fail": True}, max_retries=1))
    assert _delays(queue, clock, "f", 1) == [1]
    _wait_for(queue, "f", JobStatus.DEAD, 1)
    assert dlq.get_job("f").status is JobStatus.DEAD  # the dead letter is there
    # The worker carries on: the next job completes.
    queue.enqueue(make_job(job_id="next", job_type="t"))
    _wait_for(queue, "next", JobStatus.COMPLETED, 0)
    assert calls == ["f", "f"]  # on_failure and on_dead, once each, not on the retry
    logged = [r.getMessage() for r in caplog.records if "callback" in r.getMessage()]
    assert len(logged) == 2
    assert all("f" in m for m in logged)


def test_a_failure_whose_text_utf8_cannot_encode_is_recorded_escaped(
    queue: Queue, make_job: MakeJob, clock: FakeClock, run_worker: Callable[..., Worker]
) -> None:
    """A file name decoded with ``surrogateescape`` leaves lone surrogates in an error
    message, which no backend can store as text: the worker records the failure with
    them written as escapes (retried, then dead), instead of failing to record it."""
    name = b"/tmp/report-\xff.csv".decode("utf-8", "surrogateescape")

    def handler(payload: Any) -> None:
        raise FileNotFoundError(2, "No such file or directory", name)

    run_worker({"t": handler})
    queue.enqueue(make_job(job_id="odd", job_type="t", max_retries=1))
    retried = _wait_for(queue, "odd", JobStatus.PENDING, 1)
    expected = "FileNotFoundError: [Errno 2] No such file or directory: '/tmp/report-\\udcff.csv'"
    assert retried.error == expected
    assert "\\udcff" in (retried.traceback or "")
    clock.advance(1000)
    dead = _wait_for(queue, "odd", JobStatus.DEAD, 1)
    assert dead.error == retried.error
