"""Mergeable latency histograms: one fixed log-linear bucket grid, shared by the engine, the compactor and
the reader, so histograms from any source add up bucket by bucket.

The grid (defined once, here):

- Octaves ``[2**k, 2**(k+1))`` for ``k`` in ``OCTAVE_MIN..OCTAVE_MAX`` (2**-7 ms .. 2**22 ms), each cut into
  ``SUB_BUCKETS`` = 64 equal sub-buckets of width ``2**k / 64``. Neighbouring bounds grow by a factor of at
  most ``1 + 1/64`` (1.5625 %). All bounds are exact binary floats, so the search server's ``histogram``
  aggregation with ``interval = 2**k / 64`` buckets a value exactly as ``bucket_index`` does.
- Only the sub-buckets that meet ``[LOW_MS, HIGH_MS]`` (0.01 ms .. 1 h) are kept; the first and the last are
  cut at those limits. Bucket 0 (``UNDERFLOW``) counts values below 0.01 ms (and negatives or NaN),
  bucket ``OVERFLOW`` counts values above one hour. ``BUCKET_COUNT`` = 1823 buckets in all.

Percentiles are nearest-rank: the p-th percentile of n samples is the sample of rank ``ceil(p/100 * n)``
(at least 1) in ascending order, i.e. the smallest sample value v such that at least p % of the samples are
<= v. The histogram finds the bucket that holds that sample exactly (counts are exact) and answers the
bucket's harmonic midpoint ``2*lo*hi / (lo + hi)``, whose relative distance to any value in ``[lo, hi]`` is
at most ``(hi - lo) / (hi + lo)`` <= 1/129 (0.78 %) on this grid. When the caller knows the true min and max
of the samples, the estimate is clamped into ``[min, max]``, which can only bring it closer, and ranks 1
and n answer min and max exactly. Under- and overflow answer their limit (0.01 ms, 1 h) before clamping.
The percentile of an empty histogram is 0.0.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from math import frexp

LOW_MS = 0.01
HIGH_MS = 3_600_000.0
SUB_BITS = 6
SUB_BUCKETS = 1 << SUB_BITS
OCTAVE_MIN = math.frexp(LOW_MS)[1] - 1  # 0.01 = 0.64 * 2**-6 lies in octave -7
OCTAVE_MAX = math.frexp(HIGH_MS)[1] - 1  # 3.6e6 lies in octave 21


def _slot(value: float) -> int:
    """Position of ``value`` on the uncut grid: 64 slots per octave from ``2**OCTAVE_MIN``."""
    mantissa, exponent = math.frexp(value)
    return (exponent - 1 - OCTAVE_MIN) * SUB_BUCKETS + int(mantissa * (2 * SUB_BUCKETS)) - SUB_BUCKETS


_FIRST_SLOT = _slot(LOW_MS)
_LAST_SLOT = _slot(HIGH_MS)
UNDERFLOW = 0
OVERFLOW = _LAST_SLOT - _FIRST_SLOT + 2
BUCKET_COUNT = OVERFLOW + 1
# bucket_index(v) = exponent * 64 + int(mantissa * 128) + _SHIFT for v in [LOW_MS, HIGH_MS]
_SHIFT = -(1 + OCTAVE_MIN) * SUB_BUCKETS - SUB_BUCKETS - _FIRST_SLOT + 1
_TWICE_SUB = float(2 * SUB_BUCKETS)


def bucket_index(duration_ms: float) -> int:
    """The bucket of one duration (ms): a few float operations, no search over the bounds."""
    if not duration_ms >= LOW_MS:  # also NaN
        return UNDERFLOW
    if duration_ms > HIGH_MS:
        return OVERFLOW
    mantissa, exponent = frexp(duration_ms)
    return (exponent << SUB_BITS) + int(mantissa * _TWICE_SUB) + _SHIFT


def grid_index(octave: int, lower_bound: float) -> int:
    """The bucket whose uncut lower bound is ``lower_bound`` in ``octave`` (a server ``histogram`` key)."""
    sub = round((lower_bound - 2.0**octave) * SUB_BUCKETS / 2.0**octave)
    return (octave - OCTAVE_MIN) * SUB_BUCKETS + sub - _FIRST_SLOT + 1


def bucket_bounds(index: int) -> tuple[float, float]:
    """``(lo, hi)`` of a bucket: values v with lo <= v < hi (the last regular bucket also holds hi = 1 h)."""
    if index <= UNDERFLOW:
        return 0.0, LOW_MS
    if index >= OVERFLOW:
        return HIGH_MS, math.inf
    octave, sub = divmod(index - 1 + _FIRST_SLOT, SUB_BUCKETS)
    base = 2.0 ** (octave + OCTAVE_MIN)
    lo = base + sub * base / SUB_BUCKETS
    hi = base + (sub + 1) * base / SUB_BUCKETS
    return max(lo, LOW_MS), min(hi, HIGH_MS)


def bucket_estimate(index: int) -> float:
    """The value a percentile falling in this bucket answers (harmonic midpoint; limits for under/overflow)."""
    if index <= UNDERFLOW:
        return LOW_MS
    if index >= OVERFLOW:
        return HIGH_MS
    lo, hi = bucket_bounds(index)
    return 2.0 * lo * hi / (lo + hi)


def octaves_between(min_ms: float, max_ms: float) -> list[int]:
    """The octaves that can hold regular buckets for values in ``[min_ms, max_ms]``."""
    low = math.frexp(max(min_ms, LOW_MS))[1] - 1
    high = math.frexp(min(max(max_ms, LOW_MS), HIGH_MS))[1] - 1
    return list(range(low, high + 1))


def octave_range(octave: int) -> tuple[float, float]:
    """``(gte, lt)`` of one octave, cut at the grid limits (the top octave's ``lt`` is just above 1 h)."""
    lo, hi = 2.0**octave, 2.0 ** (octave + 1)
    return max(lo, LOW_MS), (math.nextafter(HIGH_MS, math.inf) if hi > HIGH_MS else hi)


def nearest_rank(p: float, n: int) -> int:
    """1-based rank of the p-th percentile among n samples: ``ceil(p/100 * n)`` clamped to ``[1, n]``."""
    exact = p * n / 100.0
    return min(n, max(1, math.ceil(exact - 1e-9 * max(1.0, exact))))


def exact_percentile(values: Iterable[float], p: float) -> float:
    """Nearest-rank percentile of raw samples (the reference the histogram is measured against); 0.0 if none."""
    ordered = sorted(values)
    if not ordered:
        return 0.0
    return ordered[nearest_rank(p, len(ordered)) - 1]


class Histogram:
    """Bucket counts (sparse: bucket index -> count). Mutable for cheap adds; ``merge`` adds counts."""

    __slots__ = ("counts",)

    def __init__(self, counts: Mapping[int, int] | None = None) -> None:
        self.counts: dict[int, int] = {i: n for i, n in (counts or {}).items() if n}

    @classmethod
    def of(cls, durations: Iterable[float]) -> Histogram:
        hist = cls()
        for duration in durations:
            hist.add(duration)
        return hist

    @classmethod
    def from_sparse(cls, index: Sequence[int], count: Sequence[int]) -> Histogram:
        """From the stored form: parallel lists of bucket indices and counts (repeated indices add up)."""
        hist = cls()
        counts = hist.counts
        for i, n in zip(index, count, strict=True):
            if n:
                counts[i] = counts.get(i, 0) + n
        return hist

    def to_sparse(self) -> tuple[list[int], list[int]]:
        """The stored form: ascending bucket indices and their (non-zero) counts."""
        index = sorted(self.counts)
        counts = self.counts
        return index, [counts[i] for i in index]

    def add(self, duration_ms: float, n: int = 1) -> None:
        i = bucket_index(duration_ms)
        self.counts[i] = self.counts.get(i, 0) + n

    def add_bucket(self, index: int, n: int) -> None:
        if n:
            self.counts[index] = self.counts.get(index, 0) + n

    def merge(self, other: Histogram) -> None:
        """Add the other histogram's counts into this one."""
        counts = self.counts
        for i, n in other.counts.items():
            counts[i] = counts.get(i, 0) + n

    def copy(self) -> Histogram:
        return Histogram(self.counts)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Histogram) and self.counts == other.counts

    def __repr__(self) -> str:
        return f"Histogram({dict(sorted(self.counts.items()))!r})"


