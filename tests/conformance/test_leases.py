"""Leases and fencing tokens: claim, complete, fail, bury, release, extend_lease,
reclaim_expired and replay. Time moves only through the FakeClock."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from typedq.backends.base import Claim, Queue
from typedq.clock import FakeClock
from typedq.errors import InvalidTransitionError, JobNotFoundError, StaleLeaseError
from typedq.job import Job, JobStatus

MakeJob = Callable[..., Job]


def _claim_one(queue: Queue, worker: str = "w1", lease_s: float = 1.0) -> Claim:
    claim = queue.claim(worker, lease_s=lease_s)
    assert claim is not None
    return claim


def _use_token(queue: Queue, call: str, job_id: str, token: int, clock: FakeClock) -> object:
    """Make one lease-holding call with ``token``."""
    if call == "complete":
        return queue.complete(job_id, token=token, result="from the stale worker")
    if call == "fail":
        return queue.fail(job_id, token=token, error="stale failure", retry_at=clock.now())
    if call == "bury":
        return queue.bury(job_id, token=token, error="stale burial")
    if call == "release":
        return queue.release(job_id, token=token)
    assert call == "extend_lease"
    return queue.extend_lease(job_id, token=token, lease_s=999)


LEASED_CALLS = ["complete", "fail", "bury", "release", "extend_lease"]


# -- claim ---------------------------------------------------------------------------------


def test_claim_leases_the_job_to_the_worker(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = queue.claim("worker-7", lease_s=2.5)
    assert claim is not None
    assert claim.job.job_id == "j"
    assert claim.lease_until == pytest.approx(clock.now() + 2.5)
    stored = queue.get_job("j")
    assert stored.status is JobStatus.RUNNING
    assert stored.worker_id == "worker-7"
    assert stored.attempt == claim.token == 1
    assert stored.lease_until == pytest.approx(claim.lease_until)
    assert queue.claim("worker-8", lease_s=2.5) is None


@pytest.mark.parametrize("how", ["claim", "claim_many"])
def test_the_claimed_job_is_the_stored_job_field_for_field(
    queue: Queue, make_job: MakeJob, clock: FakeClock, how: str
) -> None:
    """Every field of the job a claim hands out, the ones the claim sets included."""
    queue.enqueue(make_job(job_id="parent"))
    parent = _claim_one(queue)
    queue.complete("parent", token=parent.token, result={"done": 1})
    queue.enqueue(
        make_job(
            job_id="j", priority=7, scheduled_at=clock.now() - 1.0, max_retries=5,
            timeout_seconds=9.5, metadata={"m": [1, 2]}, depends_on=["parent"],
        )
    )
    first = _claim_one(queue, "w1")
    queue.fail("j", token=first.token, error="first try failed", retry_at=clock.now())
    clock.advance(3.0)
    if how == "claim":
        claim = _claim_one(queue, "worker-9", lease_s=4.0)
    else:
        (claim,) = queue.claim_many("worker-9", lease_s=4.0, limit=5)
    job = claim.job
    assert (job.job_id, job.status, job.worker_id, job.attempt) == ("j", JobStatus.RUNNING, "worker-9", 2)
    assert job.started_at == pytest.approx(clock.now())
    assert job.lease_until == pytest.approx(clock.now() + 4.0) == pytest.approx(claim.lease_until)
    assert (job.retry_count, job.error, job.metadata["m"]) == (1, "first try failed", [1, 2])
    assert (job.priority, job.max_retries, job.timeout_seconds, job.depends_on) == (7, 5, 9.5, ["parent"])
    assert job.to_dict() == queue.get_job("j").to_dict()


def test_every_claim_gets_a_fresh_token(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    tokens = []
    for _ in range(3):
        claim = _claim_one(queue)
        tokens.append(claim.token)
        queue.release("j", token=claim.token)
    assert tokens == sorted(set(tokens))
    assert len(tokens) == 3


# -- complete ------------------------------------------------------------------------------


def test_complete_stores_the_result(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim_one(queue)
    result = {"rows": [1, 2, {"nested": None}], "ok": True}
    done = queue.complete("j", token=claim.token, result=result)
    assert done.status is JobStatus.COMPLETED
    stored = queue.get_job("j")
    assert stored.status is JobStatus.COMPLETED
    assert stored.result == result
    assert queue.ready_count() == 0


def test_a_dequeued_job_can_be_completed_with_its_attempt(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    job = queue.dequeue()
    assert job is not None
    queue.complete("j", token=queue.get_job("j").attempt, result=1)
    assert queue.get_job("j").status is JobStatus.COMPLETED


# -- stale tokens --------------------------------------------------------------------------


@pytest.mark.parametrize("call", LEASED_CALLS)
def test_a_wrong_token_is_refused_and_changes_nothing(
    queue: Queue, make_job: MakeJob, clock: FakeClock, call: str
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim_one(queue)
    before = queue.get_job("j").to_dict()
    with pytest.raises(StaleLeaseError) as info:
        _use_token(queue, call, "j", claim.token + 1, clock)
    assert isinstance(info.value, RuntimeError)
    assert "j" in str(info.value)
    assert str(claim.token + 1) in str(info.value)
    assert queue.get_job("j").to_dict() == before


@pytest.mark.parametrize("call", LEASED_CALLS)
@pytest.mark.parametrize("status", [JobStatus.PENDING, JobStatus.COMPLETED, JobStatus.DEAD])
def test_a_job_that_is_not_running_refuses_every_token(
    queue: Queue, make_job: MakeJob, clock: FakeClock, call: str, status: JobStatus
) -> None:
    queue.enqueue(make_job(job_id="j", status=status, attempt=1))
    before = queue.get_job("j").to_dict()
    with pytest.raises(StaleLeaseError):
        _use_token(queue, call, "j", 1, clock)
    assert queue.get_job("j").to_dict() == before


@pytest.mark.parametrize("call", LEASED_CALLS)
def test_a_leased_call_on_an_unknown_job_raises_not_found(
    queue: Queue, clock: FakeClock, call: str
) -> None:
    with pytest.raises(JobNotFoundError, match="ghost"):
        _use_token(queue, call, "ghost", 1, clock)


@pytest.mark.parametrize("call", LEASED_CALLS)
def test_c1_the_newer_attempt_wins(
    queue: Queue, make_job: MakeJob, clock: FakeClock, call: str
) -> None:
    """RELIABILITY C1: T1's lease expires, the job is re-claimed as T2; T1 is refused."""
    queue.enqueue(make_job(job_id="j"))
    first = _claim_one(queue, "slow-worker", lease_s=1.0)
    clock.advance(1.5)
    assert queue.reclaim_expired() == ["j"]
    second = _claim_one(queue, "fresh-worker", lease_s=1.0)
    assert second.token != first.token
    # While T2 runs, every T1 call is refused and T2's lease is untouched.
    with pytest.raises(StaleLeaseError):
        _use_token(queue, call, "j", first.token, clock)
    running = queue.get_job("j")
    assert running.status is JobStatus.RUNNING
    assert running.worker_id == "fresh-worker"
    assert running.lease_until == pytest.approx(second.lease_until)
    queue.complete("j", token=second.token, result="from T2")
    # After T2 completed, T1 is still refused, for every call.
    for late_call in LEASED_CALLS:
        with pytest.raises(StaleLeaseError):
            _use_token(queue, late_call, "j", first.token, clock)
    final = queue.get_job("j")
    assert final.status is JobStatus.COMPLETED
    assert final.result == "from T2"
    assert queue.count_by_status()[JobStatus.COMPLETED] == 1


