"""``panopticon ingest`` as deployed: the real server (gunicorn) over real HTTP, producing to the real local Kafka.

Every request is a real OTLP/HTTP request (protobuf bodies built with opentelemetry-proto, JSON bodies as OTLP/JSON
writes them); every record is read back from the topic it was produced to. The google.rpc.Status of the error
answers is decoded with a descriptor built here, independent of the receiver's own encoder.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, message_factory
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span

from panopticon.common.settings import Settings, load_settings
from panopticon.common.topics import create_topics
from panopticon.devtools.stack import free_port
from tests.harness import running_server

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[1]
PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
PARTITIONS = 2

Answer = tuple[int, dict[str, str], bytes]


# ---------------------------------------------------------------- the server, HTTP, Kafka

@contextlib.contextmanager
def running_ingest(env: dict[str, str], log_path: Path, threads: int = 4) -> Iterator[str]:
    """``panopticon ingest`` on a free 127.0.0.1 port until the block ends; yields its ``host:port`` once /health
    answers 200."""
    with running_server(["ingest", "--workers", "1", "--threads", str(threads)],
                        {"PROMETHEUS_MULTIPROC_DIR": "", **env}, log_path) as address:
        yield address


def request(base: str, method: str, path: str, body: bytes | None = None, headers: dict[str, str] | None = None,
            timeout: float = 15.0) -> Answer:
    """One request on its own keep-alive connection (no ``Connection: close``, as OTLP exporters send)."""
    host, port = base.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def post(base: str, path: str, body: bytes, headers: dict[str, str]) -> Answer:
    return request(base, "POST", path, body, headers)


def consume(settings: Settings, topic: str, expected: int, timeout_s: float = 20.0, idle_s: float = 1.0) -> list[Any]:
    """Every record of the topic from the beginning: waits for ``expected`` of them, then ``idle_s`` more for any
    extra one (a duplicate or a stray record must show)."""
    consumer = Consumer({"bootstrap.servers": settings.kafka_brokers, "group.id": f"ingest-test-{time.time_ns()}",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    records: list[Any] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and len(records) < expected:
            records += [m for m in consumer.consume(1000, 0.2) if m.error() is None]
        idle_until = time.monotonic() + idle_s
        while time.monotonic() < idle_until:
            records += [m for m in consumer.consume(1000, 0.2) if m.error() is None]
    finally:
        consumer.close()
    return records


@pytest.fixture
def kafka(settings_env: dict[str, str]) -> Settings:
    settings = load_settings(settings_env)
    create_topics(settings, PARTITIONS)
    return settings


# ---------------------------------------------------------------- OTLP bodies

def attributes(**values: str) -> list[KeyValue]:
    return [KeyValue(key=k.replace("_", "."), value=AnyValue(string_value=v)) for k, v in values.items()]


def make_span(trace: bytes, span: bytes, name: str, parent: bytes = b"", start_ns: int = 0, duration_ms: float = 12.5,
              exception: str | None = None) -> Span:
    start_ns = start_ns or time.time_ns() - 60_000_000_000
    result = Span(trace_id=trace, span_id=span, parent_span_id=parent, name=name, kind=Span.SPAN_KIND_SERVER,
                  start_time_unix_nano=start_ns, end_time_unix_nano=start_ns + int(duration_ms * 1e6),
                  attributes=attributes(http_request_method="GET", url_path="/api/orders/7"))
    if exception:
        result.events.add(name="exception", time_unix_nano=start_ns + 1000,
                          attributes=attributes(exception_type="ValueError", exception_message=exception))
        result.status.code = 2  # STATUS_CODE_ERROR
    return result


def traces_body(*groups: tuple[dict[str, str], list[Span]]) -> bytes:
    """An ExportTraceServiceRequest: one ResourceSpans per (resource attributes, spans)."""
    message = ExportTraceServiceRequest()
    for resource, spans in groups:
        resource_spans: ResourceSpans = message.resource_spans.add()
        resource_spans.resource.attributes.extend(attributes(**resource))
        scope = resource_spans.scope_spans.add()
        scope.scope.name = "tests"
        scope.spans.extend(spans)
    return bytes(message.SerializeToString())


def log_record_json(message: str | None, trace_hex: str = "", severity: int = 9) -> dict[str, Any]:
    record: dict[str, Any] = {"timeUnixNano": str(time.time_ns() - 30_000_000_000), "severityNumber": severity,
                              "attributes": [{"key": "http.route", "value": {"stringValue": "/x"}}]}
    if message is not None:
        record["body"] = {"stringValue": message}
    if trace_hex:
        record["traceId"], record["spanId"] = trace_hex, "00f067aa0ba902b7"
    return record


def logs_body_json(records: list[dict[str, Any]], service: str = "billing") -> bytes:
    return json.dumps({"resourceLogs": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}},
                                    {"key": "deployment.environment", "value": {"stringValue": "staging"}}]},
        "scopeLogs": [{"scope": {"name": "tests"}, "logRecords": records}]}]}).encode()


def status_class() -> Any:
    """google.rpc.Status (with google.rpc.BadRequest) from a descriptor declared here, in a private pool."""
    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(any_pb2.DESCRIPTOR.serialized_pb)
    file = descriptor_pb2.FileDescriptorProto(name="test_rpc_status.proto", package="google.rpc", syntax="proto3",
                                              dependency=["google/protobuf/any.proto"])
    field = descriptor_pb2.FieldDescriptorProto
    status = file.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    status.field.add(name="details", number=3, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                     type_name=".google.protobuf.Any")
    bad_request = file.message_type.add(name="BadRequest")
    violation = bad_request.nested_type.add(name="FieldViolation")
    violation.field.add(name="field", number=1, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    violation.field.add(name="description", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    bad_request.field.add(name="field_violations", number=1, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED,
                          type_name=".google.rpc.BadRequest.FieldViolation")
    pool.Add(file)
    return (message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")),
            message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.BadRequest")))


STATUS, BAD_REQUEST = status_class()


def proto_status(answer: Answer) -> Any:
    status, headers, body = answer
    assert headers["content-type"] == "application/x-protobuf", answer
    return STATUS.FromString(body)


def json_status(answer: Answer) -> dict[str, Any]:
    status, headers, body = answer
    assert headers["content-type"] == "application/json", answer
    document: dict[str, Any] = json.loads(body)
    assert isinstance(document.get("message"), str) and document["message"], document
    return document


TRACE_A, TRACE_B = bytes.fromhex("5b8efff798038103d269b633813fc60c"), bytes.fromhex("0af7651916cd43dd8448eb211c80319c")


# ---------------------------------------------------------------- tests

def test_protobuf_traces_become_span_and_exception_log_records(kafka: Settings, settings_env: dict[str, str],
                                                               tmp_path: Path) -> None:
    spans_a = [make_span(TRACE_A, b"\x01" * 8, "GET /api/orders/{id}"),
               make_span(TRACE_A, b"\x02" * 8, "SELECT orders", parent=b"\x01" * 8, exception="boom")]
    spans_b = [make_span(TRACE_B, b"\x03" * 8, "POST /api/pay"),
               make_span(TRACE_B, b"\x04" * 8, "", parent=b"\x03" * 8)]  # no name: rejected, its siblings kept
    body = traces_body(({"service_name": "checkout", "deployment_environment_name": "prod"}, spans_a),
                       ({"service_name": "payments"}, spans_b))
    env = {**settings_env, "OTLP_DEFAULT_ENVIRONMENT": "qa"}
    with running_ingest(env, tmp_path / "ingest.log") as base:
        status, headers, answer = post(base, "/v1/traces", body, PROTOBUF)
        assert status == 200, answer
        assert headers["content-type"] == "application/x-protobuf"
        response = ExportTraceServiceResponse.FromString(answer)
        assert response.HasField("partial_success")
        assert response.partial_success.rejected_spans == 1
        assert "name is empty" in response.partial_success.error_message
        status, headers, answer = post(base, "/v1/traces", traces_body(({}, [])), PROTOBUF)  # empty: a success
        assert status == 200 and not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")

    spans = consume(kafka, kafka.kafka_apm_span_topic, 3)
    events = {json.loads(m.value())["span_id"]: (m, json.loads(m.value())) for m in spans}
    assert len(spans) == 3 and set(events) == {"01" * 8, "02" * 8, "03" * 8}
    for message, event in events.values():
        assert message.key() == event["trace_id"].encode()
    _, root = events["01" * 8]
    assert (root["trace_id"], root["name"], root["service_name"], root["environment"], root["kind"]) == (
        TRACE_A.hex(), "GET /api/orders/{id}", "checkout", "prod", "SERVER")
    assert root["duration_ms"] == pytest.approx(12.5) and root["http_method"] == "GET"
    assert events["02" * 8][1]["parent_span_id"] == "01" * 8 and events["02" * 8][1]["status"] == "ERROR"
    assert events["03" * 8][1]["service_name"] == "payments" and events["03" * 8][1]["environment"] == "qa"
    assert events["01" * 8][0].partition() == events["02" * 8][0].partition()  # one trace, one partition

    logs = consume(kafka, kafka.kafka_apm_log_topic, 1)
    assert len(logs) == 1
    log = json.loads(logs[0].value())
    assert logs[0].key() == TRACE_A.hex().encode()
    assert (log["level"], log["message"], log["span_id"], log["service_name"]) == (
        "ERROR", "ValueError: boom", "02" * 8, "checkout")


def test_json_and_gzip_logs_with_concurrent_requests(kafka: Settings, settings_env: dict[str, str],
                                                    tmp_path: Path) -> None:
    trace_hex = "4BF92F3577B34DA6A3CE929D0E0E4736"  # OTLP/JSON ids are case-insensitive hex
    partial = logs_body_json([log_record_json("charged 12 EUR", trace_hex, severity=17),
                              log_record_json(None),  # no body: rejected, its siblings kept
                              log_record_json("no trace here")])
    clients, per_client = 6, 25
    with running_ingest(settings_env, tmp_path / "ingest.log", threads=3) as base:
        status, headers, answer = post(base, "/v1/logs", gzip.compress(partial),
                                       {**JSON, "Content-Encoding": "gzip"})
        assert status == 200, answer
        assert headers["content-type"] == "application/json"
        assert json.loads(answer)["partialSuccess"]["rejectedLogRecords"] in ("1", 1)
        assert "body is empty" in json.loads(answer)["partialSuccess"]["errorMessage"]

        answers: list[Answer] = []

        def client(n: int) -> None:
            records = [log_record_json(f"client {n} line {i}") for i in range(per_client)]
            answers.append(post(base, "/v1/logs", logs_body_json(records, service=f"svc-{n}"), JSON))

        threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert [a[0] for a in answers] == [200] * clients, answers
        assert all(json.loads(a[2]) == {} for a in answers)  # full success: partial_success unset

    records = consume(kafka, kafka.kafka_apm_log_topic, 2 + clients * per_client)
    assert len(records) == 2 + clients * per_client
    events = [json.loads(m.value()) for m in records]
    by_message = {e["message"]: (m, e) for m, e in zip(records, events, strict=True)}
    keyed, event = by_message["charged 12 EUR"]
    assert keyed.key() == trace_hex.lower().encode() and event["trace_id"] == trace_hex.lower()
    assert (event["level"], event["service_name"], event["environment"]) == ("ERROR", "billing", "staging")
    assert by_message["no trace here"][0].key() is None
    assert {e["message"] for e in events if e["service_name"] == "svc-3"} == {
        f"client 3 line {i}" for i in range(per_client)}


def test_refusals_are_otlp_status_answers_and_produce_nothing(kafka: Settings, settings_env: dict[str, str],
                                                              tmp_path: Path) -> None:
    limit = 64 * 1024
    env = {**settings_env, "INGEST_MAX_BODY_MB": str(limit / 1024 / 1024)}
    with running_ingest(env, tmp_path / "ingest.log") as base:
        answer = post(base, "/v1/traces", b"{}", {"Content-Type": "text/plain"})
        assert answer[0] == 415 and "application/x-protobuf" in json_status(answer)["message"]

        answer = post(base, "/v1/traces", b"\xff\xff\xff\xff", PROTOBUF)
        assert answer[0] == 400
        status = proto_status(answer)
        assert "ExportTraceServiceRequest" in status.message and status.code == 3
        assert len(status.details) == 1 and status.details[0].type_url.endswith("google.rpc.BadRequest")
        assert BAD_REQUEST.FromString(status.details[0].value).field_violations[0].description

        answer = post(base, "/v1/logs", b'{"resourceLogs": [', JSON)
        assert answer[0] == 400 and "ExportLogsServiceRequest" in json_status(answer)["message"]

        answer = post(base, "/v1/traces", b"\x0a" * (limit + 1), PROTOBUF)
        assert answer[0] == 413 and "INGEST_MAX_BODY_MB" in proto_status(answer).message
        assert "retry-after" not in answer[1]  # a 413 must not be retried

        bomb = gzip.compress(b"\x00" * (limit * 64))  # a few hundred bytes that inflate to 4 MiB
        assert len(bomb) < limit // 10
        answer = post(base, "/v1/traces", bomb, {**PROTOBUF, "Content-Encoding": "gzip"})
        assert answer[0] == 413 and "decompressed" in proto_status(answer).message

        answer = post(base, "/v1/traces", gzip.compress(traces_body())[:-12], {**PROTOBUF, "Content-Encoding": "gzip"})
        assert answer[0] == 400 and "gzip" in proto_status(answer).message
        answer = post(base, "/v1/traces", b"", {**PROTOBUF, "Content-Encoding": "br"})
        assert answer[0] == 415

        assert request(base, "GET", "/v1/traces")[0] == 405
        assert post(base, "/v1/metrics", b"", PROTOBUF)[0] == 404

        one = traces_body(({"service_name": "checkout"}, [make_span(TRACE_A, b"\x05" * 8, "GET /")]))
        assert post(base, "/v1/traces", one, PROTOBUF)[0] == 200

    assert len(consume(kafka, kafka.kafka_apm_span_topic, 1)) == 1  # only the last request's span


def test_auth_token_and_metrics(kafka: Settings, settings_env: dict[str, str], tmp_path: Path) -> None:
    token = "ingest-s3cret"
    body = traces_body(({"service_name": "checkout"}, [make_span(TRACE_A, b"\x06" * 8, "GET /", exception="x")]))
    with running_ingest({**settings_env, "API_AUTH_TOKEN": token}, tmp_path / "ingest.log") as base:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            answer = post(base, "/v1/traces", body, {**PROTOBUF, **headers})
            assert answer[0] == 401 and answer[1]["www-authenticate"] == "Bearer"
            assert "API_AUTH_TOKEN" in proto_status(answer).message
        assert post(base, "/v1/traces", body, {**PROTOBUF, "Authorization": f"Bearer {token}"})[0] == 200
        assert post(base, "/v1/traces", b"\xff", {**PROTOBUF, "Authorization": f"Bearer {token}"})[0] == 400
        status, _, text = request(base, "GET", "/metrics")  # open, as /health is
        assert status == 200
    lines = text.decode().splitlines()

    def value(prefix: str) -> float:
        found = [line for line in lines if line.startswith(prefix)]
        assert found, (prefix, text.decode())
        return sum(float(line.rsplit(" ", 1)[1]) for line in found)

    assert value('panopticon_ingest_requests_total{route="/v1/traces",status="200"}') == 1
    assert value('panopticon_ingest_requests_total{route="/v1/traces",status="401"}') == 2
    assert value('panopticon_ingest_requests_total{route="/v1/traces",status="400"}') == 1
    assert value("panopticon_ingest_spans_accepted_total") == 1
    assert value("panopticon_ingest_logs_accepted_total") == 1  # the span's exception event
    assert value('panopticon_ingest_request_duration_seconds_count{route="/v1/traces",status="200"}') == 1
    assert value('panopticon_ingest_request_body_bytes_sum{route="/v1/traces"}') >= len(body)
    assert len(consume(kafka, kafka.kafka_apm_span_topic, 1)) == 1


def test_kafka_unreachable_is_503_with_retry_after(tmp_path: Path) -> None:
    env = {"KAFKA_BROKERS": f"127.0.0.1:{free_port()}", "INGEST_PRODUCE_TIMEOUT_S": "1.5"}  # nothing listens there
    body = traces_body(({"service_name": "checkout"}, [make_span(TRACE_A, b"\x07" * 8, "GET /")]))
    with running_ingest(env, tmp_path / "ingest.log") as base:
        started = time.monotonic()
        answer = post(base, "/v1/traces", body, PROTOBUF)
        waited = time.monotonic() - started
        assert answer[0] == 503, answer
        assert int(answer[1]["retry-after"]) >= 1
        assert "Kafka" in proto_status(answer).message
        assert 1.0 <= waited < 6.0, waited

        started = time.monotonic()
        answer = post(base, "/v1/logs", logs_body_json([log_record_json("hello")]), JSON)
        assert answer[0] == 503 and int(answer[1]["retry-after"]) >= 1 and "Kafka" in json_status(answer)["message"]
        assert time.monotonic() - started < 1.0  # refused at once while Kafka is known down: no thread held
        assert request(base, "GET", "/health")[0] == 200
        status, _, text = request(base, "GET", "/metrics")
    assert 'panopticon_ingest_produce_failures_total{reason="recent_failure"} 1.0' in text.decode()
    assert "Kafka unreachable at KAFKA_BROKERS=" in (tmp_path / "ingest.log").read_text()


def test_port_in_use_names_ingest_port(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "panopticon", "ingest"], cwd=ROOT, capture_output=True,
                              text=True, timeout=30,
                              env={**os.environ, "INGEST_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": ""})
    assert done.returncode == 2, done
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "INGEST_PORT" in lines[0] and str(port) in lines[0], done.stderr
    assert "Traceback" not in done.stderr
