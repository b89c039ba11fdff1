"""A periodic job whose run outlasts its interval, on a FakeClock (RELIABILITY.md K4).

A ``*/5 * * * *`` schedule's first run takes 17 minutes, across the slots at +5, +10
and +15 minutes; the following runs take one minute. A pool of two workers (claims
with ``lease_s`` far beyond the test, one minute of the clock between passes) has room
for a second job all along, so nothing but the schedule's rule keeps two runs apart.

* By default a schedule never runs twice at once: each slot's job holds the schedule's
  overlap key while PENDING or RUNNING, so the slots that come while a run has not ended
  are skipped (counted as ``overlapping``), not queued behind it, and the next run is
  the first slot after the long one ends.
* With ``overlap=True`` every slot fires at its time, the long run beside them.
* Either way the schedule is never deferred: its next slot never slips past the next
  slot after now.
"""

from __future__ import annotations

import itertools

from typedq.backends._unique import UNIQUE_META
from typedq.backends.base import Queue, ScheduleEntry
from typedq.clock import FakeClock
from typedq.job import JobStatus
from typedq.scheduler import SLOT_KEY, Scheduler, recurrence_of

MINUTE = 60.0
INTERVAL = 5 * MINUTE
#: The first run ends this long after its slot: past the slots at +5, +10 and +15 min.
LONG_RUN = 17 * MINUTE
SHORT_RUN = 1 * MINUTE
#: How far the test drives the clock from the first slot.
HORIZON = 40 * MINUTE
#: Jobs the pool runs at once: room for an overlap if the queue allowed one.
POOL = 2


def declare(queue: Queue, clock: FakeClock, **options: object) -> float:
    """Store a ``*/5`` schedule of "report" jobs; return its first slot, a full interval
    away (the clock is moved to just after a slot)."""
    clock.jump_wall(INTERVAL - clock.now() % INTERVAL + 1)
    entry = ScheduleEntry(name="report", job_type="report", cron="*/5 * * * *", options=dict(options))
    first = recurrence_of(entry).after(clock.now())
    assert first is not None
    entry.next_run_at = first
    queue.put_schedule(entry)
    return first


class Pool:
    """Workers with room for :data:`POOL` jobs at once; the first job runs
    :data:`LONG_RUN`, the others :data:`SHORT_RUN`. Records each run's (start, end)."""

    def __init__(self, queue: Queue, clock: FakeClock) -> None:
        self.queue = queue
        self.clock = clock
        self.running: dict[str, tuple[int, float]] = {}  # job id -> (token, ends at)
        self.runs: dict[str, tuple[float, float | None]] = {}  # job id -> (start, end)

    def step(self) -> None:
        now = self.clock.now()
        for job_id, (token, ends_at) in list(self.running.items()):
            if ends_at <= now:
                self.queue.complete(job_id, token=token)
                del self.running[job_id]
                self.runs[job_id] = (self.runs[job_id][0], now)
        while len(self.running) < POOL:
            claim = self.queue.claim(f"w{len(self.running)}", lease_s=86_400)
            if claim is None:
                break
            took = LONG_RUN if not self.runs else SHORT_RUN
            self.running[claim.job.job_id] = (claim.token, now + took)
            self.runs[claim.job.job_id] = (now, None)

    def slot_of(self, job_id: str) -> float:
        return float(self.queue.get_job(job_id).metadata[SLOT_KEY])


def drive(queue: Queue, clock: FakeClock, first: float) -> tuple[Scheduler, Pool, list[int]]:
    """One scheduler pass and one pool step a minute, from just before ``first`` to
    :data:`HORIZON` after it; returns them and the RUNNING count after each minute."""
    scheduler = Scheduler(lambda: [queue], clock=clock, lock_s=86_400)
    pool = Pool(queue, clock)
    running: list[int] = []
    clock.advance(first - clock.now())
    while clock.now() <= first + HORIZON:
        scheduler.run_once()
        pool.step()
        running.append(queue.count_by_status()[JobStatus.RUNNING])
        next_run_at = queue.get_schedule("report").next_run_at
        assert next_run_at is not None
        assert next_run_at <= clock.now() + INTERVAL  # never deferred past the next slot
        clock.advance(MINUTE)
    return scheduler, pool, running


def test_with_overlap_every_slot_runs_at_its_time_beside_a_long_run(queue: Queue, clock: FakeClock) -> None:
    first = declare(queue, clock, overlap=True)
    scheduler, pool, running = drive(queue, clock, first)
    fired = sorted(pool.slot_of(job_id) for job_id in pool.runs)
    assert fired == [first + k * INTERVAL for k in range(int(HORIZON // INTERVAL) + 1)]
    # Each run starts at its slot: the long run delays none of the ones after it.
    assert all(start == pool.slot_of(job_id) for job_id, (start, _) in pool.runs.items())
    assert max(running) == 2  # allowed: the long run and a slot's
    assert (scheduler.stats.duplicates, scheduler.stats.overlapping, scheduler.stats.missed) == (0, 0, 0)


def test_by_default_a_schedule_never_overlaps_and_runs_at_the_first_slot_after_a_long_run(
    queue: Queue, clock: FakeClock
) -> None:
    first = declare(queue, clock)
    scheduler, pool, running = drive(queue, clock, first)
    assert_one_run_at_a_time(pool, running, first)
    assert (scheduler.stats.overlapping, scheduler.stats.duplicates, scheduler.stats.missed) == (3, 0, 0)
    assert queue.get_schedule("report").last_run_at == first + HORIZON


def test_a_schedule_with_a_unique_key_of_its_own_keeps_it(queue: Queue, clock: FakeClock) -> None:
    """The overlap key is not added: the schedule's own key keeps the runs apart, and a
    slot it refuses is a duplicate of that key's holder."""
    first = declare(queue, clock, metadata={UNIQUE_META: {"key": "schedule:report"}})
    scheduler, pool, running = drive(queue, clock, first)
    assert_one_run_at_a_time(pool, running, first)
    assert (scheduler.stats.duplicates, scheduler.stats.overlapping, scheduler.stats.missed) == (3, 0, 0)


def assert_one_run_at_a_time(pool: Pool, running: list[int], first: float) -> None:
    """A free worker all along, never a second run; the slots at +5, +10 and +15 min came
    while the long run had not ended: refused, not queued behind it (no backlog). The next
    run is the first slot after the long one ended (+17 min): +20, on time; then every
    slot again."""
    assert max(running) == 1
    intervals = sorted((start, end if end is not None else float("inf")) for start, end in pool.runs.values())
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(intervals))
    assert intervals[0] == (first, first + LONG_RUN)
    starts = [start for start, _ in intervals]
    assert starts == [first] + [first + k * INTERVAL for k in range(4, int(HORIZON // INTERVAL) + 1)]
    assert sorted(pool.slot_of(job_id) for job_id in pool.runs) == starts
