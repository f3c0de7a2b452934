"""Test harness: the engine as a real process group, producing known records, reading topics and indices."""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import msgspec
from confluent_kafka import Consumer, Producer, TopicPartition

from panopticon.common.clients import consumer_config, opensearch_client
from panopticon.common.rollup import RollupCell
from panopticon.common.schema import RollupDoc
from panopticon.common.settings import Settings, load_settings
from panopticon.common.topics import create_topics
from panopticon.devtools.stack import free_port
from panopticon.devtools.traffic import Record, generate

ROOT = Path(__file__).resolve().parents[1]

T = TypeVar("T")


def eventually(predicate: Callable[[], T], timeout_s: float, what: str | Callable[[], str],
               interval_s: float = 0.1) -> T:
    """Call ``predicate`` every ``interval_s`` until it returns something true, and return that. After
    ``timeout_s``, fail with an AssertionError naming ``what`` was awaited: a string, or a function giving the
    message only then (a log's tail, say). An exception from ``predicate`` ends the wait at once."""
    deadline = time.monotonic() + timeout_s
    while not (result := predicate()):
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what() if callable(what) else what}")
        time.sleep(interval_s)
    return result


def recent_records(count: int, seed: int, invalid_ratio: float = 0.0, age_ms: int = 60_000) -> list[Record]:
    """``count`` loadgen records of ``seed``, their time starting ``age_ms`` ago."""
    return list(generate(seed=seed, count=count, base_time_ms=int(time.time() * 1000) - age_ms,
                         invalid_ratio=invalid_ratio))


def settings_with_topics(env: dict[str, str], partitions: int = 4) -> Settings:
    """The settings of ``env``, with their topics created."""
    settings = load_settings(env)
    create_topics(settings, partitions)
    return settings


class EngineProcess:
    """``panopticon engine`` in its own process group (supervisor + workers)."""

    def __init__(self, env: dict[str, str], log_path: Path, workers: int = 2) -> None:
        self.env = {**os.environ, "ENGINE_WORKERS": str(workers), "PYTHONUNBUFFERED": "1", **env}
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> EngineProcess:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "panopticon", "engine"], env=self.env, cwd=ROOT,
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
        """Documents of a kind, after a refresh; 0 before its first index exists. A 503 (a new index whose shard
        is still starting) is asked again for up to 30 s; any other failure is raised: a wrong prefix or an
        unreachable server must fail the test, not read as "nothing stored yet"."""
        from opensearchpy.exceptions import TransportError

        pattern = f"{self.prefix}{kind}-*"
        body = {"query": query} if query else None
        deadline = time.monotonic() + 30
        while True:
            try:
                self.client.indices.refresh(index=pattern)
                return int(self.client.count(index=pattern, body=body)["count"])
            except TransportError as exc:
                if exc.status_code != 503 or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

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

    def reach(self, kind: str, count: int, timeout_s: float = 120.0) -> None:
        """Wait until at least ``count`` documents of a kind are stored, or ``timeout_s`` passed: for acting
        mid-stream (a kill, a SIGTERM). Not `eventually`: the act comes anyway, and the test's checks judge."""
        deadline = time.monotonic() + timeout_s
        while self.count(kind) < count and time.monotonic() < deadline:
            time.sleep(0.2)

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


REFUSALS = {
    401: {"type": "security_exception", "reason": "Authentication finally failed"},
    403: {"type": "security_exception",
          "reason": "no permissions for [indices:admin/index_template/put] and User [name=engine, backend_roles=[]]"},
    503: {"type": "unavailable_shards_exception", "reason": "primary shard is not active"},
}


class SearchProxy:
    """A real HTTP reverse proxy in front of the real OpenSearch, which has no security plugin here: it answers
    401 unless the request carries the expected basic-auth credentials, and forwards the rest. ``refuse(status,
    path)`` makes it answer ``status`` (401, 403 or 503, with the body OpenSearch's security plugin or a cluster
    would send) to every request whose path contains ``path``, until ``allow()``."""

    def __init__(self, upstream: str, username: str, password: str) -> None:
        target = urlsplit(upstream)
        self._upstream = (target.hostname or "127.0.0.1", target.port or 9200)
        self._expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
        self._refusal: tuple[int, str] | None = None
        self.refused = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                status = proxy.verdict(self.path, self.headers.get("Authorization"))
                if status:
                    proxy.refused += 1
                    data = json.dumps({"error": {"root_cause": [REFUSALS[status]], **REFUSALS[status]},
                                       "status": status}).encode()
                    headers = [("WWW-Authenticate", 'Basic realm="OpenSearch Security"')] if status == 401 else []
                    self._answer(status, "application/json", data, headers)
                    return
                upstream = http.client.HTTPConnection(*proxy._upstream, timeout=120)
                try:
                    forwarded = {k: v for k, v in self.headers.items() if k.lower() in ("content-type", "accept")}
                    upstream.request(self.command, self.path, body=body, headers=forwarded)
                    answer = upstream.getresponse()
                    data = answer.read()
                    self._answer(answer.status, answer.getheader("Content-Type", "application/json"), data, [])
                finally:
                    upstream.close()

            def _answer(self, status: int, content_type: str, data: bytes, headers: list[tuple[str, str]]) -> None:
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for name, value in headers:
                    self.send_header(name, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, name="search-proxy", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def verdict(self, path: str, authorization: str | None) -> int:
        """The status to refuse the request with; 0 to forward it."""
        refusal = self._refusal
        if refusal is not None and refusal[1] in path:
            return refusal[0]
        return 0 if authorization == self._expected else 401

    def refuse(self, status: int, path: str = "") -> None:
        self._refusal = (status, path)

    def allow(self) -> None:
        self._refusal = None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@contextlib.contextmanager
def running_server(command: list[str], env: dict[str, str], log_path: Path) -> Iterator[str]:
    """``panopticon <command>`` (a gunicorn component: api, ingest) on a free 127.0.0.1 port until the block ends;
    yields its ``host:port`` once /health answers 200."""
    port = free_port()
    with open(log_path, "wb") as log:
        process = subprocess.Popen([sys.executable, "-m", "panopticon", *command, "--bind", f"127.0.0.1:{port}"],
                                   env={**os.environ, **env}, cwd=ROOT, stdout=log, stderr=log)
    address = f"127.0.0.1:{port}"

    def healthy() -> bool:
        with contextlib.suppress(OSError):
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                connection.request("GET", "/health")
                if connection.getresponse().status == 200:
                    return True
            finally:
                connection.close()
        assert process.poll() is None, log_path.read_text()
        return False

    try:
        eventually(healthy, 30, f"panopticon {command[0]} to come up", interval_s=0.2)
        yield address
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


def consume(settings: Settings, topics: list[str], group: str, expected: int, timeout_s: float = 30.0) -> list[Any]:
    """Records of ``topics`` from the start, read by a new group, until ``expected`` came (or the time is up)."""
    consumer = Consumer(consumer_config(settings, group, "test-consume"))
    consumer.subscribe(topics)
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for message in consumer.consume(1000, 0.5):
                assert message.error() is None, message.error()
                out.append(message)
    finally:
        consumer.close()
    return out
