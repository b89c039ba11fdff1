"""The retired-workers totals of the worker registry: a removed entry's figures are added
to ``retired_metrics()`` in the step that removes it, exactly once, whether the worker
unregisters (with its final figures or its entry's) or its dead entry is forgotten."""

from __future__ import annotations

from typing import Any

from typedq.backends.base import WORKER_RETENTION_S, Queue, WorkerInfo
from typedq.clock import FakeClock


def _info(clock: FakeClock, worker_id: str, metrics: dict[str, Any]) -> WorkerInfo:
    return WorkerInfo(
        worker_id=worker_id, queue="conf", host="host-a", pid=4242, job_types=("email",),
        version="0.1.0", started_at=clock.now(), last_seen=clock.now(), ttl_s=30.0, stop_pid=4241,
        metrics=metrics,
    )


def _figures(completed: int, wait: list[int], wait_sum: float) -> dict[str, Any]:
    return {"email": {"completed": completed, "wait": wait, "wait_sum": wait_sum}}


def test_unregistering_adds_the_final_figures_once(queue: Queue, clock: FakeClock) -> None:
    assert queue.retired_metrics() == {}
    queue.register_worker(_info(clock, "w1", _figures(2, [1, 1], 0.5)))  # its last heartbeat
    final = _info(clock, "w1", _figures(5, [3, 1, 1], 1.25))  # what it did up to its stop
    queue.unregister_worker("w1", final=final)
    assert queue.workers() == []
    assert queue.retired_metrics() == _figures(5, [3, 1, 1], 1.25)
    queue.unregister_worker("w1", final=final)  # again: its entry is gone, nothing added
    assert queue.retired_metrics() == _figures(5, [3, 1, 1], 1.25)


def test_unregistering_without_final_figures_adds_the_entrys(queue: Queue, clock: FakeClock) -> None:
    queue.register_worker(_info(clock, "w1", _figures(2, [0, 2], 0.5)))
    queue.register_worker(_info(clock, "w2", _figures(3, [1], 2.0)))
    queue.unregister_worker("w1")
    queue.unregister_worker("w2")
    queue.unregister_worker("never-registered", final=_info(clock, "x", _figures(9, [9], 9.0)))
    assert queue.retired_metrics() == {"email": {"completed": 5, "wait": [1, 2], "wait_sum": 2.5}}


def test_a_forgotten_entry_is_added_once(queue: Queue, clock: FakeClock) -> None:
    queue.register_worker(_info(clock, "gone", _figures(4, [4], 1.5)))
    clock.advance(WORKER_RETENTION_S + 1)
    queue.register_worker(_info(clock, "live", _figures(1, [1], 0.5)))  # forgets "gone"
    assert [w.worker_id for w in queue.workers()] == ["live"]
    assert queue.retired_metrics() == _figures(4, [4], 1.5)
    # The forgotten worker unregistering late adds nothing more: it was counted.
    queue.unregister_worker("gone", final=_info(clock, "gone", _figures(6, [6], 2.0)))
    queue.register_worker(_info(clock, "live", _figures(1, [1], 0.5)))
    assert queue.retired_metrics() == _figures(4, [4], 1.5)


def test_entries_plus_totals_count_every_worker_once(queue: Queue, clock: FakeClock) -> None:
    """What the exporter sums: the totals and every entry, before and after removals."""

    def counted() -> int:
        total = queue.retired_metrics().get("email", {}).get("completed", 0)
        return int(total) + sum(w.metrics.get("email", {}).get("completed", 0) for w in queue.workers())

    for n, worker_id in enumerate(("a", "b", "c"), start=1):
        queue.register_worker(_info(clock, worker_id, _figures(n, [n], float(n))))
    assert counted() == 6
    queue.unregister_worker("a")
    assert counted() == 6
    queue.unregister_worker("b", final=_info(clock, "b", _figures(4, [4], 4.0)))  # 2 more since
    assert counted() == 8
    clock.advance(WORKER_RETENTION_S + 1)
    queue.register_worker(_info(clock, "d", {}))  # forgets "c"
    assert counted() == 8


def test_totals_read_the_same_on_every_backend(queue: Queue, clock: FakeClock) -> None:
    """Zero figures are left out and whole sums read as ints, wherever they are kept."""
    queue.register_worker(_info(clock, "w", {"email": {"completed": 0, "failed": 2, "wait": [0, 0, 3],
                                                       "wait_sum": 2.0, "run_sum": 0.25}}))
    queue.unregister_worker("w")
    expected = {"email": {"failed": 2, "wait": [0, 0, 3], "wait_sum": 2, "run_sum": 0.25}}
    assert queue.retired_metrics() == expected
