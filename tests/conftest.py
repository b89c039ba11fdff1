"""Fixtures shared by every test folder.

* ``clock``: a fresh :class:`~typedq.clock.FakeClock` per test; tests move time with
  ``clock.advance(s)`` instead of sleeping.
* ``wait_until``: :func:`tests.helpers.wait_until`, as a fixture.
* ``switch_threads_often``: the interpreter switches threads far more often while a test
  runs, so races get their chance.
* every test gets the garbage collector's settings back afterwards: ``typedq worker``
  run in this process (click's CliRunner) sets it up for serving (``gc.freeze()``, a
  higher threshold), which must not carry over to the tests after it.

The kill -9 tests (marked ``chaos``) run first: each takes seconds, and begun last (their
folders come late in the order) one of them held the end of the run while the other
test process idled.
"""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator

import pytest

from tests import helpers
from typedq.clock import FakeClock


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """``-n auto``: three test processes per two cores. About a quarter of the fast
    suite's time is spent waiting on real time (heartbeats, leases lapsing, cron slots,
    processes starting), with the cores idle; a third process on two cores fills it
    (the suite took 300 s with two, 261 s with three)."""
    return max(1, (3 * (os.cpu_count() or 1) + 1) // 2)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The long tests (``chaos``) first, each folder's order kept otherwise."""
    items.sort(key=lambda item: item.get_closest_marker("chaos") is None)


@pytest.fixture(autouse=True)
def _collector_settings_restored() -> Iterator[None]:
    threshold, enabled = gc.get_threshold(), gc.isenabled()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)
    if enabled:
        gc.enable()
    else:
        gc.disable()


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test says so."""
    return FakeClock()


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    """The deadline helper: ``wait_until(predicate, timeout=5.0, interval=0.005)``."""
    return helpers.wait_until


@pytest.fixture
def switch_threads_often() -> Iterator[None]:
    """Make the interpreter switch threads far more often, so races get their chance."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield
    sys.setswitchinterval(before)
