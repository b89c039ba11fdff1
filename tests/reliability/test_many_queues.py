"""L4 (RELIABILITY.md §4b): many queues. A manager's registry holds 1,000 named queues, then
they are dropped; 20 rounds, on the memory and SQLite backends. After every round the live
objects count exactly as before it.

Two ways to drop them: with the manager holding them (``close()``, then the last
reference let go), and one at a time from a manager that lives on
(``JobQueueManager.close_queue``). Each round also starts a worker on one of its queues
and runs a job there, so the manager's threads (the worker, the lease keeper, the reaper,
the scheduler, which goes through every queue) ran and must have ended (the live
manager's reaper goes on: it is in the baseline).

What is checked, after ``gc.collect()``:

* every round: the registry held each name once while the manager lived; then the
  manager, every queue and the dead-letter queue are dead (weak references); the live
  objects of typedq's, ``threading``'s, SQLite's and ``concurrent.futures``' types, by
  type, the running threads (``threading.active_count()``) and the open file descriptors
  (``/proc/self/fd``) are as before the first round. Everything alive after a warm-up
  round (imports, what a process creates once) is set aside with ``gc.freeze()``, so the
  collection and the count only go through what the rounds made;
* after the 20 rounds, the whole process against the baseline taken after the warm-up,
  and the lock objects (``_thread.lock``, ``_thread.RLock``) too: locks are not tracked
  by the collector, so they are found among the referents of the objects it tracks. A
  lock left behind by a round adds up over 20 rounds.

SQLite opens a connection per queue and thread that uses it (2 descriptors each): its
1,000-queue rounds take tens of seconds and are in the slow tier; the fast tier runs the
same 20 rounds with 30 queues each.
"""

from __future__ import annotations

import gc
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from typedq import JobQueueManager, JobStatus

pytestmark = pytest.mark.timeout(120)

ROUNDS = 20
#: The modules whose live objects are counted by type.
COUNTED_MODULES = ("typedq", "threading", "sqlite3", "pysqlite3", "concurrent.futures")
LOCK_TYPES = (type(threading.Lock()), type(threading.RLock()))


def live_counts(*, locks: bool) -> Counter[str]:
    """What this process holds now, after ``gc.collect()``: the objects of the counted
    modules by type among those the collector tracks (not those ``gc.freeze()`` set
    aside), with ``locks`` the lock objects they hold, and the running threads and open
    file descriptors."""
    gc.collect()
    counts: Counter[str] = Counter()
    held: dict[int, object] = {}
    for obj in gc.get_objects():
        kind = type(obj)
        module: object = kind.__module__  # a descriptor, not a string, on a few builtin types
        if isinstance(module, str) and module.startswith(COUNTED_MODULES):
            counts[f"{module}.{kind.__qualname__}"] += 1
        if locks:
            for ref in gc.get_referents(obj):
                if type(ref) in LOCK_TYPES:
                    held[id(ref)] = ref
    for lock in held.values():
        counts[f"held {type(lock).__qualname__}"] += 1
    counts["threads running"] = threading.active_count()
    counts["file descriptors"] = len(os.listdir("/proc/self/fd"))
    return counts


def differences(baseline: Counter[str], now: Counter[str]) -> dict[str, tuple[int, int]]:
    """The counts that differ: name -> (baseline, now)."""
    return {key: (baseline[key], now[key]) for key in baseline | now if baseline[key] != now[key]}


def run_round(backend: str, round_no: int, queues: int) -> list[weakref.ref[object]]:
    """Fill one manager with ``queues`` named queues, run a job on one of them, close the
    manager; return weak references to the manager and every queue it held."""
    manager = JobQueueManager({"backend": backend, "max_workers": 1, "poll_interval": 0.01})
    names = [f"r{round_no}-q{i}" for i in range(queues)]
    refs: list[weakref.ref[object]] = [weakref.ref(manager)]
    refs += [weakref.ref(manager.create_queue(name)) for name in names]
    refs.append(weakref.ref(manager.get_dead_letter_queue()))
    # The registry holds each name once, "default" too.
    assert sorted(manager.queues) == sorted([*names, "default"])
    assert set(manager._queue_settings) == {*names, "default"}
    manager.register_handler("echo", lambda payload: payload["n"], queue=names[-1])
    manager.start_workers(names[-1])
    job_id = manager.submit("echo", {"n": round_no})
    assert manager.wait_for_completion([job_id], timeout=10)
    assert manager.get_queue(names[-1]).get_job(job_id).status is JobStatus.COMPLETED
    assert manager.close(timeout=10) == []
    return refs


