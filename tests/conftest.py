"""Fixtures shared by every test folder.

* ``clock``: a fresh :class:`~typedq.clock.FakeClock` per test; tests move time with
  ``clock.advance(s)`` instead of sleeping.
* ``wait_until``: :func:`tests.helpers.wait_until`, as a fixture.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests import helpers
from typedq.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test says so."""
    return FakeClock()


@pytest.fixture(name="wait_until")
def wait_until_fixture() -> Callable[..., None]:
    """The deadline helper: ``wait_until(predicate, timeout=5.0, interval=0.005)``."""
    return helpers.wait_until
