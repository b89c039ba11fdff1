"""Adding jobs: enqueue, enqueue_many (all-or-nothing), get_job, size, dependency checks."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Queue
from typedq.backends.memory import JobQueue
from typedq.errors import (
    DependencyCycleError,
    DuplicateJobError,
    InvalidJobError,
    JobNotFoundError,
    QueueClosedError,
    UnknownDependencyError,
)
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def test_enqueue_returns_the_id_and_get_job_returns_an_equal_job(
    queue: Queue, make_job: MakeJob
) -> None:
    job = make_job(job_id="j1", payload={"a": [1, {"b": None}]}, metadata={"m": 1}, priority=7)
    snapshot = job.to_dict()
    assert queue.enqueue(job) == "j1"
    stored = queue.get_job("j1")
    assert stored.to_dict() == snapshot
    assert stored.status is JobStatus.PENDING


def test_size_counts_jobs_in_every_state(queue: Queue, make_job: MakeJob) -> None:
    assert queue.size == 0
    queue.enqueue(make_job(job_id="a"))
    queue.enqueue(make_job(job_id="b", status=JobStatus.DEAD))
    queue.enqueue(make_job(job_id="c", status=JobStatus.COMPLETED))
    assert queue.size == 3
    claim = queue.claim("w", lease_s=10)
    assert claim is not None
    assert queue.size == 3


def test_get_job_of_an_unknown_id_raises_job_not_found(queue: Queue) -> None:
    with pytest.raises(JobNotFoundError) as info:
        queue.get_job("nope")
    assert isinstance(info.value, KeyError)
    assert "nope" in str(info.value)
    assert not str(info.value).startswith(("'", '"'))


def test_a_non_pending_job_is_stored_as_it_is_and_not_run(queue: Queue, make_job: MakeJob) -> None:
    # A dead-letter queue holds DEAD jobs, whose dependencies may be long gone.
    dead = make_job(job_id="d", status=JobStatus.DEAD, error="boom", depends_on=["gone"])
    queue.enqueue(dead)
    stored = queue.get_job("d")
    assert stored.status is JobStatus.DEAD
    assert stored.error == "boom"
    assert queue.ready_count() == 0
    assert queue.claim("w", lease_s=10) is None


def test_duplicate_id_is_refused_and_the_first_job_kept(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="dup", payload={"v": 1}))
    with pytest.raises(DuplicateJobError) as info:
        queue.enqueue(make_job(job_id="dup", payload={"v": 2}))
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InvalidJobError)
    assert info.value.field == "job_id"
    assert "dup" in str(info.value)
    assert queue.size == 1
    assert queue.get_job("dup").payload == {"v": 1}


def test_unknown_dependency_is_refused_naming_it(queue: Queue, make_job: MakeJob) -> None:
    with pytest.raises(UnknownDependencyError) as info:
        queue.enqueue(make_job(job_id="child", depends_on=["ghost-parent"]))
    assert isinstance(info.value, ValueError)
    assert info.value.field == "depends_on"
    assert "ghost-parent" in str(info.value)
    assert queue.size == 0


def test_self_dependency_is_a_cycle(queue: Queue, make_job: MakeJob) -> None:
    with pytest.raises(DependencyCycleError) as info:
        queue.enqueue(make_job(job_id="me", depends_on=["me"]))
    assert isinstance(info.value, ValueError)
    assert info.value.field == "depends_on"
    assert "me" in str(info.value)
    assert queue.size == 0


# -- enqueue_many --------------------------------------------------------------------------


def test_enqueue_many_stores_all_and_returns_ids_in_order(queue: Queue, make_job: MakeJob) -> None:
    jobs = [make_job(job_id=f"j{i}") for i in range(5)]
    assert queue.enqueue_many(jobs) == [f"j{i}" for i in range(5)]
    assert queue.size == 5
    assert queue.ready_count() == 5


def test_enqueue_many_of_nothing_is_a_no_op(queue: Queue) -> None:
    assert queue.enqueue_many([]) == []
    assert queue.size == 0


@pytest.mark.parametrize("order", ["parents_first", "children_first"])
def test_enqueue_many_accepts_in_batch_dependencies_in_any_order(
    queue: Queue, make_job: MakeJob, order: str
) -> None:
    jobs = [
        make_job(job_id="root"),
        make_job(job_id="mid", depends_on=["root"]),
        make_job(job_id="leaf", depends_on=["mid", "root"]),
    ]
    if order == "children_first":
        jobs.reverse()
    assert queue.enqueue_many(jobs) == [j.job_id for j in jobs]
    assert queue.size == 3
    assert queue.ready_count() == 1
    claim = queue.claim("w", lease_s=10)
    assert claim is not None
    assert claim.job.job_id == "root"


def _bad_batches(make_job: MakeJob) -> dict[str, tuple[list[Job], type[InvalidJobError], str]]:
    """Batches of 4 whose offending job sits at different places (``existing`` is stored)."""
    ok = [make_job(job_id=f"ok{i}") for i in range(3)]
    return {
        "duplicate_of_stored_first": ([make_job(job_id="existing"), *ok], DuplicateJobError, "existing"),
        "duplicate_of_stored_last": ([*ok, make_job(job_id="existing")], DuplicateJobError, "existing"),
        "duplicate_within_batch": (
            [ok[0], make_job(job_id="twice"), ok[1], make_job(job_id="twice")],
            DuplicateJobError,
            "twice",
        ),
        "unknown_dependency_first": (
            [make_job(job_id="x", depends_on=["missing-dep"]), *ok],
            UnknownDependencyError,
            "missing-dep",
        ),
        "unknown_dependency_middle": (
            [ok[0], make_job(job_id="x", depends_on=["ok0", "missing-dep"]), ok[1], ok[2]],
            UnknownDependencyError,
            "missing-dep",
        ),
        "unknown_dependency_last": (
            [*ok, make_job(job_id="x", depends_on=["missing-dep"])],
            UnknownDependencyError,
            "missing-dep",
        ),
        "cycle_of_two": (
            [
                ok[0],
                make_job(job_id="cy-a", depends_on=["cy-b"]),
                make_job(job_id="cy-b", depends_on=["cy-a"]),
                ok[1],
            ],
            DependencyCycleError,
            "cy-a",
        ),
        "cycle_of_three": (
            [
                make_job(job_id="cy-a", depends_on=["cy-c"]),
                ok[0],
                make_job(job_id="cy-b", depends_on=["cy-a"]),
                make_job(job_id="cy-c", depends_on=["cy-b"]),
            ],
            DependencyCycleError,
            "cy-b",
        ),
        "self_dependency_last": (
            [*ok, make_job(job_id="selfish", depends_on=["selfish"])],
            DependencyCycleError,
            "selfish",
        ),
    }


BAD_BATCH_CASES = sorted(_bad_batches(lambda **fields: Job(job_type="task", **fields)))


@pytest.mark.parametrize("case", BAD_BATCH_CASES)
def test_enqueue_many_is_all_or_nothing(queue: Queue, make_job: MakeJob, case: str) -> None:
    queue.enqueue(make_job(job_id="existing", payload={"keep": True}))
    batch, error, named = _bad_batches(make_job)[case]
    with pytest.raises(error) as info:
        queue.enqueue_many(batch)
    assert isinstance(info.value, ValueError)
    assert info.value.field in ("job_id", "depends_on")
    assert named in str(info.value)
    # Nothing of the batch was stored, and nothing stored before was touched.
    assert queue.size == 1
    assert queue.get_job("existing").payload == {"keep": True}
    for job in batch:
        if job.job_id != "existing":
            with pytest.raises(JobNotFoundError):
                queue.get_job(job.job_id)
    assert queue.ready_count() == 1
    assert sum(queue.count_by_status().values()) == 1


def test_a_refused_batch_can_be_fixed_and_sent_again(queue: Queue, make_job: MakeJob) -> None:
    with pytest.raises(UnknownDependencyError):
        queue.enqueue_many([make_job(job_id="a"), make_job(job_id="b", depends_on=["c"])])
    ids = queue.enqueue_many(
        [make_job(job_id="a"), make_job(job_id="b", depends_on=["c"]), make_job(job_id="c")]
    )
    assert ids == ["a", "b", "c"]
    assert queue.size == 3


def test_a_batch_may_depend_on_jobs_already_stored(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="stored"))
    queue.enqueue_many([make_job(job_id="new", depends_on=["stored"])])
    assert queue.ready_count() == 1
    assert queue.get_job("new").status is JobStatus.PENDING


#: Job ids that spell parts of a store's own key names (the Redis layout's ``B:seq``,
#: ``B:st:PENDING``, ``B:dependents:<id>``...): every character allowed in an id.
KEYLIKE_IDS = ["seq", "st:PENDING", "j:seq", "dependents:p", "p", ":", "::", "ready", "cg:1", "a@b+c=d-e_f.g"]


def test_ids_that_spell_key_names_are_jobs_like_any_other(queue: Queue, make_job: MakeJob) -> None:
    """RELIABILITY.md H9: ids made of every allowed character, some spelling the names of
    a store's own keys, chained by dependencies, each waiting for the one before: each is
    stored, counted, released and run as its own job, and nothing else is disturbed."""
    jobs = [
        make_job(job_id=job_id, payload={"i": i}, depends_on=[KEYLIKE_IDS[i - 1]] if i else [])
        for i, job_id in enumerate(KEYLIKE_IDS)
    ]
    assert queue.enqueue_many(jobs) == KEYLIKE_IDS
    assert queue.size == len(KEYLIKE_IDS)
    assert queue.ready_count() == 1
    ran = []
    while (claim := queue.claim("h9", lease_s=60)) is not None:
        assert claim.job.payload == {"i": len(ran)}
        queue.complete(claim.job.job_id, token=claim.token, result=claim.job.job_id)
        ran.append(claim.job.job_id)
    assert ran == KEYLIKE_IDS
    assert all(queue.get_job(job_id).result == job_id for job_id in KEYLIKE_IDS)
    assert queue.count_by_status()[JobStatus.COMPLETED] == queue.size == len(KEYLIKE_IDS)


def test_a_closed_queue_refuses_new_jobs(queue: Queue, make_job: MakeJob) -> None:
    """After ``close()`` every way of adding jobs raises ``QueueClosedError`` and adds
    nothing (a memory queue is its own store: its reads still answer, and show it)."""
    queue.enqueue(make_job(job_id="before"))
    exported = [dict(queue.export_jobs()[0], job_id="imported")]
    queue.close()
    with pytest.raises(QueueClosedError):
        queue.enqueue(make_job(job_id="one"))
    with pytest.raises(QueueClosedError):
        queue.enqueue_many([make_job(job_id="m1"), make_job(job_id="m2")])
    with pytest.raises(QueueClosedError):
        queue.import_jobs(exported)
    if isinstance(queue, JobQueue):
        assert [j.job_id for j in queue.list_jobs()] == ["before"]
