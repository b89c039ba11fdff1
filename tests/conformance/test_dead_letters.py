"""Dead letters: a job's death and its copy in the dead-letter queue are one transition.

``bury``, ``reclaim_expired`` and ``retry`` take a ``dead_letter`` queue of the same store
(``store_factory``): after one call the source holds the job DEAD *and* the dead-letter
queue holds its copy, so no crash can come between the two (there is no "between"). A
dead-letter queue of another store is refused with ``ConfigError`` before anything is
written. ``dlq_max`` keeps the dead-letter queue bounded: the oldest dead letters go, in
the same transition, each with its DEAD row, counted by ``count_dropped``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from typedq.backends.base import Claim, Queue
from typedq.clock import FakeClock
from typedq.errors import (
    ConfigError,
    InvalidTransitionError,
    JobNotFoundError,
    StaleLeaseError,
    UnknownDependencyError,
)
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]
QueueFactory = Callable[[str], Queue]


@pytest.fixture
def dlq(store_factory: QueueFactory) -> Queue:
    """The dead-letter queue: another queue of the store of ``queue``."""
    return store_factory("dead-letter")


def _claim(queue: Queue) -> Claim:
    claim = queue.claim("w", lease_s=30.0)
    assert claim is not None
    return claim


def _bury_next(queue: Queue, dlq: Queue, dlq_max: int | None = None, error: str = "boom") -> str:
    claim = _claim(queue)
    queue.bury(claim.job.job_id, token=claim.token, error=error, dead_letter=dlq, dlq_max=dlq_max)
    return claim.job.job_id


# -- one transition ------------------------------------------------------------------------


def test_one_bury_leaves_the_job_dead_and_its_copy_in_the_dead_letter_queue(
    queue: Queue, dlq: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many(
        [
            make_job(job_id="j", payload={"n": 1}, metadata={"tenant": "t"}, max_retries=0),
            make_job(job_id="child", depends_on=["j"]),
        ]
    )
    claim = _claim(queue)
    clock.advance(2)
    dead = queue.bury("j", token=claim.token, error="ValueError: x", traceback="Trace", dead_letter=dlq)
    assert (dead.status, dead.error, dead.traceback) == (JobStatus.DEAD, "ValueError: x", "Trace")
    source = queue.get_job("j")
    letter = dlq.get_job("j")
    assert source.status is JobStatus.DEAD
    # Every field as the source holds it; its queue field names the queue it died in
    # (where a replay puts it back), whatever the job's own said.
    assert source.queue == "default"
    assert letter.queue == "conf"
    assert {**letter.to_dict(), "queue": "default"} == source.to_dict()
    assert (letter.payload, letter.metadata, letter.finished_at) == ({"n": 1}, {"tenant": "t"}, clock.now())
    assert dlq.count_by_status()[JobStatus.DEAD] == 1
    assert dlq.ready_count() == 0
    # The failure cascade is the source queue's, in the same transition.
    child = queue.get_job("child")
    assert (child.status, child.error) == (JobStatus.FAILED, "dependency j is DEAD")
    assert dlq.size == 1


def test_a_refused_bury_writes_no_dead_letter(queue: Queue, dlq: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue)
    queue.complete("j", token=claim.token)
    with pytest.raises(StaleLeaseError):
        queue.bury("j", token=claim.token, error="late", dead_letter=dlq)
    assert dlq.size == 0
    assert queue.get_job("j").status is JobStatus.COMPLETED


def test_a_second_death_replaces_the_older_dead_letter(
    queue: Queue, dlq: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="j"))
    _bury_next(queue, dlq, error="first death")
    queue.retry("j")  # run again without the manager: the old copy stays behind
    _bury_next(queue, dlq, error="second death")
    assert dlq.size == 1
    assert dlq.get_job("j").error == "second death"


def test_a_reclaim_that_kills_a_job_puts_its_dead_letter_in_the_same_call(
    queue: Queue, dlq: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many([make_job(job_id="lost"), make_job(job_id="child", depends_on=["lost"])])
    queue.claim("w", lease_s=1.0)
    clock.advance(5)
    assert queue.reclaim_expired(max_lost=1, dead_letter=dlq) == ["lost"]
    assert queue.get_job("lost").status is JobStatus.DEAD
    letter = dlq.get_job("lost")
    assert (letter.status, letter.error, letter.queue) == (JobStatus.DEAD, "worker lost 1×", "conf")
    assert queue.get_job("child").status is JobStatus.FAILED


# -- only within one store -----------------------------------------------------------------


def test_a_dead_letter_queue_of_another_store_is_refused_and_nothing_is_written(
    queue: Queue, foreign_queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue)
    with pytest.raises(ConfigError, match="dead_letter") as refused:
        queue.bury("j", token=claim.token, error="boom", dead_letter=foreign_queue)
    assert refused.value.field == "dead_letter"
    assert isinstance(refused.value, ValueError)
    assert queue.get_job("j").status is JobStatus.RUNNING
    assert foreign_queue.size == 0
    with pytest.raises(ConfigError, match="dead_letter"):
        queue.check_dead_letter(foreign_queue)
    clock.advance(60)
    with pytest.raises(ConfigError, match="dead_letter"):
        queue.reclaim_expired(max_lost=1, dead_letter=foreign_queue)
    assert queue.get_job("j").status is JobStatus.RUNNING
    with pytest.raises(ConfigError, match="dead_letter"):
        queue.retry("j", dead_letter=foreign_queue)


def test_a_queue_is_not_its_own_dead_letter_queue(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue)
    with pytest.raises(ConfigError, match="dead_letter"):
        queue.check_dead_letter(queue)
    with pytest.raises(ConfigError, match="another queue"):
        queue.bury("j", token=claim.token, error="boom", dead_letter=queue)
    assert queue.get_job("j").status is JobStatus.RUNNING


def test_a_queue_of_the_same_store_is_accepted(queue: Queue, dlq: Queue) -> None:
    queue.check_dead_letter(dlq)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "10", True])
def test_a_bad_dlq_max_is_refused_naming_it(
    queue: Queue, dlq: Queue, make_job: MakeJob, bad: object
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim(queue)
    with pytest.raises(ConfigError, match="dlq_max") as refused:
        queue.bury("j", token=claim.token, error="boom", dead_letter=dlq, dlq_max=bad)  # type: ignore[arg-type]  # on purpose
    assert refused.value.field == "dlq_max"
    assert queue.get_job("j").status is JobStatus.RUNNING


# -- dlq_max -------------------------------------------------------------------------------


def test_dlq_max_drops_the_oldest_dead_letters_with_their_rows_and_counts_them(
    queue: Queue, dlq: Queue, make_job: MakeJob, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="typedq.backends")
    queue.enqueue_many([make_job(job_id=f"d{i}") for i in range(5)] + [make_job(job_id="alive")])
    buried = [_bury_next(queue, dlq, dlq_max=3) for _ in range(5)]
    assert buried == [f"d{i}" for i in range(5)]
    assert [j.job_id for j in dlq.list_jobs()] == ["d2", "d3", "d4"]
    assert dlq.count_dropped() == 2
    # A dropped dead letter is gone for good: its DEAD row went with it.
    for job_id in ("d0", "d1"):
        with pytest.raises(JobNotFoundError):
            queue.get_job(job_id)
    assert [j.job_id for j in queue.list_jobs(status=JobStatus.DEAD)] == ["d2", "d3", "d4"]
    assert queue.get_job("alive").status is JobStatus.PENDING
    assert any("dropped the oldest" in r.getMessage() and "d0" in r.getMessage() for r in caplog.records)


def test_dlq_max_drops_a_dead_letter_of_another_queue_with_its_row(
    queue: Queue, dlq: Queue, store_factory: QueueFactory, make_job: MakeJob
) -> None:
    other = store_factory("other")
    queue.enqueue(make_job(job_id="a", queue="conf"))
    other.enqueue(make_job(job_id="b", queue="other"))
    _bury_next(queue, dlq, dlq_max=1)
    _bury_next(other, dlq, dlq_max=1)
    assert [j.job_id for j in dlq.list_jobs()] == ["b"]
    with pytest.raises(JobNotFoundError):
        queue.get_job("a")
    assert other.get_job("b").status is JobStatus.DEAD
    assert dlq.count_dropped() == 1


def test_a_dropped_dead_letter_whose_job_ran_again_leaves_the_job_alone(
    queue: Queue, dlq: Queue, make_job: MakeJob
) -> None:
    queue.enqueue_many([make_job(job_id="first", priority=9), make_job(job_id="second")])
    assert _bury_next(queue, dlq, dlq_max=1) == "first"
    queue.retry("first")  # re-opened without the manager: its dead letter stays behind
    queue.cancel("first")  # and it ends otherwise
    assert _bury_next(queue, dlq, dlq_max=1) == "second"
    assert [j.job_id for j in dlq.list_jobs()] == ["second"]
    assert queue.get_job("first").status is JobStatus.CANCELLED  # not deleted with its old letter


# -- retry from the dead-letter queue --------------------------------------------------------


def test_retry_takes_the_dead_letter_back_in_the_same_call(
    queue: Queue, dlq: Queue, make_job: MakeJob
) -> None:
    queue.enqueue_many(
        [
            make_job(job_id="parent"),
            make_job(job_id="child", depends_on=["parent"]),
            make_job(job_id="grandchild", depends_on=["child"]),
        ]
    )
    _bury_next(queue, dlq)
    assert queue.retry("parent", with_dependents=True, dead_letter=dlq) == ["parent", "child", "grandchild"]
    assert dlq.size == 0
    parent = queue.get_job("parent")
    assert (parent.status, parent.retry_count, parent.error) == (JobStatus.PENDING, 0, None)
    assert queue.get_job("grandchild").status is JobStatus.PENDING


def test_retry_puts_the_dead_letter_back_when_its_queue_lost_the_job(
    queue: Queue, dlq: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="j", payload={"n": 7}))
    _bury_next(queue, dlq)
    queue.delete("j")
    assert queue.retry("j", dead_letter=dlq) == ["j"]
    job = queue.get_job("j")
    assert (job.status, job.payload, job.error, job.queue) == (JobStatus.PENDING, {"n": 7}, None, "conf")
    assert dlq.size == 0
    assert _claim(queue).job.job_id == "j"


def test_retry_of_an_unknown_job_or_a_live_one_changes_nothing(
    queue: Queue, dlq: Queue, make_job: MakeJob
) -> None:
    with pytest.raises(JobNotFoundError):
        queue.retry("nowhere", dead_letter=dlq)
    queue.enqueue(make_job(job_id="j"))
    _bury_next(queue, dlq)
    queue.retry("j")  # re-opened directly: PENDING, its dead letter left behind
    with pytest.raises(InvalidTransitionError):
        queue.retry("j", dead_letter=dlq)
    assert dlq.get_job("j").status is JobStatus.DEAD
    assert queue.get_job("j").status is JobStatus.PENDING


def test_dependencies_stay_in_their_queue_so_a_cascade_never_crosses_queues(
    queue: Queue, dlq: Queue, store_factory: QueueFactory, make_job: MakeJob
) -> None:
    """A dependency must be a job of the same queue: a death fails its dependents in its
    own queue, in its transition, and a dead letter waits on nothing in the dead-letter
    queue (its ``depends_on`` names jobs of the queue it died in)."""
    other = store_factory("other")
    queue.enqueue_many([make_job(job_id="p"), make_job(job_id="c", depends_on=["p"])])
    with pytest.raises(UnknownDependencyError):
        other.enqueue(make_job(job_id="elsewhere", depends_on=["p"]))
    claim = _claim(queue)
    queue.complete("p", token=claim.token)
    _bury_next(queue, dlq)  # "c", which depends on "p" of this queue
    letter = dlq.get_job("c")
    assert (letter.status, letter.depends_on) == (JobStatus.DEAD, ["p"])
    assert dlq.ready_count() == 0
    assert dlq.count_by_status()[JobStatus.FAILED] == 0
    assert queue.retry("c", dead_letter=dlq) == ["c"]
    assert queue.ready_count() == 1  # "p" is COMPLETED in its queue: ready at once
