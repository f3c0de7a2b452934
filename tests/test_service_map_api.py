"""The service-map routes (``/query/service-map``, ``/query/services/{service}/dependencies``).

Units (no servers): the aggregation of edge and service cells into nodes and edges, the routes over a fake
source (parameters, environment normalization, caching, the OpenAPI entries) and the answer cache of the
rollup-backed source. Integration: edge rollup documents written the way the engine writes them (1-minute
documents per source partition and delta segment, then the real compactor's 1-hour documents), read through
the real reader and window cache; every expectation is computed here from the calls themselves.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import falcon.testing
import pytest

from panopticon.api.app import build_search, create_app
from panopticon.api.cache import ResponseCache
from panopticon.api.params import TimeRange
from panopticon.api.search import Search
from panopticon.api.service_map import MapCells, RollupServiceMap, dependencies, map_cells, service_map
from panopticon.common.clients import opensearch_client
from panopticon.common.clock import format_timestamp
from panopticon.common.histogram import exact_percentile
from panopticon.common.indices import METRICS_1H, IndexNames
from panopticon.common.rollup import SCOPE_EDGE, SCOPE_SERVICE, TIER_1M, CellKey, RollupCell, RollupKey, window_start
from panopticon.common.rollup_reader import DAY_MS, HOUR_MS, MINUTE_MS, RangeCells, ReadStats, RollupQuery
from panopticon.common.settings import Settings, load_settings
from panopticon.devtools.stack import LocalStack
from panopticon.engine.compactor import compact_hours
from tests.test_rollup_reader import GRACE_MS, _write_rollups

NOW_MS = 1_790_000_000_000
PAST = {"from": "2026-01-01T00:00:00Z", "to": "2026-01-01T01:00:00Z"}


def cell(durations: list[float], errors: int = 0) -> RollupCell:
    """A cell of these calls, the first ``errors`` of them failed."""
    out = RollupCell()
    for n, duration in enumerate(durations):
        out.add(duration, n < errors)
    return out


# (scope, service, environment, endpoint) -> cell: what the reader gives for a range
EDGE_CELLS: dict[CellKey, RollupCell] = {
    (SCOPE_EDGE, "user", "production", "frontend"): cell([10, 20, 30], errors=1),
    (SCOPE_EDGE, "user", "staging", "frontend"): cell([40]),
    (SCOPE_EDGE, "frontend", "production", "checkout"): cell([5, 6, 7, 8], errors=1),
    (SCOPE_EDGE, "checkout", "production", "postgresql"): cell([1, 2]),
    (SCOPE_EDGE, "checkout", "staging", "postgresql"): cell([3]),
    (SCOPE_EDGE, "checkout", "production", ""): cell([9, 9, 9], errors=2),
    (SCOPE_EDGE, "cron", "production", "checkout"): cell([50]),
    (SCOPE_EDGE, "cron", "production", ""): cell([60, 70]),
    (SCOPE_EDGE, "batch", "production", ""): cell([15]),
    (SCOPE_EDGE, "checkout", "production", "payment"): cell([20, 30], errors=1),
    (SCOPE_EDGE, "payment", "production", "stripe"): cell([25]),
}
SERVICE_CELLS: dict[CellKey, RollupCell] = {
    (SCOPE_SERVICE, "frontend", "production", ""): cell([9, 19, 29]),
    (SCOPE_SERVICE, "frontend", "staging", ""): cell([39], errors=1),
    (SCOPE_SERVICE, "checkout", "production", ""): cell([4, 5, 6, 7, 100], errors=1),
}


def only(cells: dict[CellKey, RollupCell], environment: str) -> dict[CellKey, RollupCell]:
    return {key: c for key, c in cells.items() if key[2] == environment}


def node(name: str, n: int, error_rate: float, p95: float, virtual: bool, unpaired: int = 0) -> dict[str, Any]:
    return {"service_name": name, "request_count": n, "error_rate": error_rate, "latency_p95_ms": p95,
            "virtual": virtual, "unpaired_count": unpaired}


def edge(source: str, target: str, n: int, error_rate: float, p95: float) -> dict[str, Any]:
    return {"source": source, "target": target, "request_count": n, "error_rate": error_rate, "latency_p95_ms": p95}


def as_json(answer: Any) -> Any:
    import msgspec

    return msgspec.to_builtins(answer)


# ---------------------------------------------------------------- the aggregation (no servers)

# p95 of n <= 20 calls is the largest (rank n), which the histogram answers exactly (clamped to the max)
FULL_NODES = [
    node("batch", 1, 0.0, 15.0, True, unpaired=1),  # only unpaired calls: its outgoing ones
    node("checkout", 5, 0.2, 100.0, False, unpaired=3),  # its RED numbers, not its 5 incoming calls
    node("cron", 3, 0.0, 70.0, True, unpaired=2),  # calls only: outgoing, unpaired included
    node("frontend", 4, 0.25, 39.0, False),  # RED summed over environments
    node("payment", 2, 0.5, 30.0, True),  # incoming calls, not its outgoing ones
    node("postgresql", 3, 0.0, 3.0, True),  # incoming calls
    node("stripe", 1, 0.0, 25.0, True),
    node("user", 4, 0.25, 40.0, True),  # outgoing calls
]
FULL_EDGES = [
    edge("frontend", "checkout", 4, 0.25, 8.0),
    edge("user", "frontend", 4, 0.25, 40.0),
    edge("checkout", "postgresql", 3, 0.0, 3.0),
    edge("checkout", "payment", 2, 0.5, 30.0),
    edge("cron", "checkout", 1, 0.0, 50.0),
    edge("payment", "stripe", 1, 0.0, 25.0),
]


def test_map_sums_environments_and_tells_real_from_virtual_nodes() -> None:
    answer = as_json(service_map(map_cells(EDGE_CELLS, SERVICE_CELLS)))
    assert answer == {"nodes": FULL_NODES, "edges": FULL_EDGES}


def test_map_within_one_environment() -> None:
    cells = map_cells(only(EDGE_CELLS, "staging"), only(SERVICE_CELLS, "staging"))
    assert as_json(service_map(cells)) == {
        "nodes": [node("checkout", 1, 0.0, 3.0, True),  # no RED data in staging: virtual, its outgoing calls
                  node("frontend", 1, 1.0, 39.0, False), node("postgresql", 1, 0.0, 3.0, True),
                  node("user", 1, 0.0, 40.0, True)],
        "edges": [edge("checkout", "postgresql", 1, 0.0, 3.0), edge("user", "frontend", 1, 0.0, 40.0)]}


@pytest.mark.parametrize(("service", "names", "pairs"), [
    ("postgresql", ["checkout", "postgresql"], [("checkout", "postgresql")]),
    ("checkout", ["checkout", "cron", "frontend", "payment", "postgresql"],
     [("frontend", "checkout"), ("checkout", "postgresql"), ("checkout", "payment"), ("cron", "checkout")]),
    ("payment", ["checkout", "payment", "stripe"], [("checkout", "payment"), ("payment", "stripe")]),
    ("batch", ["batch"], []),
    ("nobody", [], []),
], ids=["callee", "both-ends", "virtual-both-ends", "unpaired-only", "unknown"])
def test_neighbourhood_keeps_the_nodes_numbers(service: str, names: list[str], pairs: list[tuple[str, str]]) -> None:
    answer = as_json(service_map(map_cells(EDGE_CELLS, SERVICE_CELLS), service))
    assert answer["nodes"] == [n for n in FULL_NODES if n["service_name"] in names]
    assert answer["edges"] == [e for e in FULL_EDGES if (e["source"], e["target"]) in pairs]
    assert [(e["source"], e["target"]) for e in answer["edges"]] == pairs


def test_dependencies_of_a_service() -> None:
    cells = map_cells(EDGE_CELLS, SERVICE_CELLS)
    assert as_json(dependencies(cells, "checkout")) == {
        "service_name": "checkout",
        "callers": [edge("frontend", "checkout", 4, 0.25, 8.0), edge("cron", "checkout", 1, 0.0, 50.0)],
        "callees": [edge("checkout", "postgresql", 3, 0.0, 3.0),
                    edge("checkout", "payment", 2, 0.5, 30.0)]}  # not its unpaired calls
    assert as_json(dependencies(cells, "nobody")) == {"service_name": "nobody", "callers": [], "callees": []}


def test_p95_comes_from_the_merged_histogram() -> None:
    rng = random.Random(5)
    production = [rng.lognormvariate(3, 1) for _ in range(700)]
    staging = [rng.lognormvariate(4, 0.5) for _ in range(300)]
    cells = {(SCOPE_EDGE, "a", "production", "b"): cell(production, errors=7),
             (SCOPE_EDGE, "a", "staging", "b"): cell(staging, errors=3)}
    before = {key: (c.request_count, dict(c.histogram.counts)) for key, c in cells.items()}
    answer = service_map(map_cells(cells, {}))
    merged = cell(production + staging)
    (row,) = answer.edges
    assert (row.request_count, row.error_rate) == (1000, 0.01)
    assert row.latency_p95_ms == round(merged.percentiles((95,))[0], 3)
    exact = exact_percentile(production + staging, 95)
    assert abs(row.latency_p95_ms - exact) <= 0.01 * exact
    assert row.latency_p95_ms != round(cells[(SCOPE_EDGE, "a", "production", "b")].percentiles((95,))[0], 3)
    assert {key: (c.request_count, dict(c.histogram.counts)) for key, c in cells.items()} == before  # untouched


# ---------------------------------------------------------------- the routes over a fake source (no servers)

class FakeMap:
    def __init__(self) -> None:
        self.asked: list[tuple[TimeRange, str | None]] = []

    def cells(self, window: TimeRange, environment: str | None) -> MapCells:
        self.asked.append((window, environment))
        return map_cells(EDGE_CELLS, SERVICE_CELLS)


class EmptyClient:
    def search(self, **_: Any) -> dict[str, Any]:
        return {"hits": {"total": {"value": 0}, "hits": []}}


@pytest.fixture
def fake() -> FakeMap:
    return FakeMap()


@pytest.fixture
def app(fake: FakeMap) -> falcon.testing.TestClient:
    search = Search(EmptyClient(), IndexNames("unit-"), timeout_s=1.0)
    return falcon.testing.TestClient(create_app(load_settings({}), search, cache=ResponseCache(ttl_s=5.0),
                                                service_map=fake))


def ask(app: falcon.testing.TestClient, path: str, expect: int = 200, **params: Any) -> Any:
    query = urlencode({k: v for k, v in params.items() if v is not None})
    result = app.simulate_get(path, query_string=query, extras={"RAW_URI": f"{path}?{query}"})
    assert result.status_code == expect, result.text[:500]
    return result.json


ROUTES = ["/query/service-map", "/query/services/checkout/dependencies"]
BAD = [
    ({"from": "yesterday"}, "from"),
    ({"to": "2026-13-01T00:00:00Z"}, "to"),
    ({"from": "2026-01-02T00:00:00Z", "to": "2026-01-01T00:00:00Z"}, "from"),
    ({"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:01Z"}, "from"),
    ({"from": "1900-01-01T00:00:00Z", "to": "1900-01-02T00:00:00Z"}, "to"),
    ({"environment": "x" * 257}, "environment"),
]


@pytest.mark.parametrize("path", ROUTES)
@pytest.mark.parametrize(("params", "field"), BAD, ids=["from", "to", "reversed", "over-31-days", "before-1970",
                                                        "environment"])
def test_bad_parameters_are_400_naming_them(app: Any, fake: FakeMap, path: str, params: dict[str, str],
                                            field: str) -> None:
    answer = ask(app, path, expect=400, **params)
    assert answer["error"] == "invalid_parameter" and answer["field"] == field
    assert fake.asked == []


def test_service_filter_too_long_is_400(app: Any) -> None:
    assert ask(app, "/query/service-map", expect=400, service="s" * 1025)["field"] == "service"


def test_routes_answer_what_the_source_holds(app: Any, fake: FakeMap) -> None:
    assert ask(app, "/query/service-map", environment=" PROD ", **PAST) == {"nodes": FULL_NODES, "edges": FULL_EDGES}
    window, environment = fake.asked[-1]
    assert (window.from_iso, window.to_iso, environment) == ("2026-01-01T00:00:00.000Z", "2026-01-01T01:00:00.000Z",
                                                             "production")
    near = ask(app, "/query/service-map", service="postgresql", environment="all", **PAST)
    assert [n["service_name"] for n in near["nodes"]] == ["checkout", "postgresql"] and fake.asked[-1][1] is None
    deps = ask(app, f"/query/services/{quote('checkout')}/dependencies", environment="stage", **PAST)
    assert [e["source"] for e in deps["callers"]] == ["frontend", "cron"] and fake.asked[-1][1] == "staging"


def test_sliding_answers_are_cached_explicit_ones_are_not(app: Any, fake: FakeMap) -> None:
    ask(app, "/query/service-map")
    ask(app, "/query/service-map")
    assert len(fake.asked) == 1 and fake.asked[0][0].sliding and fake.asked[0][0].span_ms == HOUR_MS
    ask(app, "/query/service-map", service="checkout")
    ask(app, "/query/services/checkout/dependencies")
    assert len(fake.asked) == 3
    ask(app, "/query/service-map", **PAST)
    ask(app, "/query/service-map", **PAST)
    assert len(fake.asked) == 5


def test_openapi_documents_both_routes(app: Any) -> None:
    document = ask(app, "/openapi.json")
    service_map_op = document["paths"]["/query/service-map"]["get"]
    assert [p["name"] for p in service_map_op["parameters"]] == ["from", "to", "environment", "service"]
    assert service_map_op["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/ServiceMapAnswer"}
    assert set(service_map_op["responses"]) == {"200", "400", "503"}
    deps_op = document["paths"]["/query/services/{service}/dependencies"]["get"]
    assert [p["name"] for p in deps_op["parameters"]] == ["service", "from", "to", "environment"]
    schemas = document["components"]["schemas"]
    assert set(schemas["MapNode"]["required"]) == {"service_name", "request_count", "error_rate", "latency_p95_ms",
                                                   "virtual", "unpaired_count"}
    assert "unknown" in schemas["MapNode"]["properties"]["unpaired_count"]["description"]
    assert set(schemas["DependenciesAnswer"]["required"]) == {"service_name", "callers", "callees"}
    assert set(schemas["MapEdge"]["required"]) == {"source", "target", "request_count", "error_rate",
                                                   "latency_p95_ms"}


# ---------------------------------------------------------------- the rollup-backed source's answer cache

class CountingReader:
    def __init__(self) -> None:
        self.reads: list[tuple[str, str | None, int, int]] = []

    def cells(self, query: RollupQuery, from_ms: int, to_ms: int) -> RangeCells:
        self.reads.append((query.scope, query.environment, from_ms, to_ms))
        chosen = EDGE_CELLS if query.scope == SCOPE_EDGE else SERVICE_CELLS
        return RangeCells(from_ms=from_ms, to_ms=to_ms, cells=dict(chosen), stats=ReadStats())


class DirectSearch:
    def call(self, fn: Any, *args: Any) -> Any:
        return fn(*args)


def test_rollup_source_reads_edges_and_services_and_keeps_them_per_minute_question() -> None:
    clock = [0.0]
    reader = CountingReader()
    source = RollupServiceMap(reader, DirectSearch(), ResponseCache(ttl_s=2.0, clock=lambda: clock[0]))  # type: ignore[arg-type]
    base = NOW_MS - NOW_MS % MINUTE_MS
    cells = source.cells(TimeRange(base - 14 * DAY_MS - 50_000, base - 50_000, False), "production")
    assert reader.reads == [("edge", "production", base - 14 * DAY_MS - 50_000, base - 50_000),
                            ("service", "production", base - 14 * DAY_MS - 50_000, base - 50_000)]
    assert as_json(service_map(cells)) == {"nodes": FULL_NODES, "edges": FULL_EDGES}
    source.cells(TimeRange(base - 14 * DAY_MS - 20_000, base - 20_000, False), "production")  # the same minutes
    assert len(reader.reads) == 2
    source.cells(TimeRange(base - 14 * DAY_MS - 20_000, base - 20_000, False), None)  # another environment
    source.cells(TimeRange(base - 14 * DAY_MS + 10_000, base + 10_000, False), "production")  # the next minute
    assert len(reader.reads) == 6
    clock[0] = 2.5  # kept a short while only
    source.cells(TimeRange(base - 14 * DAY_MS - 20_000, base - 20_000, False), "production")
    assert len(reader.reads) == 8


# ---------------------------------------------------------------- integration: the real stack

# (environment, caller, callee): (most calls a minute, error probability); "" = callee unknown
TOPOLOGY = {
    ("production", "user", "frontend"): (5, 0.02),
    ("production", "frontend", "checkout"): (4, 0.05),
    ("production", "checkout", "postgresql"): (4, 0.01),
    ("production", "checkout", "payment"): (3, 0.1),
    ("production", "checkout", "inventory"): (3, 0.0),
    ("production", "checkout", ""): (3, 0.3),
    ("production", "payment", "api.stripe.com"): (3, 0.2),
    ("production", "cron-job", "checkout"): (2, 0.0),
    ("production", "cron-job", ""): (2, 0.5),
    ("staging", "user", "frontend"): (3, 0.1),
    ("staging", "frontend", "checkout"): (3, 0.1),
    ("staging", "checkout", "postgresql"): (2, 0.0),
    ("staging", "checkout", "inventory"): (2, 0.05),
}
# services with SERVER spans (service RED data); inventory has none in production
REAL = {("production", "frontend"), ("production", "checkout"), ("production", "payment"),
        ("staging", "frontend"), ("staging", "checkout"), ("staging", "inventory")}
PARTITIONS = ["apm.spans:0", "apm.spans:1", "apm.spans:2"]


@dataclass(frozen=True)
class Call:
    ts: int
    environment: str
    source: str  # the caller; for a SERVER span, its service
    target: str  # the callee ("" unknown); "-" for a SERVER span
    duration_ms: float
    error: bool
    partition: str
    segment: str


def _calls(rng: random.Random, start: int, minutes: int) -> tuple[list[Call], list[Call]]:
    """Edge calls and the SERVER spans of the real services (those answering calls, and some more)."""
    calls, servers = [], []
    for minute in range(minutes):
        for (environment, source, target), (most, error_p) in TOPOLOGY.items():
            for _ in range(rng.randrange(most + 1)):
                ts = start + minute * MINUTE_MS + rng.randrange(MINUTE_MS)
                call = Call(ts, environment, source, target, rng.lognormvariate(3, 1), rng.random() < error_p,
                            rng.choice(PARTITIONS), "d1" if rng.random() < 0.2 else "")
                calls.append(call)
                if (environment, target) in REAL:
                    servers.append(Call(ts, environment, target, "-", call.duration_ms * 0.8, call.error,
                                        call.partition, call.segment))
        for environment, service in sorted(REAL):
            for _ in range(rng.randrange(3)):  # SERVER spans whose caller no edge tells
                servers.append(Call(start + minute * MINUTE_MS + rng.randrange(MINUTE_MS), environment, service, "-",
                                    rng.lognormvariate(2, 1), rng.random() < 0.1, rng.choice(PARTITIONS), ""))
    return calls, servers


def _rollup_cells(calls: list[Call], servers: list[Call]) -> dict[RollupKey, RollupCell]:
    """1-minute cells keyed as the engine keys them (engine/rollups.py): edge scope for calls, service scope
    for SERVER spans, one document per window, key, source partition and delta segment."""
    cells: dict[RollupKey, RollupCell] = {}
    for items, scope in ((calls, SCOPE_EDGE), (servers, SCOPE_SERVICE)):
        for c in items:
            endpoint = c.target if scope == SCOPE_EDGE else ""
            key = RollupKey(TIER_1M, window_start(c.ts, TIER_1M), c.source, c.environment, scope, endpoint,
                            c.partition, c.segment)
            cells.setdefault(key, RollupCell()).add(c.duration_ms, c.error)
    return cells


@dataclass
class World:
    settings: Settings
    t0: int
    calls: list[Call]
    servers: list[Call]
    minute_docs: int

    def app(self) -> falcon.testing.TestClient:
        """A new API (its own window cache): the default sources, i.e. the real rollup reader."""
        return falcon.testing.TestClient(create_app(self.settings, build_search(self.settings),
                                                    cache=ResponseCache(ttl_s=0)))


@pytest.fixture(scope="module")
def world(stack: LocalStack) -> Iterator[World]:
    """Three hours of calls across midnight (two daily indices), ending more than a day ago; the compactor has
    built the 1-hour tier of all three."""
    rng = random.Random(20261207)
    now = int(time.time() * 1000)
    t0 = now - now % DAY_MS - 2 * DAY_MS + 22 * HOUR_MS
    prefix = f"smap{rng.randrange(10**6)}-"
    settings = load_settings({**stack.env(), "OPENSEARCH_INDEX_PREFIX": prefix, "OPENSEARCH_TIMEOUT_S": "10"})
    client, names = opensearch_client(settings, timeout_s=60), IndexNames(prefix)
    calls, servers = _calls(rng, t0, 3 * 60)
    cells = _rollup_cells(calls, servers)
    _write_rollups(client, names, cells)
    report = compact_hours(client, names, t0 + 3 * HOUR_MS + GRACE_MS, GRACE_MS)
    assert report.hours_compacted == [t0, t0 + HOUR_MS, t0 + 2 * HOUR_MS]
    client.indices.refresh(index=names.pattern(METRICS_1H))
    yield World(settings, t0, calls, servers, len(cells))


def _numbers(items: list[Call]) -> tuple[int, float, RollupCell]:
    """Count, error rate and the merged histogram's cell of the calls."""
    merged = RollupCell()
    for c in items:
        merged.add(c.duration_ms, c.error)
    return len(items), round(sum(c.error for c in items) / len(items), 4), merged


