"""Named locks with fencing tokens (``Queue.lock``): mutual exclusion, tokens that only
grow, stale tokens refused, renewals, several handles on one store, and races.

Expiry follows the queue's clock (the test's FakeClock): tests move it, never sleep.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable

import pytest
from tests.conformance.conftest import QueueFactory

from typedq.backends.base import Lock, LockState, Queue
from typedq.backends.memory import JobQueue
from typedq.clock import FakeClock
from typedq.errors import ConfigError


@pytest.fixture
def same_store(queue: Queue, queue_factory: QueueFactory) -> Callable[[], Queue]:
    """Another queue object on the store of ``queue``: a second ``SQLiteQueue`` on its
    file, a second ``RedisQueue`` on its prefix; a ``JobQueue`` *is* its store, so the
    same object (its locks are per object, as documented)."""

    def other() -> Queue:
        return queue if isinstance(queue, JobQueue) else queue_factory("conf")

    return other


def test_a_held_lock_is_not_taken_by_another_handle(queue: Queue, clock: FakeClock) -> None:
    first, second = queue.lock("leader", 10.0), queue.lock("leader", 10.0)
    token = first.acquire("alpha")
    assert token is not None
    assert first.token == token
    assert second.acquire("beta") is None
    assert second.token is None
    assert first.holder() == LockState("leader", "alpha", token, clock.now() + 10.0)
    assert second.holder() == first.holder()
    assert first.is_held()
    assert not second.is_held()


def test_a_lock_is_not_re_entrant(queue: Queue) -> None:
    lock = queue.lock("leader", 10.0)
    assert lock.acquire() is not None
    assert lock.acquire() is None


def test_locks_of_different_names_are_independent(queue: Queue) -> None:
    a, b = queue.lock("a", 5.0), queue.lock("b", 5.0)
    assert a.acquire() == 1
    assert b.acquire() == 1  # each name counts its own tokens
    assert a.holder() is not None
    assert b.holder() is not None
    assert a.holder().name == "a"  # type: ignore[union-attr]


def test_tokens_grow_across_release_and_expiry(queue: Queue, clock: FakeClock) -> None:
    lock = queue.lock("leader", 5.0)
    first = lock.acquire("a")
    assert first is not None
    assert lock.release()
    assert lock.holder() is None
    second = queue.lock("leader", 5.0).acquire("b")
    assert second is not None
    assert second > first
    clock.advance(5.0)  # the deadline itself is expired: held while expires_at > now
    assert lock.holder() is None
    third = queue.lock("leader", 5.0).acquire("c")
    assert third is not None
    assert third > second
    assert [first, second, third] == sorted({first, second, third})


def test_a_stale_token_is_refused_after_expiry_and_a_new_holder(queue: Queue, clock: FakeClock) -> None:
    old, new = queue.lock("leader", 5.0), queue.lock("leader", 5.0)
    stale = old.acquire("old")
    assert stale is not None
    clock.advance(6.0)
    fresh = new.acquire("new")
    assert fresh is not None
    assert fresh > stale
    assert not old.renew(stale)
    assert not old.release(stale)
    assert not old.is_held(stale)
    assert old.token is None  # the failed renewal told the handle
    holder = new.holder()
    assert holder is not None
    assert (holder.owner, holder.token) == ("new", fresh)
    assert new.is_held(fresh)
    assert new.renew()


def test_renew_extends_by_ttl_from_now(queue: Queue, clock: FakeClock) -> None:
    lock = queue.lock("leader", 10.0)
    token = lock.acquire()
    clock.advance(8.0)
    assert lock.renew(token)
    state = lock.holder()
    assert state is not None
    assert state.expires_at == clock.now() + 10.0
    clock.advance(8.0)  # 16 s after the acquisition: held thanks to the renewal
    assert lock.is_held(token)
    clock.advance(2.0)
    assert not lock.is_held(token)
    assert not lock.renew(token)  # an expired lock is lost, even with nobody else in it


def test_an_expired_lock_released_by_its_old_token_says_so(queue: Queue, clock: FakeClock) -> None:
    lock = queue.lock("leader", 1.0)
    token = lock.acquire()
    clock.advance(2.0)
    assert not lock.release(token)
    again = queue.lock("leader", 1.0).acquire()
    assert again is not None
    assert token is not None
    assert again > token


def test_release_frees_at_once_and_only_for_the_holder(queue: Queue) -> None:
    holder, other = queue.lock("leader", 30.0), queue.lock("leader", 30.0)
    token = holder.acquire()
    assert token is not None
    assert not other.release(token + 1)  # a token never given
    assert holder.is_held(token)
    assert holder.release()
    assert not holder.release(token)  # already free
    assert other.acquire() == token + 1


def test_a_handle_without_a_token_holds_nothing(queue: Queue) -> None:
    lock = queue.lock("leader", 30.0)
    assert lock.token is None
    assert not lock.renew()
    assert not lock.release()
    assert not lock.is_held()
    assert lock.holder() is None


def test_context_manager_acquires_and_releases(queue: Queue) -> None:
    with queue.lock("job", 30.0) as held:
        assert isinstance(held, Lock)
        assert held.token is not None
        assert held.is_held()
        assert queue.lock("job", 30.0).acquire() is None
    assert held.token is None
    assert held.holder() is None


def test_two_queue_objects_on_one_store_contend(
    queue: Queue, same_store: Callable[[], Queue], clock: FakeClock
) -> None:
    other = same_store()
    mine, theirs = queue.lock("leader", 5.0), other.lock("leader", 5.0)
    first = mine.acquire("here")
    assert first is not None
    assert theirs.acquire("there") is None
    seen = theirs.holder()
    assert seen is not None
    assert (seen.owner, seen.token) == ("here", first)
    clock.advance(5.5)
    second = theirs.acquire("there")
    assert second is not None
    assert second > first
    assert not mine.renew(first)
    assert mine.holder() == theirs.holder()


def test_tokens_keep_growing_when_the_store_is_opened_again(
    queue: Queue, same_store: Callable[[], Queue]
) -> None:
    first = queue.lock("leader", 5.0).acquire()
    assert first is not None
    queue.lock("leader", 5.0).release(first)
    queue.close()  # a durable store keeps its counters; a JobQueue stays usable
    reopened = same_store()
    second = reopened.lock("leader", 5.0).acquire()
    assert second is not None
    assert second > first


def test_blocking_acquire_waits_for_a_release(queue: Queue) -> None:
    holder = queue.lock("leader", 60.0)
    first = holder.acquire()
    assert first is not None
    waiter = queue.lock("leader", 60.0)
    assert waiter.acquire(blocking=True, timeout_s=0.05) is None  # timed out (clock stands still)
    got: list[int | None] = []
    thread = threading.Thread(target=lambda: got.append(waiter.acquire(blocking=True, timeout_s=10.0)))
    thread.start()
    holder.release()
    thread.join(15.0)
    assert not thread.is_alive()
    assert got[0] is not None
    assert got[0] > first


def test_exactly_one_of_many_racing_threads_wins(queue: Queue, switch_threads_often: None) -> None:
    threads_n = 8
    start = threading.Barrier(threads_n)
    tokens: list[int | None] = [None] * threads_n

    def race(index: int) -> None:
        lock = queue.lock("race", 30.0)
        start.wait()
        tokens[index] = lock.acquire(f"racer-{index}")

    threads = [threading.Thread(target=race, args=(i,)) for i in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30.0)
    winners = [(i, t) for i, t in enumerate(tokens) if t is not None]
    assert len(winners) == 1
    index, token = winners[0]
    held = queue.lock("race", 30.0).holder()
    assert held is not None
    assert (held.owner, held.token) == (f"racer-{index}", token)


@pytest.mark.parametrize(
    ("name", "ttl_s", "field"),
    [
        pytest.param("", 5.0, "name", id="empty-name"),
        pytest.param("x" * 201, 5.0, "name", id="long-name"),
        pytest.param(7, 5.0, "name", id="int-name"),
        pytest.param("ok", 0, "ttl_s", id="zero-ttl"),
        pytest.param("ok", -1.0, "ttl_s", id="negative-ttl"),
        pytest.param("ok", math.nan, "ttl_s", id="nan-ttl"),
        pytest.param("ok", math.inf, "ttl_s", id="inf-ttl"),
        pytest.param("ok", "5", "ttl_s", id="text-ttl"),
        pytest.param("ok", True, "ttl_s", id="bool-ttl"),
    ],
)
def test_bad_lock_arguments_are_refused_naming_the_field(
    queue: Queue, name: object, ttl_s: object, field: str
) -> None:
    with pytest.raises(ConfigError, match=rf"^{field}=") as caught:
        queue.lock(name, ttl_s)  # type: ignore[arg-type]  # bad on purpose
    assert caught.value.field == field
    with pytest.raises(ConfigError) as direct:
        queue.acquire_lock(name, owner="me", ttl_s=ttl_s)  # type: ignore[arg-type]  # bad on purpose
    assert direct.value.field == field
    assert queue.lock_state("ok") is None  # nothing written


def test_a_bad_owner_or_timeout_is_refused(queue: Queue) -> None:
    lock = queue.lock("leader", 5.0)
    with pytest.raises(ConfigError, match=r"^owner="):
        lock.acquire("")
    with pytest.raises(ConfigError, match=r"^owner="):
        lock.acquire("o" * 201)
    with pytest.raises(ConfigError, match=r"^timeout_s="):
        lock.acquire(blocking=True, timeout_s=-1.0)
    assert lock.holder() is None
    name = "n" * 200  # the longest name and owner are fine
    assert queue.lock(name, 5.0).acquire("o" * 200) == 1
