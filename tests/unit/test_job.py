"""The Job data model: fields and defaults as the specification lists them, validation,
ordering, and the JSON-safe to_dict/from_dict round trip."""

from __future__ import annotations

import dataclasses
import heapq
import json
import math
import time
import uuid
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from typedq.errors import InvalidJobError
from typedq.job import (
    MAX_JOB_ID_LENGTH,
    MAX_TRACEBACK,
    TERMINAL_STATUSES,
    TRACEBACK_KEY,
    Job,
    JobStatus,
    Priority,
    level_index,
    parse_priority,
    take_legacy_traceback,
)

# -- fields and defaults -------------------------------------------------------------------

#: The specification's fields, in its order (positional construction depends on it).
SPEC_FIELDS = [
    "job_id",
    "job_type",
    "payload",
    "priority",
    "scheduled_at",
    "created_at",
    "max_retries",
    "retry_count",
    "timeout_seconds",
    "status",
    "result",
    "error",
    "metadata",
    "depends_on",
]


def test_fields_start_with_the_specification_fields_in_order() -> None:
    names = [f.name for f in dataclasses.fields(Job)]
    assert names[: len(SPEC_FIELDS)] == SPEC_FIELDS


def test_defaults_are_the_specification_defaults() -> None:
    before = time.time()
    job = Job(job_type="send_email")
    after = time.time()
    assert uuid.UUID(job.job_id).version == 4
    assert str(uuid.UUID(job.job_id)) == job.job_id
    assert job.job_type == "send_email"
    assert job.payload == {}
    assert job.priority == 5
    assert job.scheduled_at is None
    assert before <= job.created_at <= after
    assert job.max_retries == 3
    assert job.retry_count == 0
    assert job.timeout_seconds is None
    assert job.status is JobStatus.PENDING
    assert job.result is None
    assert job.error is None
    assert job.metadata == {}
    assert job.depends_on == []


def test_each_job_gets_its_own_id_and_containers() -> None:
    a, b = Job(job_type="t"), Job(job_type="t")
    assert a.job_id != b.job_id
    a.payload["x"] = 1
    a.metadata["y"] = 2
    a.depends_on.append("z")
    assert b.payload == {}
    assert b.metadata == {}
    assert b.depends_on == []


def test_job_status_has_the_specification_states() -> None:
    spec = {"PENDING", "SCHEDULED", "RUNNING", "COMPLETED", "FAILED", "DEAD"}
    assert spec <= {s.name for s in JobStatus}
    assert {s.name for s in JobStatus} - spec == {"CANCELLED"}
    for status in JobStatus:
        assert status.value == status.name
    assert {JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.DEAD, JobStatus.CANCELLED} == TERMINAL_STATUSES


def test_is_terminal() -> None:
    for status in JobStatus:
        assert Job(job_type="t", status=status).is_terminal is (status in TERMINAL_STATUSES)


def test_priority_names() -> None:
    assert [(p.name, int(p)) for p in Priority] == [
        ("CRITICAL", 10), ("HIGH", 7), ("NORMAL", 5), ("LOW", 3), ("BATCH", 1),
    ]
    assert Priority.LOWEST is Priority.BATCH  # the deprecated name still works
    assert Job(job_type="t", priority=Priority.HIGH).priority == 7
    assert type(Job(job_type="t", priority=Priority.HIGH).priority) is int


def test_priority_levels_and_names() -> None:
    assert [Priority.level_of(p).name for p in range(10, 0, -1)] == [
        "CRITICAL", "CRITICAL", "HIGH", "HIGH", "NORMAL", "NORMAL", "LOW", "LOW", "BATCH", "BATCH",
    ]
    assert [level_index(p) for p in (10, 9, 8, 1)] == [0, 0, 1, 4]
    assert parse_priority("High") == 7
    assert parse_priority(" batch ") == 1
    assert parse_priority("lowest") == 1
    assert Job(job_type="t", priority="critical").priority == 10  # type: ignore[arg-type]
    assert Job.create("t", priority="low").priority == 3
    for bad in ("urgent", "", "7", 0, 11, True, 5.0, None):
        with pytest.raises(InvalidJobError, match=r"priority=.*CRITICAL, HIGH, NORMAL, LOW, BATCH") as info:
            parse_priority(bad)
        assert info.value.field == "priority"
    with pytest.raises(InvalidJobError, match="priority"):
        Job(job_type="t", priority="soon")  # type: ignore[arg-type]


# -- Job.create ----------------------------------------------------------------------------


