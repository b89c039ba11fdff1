"""Three scheduler processes on one store, the leader killed with ``kill -9`` every few
slots of an every-second schedule: every slot fires exactly once.

Each process runs a :class:`~typedq.scheduler.Scheduler` on the store (SQLite file, or a
Redis prefix of its own) and appends ``<slot> <pid>`` to an ``O_APPEND`` ledger after
each enqueue that succeeded. The harness finds the leader through the lock
(``typedq.scheduler``, whose owner names the pid), kills it, and starts a replacement,
so three processes are always running. The oracle: the ledger holds every slot from the
first to the last exactly once, and the queue holds exactly those slots' jobs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.conformance.conftest import redis_test_url
from tests.helpers import wait_until

from typedq.backends import open_queue
from typedq.backends.base import Queue, ScheduleEntry
from typedq.scheduler import LEADER_LOCK, SLOT_KEY, recurrence_of

pytestmark = [pytest.mark.chaos]

#: The leader lock's time to live in these runs: a killed leader is replaced within it.
LOCK_S = 1.5
#: Kill the leader every this many slots (seconds).
KILL_EVERY = 3

CHILD = """
import os, sys, threading
from typedq.backends import open_queue
from typedq.scheduler import Scheduler
url, ledger, lock_s = sys.argv[1], sys.argv[2], float(sys.argv[3])
queue = open_queue(url, name="default")
fd = os.open(ledger, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
def fired(q, job):
    os.write(fd, f"{job.metadata['typedq.slot']!r} {os.getpid()}\\n".encode())
scheduler = Scheduler(lambda: [queue], clock=queue.clock, lock_s=lock_s, on_fired=fired,
                      owner=f"sched-{os.getpid()}")
scheduler.start()
print("ready", flush=True)
threading.Event().wait()
"""


def _spawn(url: str, ledger: Path, *, ready: bool = True) -> subprocess.Popen[str]:
    """Start a scheduler process; with ``ready``, return once its scheduler runs."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, url, str(ledger), str(LOCK_S)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    if ready:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready"
    return proc


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(10)
    if proc.stdout is not None:
        proc.stdout.close()


def _ledger(path: Path) -> list[float]:
    if not path.exists():
        return []
    return [float(line.split()[0]) for line in path.read_text().splitlines() if line.strip()]


def _leader_pid(queue: Queue) -> int | None:
    held = queue.lock_state(LEADER_LOCK)
    if held is None or not held.owner.startswith("sched-"):
        return None
    return int(held.owner.removeprefix("sched-"))


@pytest.fixture(
    params=[pytest.param("sqlite", id="sqlite"), pytest.param("redis", id="redis", marks=pytest.mark.redis)]
)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    with redis_test_url() as url:
        yield url


def run_with_kills(url: str, tmp_path: Path, slots: int) -> None:
    ledger = tmp_path / "ledger.txt"
    queue = open_queue(url, name="default")
    procs: list[subprocess.Popen[str]] = []
    try:
        entry = ScheduleEntry(
            name="tick", job_type="tick", every_s=1.0, catch_up="all", options={"overlap": True}
        )  # every slot's job, run or not
        entry.next_run_at = recurrence_of(entry).after(time.time() + 1.0)  # after the start-up
        queue.put_schedule(entry)
        first = entry.next_run_at
        assert first is not None
        last = first + slots - 1
        procs = [_spawn(url, ledger) for _ in range(3)]
        kills = 0
        next_kill = first + KILL_EVERY - 0.5
        while time.time() < last:
            time.sleep(0.05)
            if time.time() < next_kill:
                continue
            victim = _leader_pid(queue)
            if victim is None:
                continue  # between leaders: try again in a moment
            os.kill(victim, signal.SIGKILL)
            for proc in list(procs):
                if proc.pid == victim:
                    _stop(proc)
                    procs.remove(proc)
            # Not waited for (start-up takes 0.5 s idle, seconds on a loaded machine): the
            # kills keep their pace, and two processes run meanwhile.
            procs.append(_spawn(url, ledger, ready=False))
            kills += 1
            next_kill = time.time() + KILL_EVERY
        wait_until(
            lambda: last in _ledger(ledger), timeout=LOCK_S + 10, message=f"the last slot {last} fired"
        )
        # Kills come every 3-4 slots (a new leader holds the lock within its time to live).
        assert kills >= max(1, slots // (KILL_EVERY + 2))
        for proc in procs:
            _stop(proc)
        procs = []
        fired = [s for s in _ledger(ledger) if s <= last]
        counts = Counter(fired)
        assert [s for s, n in counts.items() if n > 1] == []  # no slot twice
        assert sorted(counts) == [first + i for i in range(slots)]  # no slot lost
        jobs = queue.list_jobs(limit=10_000)
        stored = sorted(j.metadata[SLOT_KEY] for j in jobs if j.metadata[SLOT_KEY] <= last)
        assert stored == sorted(counts)
    finally:
        for proc in procs:
            _stop(proc)
        queue.close()


def test_three_schedulers_leader_killed_every_few_slots_fire_each_slot_once(url: str, tmp_path: Path) -> None:
    run_with_kills(url, tmp_path, slots=8)


@pytest.mark.slow
@pytest.mark.timeout(180)
def test_sixty_slots_with_the_leader_killed_every_three(url: str, tmp_path: Path) -> None:
    run_with_kills(url, tmp_path, slots=60)
