"""Stored schedules (``Queue.put_schedule`` and friends): declared idempotently, listed,
paused, removed, and advanced by a compare-and-set fenced by a lock."""

from __future__ import annotations

import pytest
from tests.conformance.conftest import QueueFactory

from typedq.backends.base import Queue, ScheduleEntry
from typedq.backends.memory import JobQueue
from typedq.clock import FakeClock
from typedq.errors import ConfigError, ScheduleNotFoundError

T0 = 1_800_000_000.0


def entry(name: str = "nightly", **fields: object) -> ScheduleEntry:
    values: dict[str, object] = {
        "name": name,
        "job_type": "report",
        "cron": "30 2 * * *",
        "tz": "Europe/Berlin",
        "payload": {"to": "ops@example.com", "ratio": 0.1 + 0.2, "big": 2**60, "text": "grüße ✓"},
        "options": {"priority": 7, "metadata": {"team": "ops"}},
        "catch_up": "latest",
        "next_run_at": T0 + 60,
    }
    values.update(fields)
    return ScheduleEntry(**values)  # type: ignore[arg-type]  # the fields of ScheduleEntry


def test_a_new_schedule_is_stored_as_given(queue: Queue) -> None:
    given = entry()
    assert queue.put_schedule(given) == given
    assert queue.get_schedule("nightly") == given
    assert queue.get_schedule("nightly").payload["ratio"] == 0.1 + 0.2  # exact, not rounded
    assert queue.list_schedules() == [given]


def test_schedules_are_listed_by_name(queue: Queue) -> None:
    for name in ("b", "c", "a"):
        queue.put_schedule(entry(name, every_s=60.0, cron=None))
    assert [s.name for s in queue.list_schedules()] == ["a", "b", "c"]


def test_declaring_the_same_definition_again_keeps_the_state(queue: Queue) -> None:
    queue.put_schedule(entry())
    assert queue.advance_schedule("nightly", expected=T0 + 60, next_run_at=T0 + 120, last_run_at=T0 + 60)
    queue.pause_schedule("nightly", paused=True)
    again = queue.put_schedule(entry(next_run_at=T0 + 999))  # a process that started later
    assert (again.next_run_at, again.last_run_at, again.paused) == (T0 + 120, T0 + 60, True)


def test_a_changed_definition_replaces_it_and_its_next_run(queue: Queue) -> None:
    queue.put_schedule(entry())
    queue.advance_schedule("nightly", expected=T0 + 60, next_run_at=T0 + 120, last_run_at=T0 + 60)
    queue.pause_schedule("nightly", paused=True)
    changed = queue.put_schedule(entry(cron="0 3 * * *", next_run_at=T0 + 500))
    assert changed.cron == "0 3 * * *"
    assert changed.next_run_at == T0 + 500
    assert changed.last_run_at == T0 + 60  # kept
    assert changed.paused  # kept: a deploy does not resume what an operator paused


def test_an_unknown_schedule_is_a_key_error_naming_it(queue: Queue) -> None:
    with pytest.raises(ScheduleNotFoundError, match="no schedule named 'ghost'") as caught:
        queue.get_schedule("ghost")
    assert isinstance(caught.value, KeyError)
    with pytest.raises(ScheduleNotFoundError):
        queue.pause_schedule("ghost", paused=True)
    assert not queue.remove_schedule("ghost")
    assert not queue.advance_schedule("ghost", expected=T0, next_run_at=T0 + 1, last_run_at=T0)


def test_pause_and_resume_at_a_new_next_run(queue: Queue) -> None:
    queue.put_schedule(entry())
    paused = queue.pause_schedule("nightly", paused=True)
    assert paused.paused
    assert paused.next_run_at == T0 + 60
    resumed = queue.pause_schedule("nightly", paused=False, next_run_at=T0 + 3600)
    assert not resumed.paused
    assert resumed.next_run_at == T0 + 3600
    assert queue.get_schedule("nightly") == resumed


def test_remove_deletes_a_schedule(queue: Queue) -> None:
    queue.put_schedule(entry())
    assert queue.remove_schedule("nightly")
    assert not queue.remove_schedule("nightly")
    assert queue.list_schedules() == []
    with pytest.raises(ScheduleNotFoundError):
        queue.get_schedule("nightly")


def test_advance_is_a_compare_and_set_on_next_run(queue: Queue) -> None:
    queue.put_schedule(entry())
    assert queue.advance_schedule("nightly", expected=T0 + 60, next_run_at=T0 + 120, last_run_at=T0 + 60)
    # A second scheduler that read the old state is refused; nothing changes.
    assert not queue.advance_schedule("nightly", expected=T0 + 60, next_run_at=T0 + 120, last_run_at=T0 + 60)
    stored = queue.get_schedule("nightly")
    assert (stored.next_run_at, stored.last_run_at) == (T0 + 120, T0 + 60)
    assert queue.advance_schedule("nightly", expected=T0 + 120, next_run_at=None, last_run_at=T0 + 120)
    assert queue.get_schedule("nightly").next_run_at is None  # the rule never fires again


def test_advance_is_fenced_by_the_leader_lock(queue: Queue, clock: FakeClock) -> None:
    queue.put_schedule(entry())
    old = queue.lock("typedq.scheduler", 10.0)
    token = old.acquire("old-leader")
    assert token is not None
    clock.advance(11.0)  # the old leader paused past its deadline
    new_token = queue.lock("typedq.scheduler", 10.0).acquire("new-leader")
    assert new_token is not None
    stale = ("typedq.scheduler", token)
    assert not queue.advance_schedule(
        "nightly", expected=T0 + 60, next_run_at=T0 + 120, last_run_at=T0 + 60, fence=stale
    )
    assert queue.get_schedule("nightly").next_run_at == T0 + 60
    fresh = ("typedq.scheduler", new_token)
    assert queue.advance_schedule(
        "nightly", expected=T0 + 60, next_run_at=T0 + 120, last_run_at=T0 + 60, fence=fresh
    )
    clock.advance(11.0)  # an expired lock fences too, even with nobody else in it
    assert not queue.advance_schedule(
        "nightly", expected=T0 + 120, next_run_at=T0 + 180, last_run_at=T0 + 120, fence=fresh
    )


def test_every_queue_object_on_a_store_sees_its_schedules(queue: Queue, queue_factory: QueueFactory) -> None:
    queue.put_schedule(entry())
    other = queue if isinstance(queue, JobQueue) else queue_factory("conf")
    assert other.get_schedule("nightly") == entry()
    assert other.advance_schedule("nightly", expected=T0 + 60, next_run_at=T0 + 120, last_run_at=T0 + 60)
    assert queue.get_schedule("nightly").next_run_at == T0 + 120


def test_a_stored_schedule_is_a_copy(queue: Queue) -> None:
    given = entry()
    queue.put_schedule(given)
    given.payload["to"] = "changed"
    assert queue.get_schedule("nightly").payload["to"] == "ops@example.com"


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        pytest.param({"name": ""}, "name", id="empty-name"),
        pytest.param({"name": "a" * 101}, "name", id="long-name"),
        pytest.param({"name": "has space"}, "name", id="space"),
        pytest.param({"name": "a@b"}, "name", id="at-sign"),
        pytest.param({"payload": {"when": object()}}, "payload", id="not-json"),
        pytest.param({"payload": {"x": float("nan")}}, "payload", id="nan"),
    ],
)
def test_a_bad_schedule_is_refused_and_nothing_is_stored(
    queue: Queue, fields: dict[str, object], field: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        queue.put_schedule(entry(**fields))
    assert caught.value.field == field
    assert queue.list_schedules() == []
