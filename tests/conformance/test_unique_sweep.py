"""The sweep of unique-key entries (``Queue.sweep_unique_keys``): entries that no longer
hold their key (the job ended, was deleted, or its ``for_s`` passed) are removed in
bounded batches, the key is free for a new job after it, and an entry that holds its key
is never removed, not even by a sweep racing the submits. The reaper runs it each pass.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest

from typedq.backends._unique import UNIQUE_META
from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import ConfigError, DuplicateJobError, InvalidJobError
from typedq.job import Job
from typedq.leases import Reaper

MakeJob = Callable[..., Job]


def _unique(key: str, **extra: Any) -> dict[str, Any]:
    return {UNIQUE_META: {"key": key, **extra}}


def _sweep_round(queue: Queue, limit: int = 1000) -> list[int]:
    """One whole round of sweeps; the entries each call removed."""
    removed: list[int] = []
    cursor = ""
    for _ in range(10_000):
        done, cursor = queue.sweep_unique_keys(cursor=cursor, limit=limit)
        removed.append(done)
        if not cursor:
            return removed
    raise AssertionError("the sweep never came round")


def _run_next(queue: Queue, job_id: str) -> None:
    claim = queue.claim("w", lease_s=3600.0)
    assert claim is not None
    assert claim.job.job_id == job_id
    queue.complete(job_id, token=claim.token)


def test_a_sweep_removes_released_entries_and_never_a_held_one(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="done", priority=10, metadata=_unique("done")))
    _run_next(queue, "done")
    queue.enqueue(make_job(job_id="running", priority=10, metadata=_unique("running")))
    assert queue.claim("w", lease_s=3600.0) is not None
    queue.enqueue(make_job(job_id="gone", metadata=_unique("gone")))
    queue.delete("gone")
    queue.enqueue(make_job(job_id="cancelled", metadata=_unique("cancelled")))
    assert queue.cancel("cancelled")
    queue.enqueue(make_job(job_id="timed", metadata=_unique("timed", for_s=10)))
    queue.enqueue(make_job(job_id="pending", metadata=_unique("pending")))
    queue.enqueue(make_job(job_id="hourly", metadata=_unique("hourly", for_s=3600)))
    kept = _unique("kept", states=["PENDING", "RUNNING", "COMPLETED"])
    queue.enqueue(make_job(job_id="kept", priority=10, metadata=kept))
    _run_next(queue, "kept")
    clock.advance(11)

    assert sum(_sweep_round(queue)) == 4  # done, gone, cancelled, timed
    assert sum(_sweep_round(queue)) == 0
    # The held keys still refuse a second job, naming their holder.
    for key in ("running", "pending", "hourly", "kept"):
        with pytest.raises(DuplicateJobError) as info:
            queue.enqueue(make_job(job_id=f"again-{key}", metadata=_unique(key)))
        assert info.value.existing_id == key
    # The swept ones are free.
    for key in ("done", "gone", "cancelled", "timed"):
        queue.enqueue(make_job(job_id=f"again-{key}", metadata=_unique(key)))
    assert sum(_sweep_round(queue)) == 0


def test_a_sweep_goes_in_bounded_batches_from_its_cursor(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    # Over 512 entries (Redis's default hash-max-listpack-entries), so Redis keeps the
    # hash as a table, which HSCAN steps through (a small hash comes back whole).
    n = 1500

    def job(i: int, prefix: str = "j") -> Job:
        timed = {"for_s": 10} if i % 3 == 0 else {}
        return make_job(job_id=f"{prefix}{i:04d}", metadata=_unique(f"k{i:04d}", **timed))

    queue.enqueue_many([job(i) for i in range(n)])
    clock.advance(11)  # every third key's for_s passed
    removed = _sweep_round(queue, limit=100)
    assert sum(removed) == n // 3
    assert len(removed) >= 5  # in several calls, not in one
    assert max(removed) < n // 3
    assert sum(_sweep_round(queue, limit=100)) == 0
    for i in range(0, n, 7):
        if i % 3 == 0:
            queue.enqueue(job(i, "new"))
        else:
            with pytest.raises(DuplicateJobError):
                queue.enqueue(job(i, "new"))


def test_a_sweep_racing_submits_never_frees_a_held_key(queue: Queue, make_job: MakeJob) -> None:
    stop = threading.Event()
    swept: list[int] = []
    errors: list[BaseException] = []

    def sweeper() -> None:
        try:
            while not stop.is_set():
                swept.append(sum(_sweep_round(queue, limit=2)))
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    thread = threading.Thread(target=sweeper)
    thread.start()
    try:
        for i in range(40):
            queue.enqueue(make_job(job_id=f"h{i}", metadata=_unique("k")))
            with pytest.raises(DuplicateJobError) as info:
                queue.enqueue(make_job(job_id=f"x{i}", metadata=_unique("k")))
            assert info.value.existing_id == f"h{i}"
            _run_next(queue, f"h{i}")
    finally:
        stop.set()
        thread.join(10)
    assert not errors
    assert swept  # the sweeper ran meanwhile


def test_the_reaper_sweeps_released_keys_and_rests_after_a_whole_round(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i}", metadata=_unique(f"k{i}")) for i in range(6)])
    for i in range(3):
        queue.delete(f"j{i}")
    reaper = Reaper(lambda: [queue])  # rests a minute after a whole round
    reaper.sweep()
    assert reaper.unique_swept_total == 3
    queue.delete("j3")
    reaper.sweep()
    assert reaper.unique_swept_total == 3  # resting: the next round comes later
    eager = Reaper(lambda: [queue], unique_sweep_rest_s=0)
    eager.sweep()
    assert eager.unique_swept_total == 1
    queue.delete("j4")
    eager.sweep()
    assert eager.unique_swept_total == 2
    assert sum(_sweep_round(queue)) == 0
    with pytest.raises(ConfigError) as info:
        Reaper(lambda: [queue], unique_sweep_rest_s=-1)
    assert "unique_sweep_rest_s" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cursor": 5}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"limit": True}, "limit"),
        ({"limit": 1.5}, "limit"),
    ],
)
def test_bad_sweep_arguments_are_refused_naming_the_field(
    queue: Queue, kwargs: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidJobError) as info:
        queue.sweep_unique_keys(**kwargs)
    assert info.value.field == field
    assert field in str(info.value)