def test_create_builds_a_valid_job() -> None:
    job = Job.create(
        "resize",
        {"url": "u"},
        priority=8,
        max_retries=0,
        timeout_seconds=1.5,
        metadata={"m": 1},
        depends_on=["a", "b"],
        job_id="order:42",
        now=1000.0,
    )
    assert (job.job_id, job.job_type, job.payload, job.priority) == ("order:42", "resize", {"url": "u"}, 8)
    assert (job.max_retries, job.timeout_seconds, job.metadata) == (0, 1.5, {"m": 1})
    assert job.depends_on == ["a", "b"]
    assert job.created_at == 1000.0
    assert uuid.UUID(Job.create("t").job_id).version == 4


def test_create_with_a_delay_schedules_from_now() -> None:
    job = Job.create("t", delay_s=30, now=1000.0)
    assert job.scheduled_at == 1030.0
    assert Job.create("t", scheduled_at=5.0).scheduled_at == 5.0


def _assert_names(info: pytest.ExceptionInfo[InvalidJobError], field: str, value: object) -> None:
    """The error is a ValueError that names the field and the value."""
    exc = info.value
    assert isinstance(exc, ValueError)
    assert exc.field == field
    assert exc.value == value or (exc.value is value)
    message = str(exc)
    assert field in message
    if len(repr(value)) <= 60:
        assert repr(value) in message
    assert len(message) < 400  # a hostile value never floods the message


BAD_CREATE_ARGS: list[tuple[str, dict[str, Any], str, object]] = [
    ("empty_job_type", {"job_type": ""}, "job_type", ""),
    ("blank_job_type", {"job_type": "   "}, "job_type", "   "),
    ("none_job_type", {"job_type": None}, "job_type", None),
    ("int_job_type", {"job_type": 3}, "job_type", 3),
    ("long_job_type", {"job_type": "t" * 201}, "job_type", "t" * 201),
    ("priority_0", {"priority": 0}, "priority", 0),
    ("priority_11", {"priority": 11}, "priority", 11),
    ("priority_negative", {"priority": -5}, "priority", -5),
    ("priority_str", {"priority": "5"}, "priority", "5"),
    ("priority_true", {"priority": True}, "priority", True),
    ("priority_float", {"priority": 5.0}, "priority", 5.0),
    ("negative_max_retries", {"max_retries": -1}, "max_retries", -1),
    ("float_max_retries", {"max_retries": 1.5}, "max_retries", 1.5),
    ("bool_max_retries", {"max_retries": False}, "max_retries", False),
    ("zero_timeout", {"timeout_seconds": 0}, "timeout_seconds", 0),
    ("negative_timeout", {"timeout_seconds": -1.0}, "timeout_seconds", -1.0),
    ("str_timeout", {"timeout_seconds": "10"}, "timeout_seconds", "10"),
    ("inf_timeout", {"timeout_seconds": math.inf}, "timeout_seconds", math.inf),
    ("nan_scheduled_at", {"scheduled_at": math.nan}, "scheduled_at", None),
    ("str_scheduled_at", {"scheduled_at": "soon"}, "scheduled_at", "soon"),
    ("payload_list", {"payload": [1]}, "payload", [1]),
    ("metadata_str", {"metadata": "m"}, "metadata", "m"),
    ("negative_delay", {"delay_s": -1}, "delay_s", -1),
    ("delay_and_schedule", {"delay_s": 1, "scheduled_at": 5.0}, "delay_s", 1),
    ("empty_id", {"job_id": ""}, "job_id", ""),
    ("id_with_space", {"job_id": "a b"}, "job_id", "a b"),
    ("id_with_star", {"job_id": "jobs:*"}, "job_id", "jobs:*"),
    ("id_with_braces", {"job_id": "{slot}x"}, "job_id", "{slot}x"),
    ("id_with_slash", {"job_id": "a/b"}, "job_id", "a/b"),
    ("id_with_newline", {"job_id": "a\nb"}, "job_id", "a\nb"),
    ("id_non_ascii", {"job_id": "j\u00e9"}, "job_id", "j\u00e9"),
    ("id_129_chars", {"job_id": "x" * 129}, "job_id", "x" * 129),
    ("id_10kb", {"job_id": "x" * 10_240}, "job_id", "x" * 10_240),
    ("dependency_with_star", {"depends_on": ["ok", "*"]}, "depends_on", "*"),
]


@pytest.mark.parametrize(
    ("kwargs", "field", "value"),
    [pytest.param(kw, f, v, id=case) for case, kw, f, v in BAD_CREATE_ARGS],
)
def test_create_refuses_bad_values_naming_field_and_value(
    kwargs: dict[str, Any], field: str, value: object
) -> None:
    args = {"job_type": "t", **kwargs}
    with pytest.raises(InvalidJobError) as info:
        Job.create(**args)
    if field == "scheduled_at":  # NaN != NaN: check the name only
        assert info.value.field == field
        assert field in str(info.value)
    else:
        _assert_names(info, field, value)


