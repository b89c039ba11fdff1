"""Typed jobs end to end: validation, versions and migrations, results, async handlers.

H1 (payloads failing validation) and H3 (the payload size limit, Python API) run on the
memory and SQLite backends (RELIABILITY.md §4b).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from typedq import JobQueueManager, JobStatus
from typedq.errors import (
    ConfigError,
    JobFailedError,
    JobNotFoundError,
    PayloadTooLargeError,
    PayloadValidationError,
    PayloadVersionError,
    ResultSerializationError,
    WaitTimeoutError,
)
from typedq.serializers import make_serializer
from typedq.typed import VERSION_KEY, JobType, TypedJob


class Resize(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: str
    width: int


class Size(BaseModel):
    w: int
    h: int


class Blob(BaseModel):
    s: str


FAST = {"base_delay": 0.01, "poll_interval": 0.05, "max_workers": 2}


@pytest.fixture
def manager() -> Any:
    m = JobQueueManager(FAST)
    yield m
    m.close(timeout=5)


def make_resize(version: int = 2) -> JobType[Resize, str]:
    jt = JobType("resize", Resize, result=str, version=version)
    if version >= 2:

        @jt.migration(from_version=1)
        def _v1(old: dict[str, Any]) -> dict[str, Any]:
            new = dict(old)
            new["width"] = new.pop("size")
            return new

    return jt


def test_typed_round_trip_returns_typed_result(manager: JobQueueManager) -> None:
    resize = make_resize()
    manager.register(resize, lambda p: f"{p.url}@{p.width}")
    manager.start_workers()
    ref = manager.enqueue(resize, Resize(url="a.png", width=3))
    assert ref.result(timeout=5) == "a.png@3"
    job = ref.job()
    assert job.payload == {"url": "a.png", "width": 3}
    assert job.metadata[VERSION_KEY] == 2


def test_model_results_are_stored_as_json_and_rebuilt(manager: JobQueueManager) -> None:
    measure = JobType("measure", Resize, result=Size)
    manager.register(measure, lambda p: Size(w=p.width, h=p.width * 2))
    manager.start_workers()
    ref = manager.of(measure).enqueue(Resize(url="x", width=4))
    result = ref.result(timeout=5)
    assert result == Size(w=4, h=8)
    assert ref.job().result == {"w": 4, "h": 8}


def test_async_handlers_run(manager: JobQueueManager) -> None:
    double = JobType("double", Size, result=int)

    @manager.handler(double)
    async def run(p: Size) -> int:
        return p.w * 2

    manager.start_workers()
    assert manager.enqueue(double, Size(w=21, h=0)).result(timeout=5) == 42


@pytest.fixture(params=["memory", "sqlite"])
def stored_manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobQueueManager]:
    """A manager (no workers) on each built-in backend; memory round-trips payloads
    through the JSON codec, so both enforce the payload size limit."""
    if request.param == "memory":
        config = {"backend": "memory://", "serializer": "json"}
    else:
        config = {"backend": f"sqlite:///{tmp_path / 'jobs.db'}"}
    m = JobQueueManager({**FAST, **config})
    yield m
    m.close(timeout=5)


class Crop(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sizes: list[Size]


@pytest.mark.timeout(30)
def test_invalid_dict_payload_is_refused_naming_the_field(stored_manager: JobQueueManager) -> None:
    """H1: wrong type, missing field, extra field under ``forbid``: nothing is written."""
    manager = stored_manager
    resize = make_resize()
    crop = JobType("crop", Crop, result=str)
    manager.register(resize, lambda p: p.url)
    manager.register(crop, lambda p: "cropped")
    before = manager.get_queue("default").size
    with pytest.raises(PayloadValidationError) as info:
        manager.enqueue(resize, {"url": "u", "width": "wide"})  # type: ignore[arg-type]  # the runtime check is under test
    assert isinstance(info.value, ValueError)
    assert (info.value.field, info.value.value) == ("width", "wide")
    assert "width" in str(info.value)
    assert "'wide'" in str(info.value)
    assert "valid integer" in str(info.value)
    with pytest.raises(PayloadValidationError) as missing:
        manager.enqueue(resize, {"url": "u"})  # type: ignore[arg-type]  # runtime check
    assert missing.value.field == "width"
    assert "field 'width': Field required" in str(missing.value)
    with pytest.raises(PayloadValidationError, match=r"colour.*Extra inputs.*'red'") as extra:
        manager.enqueue(resize, {"url": "u", "width": 1, "colour": "red"})  # type: ignore[arg-type]  # runtime check
    assert (extra.value.field, extra.value.value) == ("colour", "red")
    with pytest.raises(PayloadValidationError, match=r"'sizes\.1\.w'.*'x'") as nested:
        manager.enqueue(crop, {"sizes": [{"w": 1, "h": 2}, {"w": "x", "h": 2}]})  # type: ignore[arg-type]  # runtime check
    assert (nested.value.field, nested.value.value) == ("sizes.1.w", "x")
    with pytest.raises(PayloadValidationError, match="must be a Resize"):
        manager.enqueue(resize, Size(w=1, h=1))  # type: ignore[arg-type]  # runtime check
    assert manager.get_queue("default").size == before


def _payload_of_size(size: int) -> dict[str, str]:
    """A payload whose compact JSON form is exactly ``size`` bytes."""
    overhead = len(make_serializer("json").dumps({"s": ""}))
    payload = {"s": "x" * (size - overhead)}
    assert len(make_serializer("json").dumps(payload)) == size
    return payload


@pytest.mark.timeout(30)
def test_payload_size_limit_exact_accepted_one_byte_over_refused(stored_manager: JobQueueManager) -> None:
    """H3 through the Python API, at the default limit (1 MiB of serialized payload)."""
    manager = stored_manager
    limit = manager.config["max_payload_size"]
    assert limit == 1_048_576
    blob = JobType("blob", Blob, result=str)
    manager.register(blob, lambda p: "ok")
    queue = manager.get_queue("default")
    at_limit = _payload_of_size(limit)
    over = _payload_of_size(limit + 1)
    ref = manager.enqueue(blob, Blob(**at_limit))
    assert ref.job().payload == at_limit
    before = queue.size
    for enqueue in (
        lambda: manager.enqueue(blob, Blob(**over), job_id="typed-over"),
        lambda: manager.submit("blob", over, job_id="untyped-over"),
    ):
        with pytest.raises(PayloadTooLargeError) as info:
            enqueue()
        assert isinstance(info.value, ValueError)
        assert (info.value.size, info.value.limit) == (limit + 1, limit)
        assert f"{limit + 1} bytes" in str(info.value)
        assert f"limit of {limit} bytes" in str(info.value)
        assert queue.size == before
    for job_id in ("typed-over", "untyped-over"):
        with pytest.raises(JobNotFoundError):
            manager.get_job(job_id)


def test_a_valid_dict_is_accepted_for_untyped_callers(manager: JobQueueManager) -> None:
    resize = make_resize()
    manager.register(resize, lambda p: p.url)
    manager.start_workers()
    ref = manager.enqueue(resize, {"url": "d", "width": 1})  # type: ignore[arg-type]  # untyped caller
    assert ref.result(timeout=5) == "d"


def test_old_payload_is_migrated_before_the_handler_sees_it(manager: JobQueueManager) -> None:
    resize = make_resize(version=2)
    seen: list[Resize] = []

    def handle(p: Resize) -> str:
        seen.append(p)
        return p.url

    manager.register(resize, handle)
    # A v1 job, as an older producer stored it.
    job_id = manager.submit("resize", {"url": "old", "size": 7}, metadata={VERSION_KEY: 1})
    manager.start_workers()
    assert manager.wait_for_completion([job_id], timeout=5)
    assert manager.get_job(job_id).status is JobStatus.COMPLETED
    assert seen == [Resize(url="old", width=7)]


def test_migrations_chain_across_versions() -> None:
    jt = JobType("chain", Size, version=3)
    jt.migration(from_version=1)(lambda d: {**d, "h": 0})
    jt.migration(from_version=2)(lambda d: {**d, "w": d["w"] * 10})
    assert jt.load({"w": 1}, 1) == Size(w=10, h=0)
    assert jt.load({"w": 1, "h": 2}, 2) == Size(w=10, h=2)


def test_newer_payload_goes_to_the_dead_letter_queue_not_dropped(manager: JobQueueManager) -> None:
    resize = make_resize(version=2)
    manager.register(resize, lambda p: p.url)
    job_id = manager.submit("resize", {"url": "new", "width": 1}, metadata={VERSION_KEY: 3}, max_retries=5)
    manager.start_workers()
    assert manager.wait_for_completion([job_id], timeout=5)
    job = manager.get_job(job_id)
    assert job.status is JobStatus.DEAD
    assert job.retry_count == 0, "a version error is not retried"
    assert "PayloadVersionError" in (job.error or "")
    assert "version 3" in (job.error or "")
    assert manager.get_dead_letter_queue().get_job(job_id).payload == {"url": "new", "width": 1}
    # After a deploy that knows version 3, a replay runs it.
    newer = JobType("resize", Resize, result=str, version=3)
    manager.register(newer, lambda p: p.url.upper())
    manager.replay_dead_letter(job_id)
    assert manager.wait_for_completion([job_id], timeout=5)
    assert manager.get_job(job_id).result == "NEW"


def test_payload_failing_validation_at_run_time_is_dead_with_the_field(manager: JobQueueManager) -> None:
    resize = make_resize()
    manager.register(resize, lambda p: p.url)
    job_id = manager.submit("resize", {"url": "u"}, metadata={VERSION_KEY: 2})
    manager.start_workers()
    assert manager.wait_for_completion([job_id], timeout=5)
    job = manager.get_job(job_id)
    assert job.status is JobStatus.DEAD
    assert "width" in (job.error or "")


def test_wrong_result_type_fails_the_job(manager: JobQueueManager) -> None:
    count = JobType("count", Size, result=int)
    manager.register(count, lambda p: "not a number")  # type: ignore[arg-type,return-value]  # runtime check
    manager.start_workers()
    ref = manager.enqueue(count, Size(w=1, h=1), max_retries=0)
    with pytest.raises(JobFailedError) as info:
        ref.result(timeout=5)
    assert info.value.status == "DEAD"
    assert "ResultSerializationError" in (info.value.error or "")


def test_result_timeout_is_typed(manager: JobQueueManager) -> None:
    resize = make_resize()
    ref = manager.enqueue(resize, Resize(url="u", width=1), queue="nobody-works-here")
    with pytest.raises(WaitTimeoutError) as info:
        ref.result(timeout=0.05)
    assert isinstance(info.value, TimeoutError)
    assert info.value.status == "PENDING"


def test_typed_job_view_round_trips_without_loss(manager: JobQueueManager) -> None:
    resize = make_resize()
    ref = manager.enqueue(resize, Resize(url="v", width=5), priority=9, metadata={"who": "me"})
    job = ref.job()
    view = TypedJob.of(resize, job)
    assert view.payload == Resize(url="v", width=5)
    assert view.payload_version == 2
    assert view.to_job() == job


def test_job_type_settings_are_defaults_of_its_jobs(manager: JobQueueManager) -> None:
    urgent = JobType("urgent", Size, queue="fast", priority=9, max_retries=1, timeout_s=2.0)
    ref = manager.enqueue(urgent, Size(w=1, h=1))
    job = ref.job()
    assert (job.queue, job.priority, job.max_retries, job.timeout_seconds) == ("fast", 9, 1, 2.0)
    assert manager.enqueue(urgent, Size(w=1, h=1), priority=2).job().priority == 2


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"version": 0}, "version"),
        ({"priority": 11}, "priority"),
        ({"max_retries": -1}, "max_retries"),
        ({"timeout_s": 0}, "timeout_s"),
    ],
)
def test_bad_job_type_settings_are_config_errors(kwargs: dict[str, Any], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        JobType("x", Size, **kwargs)
    assert info.value.field == field


def test_bad_migrations_are_refused() -> None:
    jt = JobType("m", Size, version=2)
    with pytest.raises(ConfigError, match="from_version"):
        jt.migration(from_version=2)
    jt.migration(from_version=1)(lambda d: d)
    with pytest.raises(ConfigError, match="no migration yet"):
        jt.migration(from_version=1)
    gap = JobType("gap", Size, version=3)
    gap.migration(from_version=2)(lambda d: d)
    with pytest.raises(PayloadVersionError, match="from version 1 to 2"):
        gap.load({"w": 1, "h": 1}, 1)


def test_dump_result_error_is_typed() -> None:
    jt = JobType("r", Size, result=int)
    with pytest.raises(ResultSerializationError):
        jt.dump_result("x")  # type: ignore[arg-type]  # runtime check


class Wide(BaseModel):
    model_config = ConfigDict(extra="forbid")
    a: int
    b: int
    c: str
    sizes: list[Size] = []


def test_a_payload_error_names_every_bad_field_with_its_path_and_input() -> None:
    wide = JobType("wide", Wide)
    with pytest.raises(PayloadValidationError) as info:
        wide.dump({"a": "x", "b": "y", "c": 3, "sizes": [{"w": 1, "h": "tall"}]})  # type: ignore[arg-type]  # runtime check
    error = info.value
    text = str(error)
    assert text.startswith("payload of 'wide': 4 invalid fields: ")
    for path, given in (("a", "'x'"), ("b", "'y'"), ("c", "3"), ("sizes.0.h", "'tall'")):
        assert f"field {path!r}: " in text
        assert f"got {given}" in text
    assert "more" not in text
    assert [(p.path, p.value) for p in error.errors] == [
        ("a", "x"),
        ("b", "y"),
        ("c", 3),
        ("sizes.0.h", "tall"),
    ]
    assert "valid integer" in error.errors[0].message
    assert (error.field, error.value) == ("a", "x")


def test_a_payload_error_lists_ten_fields_then_says_how_many_more() -> None:
    crop = JobType("crop", Crop)
    bad = {"sizes": [{"w": f"w{i}", "h": 1} for i in range(13)]}
    with pytest.raises(PayloadValidationError) as info:
        crop.dump(bad)  # type: ignore[arg-type]  # runtime check
    text = str(info.value)
    assert "13 invalid fields" in text
    assert "'sizes.9.w'" in text
    assert "'w9'" in text
    assert "'sizes.10.w'" not in text
    assert text.endswith("; and 3 more")
    assert len(info.value.errors) == 13
    assert info.value.errors[12].path == "sizes.12.w"


def test_a_loaded_payload_error_keeps_every_problem() -> None:
    resize = JobType("resize-all", Size)
    with pytest.raises(PayloadValidationError) as info:
        resize.load({"w": None})
    assert [p.path for p in info.value.errors] == ["w", "h"]
    assert "field 'w': " in str(info.value)
    assert "field 'h': Field required" in str(info.value)
