"""The query API against the real local stack: every route's numbers, filters, sorts and pages, compared with
what the test indexed (loadgen traffic with a fixed seed plus a few targeted records; see ``test_api_data``)."""

from __future__ import annotations

import os
import re
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote, urlencode

import falcon.testing
import pytest
from test_api_data import (
    ENDPOINTS,
    EXTRA_SERVICE,
    ROOT_SERVICE,
    SPAN_SERVICE,
    Dataset,
    ListRed,
    client_for,
    index_dataset,
    index_rollups,
    ms,
    nearest_rank_value,
    roots,
)

from panopticon.api.app import build_search
from panopticon.api.resources.error_groups import fingerprint
from panopticon.common.clients import opensearch_client
from panopticon.common.clock import format_timestamp
from panopticon.common.indices import IndexNames
from panopticon.common.settings import Settings, load_settings
from panopticon.devtools.stack import LocalStack

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def api_settings(stack: LocalStack) -> Settings:
    return load_settings({**stack.env(), "OPENSEARCH_INDEX_PREFIX": f"apiroutes{os.getpid()}-",
                          "OPENSEARCH_TIMEOUT_S": "5"})


@pytest.fixture(scope="module")
def data(api_settings: Settings) -> Dataset:
    client = opensearch_client(api_settings)
    return index_dataset(client, IndexNames(api_settings.opensearch_index_prefix), seed=7,
                         now_ms=int(time.time() * 1000))


@pytest.fixture(scope="module")
def client(api_settings: Settings, data: Dataset) -> Iterator[falcon.testing.TestClient]:
    yield client_for(api_settings, build_search(api_settings), ListRed(data.spans))


def get(client: falcon.testing.TestClient, path: str, expect: int = 200, **params: Any) -> Any:
    """GET like gunicorn delivers it: the raw target in RAW_URI (path segments stay %-encoded)."""
    query = urlencode({k: v for k, v in params.items() if v is not None})
    result = client.simulate_get(path, query_string=query, extras={"RAW_URI": f"{path}?{query}"})
    assert result.status_code == expect, result.text[:500]
    return result.json


def window(data: Dataset) -> dict[str, str]:
    start, end = data.window
    return {"from": start, "to": end}


# ---------------------------------------------------------------- spans

def _span_key(sort: str) -> Any:
    return {
        "start_time_desc": lambda s: (-ms(s), s["span_id"]),
        "start_time_asc": lambda s: (ms(s), s["span_id"]),
        "duration_desc": lambda s: (-s["duration_ms"], -ms(s)),
        "duration_asc": lambda s: (s["duration_ms"], -ms(s)),
    }[sort]


@pytest.mark.parametrize("sort", ["start_time_desc", "start_time_asc", "duration_desc", "duration_asc"])
def test_spans_filter_sort_and_page(client: Any, data: Dataset, sort: str) -> None:
    expected = sorted((s for s in data.spans if s["service_name"] == SPAN_SERVICE and s["kind"] == "CLIENT"
                       and s["environment"] == "production"), key=_span_key(sort))
    first = get(client, "/query/spans", service_name=SPAN_SERVICE, environment="prod", kind="client", sort=sort,
                size=5, **window(data))
    second = get(client, "/query/spans", service_name=SPAN_SERVICE, environment="PRODUCTION", kind="CLIENT",
                 sort=sort, size=5, page=2, **window(data))
    assert first["total"] == second["total"] == len(expected) > 10
    assert [i["span_id"] for i in first["items"] + second["items"]] == [s["span_id"] for s in expected[:10]]
    assert (first["page"], first["size"], second["page"]) == (1, 5, 2)