# -- fail, bury, release -------------------------------------------------------------------


def test_fail_schedules_a_retry(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue(make_job(job_id="j", priority=8))
    claim = _claim_one(queue)
    retry_at = clock.now() + 4
    failed = queue.fail("j", token=claim.token, error="ValueError: bad", retry_at=retry_at)
    assert failed.status is JobStatus.PENDING
    stored = queue.get_job("j")
    assert stored.status is JobStatus.PENDING
    assert stored.retry_count == 1
    assert stored.error == "ValueError: bad"
    assert stored.scheduled_at == retry_at
    assert stored.priority == 8  # a retry keeps its priority
    # Not ready before retry_at ...
    clock.advance(3.5)
    assert queue.ready_count() == 0
    assert queue.claim("w", lease_s=1) is None
    # ... ready at retry_at, under a new token.
    clock.advance(0.5)
    assert queue.ready_count() == 1
    again = _claim_one(queue)
    assert again.token > claim.token
    with pytest.raises(StaleLeaseError):
        queue.complete("j", token=claim.token)
    queue.fail("j", token=again.token, error="again", retry_at=clock.now())
    assert queue.get_job("j").retry_count == 2


def test_fail_with_a_past_retry_at_is_ready_at_once(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim_one(queue)
    queue.fail("j", token=claim.token, error="e", retry_at=clock.now() - 5)
    assert queue.ready_count() == 1


def test_bury_makes_the_job_dead(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim_one(queue)
    buried = queue.bury("j", token=claim.token, error="gave up", traceback="Traceback ...")
    assert buried.status is JobStatus.DEAD
    stored = queue.get_job("j")
    assert stored.status is JobStatus.DEAD
    assert stored.error == "gave up"
    assert queue.ready_count() == 0
    assert queue.count_by_status()[JobStatus.DEAD] == 1


def test_release_gives_the_job_back_without_counting_a_failure(
    queue: Queue, make_job: MakeJob
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim_one(queue)
    released = queue.release("j", token=claim.token)
    assert released.status is JobStatus.PENDING
    stored = queue.get_job("j")
    assert stored.status is JobStatus.PENDING
    assert stored.retry_count == 0
    assert queue.ready_count() == 1
    assert _claim_one(queue).token > claim.token


# -- extend_lease --------------------------------------------------------------------------


def test_extend_lease_pushes_the_deadline(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim_one(queue, lease_s=1.0)
    clock.advance(0.5)
    until = queue.extend_lease("j", token=claim.token, lease_s=1.0)
    assert until == pytest.approx(clock.now() + 1.0)
    assert queue.get_job("j").lease_until == pytest.approx(until)
    clock.advance(0.75)  # past the first deadline, before the new one
    assert queue.reclaim_expired() == []
    assert queue.get_job("j").status is JobStatus.RUNNING
    clock.advance(0.5)
    assert queue.reclaim_expired() == ["j"]


# -- reclaim_expired (RELIABILITY C5) ------------------------------------------------------


@pytest.mark.parametrize(
    ("advance", "rescued"),
    [
        pytest.param(1.0 + 3600, True, id="expired-by-1h"),
        pytest.param(1.0 + 0.001, True, id="expired-by-1ms"),
        pytest.param(1.0 - 0.001, False, id="not-expired-by-1ms"),
    ],
)
def test_c5_reclaim_boundaries(
    queue: Queue, make_job: MakeJob, clock: FakeClock, advance: float, rescued: bool
) -> None:
    queue.enqueue(make_job(job_id="j"))
    claim = _claim_one(queue, lease_s=1.0)
    clock.advance(advance)
    reclaimed = queue.reclaim_expired()
    job = queue.get_job("j")
    if rescued:
        assert reclaimed == ["j"]
        assert job.status is JobStatus.PENDING
        assert job.lost_count == 1
        assert job.retry_count == 0  # a lost worker is not a handler failure
        assert queue.ready_count() == 1
        with pytest.raises(StaleLeaseError):
            queue.complete("j", token=claim.token)
    else:
        assert reclaimed == []
        assert job.status is JobStatus.RUNNING
        assert job.lost_count == 0
        queue.complete("j", token=claim.token)  # the owner still holds it


@pytest.mark.parametrize("max_lost", [None, 1, 3])
def test_c5_a_job_lost_max_lost_times_is_dead(
    queue: Queue, make_job: MakeJob, clock: FakeClock, max_lost: int | None
) -> None:
    limit = 3 if max_lost is None else max_lost  # the default is 3

    def reclaim() -> list[str]:
        return queue.reclaim_expired() if max_lost is None else queue.reclaim_expired(max_lost=max_lost)

    queue.enqueue(make_job(job_id="j"))
    for lost in range(1, limit):
        _claim_one(queue, lease_s=1.0)
        clock.advance(2)
        assert reclaim() == ["j"]
        assert queue.get_job("j").status is JobStatus.PENDING
        assert queue.get_job("j").lost_count == lost
    _claim_one(queue, lease_s=1.0)
    clock.advance(2)
    assert reclaim() == ["j"]
    job = queue.get_job("j")
    assert job.status is JobStatus.DEAD
    assert job.lost_count == limit
    assert job.error is not None
    assert f"worker lost {limit}×" in job.error
    assert queue.ready_count() == 0
    assert queue.replay("j").status is JobStatus.PENDING  # a dead letter like any other


def test_c5_a_cancel_requested_job_whose_lease_expires_is_cancelled(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j"))
    queue.enqueue(make_job(job_id="child", depends_on=["j"]))
    _claim_one(queue, lease_s=1.0)
    assert queue.cancel("j") is False
    clock.advance(2)
    assert queue.reclaim_expired() == ["j"]
    assert queue.get_job("j").status is JobStatus.CANCELLED
    assert queue.get_job("child").status is JobStatus.FAILED
    assert queue.ready_count() == 0


def test_reclaim_leaves_finished_and_unleased_jobs_alone(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="done", priority=9))
    queue.enqueue(make_job(job_id="dequeued", priority=8))
    queue.enqueue(make_job(job_id="waiting", priority=1))
    claim = _claim_one(queue, lease_s=1.0)
    queue.complete("done", token=claim.token)
    taken = queue.dequeue()  # no lease: never reclaimed
    assert taken is not None
    assert taken.job_id == "dequeued"
    clock.advance(10_000)
    assert queue.reclaim_expired() == []
    assert queue.get_job("done").status is JobStatus.COMPLETED
    assert queue.get_job("dequeued").status is JobStatus.RUNNING
    assert queue.get_job("waiting").status is JobStatus.PENDING


def test_reclaim_takes_at_most_limit_jobs(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue_many([make_job(job_id=f"j{i}") for i in range(5)])
    assert len(queue.claim_many("w", lease_s=1.0, limit=5)) == 5
    clock.advance(2)
    first = queue.reclaim_expired(limit=2)
    assert len(first) == 2
    assert queue.count_by_status()[JobStatus.RUNNING] == 3
    rest = queue.reclaim_expired(limit=10)
    assert sorted(first + rest) == [f"j{i}" for i in range(5)]
    assert queue.ready_count() == 5


# -- replay --------------------------------------------------------------------------------


def test_replay_gives_a_dead_job_a_fresh_start(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue(make_job(job_id="j", max_retries=1))
    claim = _claim_one(queue)
    queue.fail("j", token=claim.token, error="first", retry_at=clock.now())
    claim = _claim_one(queue)
    queue.bury("j", token=claim.token, error="last")
    replayed = queue.replay("j")
    assert replayed.status is JobStatus.PENDING
    job = queue.get_job("j")
    assert job.status is JobStatus.PENDING
    assert job.retry_count == 0
    assert job.error is None
    assert queue.ready_count() == 1
    fresh = _claim_one(queue)
    assert fresh.token > claim.token
    queue.complete("j", token=fresh.token, result="finally")
    assert queue.get_job("j").result == "finally"


@pytest.mark.parametrize(
    "status",
    [JobStatus.PENDING, JobStatus.SCHEDULED, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED],
)
def test_replay_refuses_a_job_that_is_not_dead(
    queue: Queue, make_job: MakeJob, status: JobStatus
) -> None:
    queue.enqueue(make_job(job_id="j", status=status))
    with pytest.raises(InvalidTransitionError) as info:
        queue.replay("j")
    assert isinstance(info.value, ValueError)
    assert info.value.field == "status"
    assert "status" in str(info.value)
    assert "DEAD" in str(info.value)
    assert queue.get_job("j").status is status


def test_replay_refuses_a_running_job(queue: Queue, make_job: MakeJob) -> None:
    queue.enqueue(make_job(job_id="j"))
    _claim_one(queue)
    with pytest.raises(InvalidTransitionError):
        queue.replay("j")
    assert queue.get_job("j").status is JobStatus.RUNNING


def test_replay_of_an_unknown_job_raises(queue: Queue) -> None:
    with pytest.raises(JobNotFoundError, match="ghost"):
        queue.replay("ghost")


# -- cancel by the lease holder --------------------------------------------------------------


def test_the_lease_holder_records_the_cancellation_of_its_running_job(
    queue: Queue, make_job: MakeJob, clock: FakeClock
) -> None:
    queue.enqueue_many([make_job(job_id="p"), make_job(job_id="child", depends_on=["p"])])
    claim = _claim_one(queue)
    assert queue.cancel("p") is False  # a running job is only asked to stop
    clock.advance(0.5)
    assert queue.cancel("p", token=claim.token) is True
    job = queue.get_job("p")
    assert (job.status, job.finished_at, job.lease_until) == (JobStatus.CANCELLED, clock.now(), None)
    assert queue.get_job("child").status is JobStatus.FAILED
    assert queue.reclaim_expired() == []


def test_a_stale_token_cannot_cancel(queue: Queue, make_job: MakeJob, clock: FakeClock) -> None:
    queue.enqueue(make_job(job_id="j"))
    first = _claim_one(queue)
    clock.advance(2)
    queue.reclaim_expired()
    second = _claim_one(queue)
    with pytest.raises(StaleLeaseError):
        queue.cancel("j", token=first.token)
    assert queue.get_job("j").status is JobStatus.RUNNING
    queue.complete("j", token=second.token)
    with pytest.raises(StaleLeaseError):
        queue.cancel("j", token=second.token)
    assert queue.get_job("j").status is JobStatus.COMPLETED
    with pytest.raises(JobNotFoundError):
        queue.cancel("nope", token=1)