@pytest.mark.parametrize(
    "job_id",
    [
        "a", "order:42", "a.b-c_d@e+f=g", "x" * MAX_JOB_ID_LENGTH,
        "ab59f31b-ac1e-46a2-91b8-7d6aa5a138d9", "01HZX3ULIDULID",
    ],
)
def test_reasonable_ids_are_accepted(job_id: str) -> None:
    assert Job.create("t", job_id=job_id).job_id == job_id


def test_construction_validates_too() -> None:
    with pytest.raises(InvalidJobError, match="priority"):
        Job(job_type="t", priority=42)
    with pytest.raises(InvalidJobError, match="job_type"):
        Job()
    with pytest.raises(InvalidJobError, match="status"):
        Job(job_type="t", status="EXPLODED")  # type: ignore[arg-type]  # on purpose


def test_construction_normalises_status_and_dependencies() -> None:
    job = Job(job_type="t", status="RUNNING", depends_on=("a", "b", "a"))  # type: ignore[arg-type]  # str and tuple accepted
    assert job.status is JobStatus.RUNNING
    assert job.depends_on == ["a", "b"]


# -- ordering ------------------------------------------------------------------------------


def test_higher_priority_sorts_first() -> None:
    assert Job(job_type="t", priority=9, created_at=2.0) < Job(job_type="t", priority=3, created_at=1.0)
    assert not Job(job_type="t", priority=3) < Job(job_type="t", priority=9)


def test_then_earlier_scheduled_at_with_none_first() -> None:
    early = Job(job_type="t", scheduled_at=10.0, created_at=5.0)
    late = Job(job_type="t", scheduled_at=20.0, created_at=1.0)
    unscheduled = Job(job_type="t", created_at=9.0)
    assert early < late
    assert not late < early
    assert unscheduled < early
    # priority still beats the schedule
    assert Job(job_type="t", priority=6, scheduled_at=99.0) < unscheduled
    # None sorts before every time, the epoch and earlier ones too (as SQL sorts NULL)
    assert unscheduled < Job(job_type="t", scheduled_at=0.0, created_at=0.0)
    assert unscheduled < Job(job_type="t", scheduled_at=-1.0, created_at=0.0)


def test_then_earlier_created_at() -> None:
    old = Job(job_type="t", created_at=1.0)
    new = Job(job_type="t", created_at=2.0)
    assert old < new
    assert not new < old
    assert not old < Job(job_type="t", created_at=1.0)  # equal keys: neither first


def test_a_heap_of_jobs_pops_in_order() -> None:
    jobs = [
        Job(job_id="p5-new", job_type="t", created_at=3.0),
        Job(job_id="p5-old", job_type="t", created_at=1.0),
        Job(job_id="p9", job_type="t", priority=9, created_at=4.0),
        Job(job_id="p5-sched", job_type="t", scheduled_at=0.5, created_at=0.0),
        Job(job_id="p1", job_type="t", priority=1, created_at=0.0),
    ]
    heap = list(jobs)
    heapq.heapify(heap)
    order = [heapq.heappop(heap).job_id for _ in jobs]
    assert order == ["p9", "p5-old", "p5-new", "p5-sched", "p1"]


def test_comparing_with_a_non_job_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        _ = Job(job_type="t") < 3


# -- to_dict / from_dict -------------------------------------------------------------------


def test_to_dict_has_every_field_and_is_json_safe() -> None:
    job = Job.create("t", {"a": [1, {"b": None}]}, metadata={"m": "x"}, depends_on=["d"], now=1.5)
    data = job.to_dict()
    assert set(data) == {f.name for f in dataclasses.fields(Job)}
    assert data["status"] == "PENDING"
    assert type(data["status"]) is str
    assert json.loads(json.dumps(data, allow_nan=False)) == data


def test_to_dict_is_a_snapshot() -> None:
    job = Job.create("t", {"list": [1]}, metadata={"m": {"n": 1}}, depends_on=["d"])
    data = job.to_dict()
    data["payload"]["list"].append(2)
    data["metadata"]["m"]["n"] = 2
    data["depends_on"].append("e")
    assert job.payload == {"list": [1]}
    assert job.metadata == {"m": {"n": 1}}
    assert job.depends_on == ["d"]


def test_from_dict_copies_its_input() -> None:
    data = Job.create("t", {"list": [1]}).to_dict()
    job = Job.from_dict(data)
    data["payload"]["list"].append(2)
    assert job.payload == {"list": [1]}


def test_from_dict_refuses_unknown_keys() -> None:
    data = Job.create("t").to_dict()
    data["prioirty"] = 5
    with pytest.raises(InvalidJobError) as info:
        Job.from_dict(data)
    assert info.value.field == "prioirty"
    assert "prioirty" in str(info.value)


def test_from_dict_requires_job_type() -> None:
    data = Job.create("t").to_dict()
    del data["job_type"]
    with pytest.raises(InvalidJobError) as info:
        Job.from_dict(data)
    assert info.value.field == "job_type"