def test_span_filters(client: Any, data: Dataset) -> None:
    some = data.spans[0]
    answer = get(client, "/query/spans", trace_id=some["trace_id"], size=1000, **window(data))
    assert answer["total"] == sum(s["trace_id"] == some["trace_id"] for s in data.spans)
    children = get(client, "/query/spans", parent_span_id=some["span_id"], **window(data))
    assert children["total"] == sum(s.get("parent_span_id") == some["span_id"] for s in data.spans) > 0
    slow = get(client, "/query/spans", min_duration_ms=50, max_duration_ms=200, status="error", size=1000,
               **window(data))
    assert slow["total"] == sum(50 <= s["duration_ms"] <= 200 and s["status"] == "ERROR" for s in data.spans)
    named = get(client, "/query/spans", name=ENDPOINTS[0][1], size=1000, **window(data))
    assert named["total"] == sum(s["name"] == ENDPOINTS[0][1] for s in data.spans) > 0
    item = named["items"][0]
    assert set(item) >= {"timestamp", "trace_id", "span_id", "parent_span_id", "name", "kind", "duration_ms",
                         "status", "service_name", "environment", "labels"}
    assert item["timestamp"].endswith("Z")


def test_default_windows_cover_recent_data(client: Any, data: Dataset) -> None:
    recent = [s for s in data.spans if ms(s) >= data.now_ms - 14 * 60_000]
    answer = get(client, "/query/spans", size=1)
    assert answer["total"] >= len(recent)


# ---------------------------------------------------------------- logs

def words(message: str) -> set[str]:
    """The message's words as a full-text search sees them (letters, digits, underscores)."""
    return set(re.findall(r"\w+", message.lower()))


@pytest.mark.parametrize("text", ["failed payment", "connection terminated", "payment inventory"])
def test_logs_full_text(client: Any, data: Dataset, text: str) -> None:
    wanted = set(text.split())
    expected = [log for log in data.logs if wanted <= words(log["message"])]
    answer = get(client, "/query/logs", message=text, size=10_000, **window(data))
    assert answer["total"] == len(expected)
    assert sorted(i["message"] for i in answer["items"]) == sorted(g["message"] for g in expected)
    assert len(expected) > 0 or text == "payment inventory"


def test_logs_level_and_order(client: Any, data: Dataset) -> None:
    warn = get(client, "/query/logs", level="warning", sort="asc", size=10_000, **window(data))
    expected_warn = sorted((g for g in data.logs if g["level"] == "WARN"), key=ms)
    assert warn["total"] == len(expected_warn)
    assert [i["timestamp"] for i in warn["items"]] == [g["@timestamp"] for g in expected_warn]


def test_logs_filters_and_aliases(client: Any, data: Dataset) -> None:
    traced = next(g for g in data.logs if g.get("trace_id"))
    by_trace = get(client, "/query/logs", trace_id=traced["trace_id"], span_id=traced["span_id"], **window(data))
    assert by_trace["total"] == sum(g.get("trace_id") == traced["trace_id"] and g.get("span_id") == traced["span_id"]
                                    for g in data.logs) > 0
    whole = get(client, "/query/logs", trace_id=traced["trace_id"], **window(data))
    assert whole["total"] == sum(g.get("trace_id") == traced["trace_id"] for g in data.logs) > by_trace["total"]
    for alias in ("stage", "STAGING", " staging "):
        answer = get(client, "/query/logs", service_name=SPAN_SERVICE, environment=alias, size=1, **window(data))
        assert answer["total"] == sum(g["service_name"] == SPAN_SERVICE and g["environment"] == "staging"
                                      for g in data.logs) > 0
        assert answer["items"][0]["environment"] == "staging"
    paged = get(client, "/query/logs", size=7, page=3, **window(data))
    expected = sorted(data.logs, key=lambda g: -ms(g))[14:21]
    assert paged["total"] == len(data.logs)
    assert [i["timestamp"] for i in paged["items"]] == [g["@timestamp"] for g in expected]


# ---------------------------------------------------------------- root traces of a service

