"""A deterministic APM dataset for the query-API tests, and the expected answers computed from it.

The traffic is loadgen's (``common.traffic.generate`` with a fixed seed and a fixed base time), plus a few
targeted records for what loadgen never emits: a service name with a space (``auth service``), the
``dev``/``development`` environment and spellings with spaces (``" PROD "``), an endpoint name with a space
and no slash, and logs outside any trace. Every record goes through the engine's own decode
(``engine.decode.EventDecoder``: normalization, daily index, document ids) and the resulting NDJSON is sent
to ``_bulk`` into daily indices created by ``IndexCreator``. Tests then compare the API's answers with
numbers computed in Python from the very documents that were stored.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import falcon.testing
import msgspec

from panopticon.api.app import create_app
from panopticon.api.cache import ResponseCache
from panopticon.api.params import TimeRange
from panopticon.api.red import Bucket, EndpointTotals, RedSeries, RedTotals, ServiceTotals, bucket_starts
from panopticon.api.search import Search
from panopticon.common.clock import format_timestamp, parse_timestamp
from panopticon.common.indices import IndexCreator, IndexNames
from panopticon.common.settings import Settings
from panopticon.devtools.traffic import generate
from panopticon.engine.decode import EventDecoder

LOG_TOPIC, SPAN_TOPIC = "apm.logs", "apm.spans"
SPAN_WINDOW_MS = 40 * 60_000
TRACE_GAP_MS = 14_000  # ~170 loadgen traces in the window: ~1,600 spans, ~1,100 logs
ERROR_RATIO = 0.1

# What the tests ask about (loadgen's catalog, plus the extra "auth service").
SPAN_SERVICE = "order-service"  # CLIENT spans, paged and sorted
ROOT_SERVICE = "ecommerce-service"  # root traces
EXTRA_SERVICE = "auth service"
EXTRA_ENVIRONMENTS = ("dev", "Development", " PROD ")
EXTRA_ENDPOINTS = ("GET /health check", "POST /oauth/token")
ENDPOINTS = (  # (service, endpoint): names with slashes, braces and spaces
    ("order-service", "GET /api/orders/{id}"),
    ("board-service", "GET /api/boards/{boardId}/posts/{postId}/comments"),
    (EXTRA_SERVICE, "GET /health check"),
)
EXTRA_MESSAGES = (
    "payment {n} failed for order {hex}",
    "timeout after {n} ms calling inventory",
    "user {uuid} not found",
)


@dataclass
class Dataset:
    now_ms: int
    spans: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    records: int = 0  # Kafka records sent through the decoder (loadgen's and the extra ones)

    @property
    def window(self) -> tuple[str, str]:
        """An explicit range holding every document: [now - 45 min, now + 1 s)."""
        return format_timestamp(self.now_ms - 45 * 60_000), format_timestamp(self.now_ms + 1000)


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def loadgen_records(seed: int, now_ms: int, gap_ms: float = TRACE_GAP_MS) -> Iterator[tuple[str, bytes]]:
    """(topic, value) of loadgen's traces that start in ``[now - 42 min, now - 2 min)``."""
    last = ""
    for record in generate(seed=seed, base_time_ms=now_ms - SPAN_WINDOW_MS - 2 * 60_000,
                           trace_interval_ms=gap_ms, error_ratio=ERROR_RATIO):
        if record.trace_id != last:
            if record.timestamp_ms >= now_ms - 2 * 60_000:
                return
            last = record.trace_id
        yield (SPAN_TOPIC if record.kind == "span" else LOG_TOPIC), record.value


