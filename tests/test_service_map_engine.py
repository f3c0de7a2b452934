"""Service-map edges are exact: per (caller, callee) they equal the calls in the spans sent, through a kill -9 and
a restart, with server spans arriving before their client spans and late traces minutes old."""

from __future__ import annotations

import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import msgspec
import pytest
from confluent_kafka import Producer

from panopticon.common.clients import producer_config
from panopticon.common.clock import format_timestamp
from panopticon.common.histogram import exact_percentile
from panopticon.common.rollup import SCOPE_EDGE, RollupCell
from panopticon.common.settings import Settings
from tests.harness import EngineProcess, Store, eventually, rollup_cells, settings_with_topics

pytestmark = pytest.mark.integration
PARTITIONS = 4

Call = tuple[str, str]  # (caller, callee)


def span(trace: str, span_id: str, service: str, kind: str, at_ms: int, duration: float, parent: str | None = None,
         error: bool = False, labels: dict[str, str] | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"timestamp": format_timestamp(at_ms), "service_name": service, "environment": "prod",
                           "trace_id": trace, "span_id": span_id, "name": f"{kind} op", "kind": kind,
                           "duration_ms": duration, "status": "ERROR" if error else "OK", "labels": labels or {}}
    if parent:
        out["parent_span_id"] = parent
    return out


def traces(rng: random.Random, count: int, start_ms: int, prefix: str) -> tuple[list[list[dict[str, Any]]],
                                                                               dict[Call, list[tuple[float, bool]]]]:
    """``count`` traces: user -> web -> cart -> postgresql/orders; a third of them with cart's SERVER span sent
    before web's CLIENT span. Returns the traces' spans in sending order and the calls they hold."""
    out, calls = [], defaultdict(list)
    for n in range(count):
        trace, at = f"{prefix}{n:06x}", start_ms + n * 20
        root, client, server, db = (rng.uniform(20, 90), rng.uniform(5, 18), rng.uniform(1, 4), rng.uniform(0.1, 2))
        failed = rng.random() < 0.1
        spans = [span(trace, f"{trace}a", "web", "SERVER", at, root, error=failed),
                 span(trace, f"{trace}b", "web", "CLIENT", at + 1, client, f"{trace}a"),
                 span(trace, f"{trace}c", "cart", "SERVER", at + 2, server, f"{trace}b", error=failed),
                 span(trace, f"{trace}d", "cart", "CLIENT", at + 3, db, f"{trace}c",
                      labels={"db.system": "postgresql", "db.name": "orders"})]
        if n % 3 == 0:
            spans[1], spans[2] = spans[2], spans[1]  # the server's span first
        out.append(spans)
        calls[("user", "web")].append((root, failed))
        calls[("web", "cart")].append((client, failed))  # the client's duration; an error on either side
        calls[("cart", "postgresql/orders")].append((db, False))
    return out, calls


def produce(settings: Settings, groups: list[list[dict[str, Any]]]) -> None:
    producer = Producer(producer_config(settings, "test-service-map"))
    for spans in groups:
        for one in spans:
            producer.produce(settings.kafka_apm_span_topic, msgspec.json.encode(one), one["trace_id"].encode())
        producer.poll(0)
    assert producer.flush(30) == 0


def test_edges_equal_the_calls_sent_through_kill_9_and_late_data(settings_env: dict[str, str], unique: str,
                                                                 tmp_path: Path) -> None:
    env = {**settings_env, "ENGINE_INSTANCE_ID": unique, "BULK_FLUSH_INTERVAL_MS": "200",
           "ROLLUP_FLUSH_INTERVAL_MS": "500", "ROLLUP_GRACE_MS": "5000", "SERVICE_MAP_WAIT_MS": "3000"}
    settings = settings_with_topics(env, PARTITIONS)
    store = Store(settings)
    rng = random.Random(14)
    now = int(time.time() * 1000)
    stream, truth = traces(rng, 3000, now - 120_000, "a")
    late, late_calls = traces(rng, 300, now - 15 * 60_000, "b")  # late: their minutes closed long ago
    for call, values in late_calls.items():
        truth[call] += values
    first = EngineProcess(env, tmp_path / "engine-1.log").start()
    second = None
    try:
        produce(settings, stream[:1500])
        store.reach("traces-apm", 2000)
        first.kill9()
        second = EngineProcess(env, tmp_path / "engine-2.log").start()
        produce(settings, stream[1500:] + late)
        # two spans per partition half a minute on: the first moves each partition's watermark past the wait,
        # at the second every half still waiting (the database calls, which no server answers) gives up
        producer = Producer(producer_config(settings, "test-service-map-flush"))
        for partition in range(PARTITIONS):
            for n in range(2):
                flush = span(f"f{partition}{n}", f"f{partition}{n}", "flush", "INTERNAL", now + 30_000, 1.0)
                producer.produce(settings.kafka_apm_span_topic, msgspec.json.encode(flush), partition=partition)
        assert producer.flush(30) == 0

        cells: dict[Any, RollupCell] = {}

        def counted() -> bool:
            nonlocal cells
            cells = {(caller, callee): cell for (caller, _, callee), cell in rollup_cells(store, SCOPE_EDGE).items()}
            return {k: c.request_count for k, c in cells.items()} == {k: len(v) for k, v in truth.items()}

        sent = sorted((k, len(v)) for k, v in truth.items())
        eventually(counted, 120, lambda: f"edges counting the calls sent: {sent} (last read: "
                   f"{sorted((k, c.request_count) for k, c in cells.items())})", interval_s=1.0)
        assert {k: c.error_count for k, c in cells.items()} == {k: sum(e for _, e in v) for k, v in truth.items()}
        for call, values in truth.items():
            exact = exact_percentile([d for d, _ in values], 95)
            assert abs(cells[call].percentiles((95,))[0] - exact) <= 0.01 * exact, call
    finally:
        first.ensure_stopped()
        if second:
            assert second.terminate() == 0