@pytest.mark.parametrize("sort", ["duration_desc", "duration_asc", "start_time_desc", "start_time_asc"])
def test_service_root_traces(client: Any, data: Dataset, sort: str) -> None:
    expected = sorted((r for r in roots(data) if r["service_name"] == ROOT_SERVICE
                       and r["environment"] == "production"), key=_span_key(sort))
    answer = get(client, f"/query/services/{ROOT_SERVICE}/traces", environment="prod", sort=sort, size=200,
                 **window(data))
    assert answer["total"] == len(expected) > 20
    assert [t["trace_id"] for t in answer["traces"]] == [r["trace_id"] for r in expected]
    first = answer["traces"][0]
    assert first["root_span_name"] == expected[0]["name"] and first["environment"] == "production"


def test_service_root_traces_filters(client: Any, data: Dataset) -> None:
    expected = [r for r in roots(data) if r["service_name"] == EXTRA_SERVICE and r["status"] == "ERROR"
                and r["duration_ms"] >= 10 and r["environment"] == "development"]
    answer = get(client, f"/query/services/{quote(EXTRA_SERVICE)}/traces", status="error", min_duration_ms=10,
                 environment="dev", size=3, page=2, **window(data))
    assert answer["total"] == len(expected) > 3
    assert len(answer["traces"]) == max(0, min(3, len(expected) - 3))


# ---------------------------------------------------------------- one trace

def test_trace_detail_with_logs(client: Any, data: Dataset) -> None:
    trace_id = roots(data)[3]["trace_id"]
    answer = get(client, f"/query/traces/{trace_id}")
    spans = sorted((s for s in data.spans if s["trace_id"] == trace_id), key=lambda s: (ms(s), s["span_id"]))
    logs = sorted((g for g in data.logs if g.get("trace_id") == trace_id), key=ms)
    assert [s["span_id"] for s in answer["spans"]] == [s["span_id"] for s in spans]
    # time order; logs of the same millisecond have no further order
    assert [g["timestamp"] for g in answer["logs"]] == [g["@timestamp"] for g in logs]
    assert sorted((g["timestamp"], g["message"]) for g in answer["logs"]) == sorted(
        (g["@timestamp"], g["message"]) for g in logs)
    assert len(spans) > 1 and logs
    assert answer["truncated"] is False and answer["trace_id"] == trace_id
    root = next(s for s in answer["spans"] if s["parent_span_id"] is None)
    assert root["http_status_code"] == roots(data)[3]["http_status_code"]
    assert get(client, f"/query/traces/{trace_id}", environment="nowhere", expect=404)["field"] == "trace_id"
    missing = get(client, "/query/traces/does-not-exist", expect=404)
    assert missing["error"] == "not_found"


# ---------------------------------------------------------------- problem traces of an endpoint

@pytest.mark.parametrize(("service", "endpoint"), ENDPOINTS, ids=[e for _, e in ENDPOINTS])
def test_endpoint_error_traces(client: Any, data: Dataset, service: str, endpoint: str) -> None:
    server = [s for s in data.spans if s["kind"] == "SERVER" and s["service_name"] == service
              and s["name"] == endpoint and s["environment"] == "production"]
    expected = sorted((s for s in server if s["status"] == "ERROR"), key=lambda s: (-ms(s), s["span_id"]))
    path = f"/query/services/{quote(service, safe='')}/endpoints/{quote(endpoint, safe='')}/traces"
    assert "%2F" in path
    answer = get(client, path, status="error", environment="prod", limit=200, **window(data))
    assert [t["spanId"] for t in answer] == [s["span_id"] for s in expected]
    assert answer
    if answer:
        assert set(answer[0]) == {"traceId", "spanId", "timestamp", "durationMs", "status", "serviceName",
                                  "environment"}


@pytest.mark.parametrize("percentile", [50, 90, 95, 99.9])
def test_endpoint_slow_traces(client: Any, data: Dataset, percentile: float) -> None:
    service, endpoint = ENDPOINTS[0]
    server = [s for s in data.spans if s["kind"] == "SERVER" and s["service_name"] == service
              and s["name"] == endpoint]
    threshold = nearest_rank_value([s["duration_ms"] for s in server], percentile)
    expected = sorted((s for s in server if s["duration_ms"] >= threshold), key=lambda s: (-ms(s), s["span_id"]))
    path = f"/query/services/{service}/endpoints/{quote(endpoint, safe='')}/traces"
    answer = get(client, path, status="SLOW", slow_percentile=percentile, limit=200, **window(data))
    assert [t["spanId"] for t in answer] == [s["span_id"] for s in expected]
    assert 0 < len(answer) < len(server) or percentile == 50


