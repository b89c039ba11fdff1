"""Every number field of a job has a documented range, checked the same on every backend;
every text field holds text that UTF-8 can encode.

A value outside it (``max_retries=10**30``, a negative counter, a timeout of a thousand
years, a time past year 9999) is refused by ``enqueue``, ``enqueue_many`` and
``import_jobs`` with an ``InvalidJobError`` naming the field, the value and the range,
and nothing is stored. The ends of each range are stored and read back exactly, so the
ranges fit every backend's storage (SQLite's 64-bit INTEGER among them).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import InvalidJobError
from typedq.job import (
    MAX_COUNT,
    MAX_EPOCH,
    MAX_PRIORITY,
    MAX_TIMEOUT_S,
    MIN_EPOCH,
    MIN_PRIORITY,
    Job,
)

MakeJob = Callable[..., Job]

COUNTERS = ("max_retries", "retry_count", "attempt", "lost_count")
TIMES = ("created_at", "scheduled_at", "lease_until", "started_at", "finished_at")

#: (field, an out-of-range value, text the error's ``allowed`` must hold).
OUT_OF_RANGE: list[tuple[str, Any, str]] = [
    ("priority", 0, f"from {MIN_PRIORITY}"),
    ("priority", 11, f"to {MAX_PRIORITY}"),
    ("priority", 10**30, f"to {MAX_PRIORITY}"),
    *[
        (name, value, f"from 0 to {MAX_COUNT}")
        for name in COUNTERS
        for value in (-1, MAX_COUNT + 1, 2**63, 10**30)
    ],
    ("timeout_seconds", 0, f"<= {MAX_TIMEOUT_S}"),
    ("timeout_seconds", MAX_TIMEOUT_S + 1, f"<= {MAX_TIMEOUT_S}"),
    ("timeout_seconds", 10**30, f"<= {MAX_TIMEOUT_S}"),
    ("timeout_seconds", 1e300, f"<= {MAX_TIMEOUT_S}"),
    *[
        (name, value, f"from {MIN_EPOCH} to {MAX_EPOCH}")
        for name in TIMES
        for value in (MAX_EPOCH + 1, 2**63, 10**30, MIN_EPOCH - 1.0, 1e300)
    ],
    # Text every backend keeps as UTF-8, which has no form for a lone surrogate (what
    # decoding bytes with "surrogateescape" leaves, a file name's undecodable bytes).
    *[(name, "x\udcff", "UTF-8 can encode") for name in ("job_type", "queue", "error", "worker_id")],
]


def _case_id(case: tuple[str, Any, str]) -> str:
    name, value, _ = case
    return f"{name}={value!r}"[:40]


@pytest.fixture(params=OUT_OF_RANGE, ids=[_case_id(c) for c in OUT_OF_RANGE])
def bad(request: pytest.FixtureRequest) -> tuple[str, Any, str]:
    case: tuple[str, Any, str] = request.param
    return case


def _assert_names_it(error: InvalidJobError, field: str, value: Any, allowed: str) -> None:
    assert isinstance(error, ValueError)
    assert error.field == field
    assert error.value == value
    assert allowed in error.allowed
    text = str(error)
    assert field in text
    assert repr(value)[:20] in text
    assert allowed in text


def _assert_nothing_stored(queue: Queue) -> None:
    assert queue.size == 0
    assert queue.export_jobs() == []


def test_enqueue_refuses_an_out_of_range_value(
    queue: Queue, make_job: MakeJob, bad: tuple[str, Any, str]
) -> None:
    field, value, allowed = bad
    with pytest.raises(InvalidJobError) as info:
        queue.enqueue(make_job(job_id="bad", **{field: value}))
    _assert_names_it(info.value, field, value, allowed)
    _assert_nothing_stored(queue)


def test_enqueue_many_refuses_an_out_of_range_value_and_stores_nothing(
    queue: Queue, make_job: MakeJob, bad: tuple[str, Any, str]
) -> None:
    field, value, allowed = bad
    with pytest.raises(InvalidJobError) as info:
        queue.enqueue_many([make_job(job_id="ok"), make_job(job_id="bad", **{field: value})])
    _assert_names_it(info.value, field, value, allowed)
    _assert_nothing_stored(queue)


def test_import_jobs_refuses_an_out_of_range_value_and_stores_nothing(
    queue: Queue, make_job: MakeJob, bad: tuple[str, Any, str]
) -> None:
    field, value, allowed = bad
    records = [make_job(job_id="ok").to_dict(), {**make_job(job_id="bad").to_dict(), field: value}]
    with pytest.raises(InvalidJobError) as info:
        queue.import_jobs(records)
    _assert_names_it(info.value, f"jobs_data[1].{field}", value, allowed)
    _assert_nothing_stored(queue)


def test_the_ends_of_every_range_are_stored_and_read_back_exactly(
    queue: Queue, queue_factory: Callable[[str], Queue], clock: FakeClock
) -> None:
    high = Job(
        job_id="high",
        job_type="task",
        priority=MAX_PRIORITY,
        created_at=MAX_EPOCH,
        scheduled_at=MAX_EPOCH,
        timeout_seconds=MAX_TIMEOUT_S,
        lease_until=MAX_EPOCH,
        started_at=MAX_EPOCH,
        finished_at=MAX_EPOCH,
        **dict.fromkeys(COUNTERS, MAX_COUNT),
    )
    low = Job(
        job_id="low",
        job_type="task",
        priority=MIN_PRIORITY,
        created_at=MIN_EPOCH,
        scheduled_at=MIN_EPOCH,
        timeout_seconds=1e-9,
        lease_until=MIN_EPOCH,
        started_at=MIN_EPOCH,
        finished_at=MIN_EPOCH,
        **dict.fromkeys(COUNTERS, 0),
    )
    queue.enqueue(high)
    queue.enqueue_many([low])
    for job in (high, low):
        stored = queue.get_job(job.job_id)
        for name in (*COUNTERS, *TIMES, "priority", "timeout_seconds"):
            assert getattr(stored, name) == getattr(job, name), name
    copy = queue_factory("copy")
    copy.import_jobs(queue.export_jobs())
    assert sorted(j.to_dict()["max_retries"] for j in copy.list_jobs()) == [0, MAX_COUNT]