def merge(*hists: Histogram) -> Histogram:
    """A new histogram holding the sum of the given ones (associative and commutative)."""
    out = Histogram()
    for hist in hists:
        out.merge(hist)
    return out


def percentile(hist: Histogram, p: float, min_value: float | None = None,
               max_value: float | None = None) -> float:
    """Nearest-rank percentile estimate (see the module docstring); 0.0 for an empty histogram."""
    return percentiles(hist, (p,), min_value, max_value)[0]


def percentiles(hist: Histogram, ps: Sequence[float], min_value: float | None = None,
                max_value: float | None = None) -> list[float]:
    """Several percentiles in one pass over the sorted buckets (``ps`` in any order)."""
    total = hist.total
    if not total or not ps:
        return [0.0 for _ in ps]
    ranks = sorted((nearest_rank(p, total), k) for k, p in enumerate(ps))
    answers = [0.0] * len(ps)
    counts, wanted = hist.counts, len(ranks)
    seen, pending, next_rank = 0, 0, ranks[0][0]
    for index in sorted(counts):
        seen += counts[index]
        if seen < next_rank:
            continue  # most buckets: no percentile falls in them
        while pending < wanted and ranks[pending][0] <= seen:
            rank, k = ranks[pending]
            answers[k] = _clamp(bucket_estimate(index), min_value, max_value)
            if rank == 1 and min_value is not None:
                answers[k] = min_value  # the smallest sample is known exactly
            elif rank == total and max_value is not None:
                answers[k] = max_value
            pending += 1
        if pending == wanted:
            break
        next_rank = ranks[pending][0]
    return answers


def _clamp(value: float, low: float | None, high: float | None) -> float:
    if high is not None and value > high:
        value = high
    if low is not None and value < low:
        value = low
    return value