def test_endpoint_traces_need_status(client: Any, data: Dataset) -> None:
    path = f"/query/services/{ENDPOINTS[1][0]}/endpoints/{quote(ENDPOINTS[1][1], safe='')}/traces"
    assert get(client, path, expect=400)["field"] == "status"
    assert get(client, path, expect=400, status="slow", slow_percentile=100) == {
        "error": "invalid_parameter", "message": "'slow_percentile' must be between 50 and 99.9.",
        "field": "slow_percentile"}


# ---------------------------------------------------------------- RED routes (numbers from the RED source)

def test_services_overview(client: Any, data: Dataset) -> None:
    counts = Counter((s["service_name"], s["environment"]) for s in data.spans if s["kind"] == "SERVER")
    errors = Counter((s["service_name"], s["environment"]) for s in data.spans
                     if s["kind"] == "SERVER" and s["status"] == "ERROR")
    answer = get(client, "/query/services", **window(data))
    rows = {(r["service_name"], r["environment"]): r for r in answer["services"]}
    assert {k: r["request_count"] for k, r in rows.items()} == dict(counts)
    assert {k: r["error_rate"] for k, r in rows.items()} == {k: round(errors[k] / n, 4) for k, n in counts.items()}
    assert [r["request_count"] for r in answer["services"]] == sorted(counts.values(), reverse=True)
    assert answer["environment"] is None
    prod = get(client, "/query/services", environment="Prod", name_filter="PAYM", **window(data))
    assert [(r["service_name"], r["environment"]) for r in prod["services"]] == [("payment-service", "production")]
    assert prod["environment"] == "production"
    by_rate = get(client, "/query/services", sort_by="ERROR_RATE", limit=2, **window(data))
    assert [r["error_rate"] for r in by_rate["services"]] == sorted(rows[k]["error_rate"] for k in rows)[::-1][:2]


def test_endpoints_ranking(client: Any, data: Dataset) -> None:
    server = [s for s in data.spans if s["kind"] == "SERVER" and s["service_name"] == SPAN_SERVICE]
    counts = Counter(s["name"] for s in server)
    staged = Counter(s["name"] for s in server if s["environment"] == "staging")
    answer = get(client, f"/query/services/{SPAN_SERVICE}/endpoints", environment="stage", metric="request_count",
                 **window(data))
    assert {e["endpoint_name"]: e["request_count"] for e in answer["endpoints"]} == dict(staged)
    assert staged and all(e["environment"] == "staging" for e in answer["endpoints"])
    top = get(client, f"/query/services/{SPAN_SERVICE}/endpoints", sort_by="latency_p95_ms", limit=1,
              **window(data))
    p95 = {name: nearest_rank_value([s["duration_ms"] for s in server if s["name"] == name], 95) for name in counts}
    assert top["endpoints"][0]["endpoint_name"] == max(p95, key=lambda n: p95[n])
    assert top["endpoints"][0]["environment"] == "all" and top["environment"] is None


def test_metrics_series(client: Any, data: Dataset) -> None:
    end = data.now_ms - 20_000  # not sliding: taken as given
    start = end - 30 * 60_000
    params = {"from": start, "to": end}
    answer = get(client, f"/query/services/{SPAN_SERVICE}/metrics", environment="prod", **params)
    assert [s["metric_name"] for s in answer] == ["http_requests_total", "latency_p95_ms", "latency_p90_ms",
                                                  "latency_p50_ms", "error_rate"]
    counts = answer[0]["points"]
    assert len(counts) == len(range(start - start % 30_000, end, 30_000))  # 30 min range -> 30 s buckets
    in_range = [s for s in data.spans if s["kind"] == "SERVER" and s["service_name"] == SPAN_SERVICE
                and s["environment"] == "production" and start <= ms(s) < end]
    assert sum(p["value"] for p in counts) == len(in_range) > 0
    one = get(client, f"/query/services/{SPAN_SERVICE}/metrics", metric="ERROR_RATE", interval="5m", **params)
    assert [s["metric_name"] for s in one] == ["error_rate"] and one[0]["environment"] == "all"
    assert len(one[0]["points"]) in (6, 7)


