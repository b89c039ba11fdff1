"""One store, many queues, handles and processes.

Queues of different names in one store (one SQLite file, one Redis prefix) are
independent; on memory every queue is its own store, so the same tests hold trivially.

The rest is about what only a shared store has, so it runs on the stores other objects
and processes open by URL (``shared_store_url``: SQLite and Redis). The memory backend
is exempt by nature, not by a flag: ``memory://`` opened twice is two empty queues, and
no other process can reach it. (Within one process, two handles on one store are the
"2handles" variants of the whole suite: see conftest.py.)

* A handle configured with another codec reads the jobs the first wrote, and the first
  reads its writes: stored bytes say which serializer and codec wrote them.
* Two other processes and this one drain one queue together: each job is claimed and
  completed exactly once, with the result of the process that claimed it.
* A thread of this process blocked in ``wait_ready`` wakes soon after another process
  enqueues (SQLite watches ``PRAGMA data_version``; Redis pushes to a wake list).
"""

from __future__ import annotations

import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from tests.conformance.conftest import QueueFactory
from tests.helpers import spawn_module

from typedq.backends import open_queue
from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import DuplicateJobError, UnknownDependencyError
from typedq.job import Job, JobStatus
from typedq.serializers import get_serializer

#: The module the child processes run.
PROCS = "tests.conformance._procs"

MakeJob = Callable[..., Job]


# -- queues in one store (every variant) -------------------------------------------------------


def test_queues_sharing_a_store_are_independent(queue_factory: QueueFactory, make_job: MakeJob) -> None:
    a, b = queue_factory("a"), queue_factory("b")
    a.enqueue(make_job(job_id="same", payload={"q": "a"}))
    b.enqueue(make_job(job_id="same", payload={"q": "b"}, priority=9))
    with pytest.raises(DuplicateJobError):
        a.enqueue(make_job(job_id="same"))
    with pytest.raises(UnknownDependencyError):
        b.enqueue(make_job(job_id="child", depends_on=["only-in-a"]))
    a.enqueue(make_job(job_id="only-in-a"))
    assert (a.size, b.size) == (2, 1)
    claim = b.claim("w", lease_s=10)
    assert claim is not None
    assert claim.job.payload == {"q": "b"}
    assert b.claim("w", lease_s=10) is None
    assert a.ready_count() == 2
    assert a.get_job("same").status is JobStatus.PENDING
    b.complete("same", token=claim.token)
    a.delete("same")
    assert b.get_job("same").status is JobStatus.COMPLETED
    assert [j["job_id"] for j in a.export_jobs()] == ["only-in-a"]
    assert a.count_by_status()[JobStatus.COMPLETED] == 0


def test_a_job_keeps_its_own_queue_field(queue_factory: QueueFactory, make_job: MakeJob) -> None:
    dlq = queue_factory("dead-letters")
    dlq.enqueue(make_job(job_id="from-elsewhere", queue="emails", status=JobStatus.DEAD))
    assert dlq.get_job("from-elsewhere").queue == "emails"
    assert dlq.list_jobs(status=JobStatus.DEAD)[0].job_id == "from-elsewhere"


# -- handles with other codecs (shared stores) ------------------------------------------------


@pytest.fixture
def opened() -> Iterator[Callable[..., Queue]]:
    """``opened(url, name, **kwargs)``: ``open_queue`` whose queues are closed at teardown."""
    made: list[Queue] = []

    def make(url: str, name: str, **kwargs: Any) -> Queue:
        made.append(open_queue(url, name=name, **kwargs))
        return made[-1]

    yield make
    for q in made:
        q.close()


def test_a_handle_with_another_codec_reads_and_writes_the_same_jobs(
    shared_store_url: str, opened: Callable[..., Queue], clock: FakeClock, make_job: MakeJob
) -> None:
    plain = opened(shared_store_url, "q", clock=clock)  # the default: JSON frames
    other = opened(shared_store_url, "q", clock=clock, codec=get_serializer("msgpack+zstd", min_size=0))
    text = "compressible " * 40
    plain.enqueue(make_job(job_id="by-plain", payload={"n": 1, "text": text}, metadata={"m": [1]}))
    clock.advance(1)
    other.enqueue(make_job(job_id="by-other", payload={"n": 2, "text": text}, metadata={"m": [2]}))
    assert other.get_job("by-plain").payload == {"n": 1, "text": text}
    assert plain.get_job("by-other").metadata == {"m": [2]}

    first = other.claim("w", lease_s=30)
    assert first is not None
    assert (first.job.job_id, first.job.payload["n"]) == ("by-plain", 1)
    other.complete("by-plain", token=first.token, result={"done": text})
    second = plain.claim("w", lease_s=30)
    assert second is not None
    assert (second.job.job_id, second.job.payload["text"]) == ("by-other", text)
    plain.complete("by-other", token=second.token, result=[2])
    assert plain.get_job("by-plain").result == {"done": text}
    assert other.get_job("by-other").result == [2]
    for q in (plain, other):
        results = {d["job_id"]: d["result"] for d in q.export_jobs()}
        assert results == {"by-plain": {"done": text}, "by-other": [2]}


