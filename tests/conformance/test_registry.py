"""The worker registry: each worker's entry, renewed by its heartbeats, listed live and
recently dead, forgotten after ``WORKER_RETENTION_S``."""

from __future__ import annotations

from collections.abc import Callable

from typedq.backends.base import WORKER_RETENTION_S, Queue, WorkerInfo
from typedq.clock import FakeClock


def _info(clock: FakeClock, worker_id: str, **fields: object) -> WorkerInfo:
    values: dict[str, object] = {
        "worker_id": worker_id,
        "queue": "conf",
        "host": "host-a",
        "pid": 4242,
        "job_types": ("email", "resize"),
        "version": "0.1.0",
        "started_at": clock.now(),
        "last_seen": clock.now(),
        "ttl_s": 30.0,
        "stop_pid": 4241,
    }
    values.update(fields)
    return WorkerInfo(**values)  # type: ignore[arg-type]  # the fields of WorkerInfo


def test_a_registered_worker_is_listed_as_it_registered(queue: Queue, clock: FakeClock) -> None:
    info = _info(clock, "w1", jobs_done=3, jobs_failed=1, current=("job-9",))
    queue.register_worker(info)
    assert queue.workers() == [info]
    assert queue.workers()[0].alive(clock.now())


def test_an_entry_keeps_its_metrics_and_an_old_entry_reads_without(
    queue: Queue, clock: FakeClock
) -> None:
    metrics = {"email": {"completed": 4, "failed": 1, "wait": [1, 0, 3], "wait_sum": 0.25,
                         "run": [0, 4, 0], "run_sum": 1.5}}
    queue.register_worker(_info(clock, "w1", metrics=metrics))
    assert queue.workers()[0].metrics == metrics
    data = _info(clock, "w2").to_dict()
    del data["metrics"]  # an entry written before entries had metrics
    assert WorkerInfo.from_dict(data).metrics == {}
    assert WorkerInfo.from_dict({**data, "from_a_newer_version": 1}).worker_id == "w2"


def test_heartbeats_renew_an_entry_and_stale_ones_are_dead(queue: Queue, clock: FakeClock) -> None:
    queue.register_worker(_info(clock, "quiet"))
    clock.advance(1)
    queue.register_worker(_info(clock, "busy", started_at=clock.now()))
    clock.advance(40)
    renewed = _info(clock, "busy", started_at=clock.now() - 40, jobs_done=7)
    queue.register_worker(renewed)
    listed = {w.worker_id: w for w in queue.workers()}
    assert [w.worker_id for w in queue.workers()] == ["quiet", "busy"]  # oldest first
    assert listed["busy"].jobs_done == 7
    assert listed["busy"].alive(clock.now())
    assert not listed["quiet"].alive(clock.now())  # 41 s without a heartbeat, ttl 30 s


def test_unregister_removes_and_ignores_unknown_ids(queue: Queue, clock: FakeClock) -> None:
    queue.register_worker(_info(clock, "w1"))
    queue.unregister_worker("w1")
    queue.unregister_worker("never-there")
    assert queue.workers() == []


def test_long_dead_entries_are_forgotten(queue: Queue, clock: FakeClock) -> None:
    queue.register_worker(_info(clock, "gone"))
    clock.advance(WORKER_RETENTION_S + 1)
    queue.register_worker(_info(clock, "new"))
    assert [w.worker_id for w in queue.workers()] == ["new"]


def test_registries_are_per_queue(
    queue: Queue, queue_factory: Callable[[str], Queue], clock: FakeClock
) -> None:
    other = queue_factory("other")
    queue.register_worker(_info(clock, "w1"))
    other.register_worker(_info(clock, "w2", queue="other"))
    assert [w.worker_id for w in queue.workers()] == ["w1"]
    assert [w.worker_id for w in other.workers()] == ["w2"]


def test_an_entry_round_trips_through_plain_data(clock: FakeClock) -> None:
    info = _info(clock, "w1", current=("a", "b"))
    assert WorkerInfo.from_dict(info.to_dict()) == info