def extra_records(seed: int, now_ms: int, traces: int = 30) -> Iterator[tuple[str, bytes]]:
    """What loadgen lacks: ``auth service`` in dev/development/" PROD " with SERVER roots (2 in 5 failing),
    children and logs; endpoint names with a space; logs outside any trace."""
    rng, encode = random.Random(seed), msgspec.json.encode
    for number in range(traces):
        env, endpoint = EXTRA_ENVIRONMENTS[number % 3], EXTRA_ENDPOINTS[number % 2]
        start = now_ms - rng.randrange(2 * 60_000, SPAN_WINDOW_MS)
        trace_id, root_id = _hex(rng, 32), _hex(rng, 16)
        error, duration = number % 5 in (1, 2), round(rng.lognormvariate(3.5, 0.8), 3)
        head = {"service_name": EXTRA_SERVICE, "environment": env, "trace_id": trace_id}
        yield SPAN_TOPIC, encode({"timestamp": start, **head, "span_id": root_id, "name": endpoint,
                                  "kind": "server", "duration_ms": duration, "status": "ERROR" if error else "OK",
                                  "http_method": endpoint.split()[0], "http_path": "/x",
                                  "http_status_code": 500 if error else 200, "labels": {"region": "eu"}})
        yield SPAN_TOPIC, encode({"timestamp": start + 1, **head, "span_id": _hex(rng, 16),
                                  "parent_span_id": root_id, "name": "SELECT tokens", "kind": "CLIENT",
                                  "duration_ms": round(duration / 2, 3), "status": "OK"})
        message = EXTRA_MESSAGES[number % 3].format(n=rng.randrange(1, 99_999), hex="0x" + _hex(rng, 8),
                                                    uuid="-".join(_hex(rng, n) for n in (8, 4, 4, 4, 12)))
        yield LOG_TOPIC, encode({"timestamp": format_timestamp(start + 2), **head, "span_id": root_id,
                                 "level": "ERROR" if error else "info", "message": message})
    for number in range(5):
        yield LOG_TOPIC, encode({"timestamp": now_ms - rng.randrange(2 * 60_000, SPAN_WINDOW_MS),
                                 "service_name": EXTRA_SERVICE, "environment": "dev", "level": "WARNING",
                                 "message": f"background job {number} finished with warnings"})


def index_dataset(client: Any, names: IndexNames, seed: int, now_ms: int,
                  trace_gap_ms: float = TRACE_GAP_MS) -> Dataset:
    """Decode loadgen's and the extra records like the engine, bulk them (refreshed), keep the stored docs.

    ``trace_gap_ms``: mean gap between loadgen traces (larger: a smaller dataset)."""
    decoder, creator = EventDecoder(names, LOG_TOPIC, SPAN_TOPIC, 1 << 20), IndexCreator(client, names)
    data, body = Dataset(now_ms=now_ms), bytearray()
    records = [*loadgen_records(seed, now_ms, trace_gap_ms), *extra_records(seed, now_ms)]
    for offset, (topic, value) in enumerate(records):
        decoded = decoder.decode(topic, 0, offset, value, now_ms, now_ms)
        assert not decoded.rejects, decoded.rejects
        for entry in decoded.entries:
            creator.ensure(entry.index_kind, entry.index)
            body += entry.action + entry.doc + b"\n"
            doc = msgspec.json.decode(entry.doc)
            (data.spans if topic == SPAN_TOPIC else data.logs).append(doc)
    data.records = len(records)
    answer = client.bulk(body=bytes(body), refresh="true", request_timeout=120)
    assert not answer.get("errors"), [i for i in answer["items"] if next(iter(i.values())).get("error")][:1]
    return data


# ---------------------------------------------------------------- expected answers

def ms(doc: dict[str, Any]) -> int:
    stamp = parse_timestamp(doc["@timestamp"])
    assert stamp is not None
    return stamp


def roots(data: Dataset) -> list[dict[str, Any]]:
    return [s for s in data.spans if s["kind"] == "SERVER" and not s.get("parent_span_id")]


def nearest_rank_value(values: list[float], percentile: float) -> float:
    ordered = sorted(values)
    rank = max(1, min(len(ordered), math.ceil(percentile / 100 * len(ordered) - 1e-9)))
    return ordered[rank - 1]


# ---------------------------------------------------------------- a RED source computed from raw spans (tests)

def _totals(spans: list[dict[str, Any]]) -> RedTotals:
    durations = [s["duration_ms"] for s in spans]
    if not durations:
        return RedTotals()
    errors = sum(s["status"] == "ERROR" for s in spans)
    return RedTotals(request_count=len(spans), error_count=errors, error_rate=round(errors / len(spans), 4),
                     p50_ms=nearest_rank_value(durations, 50), p90_ms=nearest_rank_value(durations, 90),
                     p95_ms=nearest_rank_value(durations, 95), p99_ms=nearest_rank_value(durations, 99))