# -- processes (shared stores) -----------------------------------------------------------------


N_JOBS = 600


@pytest.mark.timeout(90)
def test_processes_sharing_a_store_take_each_job_once(
    shared_store_url: str, opened: Callable[..., Queue]
) -> None:
    queue = opened(shared_store_url, "drained")  # real time: leases are the children's too
    children = [spawn_module(PROCS, "drain", shared_store_url, "drained") for _ in range(2)]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        queue.enqueue_many([Job(job_type="t", job_id=f"j{i:04d}", payload={"i": i}) for i in range(N_JOBS)])
        for child in children:  # all start together, while this process claims too
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        taken: dict[str, list[str]] = {"parent": []}
        while (claim := queue.claim("parent", lease_s=60)) is not None:
            queue.complete(claim.job.job_id, token=claim.token, result={"pid": os.getpid()})
            taken["parent"].append(claim.job.job_id)
        for child in children:
            out, _ = child.communicate(timeout=60)
            assert child.returncode == 0
            taken[str(child.pid)] = out.split()
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
    claims = Counter(job_id for ids in taken.values() for job_id in ids)
    assert sorted(claims) == [f"j{i:04d}" for i in range(N_JOBS)]
    assert max(claims.values()) == 1, [j for j, n in claims.items() if n > 1]
    assert queue.count_by_status()[JobStatus.COMPLETED] == N_JOBS
    by = {"parent": os.getpid(), **{str(c.pid): c.pid for c in children}}
    for who, ids in taken.items():
        for job_id in ids:
            assert queue.get_job(job_id).result == {"pid": by[who]}


@pytest.mark.timeout(60)
def test_wait_ready_wakes_soon_after_another_process_enqueues(
    shared_store_url: str, opened: Callable[..., Queue]
) -> None:
    queue = opened(shared_store_url, "wake")
    woke: list[tuple[bool, float]] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        ready = queue.wait_ready(60)
        woke.append((ready, time.monotonic()))

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert started.wait(10)
        with spawn_module(PROCS, "enqueue", shared_store_url, "wake", "from-child") as child:
            assert child.wait(timeout=30) == 0
        exited = time.monotonic()
        thread.join(20)
        assert [ready for ready, _ in woke] == [True]
        assert woke[0][1] - exited < 5.0  # the job was there before the child exited
    finally:
        queue.interrupt()
        thread.join(10)
    claim = queue.claim("w", lease_s=10)
    assert claim is not None
    assert claim.job.payload == {"from": child.pid}


@pytest.mark.timeout(60)
def test_wait_ready_wakes_when_a_job_another_process_delayed_falls_due(
    shared_store_url: str, opened: Callable[..., Queue]
) -> None:
    """The wait ends at the due time of a delayed job added by another process after the
    wait began (SQLite: the due time is read again after the other process's commit;
    Redis: the enqueue's wake token), not at the wait's timeout."""
    queue = opened(shared_store_url, "delayed")
    woke: list[tuple[bool, float]] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        begun = time.monotonic()
        ready = False
        while not ready and time.monotonic() - begun < 40:  # a token may end a wait early
            ready = queue.wait_ready(30)
        woke.append((ready, time.monotonic()))

    thread = threading.Thread(target=waiter)
    thread.start()
    try:
        assert started.wait(10)
        with spawn_module(PROCS, "delayed", shared_store_url, "delayed", "later", "0.5") as child:
            assert child.wait(timeout=30) == 0
        exited = time.monotonic()
        thread.join(40)
        assert [ready for ready, _ in woke] == [True]
        assert woke[0][1] - exited < 10.0  # at the due time, not at the 30 s timeout
    finally:
        queue.interrupt()
        thread.join(10)
    claim = queue.claim("w", lease_s=10)
    assert claim is not None
    assert claim.job.job_id == "later"
