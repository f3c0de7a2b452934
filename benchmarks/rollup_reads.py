"""What the RED questions cost: search requests, documents and time for 15 minutes, 24 hours and 14 days.

``python -m benchmarks.rollup_reads [--spans-per-s 20] [--endpoints 10] [--partitions 3]`` starts its own
local stack, writes one service's rollups (1-minute documents for the last 24 h, per endpoint and per
service, one per source partition; 1-hour documents for 14 days, as the compactor leaves them; raw SERVER
spans for the last 15 minutes) next to a second service of the same size, and asks the reader the three
questions of ``/query/services/{service}/metrics`` with their automatic intervals.
"""

from __future__ import annotations

import argparse
import random
import time
from typing import Any

import msgspec
from opensearchpy import helpers

from benchmarks.rig import local_stack
from panopticon.common.clients import opensearch_client
from panopticon.common.clock import format_timestamp
from panopticon.common.indices import METRICS_1H, METRICS_1M, TRACES, IndexCreator, IndexNames
from panopticon.common.rollup import (
    SCOPE_ENDPOINT,
    SCOPE_SERVICE,
    TIER_1H,
    TIER_1M,
    RollupCell,
    RollupKey,
    hour_marker_key,
)
from panopticon.common.rollup_reader import DAY_MS, HOUR_MS, MINUTE_MS, RollupQuery, RollupReader
from panopticon.common.settings import load_settings

SERVICES = ["checkout", "search"]


def _cells(rng: random.Random, tier: str, start: int, spans: int, endpoints: int,
           partition: str) -> dict[RollupKey, RollupCell]:
    cells: dict[RollupKey, RollupCell] = {}
    for service in SERVICES:
        for _ in range(spans):
            endpoint = f"GET /api/v{rng.randrange(endpoints)}"
            duration, error = rng.lognormvariate(3, 1.2), rng.random() < 0.05
            for scope, name in ((SCOPE_ENDPOINT, endpoint), (SCOPE_SERVICE, "")):
                key = RollupKey(tier, start, service, "production", scope, name, partition)
                cells.setdefault(key, RollupCell()).add(duration, error)
    return cells


def _actions(names: IndexNames, creator: IndexCreator, kind: str,
             cells: dict[RollupKey, RollupCell], written: int) -> list[dict[str, Any]]:
    actions = []
    for key, cell in cells.items():
        index = key.index_name(names)
        creator.ensure(kind, index)
        actions.append({"_index": index, "_id": key.doc_id(),
                        "_source": msgspec.to_builtins(cell.to_doc(key, written))})
    return actions


def write_world(client: Any, names: IndexNames, now: int, args: argparse.Namespace) -> int:
    rng, creator, count = random.Random(1), IndexCreator(client, names), 0
    per_minute = args.spans_per_s * 60 // args.partitions
    for hour in range(now - args.hours * HOUR_MS, now, HOUR_MS):
        actions = []
        for minute in range(hour, hour + HOUR_MS, MINUTE_MS):
            for p in range(args.partitions):
                cells = _cells(rng, TIER_1M, minute, per_minute, args.endpoints, f"apm.spans:{p}")
                actions += _actions(names, creator, METRICS_1M, cells, minute + MINUTE_MS)
        started = time.monotonic()
        helpers.bulk(client, actions, chunk_size=5000, request_timeout=300)
        print(f"  1-minute documents of {format_timestamp(hour)}: {len(actions)} in "
              f"{time.monotonic() - started:.1f} s", flush=True)
        count += len(actions)
    for hour in range(now - 14 * DAY_MS, now - HOUR_MS, HOUR_MS):
        cells = _cells(rng, TIER_1H, hour, args.spans_per_s * 3600 // 60, args.endpoints, "")
        actions = _actions(names, creator, METRICS_1H, cells, hour + 2 * HOUR_MS)
        marker = RollupCell().to_doc(hour_marker_key(hour), hour + HOUR_MS)
        actions.append({"_index": names.daily(METRICS_1H, hour), "_id": marker.rollup_id,
                        "_source": msgspec.to_builtins(marker)})
        helpers.bulk(client, actions, chunk_size=5000, request_timeout=300)
        count += len(actions)
    print("  1-hour documents for 14 days written", flush=True)
    return count + write_raw(client, names, creator, rng, now, args)


def write_raw(client: Any, names: IndexNames, creator: IndexCreator, rng: random.Random, now: int,
              args: argparse.Namespace) -> int:
    actions = []
    for n in range(args.spans_per_s * 15 * 60 * len(SERVICES)):
        ts = now - rng.randrange(15 * MINUTE_MS)
        index = names.daily(TRACES, ts)
        creator.ensure(TRACES, index)
        actions.append({"_index": index, "_id": str(n), "_source": {
            "@timestamp": format_timestamp(ts), "service_name": SERVICES[n % len(SERVICES)],
            "environment": "production", "name": f"GET /api/v{rng.randrange(args.endpoints)}", "kind": "SERVER",
            "status": "ERROR" if rng.random() < 0.05 else "OK", "duration_ms": rng.lognormvariate(3, 1.2)}})
    helpers.bulk(client, actions, chunk_size=5000, request_timeout=300)
    return len(actions)


def ask(reader: RollupReader, label: str, from_ms: int, to_ms: int, interval_ms: int) -> None:
    query = RollupQuery(service="checkout", environment="production")
    series = reader.series(query, from_ms, to_ms, interval_ms)
    stats = series.stats
    print(f"{label:>4}: interval={series.interval_ms // 1000}s points={len(series.points)} "
          f"tiers={'+'.join(stats.tiers)} requests={stats.requests} documents={stats.documents} "
          f"agg_buckets={stats.agg_buckets} read={stats.elapsed_ms:.0f} ms "
          f"requests_total={series.totals.request_count} p95={series.totals.p95_ms:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--spans-per-s", type=int, default=20, help="SERVER spans per second per service")
    parser.add_argument("--endpoints", type=int, default=10)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--hours", type=int, default=24, help="hours of 1-minute documents (the 24 h question)")
    args = parser.parse_args()
    with local_stack() as stack:  # stopped also when interrupted
        client = opensearch_client(load_settings(stack.env()), timeout_s=120)
        names = IndexNames("bench-")
        now = int(time.time() * 1000) // MINUTE_MS * MINUTE_MS
        started = time.monotonic()
        written = write_world(client, names, now, args)
        client.indices.refresh(index="bench-*")
        print(f"wrote {written} documents in {time.monotonic() - started:.0f} s")
        reader = RollupReader(client, names, timeout_s=60, request_timeout_s=60)
        for _ in range(2):  # the second round shows warm numbers
            ask(reader, "15m", now - 15 * MINUTE_MS, now, 10_000)
            ask(reader, "24h", now - DAY_MS, now, 10 * MINUTE_MS)
            ask(reader, "14d", now - 14 * DAY_MS, now, 30 * MINUTE_MS)


if __name__ == "__main__":
    main()
