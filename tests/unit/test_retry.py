"""RetryPolicy: the specification's exponential backoff with jitter, the cap, bad config."""

from __future__ import annotations

import dataclasses
import math
from collections import Counter

import pytest

from typedq.errors import ConfigError
from typedq.retry import RetryPolicy


def test_defaults_are_the_specification_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.base_delay, policy.factor, policy.jitter, policy.max_delay) == (1.0, 2.0, 0.5, None)


@pytest.mark.parametrize(("retry", "expected"), [(0, 1.5), (1, 3.0), (2, 6.0), (3, 12.0), (10, 1536.0)])
def test_without_jitter_the_delay_is_base_times_two_to_the_n(retry: int, expected: float) -> None:
    assert RetryPolicy(base_delay=1.5, jitter=0).delay(retry) == expected


@pytest.mark.parametrize("retry", [1, 2, 3, 6])
def test_jitter_adds_up_to_half_the_delay(retry: int) -> None:
    policy = RetryPolicy(base_delay=0.5)  # jitter 0.5 by default
    base = 0.5 * 2**retry
    delays = [policy.delay(retry) for _ in range(500)]
    assert all(base <= d <= base * 1.5 for d in delays)
    # the whole range is used, not one point of it
    assert min(delays) < base * 1.1
    assert max(delays) > base * 1.4


def test_the_specification_example_waits() -> None:
    policy = RetryPolicy()
    for retry, (low, high) in {1: (2, 3), 2: (4, 6), 3: (8, 12)}.items():
        for _ in range(100):
            assert low <= policy.delay(retry) <= high


def test_max_delay_caps_the_delay_jitter_included() -> None:
    policy = RetryPolicy(base_delay=1, max_delay=10)
    assert policy.delay(2) <= 6  # under the cap: untouched
    for retry in (4, 5, 20, 2000):
        assert policy.delay(retry) == 10
    assert RetryPolicy(base_delay=1, max_delay=0).delay(3) == 0


def test_a_huge_retry_number_still_gives_a_finite_delay() -> None:
    delay = RetryPolicy().delay(100_000)
    assert math.isfinite(delay)
    assert delay > 0


def test_k7_jitter_spreads_simultaneous_retries() -> None:
    """RELIABILITY K7: 1000 jobs fail at once; no 50 ms bin holds more than 10% of them."""
    cap = 60.0
    policy = RetryPolicy(base_delay=1, factor=2, max_delay=cap)
    delays = [policy.delay(1) for _ in range(1000)]
    assert all(0 <= d <= cap for d in delays)
    bins = Counter(int(d // 0.05) for d in delays)
    fullest, count = bins.most_common(1)[0]
    assert count <= 100, f"bin {fullest * 0.05:.2f}s holds {count} of 1000 retries"


def test_should_retry_while_retries_remain() -> None:
    policy = RetryPolicy()
    assert [policy.should_retry(n, 3) for n in range(5)] == [True, True, True, False, False]
    assert policy.should_retry(0, 0) is False


def test_a_policy_is_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RetryPolicy().base_delay = 2  # type: ignore[misc]  # on purpose


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("base_delay", -1),
        ("base_delay", "1"),
        ("base_delay", True),
        ("base_delay", math.nan),
        ("base_delay", math.inf),
        ("factor", 0.5),
        ("factor", None),
        ("jitter", -0.1),
        ("jitter", 1.5),
        ("max_delay", -1),
        ("max_delay", "60"),
    ],
)
def test_bad_config_is_a_config_error_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**{field: value})  # type: ignore[arg-type]  # bad values on purpose
    assert isinstance(info.value, ValueError)
    assert info.value.field == field
    assert field in str(info.value)
    assert repr(value) in str(info.value)