# ---------------------------------------------------------------- error groups

def test_error_groups(client: Any, data: Dataset) -> None:
    errors = [g for g in data.logs if g["service_name"] == SPAN_SERVICE and g["environment"] == "production"
              and g["level"] in ("ERROR", "FATAL")]
    expected = Counter(fingerprint(g["message"]) for g in errors)
    answer = get(client, f"/query/services/{SPAN_SERVICE}/errors", environment="PROD", **window(data))
    assert {g["fingerprint"]: g["count"] for g in answer["groups"]} == dict(expected)
    assert [g["count"] for g in answer["groups"]] == sorted(expected.values(), reverse=True)
    assert answer["scanned"] == len(errors) > 0 and answer["truncated"] is False
    for group in answer["groups"]:
        members = sorted((g for g in errors if fingerprint(g["message"]) == group["fingerprint"]), key=ms)
        assert (group["first_seen"], group["last_seen"]) == (members[0]["@timestamp"], members[-1]["@timestamp"])
        # the newest member's message (members of the same millisecond have no further order)
        assert group["sample_message"] in {g["message"] for g in members if ms(g) == ms(members[-1])}


@pytest.mark.parametrize(("message", "expected"), [
    ("payment 1234 failed for order 0xdeadbeef", "payment <num> failed for order <hex>"),
    ("user 123e4567-e89b-12d3-a456-426614174000 not found", "user <uuid> not found"),
    ("span 4bf92f3577b34da6 took 12.5 ms", "span <hex> took <num> ms"),
    ("deadbeef is a word but cafe is not", "deadbeef is a word but cafe is not"),
], ids=["num-hex", "uuid", "hexid-float", "words"])
def test_fingerprint(message: str, expected: str) -> None:
    assert fingerprint(message) == expected


# ---------------------------------------------------------------- environment aliases on every route

ALIAS_ROUTES = [
    ("/query/services", {}),
    (f"/query/services/{SPAN_SERVICE}/metrics", {"metric": "http_requests_total"}),
    (f"/query/services/{SPAN_SERVICE}/endpoints", {}),
    (f"/query/services/{ENDPOINTS[0][0]}/endpoints/{quote(ENDPOINTS[0][1], safe='')}/traces", {"status": "ERROR"}),
    (f"/query/services/{ROOT_SERVICE}/traces", {}),
    (f"/query/services/{SPAN_SERVICE}/errors", {}),
    ("/query/logs", {"service_name": SPAN_SERVICE}),
    ("/query/spans", {"service_name": SPAN_SERVICE}),
]


@pytest.mark.parametrize(("path", "extra"), ALIAS_ROUTES, ids=[p for p, _ in ALIAS_ROUTES])
def test_environment_alias_on_every_route(client: Any, data: Dataset, path: str, extra: dict[str, str]) -> None:
    canonical = get(client, path, environment="production", **extra, **window(data))
    for alias in ("prod", "PROD", " Prod "):
        assert get(client, path, environment=alias, **extra, **window(data)) == canonical
    assert canonical != get(client, path, environment="staging", **extra, **window(data))


def test_trace_route_environment_alias(client: Any, data: Dataset) -> None:
    trace = next(r for r in roots(data) if r["environment"] == "production")
    assert get(client, f"/query/traces/{trace['trace_id']}", environment="prod")["spans"]


# ---------------------------------------------------------------- RED routes through the real rollup reader