class ListRed:
    """RED numbers computed exactly from a list of stored span documents: a stand-in for the rollup reader."""

    def __init__(self, spans: list[dict[str, Any]]) -> None:
        self._spans = [s for s in spans if s["kind"] == "SERVER"]

    def _select(self, window: TimeRange, environment: str | None, service: str | None) -> list[dict[str, Any]]:
        return [s for s in self._spans if window.from_ms <= ms(s) < window.to_ms
                and (environment is None or s["environment"] == environment)
                and (service is None or s["service_name"] == service)]

    def services(self, window: TimeRange, environment: str | None) -> list[ServiceTotals]:
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for span in self._select(window, environment, None):
            groups.setdefault((span["service_name"], span["environment"]), []).append(span)
        return [ServiceTotals(service_name=k[0], environment=k[1], totals=_totals(v)) for k, v in groups.items()]

    def endpoints(self, service: str, window: TimeRange, environment: str | None) -> list[EndpointTotals]:
        groups: dict[str, list[dict[str, Any]]] = {}
        for span in self._select(window, environment, service):
            groups.setdefault(span["name"], []).append(span)
        return [EndpointTotals(endpoint=k, totals=_totals(v)) for k, v in groups.items()]

    def series(self, service: str, window: TimeRange, environment: str | None, interval_ms: int) -> RedSeries:
        selected = self._select(window, environment, service)
        return RedSeries(interval_ms=interval_ms, buckets=[
            Bucket(start_ms=start, totals=_totals([s for s in selected if start <= ms(s) < start + interval_ms]))
            for start in bucket_starts(window, interval_ms)])


def client_for(settings: Settings, search: Search, red: Any = None,
               cache_ttl_s: float = 0.0) -> falcon.testing.TestClient:
    app = create_app(settings, search, red, cache=ResponseCache(ttl_s=cache_ttl_s))
    return falcon.testing.TestClient(app)


def calls(data: Dataset) -> list[tuple[str, str, dict[str, Any]]]:
    """Service-map calls of the dataset, (caller, callee, the span whose numbers count), roughly paired as the
    engine pairs them: a root SERVER span is a call from ``user``; a SERVER span under another service's CLIENT
    span is a call from that service (the CLIENT side counts); a CLIENT span nothing answers has an unknown
    callee ("")."""
    by_id = {span["span_id"]: span for span in data.spans}
    answered: set[str] = set()
    found: list[tuple[str, str, dict[str, Any]]] = []
    for span in data.spans:
        parent = by_id.get(span.get("parent_span_id") or "")
        if span["kind"] != "SERVER":
            continue
        if not span.get("parent_span_id"):
            found.append(("user", span["service_name"], span))
        elif parent is not None and parent["kind"] == "CLIENT" and parent["service_name"] != span["service_name"]:
            answered.add(parent["span_id"])
            found.append((parent["service_name"], span["service_name"], parent))
    found += [(span["service_name"], "", span) for span in data.spans
              if span["kind"] == "CLIENT" and span["span_id"] not in answered]
    return found


def index_rollups(client: Any, names: IndexNames, data: Dataset) -> int:
    """1-minute rollup documents of the dataset's SERVER spans and calls (``calls``), as the engine would write
    them."""
    from opensearchpy import helpers

    from panopticon.common.indices import METRICS_1M
    from panopticon.common.rollup import (
        SCOPE_EDGE,
        SCOPE_ENDPOINT,
        SCOPE_SERVICE,
        TIER_1M,
        RollupCell,
        RollupKey,
        window_start,
    )

    cells: dict[RollupKey, RollupCell] = {}
    for span in data.spans:
        if span["kind"] != "SERVER":
            continue
        start = window_start(ms(span), TIER_1M)
        for scope, endpoint in ((SCOPE_SERVICE, ""), (SCOPE_ENDPOINT, span["name"])):
            key = RollupKey(TIER_1M, start, span["service_name"], span["environment"], scope, endpoint, "test:0")
            cells.setdefault(key, RollupCell()).add(span["duration_ms"], span["status"] == "ERROR")
    for caller, callee, span in calls(data):
        key = RollupKey(TIER_1M, window_start(ms(span), TIER_1M), caller, span["environment"], SCOPE_EDGE, callee,
                        "test:0")
        cells.setdefault(key, RollupCell()).add(span["duration_ms"], span["status"] == "ERROR")
    creator = IndexCreator(client, names)
    actions = []
    for key, cell in cells.items():
        index = key.index_name(names)
        creator.ensure(METRICS_1M, index)
        actions.append({"_op_type": "index", "_index": index, "_id": key.doc_id(),
                        "_source": msgspec.to_builtins(cell.to_doc(key, data.now_ms))})
    helpers.bulk(client, actions, refresh=True)
    return len(actions)
