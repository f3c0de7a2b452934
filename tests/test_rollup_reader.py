"""The rollup reader and the hourly compactor against the real local stack.

One synthetic world: SERVER spans of a few services over four hours across midnight (two daily indices)
plus half an hour ten days earlier, stored as 1-minute rollup documents split over three source partitions
and delta segments, and (for a quarter of an hour) as raw spans. Every expectation is computed in the test
from the spans themselves.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import pytest
from opensearchpy import helpers

from panopticon.common.clients import opensearch_client
from panopticon.common.clock import format_timestamp, parse_timestamp
from panopticon.common.histogram import HIGH_MS, LOW_MS, exact_percentile
from panopticon.common.indices import METRICS_1H, METRICS_1M, TRACES, IndexCreator, IndexNames
from panopticon.common.rollup import (
    SCOPE_ENDPOINT,
    SCOPE_SERVICE,
    TIER_1H,
    TIER_1M,
    RollupCell,
    RollupKey,
    window_start,
)
from panopticon.common.rollup_reader import (
    HOUR_MS,
    MINUTE_MS,
    RedTotals,
    RollupQuery,
    RollupReader,
    complement,
    plan_read,
)
from panopticon.common.schema import RollupDoc
from panopticon.common.settings import load_settings
from panopticon.devtools.stack import LocalStack
from panopticon.engine.compactor import compact_hours

pytestmark = pytest.mark.integration

T0 = parse_timestamp("2026-03-09T22:00:00Z") or 0
EARLY = T0 - 10 * 86_400_000 + 12 * HOUR_MS  # 2026-02-27T10:00Z
RAW_FROM, RAW_TO = T0 + 3 * HOUR_MS, T0 + 3 * HOUR_MS + 15 * MINUTE_MS
KEYS = [("checkout", "production", ["GET /api/orders/{id}", "POST /api/orders", "GET /health"]),
        ("checkout", "staging", ["GET /api/orders/{id}", "POST /api/orders"]),
        ("search", "production", ["GET /search", "GET /suggest"])]
PARTITIONS = ["apm.spans:0", "apm.spans:1", "apm.spans:2"]
GRACE_MS = 5 * MINUTE_MS


@dataclass(frozen=True)
class Span:
    ts: int
    service: str
    environment: str
    endpoint: str
    duration_ms: float
    error: bool
    partition: str
    segment: str


def _duration(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.01:
        return rng.choice([0.004, LOW_MS, 2.0, HIGH_MS, 5_000_000.0])
    if roll < 0.5:
        return rng.lognormvariate(3, 1.2)
    return 5 * rng.paretovariate(1.5)


def _spans(rng: random.Random, start: int, minutes: int) -> list[Span]:
    spans = []
    for minute in range(minutes):
        for service, environment, endpoints in KEYS:
            for endpoint in endpoints:
                for _ in range(rng.randrange(4)):
                    spans.append(Span(start + minute * MINUTE_MS + rng.randrange(MINUTE_MS), service, environment,
                                      endpoint, _duration(rng), rng.random() < 0.08, rng.choice(PARTITIONS),
                                      "d1" if rng.random() < 0.2 else ""))
    return spans


def _cells(spans: list[Span], tier: str = TIER_1M) -> dict[RollupKey, RollupCell]:
    cells: dict[RollupKey, RollupCell] = {}
    for span in spans:
        start = window_start(span.ts, tier)
        for scope, endpoint in ((SCOPE_ENDPOINT, span.endpoint), (SCOPE_SERVICE, "")):
            key = RollupKey(tier, start, span.service, span.environment, scope, endpoint, span.partition,
                            span.segment)
            cells.setdefault(key, RollupCell()).add(span.duration_ms, span.error)
    return cells


def _write_rollups(client: Any, names: IndexNames, cells: dict[RollupKey, RollupCell],
                   written_after_ms: int = 5_000) -> None:
    creator = IndexCreator(client, names)
    actions = []
    for key, cell in cells.items():
        index = key.index_name(names)
        creator.ensure(METRICS_1M, index)
        written = key.window_start_ms + MINUTE_MS + written_after_ms + (60_000 if key.segment else 0)
        source = msgspec.to_builtins(cell.to_doc(key, written))
        actions.append({"_index": index, "_id": key.doc_id(), "_source": source})
    helpers.bulk(client, actions, refresh=True, chunk_size=2000)


def _write_raw(client: Any, names: IndexNames, spans: list[Span], rng: random.Random) -> None:
    creator = IndexCreator(client, names)
    actions = []
    for n, span in enumerate(spans):
        index = names.daily(TRACES, span.ts)
        creator.ensure(TRACES, index)
        for kind in ["SERVER"] + (["CLIENT"] if rng.random() < 0.3 else []):
            actions.append({"_index": index, "_id": f"{n}-{kind}", "_source": {
                "@timestamp": format_timestamp(span.ts), "service_name": span.service,
                "environment": span.environment, "name": span.endpoint, "kind": kind,
                "status": "ERROR" if span.error else "OK", "duration_ms": span.duration_ms}})
    helpers.bulk(client, actions, refresh=True, chunk_size=2000)


@dataclass
class World:
    client: Any
    names: IndexNames
    spans: list[Span]

    def reader(self) -> RollupReader:
        return RollupReader(self.client, self.names)

    def expected(self, query: RollupQuery, from_ms: int, to_ms: int, place: Callable[[Span], Any],
                 minute_windows: bool = True) -> dict[Any, RollupCell]:
        cells: dict[Any, RollupCell] = {}
        for span in self.spans:
            at = window_start(span.ts, TIER_1M) if minute_windows else span.ts
            if from_ms <= at < to_ms and _matches(query, span):
                cells.setdefault(place(span), RollupCell()).add(span.duration_ms, span.error)
        return cells


def _matches(query: RollupQuery, span: Span) -> bool:
    return ((query.service is None or span.service == query.service)
            and (query.environment is None or span.environment == query.environment)
            and (query.endpoint is None or span.endpoint == query.endpoint))


@pytest.fixture(scope="module")
def world(stack: LocalStack) -> Iterator[World]:
    rng = random.Random(20260309)
    client = opensearch_client(load_settings(stack.env()), timeout_s=60)
    names = IndexNames(prefix=f"rr{rng.randrange(10**6)}-")
    spans = _spans(rng, T0, 4 * 60) + _spans(rng, EARLY, 30)
    _write_rollups(client, names, _cells(spans))
    _write_raw(client, names, [s for s in spans if RAW_FROM - MINUTE_MS <= s.ts < RAW_TO + MINUTE_MS], rng)
    yield World(client, names, spans)


def assert_same(actual: RedTotals, cell: RollupCell | None) -> None:
    expected = RedTotals.of(cell) if cell is not None else RedTotals()
    assert actual.request_count == expected.request_count
    assert actual.error_count == expected.error_count
    assert actual.error_rate == expected.error_rate
    # the same buckets; min/max clamping may differ in the last digit (the server re-prints stored doubles)
    assert (actual.p50_ms, actual.p90_ms, actual.p95_ms, actual.p99_ms) == pytest.approx(
        (expected.p50_ms, expected.p90_ms, expected.p95_ms, expected.p99_ms), rel=1e-12)
    assert actual.avg_ms == pytest.approx(expected.avg_ms, rel=1e-9)


def assert_near_exact(actual: RedTotals, durations: list[float]) -> None:
    for p, value in ((50, actual.p50_ms), (95, actual.p95_ms), (99, actual.p99_ms)):
        exact = exact_percentile(durations, p)
        if LOW_MS <= exact <= HIGH_MS:
            assert abs(value - exact) <= 0.01 * exact


# ---------------------------------------------------------------- planning (no I/O)


@pytest.mark.parametrize(("span", "interval", "source", "used", "hourly"), [
    (15 * MINUTE_MS, 10_000, "raw", 10_000, False),
    (30 * MINUTE_MS, 30_000, "raw", 30_000, False),
    (6 * HOUR_MS, 10_000, "rollup", MINUTE_MS, False),
    (24 * HOUR_MS, 10 * MINUTE_MS, "rollup", 10 * MINUTE_MS, False),
    (24 * HOUR_MS, HOUR_MS, "rollup", HOUR_MS, True),
    (14 * 24 * HOUR_MS, 30 * MINUTE_MS, "rollup", HOUR_MS, True),
], ids=["15m", "30m", "6h-10s", "24h", "24h-1h", "14d"])
def test_plan(span: int, interval: int, source: str, used: int, hourly: bool) -> None:
    plan = plan_read(T0, T0 + span, interval)
    assert (plan.source, plan.interval_ms, plan.hourly) == (source, used, hourly)


def test_complement() -> None:
    assert complement(10, 4 * HOUR_MS + 5, [HOUR_MS, 2 * HOUR_MS]) == [(10, HOUR_MS), (3 * HOUR_MS, 4 * HOUR_MS + 5)]
    assert complement(0, HOUR_MS, [0]) == []


# ---------------------------------------------------------------- 1-minute tier


@pytest.mark.parametrize("query", [
    RollupQuery(service="checkout", environment="production"),
    RollupQuery(service="checkout"),
    RollupQuery(scope="endpoint", service="checkout", endpoint="GET /api/orders/{id}"),
], ids=["service-env", "service-all-envs", "endpoint"])
def test_series_from_minute_documents(world: World, query: RollupQuery) -> None:
    from_ms, to_ms, interval = T0 + 7 * MINUTE_MS, T0 + 3 * HOUR_MS + 23 * MINUTE_MS, 10 * MINUTE_MS
    series = world.reader().series(query, from_ms, to_ms, interval)
    expected = world.expected(query, from_ms, to_ms, lambda s: window_start(s.ts, TIER_1M) // interval * interval)
    assert series.interval_ms == interval and series.stats.tiers == [TIER_1M]
    assert [p.start_ms for p in series.points] == list(range(T0, to_ms, interval))
    for point in series.points:
        assert_same(point.totals, expected.get(point.start_ms))
    durations = [s.duration_ms for s in world.spans if _matches(query, s)
                 and from_ms <= window_start(s.ts, TIER_1M) < to_ms]
    assert series.totals.request_count == len(durations)
    assert_near_exact(series.totals, durations)
    assert series.stats.requests >= 1 and series.stats.documents > series.totals.request_count / 10


def test_paging_reads_every_document(world: World) -> None:
    query = RollupQuery(service="checkout", environment="production")
    small = RollupReader(world.client, world.names, page_size=37)
    series = small.series(query, T0, T0 + 2 * HOUR_MS, 5 * MINUTE_MS)
    reference = world.reader().series(query, T0, T0 + 2 * HOUR_MS, 5 * MINUTE_MS)
    assert series.points == reference.points
    assert series.stats.requests == series.stats.documents // 37 + 1


def test_empty_range_gives_zero_points(world: World) -> None:
    series = world.reader().series(RollupQuery(service="nobody"), T0, T0 + HOUR_MS, 10 * MINUTE_MS)
    assert len(series.points) == 6 and all(p.totals == RedTotals() for p in series.points)
    assert series.totals == RedTotals()


def test_grouped_by_service_and_environment(world: World) -> None:
    from_ms, to_ms = T0 + 30 * MINUTE_MS, T0 + 4 * HOUR_MS
    grouped = world.reader().grouped(RollupQuery(), from_ms, to_ms)
    expected = world.expected(RollupQuery(), from_ms, to_ms, lambda s: (s.service, s.environment))
    assert {(g.service_name, g.environment) for g in grouped.groups} == set(expected)
    for group in grouped.groups:
        assert group.endpoint is None
        assert_same(group.totals, expected[(group.service_name, group.environment)])
    counts = [g.totals.request_count for g in grouped.groups]
    assert counts == sorted(counts, reverse=True)


def test_grouped_by_endpoint_across_environments(world: World) -> None:
    query = RollupQuery(scope="endpoint", service="checkout")
    from_ms, to_ms = T0 + 5 * MINUTE_MS, T0 + 65 * MINUTE_MS
    grouped = world.reader().grouped(query, from_ms, to_ms)
    expected = world.expected(query, from_ms, to_ms, lambda s: s.endpoint)
    assert {g.endpoint for g in grouped.groups} == set(expected)
    for group in grouped.groups:
        assert group.environment is None and group.service_name == "checkout"
        assert_same(group.totals, expected[group.endpoint])


# ---------------------------------------------------------------- raw spans


@pytest.mark.parametrize("query", [
    RollupQuery(service="checkout", environment="production"),
    RollupQuery(scope="endpoint", service="search", endpoint="GET /search"),
], ids=["service", "endpoint"])
def test_sub_minute_series_from_raw_spans(world: World, query: RollupQuery) -> None:
    series = world.reader().series(query, RAW_FROM, RAW_TO, 10_000)
    expected = world.expected(query, RAW_FROM, RAW_TO, lambda s: s.ts // 10_000 * 10_000, minute_windows=False)
    assert series.stats.tiers == ["raw"] and series.stats.requests == 2
    assert len(series.points) == 90
    for point in series.points:
        assert_same(point.totals, expected.get(point.start_ms))


# ---------------------------------------------------------------- 1-hour tier and compaction


def _hourly_docs(world: World) -> dict[str, RollupDoc]:
    answer = world.client.search(index=world.names.pattern(METRICS_1H), body={"size": 1000},
                                 params={"ignore_unavailable": "true", "allow_no_indices": "true"})
    return {hit["_id"]: msgspec.convert(hit["_source"], RollupDoc) for hit in answer["hits"]["hits"]}


def test_compaction_builds_the_hourly_tier_from_minute_documents(world: World) -> None:
    query = RollupQuery(service="checkout")
    from_ms, to_ms = T0 - 20 * MINUTE_MS, T0 + 4 * HOUR_MS
    before = world.reader().series(query, from_ms, to_ms, HOUR_MS)
    assert before.stats.tiers == [TIER_1H, TIER_1M]

    now = T0 + 4 * HOUR_MS + GRACE_MS
    report = compact_hours(world.client, world.names, now, GRACE_MS, lookback_hours=24 * 12)
    assert report.hours_compacted == [EARLY, T0, T0 + HOUR_MS, T0 + 2 * HOUR_MS, T0 + 3 * HOUR_MS]
    world.client.indices.refresh(index=world.names.pattern(METRICS_1H))

    hourly = _hourly_docs(world)
    expected = {}
    for key, cell in _cells(world.spans, TIER_1H).items():
        merged = expected.setdefault(key._replace(partition="", segment=""), RollupCell())
        merged.merge(cell)
    data = {doc_id: doc for doc_id, doc in hourly.items() if doc.scope in (SCOPE_SERVICE, SCOPE_ENDPOINT)}
    assert set(data) == {key.doc_id() for key in expected}
    for key, cell in expected.items():
        stored = RollupCell.from_doc(data[key.doc_id()])
        assert (stored.request_count, stored.error_count, stored.histogram) == (
            cell.request_count, cell.error_count, cell.histogram)
        assert (stored.duration_min, stored.duration_max) == pytest.approx((cell.duration_min, cell.duration_max),
                                                                           rel=1e-12)
        assert stored.duration_sum == pytest.approx(cell.duration_sum, rel=1e-9)

    after = world.reader().series(query, from_ms, to_ms, HOUR_MS)
    assert after.stats.tiers == [TIER_1H, TIER_1M]
    assert after.stats.documents < before.stats.documents / 5
    for old, new in zip(before.points, after.points, strict=True):
        assert new.start_ms == old.start_ms
        assert msgspec.structs.replace(new.totals, avg_ms=0.0) == msgspec.structs.replace(old.totals, avg_ms=0.0)
        assert new.totals.avg_ms == pytest.approx(old.totals.avg_ms, rel=1e-9)
    expected_series = world.expected(query, from_ms, to_ms, lambda s: s.ts // HOUR_MS * HOUR_MS)
    for point in after.points:
        assert_same(point.totals, expected_series.get(point.start_ms))

    again = compact_hours(world.client, world.names, now, GRACE_MS, lookback_hours=24 * 12)
    assert again.hours_compacted == [] and again.hours_checked == 5
    assert _hourly_docs(world) == hourly


def test_fourteen_days_read_the_hourly_tier(world: World) -> None:
    compact_hours(world.client, world.names, T0 + 4 * HOUR_MS + GRACE_MS, GRACE_MS, lookback_hours=24 * 12)
    world.client.indices.refresh(index=world.names.pattern(METRICS_1H))
    query = RollupQuery(service="checkout", environment="production")
    from_ms, to_ms = T0 + 4 * HOUR_MS - 14 * 86_400_000 + 7 * MINUTE_MS, T0 + 4 * HOUR_MS
    series = world.reader().series(query, from_ms, to_ms, 30 * MINUTE_MS)
    assert series.interval_ms == HOUR_MS and series.stats.tiers == [TIER_1H, TIER_1M]
    expected = world.expected(query, from_ms, to_ms, lambda s: s.ts // HOUR_MS * HOUR_MS)
    assert len(series.points) == 14 * 24
    for point in series.points:
        assert_same(point.totals, expected.get(point.start_ms))
    totals = world.reader().totals(query, from_ms, to_ms)
    assert_same(totals.totals, RollupCell() if not expected else _merge(expected.values()))


def _merge(cells: Any) -> RollupCell:
    total = RollupCell()
    for cell in cells:
        total.merge(cell)
    return total


def test_late_data_is_recompacted(stack: LocalStack) -> None:
    client = opensearch_client(load_settings(stack.env()), timeout_s=60)
    names = IndexNames(prefix=f"late{random.randrange(10**6)}-")
    rng = random.Random(7)
    spans = _spans(rng, T0, 60)
    _write_rollups(client, names, _cells(spans))
    now = T0 + HOUR_MS + GRACE_MS
    assert compact_hours(client, names, now, GRACE_MS).hours_compacted == [T0]
    client.indices.refresh(index=names.pattern(METRICS_1H))
    assert compact_hours(client, names, now, GRACE_MS).hours_compacted == []

    late = [Span(T0 + 10 * MINUTE_MS, "checkout", "production", "GET /health", 1234.5, True, "apm.spans:0", "late1")]
    _write_rollups(client, names, _cells(late), written_after_ms=HOUR_MS)  # written after the hourly docs
    report = compact_hours(client, names, now + HOUR_MS, GRACE_MS)
    assert report.hours_compacted == [T0]
    client.indices.refresh(index=names.pattern(METRICS_1H))

    straggler = [Span(T0 + 20 * MINUTE_MS, "checkout", "production", "GET /health", 7.0, False, "apm.spans:1", "x")]
    _write_rollups(client, names, _cells(straggler), written_after_ms=0)  # an old written_at, stored late
    assert compact_hours(client, names, now + HOUR_MS, GRACE_MS).hours_compacted == [T0]
    client.indices.refresh(index=names.pattern(METRICS_1H))
    assert compact_hours(client, names, now + HOUR_MS, GRACE_MS).hours_compacted == []

    totals = RollupReader(client, names).totals(RollupQuery(scope="endpoint", service="checkout",
                                                            environment="production", endpoint="GET /health"),
                                                T0, T0 + HOUR_MS)
    assert totals.stats.tiers == [TIER_1H]
    every = [s for s in itertools.chain(spans, late, straggler)
             if (s.service, s.environment, s.endpoint) == ("checkout", "production", "GET /health")]
    assert totals.totals.request_count == len(every)
    assert totals.totals.error_count == sum(s.error for s in every)


def test_the_engine_compactor_follows_its_grace_and_interval_settings(stack: LocalStack) -> None:
    """ROLLUP_HOURLY_GRACE_MS = 1 min and ROLLUP_HOURLY_INTERVAL_MS = 2 min, as the engine builds its jobs:
    a run one minute after the hour's end leaves it (not closed yet), the next run comes two minutes later
    and compacts it, which the default grace (5 min) would not yet."""
    from panopticon.engine.compactor import HourlyCompactor
    from panopticon.engine.main import periodic_jobs

    prefix = f"hourly{random.randrange(10**6)}-"
    settings = load_settings({**stack.env(), "OPENSEARCH_INDEX_PREFIX": prefix,
                              "ROLLUP_HOURLY_GRACE_MS": str(MINUTE_MS),
                              "ROLLUP_HOURLY_INTERVAL_MS": str(2 * MINUTE_MS)})
    client = opensearch_client(settings, timeout_s=60)
    _write_rollups(client, IndexNames(prefix), _cells(_spans(random.Random(9), T0, 60)))
    (compactor,) = [job for job in periodic_jobs(settings, client) if isinstance(job, HourlyCompactor)]
    closes = T0 + HOUR_MS + MINUTE_MS
    first = compactor.poll(closes - 1)
    assert first is not None and first.hours_compacted == []
    assert compactor.poll(closes + MINUTE_MS) is None  # not due: the interval is two minutes
    second = compactor.poll(closes - 1 + 2 * MINUTE_MS)
    assert second is not None and second.hours_compacted == [T0]
    assert closes - 1 + 2 * MINUTE_MS < T0 + HOUR_MS + load_settings({}).rollup_hourly_grace_ms
