"""The API's rollup window cache (``api.window_cache``) against the real local stack: the same numbers as the
plain reader, no search requests for a repeated read, and late data (a recompacted hour, a new minute) shown
once the documented time-to-live has passed. A fake clock stands in for time: no sleeps, no timings."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import pytest

from panopticon.api.window_cache import CachedWindows
from panopticon.common.clients import opensearch_client
from panopticon.common.indices import METRICS_1H, IndexNames
from panopticon.common.rollup_reader import DAY_MS, HOUR_MS, MINUTE_MS, RollupQuery, RollupReader
from panopticon.common.settings import load_settings
from panopticon.devtools.stack import LocalStack
from panopticon.engine.compactor import compact_hours
from tests.test_rollup_reader import GRACE_MS, T0, Span, _cells, _spans, _write_rollups

pytestmark = pytest.mark.integration

DAY0 = T0 - T0 % DAY_MS - DAY_MS  # a whole UTC day, then one more hour, then the open one
NOW = DAY0 + 25 * HOUR_MS + 30 * MINUTE_MS
FROM, TO = DAY0 + 7 * MINUTE_MS, DAY0 + 25 * HOUR_MS + 20 * MINUTE_MS


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _questions(reader: RollupReader) -> dict[str, Any]:
    checkout = RollupQuery(scope="service", service="checkout")
    return {
        "services": reader.grouped(RollupQuery(scope="service"), FROM, TO),
        "endpoints": reader.grouped(RollupQuery(scope="endpoint", service="checkout"), FROM, TO),
        "hourly": reader.series(checkout, FROM, TO, HOUR_MS),
        "daily": reader.series(checkout, FROM, TO, DAY_MS),
        "totals": reader.totals(RollupQuery(scope="endpoint", service="checkout", environment="production",
                                            endpoint="GET /health"), FROM, TO),
    }


def _numbers(answer: Any) -> list[tuple[Any, ...]]:
    """Comparable numbers of an answer (floats to 9 digits: summing in another order moves the last ones)."""
    if hasattr(answer, "groups"):
        rows = [((g.service_name, g.environment, g.endpoint), g.totals) for g in answer.groups]
    elif hasattr(answer, "points"):
        rows = [(p.start_ms, p.totals) for p in answer.points]
    else:
        rows = [(None, answer.totals)]
    return [(key, t.request_count, t.error_count, round(t.p50_ms, 9), round(t.p95_ms, 9), round(t.p99_ms, 9),
             round(t.avg_ms, 9)) for key, t in rows]


def _same(cached: dict[str, Any], plain: dict[str, Any]) -> None:
    for name in plain:
        assert _numbers(cached[name]) == _numbers(plain[name]), name


@pytest.fixture()
def world(stack: LocalStack) -> tuple[Any, IndexNames, Callable[[], None]]:
    client = opensearch_client(load_settings(stack.env()), timeout_s=60)
    names = IndexNames(prefix=f"wc{random.randrange(10**6)}-")
    rng = random.Random(20261128)
    spans = [s for hour in range(25) for s in _spans(rng, DAY0 + hour * HOUR_MS + 5 * MINUTE_MS, 2)]
    spans += _spans(rng, DAY0 + 25 * HOUR_MS + 3 * MINUTE_MS, 4)  # the open hour: 1-minute tier only
    _write_rollups(client, names, _cells(spans))

    def compact() -> None:
        compact_hours(client, names, NOW, GRACE_MS, lookback_hours=30)
        client.indices.refresh(index=names.pattern(METRICS_1H))

    compact()
    return client, names, compact


def test_cached_reads_equal_the_reader_and_cost_nothing_when_repeated(world: Any) -> None:
    client, names, _ = world
    clock = FakeClock()
    cached = RollupReader(client, names, clock=clock, windows=CachedWindows(names, clock=clock, now_ms=lambda: NOW))
    plain = _questions(RollupReader(client, names))
    first = _questions(cached)
    _same(first, plain)
    assert first["hourly"].stats.tiers == ["1h", "1m"] and plain["daily"].points[0].totals.request_count
    again = _questions(cached)
    _same(again, plain)
    assert [answer.stats.requests for answer in again.values()] == [0] * len(again)


def test_late_data_shows_once_its_time_to_live_has_passed(world: Any) -> None:
    client, names, compact = world
    clock = FakeClock()
    windows = CachedWindows(names, hour_ttl_s=30.0, minute_ttl_s=5.0, clock=clock, now_ms=lambda: NOW)
    cached = RollupReader(client, names, clock=clock, windows=windows)
    before = _questions(cached)

    late = [Span(DAY0 + 3 * HOUR_MS + 10 * MINUTE_MS, "checkout", "production", "GET /health", 4321.0, True,
                 "apm.spans:0", "late1")]
    _write_rollups(client, names, _cells(late), written_after_ms=2 * HOUR_MS)  # a closed hour: recompacted
    compact()
    fresh = [Span(DAY0 + 25 * HOUR_MS + 15 * MINUTE_MS, "checkout", "production", "GET /health", 9.0, False,
                  "apm.spans:1", "")]
    _write_rollups(client, names, _cells(fresh))  # a new minute of the open hour
    plain = _questions(RollupReader(client, names))
    assert plain["totals"].totals.request_count == before["totals"].totals.request_count + 2

    clock.now += 4.0  # within both time-to-lives: what was kept
    _same(_questions(cached), before)
    clock.now += 2.0  # past the minutes' time-to-live: the new minute shows, the recompacted hour not yet
    assert _questions(cached)["totals"].totals.request_count == before["totals"].totals.request_count + 1
    clock.now += 30.0  # past the hours' too: everything the reader sees
    _same(_questions(cached), plain)


def test_a_range_older_than_the_cache_keeps_is_still_answered(world: Any) -> None:
    """Ranges may lie anywhere within retention; the cache only forgets old windows for later reads."""
    client, names, _ = world
    clock = FakeClock()
    long_after = NOW + 60 * DAY_MS  # the same data, read two months later
    cached = RollupReader(client, names, clock=clock,
                          windows=CachedWindows(names, clock=clock, now_ms=lambda: long_after))
    _same(_questions(cached), _questions(RollupReader(client, names)))
