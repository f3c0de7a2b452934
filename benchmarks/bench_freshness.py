"""Freshness: how long from the Kafka append to searchable in OpenSearch, and to visible in RED answers.

The engine runs (default settings) on the local stack (real Kafka and OpenSearch). Before timing starts, its
consumer group must be stable with every input partition assigned, and one record produced to every partition
of both input topics must be stored. Then records are produced at a fixed rate (2,000 records/s): first for
``--warmup`` seconds without probes (10; ``--quick`` 5: freshly started JVMs and engine reach their steady
state), then for 30 s (``--quick`` 10 s) with two kinds of probes:

- searchable: every 20th loadgen record that is a span. Its Kafka timestamp comes from the delivery report, its
  document id is the engine's (``span_doc_id``), and a poller asks OpenSearch every 100 ms for the probes not
  yet found with an ``ids`` query through ``_search`` — which sees a document only after a refresh, i.e.
  when it is searchable (a GET by id would see it earlier). Goal: p99 <= 2 s.
- RED: five SERVER spans a second of a service of their own, all with one key (one partition, so they are
  stored and counted in order). A second poller asks the rollup reader (``RollupReader.totals``, what the
  query API's RED routes read) every 100 ms for the service's request count over the last minutes: probe i
  is visible once the count reaches i + 1. The engine rewrites open rollup windows every
  ``ROLLUP_FLUSH_INTERVAL_MS`` (5 s), which sets this floor; the API may add its answer cache on top.

Latencies are found-time minus Kafka timestamp (wall clocks of the same machine), so they include the 100 ms
polling resolution.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Producer

from benchmarks.report import Report, Target
from benchmarks.rig import Engine, local_stack, topics_env
from panopticon.common.clients import opensearch_client, producer_config
from panopticon.common.indices import IndexNames
from panopticon.common.rollup_reader import MINUTE_MS, RollupQuery, RollupReader
from panopticon.common.settings import Settings, load_settings
from panopticon.common.topics import create_topics
from panopticon.devtools.sample import sample_event
from panopticon.devtools.traffic import generate
from panopticon.engine.decode import span_doc_id

PROBE_EVERY = 20
RED_PROBES_PER_S = 5.0
RED_SERVICE = "freshness-probe"
POLL_S = 0.1
PARTITIONS = 4
SEARCHABLE_TARGET_MS = 2000.0


def now_ms() -> int:
    return int(time.time() * 1000)


class Poller(threading.Thread):
    """Searchable probes: an ``ids`` query for the ones not found yet, every ``POLL_S``."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.client = opensearch_client(settings, timeout_s=30)
        self.lock = threading.Lock()
        self.pending: dict[str, int] = {}  # doc id -> Kafka timestamp (ms)
        self.latencies: list[int] = []
        self.halt = threading.Event()
        self.errors = 0

    def add(self, doc_id: str, kafka_ms: int) -> None:
        with self.lock:
            self.pending[doc_id] = kafka_ms

    def waiting(self) -> bool:
        with self.lock:
            return bool(self.pending)

    def run(self) -> None:
        while not self.halt.wait(POLL_S):
            with self.lock:
                ids = list(self.pending)[:500]
            if not ids:
                continue
            try:
                answer = self.client.search(index="traces-apm-*", body={
                    "query": {"ids": {"values": ids}}, "_source": False, "size": len(ids)})
            except Exception:  # noqa: BLE001 - counted; the next poll asks again
                self.errors += 1
                continue
            found = now_ms()
            with self.lock:
                for hit in answer["hits"]["hits"]:
                    sent = self.pending.pop(hit["_id"], None)
                    if sent is not None:
                        self.latencies.append(found - sent)


class RedPoller(threading.Thread):
    """RED probes: the probe service's request count from the rollup reader, every ``POLL_S``."""

    def __init__(self, settings: Settings, since_ms: int) -> None:
        super().__init__(daemon=True)
        client = opensearch_client(settings, timeout_s=30)
        self.reader = RollupReader(client, IndexNames(settings.opensearch_index_prefix), timeout_s=10,
                                   request_timeout_s=10)
        self.since_ms = since_ms - 5 * MINUTE_MS
        self.lock = threading.Lock()
        self.sent: dict[int, int] = {}  # probe number -> Kafka timestamp (ms), from the delivery report
        self.found: list[int] = []  # probe number i -> wall ms at which the count first reached i + 1
        self.produced = 0
        self.halt = threading.Event()
        self.errors = 0

    def delivered(self, number: int, kafka_ms: int) -> None:
        with self.lock:
            self.sent[number] = kafka_ms

    def waiting(self) -> bool:
        return len(self.found) < self.produced

    def run(self) -> None:
        query = RollupQuery(service=RED_SERVICE)
        while not self.halt.wait(POLL_S):
            if not self.waiting():
                continue
            try:
                count = self.reader.totals(query, self.since_ms, now_ms() + 5 * MINUTE_MS).totals.request_count
            except Exception:  # noqa: BLE001 - counted; the next poll asks again
                self.errors += 1
                continue
            found = now_ms()
            while len(self.found) < min(count, self.produced):
                self.found.append(found)

    def latencies(self) -> list[int]:
        with self.lock:
            return [at - self.sent[i] for i, at in enumerate(self.found) if i in self.sent]


