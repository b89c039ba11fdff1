"""fair_order and serve against pick_level: the SQLite weighted claim takes the first level
of fair_order that has a job and serves it, and must choose exactly as pick_level does."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from typedq.policy import ClaimPolicy, fair_order, pick_level, serve

_TIMES = st.floats(min_value=0.0, max_value=1000.0, allow_nan=False)
_WEIGHTS = st.tuples(*[st.integers(min_value=1, max_value=100)] * 5)


@given(
    weights=_WEIGHTS,
    passes=st.lists(_TIMES, min_size=6, max_size=6),
    present=st.lists(st.booleans(), min_size=5, max_size=5),
)
def test_the_first_level_of_fair_order_with_a_job_is_pick_levels_choice(
    weights: tuple[int, ...], passes: list[float], present: list[bool]
) -> None:
    policy = ClaimPolicy(fairness="weighted", weights=weights)
    heads: list[float | None] = [0.0 if here else None for here in present]
    picked_state = list(passes)
    picked = pick_level(policy, heads, picked_state, now=1.0)
    ordered_state = list(passes)
    order = fair_order(ordered_state)
    assert sorted(order) == [0, 1, 2, 3, 4]
    first = next((level for level in order if present[level]), None)
    assert first == picked
    if first is not None:
        serve(policy, ordered_state, first)
    assert ordered_state == picked_state


def test_fair_order_serves_levels_by_their_weights() -> None:
    """Every level backlogged: 31 claims by fair_order give 16/8/4/2/1."""
    policy = ClaimPolicy(fairness="weighted")
    passes = [0.0] * 6
    served = [0] * 5
    for _ in range(31 * 20):
        level = fair_order(passes)[0]
        serve(policy, passes, level)
        served[level] += 1
    assert served == [16 * 20, 8 * 20, 4 * 20, 2 * 20, 1 * 20]
