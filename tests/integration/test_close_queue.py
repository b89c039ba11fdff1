"""``JobQueueManager.close_queue``: one queue leaves a live manager, its workers stopped and
its connections released, on memory, SQLite and Redis.

Its jobs stay in a shared store (SQLite, Redis) and come back with the queue; a memory
queue holds its jobs, so it closes only once they have all ended. A submit racing the
close is stored or refused with ``QueueClosedError``, never lost. (That closed queues
leave nothing behind, 1,000 at a time, is L4's: ``tests/reliability/test_many_queues``.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conformance.conftest import redis_test_url
from tests.helpers import wait_until

from typedq import Job, JobQueueManager, JobStatus
from typedq.errors import ConfigError, QueueClosedError, QueueNotFoundError
from typedq.events import EventHandler

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.redis)])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "memory":
        yield "memory://"
    elif request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
    else:
        with redis_test_url() as url:
            yield url


@pytest.fixture
def manager(backend: str) -> Iterator[JobQueueManager]:
    manager = JobQueueManager({"backend": backend, "max_workers": 1, "poll_interval": 0.01})
    yield manager
    manager.close(graceful=False)


class Slow:
    """A ``slow`` handler on queue ``a``: ``started`` is set when it runs, and it returns
    once ``release`` is (at teardown at the latest)."""

    def __init__(self) -> None:
        self.started, self.release = threading.Event(), threading.Event()

    def __call__(self, payload: dict[str, Any]) -> str:
        self.started.set()
        self.release.wait(10)
        return "done"


@pytest.fixture
def slow(manager: JobQueueManager) -> Iterator[Slow]:
    handler = Slow()
    manager.register_handler("slow", handler, queue="a")
    yield handler
    handler.release.set()


def _shared(manager: JobQueueManager) -> bool:
    return not manager.config["backend"].startswith("memory")


def test_its_workers_stop_the_others_run_on_and_its_jobs_stay_in_the_store(
    manager: JobQueueManager, slow: Slow
) -> None:
    started, release = slow.started, slow.release
    manager.register_handler("quick", lambda payload: payload["n"], queue="b")
    running = manager.submit("slow", {})
    manager.start_workers("a")
    manager.start_workers("b")
    assert started.wait(10)
    waiting = [manager.submit("slow", {"n": n}) for n in range(3)]
    a_workers, b_workers = manager.workers("a"), manager.workers("b")
    if not _shared(manager):
        # A memory queue holds its jobs: three waiting ones keep it open.
        with pytest.raises(ConfigError) as info:
            manager.close_queue("a")
        assert info.value.field == "queue"
        assert "3 PENDING or RUNNING" in str(info.value)
        assert "a" in manager.queues  # nothing changed
        assert manager.workers("a") == a_workers
        release.set()
        assert manager.wait_for_completion([running, *waiting], timeout=10)
    else:
        threading.Timer(0.2, release.set).start()
    queue = manager.get_queue("a")
    assert manager.close_queue("a") == []  # graceful: the running job finished
    assert "a" not in manager.queues
    assert not any(w.is_alive() for w in a_workers)
    assert all(w.is_alive() for w in b_workers)
    with pytest.raises(QueueNotFoundError):
        manager.get_queue("a")
    with pytest.raises(QueueClosedError):
        queue.enqueue(Job.create("slow", {}, queue="a"))
    # Queue b is served on.
    assert manager.wait_for_completion([manager.submit("quick", {"n": 1})], timeout=10)
    reopened = manager.create_queue("a")
    assert reopened is not queue
    if _shared(manager):
        # The store kept every job: the one that ran to its end, and the three waiting.
        assert reopened.get_job(running).status is JobStatus.COMPLETED
        assert reopened.count_by_status()[JobStatus.PENDING] == 3
    else:
        assert reopened.count_by_status()[JobStatus.PENDING] == 0


# A memory queue refuses to close with a job given back (see the test above).
@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.redis)], indirect=True)
def test_closing_without_waiting_gives_the_running_job_back(manager: JobQueueManager, slow: Slow) -> None:
    started, release = slow.started, slow.release
    job_id = manager.submit("slow", {})
    manager.start_workers("a")
    assert started.wait(10)
    began = time.monotonic()
    assert manager.close_queue("a", graceful=False) == []
    assert time.monotonic() - began < 2.0  # did not wait for the handler
    release.set()
    # The late completion is refused (the queue is closed): the job stays RUNNING, its
    # lease no longer renewed, until a reaper gives it back.
    reopened = manager.create_queue("a")
    assert "a" in manager.queues
    wait_until(lambda: not any(w.is_alive() for w in manager.workers("a")), timeout=10)
    assert reopened.get_job(job_id).status is JobStatus.RUNNING


def test_no_worker_starts_on_a_queue_while_it_closes(manager: JobQueueManager, slow: Slow) -> None:
    """``close_queue`` waits for a running job; meanwhile ``start_workers`` starts no
    worker on the queue (one would serve a closed queue, and fill its name's room for
    the queue opened again)."""
    manager.create_queue("b")
    job_id = manager.submit("slow", {})
    manager.start_workers("a")
    assert slow.started.wait(10)
    closer = threading.Thread(target=manager.close_queue, args=("a",))
    closer.start()
    wait_until(lambda: "a" in manager._closing, timeout=5, message="the close began")
    with pytest.raises(ConfigError) as info:
        manager.start_workers("a")
    assert info.value.field == "queue"
    with pytest.raises(ConfigError):
        manager.start_workers(queues={"a": 1, "b": 1})
    others = manager.start_workers()  # every queue but the one closing
    assert {w.queue.name for w in others} == {"default", "b"}
    slow.release.set()
    closer.join(10)
    assert not closer.is_alive()
    assert "a" not in manager.queues
    assert manager.workers("a") == []
    # Opened again, it gets workers of its own, which run its jobs.
    manager.create_queue("a")
    [fresh] = manager.start_workers("a")
    assert fresh.queue is manager.get_queue("a")
    if _shared(manager):
        assert manager.get_queue("a").get_job(job_id).status is JobStatus.COMPLETED
    assert manager.wait_for_completion([manager.submit("slow", {})], timeout=10)


def test_workers_serving_it_with_other_queues_stop_too(manager: JobQueueManager) -> None:
    manager.create_queue("a")
    manager.create_queue("b")
    group = manager.start_workers(queues={"a": 1, "b": 1}, count=2)
    own = manager.start_workers("b")
    assert manager.close_queue("a") == []
    wait_until(lambda: not any(w.is_alive() for w in group), timeout=10, message="the group's workers stop")
    assert all(w.is_alive() for w in own)


def test_an_unknown_queue_is_named_and_the_default_queue_stays(manager: JobQueueManager) -> None:
    with pytest.raises(QueueNotFoundError) as info:
        manager.close_queue("nope")
    assert "nope" in str(info.value)
    with pytest.raises(ConfigError) as refused:
        manager.close_queue("default")
    assert refused.value.field == "queue"
    assert "default" in manager.queues


def test_a_submit_after_the_close_opens_it_again(manager: JobQueueManager) -> None:
    manager.register_handler("echo", lambda payload: payload["n"], queue="a")
    manager.close_queue("a")
    job_id = manager.submit("echo", {"n": 7})
    assert "a" in manager.queues
    manager.start_workers("a")
    assert manager.wait_for_completion([job_id], timeout=10)
    assert manager.get_job(job_id).result == 7


def test_a_submit_whose_queue_closes_under_it_is_refused(backend: str) -> None:
    """The race made certain: ``submit`` has looked its queue up and tells the event
    handler, which closes that queue, before it stores the job."""

    class CloseOnSubmit(EventHandler):
        def on_job_submitted(self, job: Job) -> None:
            if job.payload["n"] == 0:
                manager.close_queue("a")

    manager = JobQueueManager({"backend": backend}, event_handler=CloseOnSubmit())
    try:
        manager.register_handler("echo", lambda payload: payload["n"], queue="a")
        with pytest.raises(QueueClosedError):
            manager.submit("echo", {"n": 0})
        assert "a" not in manager.queues
        job_id = manager.submit("echo", {"n": 1})  # opens it again
        assert manager.get_queue("a").count_by_status()[JobStatus.PENDING] == 1
        assert manager.get_job(job_id).payload == {"n": 1}
    finally:
        manager.close(graceful=False)


def test_submits_racing_the_close_are_stored_or_refused_never_lost(manager: JobQueueManager) -> None:
    """4 threads submit while the main thread closes the queue and starts its workers
    again, over and over; at the end every job a submit returned has run."""
    ran: set[int] = set()
    manager.register_handler("echo", lambda payload: ran.add(payload["n"]), queue="a")
    stored: dict[str, int] = {}
    refused: list[int] = []
    stop = threading.Event()

    def submit_in_a_loop(offset: int) -> None:
        n = offset
        while not stop.is_set():
            try:
                stored[manager.submit("echo", {"n": n})] = n
            except QueueClosedError:
                refused.append(n)
            n += 4
            time.sleep(0.001)  # the workers keep up: a memory queue empties, and closes

    threads = [threading.Thread(target=submit_in_a_loop, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    closed = 0
    # A second of races, and on until 3 closes went through: a memory queue closes only
    # at an instant its one worker has emptied it, which a loaded machine can make rare.
    deadline = time.monotonic() + 1.0
    give_up = deadline + 20.0
    try:
        while time.monotonic() < deadline or (closed < 3 and time.monotonic() < give_up):
            try:
                manager.close_queue("a")
                closed += 1
            except (ConfigError, QueueNotFoundError):
                pass  # a memory queue with jobs in it, or closed and not yet opened again
            if "a" in manager.queues and not manager.workers("a"):
                manager.start_workers("a")
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert closed > 0, f"never closed ({len(stored)} stored)"
    assert stored
    # What is left (SQLite, Redis: also jobs stored under a handle closed since) runs now.
    manager.create_queue("a")
    manager.start_workers("a")
    wait_until(lambda: set(stored.values()) <= ran, timeout=20, message="every stored job ran")