def expected_map(world: World, from_ms: int, to_ms: int, environment: str | None) -> dict[str, Any]:
    """The map computed from the calls: a window counts when its start lies in the range (like every rollup)."""

    def chosen(items: list[Call]) -> list[Call]:
        return [c for c in items if from_ms <= window_start(c.ts, TIER_1M) < to_ms
                and environment in (None, c.environment)]

    calls, servers = chosen(world.calls), chosen(world.servers)
    pairs = sorted({(c.source, c.target) for c in calls if c.target})
    names = {name for pair in pairs for name in pair} | {c.source for c in calls}
    nodes = {}
    for name in sorted(names):
        red = [s for s in servers if s.source == name]
        incoming = [c for c in calls if c.target == name]
        mine = red or incoming or [c for c in calls if c.source == name]
        nodes[name] = {"items": mine, "virtual": not red,
                       "unpaired_count": sum(c.source == name and not c.target for c in calls)}
    edges = {pair: [c for c in calls if (c.source, c.target) == pair] for pair in pairs}
    return {"nodes": nodes, "edges": edges}


def check_numbers(row: dict[str, Any], items: list[Call]) -> None:
    n, error_rate, merged = _numbers(items)
    assert (row["request_count"], row["error_rate"]) == (n, error_rate)
    assert row["latency_p95_ms"] == pytest.approx(merged.percentiles((95,))[0], abs=1e-3)
    exact = exact_percentile([c.duration_ms for c in items], 95)
    assert abs(row["latency_p95_ms"] - exact) <= 0.01 * exact


