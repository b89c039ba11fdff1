"""A queue given a codec: what it refuses, what it names, and what it keeps.

Every backend takes ``codec=`` (the durable ones store its frames; memory round-trips
through it). With one, a value the codec cannot carry is refused when it is handed over,
with a typed error naming the field and the job, and nothing is written: a payload or
metadata at enqueue (a batch names ``jobs[i]``), a result at completion (the job stays
RUNNING). A job keeps what the codec carried at the time: later changes to the caller's
dicts and lists do not reach it, and values come back as the codec carries them (a tuple
as a list). Each test runs with the default serializer and with msgpack+zstd.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from tests.conformance.conftest import QueueFactory

from typedq.backends.base import Completion, Queue
from typedq.errors import PayloadTooLargeError, SerializationError
from typedq.job import Job, JobStatus
from typedq.serializers import get_serializer
from typedq.serializers.base import FrameCodec

MakeJob = Callable[..., Job]

LIMIT = 300  # bytes a serialized value may take here


@pytest.fixture(params=["json", "msgpack+zstd"])
def coded(request: pytest.FixtureRequest, queue_factory: QueueFactory) -> Queue:
    """A queue of the variant under test whose codec allows values of ``LIMIT`` bytes."""
    codec: FrameCodec = get_serializer(request.param, max_size=LIMIT)
    return queue_factory("coded", codec=codec)


def _claimed(queue: Queue, make_job: MakeJob, job_id: str) -> int:
    queue.enqueue(make_job(job_id=job_id))
    claim = queue.claim("w", lease_s=30)
    assert claim is not None
    assert claim.job.job_id == job_id
    return claim.token


# -- refused at enqueue ---------------------------------------------------------------------


def test_an_unencodable_payload_in_a_batch_is_named_and_nothing_is_stored(
    coded: Queue, make_job: MakeJob
) -> None:
    bad = make_job(job_id="bad", payload={"when": {1, 2}})
    batch = [make_job(job_id="fine"), bad, make_job(job_id="later")]
    with pytest.raises(SerializationError) as info:
        coded.enqueue_many(batch)
    assert "jobs[1]" in str(info.value)
    assert "'bad'" in str(info.value)
    assert "payload" in str(info.value)
    assert coded.size == 0


def test_unencodable_metadata_is_refused_naming_the_field(coded: Queue, make_job: MakeJob) -> None:
    with pytest.raises(SerializationError) as info:
        coded.enqueue(make_job(job_id="m", metadata={"tags": {"a", "b"}}))
    assert "metadata of job 'm'" in str(info.value)
    assert coded.size == 0
    assert coded.count_by_status()[JobStatus.PENDING] == 0


@pytest.mark.parametrize("how", ["enqueue", "enqueue_many"])
def test_a_payload_over_the_limit_is_refused_keeping_its_type(
    coded: Queue, make_job: MakeJob, how: str
) -> None:
    big = make_job(job_id="big", payload={"x": "y" * (2 * LIMIT)})
    add = (lambda: coded.enqueue(big)) if how == "enqueue" else (
        lambda: coded.enqueue_many([make_job(job_id="small"), big])
    )
    with pytest.raises(PayloadTooLargeError) as info:
        add()
    assert isinstance(info.value, SerializationError)
    assert "'big'" in str(info.value)
    assert str(LIMIT) in str(info.value)
    assert coded.size == 0


# -- refused at completion ------------------------------------------------------------------


def test_an_unencodable_result_is_refused_and_the_job_stays_running(coded: Queue, make_job: MakeJob) -> None:
    token = _claimed(coded, make_job, "j")
    with pytest.raises(SerializationError) as info:
        coded.complete("j", token=token, result={1, 2})
    assert "result of job 'j'" in str(info.value)
    stored = coded.get_job("j")
    assert stored.status is JobStatus.RUNNING
    assert stored.result is None
    done = coded.complete("j", token=token, result=[1, 2])  # the lease still holds
    assert done.status is JobStatus.COMPLETED
    assert coded.get_job("j").result == [1, 2]


def test_a_result_over_the_limit_is_refused_keeping_its_type(coded: Queue, make_job: MakeJob) -> None:
    token = _claimed(coded, make_job, "j")
    with pytest.raises(PayloadTooLargeError):
        coded.complete("j", token=token, result="r" * (2 * LIMIT))
    assert coded.get_job("j").status is JobStatus.RUNNING


def test_complete_many_refuses_only_the_unencodable_result(coded: Queue, make_job: MakeJob) -> None:
    coded.enqueue_many([make_job(job_id=f"j{i}") for i in range(3)])
    claims = coded.claim_many("w", lease_s=30, limit=3)
    tokens = {c.job.job_id: c.token for c in claims}
    outcomes = coded.complete_many(
        [
            Completion("j0", tokens["j0"], 0),
            Completion("j1", tokens["j1"], {1}),
            Completion("j2", tokens["j2"], 2),
        ]
    )
    assert [type(o).__name__ for o in outcomes] == ["Job", "SerializationError", "Job"]
    assert "result of job 'j1'" in str(outcomes[1])
    assert coded.get_job("j1").status is JobStatus.RUNNING
    assert [coded.get_job(j).result for j in ("j0", "j2")] == [0, 2]


# -- what a job keeps -----------------------------------------------------------------------


def test_later_changes_to_the_callers_values_do_not_reach_the_job(coded: Queue, make_job: MakeJob) -> None:
    items, nested = [1, 2], {"k": "v"}
    payload = {"items": items, "nested": nested}
    metadata = {"trace": ["a"]}
    coded.enqueue(make_job(job_id="j", payload=payload, metadata=metadata))
    items.append(3)
    nested["k"] = "changed"
    metadata["trace"].append("b")
    claim = coded.claim("w", lease_s=30)
    assert claim is not None
    assert claim.job.payload == {"items": [1, 2], "nested": {"k": "v"}}
    assert claim.job.metadata == {"trace": ["a"]}
    result = {"rows": [1]}
    coded.complete("j", token=claim.token, result=result)
    result["rows"].append(2)
    assert coded.get_job("j").result == {"rows": [1]}


def test_values_come_back_as_the_codec_carries_them(coded: Queue, make_job: MakeJob) -> None:
    coded.enqueue(make_job(job_id="j", payload={"pair": (1, 2)}, metadata={"pair": ("a", "b")}))
    claim = coded.claim("w", lease_s=30)
    assert claim is not None
    assert claim.job.payload == {"pair": [1, 2]}
    assert claim.job.metadata == {"pair": ["a", "b"]}
    coded.complete("j", token=claim.token, result=(3, 4))
    assert coded.get_job("j").result == [3, 4]
    stored = coded.get_job("j")
    assert (stored.payload, stored.metadata["pair"]) == ({"pair": [1, 2]}, ["a", "b"])


def test_an_imported_result_comes_back_as_the_codec_carries_it(coded: Queue, make_job: MakeJob) -> None:
    record = make_job(job_id="done", status=JobStatus.COMPLETED, result=(1, "two")).to_dict()
    coded.import_jobs([record])
    assert coded.get_job("done").result == [1, "two"]


def test_an_imported_unencodable_result_is_refused_naming_the_record(coded: Queue, make_job: MakeJob) -> None:
    good = make_job(job_id="good").to_dict()
    bad = make_job(job_id="bad", status=JobStatus.COMPLETED, result={3}).to_dict()
    with pytest.raises(SerializationError) as info:
        coded.import_jobs([good, bad])
    assert "jobs[1]" in str(info.value)
    assert "result of job 'bad'" in str(info.value)
    assert coded.size == 0
