"""Missed slots of a periodic job (K3), on every backend: after an outage no scheduler
ran through, ``catch_up`` fires none of the missed slots, the latest only, or all of them
(bounded to the latest ``MAX_CATCH_UP``); a slot on time fires under every policy."""

from __future__ import annotations

import pytest
from tests.scheduling import BERLIN, at, declare, fired_slots, run_for

from typedq._cron import MAX_CATCH_UP
from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.scheduler import Scheduler


@pytest.mark.parametrize(("policy", "caught_up"), [("latest", 1), ("all", 36), ("none", 0)])
def test_a_three_hour_outage_is_caught_up_by_policy(
    queue: Queue, clock: FakeClock, policy: str, caught_up: int
) -> None:
    clock.jump_wall(at(BERLIN, 2026, 6, 1, 9, 2) - clock.now())
    declare(queue, clock, cron="*/5 * * * *", tz="Europe/Berlin", catch_up=policy)
    scheduler = Scheduler(lambda: [queue], clock=clock)
    clock.advance(3 * 3600)  # no scheduler ran from 09:02 to 12:02: 36 slots passed
    scheduler.run_once()
    slots = fired_slots(queue)
    assert len(slots) == caught_up
    assert scheduler.stats.missed == 36 - caught_up
    if slots:
        assert slots[-1] == at(BERLIN, 2026, 6, 1, 12, 0)  # the latest missed slot is in
    clock.advance(3 * 60)  # 12:05: back on schedule
    scheduler.run_once()
    assert fired_slots(queue)[-1] == at(BERLIN, 2026, 6, 1, 12, 5)
    assert len(fired_slots(queue)) == caught_up + 1


def test_catch_up_all_is_bounded_to_the_latest_slots(queue: Queue, clock: FakeClock) -> None:
    declare(queue, clock, every_s=60.0, catch_up="all")
    first = queue.get_schedule("s").next_run_at
    assert first is not None
    scheduler = Scheduler(lambda: [queue], clock=clock)
    clock.advance(600 * 60)
    scheduler.run_once()
    slots = fired_slots(queue)
    assert len(slots) == MAX_CATCH_UP
    assert slots[-1] == first + 599 * 60  # the latest ones
    assert scheduler.stats.missed == 600 - MAX_CATCH_UP


def test_a_slot_on_time_fires_under_catch_up_none(queue: Queue, clock: FakeClock) -> None:
    declare(queue, clock, every_s=60.0, catch_up="none")
    scheduler = Scheduler(lambda: [queue], clock=clock)
    run_for(scheduler, clock, 600, 1.0)
    assert len(fired_slots(queue)) == 10
    assert scheduler.stats.missed == 0
