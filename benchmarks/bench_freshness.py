"""Freshness: how long from the Kafka append to the document being searchable, at a steady produce rate.

The engine runs (default settings) on the embedded stack; records are produced at a fixed rate
(2,000 records/s for 30 s; ``--quick`` 10 s). Every 20th span record is a probe: its Kafka timestamp comes
from the delivery report, its document id is the engine's (``span_doc_id``), and a poller asks the search
server every 100 ms for the probes not yet found with an ``ids`` query through ``_search`` — which sees a
document only after a refresh, i.e. when it is searchable (a GET by id would see it earlier). The
latency is found-time minus Kafka timestamp, so it includes the 100 ms polling resolution.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from benchmarks.report import Report
from benchmarks.rig import Engine, local_stack, topics_env
from common.clients import opensearch_client, producer_config
from common.settings import Settings, load_settings
from common.topics import create_topics
from common.traffic import generate
from engine.decode import span_doc_id

PROBE_EVERY = 20
POLL_S = 0.1


class Poller(threading.Thread):
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

    def run(self) -> None:
        while not self.halt.wait(POLL_S):
            with self.lock:
                ids = list(self.pending)[:500]
            if not ids:
                continue
            try:
                answer = self.client.search(index="traces-apm-*", body={
                    "query": {"ids": {"values": ids}}, "_source": False, "size": len(ids)})
            except Exception:
                self.errors += 1
                continue
            now = int(time.time() * 1000)
            with self.lock:
                for hit in answer["hits"]["hits"]:
                    sent = self.pending.pop(hit["_id"], None)
                    if sent is not None:
                        self.latencies.append(now - sent)


def produce_paced(settings: Settings, rate: float, duration_s: float, poller: Poller) -> dict[str, Any]:
    producer = Producer(producer_config(settings, "bench-freshness"))
    topics = {"log": settings.kafka_apm_log_topic, "span": settings.kafka_apm_span_topic}
    probes = 0
    produced = events = 0

    def probe(doc_id: str) -> Any:
        def report(err: Any, msg: Any) -> None:
            if err is None:
                poller.add(doc_id, msg.timestamp()[1])
        return report

    started = time.monotonic()
    for record in generate(seed=99):
        due = started + produced / rate
        now = time.monotonic()
        if now - started >= duration_s:
            break
        if due > now:
            producer.poll(due - now)
        callback = None
        if record.kind == "span" and produced % PROBE_EVERY == 0:
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_freshness", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10 s instead of 30 s")
    parser.add_argument("--rate", type=float, default=2000.0, help="records per second")
    parser.add_argument("--duration", type=float, default=0.0)
    args = parser.parse_args(argv)
    duration = args.duration or (10.0 if args.quick else 30.0)
    logs = Path(tempfile.mkdtemp(prefix="panopticon-bench-logs-"))
    with local_stack() as stack:
        env = topics_env(stack, "fresh")
        settings = load_settings(env)
        create_topics(settings, 4)
        engine = Engine(env, 0, f"bench-fresh-{time.time_ns()}", logs / "engine-fresh.log")
        poller = Poller(settings)
        try:
            wait_ready(engine)
            poller.start()
            sent = produce_paced(settings, args.rate, duration, poller)
            deadline = time.monotonic() + 30
            while poller.pending and time.monotonic() < deadline:
                time.sleep(0.2)
            poller.halt.set()
            poller.join(5)
        finally:
            engine.stop()
    lat = poller.latencies
    report = Report("freshness", {"rate_records_per_s": args.rate, "duration_s": duration, "probes": sent["probes"],
                                  "poll_interval_ms": int(POLL_S * 1000), "bulk_flush_interval_ms": 1000,
                                  "refresh_interval": "1s", "search": "embedded (noida-db)"})
    report.add("achieved_events_per_s", sent["events"] / sent["seconds"], "events/s")
    report.add("p50", percentile(lat, 0.50), "ms")
    report.add("p90", percentile(lat, 0.90), "ms")
    report.add("p99", percentile(lat, 0.99), "ms")
    report.add("max", max(lat) if lat else float("nan"), "ms")
    report.add("mean", statistics.fmean(lat) if lat else float("nan"), "ms")
    report.add("probes_found", len(lat), "probes", sent=sent["probes"])
    if poller.errors:
        report.note(f"{poller.errors} search polls failed")
    report.publish()
    return 0


def wait_ready(engine: Engine, timeout_s: float = 90.0) -> None:
    """The engine's metrics answer and its workers are up (they join the group within a few seconds)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if engine.metrics().get("panopticon_engine_workers", 0) >= 1:
                time.sleep(3.0)  # group join and first (empty) fetch
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError("the engine did not start")


if __name__ == "__main__":
    raise SystemExit(main())