def test_from_dict_refuses_a_non_dict() -> None:
    with pytest.raises(InvalidJobError):
        Job.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]  # on purpose


def test_from_dict_fills_missing_newer_fields_with_defaults() -> None:
    spec_only = {k: v for k, v in Job.create("t", now=1.0).to_dict().items() if k in SPEC_FIELDS}
    job = Job.from_dict(spec_only)
    assert (job.queue, job.attempt, job.lost_count, job.cancel_requested) == ("default", 0, 0, False)


JSON_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
JSON_VALUES = st.recursive(
    JSON_SCALARS,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=20,
)
JSON_OBJECTS = st.dictionaries(st.text(max_size=8), JSON_VALUES, max_size=5)
IDS = st.text(alphabet="abcXYZ019_.:@+=-", min_size=1, max_size=40)
TIMES = st.floats(min_value=0, max_value=4e9, allow_nan=False)

JOBS = st.builds(
    Job,
    job_id=IDS,
    job_type=st.text(min_size=1, max_size=30).filter(str.strip),
    payload=JSON_OBJECTS,
    priority=st.integers(min_value=1, max_value=10),
    scheduled_at=st.none() | TIMES,
    created_at=TIMES,
    max_retries=st.integers(min_value=0, max_value=50),
    retry_count=st.integers(min_value=0, max_value=50),
    timeout_seconds=st.none() | st.floats(min_value=0.001, max_value=1e6),
    status=st.sampled_from(JobStatus),
    result=JSON_VALUES,
    error=st.none() | st.text(max_size=50),
    metadata=JSON_OBJECTS,
    depends_on=st.lists(IDS, max_size=3, unique=True),
    attempt=st.integers(min_value=0, max_value=9),
    worker_id=st.none() | st.text(max_size=10),
    lease_until=st.none() | TIMES,
    lost_count=st.integers(min_value=0, max_value=3),
    cancel_requested=st.booleans(),
    run_alone=st.booleans(),
    traceback=st.none() | st.text(max_size=200),
)


@settings(max_examples=200, deadline=None)
@given(job=JOBS)
def test_from_dict_of_to_dict_is_equal(job: Job) -> None:
    assert Job.from_dict(job.to_dict()) == job
    # ... also through JSON text, as a snapshot on disk would be.
    assert Job.from_dict(json.loads(json.dumps(job.to_dict(), allow_nan=False))) == job


def test_unchecked_sets_every_field_of_the_dataclass() -> None:
    import inspect
    from dataclasses import fields

    names = [f.name for f in fields(Job)]
    assert list(inspect.signature(Job.unchecked).parameters) == names
    original = Job(job_type="t", payload={"a": 1}, priority=7, metadata={"m": 2}, depends_on=["x"])
    rebuilt = Job.unchecked(**{name: getattr(original, name) for name in names})
    assert rebuilt == original
    assert rebuilt.to_dict() == original.to_dict()


# -- traceback -----------------------------------------------------------------------------


def test_traceback_is_a_field_bounded_to_max_traceback() -> None:
    assert Job(job_type="t", traceback="x" * MAX_TRACEBACK).traceback == "x" * MAX_TRACEBACK
    with pytest.raises(InvalidJobError, match="traceback") as too_long:
        Job(job_type="t", traceback="x" * (MAX_TRACEBACK + 1))
    assert too_long.value.field == "traceback"
    with pytest.raises(InvalidJobError, match="traceback"):
        Job(job_type="t", traceback=b"bytes")  # type: ignore[arg-type]  # on purpose


def test_from_dict_moves_an_old_metadata_traceback_to_the_field() -> None:
    """An export of typedq before ``Job.traceback`` kept the text in metadata."""
    data = Job.create("t", metadata={"tenant": "a", TRACEBACK_KEY: "Trace"}).to_dict()
    del data["traceback"]
    job = Job.from_dict(data)
    assert (job.traceback, job.metadata) == ("Trace", {"tenant": "a"})
    assert data["metadata"] == {"tenant": "a", TRACEBACK_KEY: "Trace"}  # the input is not changed
    # With the field present (this version's export), metadata is left as it is.
    current = Job.create("t", metadata={TRACEBACK_KEY: "kept"}).to_dict()
    assert Job.from_dict(current).metadata == {TRACEBACK_KEY: "kept"}


def test_take_legacy_traceback_prefers_the_newer_failure() -> None:
    metadata = {TRACEBACK_KEY: "old", "a": 1}
    assert take_legacy_traceback(metadata, "new") == "new"
    assert metadata == {"a": 1}
    assert take_legacy_traceback({TRACEBACK_KEY: "y" * (MAX_TRACEBACK + 5)}, None) == "y" * MAX_TRACEBACK
