"""Unique jobs: a job asks for a key (``metadata["typedq.unique"]``); while a job of the
queue holds it (in one of its states, before its ``for_s`` passed), another job with the
key is refused with ``DuplicateJobError`` naming the holder, atomically, in ``enqueue``
and in ``enqueue_many`` (all-or-nothing). Threads and processes racing one key create one
job.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from tests.conformance._procs import race_unique
from tests.conformance.conftest import QueueFactory
from tests.conformance.test_shared_store import PROCS
from tests.helpers import spawn_module

from typedq.backends import open_queue
from typedq.backends._unique import UNIQUE_META
from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import DuplicateJobError, InvalidJobError
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def _unique(key: str, **extra: Any) -> dict[str, Any]:
    return {UNIQUE_META: {"key": key, **extra}}


def _refused(queue: Queue, job: Job) -> DuplicateJobError:
    with pytest.raises(DuplicateJobError) as info:
        queue.enqueue(job)
    return info.value


def test_a_second_job_with_a_held_key_is_refused_naming_the_holder(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="first", metadata=_unique("report:12")))
    error = _refused(queue, make_job(job_id="second", metadata=_unique("report:12")))
    assert (error.field, error.unique_key, error.existing_id, error.job_id) == (
        "unique_key", "report:12", "first", "second",
    )
    assert "report:12" in str(error)
    assert "first" in str(error)
    assert isinstance(error, ValueError)
    assert queue.size == 1
    with pytest.raises(KeyError):
        queue.get_job("second")
    # Other keys, and jobs without one, are not affected.
    queue.enqueue(make_job(job_id="other", metadata=_unique("report:13")))
    queue.enqueue(make_job(job_id="plain"))
    assert queue.size == 3


def test_the_key_is_held_while_running_and_released_when_the_job_ends(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="a", metadata=_unique("k")))
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    assert _refused(queue, make_job(job_id="b", metadata=_unique("k"))).existing_id == "a"
    queue.complete("a", token=claim.token)
    queue.enqueue(make_job(job_id="b", metadata=_unique("k")))
    # Now "b" holds it: a retry (fail) keeps the job PENDING and the key held.
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    queue.fail("b", token=claim.token, error="boom", retry_at=queue.clock.now())
    assert _refused(queue, make_job(job_id="c", metadata=_unique("k"))).existing_id == "b"
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    queue.bury("b", token=claim.token, error="dead")
    queue.enqueue(make_job(job_id="c", metadata=_unique("k")))
    assert queue.cancel("c")
    queue.enqueue(make_job(job_id="d", metadata=_unique("k")))
    queue.delete("d")
    queue.enqueue(make_job(job_id="e", metadata=_unique("k")))
    assert queue.get_job("e").status is JobStatus.PENDING


def test_for_s_releases_the_key_after_that_many_seconds(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="a", metadata=_unique("k", for_s=60)))
    clock.advance(59.5)
    assert _refused(queue, make_job(job_id="b", metadata=_unique("k", for_s=60))).existing_id == "a"
    clock.advance(1)
    queue.enqueue(make_job(job_id="b", metadata=_unique("k", for_s=60)))
    assert queue.get_job("a").status is JobStatus.PENDING  # still there, key released
    assert _refused(queue, make_job(job_id="c", metadata=_unique("k"))).existing_id == "b"


def test_states_decide_when_the_key_is_held(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    # Held only while PENDING: a running job no longer blocks the next one.
    queue.enqueue(make_job(job_id="a", metadata=_unique("p", states=["PENDING"])))
    assert _refused(queue, make_job(job_id="b", metadata=_unique("p"))).existing_id == "a"
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    queue.enqueue(make_job(job_id="b", metadata=_unique("p")))
    # Held through completion too, for an hour: "once per hour" jobs.
    hourly = _unique("hourly", for_s=3600, states=["PENDING", "RUNNING", "COMPLETED"])
    queue.enqueue(make_job(job_id="h1", metadata=hourly))
    claim = queue.claim("w", lease_s=30, job_types=["task"])
    while claim is not None and claim.job.job_id != "h1":
        claim = queue.claim("w", lease_s=30)
    assert claim is not None
    queue.complete("h1", token=claim.token)
    assert _refused(queue, make_job(job_id="h2", metadata=_unique("hourly"))).existing_id == "h1"
    clock.advance(3601)
    queue.enqueue(make_job(job_id="h2", metadata=_unique("hourly")))


def test_a_job_not_in_its_states_takes_no_key(queue: Queue, make_job: MakeJob) -> None:
    # An imported COMPLETED job (default states PENDING, RUNNING) holds nothing.
    queue.enqueue(make_job(job_id="old", status=JobStatus.COMPLETED, metadata=_unique("k")))
    queue.enqueue(make_job(job_id="new", metadata=_unique("k")))
    assert _refused(queue, make_job(job_id="newer", metadata=_unique("k"))).existing_id == "new"


def test_keys_belong_to_their_queue(queue_factory: QueueFactory, make_job: MakeJob) -> None:
    a, b = queue_factory("a"), queue_factory("b")
    a.enqueue(make_job(job_id="x", metadata=_unique("k")))
    b.enqueue(make_job(job_id="y", metadata=_unique("k")))
    assert _refused(a, make_job(job_id="z", metadata=_unique("k"))).existing_id == "x"
    assert _refused(b, make_job(job_id="z", metadata=_unique("k"))).existing_id == "y"


def test_enqueue_many_is_all_or_nothing_with_unique_keys(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="holder", metadata=_unique("taken")))
    batch = [
        make_job(job_id="b1", metadata=_unique("free")),
        make_job(job_id="b2"),
        make_job(job_id="b3", metadata=_unique("taken")),
    ]
    with pytest.raises(DuplicateJobError) as info:
        queue.enqueue_many(batch)
    assert (info.value.job_id, info.value.unique_key, info.value.existing_id) == ("b3", "taken", "holder")
    assert queue.size == 1
    # Nothing of the refused batch holds a key.
    queue.enqueue(make_job(job_id="f", metadata=_unique("free")))
    # Two jobs of one batch with one key: the later one is refused, naming the earlier.
    with pytest.raises(DuplicateJobError) as info:
        queue.enqueue_many([
            make_job(job_id="c1", metadata=_unique("twice")),
            make_job(job_id="c2", metadata=_unique("twice")),
        ])
    assert (info.value.job_id, info.value.existing_id) == ("c2", "c1")
    assert queue.size == 2
    ids = queue.enqueue_many([
        make_job(job_id="d1", metadata=_unique("d1")),
        make_job(job_id="d2", metadata=_unique("d2"), depends_on=["d1"]),
    ])
    assert ids == ["d1", "d2"]
    assert _refused(queue, make_job(job_id="d3", metadata=_unique("d2"))).existing_id == "d2"


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("k", "metadata['typedq.unique']"),
        ({"key": ""}, "metadata['typedq.unique']['key']"),
        ({"key": "a\tb"}, "metadata['typedq.unique']['key']"),
        ({"key": "k", "for_s": -1}, "metadata['typedq.unique']['for_s']"),
        ({"key": "k", "states": ["WAITING"]}, "metadata['typedq.unique']['states']"),
        ({"key": "k", "states": []}, "metadata['typedq.unique']['states']"),
        ({"key": "k", "extra": 1}, "metadata['typedq.unique']"),
    ],
)
def test_a_malformed_unique_entry_is_refused_naming_it(
    queue: Queue, make_job: MakeJob, entry: object, field: str
) -> None:
    with pytest.raises(InvalidJobError) as info:
        queue.enqueue(make_job(job_id="bad", metadata={UNIQUE_META: entry}))
    assert info.value.field == field
    with pytest.raises(InvalidJobError):
        queue.enqueue_many([make_job(job_id="ok"), make_job(job_id="bad", metadata={UNIQUE_META: entry})])
    assert queue.size == 0


THREADS = 8
SUBMITS = 1000




def _one_winner(lines: list[str], n: int) -> str:
    assert len(lines) == n
    added = [line.split()[1] for line in lines if line.startswith("added ")]
    assert len(added) == 1, added
    held = Counter(line.split()[1] for line in lines if line.startswith("held "))
    assert held == {added[0]: n - 1}
    return added[0]


@pytest.mark.timeout(60)
def test_threads_racing_one_key_create_exactly_one_job(queue: Queue) -> None:
    winner = _one_winner(race_unique(queue, "race", SUBMITS, THREADS), SUBMITS)
    assert queue.size == 1
    assert queue.get_job(winner).metadata[UNIQUE_META]["key"] == "race"


@pytest.mark.timeout(60)
def test_threads_racing_batches_with_one_key_store_one_batch_whole(queue: Queue) -> None:
    # Each batch holds the raced key between two jobs of its own: the one batch that takes
    # the key is stored whole, every other one not at all (no job of it, no key held).
    barrier = threading.Barrier(THREADS)
    numbers = itertools.count()
    won: list[list[str]] = []
    holders: list[str | None] = []

    def submit() -> None:
        barrier.wait()
        for _ in range(SUBMITS // THREADS):
            n, now = next(numbers), queue.clock.now()
            batch = [
                Job(job_type="t", job_id=f"a{n}", created_at=now),
                Job(job_type="t", job_id=f"k{n}", metadata=_unique("race"), created_at=now),
                Job(job_type="t", job_id=f"z{n}", metadata=_unique(f"own{n}"), created_at=now),
            ]
            try:
                won.append(queue.enqueue_many(batch))
            except DuplicateJobError as exc:
                holders.append(exc.existing_id)

    threads = [threading.Thread(target=submit) for _ in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(50)
    assert len(won) == 1, won
    [ids] = won
    assert len(holders) == SUBMITS - 1
    assert set(holders) == {ids[1]}
    assert queue.size == 3
    assert sorted(job.job_id for job in queue.list_jobs()) == sorted(ids)
    # The refused batches' own keys were never taken.
    n = int(ids[0][1:])
    free = next(i for i in range(SUBMITS) if i != n)
    late = Job(job_type="t", job_id="late", metadata=_unique(f"own{free}"), created_at=queue.clock.now())
    assert queue.enqueue(late) == "late"


@pytest.mark.timeout(90)
def test_processes_and_threads_racing_one_key_create_exactly_one_job(shared_store_url: str) -> None:
    queue = open_queue(shared_store_url, name="raced")
    per_child = 150
    argv = ("unique", shared_store_url, "raced", "race", str(per_child), "2")
    children = [spawn_module(PROCS, *argv) for _ in range(4)]
    try:
        for child in children:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
        for child in children:  # all start together, while this process submits too
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.flush()
        here = SUBMITS - 4 * per_child
        lines = race_unique(queue, "race", here, THREADS)
        for child in children:
            out, _ = child.communicate(timeout=60)
            assert child.returncode == 0
            lines += out.splitlines()
        _one_winner(lines, SUBMITS)
        assert queue.size == 1
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait(10)
        queue.close()


@pytest.mark.timeout(60)
def test_a_key_released_by_completion_is_taken_by_one_racing_submit_at_a_time(queue: Queue) -> None:
    """4 threads submit one key while a fifth claims and completes its jobs: each job with
    the key was added only after the one before it was completed (never two holders)."""
    added: list[tuple[float, str]] = []  # (when enqueue returned, id)
    completing: dict[str, float] = {}  # id -> when complete() was called
    stop = threading.Event()
    barrier = threading.Barrier(5)
    errors: list[BaseException] = []

    def submit() -> None:
        barrier.wait()
        # Keep submitting until the key has changed hands a few times (or 20 s pass): a
        # fixed number of attempts can all happen before the worker's first claim.
        deadline = time.monotonic() + 20
        while len(added) < 5 and time.monotonic() < deadline:
            time.sleep(0.0005)
            job = Job(job_type="t", metadata=_unique("rolling"), created_at=queue.clock.now())
            try:
                job_id = queue.enqueue(job)
            except DuplicateJobError:
                continue
            added.append((time.monotonic(), job_id))

    def work() -> None:
        barrier.wait()
        try:
            while not stop.is_set():
                claim = queue.claim("w", lease_s=60)
                if claim is None:
                    queue.wait_ready(0.005)
                    continue
                completing[claim.job.job_id] = time.monotonic()
                queue.complete(claim.job.job_id, token=claim.token)
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=work)
    submitters = [threading.Thread(target=submit) for _ in range(4)]
    worker.start()
    for thread in submitters:
        thread.start()
    for thread in submitters:
        thread.join(60)
    stop.set()
    worker.join(30)
    assert errors == []
    assert len(added) >= 5  # the key was taken again after each completion
    # A job holds the key from its enqueue (done by the time enqueue returned) until its
    # completion (begun no earlier than complete() was called). Two jobs both returned from
    # enqueue before either's completion began would have held the key at once.
    never = float("inf")
    for (a_added, a), (b_added, b) in itertools.combinations(added, 2):
        both_added = max(a_added, b_added)
        first_release = min(completing.get(a, never), completing.get(b, never))
        assert both_added >= first_release, f"{a} and {b} held the key at once"
    assert queue.size == len(added)
