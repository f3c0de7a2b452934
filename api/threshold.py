"""The exact percentile of ``duration_ms`` over the spans a query selects, without ``percentiles``.

Nearest rank: with ``n`` spans, the p-th percentile is the ``ceil(p/100 * n)``-th smallest duration.
It is read directly as one sorted hit when its position fits the result window (from + size <= 10,000,
counting from whichever end is nearer); otherwise it is found by bisection on ``_count`` of
``duration_ms <= t`` between the minimum and the maximum (bounded iterations, relative precision 1e-4).
"""

from __future__ import annotations

import math

from panopticon.api.params import TimeRange
from panopticon.api.queries import MAX_WINDOW, Query, hits, min_max
from panopticon.api.search import Search
from panopticon.common.indices import TRACES

MAX_BISECTIONS = 40


def nearest_rank(percentile: float, count: int) -> int:
    return max(1, min(count, math.ceil(percentile / 100.0 * count - 1e-9)))


def _nth(search: Search, window: TimeRange, query: Query, order: str, position: int) -> float:
    body = {"query": query, "sort": [{"duration_ms": {"order": order}}], "from": position, "size": 1,
            "_source": ["duration_ms"]}
    found = hits(search.search(TRACES, window, body))
    return float(found[0]["duration_ms"]) if found else 0.0


def _at_most(search: Search, window: TimeRange, query: Query, limit: float) -> int:
    bounded = {"bool": {"filter": [query, {"range": {"duration_ms": {"lte": limit}}}]}}
    return search.count(TRACES, window, bounded)


def _bisect(search: Search, window: TimeRange, query: Query, rank: int) -> float:
    answer = search.search(TRACES, window, min_max("duration_ms", query))
    aggs = answer.get("aggregations", {})
    lo, hi = float(aggs.get("lo", {}).get("value") or 0.0), float(aggs.get("hi", {}).get("value") or 0.0)
    for _ in range(MAX_BISECTIONS):  # invariant: count(<= hi) >= rank
        if hi - lo <= max(1e-4 * hi, 1e-6):
            break
        middle = (lo + hi) / 2
        if _at_most(search, window, query, middle) >= rank:
            hi = middle
        else:
            lo = middle
    return hi


def duration_percentile(search: Search, window: TimeRange, query: Query, percentile: float) -> float | None:
    """The percentile of the selected spans' durations, or None when the query selects nothing."""
    count = search.count(TRACES, window, query)
    if count == 0:
        return None
    rank = nearest_rank(percentile, count)
    if rank - 1 < MAX_WINDOW:
        return _nth(search, window, query, "asc", rank - 1)
    if count - rank < MAX_WINDOW:
        return _nth(search, window, query, "desc", count - rank)
    return _bisect(search, window, query, rank)
