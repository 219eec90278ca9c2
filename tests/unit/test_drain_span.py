"""``drain_span``: ranges halve near the target, so that a backfill's last commits are small,
and the whole target is still covered with no range longer than the span."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from indexer.follower import DRAIN_MIN_FRACTION, drain_span


def test_far_from_the_target_the_span_is_kept() -> None:
    assert drain_span(200, 10_000) == 200
    assert drain_span(200, 401) == 200


def test_near_the_target_ranges_halve_down_to_a_floor() -> None:
    spans, first, end = [], 0, 399
    while first <= end:
        span = drain_span(200, end - first + 1)
        spans.append(min(span, end - first + 1))
        first += span
    assert spans == [200, 100, 50, 25, 25]  # the floor: 200 // 8 = 25


@given(st.integers(1, 5000), st.integers(1, 100_000))
def test_a_range_is_never_empty_nor_longer_than_the_span(span: int, remaining: int) -> None:
    got = drain_span(span, remaining)
    assert 1 <= got <= span
    assert got >= min(remaining, max(span // DRAIN_MIN_FRACTION, 1)) or got * 2 >= remaining