def check_map(answer: dict[str, Any], expected: dict[str, Any]) -> None:
    assert [n["service_name"] for n in answer["nodes"]] == list(expected["nodes"])
    for row in answer["nodes"]:
        wanted = expected["nodes"][row["service_name"]]
        assert (row["virtual"], row["unpaired_count"]) == (wanted["virtual"], wanted["unpaired_count"]), row
        check_numbers(row, wanted["items"])
    assert sorted((e["source"], e["target"]) for e in answer["edges"]) == sorted(expected["edges"])
    for row in answer["edges"]:
        check_numbers(row, expected["edges"][row["source"], row["target"]])
    counts = [e["request_count"] for e in answer["edges"]]
    assert counts == sorted(counts, reverse=True)


def span(from_ms: int, to_ms: int) -> dict[str, str]:
    return {"from": format_timestamp(from_ms), "to": format_timestamp(to_ms)}


@pytest.mark.parametrize(("start", "end"), [(5, 55), (20, 160), (0, 180)],
                         ids=["minutes", "minutes-and-hours", "whole-hours"])
@pytest.mark.parametrize("environment", [None, "production", "staging"])
def test_map_numbers(world: World, start: int, end: int, environment: str | None) -> None:
    from_ms, to_ms = world.t0 + start * MINUTE_MS, world.t0 + end * MINUTE_MS
    asked = {"production": " Prod ", "staging": "stage", None: "all"}[environment]
    answer = ask(world.app(), "/query/service-map", environment=asked, **span(from_ms, to_ms))
    expected = expected_map(world, from_ms, to_ms, environment)
    check_map(answer, expected)
    virtual = {n["service_name"] for n in answer["nodes"] if n["virtual"]}
    if environment == "staging":
        assert virtual == {"user", "postgresql"}
    else:
        assert virtual == {"user", "postgresql", "api.stripe.com", "cron-job"} | (
            {"inventory"} if environment == "production" else set())
        unpaired = {n["service_name"]: n["unpaired_count"] for n in answer["nodes"] if n["unpaired_count"]}
        assert set(unpaired) == {"checkout", "cron-job"}
        assert all(e["target"] for e in answer["edges"])


