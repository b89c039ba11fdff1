"""The scheduler on a FakeClock: daylight saving time, catch-up of missed slots, leaders
and fencing, one slot one job across schedulers (RELIABILITY.md K3, K5, K6).

Nothing runs the jobs fired here, so every schedule allows ``overlap``: these tests are
about which slots fire; a run that has not ended when the next slot comes is
``test_cron_overlap``'s (K4)."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from tests.scheduling import BERLIN, NEW_YORK, at, declare, fired_slots, run_for

from typedq.backends.base import ScheduleEntry
from typedq.backends.memory import JobQueue
from typedq.backends.sqlite import SQLiteQueue
from typedq.clock import FakeClock
from typedq.errors import BackendError
from typedq.scheduler import LEADER_LOCK, Scheduler, recurrence_of, slot_job_id


@pytest.fixture
def queue(clock: FakeClock) -> JobQueue:
    return JobQueue("default", clock=clock)


def local(ts: list[float], tz: ZoneInfo) -> list[str]:
    return [datetime.fromtimestamp(t, tz).isoformat() for t in ts]


# -- daylight saving time (K5) -------------------------------------------------------------


def test_a_berlin_0230_job_runs_once_at_0300_on_the_spring_forward_day(
    queue: JobQueue, clock: FakeClock
) -> None:
    clock.jump_wall(at(BERLIN, 2026, 3, 28, 12) - clock.now())
    declare(queue, clock, cron="30 2 * * *", tz="Europe/Berlin")
    run_for(Scheduler(lambda: [queue], clock=clock, lock_s=86_400), clock, 3 * 86_400, 300)
    assert local(fired_slots(queue), BERLIN) == [
        "2026-03-29T03:00:00+02:00",  # 02:30 does not exist that night
        "2026-03-30T02:30:00+02:00",
        "2026-03-31T02:30:00+02:00",
    ]


def test_a_berlin_0230_job_runs_once_on_the_fall_back_day(queue: JobQueue, clock: FakeClock) -> None:
    clock.jump_wall(at(BERLIN, 2026, 10, 24, 12) - clock.now())
    declare(queue, clock, cron="30 2 * * *", tz="Europe/Berlin")
    run_for(Scheduler(lambda: [queue], clock=clock, lock_s=86_400), clock, 3 * 86_400, 300)
    assert local(fired_slots(queue), BERLIN) == [
        "2026-10-25T02:30:00+02:00",  # the first 02:30 (summer time), not the second
        "2026-10-26T02:30:00+01:00",
        "2026-10-27T02:30:00+01:00",
    ]


def test_dst_both_runs_at_each_0230_of_the_fall_back_day(queue: JobQueue, clock: FakeClock) -> None:
    clock.jump_wall(at(BERLIN, 2026, 10, 24, 12) - clock.now())
    declare(queue, clock, cron="30 2 * * *", tz="Europe/Berlin", dst="both")
    run_for(Scheduler(lambda: [queue], clock=clock, lock_s=86_400), clock, 2 * 86_400, 300)
    assert local(fired_slots(queue), BERLIN) == [
        "2026-10-25T02:30:00+02:00",
        "2026-10-25T02:30:00+01:00",
        "2026-10-26T02:30:00+01:00",
    ]


#: NEW_YORK's offsets: EST before 2026-03-08 02:00 and from 2026-11-01 02:00, EDT between.
EST, EDT = "-05:00", "-04:00"


@pytest.mark.parametrize(
    ("cron", "tz", "expected"),
    [
        # The skipped 02:30 fires once, at 03:00; the repeated 01:30 once, at its first.
        pytest.param(
            "30 2 * * *", NEW_YORK,
            [f"2026-03-08T03:00:00{EDT}", f"2026-03-09T02:30:00{EDT}", f"2026-03-10T02:30:00{EDT}"],
            id="ny-0230-spring",
        ),
        pytest.param(
            "30 1 * * *", NEW_YORK,
            [f"2026-03-08T01:30:00{EST}", f"2026-03-09T01:30:00{EDT}", f"2026-03-10T01:30:00{EDT}"],
            id="ny-0130-spring",
        ),
        pytest.param(
            "30 2 * * *", NEW_YORK,
            [f"2026-11-01T02:30:00{EST}", f"2026-11-02T02:30:00{EST}", f"2026-11-03T02:30:00{EST}"],
            id="ny-0230-fall",
        ),
        pytest.param(
            "30 1 * * *", NEW_YORK,
            [f"2026-11-01T01:30:00{EDT}", f"2026-11-02T01:30:00{EST}", f"2026-11-03T01:30:00{EST}"],
            id="ny-0130-fall",
        ),
        pytest.param(
            "30 2 * * *", ZoneInfo("UTC"),
            ["2026-03-08T02:30:00+00:00", "2026-03-09T02:30:00+00:00", "2026-03-10T02:30:00+00:00"],
            id="utc-spring",
        ),
        pytest.param(
            "30 1 * * *", ZoneInfo("UTC"),
            ["2026-11-01T01:30:00+00:00", "2026-11-02T01:30:00+00:00", "2026-11-03T01:30:00+00:00"],
            id="utc-fall",
        ),
    ],
)
def test_one_fire_per_calendar_day_across_dst(
    queue: JobQueue, clock: FakeClock, cron: str, tz: ZoneInfo, expected: list[str]
) -> None:
    """K5: one fire per calendar day, at the times a reader of the schedule expects; the
    run starts at noon of the day before the first."""
    eve = datetime.fromisoformat(expected[0]).date() - timedelta(days=1)
    clock.jump_wall(at(tz, eve.year, eve.month, eve.day, 12) - clock.now())
    declare(queue, clock, cron=cron, tz=str(tz))
    run_for(Scheduler(lambda: [queue], clock=clock, lock_s=86_400), clock, 3 * 86_400, 600)
    days = [datetime.fromtimestamp(t, tz).date() for t in fired_slots(queue)]
    assert len(days) == 3
    assert len(set(days)) == 3
    assert local(fired_slots(queue), tz) == expected


def test_a_wildcard_hour_keeps_real_intervals_across_fall_back(queue: JobQueue, clock: FakeClock) -> None:
    clock.jump_wall(at(BERLIN, 2026, 10, 25, 0) - clock.now())
    declare(queue, clock, cron="*/30 * * * *", tz="Europe/Berlin")
    run_for(Scheduler(lambda: [queue], clock=clock, lock_s=86_400), clock, 5 * 3600, 60)
    slots = fired_slots(queue)
    assert all(b - a == 1800 for a, b in itertools.pairwise(slots))
    assert len(slots) == 10  # 5 real hours, the repeated hour included


# -- jobs, pauses, leaders -----------------------------------------------------------------


def test_a_fired_job_carries_its_schedule_payload_and_options(queue: JobQueue, clock: FakeClock) -> None:
    declare(
        queue, clock, every_s=10.0, payload={"n": 1},
        options={"priority": 8, "max_retries": 1, "timeout_seconds": 5.0, "metadata": {"k": "v"}},
    )
    slot = queue.get_schedule("s").next_run_at
    assert slot is not None
    clock.advance(10)
    Scheduler(lambda: [queue], clock=clock).run_once()
    job = queue.get_job(slot_job_id("s", slot))
    assert (job.job_type, job.payload, job.priority, job.max_retries, job.timeout_seconds) == (
        "tick", {"n": 1}, 8, 1, 5.0
    )
    assert job.metadata == {"k": "v", "typedq.schedule": "s", "typedq.slot": slot}
    assert job.job_id == f"s@{datetime.fromtimestamp(slot, ZoneInfo('UTC')):%Y%m%dT%H%M%SZ}"
    stored = queue.get_schedule("s")
    assert (stored.last_run_at, stored.next_run_at) == (slot, slot + 10)


def test_a_paused_schedule_does_not_fire(queue: JobQueue, clock: FakeClock) -> None:
    declare(queue, clock, every_s=10.0)
    queue.pause_schedule("s", paused=True)
    run_for(Scheduler(lambda: [queue], clock=clock, lock_s=86_400), clock, 100, 5)
    assert fired_slots(queue) == []


def test_only_the_leader_fires_and_a_follower_takes_over_after_the_lock_expires(
    queue: JobQueue, clock: FakeClock
) -> None:
    declare(queue, clock, every_s=1.0, catch_up="all")
    first, second = (Scheduler(lambda: [queue], clock=clock, lock_s=5.0) for _ in range(2))
    for _ in range(3):
        clock.advance(1)
        first.run_once()
        second.run_once()
    assert first.leads(queue)
    assert not second.leads(queue)
    assert second.stats.fired == 0
    clock.advance(6)  # the leader died: nobody renews its lock
    second.run_once()
    assert second.leads(queue)
    first.run_once()  # back from the dead: its lock expired, its renewal is refused
    assert not first.leads(queue)
    assert first.stats.lost == 1
    slots = fired_slots(queue)
    assert slots == [float(s) for s in range(int(slots[0]), int(slots[-1]) + 1)]  # none lost, none twice
    assert len(slots) == 9


def test_a_slot_enqueued_by_a_leader_that_died_before_recording_it_is_not_run_twice(
    queue: JobQueue, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    declare(queue, clock, every_s=1.0, catch_up="all")
    dying = Scheduler(lambda: [queue], clock=clock, lock_s=2.0)
    real_advance = queue.advance_schedule

    def crash(*args: object, **kwargs: object) -> bool:
        raise BackendError("the process died here")

    monkeypatch.setattr(queue, "advance_schedule", crash)
    clock.advance(1)
    dying.run_once()  # enqueued the slot's job, then "died" before the advance
    monkeypatch.setattr(queue, "advance_schedule", real_advance)
    assert len(fired_slots(queue)) == 1
    clock.advance(2.5)  # its lock expires
    heir = Scheduler(lambda: [queue], clock=clock, lock_s=2.0)
    heir.run_once()
    assert heir.stats.duplicates == 1  # the same slot again: refused by its job id
    assert heir.stats.fired == 2  # the two slots that came since
    slots = fired_slots(queue)
    assert slots == sorted(set(slots))
    assert len(slots) == 3


def test_a_stopped_scheduler_hands_its_leadership_over_at_once(queue: JobQueue, clock: FakeClock) -> None:
    declare(queue, clock, every_s=1.0)
    leader = Scheduler(lambda: [queue], clock=clock)
    leader.run_once()
    assert queue.lock(LEADER_LOCK, 1.0).holder() is not None
    leader.stop()
    assert queue.lock(LEADER_LOCK, 1.0).holder() is None
    follower = Scheduler(lambda: [queue], clock=clock)
    follower.run_once()
    assert follower.leads(queue)


def test_two_schedulers_on_one_sqlite_file_fire_each_of_1000_slots_once(
    tmp_path: Path, clock: FakeClock
) -> None:
    a = SQLiteQueue(tmp_path / "jobs.db", clock=clock)
    b = SQLiteQueue(tmp_path / "jobs.db", clock=clock)
    try:
        declare(a, clock, every_s=1.0, catch_up="all")
        start = a.get_schedule("s").next_run_at
        assert start is not None
        first = Scheduler(lambda: [a], clock=clock, lock_s=3.0)
        second = Scheduler(lambda: [b], clock=clock, lock_s=3.0)
        for step in range(1000):
            clock.advance(1)
            # Every 97 seconds the running leader "dies" for 5 s (longer than its lock).
            down = first if (step // 97) % 2 == 0 else second
            if step % 97 < 5:
                (second if down is first else first).run_once()
                continue
            first.run_once()
            second.run_once()
        clock.advance(1)
        first.run_once()
        second.run_once()
        slots = fired_slots(a)
        assert slots == [start + i for i in range(len(slots))]
        assert len(slots) >= 1000
        assert first.stats.fired + second.stats.fired == len(slots)
        assert first.stats.elected + second.stats.elected > 2  # the lead changed hands
    finally:
        a.close()
        b.close()


def test_every_accepts_timedelta_through_the_rule(clock: FakeClock) -> None:
    entry = ScheduleEntry(name="s", job_type="t", every_s=timedelta(minutes=5).total_seconds())
    assert recurrence_of(entry).after(299.0) == 300.0
