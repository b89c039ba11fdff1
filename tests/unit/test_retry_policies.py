"""RetryPolicy kinds (fixed, schedule, callable), error filters, storage with a job, and
the typed errors of bad settings; Retry(in_s)."""

from __future__ import annotations

import pytest

from typedq.errors import ConfigError, PermanentError
from typedq.retry import Retry, RetryPolicy


def test_each_kind_gives_its_delays() -> None:
    assert [RetryPolicy.fixed(5).delay(n) for n in (1, 2, 9)] == [5, 5, 5]
    schedule = RetryPolicy(delays=[1, 5, 30, 300])
    assert [schedule.delay(n) for n in (1, 2, 3, 4, 5, 9)] == [1, 5, 30, 300, 300, 300]
    seen: list[tuple[int, object]] = []

    def fn(retry: int, error: BaseException | None) -> float:
        seen.append((retry, error))
        return retry * 1.5

    error = ValueError("x")
    assert RetryPolicy.custom(fn).delay(3, error) == 4.5
    assert seen == [(3, error)]
    assert RetryPolicy.exponential(2, jitter=0).delay(3) == 16
    kinds = [RetryPolicy().kind, RetryPolicy.fixed(1).kind, RetryPolicy.schedule([1]).kind,
             RetryPolicy.custom(fn).kind]
    assert kinds == ["exponential", "fixed", "schedule", "callable"]


def test_jitter_defaults_to_half_for_exponential_only_and_max_delay_caps_every_kind() -> None:
    assert RetryPolicy().jitter == 0.5
    assert RetryPolicy(delays=[1]).jitter == 0.0
    assert RetryPolicy.fixed(1).jitter == 0.0
    jittered = RetryPolicy.fixed(10, jitter=0.2)
    assert all(10 <= jittered.delay(1) <= 12 for _ in range(200))
    assert RetryPolicy(delays=[1, 500], max_delay=60).delay(2) == 60
    assert RetryPolicy.custom(lambda n, e: 1e9, max_delay=5).delay(1) == 5


def test_retry_on_and_dont_retry_on_match_classes_and_dotted_names() -> None:
    class AppError(Exception):
        pass

    only_lookup = RetryPolicy(retry_on=[LookupError])
    assert only_lookup.retries(KeyError("k"))
    assert not only_lookup.retries(ValueError("v"))
    by_name = RetryPolicy(retry_on=["LookupError"], dont_retry_on=[f"{__name__}.{AppError.__qualname__}"])
    assert by_name.retries(IndexError("i"))
    assert not by_name.retries(ValueError("v"))
    assert not RetryPolicy(dont_retry_on=[f"{__name__}.{AppError.__qualname__}"]).retries(AppError())
    assert RetryPolicy().retries(AppError())


def test_a_policy_is_stored_with_a_job_as_data_and_read_back() -> None:
    policy = RetryPolicy(
        delays=[1, 5], max_delay=4, retry_on=[KeyError], dont_retry_on=["builtins.IndexError"]
    )
    data = policy.to_data()
    back = RetryPolicy.from_data(data)
    assert back.delays == (1.0, 5.0)
    assert [back.delay(n) for n in (1, 2)] == [1, 4]
    assert back.retries(KeyError("k"))
    assert not back.retries(ValueError("v"))
    assert RetryPolicy.from_data(RetryPolicy.fixed(3).to_data()).delay(7) == 3
    with pytest.raises(ConfigError) as info:
        RetryPolicy.custom(lambda n, e: 1).to_data()
    assert info.value.field == "retry"
    with pytest.raises(ConfigError) as info:
        RetryPolicy.from_data({"base_delay": 1, "code": "x"})
    assert info.value.field == "retry"


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"delays": []}, "delays"),
        ({"delays": [1, -2]}, "delays"),
        ({"delays": "15"}, "delays"),
        ({"delays": [1], "delay_fn": lambda n, e: 1}, "delays"),
        ({"delay_fn": 5}, "delay_fn"),
        ({"max_retries": -1}, "max_retries"),
        ({"retry_on": [3]}, "retry_on"),
        ({"dont_retry_on": [object]}, "dont_retry_on"),
        ({"jitter": 2}, "jitter"),
    ],
)
def test_bad_settings_name_their_field(kwargs: dict[str, object], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy(**kwargs)  # type: ignore[arg-type]  # bad values on purpose
    assert info.value.field == field


def test_a_callable_returning_no_delay_is_a_typed_error() -> None:
    with pytest.raises(ConfigError) as info:
        RetryPolicy.custom(lambda n, e: -1).delay(1)
    assert info.value.field == "delay_fn()"


def test_retry_and_permanent_error() -> None:
    assert Retry(in_s=30).in_s == 30.0
    assert "30" in str(Retry(in_s=30))
    assert str(Retry(1, "rate limited")) == "rate limited"
    with pytest.raises(ConfigError) as info:
        Retry(in_s=-1)
    assert info.value.field == "in_s"
    assert isinstance(PermanentError("x"), RuntimeError)
