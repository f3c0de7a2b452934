"""The engine reads the OpenTelemetry Collector's kafka-exporter topics (``otlp_proto`` and ``otlp_json``) into the
same stored documents, rollups, error republishing and dead letters as the contract's JSON topics."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Producer

from panopticon.common.clients import producer_config
from panopticon.common.rollup import SCOPE_ENDPOINT
from panopticon.common.settings import Settings
from tests.harness import (
    EngineProcess,
    Store,
    decode,
    read_topic,
    rollup_cells,
    settings_with_topics,
    stored_server_spans,
)
from tests.otlp_requests import logs, otlp_json, traces

pytestmark = pytest.mark.integration

def test_otlp_topics_are_stored_rolled_up_and_republished(settings_env: dict[str, str], unique: str, engines: list,
                                                          tmp_path: Path) -> None:
    env = {**settings_env, "ENGINE_INSTANCE_ID": unique, "BULK_FLUSH_INTERVAL_MS": "200",
           "ROLLUP_FLUSH_INTERVAL_MS": "500", "ROLLUP_GRACE_MS": "0"}
    settings: Settings = settings_with_topics(env)
    producer = Producer(producer_config(settings, "test-otlp"))
    span_topic, log_topic = settings.kafka_otlp_span_topic, settings.kafka_otlp_log_topic
    for first in range(0, 300, 50):  # 6 requests of 50 traces, alternately otlp_proto and otlp_json
        request = traces(first, 50)
        producer.produce(span_topic, request.SerializeToString() if first % 100 else otlp_json(request))
    producer.produce(log_topic, logs(0, 40).SerializeToString())
    producer.produce(log_topic, otlp_json(logs(40, 40)))
    producer.produce(span_topic, b"\x0a\x05garbage")  # neither protobuf nor JSON of a request
    assert producer.flush(30) == 0

    engine = EngineProcess(env, tmp_path / "engine.log").start()
    engines.append(engine)
    store = Store(settings)
    failed = sum(1 for n in range(300) if n % 3 == 0)
    assert store.wait_for("traces-apm", 900, timeout_s=120) == 900, engine.log()[-3000:]
    stored_logs = store.wait_for("logs-apm", 80 + failed, timeout_s=60)
    letters = [decode(m) for m in read_topic(settings, settings.kafka_apm_dlq_topic)]
    assert stored_logs == 80 + failed, [(d["reason"], d["detail"]) for d in letters][:3]
    assert store.count("logs-apm", {"term": {"level": "ERROR"}}) == 40 + failed
    assert store.count("traces-apm", {"term": {"environment": "production"}}) == 900
    assert store.count("traces-apm", {"bool": {"filter": [{"term": {"service_name": "cart"}},
                                                          {"term": {"status": "ERROR"}}]}}) == failed

    errors = [decode(m) for m in read_topic(settings, settings.kafka_apm_log_error_topic)]
    assert len(errors) == 40 + failed  # exactly once each in a normal run
    assert Counter(e["message"] for e in errors)["KeyError: cart 42"] == failed
    (letter,) = letters
    assert letter["source_topic"] == span_topic and letter["reason"] == "not_otlp"

    def rollups_match() -> bool:
        spans = stored_server_spans(store)
        cells = rollup_cells(store, SCOPE_ENDPOINT)
        return {k: len(v) for k, v in spans.items()} == {k: c.request_count for k, c in cells.items()}

    deadline = time.monotonic() + 60
    while not rollups_match() and time.monotonic() < deadline:
        time.sleep(1)
    assert rollups_match()
    assert {k: len(v) for k, v in stored_server_spans(store).items()} == {
        ("frontend", "production", "GET /checkout"): 300, ("cart", "production", "POST /cart"): 300}
    assert engine.terminate() == 0