def close_round(manager: JobQueueManager, round_no: int, queues: int) -> list[weakref.ref[object]]:
    """``queues`` named queues in ``manager``, a job run on one of them, then each one
    closed with ``close_queue``; return weak references to the queues."""
    names = [f"r{round_no}-q{i}" for i in range(queues)]
    refs: list[weakref.ref[object]] = [weakref.ref(manager.create_queue(name)) for name in names]
    assert sorted(manager.queues) == sorted([*names, "default"])
    manager.register_handler("echo", lambda payload: payload["n"], queue=names[-1])
    manager.start_workers(names[-1])
    job_id = manager.submit("echo", {"n": round_no})
    assert manager.wait_for_completion([job_id], timeout=10)
    for name in names:
        assert manager.close_queue(name, timeout=10) == []
    manager._reaper.sweep()  # a pass after the closes (its thread's passes are kept out)
    assert sorted(manager.queues) == ["default"]
    assert set(manager._queue_settings) == {"default"}
    return refs


STORES = [
    pytest.param("memory", 1_000, id="memory-1000"),
    pytest.param("sqlite", 30, id="sqlite-30"),
    pytest.param("sqlite", 1_000, id="sqlite-1000", marks=pytest.mark.slow),
]


@pytest.mark.parametrize(("store", "queues"), STORES)
def test_dropped_queues_leave_no_object_lock_thread_or_descriptor(
    store: str, queues: int, tmp_path: Path
) -> None:
    backend = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'many.db'}"
    check_rounds(lambda round_no: run_round(backend, round_no, queues))


@pytest.mark.parametrize(("store", "queues"), STORES)
def test_queues_closed_in_a_live_manager_leave_no_object_lock_thread_or_descriptor(
    store: str, queues: int, tmp_path: Path
) -> None:
    backend = "memory://" if store == "memory" else f"sqlite:///{tmp_path / 'many.db'}"
    # The reaper's thread makes no pass during the rounds: a pass holds every queue it goes
    # through, and one under way while a round is counted would count as a leak. The
    # rounds make its pass themselves, in this thread.
    manager = JobQueueManager(
        {"backend": backend, "max_workers": 1, "poll_interval": 0.01, "reaper_s": 3600.0}
    )
    try:
        check_rounds(lambda round_no: close_round(manager, round_no, queues))
    finally:
        manager.close(graceful=False)


def check_rounds(round_: Callable[[int], list[weakref.ref[object]]]) -> None:
    """A warm-up round, then :data:`ROUNDS` rounds of ``round_(round_no)``: after each, the
    objects it returns references to are dead and the live counts are as before it;
    after the last, as before the first, locks included."""
    warm_up = round_(-1)
    gc.collect()
    # Its own objects, not every manager of the process: the tests run before this one in
    # the same process may keep theirs (their fixtures, captured tracebacks).
    assert [ref() for ref in warm_up if ref() is not None] == [], "the warm-up round's objects are alive"
    baseline = live_counts(locks=True)
    # Every object alive now is set aside (the conftest undoes it after the test): each
    # round's collection and count then only go through what the rounds made.
    gc.freeze()
    young = live_counts(locks=False)
    for round_no in range(ROUNDS):
        refs = round_(round_no)
        gc.collect()
        alive = [ref() for ref in refs if ref() is not None]
        assert alive == [], f"round {round_no}: {len(alive)} of {len(refs)} objects still alive"
        assert differences(young, live_counts(locks=False)) == {}, f"round {round_no}: (before, now)"
    # Everything again, locks included: what a round left behind adds up over 20 rounds.
    gc.unfreeze()
    assert differences(baseline, live_counts(locks=True)) == {}, "(baseline, after 20 rounds)"
