"""Test harness: the engine as a real process group, producing known records, reading topics and indices."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from confluent_kafka import Consumer, Producer, TopicPartition

from common.clients import opensearch_client
from common.rollup import RollupCell, RollupDoc
from common.settings import Settings
from common.traffic import Record

ROOT = Path(__file__).resolve().parents[1]


class EngineProcess:
    """``panopticon engine`` in its own process group (supervisor + workers)."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 2) -> None:
        self.env = {**os.environ, "ENGINE_WORKERS": str(workers), "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "common.cli", "engine"], env=self.env, cwd=ROOT,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def terminate(self, timeout_s: float = 60.0) -> int:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def kill9(self) -> None:
        """kill -9 of every engine process, at once."""
        assert self.process is not None
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(10)

    def ensure_stopped(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill9()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class Sent:
    """What was produced: each record with its (topic, partition, offset)."""

    records: list[Record] = field(default_factory=list)
    positions: list[tuple[str, int, int]] = field(default_factory=list)

    def valid_logs(self) -> int:
        return sum(r.n_valid for r in self.records if r.kind == "log")

    def valid_spans(self) -> int:
        return len({(r.trace_id, r.span_id) for r in self.records if r.kind == "span" and r.is_valid})

    def error_logs(self) -> int:
        return sum(sum(1 for lv in r.levels if lv in ("ERROR", "FATAL")) for r in self.records if r.kind == "log")

    def invalid_positions(self) -> set[tuple[str, int, int]]:
        return {pos for r, pos in zip(self.records, self.positions, strict=True) if not r.is_valid}


def produce(settings: Settings, records: Iterable[Record], on_progress: Callable[[int], None] | None = None) -> Sent:
    producer = Producer({"bootstrap.servers": settings.kafka_brokers, "enable.idempotence": True,
                         "linger.ms": 20})
    sent = Sent()
    topics = {"log": settings.kafka_apm_log_topic, "span": settings.kafka_apm_span_topic}
    acked: dict[int, tuple[str, int, int]] = {}

    def ack(index: int, err: Any, msg: Any) -> None:
        assert err is None, err
        acked[index] = (msg.topic(), msg.partition(), msg.offset())

    for i, record in enumerate(records):
        sent.records.append(record)
        while True:
            try:
                producer.produce(topics[record.kind], record.value, record.key,
                                 on_delivery=lambda err, msg, i=i: ack(i, err, msg))
                break
            except BufferError:
                producer.poll(0.05)
        if on_progress and i % 1000 == 0:
            on_progress(i)
        producer.poll(0)
    assert producer.flush(60) == 0
    sent.positions = [acked[i] for i in range(len(sent.records))]
    return sent


def read_topic(settings: Settings, topic: str, idle_s: float = 3.0, timeout_s: float = 60.0) -> list[Any]:
    """Every message of a topic from the beginning, until nothing new arrives for idle_s."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_brokers, "group.id": f"reader-{time.time_ns()}",
                         "auto.offset.reset": "earliest", "enable.auto.commit": False})
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline and time.monotonic() - last < idle_s:
            for message in consumer.consume(1000, 0.2):
                if message.error() is None:
                    out.append(message)
                    last = time.monotonic()
    finally:
        consumer.close()
    return out


def committed(settings: Settings, topic: str, partitions: int = 4) -> dict[int, int]:
    consumer = Consumer({"bootstrap.servers": settings.kafka_brokers, "group.id": settings.engine_group_id})
    try:
        tps = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        return {tp.partition: tp.offset for tp in tps}
    finally:
        consumer.close()


class Store:
    """Counts in the search server, for one index prefix."""

    def __init__(self, settings: Settings) -> None:
        self.client = opensearch_client(settings, timeout_s=30)
        self.prefix = settings.opensearch_index_prefix

    def count(self, kind: str, query: dict[str, Any] | None = None) -> int:
        pattern = f"{self.prefix}{kind}-*"
        try:
            self.client.indices.refresh(index=pattern)
            body = {"query": query} if query else None
            return int(self.client.count(index=pattern, body=body)["count"])
        except Exception:
            return -1

    def wait_for(self, kind: str, expected: int, timeout_s: float = 420.0, while_waiting: Callable[[], None] | None
                 = None) -> int:
        deadline = time.monotonic() + timeout_s
        found = self.count(kind)
        while found < expected and time.monotonic() < deadline:
            time.sleep(1.0)
            if while_waiting:
                while_waiting()
            found = self.count(kind)
        time.sleep(1.0)  # anything beyond the expected count would be a duplicate: give it a moment to show
        return self.count(kind)

    def ids_exist(self, kind: str, index_ids: list[tuple[str, str]]) -> int:
        docs = [{"_index": index, "_id": doc_id} for index, doc_id in index_ids]
        answer = self.client.mget(body={"docs": docs})
        return sum(1 for d in answer["docs"] if d.get("found"))


def decode(message: Any) -> Any:
    return msgspec.json.decode(message.value())


Key = tuple[str, str, str]


def stored_server_spans(store: Store) -> dict[Key, list[tuple[float, bool]]]:
    """Every stored SERVER span's (duration, is_error), by (service, environment, endpoint)."""
    out: dict[Key, list[tuple[float, bool]]] = defaultdict(list)
    pattern = f"{store.prefix}traces-apm-*"
    after: list[Any] | None = None
    while True:
        body: dict[str, Any] = {"size": 5000, "query": {"term": {"kind": "SERVER"}}, "sort": [{"span_id": "asc"}],
                                "_source": ["service_name", "environment", "name", "duration_ms", "status"]}
        if after:
            body["search_after"] = after
        hits = store.client.search(index=pattern, body=body)["hits"]["hits"]
        for hit in hits:
            s = hit["_source"]
            out[(s["service_name"], s["environment"], s["name"])].append((s["duration_ms"], s["status"] == "ERROR"))
        if len(hits) < 5000:
            return out
        after = hit["sort"]


def rollup_cells(store: Store, scope: str) -> dict[Key, RollupCell]:
    cells: dict[Key, RollupCell] = defaultdict(RollupCell)
    pattern = f"{store.prefix}metrics-apm-1m-*"
    store.client.indices.refresh(index=pattern)
    hits = store.client.search(index=pattern, body={"size": 10_000, "query": {"term": {"scope": scope}}})["hits"]
    assert hits["total"]["value"] < 10_000
    for hit in hits["hits"]:
        doc = msgspec.convert(hit["_source"], RollupDoc)
        cells[(doc.service_name, doc.environment, doc.endpoint)].merge(RollupCell.from_doc(doc))
    return cells
