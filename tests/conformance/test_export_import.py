"""export_jobs / import_jobs: JSON-safe snapshots that restore equal jobs, all-or-nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from typedq.backends.base import Queue
from typedq.clock import FakeClock
from typedq.errors import DuplicateJobError, InvalidJobError, JobNotFoundError
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]
QueueFactory = Callable[[str], Queue]

NESTED: dict[str, Any] = {
    "str": "héllo \u2603 \U0001f600 \x00 nul",
    "int": -(2**53),
    "float": 0.1 + 0.2,
    "bool": True,
    "none": None,
    "list": [1, [2, [3, {"deep": [None, False, "x"]}]]],
    "dict": {"a": {"b": {"c": {"d": [1.5e300, -0.0, 7]}}}},
    "empty": {"list": [], "dict": {}},
}


def _populate(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    """Jobs in every state, with nested payloads, metadata and results."""

    def add(job_id: str, **fields: Any) -> None:
        queue.enqueue(make_job(job_id=job_id, **fields))
        clock.advance(1)

    add("done", payload=NESTED, metadata={"tenant": "t1", "tags": ["a", "b"]}, priority=9)
    add("pending", payload={"n": 1}, metadata=NESTED, max_retries=7, timeout_seconds=2.5)
    add("delayed", scheduled_at=clock.now() + 3600, priority=2)
    add("running", priority=8)
    add("parent", priority=1)
    add("blocked", depends_on=["parent", "done"])
    add("dead", status=JobStatus.DEAD, error="Traceback: boom", retry_count=3)
    add("held", status=JobStatus.SCHEDULED)
    add("cancelled")
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    assert claim.job.job_id == "done"
    queue.complete("done", token=claim.token, result={"out": NESTED, "n": [1, 2]})
    running = queue.claim("w", lease_s=30)
    assert running is not None
    assert running.job.job_id == "running"
    queue.cancel("cancelled")


def test_export_is_json_serialisable_and_oldest_first(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    _populate(queue, make_job, clock)
    exported = queue.export_jobs()
    text = json.dumps(exported, allow_nan=False)
    assert json.loads(text) == exported
    assert [d["job_id"] for d in exported] == [
        "done", "pending", "delayed", "running", "parent", "blocked", "dead", "held", "cancelled",
    ]
    assert all(isinstance(d["status"], str) for d in exported)
    assert {d["job_id"]: d["status"] for d in exported}["running"] == "RUNNING"


def test_export_is_a_snapshot(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j", payload={"list": [1]}))
    exported = queue.export_jobs()
    exported[0]["payload"]["list"].append(2)
    assert queue.get_job("j").payload == {"list": [1]}


def test_export_then_import_round_trips_equal_jobs(
    queue: Queue, queue_factory: QueueFactory, make_job: MakeJob, clock: FakeClock
) -> None:
    _populate(queue, make_job, clock)
    exported = json.loads(json.dumps(queue.export_jobs()))
    fresh = queue_factory("restored")
    ids = fresh.import_jobs(exported)
    assert ids == [d["job_id"] for d in exported]
    assert fresh.size == queue.size
    for job_id in ids:
        assert fresh.get_job(job_id) == queue.get_job(job_id), job_id
    assert fresh.get_job("done").payload == NESTED
    assert fresh.get_job("pending").metadata == NESTED
    assert fresh.get_job("done").result == {"out": NESTED, "n": [1, 2]}
    assert fresh.count_by_status() == queue.count_by_status()
    assert fresh.ready_count() == queue.ready_count()
    assert fresh.export_jobs() == queue.export_jobs()


def test_imported_jobs_keep_running(
    queue: Queue, queue_factory: QueueFactory, make_job: MakeJob, clock: FakeClock
) -> None:
    _populate(queue, make_job, clock)
    fresh = queue_factory("restored")
    fresh.import_jobs(queue.export_jobs())
    # Same order of work, and dependencies still hold.
    order = [c.job.job_id for c in fresh.claim_many("w", lease_s=30, limit=100)]
    assert order == ["pending", "parent"]
    parent = fresh.get_job("parent")
    fresh.complete("parent", token=parent.attempt)
    next_claim = fresh.claim("w", lease_s=30)
    assert next_claim is not None
    assert next_claim.job.job_id == "blocked"
    # The running job's lease came along: it expires and is reclaimed.
    clock.advance(31)
    assert "running" in fresh.reclaim_expired()
    # The dead letter can be replayed.
    assert fresh.replay("dead").status is JobStatus.PENDING


def test_import_of_nothing_is_a_no_op(queue: Queue) -> None:
    assert queue.import_jobs([]) == []
    assert queue.size == 0


def _good(job_id: str, created_at: float) -> dict[str, Any]:
    return Job(job_id=job_id, job_type="task", created_at=created_at).to_dict()


def _malformed_cases(now: float) -> dict[str, tuple[dict[str, Any], str]]:
    """Bad records, each with the field its error must name."""
    good = _good("bad", now)
    return {
        "priority_out_of_range": ({**good, "priority": 11}, "priority"),
        "priority_as_string": ({**good, "priority": "5"}, "priority"),
        "unknown_status": ({**good, "status": "EXPLODED"}, "status"),
        "unknown_field": ({**good, "colour": "blue"}, "colour"),
        "missing_job_type": ({k: v for k, v in good.items() if k != "job_type"}, "job_type"),
        "blank_job_type": ({**good, "job_type": "  "}, "job_type"),
        "payload_not_a_dict": ({**good, "payload": [1, 2]}, "payload"),
        "bad_job_id": ({**good, "job_id": "has space"}, "job_id"),
        "negative_retries": ({**good, "max_retries": -1}, "max_retries"),
        "created_at_as_string": ({**good, "created_at": "yesterday"}, "created_at"),
    }


@pytest.mark.parametrize("case", sorted(_malformed_cases(0.0)))
@pytest.mark.parametrize("position", [0, 2])
def test_import_of_a_malformed_record_stores_nothing(
    queue: Queue, clock: FakeClock, case: str, position: int
) -> None:
    queue.enqueue(Job(job_id="existing", job_type="task", created_at=clock.now()))
    record, field = _malformed_cases(clock.now())[case]
    records = [_good("g0", clock.now()), _good("g1", clock.now())]
    records.insert(position, record)
    with pytest.raises(InvalidJobError) as info:
        queue.import_jobs(records)
    assert isinstance(info.value, ValueError)
    assert field in info.value.field
    assert field in str(info.value)
    assert f"jobs_data[{position}]" in str(info.value)  # the record is named by its index
    assert queue.size == 1
    for job_id in ("g0", "g1", "bad"):
        with pytest.raises(JobNotFoundError):
            queue.get_job(job_id)


def test_import_of_a_record_that_is_not_a_dict_is_refused(queue: Queue, clock: FakeClock) -> None:
    with pytest.raises(InvalidJobError) as info:
        queue.import_jobs([_good("g0", clock.now()), "not a job"])  # type: ignore[list-item]  # on purpose
    assert "not a job" in str(info.value)
    assert queue.size == 0


def test_import_of_an_existing_id_stores_nothing(queue: Queue, clock: FakeClock) -> None:
    queue.enqueue(Job(job_id="taken", job_type="task", created_at=clock.now()))
    with pytest.raises(DuplicateJobError, match="taken"):
        queue.import_jobs([_good("new", clock.now()), _good("taken", clock.now())])
    assert queue.size == 1
    with pytest.raises(JobNotFoundError):
        queue.get_job("new")