def produce_paced(settings: Settings, rate: float, warmup_s: float, duration_s: float, poller: Poller,
                  red: RedPoller) -> dict[str, Any]:
    """``rate`` records/s for ``warmup_s`` + ``duration_s``; probes only after the warm-up."""
    producer = Producer(producer_config(settings, "bench-freshness"))
    topics = {"log": settings.kafka_apm_log_topic, "span": settings.kafka_apm_span_topic}
    probes = produced = events = 0
    rng = random.Random(7)

    def probe(doc_id: str) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                poller.add(doc_id, msg.timestamp()[1])
        return report

    def red_probe(number: int) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                red.delivered(number, msg.timestamp()[1])
        return report

    started = time.monotonic()
    probing = next_red = started + warmup_s
    for record in generate(seed=99):
        due = started + produced / rate
        now = time.monotonic()
        if now - started >= warmup_s + duration_s:
            break
        if due > now:
            producer.poll(due - now)
        if time.monotonic() >= next_red:
            event = sample_event("span", False, now_ms(), rng, service=RED_SERVICE)
            producer.produce(topics["span"], msgspec.json.encode(event), RED_SERVICE.encode(),
                             on_delivery=red_probe(red.produced))
            red.produced += 1
            next_red += 1.0 / RED_PROBES_PER_S
        callback = None
        if record.kind == "span" and produced % PROBE_EVERY == 0 and now >= probing:
            callback = probe(span_doc_id(record.trace_id, record.span_id))
            probes += 1
        producer.produce(topics[record.kind], record.value, record.key, on_delivery=callback)
        producer.poll(0)
        produced += 1
        events += record.n_events
    producer.flush(30)
    return {"produced": produced, "events": events, "probes": probes, "seconds": time.monotonic() - started}


def percentile(values: list[int], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return float(ordered[min(len(ordered) - 1, int(q * len(ordered)))])


def warm_up(engine: Engine, settings: Settings, timeout_s: float = 120.0) -> None:
    """The group stable with every partition assigned; then one record to every partition of both input
    topics, and wait until the engine stored them all."""
    engine.wait_assigned(timeout_s)
    producer = Producer(producer_config(settings, "bench-freshness-warmup"))
    rng = random.Random(1)
    for kind, topic in (("log", settings.kafka_apm_log_topic), ("span", settings.kafka_apm_span_topic)):
        for partition in range(PARTITIONS):
            event = sample_event(kind, False, now_ms(), rng, service="freshness-warmup")
            producer.produce(topic, msgspec.json.encode(event), partition=partition)
    if producer.flush(30):
        raise RuntimeError("warm-up records not delivered")
    deadline = time.monotonic() + timeout_s
    while engine.stored() < 2 * PARTITIONS:
        if time.monotonic() > deadline or not engine.alive():
            raise TimeoutError(f"the engine did not store the warm-up records; see {engine.log_path}")
        time.sleep(0.2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_freshness", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s instead of 30 s")
    parser.add_argument("--rate", type=float, default=2000.0, help="records per second")
    parser.add_argument("--duration", type=float, default=0.0, help="seconds with probes (default 30, quick 10)")
    parser.add_argument("--warmup", type=float,
                        help="seconds at the rate before the probes (default 10, quick 5)")
    args = parser.parse_args(argv)
    duration = args.duration or (10.0 if args.quick else 30.0)
    warmup = args.warmup if args.warmup is not None else (5.0 if args.quick else 10.0)
    logs = Path(tempfile.mkdtemp(prefix="panopticon-bench-logs-"))
    with local_stack() as stack:
        env = topics_env(stack, "fresh")
        settings = load_settings(env)
        create_topics(settings, PARTITIONS)
        engine = Engine(env, 0, f"bench-fresh-{time.time_ns()}", logs / "engine-fresh.log")
        poller = Poller(settings)
        red = RedPoller(settings, now_ms())
        try:
            warm_up(engine, settings)
            time.sleep(1.0)
            poller.start()
            red.start()
            sent = produce_paced(settings, args.rate, warmup, duration, poller, red)
            deadline = time.monotonic() + 30
            while (poller.waiting() or red.waiting()) and time.monotonic() < deadline:
                time.sleep(0.2)
        finally:
            poller.halt.set()
            red.halt.set()
            engine.stop()
        poller.join(5)
        red.join(5)
    lat, red_lat = poller.latencies, red.latencies()
    report = Report("freshness", {"rate_records_per_s": args.rate, "warmup_s": warmup, "duration_s": duration,
                                  "probes": sent["probes"],
                                  "red_probes": red.produced, "poll_interval_ms": int(POLL_S * 1000),
                                  "bulk_flush_interval_ms": settings.bulk_flush_interval_ms,
                                  "rollup_flush_interval_ms": settings.rollup_flush_interval_ms,
                                  "refresh_interval": "1s", "search": "OpenSearch 2.19.1 (local stack)",
                                  "kafka": "Apache Kafka 4.1 (local stack)"})
    report.add("achieved_events_per_s", sent["events"] / sent["seconds"], "events/s")
    report.add("p50", percentile(lat, 0.50), "ms")
    report.add("p90", percentile(lat, 0.90), "ms")
    report.add("p99", percentile(lat, 0.99), "ms", Target("<=", SEARCHABLE_TARGET_MS))
    report.add("max", max(lat) if lat else float("nan"), "ms")
    report.add("mean", statistics.fmean(lat) if lat else float("nan"), "ms")
    report.add("probes_found", len(lat), "probes", sent=sent["probes"])
    report.add("red.p50", percentile(red_lat, 0.50), "ms")
    report.add("red.p90", percentile(red_lat, 0.90), "ms")
    report.add("red.p99", percentile(red_lat, 0.99), "ms")
    report.add("red.max", max(red_lat) if red_lat else float("nan"), "ms")
    report.add("red.probes_found", len(red_lat), "probes", sent=red.produced)
    report.note("p50..mean: Kafka append -> searchable (ids query); red.*: Kafka append -> counted by the rollup "
                "reader (floor: the rollup flush interval)")
    if poller.errors or red.errors:
        report.note(f"failed polls: {poller.errors} searches, {red.errors} rollup reads")
    report.publish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
