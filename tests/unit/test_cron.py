"""Slot rules (``typedq._cron``): aliases, seconds, intervals, gaps, bad input."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from typedq._cron import ALIASES, Recurrence, every_seconds, slot_stamp
from typedq.errors import ConfigError

UTC = ZoneInfo("UTC")
T0 = datetime(2026, 6, 1, 10, 17, 23, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("alias", "expression"), sorted(ALIASES.items()))
def test_an_alias_fires_as_its_expression(alias: str, expression: str) -> None:
    assert Recurrence(cron=alias).after(T0) == Recurrence(cron=expression).after(T0)


def test_aliases_land_where_expected() -> None:
    assert Recurrence(cron="@hourly").after(T0) == datetime(2026, 6, 1, 11, tzinfo=UTC).timestamp()
    assert Recurrence(cron="@DAILY").after(T0) == datetime(2026, 6, 2, tzinfo=UTC).timestamp()
    assert Recurrence(cron="@weekly").after(T0) == datetime(2026, 6, 7, tzinfo=UTC).timestamp()  # Sunday


def test_six_fields_have_seconds_first() -> None:
    rule = Recurrence(cron="*/15 * * * * *")
    assert rule.after(T0) == T0 + 7  # 10:17:30
    slots, dropped = rule.due(T0, T0 + 60, keep=10)
    assert [s - T0 for s in slots] == [7, 22, 37, 52]
    assert dropped == 0


def test_slots_are_strictly_after_and_due_includes_both_ends() -> None:
    rule = Recurrence(cron="* * * * *")
    minute = datetime(2026, 6, 1, 10, 18, tzinfo=UTC).timestamp()
    assert rule.after(minute) == minute + 60
    assert rule.due(minute, minute + 120, keep=5) == ([minute, minute + 60, minute + 120], 0)
    assert rule.due(minute, minute - 1, keep=5) == ([], 0)


def test_every_is_aligned_to_the_epoch() -> None:
    rule = Recurrence(every_s=300)
    assert rule.after(T0) == (T0 // 300 + 1) * 300
    slots, dropped = rule.due(0.0, 3000.0, keep=3)
    assert (slots, dropped) == ([2400.0, 2700.0, 3000.0], 8)


@pytest.mark.parametrize(
    ("every", "seconds"), [(timedelta(minutes=5), 300), (1, 1), (60.0, 60), (timedelta(hours=1), 3600)]
)
def test_every_takes_a_timedelta_or_seconds(every: object, seconds: int) -> None:
    assert every_seconds(every) == seconds


@pytest.mark.parametrize("every", [0, 0.5, 1.5, -60, float("inf"), True, "60", timedelta(milliseconds=500)])
def test_a_bad_interval_is_refused(every: object) -> None:
    with pytest.raises(ConfigError, match=r"^every=") as caught:
        every_seconds(every)
    assert caught.value.field == "every"


def test_a_long_gap_keeps_the_latest_slots_without_scanning_them_all() -> None:
    rule = Recurrence(cron="* * * * * *")  # every second: 10 days is 864,000 slots
    slots, dropped = rule.due(T0, T0 + 864_000, keep=3)
    assert slots == [T0 + 863_998, T0 + 863_999, T0 + 864_000]
    assert dropped >= 100_000


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"cron": "0 0 31 2 *"}, "cron"),
        ({"cron": "x y z a b"}, "cron"),
        ({"cron": ""}, "cron"),
        ({"cron": "* * * * *", "tz": "Nowhere/Town"}, "tz"),
        ({"cron": "* * * * *", "tz": ""}, "tz"),
        ({"cron": "* * * * *", "dst": "never"}, "dst"),
        ({}, "cron"),
    ],
)
def test_bad_rules_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as caught:
        Recurrence(**kwargs)  # type: ignore[arg-type]  # bad on purpose
    assert caught.value.field == field


def test_slot_stamp_is_utc() -> None:
    three_in_berlin = datetime(2026, 3, 29, 3, tzinfo=ZoneInfo("Europe/Berlin")).timestamp()
    assert slot_stamp(three_in_berlin) == "20260329T010000Z"