def test_long_ranges_read_the_hourly_tier(world: World) -> None:
    """Whole compacted hours cost their 1-hour documents, not their 1-minute ones."""
    app = world.app()
    ask(app, "/query/service-map", **span(world.t0, world.t0 + 3 * HOUR_MS))
    ask(app, "/query/services/checkout/dependencies", **span(world.t0, world.t0 + 3 * HOUR_MS))
    metrics = app.simulate_get("/metrics").text
    documents = {route: float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith("panopticon_api_search_documents_total")
                 for route in [line.split('route="')[1].split('"')[0]]}
    assert 0 < documents["/query/service-map"] < world.minute_docs / 5
    assert "/query/services/{service}/dependencies" not in documents  # the worker's kept answer: no new read


@pytest.mark.parametrize("service", ["checkout", "postgresql", "cron-job", "nobody"])
def test_neighbourhood(world: World, service: str) -> None:
    from_ms, to_ms = world.t0 + 20 * MINUTE_MS, world.t0 + 160 * MINUTE_MS
    app = world.app()
    whole = ask(app, "/query/service-map", **span(from_ms, to_ms))
    near = ask(app, "/query/service-map", service=service, **span(from_ms, to_ms))
    pairs = [(e["source"], e["target"]) for e in whole["edges"] if service in (e["source"], e["target"])]
    assert [(e["source"], e["target"]) for e in near["edges"]] == pairs
    names = {name for pair in pairs for name in pair}
    assert near["nodes"] == [n for n in whole["nodes"] if n["service_name"] in names]
    assert bool(pairs) == (service != "nobody")


