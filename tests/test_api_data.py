"""A deterministic APM dataset for the query-API tests, and the expected answers computed from it.

Events are generated here (seeded), normalized with ``common.normalize.Refiner`` exactly as ingest does, and
bulk-indexed into daily indices created by ``IndexCreator``. Tests then compare the API's answers with numbers
computed in Python from the very documents that were indexed.
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass, field
from typing import Any

import falcon.testing
import msgspec

from api.app import create_app
from api.cache import ResponseCache
from api.params import TimeRange
from api.red import Bucket, EndpointTotals, RedSeries, RedTotals, ServiceTotals, bucket_starts
from api.search import Search
from common.indices import LOGS, TRACES, IndexCreator, IndexNames
from common.normalize import Refiner, format_timestamp, parse_timestamp
from common.settings import Settings

SERVICES = (
    ("checkout", ("prod", "Production", " PROD ")),
    ("orders", ("staging", "stage")),
    ("auth service", ("dev", "development")),
)
ENDPOINTS = ("GET /api/orders/{id}", "POST /api/checkout", "GET /health check")
MESSAGES = (
    "payment {n} failed for order {hex}",
    "timeout after {n} ms calling inventory",
    "user {uuid} not found",
    "cache miss for key {n}",
)
SPAN_WINDOW_MS = 40 * 60_000


@dataclass
class Dataset:
    now_ms: int
    spans: list[dict[str, Any]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def window(self) -> tuple[str, str]:
        """An explicit range holding every document: [now - 45 min, now + 1 s)."""
        return format_timestamp(self.now_ms - 45 * 60_000), format_timestamp(self.now_ms + 1000)


def _hex(rng: random.Random, n: int) -> str:
    return "".join(rng.choice("0123456789abcdef") for _ in range(n))


def generate(seed: int, now_ms: int, traces: int = 90) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Raw wire events (before normalization): spans and logs of ``traces`` traces, plus stray logs."""
    rng = random.Random(seed)
    spans: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    used_ms: set[int] = set()
    for number in range(traces):
        service, envs = SERVICES[number % len(SERVICES)]
        endpoint = ENDPOINTS[rng.randrange(len(ENDPOINTS))]
        start = now_ms - rng.randrange(2_000, SPAN_WINDOW_MS)
        while start in used_ms:
            start -= 1
        used_ms.add(start)
        trace_id, root_id = _hex(rng, 32), _hex(rng, 16)
        error = rng.random() < 0.25
        duration = round(rng.lognormvariate(3.5, 0.8), 3)
        env = rng.choice(envs)
        spans.append({"timestamp": start, "service_name": service, "environment": env, "trace_id": trace_id,
                      "span_id": root_id, "name": endpoint, "kind": rng.choice(["SERVER", "server"]),
                      "duration_ms": duration, "status": "ERROR" if error else rng.choice(["OK", "UNSET"]),
                      "http_method": endpoint.split()[0], "http_path": "/api/x",
                      "http_status_code": 500 if error else 200, "labels": {"region": rng.choice(["eu", "us"])}})
        for child in range(rng.randrange(1, 4)):
            kind = ("CLIENT", "INTERNAL", "SERVER")[child % 3]
            spans.append({"timestamp": start + child + 1, "service_name": service, "environment": env,
                          "trace_id": trace_id, "span_id": _hex(rng, 16), "parent_span_id": root_id,
                          "name": endpoint if kind == "SERVER" else f"db query {child}", "kind": kind,
                          "duration_ms": round(duration / (child + 2), 3), "status": "OK"})
        for line in range(rng.randrange(1, 3)):
            level = "ERROR" if error and line == 0 else rng.choice(["info", "WARNING", "debug"])
            template = MESSAGES[rng.randrange(len(MESSAGES))]
            message = template.format(n=rng.randrange(1, 99_999), hex="0x" + _hex(rng, 8),
                                      uuid="-".join(_hex(rng, n) for n in (8, 4, 4, 4, 12)))
            logs.append({"timestamp": format_timestamp(start + line), "service_name": service, "environment": env,
                         "level": level, "message": message, "trace_id": trace_id, "span_id": root_id})
    for number in range(20):
        service, envs = SERVICES[number % len(SERVICES)]
        logs.append({"timestamp": now_ms - rng.randrange(2_000, SPAN_WINDOW_MS), "service_name": service,
                     "environment": envs[0], "level": rng.choice(["ERROR", "info"]),
                     "message": f"background job {rng.randrange(1000)} finished with warnings"})
    return spans, logs


def span_id_of(doc: dict[str, Any]) -> str:
    return hashlib.blake2b(f"{doc['trace_id']}\x00{doc['span_id']}".encode(), digest_size=16).hexdigest()


def index_dataset(client: Any, names: IndexNames, seed: int, now_ms: int) -> Dataset:
    from opensearchpy import helpers

    refiner, creator = Refiner(), IndexCreator(client, names)
    raw_spans, raw_logs = generate(seed, now_ms)
    data = Dataset(now_ms=now_ms)
    actions = []
    for kind, events, target in ((TRACES, raw_spans, data.spans), (LOGS, raw_logs, data.logs)):
        for number, event in enumerate(events):
            refined = refiner.span(event, now_ms, now_ms) if kind == TRACES else refiner.log(event, now_ms, now_ms)
            doc = msgspec.to_builtins(refined.doc)
            index = names.daily(kind, refined.epoch_ms)
            creator.ensure(kind, index)
            doc_id = span_id_of(doc) if kind == TRACES else f"log-{seed}-{number}"
            actions.append({"_op_type": "create", "_index": index, "_id": doc_id, "_source": doc})
            target.append(doc)
    helpers.bulk(client, actions, refresh=True)
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
    return RedTotals(request_count=len(spans), error_count=sum(s["status"] == "ERROR" for s in spans),
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


def index_rollups(client: Any, names: IndexNames, data: Dataset) -> int:
    """1-minute rollup documents of the dataset's SERVER spans, as the engine would write them."""
    from opensearchpy import helpers

    from common.indices import METRICS_1M
    from common.rollup import SCOPE_ENDPOINT, SCOPE_SERVICE, TIER_1M, RollupCell, RollupKey, window_start

    cells: dict[RollupKey, RollupCell] = {}
    for span in data.spans:
        if span["kind"] != "SERVER":
            continue
        start = window_start(ms(span), TIER_1M)
        for scope, endpoint in ((SCOPE_SERVICE, ""), (SCOPE_ENDPOINT, span["name"])):
            key = RollupKey(TIER_1M, start, span["service_name"], span["environment"], scope, endpoint, "test:0")
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
