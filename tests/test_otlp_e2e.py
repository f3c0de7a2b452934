"""OpenTelemetry end to end, on the real local stack: what an instrumented service's OpenTelemetry Python SDK
(``opentelemetry-sdk`` with ``opentelemetry-exporter-otlp-proto-http``) exports to ``panopticon ingest`` is stored
by the engine and read back through ``panopticon api``; arbitrary bodies never make the receiver fail (hypothesis);
and a Kafka outage is answered 503 + Retry-After, after which every span the sender retried is stored exactly once.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from hypothesis import given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from opentelemetry._logs import SeverityNumber
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, ArrayValue, KeyValue, KeyValueList
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, Status, StatusCode, use_span

from panopticon.common.clock import format_timestamp
from panopticon.devtools.stack import LocalStack, kafka_answers, port_open
from tests import otlp_requests
from tests.harness import EngineProcess, Store, eventually, running_server, settings_with_topics

pytestmark = pytest.mark.integration

SERVICE = "checkout"
ENDPOINT = "GET /api/orders/{id}"
PROTOBUF = "application/x-protobuf"

Answer = tuple[int, dict[str, str], bytes]


# ---------------------------------------------------------------- HTTP

def post(address: str, path: str, body: bytes, headers: dict[str, str], timeout: float = 30.0) -> Answer:
    """One POST on its own connection, as an exporter sends it."""
    host, port = address.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        connection.request("POST", path, body=body, headers=headers)
        answer = connection.getresponse()
        return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
    finally:
        connection.close()


def query(api: str, path: str, **params: str) -> Any:
    """A query API answer (JSON); anything but 200 fails the test with the answer."""
    url = f"http://{api}{path}" + (f"?{urlencode(params)}" if params else "")
    with urllib.request.urlopen(url, timeout=15) as answer:
        assert answer.status == 200, (url, answer.status)
        return json.loads(answer.read())


def metric(ingest: str, name: str) -> float:
    host, port = ingest.split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request("GET", "/metrics")
        text = connection.getresponse().read().decode()
    finally:
        connection.close()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name))


@contextlib.contextmanager
def running_ingest(env: dict[str, str], log_path: Path) -> Iterator[str]:
    with running_server(["ingest", "--workers", "1", "--threads", "4"], env, log_path) as address:
        yield address


# ---------------------------------------------------------------- 1. the SDK -> receiver -> engine -> query API

def export_with_sdk(ingest: str) -> dict[str, ReadableSpan]:
    """Two requests of the service, as its instrumentation would record them: ``GET /api/orders/{id}`` (SERVER) calling
    the database (CLIENT); the second fails in the database with a recorded exception, and the service logs an
    ERROR inside its SERVER span; a WARN is logged outside any span. Everything goes through the SDK's batch processors
    and OTLP/HTTP exporters. Returns the SDK's spans by role (``server1``, ``client1``, ``server2``, ``client2``)."""
    resource = Resource.create({"service.name": SERVICE, "deployment.environment.name": "Prod",
                                "service.version": "1.4.2"})
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://{ingest}/v1/traces")))
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(
        endpoint=f"http://{ingest}/v1/logs")))
    tracer = tracer_provider.get_tracer("checkout.orders")
    logger = logger_provider.get_logger("checkout.orders")
    spans: dict[str, ReadableSpan] = {}
    for n, fails in ((1, False), (2, True)):
        server = tracer.start_span(ENDPOINT, kind=SpanKind.SERVER, attributes={
            "http.request.method": "GET", "url.path": f"/api/orders/{n}", "url.query": "expand=items",
            "http.route": "/api/orders/{id}", "http.response.status_code": 500 if fails else 200})
        with use_span(server, end_on_exit=True):
            time.sleep(0.01)
            client = tracer.start_span("SELECT orders", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"})
            with use_span(client, end_on_exit=True):
                time.sleep(0.02 * n)
                if fails:
                    client.record_exception(ValueError(f"order {n} not found"))
                    client.set_status(Status(StatusCode.ERROR, f"order {n} not found"))
            if fails:
                logger.emit(severity_number=SeverityNumber.ERROR, severity_text="ERROR",
                            body=f"order {n} could not be charged", attributes={"order.id": n})
                server.set_status(Status(StatusCode.ERROR))
        spans[f"server{n}"], spans[f"client{n}"] = server, client
    logger.emit(severity_number=SeverityNumber.WARN, body="payment provider slow")  # outside any span
    assert tracer_provider.force_flush(30_000) and logger_provider.force_flush(30_000)
    tracer_provider.shutdown()
    logger_provider.shutdown()
    return spans


def hex_ids(span: ReadableSpan) -> tuple[str, str]:
    assert span.context is not None
    return f"{span.context.trace_id:032x}", f"{span.context.span_id:016x}"


def expected_span(span: ReadableSpan, kind: str, status: str) -> dict[str, Any]:
    """The fields the API must answer for an SDK span: ids as the SDK's (hex), duration from its real times."""
    assert span.start_time is not None and span.end_time is not None
    trace_id, span_id = hex_ids(span)
    return {"trace_id": trace_id, "span_id": span_id,
            "parent_span_id": f"{span.parent.span_id:016x}" if span.parent else None,
            "name": span.name, "kind": kind, "status": status, "service_name": SERVICE,
            "environment": "production", "timestamp": format_timestamp(span.start_time // 1_000_000),
            "duration_ms": pytest.approx((span.end_time - span.start_time) / 1e6, abs=1e-6)}


def assert_fields(item: dict[str, Any], expected: dict[str, Any]) -> None:
    assert {key: item.get(key) for key in expected} == expected, item


def test_sdk_spans_and_logs_are_queryable_with_red_numbers(settings_env: dict[str, str], unique: str,
                                                           engines: list[EngineProcess], tmp_path: Path) -> None:
    env = {**settings_env, "ENGINE_INSTANCE_ID": unique, "BULK_FLUSH_INTERVAL_MS": "200",
           "ROLLUP_FLUSH_INTERVAL_MS": "500", "ROLLUP_GRACE_MS": "0", "PROMETHEUS_MULTIPROC_DIR": ""}
    settings_with_topics(env)
    engines.append(EngineProcess(env, tmp_path / "engine.log").start())
    with running_ingest(env, tmp_path / "ingest.log") as ingest, \
            running_server(["api", "--workers", "1", "--threads", "2"], env, tmp_path / "api.log") as api:
        spans = export_with_sdk(ingest)
        assert metric(ingest, "panopticon_ingest_spans_accepted_total") == 4  # every export was answered 200
        assert metric(ingest, "panopticon_ingest_logs_accepted_total") == 3  # 2 log records + 1 exception event
        eventually(lambda: stored(api, spans=4, logs=3), 60,
                   lambda: f"4 spans and 3 logs in the query API; engine: {engines[0].log()[-2000:]}", interval_s=0.5)
        check_failed_trace(query(api, f"/query/traces/{hex_ids(spans['server2'])[0]}"), spans)
        check_span_search(api, spans)
        check_logs(api, spans)
        check_red_numbers(api, spans)


def stored(api: str, spans: int, logs: int) -> bool:
    """The service's spans and logs are all searchable (the SDK sent them in one request each, but the records of
    different traces travel through different partitions)."""
    return (query(api, "/query/spans", service_name=SERVICE)["total"] >= spans
            and query(api, "/query/logs", service_name=SERVICE)["total"] >= logs)


def check_failed_trace(detail: dict[str, Any], spans: dict[str, ReadableSpan]) -> None:
    by_id = {item["span_id"]: item for item in detail["spans"]}
    server, client = by_id[hex_ids(spans["server2"])[1]], by_id[hex_ids(spans["client2"])[1]]
    assert len(detail["spans"]) == 2 and not detail["truncated"]
    assert_fields(server, expected_span(spans["server2"], "SERVER", "ERROR"))
    assert (server["http_method"], server["http_path"], server["http_status_code"]) == ("GET", "/api/orders/2", 500)
    assert server["labels"]["http.route"] == "/api/orders/{id}" and server["labels"]["url.query"] == "expand=items"
    assert server["labels"]["otel.scope.name"] == "checkout.orders"
    assert server["labels"]["service.version"] == "1.4.2"  # a resource attribute
    assert_fields(client, expected_span(spans["client2"], "CLIENT", "ERROR"))
    assert client["labels"]["otel.status_description"] == "order 2 not found"
    assert "http_method" not in client and client["labels"]["db.system"] == "postgresql"
    logs = {item["message"]: item for item in detail["logs"]}
    assert set(logs) == {"order 2 could not be charged", "ValueError: order 2 not found"}, logs


def check_span_search(api: str, spans: dict[str, ReadableSpan]) -> None:
    clients = query(api, "/query/spans", service_name=SERVICE, environment="PROD", kind="client",
                    sort="start_time_asc")
    assert clients["total"] == 2
    for item, name in zip(clients["items"], ("client1", "client2"), strict=True):
        assert_fields(item, expected_span(spans[name], "CLIENT", "OK" if name == "client1" else "ERROR"))
    ok = query(api, "/query/spans", service_name=SERVICE, status="OK", kind="SERVER")
    (root,) = ok["items"]
    assert_fields(root, expected_span(spans["server1"], "SERVER", "OK"))
    assert (root["http_method"], root["http_path"], root["http_status_code"]) == ("GET", "/api/orders/1", 200)


def check_logs(api: str, spans: dict[str, ReadableSpan]) -> None:
    errors = query(api, "/query/logs", service_name=SERVICE, environment="production", level="error",
                   sort="asc")
    assert errors["total"] == 2, errors
    by_message = {item["message"]: item for item in errors["items"]}
    trace_id, client_id = hex_ids(spans["client2"])
    exception = by_message["ValueError: order 2 not found"]  # the SDK's record_exception, as an ERROR log
    assert (exception["level"], exception["trace_id"], exception["span_id"]) == ("ERROR", trace_id, client_id)
    assert exception["environment"] == "production" and exception["service_name"] == SERVICE
    assert "ValueError" in exception["labels"]["exception.stacktrace"]
    logged = by_message["order 2 could not be charged"]  # emitted inside the SERVER span: its ids
    assert (logged["level"], logged["trace_id"], logged["span_id"]) == ("ERROR", *hex_ids(spans["server2"]))
    assert logged["labels"]["order.id"] == 2
    warning = query(api, "/query/logs", service_name=SERVICE, level="WARN")
    (item,) = warning["items"]
    assert item["message"] == "payment provider slow" and item["trace_id"] is None and item["span_id"] is None


def check_red_numbers(api: str, spans: dict[str, ReadableSpan]) -> None:
    """Two SERVER spans (one failed) of one endpoint: CLIENT spans are not requests."""
    slowest = max((s.end_time or 0) - (s.start_time or 0) for s in (spans["server1"], spans["server2"])) / 1e6

    def services() -> list[dict[str, Any]] | None:
        rows = [r for r in query(api, "/query/services", environment="prod")["services"]
                if r["service_name"] == SERVICE]
        return rows if rows and rows[0]["request_count"] >= 2 else None

    def endpoints() -> list[dict[str, Any]] | None:
        rows = query(api, f"/query/services/{quote(SERVICE, safe='')}/endpoints", environment="production")
        return rows["endpoints"] if rows["endpoints"] and rows["endpoints"][0]["request_count"] >= 2 else None

    (row,) = eventually(services, 60, "the RED numbers of the service", interval_s=1.0)
    assert (row["environment"], row["request_count"], row["error_rate"]) == ("production", 2, 0.5)
    assert row["latency_p95_ms"] == pytest.approx(slowest, rel=0.01)  # nearest rank of 2: the slower
    (endpoint,) = eventually(endpoints, 30, "the RED numbers of the endpoint", interval_s=1.0)
    assert (endpoint["endpoint_name"], endpoint["request_count"], endpoint["error_rate"]) == (ENDPOINT, 2, 0.5)
    assert endpoint["environment"] == "production"


# ---------------------------------------------------------------- 2. arbitrary bodies: 200 or 4xx, never 5xx

@pytest.fixture(scope="module")
def fuzz_receiver(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    name = f"fuzz{os.getpid()}"
    env = {**stack.env(), "KAFKA_APM_SPAN_TOPIC": f"{name}.spans", "KAFKA_APM_LOG_TOPIC": f"{name}.logs",
           "KAFKA_APM_LOG_ERROR_TOPIC": f"{name}.logs.error", "KAFKA_APM_DLQ_TOPIC": f"{name}.dlq",
           "PROMETHEUS_MULTIPROC_DIR": ""}
    settings_with_topics(env, partitions=1)
    log_path = tmp_path_factory.mktemp("fuzz") / "ingest.log"
    with running_ingest(env, log_path) as address:
        yield address, log_path


TEXT = st.text(st.characters(exclude_categories=["Cs"]), max_size=12)  # protobuf strings are valid UTF-8
SCALAR = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
          | st.sampled_from(["", "0" * 32, "AAAAAAAAAAA=", "NaN", "-Infinity", "18446744073709551616", "\ud800",
                             "SPAN_KIND_SERVER", "STATUS_CODE_ERROR", "SEVERITY_NUMBER_FATAL", "?q=1"]))
ANY_JSON = st.recursive(SCALAR, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
                        max_leaves=20)
HTTP_KEYS = st.sampled_from(["http.request.method", "http.method", "url.path", "http.target",
                             "http.response.status_code", "http.status_code", "exception.type", "exception.message"])
NOW_NS = time.time_ns()
NANOS = st.integers(NOW_NS - 10**12, NOW_NS + 10**12) | st.integers(0, 2**64 - 1)


def mostly(plausible: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A plausible value three times in four, else an arbitrary JSON scalar."""
    return st.integers(0, 3).flatmap(lambda n: plausible if n else SCALAR)


def json_any_value() -> st.SearchStrategy[Any]:
    leaf = st.dictionaries(st.sampled_from(["stringValue", "intValue", "doubleValue", "boolValue", "bytesValue"]),
                           SCALAR, min_size=1, max_size=2) | st.builds(lambda text: {"stringValue": text}, TEXT)
    return mostly(st.recursive(leaf, lambda inner: st.fixed_dictionaries({}, optional={
        "arrayValue": st.fixed_dictionaries({"values": st.lists(inner, max_size=3)}),
        "kvlistValue": st.fixed_dictionaries({"values": st.lists(
            st.fixed_dictionaries({"key": TEXT, "value": inner}), max_size=3)})}), max_leaves=8))


def json_attributes() -> st.SearchStrategy[Any]:
    return mostly(st.lists(st.fixed_dictionaries({"key": mostly(HTTP_KEYS | TEXT), "value": json_any_value()}),
                           max_size=4))


def json_item(signal: str) -> st.SearchStrategy[Any]:
    """A span or log record of OTLP/JSON: the fields it needs, mostly plausible, some optional ones; or anything."""
    hex16, hex8 = (st.binary(min_size=n, max_size=n).map(bytes.hex) for n in (16, 8))
    nanos = NANOS | NANOS.map(str)  # int64 as a JSON number or a decimal string
    if signal == "traces":
        required = {"traceId": mostly(hex16), "spanId": mostly(hex8), "name": mostly(TEXT),
                    "startTimeUnixNano": mostly(nanos), "endTimeUnixNano": mostly(nanos)}
        optional = {"parentSpanId": mostly(hex8), "kind": mostly(st.integers(0, 6)), "attributes": json_attributes(),
                    "status": mostly(st.fixed_dictionaries({}, optional={"code": mostly(st.integers(0, 2)),
                                                                         "message": SCALAR})),
                    "events": mostly(st.lists(st.fixed_dictionaries({
                        "name": mostly(st.just("exception")), "timeUnixNano": mostly(nanos),
                        "attributes": json_attributes()}), max_size=2))}
    else:
        required = {"body": json_any_value(), "timeUnixNano": mostly(nanos)}
        optional = {"observedTimeUnixNano": mostly(nanos), "severityNumber": mostly(st.integers(0, 24)),
                    "severityText": SCALAR, "attributes": json_attributes(), "traceId": mostly(hex16),
                    "spanId": mostly(hex8)}
    return mostly(st.fixed_dictionaries(required, optional=optional)) | ANY_JSON


def otlp_json(signal: str) -> st.SearchStrategy[bytes]:
    """An OTLP/JSON export request, some of its parts arbitrary."""
    top, scopes, items = (("resourceSpans", "scopeSpans", "spans") if signal == "traces"
                          else ("resourceLogs", "scopeLogs", "logRecords"))
    scope = st.fixed_dictionaries({items: mostly(st.lists(json_item(signal), max_size=3))}, optional={
        "scope": mostly(st.fixed_dictionaries({"name": mostly(TEXT)}))})
    resource = st.fixed_dictionaries({scopes: mostly(st.lists(scope, min_size=1, max_size=2))}, optional={
        "resource": mostly(st.fixed_dictionaries({"attributes": mostly(st.lists(st.fixed_dictionaries({
            "key": st.sampled_from(["service.name", "deployment.environment.name", "deployment.environment", "x"]),
            "value": json_any_value()}), max_size=3))}))})
    document = st.fixed_dictionaries({top: mostly(st.lists(resource, min_size=1, max_size=2))})
    return document.map(lambda d: json.dumps(d).encode())


def proto_any_value() -> st.SearchStrategy[AnyValue]:
    leaf = st.one_of(st.builds(AnyValue, string_value=TEXT), st.builds(AnyValue, int_value=st.integers(-(2**63),
                                                                                                     2**63 - 1)),
                     st.builds(AnyValue, double_value=st.floats()), st.builds(AnyValue, bool_value=st.booleans()),
                     st.builds(AnyValue, bytes_value=st.binary(max_size=8)), st.just(AnyValue()))
    return st.recursive(leaf, lambda inner: st.builds(lambda values: AnyValue(array_value=ArrayValue(values=values)),
                                                      st.lists(inner, max_size=3))
                        | st.builds(lambda kvs: AnyValue(kvlist_value=KeyValueList(values=kvs)),
                                    st.lists(st.builds(KeyValue, key=TEXT, value=inner), max_size=3)), max_leaves=6)


PROTO_ATTRIBUTES = st.lists(st.builds(KeyValue, key=HTTP_KEYS | TEXT, value=proto_any_value()), max_size=4)


def proto_id(size: int) -> st.SearchStrategy[bytes]:
    """Mostly an id of the right size; else any short bytes (empty, zeros, a byte too many)."""
    return st.integers(0, 3).flatmap(lambda n: st.binary(min_size=size, max_size=size) if n
                                     else st.binary(max_size=size + 1))


def proto_traces() -> st.SearchStrategy[bytes]:
    span = st.builds(Span, trace_id=proto_id(16), span_id=proto_id(8), parent_span_id=proto_id(8), name=TEXT,
                     kind=st.integers(0, 9), start_time_unix_nano=NANOS, end_time_unix_nano=NANOS,
                     attributes=PROTO_ATTRIBUTES,
                     events=st.lists(st.builds(Span.Event, name=st.sampled_from(["exception", ""]),
                                               time_unix_nano=NANOS, attributes=PROTO_ATTRIBUTES), max_size=2))

    def request(spans: list[Span], resource: list[KeyValue], code: int) -> bytes:
        message = ExportTraceServiceRequest()
        group = message.resource_spans.add()
        group.resource.attributes.extend(resource)
        for item in spans:
            item.status.code = code  # an enum value out of range is still wire-valid
        group.scope_spans.add().spans.extend(spans)
        return bytes(message.SerializeToString())

    return st.builds(request, st.lists(span, max_size=3), PROTO_ATTRIBUTES, st.integers(0, 5))


def proto_logs() -> st.SearchStrategy[bytes]:
    record = st.builds(LogRecord, time_unix_nano=NANOS, observed_time_unix_nano=NANOS,
                       severity_number=st.integers(0, 30), severity_text=TEXT, body=proto_any_value(),
                       attributes=PROTO_ATTRIBUTES, trace_id=proto_id(16), span_id=proto_id(8))

    def request(records: list[LogRecord], resource: list[KeyValue]) -> bytes:
        message = ExportLogsServiceRequest()
        group = message.resource_logs.add()
        group.resource.attributes.extend(resource)
        group.scope_logs.add().log_records.extend(records)
        return bytes(message.SerializeToString())

    return st.builds(request, st.lists(record, max_size=3), PROTO_ATTRIBUTES)


VALID = {"traces": otlp_requests.traces(0, 3).SerializeToString(),
         "logs": otlp_requests.logs(0, 3).SerializeToString()}


@st.composite
def damaged(draw: st.DrawFn, body: st.SearchStrategy[bytes]) -> bytes:
    """A body cut short, or with a few bytes changed."""
    data = bytearray(draw(body))
    if not data:
        return b""
    if draw(st.booleans()):
        return bytes(data[:draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 4))):
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


def bodies(signal: str) -> st.SearchStrategy[tuple[str, bytes]]:
    """(the body's own media type, the body): random bytes, random JSON, OTLP/JSON and protobuf requests with
    arbitrary parts, and damaged (truncated or altered) ones."""
    proto = proto_traces() if signal == "traces" else proto_logs()
    json_body = otlp_json(signal) | ANY_JSON.map(lambda v: json.dumps(v).encode())
    return st.one_of(st.tuples(st.just(PROTOBUF), proto | damaged(proto | st.just(VALID[signal])) | st.binary()),
                     st.tuples(st.just("application/json"), json_body | damaged(json_body)))


@st.composite
def requests(draw: st.DrawFn, signal: str) -> tuple[bytes, dict[str, str]]:
    """A body, mostly with its own Content-Type (else another OTLP one), plain or gzip (whole, damaged, or only
    claimed)."""
    media, body = draw(bodies(signal))
    other = st.sampled_from([PROTOBUF, "application/json", "application/json; charset=utf-8",
                             "Application/X-Protobuf"])
    headers = {"Content-Type": draw(st.integers(0, 3).flatmap(lambda n: st.just(media) if n else other))}
    coding = draw(st.sampled_from(["none", "none", "gzip", "gzip-damaged", "gzip-claimed"]))
    if coding != "none":
        headers["Content-Encoding"] = "gzip"
    if coding == "gzip":
        body = gzip.compress(body)
    elif coding == "gzip-damaged":
        body = draw(damaged(st.just(gzip.compress(body))))
    return body, headers


@pytest.mark.parametrize("signal", ["traces", "logs"])
def test_arbitrary_bodies_are_200_or_4xx_never_5xx(fuzz_receiver: tuple[str, Path], signal: str) -> None:
    address, log_path = fuzz_receiver
    logged_before = len(log_path.read_bytes())
    response = ExportTraceServiceResponse if signal == "traces" else ExportLogsServiceResponse

    @hypothesis_settings(max_examples=150, deadline=None)
    @given(request=requests(signal))
    def answers(request: tuple[bytes, dict[str, str]]) -> None:
        body, headers = request
        status, answer_headers, answer = post(address, f"/v1/{signal}", body, headers)
        assert status == 200 or 400 <= status < 500, (status, answer[:300])
        if status == 200:  # a valid request: a well-formed answer in its own encoding
            if answer_headers["content-type"] == PROTOBUF:
                response.FromString(answer)
            else:
                assert isinstance(json.loads(answer), dict)
        else:
            assert answer, status  # a google.rpc.Status says why

    answers()
    assert b"unhandled error" not in log_path.read_bytes()[logged_before:]  # a 500 is also logged, with its stack


# ---------------------------------------------------------------- 3. Kafka stopped: 503 + Retry-After, then all once

SENDERS, BATCHES, TRACES_PER_BATCH = 3, 4, 5  # each trace: a SERVER span and its CLIENT child
OUTAGE_S = 10.0
RETRY_DEADLINE_S = 150.0


def sdk_batches(service: str, count: int) -> list[list[ReadableSpan]]:
    """``count`` export batches of real SDK spans of one service (kept in memory, encoded by the SDK's encoder)."""
    memory = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": service,
                                                        "deployment.environment.name": "staging"}))
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("tests.outage")
    for n in range(count * TRACES_PER_BATCH):
        with tracer.start_as_current_span(f"GET /items/{n % 3}", kind=SpanKind.SERVER,
                                          attributes={"http.request.method": "GET"}):
            with tracer.start_as_current_span("SELECT items", kind=SpanKind.CLIENT):
                pass
    spans = list(memory.get_finished_spans())
    provider.shutdown()
    per_batch = 2 * TRACES_PER_BATCH
    return [spans[i:i + per_batch] for i in range(0, len(spans), per_batch)]


class Sender(threading.Thread):
    """Posts each batch until it is answered 200, honouring Retry-After on 429/503 (and retrying a refused
    connection after 1 s), as an OTLP exporter does, but without giving up before RETRY_DEADLINE_S: the SDK's
    own exporter stops after 6 attempts, which a stopped broker's restart can outlast."""

    def __init__(self, address: str, batches: list[list[ReadableSpan]]) -> None:
        super().__init__(name="otlp-sender", daemon=True)
        self.address = address
        self.batches = batches
        self.answers: list[tuple[int, str | None]] = []  # (status, Retry-After) of every answer
        self.failure: BaseException | None = None

    def run(self) -> None:
        try:
            deadline = time.monotonic() + RETRY_DEADLINE_S
            for batch in self.batches:
                self.send(encode_spans(batch).SerializeToString(), deadline)
                time.sleep(0.5)
        except BaseException as exc:  # reported by the test's thread
            self.failure = exc

    def send(self, body: bytes, deadline: float) -> None:
        while True:
            try:
                status, headers, answer = post(self.address, "/v1/traces", body, {"Content-Type": PROTOBUF})
            except OSError:
                status, headers, answer = 0, {}, b""
            self.answers.append((status, headers.get("retry-after")))
            if status == 200:
                assert not ExportTraceServiceResponse.FromString(answer).HasField("partial_success")
                return
            assert status in (0, 429, 503), (status, answer[:300])
            assert time.monotonic() < deadline, f"still refused after {RETRY_DEADLINE_S:g} s: {self.answers[-5:]}"
            time.sleep(float(headers.get("retry-after") or 1))


def test_kafka_outage_is_503_with_retry_after_then_every_span_stored_once(
        stack: LocalStack, settings_env: dict[str, str], unique: str, engines: list[EngineProcess],
        tmp_path: Path) -> None:
    env = {**settings_env, "ENGINE_INSTANCE_ID": unique, "BULK_FLUSH_INTERVAL_MS": "200",
           "INGEST_PRODUCE_TIMEOUT_S": "2", "PROMETHEUS_MULTIPROC_DIR": ""}
    settings = settings_with_topics(env)
    engine = EngineProcess(env, tmp_path / "engine.log").start()
    engines.append(engine)
    before = sdk_batches("svc-before", 1)[0]
    with running_ingest(env, tmp_path / "ingest.log") as ingest:
        status, _, answer = post(ingest, "/v1/traces", encode_spans(before).SerializeToString(),
                                 {"Content-Type": PROTOBUF})
        assert status == 200, answer
        senders = [Sender(ingest, sdk_batches(f"svc-{n}", BATCHES)) for n in range(SENDERS)]
        during = outage(stack, senders)
        assert during and {status for status, _ in during} == {503}, during  # nothing accepted while Kafka is down
        for sender in senders:
            sender.join(RETRY_DEADLINE_S + 30)
        assert [s.failure for s in senders] == [None] * SENDERS, (tmp_path / "ingest.log").read_text()[-3000:]

    answers = [a for s in senders for a in s.answers]
    refused = [retry_after for status, retry_after in answers if status == 503]
    assert all(retry_after is not None and int(retry_after) >= 1 for retry_after in refused), refused
    assert {status for status, _ in answers} <= {200, 503}, answers  # no refused connection, no other status
    assert sum(1 for status, _ in answers if status == 200) == SENDERS * BATCHES

    sent = Counter(hex_ids(span) for span in [*before, *(span for s in senders for b in s.batches for span in b)])
    assert set(sent.values()) == {1} and len(sent) == (SENDERS * BATCHES + 1) * 2 * TRACES_PER_BATCH
    store = Store(settings)
    found = store.wait_for("traces-apm", len(sent), timeout_s=120)
    assert found == len(sent), engine.log()[-3000:]
    assert stored_ids(store) == sent  # every span once, by its ids
    assert engine.process is not None and engine.process.poll() is None, "the engine died during the outage"


def outage(stack: LocalStack, senders: list[Sender]) -> list[tuple[int, str | None]]:
    """Stop Kafka, start the senders, keep Kafka down for OUTAGE_S (until the senders saw 503s), then start it again
    (in any case: the session's stack is shared by every test). Returns the answers given while it was down."""
    stack.stop_kafka()
    stopped = time.monotonic()
    try:
        assert not port_open(stack.kafka_port)
        for sender in senders:
            sender.start()
        eventually(lambda: sum(1 for s in senders for status, _ in s.answers if status == 503) >= SENDERS, 30,
                   "503 answers while Kafka is stopped", interval_s=0.2)
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        during = [a for s in senders for a in list(s.answers)]
    finally:
        stack.start_kafka()
    assert kafka_answers(stack.kafka_port)
    return during


def stored_ids(store: Store) -> Counter[tuple[str, str]]:
    pattern = f"{store.prefix}traces-apm-*"
    store.client.indices.refresh(index=pattern)
    hits = store.client.search(index=pattern, body={"size": 10_000, "_source": ["trace_id", "span_id"]})
    return Counter((h["_source"]["trace_id"], h["_source"]["span_id"]) for h in hits["hits"]["hits"])