@pytest.fixture(scope="module")
def rollup_client(api_settings: Settings, data: Dataset) -> falcon.testing.TestClient:
    index_rollups(opensearch_client(api_settings), IndexNames(api_settings.opensearch_index_prefix), data)
    return client_for(api_settings, build_search(api_settings))  # the default RED source: the rollup reader


def test_services_from_rollups(rollup_client: Any, data: Dataset) -> None:
    server = [s for s in data.spans if s["kind"] == "SERVER"]
    counts = Counter((s["service_name"], s["environment"]) for s in server)
    errors = Counter((s["service_name"], s["environment"]) for s in server if s["status"] == "ERROR")
    answer = get(rollup_client, "/query/services", **window(data))
    rows = {(r["service_name"], r["environment"]): r for r in answer["services"]}
    assert {k: r["request_count"] for k, r in rows.items()} == dict(counts)
    assert {k: r["error_rate"] for k, r in rows.items()} == {k: round(errors[k] / n, 4) for k, n in counts.items()}
    for key, row in rows.items():
        exact = nearest_rank_value([s["duration_ms"] for s in server if (s["service_name"], s["environment"]) == key],
                                   95)
        assert row["latency_p95_ms"] == pytest.approx(exact, rel=0.02)
    staged = get(rollup_client, "/query/services", environment="stage", **window(data))
    expected = sorted(((-n, k) for k, n in counts.items() if k[1] == "staging"))
    assert [(r["service_name"], r["environment"]) for r in staged["services"]] == [k for _, k in expected]
    assert len(expected) > 1


def test_endpoints_from_rollups(rollup_client: Any, data: Dataset) -> None:
    server = [s for s in data.spans if s["kind"] == "SERVER" and s["service_name"] == EXTRA_SERVICE
              and s["environment"] == "development"]
    counts = Counter(s["name"] for s in server)
    assert len(counts) > 1
    answer = get(rollup_client, f"/query/services/{quote(EXTRA_SERVICE)}/endpoints", environment="dev",
                 limit=1000, **window(data))
    assert {e["endpoint_name"]: e["request_count"] for e in answer["endpoints"]} == dict(counts)
    assert [e["request_count"] for e in answer["endpoints"]] == sorted(counts.values(), reverse=True)
    assert get(rollup_client, "/query/services/nobody/endpoints", **window(data))["endpoints"] == []


@pytest.mark.parametrize("minutes", [15, 45])
def test_metrics_from_rollups_and_raw_spans(rollup_client: Any, data: Dataset, minutes: int) -> None:
    """15 min: 10 s buckets, read from raw spans; 45 min: 1 min buckets, from the 1-minute rollups (a window
    counts when its start lies in the range)."""
    end = data.now_ms - 20_000
    start = end - minutes * 60_000
    answer = get(rollup_client, f"/query/services/{SPAN_SERVICE}/metrics", environment="prod",
                 **{"from": format_timestamp(start), "to": format_timestamp(end)})
    assert len(answer) == 5
    counts = answer[0]["points"]
    step = 10_000 if minutes == 15 else 60_000
    first = start - start % step
    assert [p["timestamp"] for p in counts] == [format_timestamp(t) for t in range(first, end, step)]
    placed = (lambda t: t) if step < 60_000 else (lambda t: t - t % 60_000)
    in_range = [s for s in data.spans if s["kind"] == "SERVER" and s["service_name"] == SPAN_SERVICE
                and s["environment"] == "production" and start <= placed(ms(s)) < end]
    assert sum(p["value"] for p in counts) == len(in_range) > 0
    assert all(p["value"] >= 0 for series in answer for p in series["points"])


def test_metrics_of_a_range_without_indices(rollup_client: Any) -> None:
    answer = get(rollup_client, f"/query/services/{SPAN_SERVICE}/metrics", metric="http_requests_total",
                 **{"from": "2001-01-01T00:00:00Z", "to": "2001-01-01T00:10:00Z"})
    assert [p["value"] for p in answer[0]["points"]] == [0] * 60
