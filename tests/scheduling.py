"""Helpers of the scheduler tests (``tests/integration/test_scheduler.py`` on memory, and
the conformance suite's ``test_catch_up.py`` on every backend): schedules declared on a
FakeClock, the slots they fired, and the clock moved pass by pass."""

from __future__ import annotations

from datetime import datetime
from typing import cast
from zoneinfo import ZoneInfo

from typedq.backends.base import Queue, ScheduleEntry
from typedq.clock import FakeClock
from typedq.scheduler import SLOT_KEY, Scheduler, recurrence_of

__all__ = ["BERLIN", "NEW_YORK", "at", "declare", "fired_slots", "run_for"]

BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def at(tz: ZoneInfo, *parts: int) -> float:
    return datetime(*parts, tzinfo=tz).timestamp()  # type: ignore[misc]  # year, month, day, ...


def declare(queue: Queue, clock: FakeClock, name: str = "s", **fields: object) -> ScheduleEntry:
    values: dict[str, object] = {"name": name, "job_type": "tick"}
    values.update(fields)
    values["options"] = {"overlap": True, **cast(dict[str, object], fields.get("options", {}))}
    entry = ScheduleEntry(**values)  # type: ignore[arg-type]  # the fields of ScheduleEntry
    entry.next_run_at = recurrence_of(entry).after(clock.now())
    return queue.put_schedule(entry)


def fired_slots(queue: Queue, name: str | None = None) -> list[float]:
    jobs = queue.list_jobs(limit=100_000)
    return sorted(j.metadata[SLOT_KEY] for j in jobs if name is None or j.job_id.startswith(f"{name}@"))


def run_for(scheduler: Scheduler, clock: FakeClock, seconds: float, step: float) -> None:
    """Move the clock ``seconds`` forward ``step`` at a time, one pass after each step."""
    scheduler.run_once()
    moved = 0.0
    while moved < seconds:
        clock.advance(step)
        moved += step
        scheduler.run_once()
