"""The latency histogram: bucket grid, mergeability, percentile accuracy against nearest-rank."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from panopticon.common.histogram import (
    BUCKET_COUNT,
    HIGH_MS,
    LOW_MS,
    OVERFLOW,
    SUB_BUCKETS,
    UNDERFLOW,
    Histogram,
    bucket_bounds,
    bucket_index,
    exact_percentile,
    merge,
    nearest_rank,
    percentile,
    percentiles,
)

PS = (0.0, 1.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.9, 100.0)
TOLERANCE = 0.01

durations = st.floats(min_value=LOW_MS, max_value=HIGH_MS, allow_nan=False)
any_durations = st.one_of(durations, st.floats(min_value=0.0, max_value=1e9, allow_nan=False))
histograms = st.lists(any_durations, max_size=50).map(Histogram.of)


# ---------------------------------------------------------------- the grid


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (0.0, UNDERFLOW),
        (-1.0, UNDERFLOW),
        (math.nan, UNDERFLOW),
        (-math.inf, UNDERFLOW),
        (math.nextafter(LOW_MS, 0.0), UNDERFLOW),
        (LOW_MS, 1),
        (HIGH_MS, OVERFLOW - 1),
        (math.nextafter(HIGH_MS, math.inf), OVERFLOW),
        (1e12, OVERFLOW),
        (math.inf, OVERFLOW),
    ],
    ids=["zero", "negative", "nan", "-inf", "just-below-0.01", "0.01", "1h", "just-above-1h", "huge", "inf"],
)
def test_bucket_index_edges(value: float, expected: int) -> None:
    assert bucket_index(value) == expected


def test_every_bucket_holds_its_bounds_and_nothing_else() -> None:
    for index in range(1, OVERFLOW):
        lo, hi = bucket_bounds(index)
        assert bucket_index(lo) == index
        assert bucket_index(math.nextafter(hi, 0.0)) == index
        if index < OVERFLOW - 1:
            assert bucket_index(hi) == index + 1
            assert bucket_bounds(index + 1)[0] == hi
        assert hi / lo <= 1 + 1 / SUB_BUCKETS


def test_grid_shape() -> None:
    assert BUCKET_COUNT == OVERFLOW + 1 == 1823
    assert bucket_bounds(1)[0] == LOW_MS
    assert bucket_bounds(OVERFLOW - 1)[1] == HIGH_MS
    assert bucket_bounds(UNDERFLOW) == (0.0, LOW_MS)


@given(st.floats(min_value=-1.0, max_value=1e10, allow_nan=False), st.floats(min_value=-1.0, max_value=1e10))
def test_bucket_index_is_monotonic(a: float, b: float) -> None:
    if a <= b:
        assert bucket_index(a) <= bucket_index(b)


@given(durations)
def test_value_lies_in_its_bucket(value: float) -> None:
    lo, hi = bucket_bounds(bucket_index(value))
    assert lo <= value and (value < hi or value == hi == HIGH_MS)


# ---------------------------------------------------------------- merging


@given(histograms, histograms, histograms)
def test_merge_is_associative(a: Histogram, b: Histogram, c: Histogram) -> None:
    assert merge(a, merge(b, c)) == merge(merge(a, b), c)


@given(histograms, histograms)
def test_merge_is_commutative(a: Histogram, b: Histogram) -> None:
    assert merge(a, b) == merge(b, a)


@given(st.lists(any_durations, max_size=50), st.lists(any_durations, max_size=50))
def test_merge_equals_histogram_of_all(xs: list[float], ys: list[float]) -> None:
    merged = merge(Histogram.of(xs), Histogram.of(ys))
    assert merged == Histogram.of(xs + ys)
    assert merged.total == len(xs) + len(ys)


@given(histograms)
def test_sparse_round_trip(hist: Histogram) -> None:
    index, count = hist.to_sparse()
    assert index == sorted(index) and all(count)
    assert Histogram.from_sparse(index, count) == hist


def test_merge_leaves_its_inputs_alone() -> None:
    a, b = Histogram.of([1.0]), Histogram.of([2.0])
    merge(a, b)
    assert a == Histogram.of([1.0]) and b == Histogram.of([2.0])


# ---------------------------------------------------------------- percentiles


def _relative_errors(values: list[float]) -> list[float]:
    hist = Histogram.of(values)
    lo, hi = min(values), max(values)
    errors = []
    for clamp in ((None, None), (lo, hi)):
        estimates = percentiles(hist, PS, *clamp)
        for p, estimate in zip(PS, estimates, strict=True):
            exact = exact_percentile(values, p)
            errors.append(abs(estimate - exact) / exact)
    return errors


def _heavy_tailed(seed: int, kind: str, n: int) -> list[float]:
    rng = random.Random(seed)
    if kind == "lognormal":
        raw = [rng.lognormvariate(rng.uniform(-3, 8), rng.uniform(0.1, 3)) for _ in range(n)]
    elif kind == "pareto":
        scale = 10 ** rng.uniform(-2, 3)
        raw = [scale * rng.paretovariate(rng.uniform(0.5, 3)) for _ in range(n)]
    else:
        raw = [10 ** rng.uniform(-2, math.log10(HIGH_MS)) for _ in range(n)]
    return [min(max(v, LOW_MS), HIGH_MS) for v in raw]


@settings(max_examples=150, deadline=None)
@given(st.integers(0, 2**32), st.sampled_from(["lognormal", "pareto", "log-uniform"]), st.integers(1, 400))
def test_percentiles_within_one_percent_of_nearest_rank(seed: int, kind: str, n: int) -> None:
    assert max(_relative_errors(_heavy_tailed(seed, kind, n))) <= TOLERANCE


@given(st.lists(durations, min_size=1, max_size=30))
def test_percentiles_within_one_percent_on_arbitrary_values(values: list[float]) -> None:
    assert max(_relative_errors(values)) <= TOLERANCE


@given(durations)
def test_single_value(value: float) -> None:
    hist = Histogram.of([value])
    for p in PS:
        assert abs(percentile(hist, p) - value) <= TOLERANCE * value
        assert percentile(hist, p, value, value) == value


def test_worst_error_over_many_samples_is_below_the_grid_bound() -> None:
    worst = max(max(_relative_errors(_heavy_tailed(seed, kind, 2000)))
                for seed in range(30) for kind in ("lognormal", "pareto", "log-uniform"))
    assert worst <= 1 / (2 * SUB_BUCKETS + 1) + 1e-12


def test_empty_answers_zero() -> None:
    assert percentile(Histogram(), 95) == 0.0
    assert percentiles(Histogram(), (50, 99)) == [0.0, 0.0]
    assert exact_percentile([], 50) == 0.0


def test_under_and_overflow_are_counted_and_answer_their_limits() -> None:
    hist = Histogram.of([0.001, 0.002, 5e6])
    assert hist.total == 3
    assert percentile(hist, 50) == LOW_MS
    assert percentile(hist, 100) == HIGH_MS
    assert percentile(hist, 99, 0.001, 5e6) == 5e6  # rank n: the known max
    assert percentile(hist, 50, 0.001, 0.002) == 0.002


@pytest.mark.parametrize(("p", "n", "rank"), [(0, 10, 1), (10, 10, 1), (11, 10, 2), (50, 1, 1), (95, 100, 95),
                                              (99.9, 1000, 999), (100, 7, 7), (33.3, 3, 1)],
                         ids=lambda v: str(v))
def test_nearest_rank(p: float, n: int, rank: int) -> None:
    assert nearest_rank(p, n) == rank


def test_exact_percentile_is_nearest_rank() -> None:
    values = [5.0, 1.0, 4.0, 2.0, 3.0]
    assert [exact_percentile(values, p) for p in (0, 20, 21, 50, 80, 81, 100)] == [1, 1, 2, 3, 4, 5, 5]