def test_dependencies(world: World) -> None:
    from_ms, to_ms = world.t0 + 20 * MINUTE_MS, world.t0 + 160 * MINUTE_MS
    app = world.app()
    whole = ask(app, "/query/service-map", environment="prod", **span(from_ms, to_ms))
    answer = ask(app, f"/query/services/{quote('checkout')}/dependencies", environment="production",
                 **span(from_ms, to_ms))
    assert answer["service_name"] == "checkout"
    assert answer["callers"] == [e for e in whole["edges"] if e["target"] == "checkout"]
    assert answer["callees"] == [e for e in whole["edges"] if e["source"] == "checkout"]
    assert {e["source"] for e in answer["callers"]} == {"frontend", "cron-job"}
    assert {e["target"] for e in answer["callees"]} == {"postgresql", "payment", "inventory"}
    expected = expected_map(world, from_ms, to_ms, "production")["edges"]
    for row in answer["callers"] + answer["callees"]:
        check_numbers(row, expected[row["source"], row["target"]])


@pytest.mark.parametrize("path", ROUTES)
def test_bad_parameters_against_the_stack(world: World, path: str) -> None:
    app = world.app()
    for params, field in BAD:
        assert ask(app, path, expect=400, **params)["field"] == field
    document = ask(app, "/openapi.json")
    assert {"/query/service-map", "/query/services/{service}/dependencies"} <= set(document["paths"])
