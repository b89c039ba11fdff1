"""The shared test helpers do what the other folders rely on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from tests import helpers


def test_wait_until_returns_once_the_predicate_holds() -> None:
    calls = []

    def third_time_lucky() -> bool:
        calls.append(1)
        return len(calls) >= 3

    helpers.wait_until(third_time_lucky, timeout=5, interval=0)
    assert len(calls) == 3


def test_wait_until_sees_another_thread(wait_until: Callable[..., None]) -> None:
    done = threading.Event()
    thread = threading.Thread(target=done.set)
    thread.start()
    wait_until(done.is_set, timeout=5)
    thread.join()


def test_wait_until_fails_with_a_message_at_the_deadline() -> None:
    with pytest.raises(AssertionError, match=r"timed out after 0.02s waiting until the sky falls"):
        helpers.wait_until(lambda: False, timeout=0.02, message="the sky falls")


def test_wait_while_progressing_waits_past_the_stall_time_while_the_count_grows() -> None:
    ticks = iter(range(100))
    started = time.monotonic()
    helpers.wait_while_progressing(lambda: next(ticks), 20, stall_s=0.05, interval=0.005, message="twenty")
    assert time.monotonic() - started >= 0.09  # longer than stall_s: growth kept it waiting


def test_wait_while_progressing_fails_on_a_stall_with_the_count() -> None:
    with pytest.raises(AssertionError, match=r"stalled for 0.05s at 3 of 10 waiting until ten jobs"):
        helpers.wait_while_progressing(lambda: 3, 10, stall_s=0.05, interval=0.005, message="ten jobs")


def test_redis_available_is_false_for_a_closed_port() -> None:
    assert helpers.redis_available(port=1, timeout=0.2) is False


def test_skip_or_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(helpers, "REQUIRE_SERVICES", False)
    with pytest.raises(pytest.skip.Exception, match="no server"):
        helpers.skip_or_fail("no server")
    monkeypatch.setattr(helpers, "REQUIRE_SERVICES", True)
    with pytest.raises(pytest.fail.Exception, match="no server"):
        helpers.skip_or_fail("no server")
