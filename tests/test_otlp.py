"""OTLP export requests -> contract events: both encodings give the same events, every mapping rule, rejects, and
every produced event is one the engine's refiner accepts."""

from __future__ import annotations

import base64
import inspect
import sys
from typing import Any

import msgspec
import pytest
from google.protobuf.json_format import MessageToDict
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (
    AnyValue,
    ArrayValue,
    InstrumentationScope,
    KeyValue,
    KeyValueList,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from panopticon.common import otlp
from panopticon.common.normalize import Refiner, split
from panopticon.common.schema import LogDoc, SpanDoc
from panopticon.common.wire import LogEvent, SpanEvent

NOW = 1_795_773_601_000
START = 1_795_773_600_123_456_789  # ns: 2026-11-27T10:00:00.123456789Z
TRACE = bytes(range(1, 17))
SPAN = bytes(range(21, 29))
PARENT = bytes(range(31, 39))
Request = ExportTraceServiceRequest | ExportLogsServiceRequest


# ---------------------------------------------------------------- building requests

def value(raw: Any) -> AnyValue:
    if isinstance(raw, AnyValue):
        return raw
    if isinstance(raw, bool):
        return AnyValue(bool_value=raw)
    if isinstance(raw, int):
        return AnyValue(int_value=raw)
    if isinstance(raw, float):
        return AnyValue(double_value=raw)
    if isinstance(raw, bytes):
        return AnyValue(bytes_value=raw)
    if isinstance(raw, list):
        return AnyValue(array_value=ArrayValue(values=[value(v) for v in raw]))
    if isinstance(raw, dict):
        return AnyValue(kvlist_value=KeyValueList(values=attrs(raw)))
    return AnyValue(string_value=raw)


def attrs(values: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=key, value=value(raw)) for key, raw in values.items()]


def resource(**values: Any) -> Resource:
    return Resource(attributes=attrs({key.replace("__", "."): raw for key, raw in values.items()}))


DEFAULT_RESOURCE = {"service.name": "cart", "deployment.environment.name": "prod"}


def span(**fields: Any) -> Span:
    defaults: dict[str, Any] = {"trace_id": TRACE, "span_id": SPAN, "name": "GET /cart", "kind": Span.SPAN_KIND_SERVER,
                                "start_time_unix_nano": START, "end_time_unix_nano": START + 1_500_000}
    defaults.update(fields)
    if isinstance(defaults.get("attributes"), dict):
        defaults["attributes"] = attrs(defaults["attributes"])
    return Span(**defaults)


def traces(*spans: Span, res: dict[str, Any] | None = None, scope: str = "") -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource=Resource(attributes=attrs(DEFAULT_RESOURCE if res is None else res)),
        scope_spans=[ScopeSpans(scope=InstrumentationScope(name=scope), spans=list(spans))])])


def record(**fields: Any) -> LogRecord:
    defaults: dict[str, Any] = {"time_unix_nano": START, "severity_number": 9, "body": value("hello")}
    defaults.update(fields)
    if isinstance(defaults.get("attributes"), dict):
        defaults["attributes"] = attrs(defaults["attributes"])
    return LogRecord(**defaults)


def logs(*records: LogRecord, res: dict[str, Any] | None = None, scope: str = "") -> ExportLogsServiceRequest:
    return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
        resource=Resource(attributes=attrs(DEFAULT_RESOURCE if res is None else res)),
        scope_logs=[ScopeLogs(scope=InstrumentationScope(name=scope), log_records=list(records))])])


def to_json(request: Request, *, snake: bool = False, enum_names: bool = False) -> bytes:
    """OTLP/JSON: the protobuf JSON mapping with ids as hex (not base64), as the OTLP specification has it.
    ``snake``: the proto's field names; ``enum_names``: enums by name (receivers accept both)."""
    ids = {"trace_id", "span_id", "parent_span_id"} if snake else {"traceId", "spanId", "parentSpanId"}

    def hex_ids(data: Any) -> Any:
        if isinstance(data, dict):
            return {k: base64.b64decode(v).hex() if k in ids else hex_ids(v) for k, v in data.items()}
        if isinstance(data, list):
            return [hex_ids(v) for v in data]
        return data

    data = MessageToDict(request, preserving_proto_field_name=snake, use_integers_for_enums=not enum_names)
    return msgspec.json.encode(hex_ids(data))


def convert(request: Request, encoding: otlp.Encoding = "proto", env: str = "fallback") -> otlp.Converted:
    body = request.SerializeToString() if encoding == "proto" else to_json(request)
    if isinstance(request, ExportTraceServiceRequest):
        return otlp.convert_traces(body, encoding, env)
    return otlp.convert_logs(body, encoding, env)


def all_encodings(request: Request, env: str = "fallback") -> otlp.Converted:
    """The conversion of ``request``, after checking that every encoding of it converts the same."""
    trace = isinstance(request, ExportTraceServiceRequest)
    fn = otlp.convert_traces if trace else otlp.convert_logs
    proto = fn(request.SerializeToString(), "proto", env)
    for body in (to_json(request), to_json(request, snake=True, enum_names=True), to_json(request, enum_names=True)):
        assert otlp.sniff(body) == "json"
        assert fn(body, "json", env) == proto
    assert otlp.sniff(request.SerializeToString()) == "proto"
    return proto


def one_span(*spans: Span, **kw: Any) -> dict[str, Any]:
    out = all_encodings(traces(*spans, **kw))
    assert out.rejected == 0, out.reasons
    (event,) = out.spans
    return event


def one_log(*records: LogRecord, **kw: Any) -> dict[str, Any]:
    out = all_encodings(logs(*records, **kw))
    assert out.rejected == 0, out.reasons
    (event,) = out.logs
    return event


# ---------------------------------------------------------------- the engine accepts what comes out

def refine_span(event: dict[str, Any]) -> SpanDoc:
    typed, extra = split(event, SpanEvent)  # as engine/decode.py's _untyped
    assert extra is None, f"keys outside the contract: {extra}"
    refined = Refiner().span_event(typed, extra, NOW, NOW)
    assert isinstance(refined.doc, SpanDoc) and refined.dropped_keys == 0
    return refined.doc


def refine_log(event: dict[str, Any]) -> LogDoc:
    typed, extra = split(event, LogEvent)
    assert extra is None, f"keys outside the contract: {extra}"
    refined = Refiner().log_event(typed, extra, NOW, NOW)
    assert isinstance(refined.doc, LogDoc) and refined.dropped_keys == 0
    return refined.doc


def assert_refinable(out: otlp.Converted) -> None:
    """Every event is a valid contract event, and the refiner keeps its labels as they are (bounds respected)."""
    for event in out.spans:
        doc = refine_span(event)
        assert len(doc.labels) == len(event.get("labels", {}))
        assert not doc.timestamp_defaulted or event["timestamp"] > 253_402_300_799_999
    for event in out.logs:
        doc = refine_log(event)
        assert len(doc.labels) == len(event.get("labels", {}))
    assert len(out.reasons) == min(out.rejected, otlp.MAX_REASONS)
    assert all(reason and "\n" not in reason for reason in out.reasons)


# ---------------------------------------------------------------- properties: encodings agree, events are valid

keys = st.sampled_from(["http.method", "http.request.method", "url.path", "http.target", "http.status_code",
                        "http.response.status_code", "service.name", "deployment.environment",
                        "deployment.environment.name", "exception.type", "exception.message", "otel.scope.name"]) | \
    st.text(alphabet="abxyz._-", min_size=1, max_size=6)
scalars = (st.text(max_size=300) | st.sampled_from(["GET", "/a?b=1", "200", " 404", "abc", "", " "]) | st.booleans()
           | st.integers(-(2**63), 2**63 - 1) | st.sampled_from([200, 1000, -1]) | st.floats() | st.binary(max_size=12))
raw_values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
attributes = st.dictionaries(keys, raw_values | st.just(AnyValue()), max_size=12)
ids16 = st.binary(min_size=16, max_size=16) | st.just(bytes(16)) | st.binary(max_size=20)
ids8 = st.binary(min_size=8, max_size=8) | st.just(bytes(8)) | st.binary(max_size=10)
nanos = st.integers(0, 2**64 - 1) | st.integers(START - 10**9, START + 10**9)
events = st.builds(Span.Event, name=st.sampled_from(["exception", "log", ""]), time_unix_nano=nanos,
                   attributes=attributes.map(attrs))
spans = st.builds(Span, trace_id=ids16, span_id=ids8, parent_span_id=st.just(b"") | ids8,
                  name=st.text(max_size=8), kind=st.integers(0, 7), start_time_unix_nano=nanos,
                  end_time_unix_nano=nanos, attributes=attributes.map(attrs), events=st.lists(events, max_size=2),
                  status=st.builds(Status, code=st.integers(0, 3), message=st.text(max_size=5)))
resources = attributes.map(lambda a: Resource(attributes=attrs(a)))
scopes = st.builds(InstrumentationScope, name=st.text(max_size=5))
trace_requests = st.builds(ExportTraceServiceRequest, resource_spans=st.lists(st.builds(
    ResourceSpans, resource=resources, scope_spans=st.lists(st.builds(
        ScopeSpans, scope=scopes, spans=st.lists(spans, max_size=4)), max_size=2)), max_size=2))
records = st.builds(LogRecord, time_unix_nano=nanos, observed_time_unix_nano=nanos, severity_number=st.integers(0, 30),
                    severity_text=st.sampled_from(["", "warning", "Critical", "ERROR", "notice"]),
                    body=(raw_values | st.just(AnyValue())).map(value), attributes=attributes.map(attrs),
                    trace_id=ids16, span_id=ids8)
log_requests = st.builds(ExportLogsServiceRequest, resource_logs=st.lists(st.builds(
    ResourceLogs, resource=resources, scope_logs=st.lists(st.builds(
        ScopeLogs, scope=scopes, log_records=st.lists(records, max_size=4)), max_size=2)), max_size=2))


@given(trace_requests)
@settings(max_examples=150)
def test_traces_convert_the_same_from_every_encoding_into_valid_events(request: ExportTraceServiceRequest) -> None:
    out = all_encodings(request)
    total = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
    assert len(out.spans) + out.rejected == total
    assert_refinable(out)


@given(log_requests)
@settings(max_examples=150)
def test_logs_convert_the_same_from_every_encoding_into_valid_events(request: ExportLogsServiceRequest) -> None:
    out = all_encodings(request)
    total = sum(len(s.log_records) for r in request.resource_logs for s in r.scope_logs)
    assert len(out.logs) + out.rejected == total and out.spans == []
    assert_refinable(out)


@given(st.binary(max_size=300), st.sampled_from([otlp.convert_traces, otlp.convert_logs]))
@example(b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": 5}]}]}]}', otlp.convert_traces)
@example(b"\x0a\x05garbage", otlp.convert_logs)
@settings(max_examples=500)
def test_arbitrary_bytes_convert_or_are_undecodable(body: bytes, fn: Any) -> None:
    for encoding in ("proto", "json", otlp.sniff(body)):
        try:
            out = fn(body, encoding, "fallback")
        except otlp.Undecodable as exc:
            assert str(exc) and "\n" not in str(exc)
        else:
            assert_refinable(out)


# ---------------------------------------------------------------- spans: the mapping

def test_a_span_maps_to_a_contract_span_event() -> None:
    event = one_span(span(parent_span_id=PARENT, attributes={"http.route": "/cart", "retries": 2}),
                     res={**DEFAULT_RESOURCE, "host.name": "web-1"}, scope="io.opentelemetry.flask")
    assert event == {
        "timestamp": 1_795_773_600_123,  # epoch ms, sub-millisecond precision left out
        "service_name": "cart",
        "environment": "prod",  # as sent: the engine normalizes it
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "parent_span_id": PARENT.hex(),
        "name": "GET /cart",
        "kind": "SERVER",
        "duration_ms": 1.5,
        "status": "OK",
        "labels": {"http.route": "/cart", "retries": 2, "otel.scope.name": "io.opentelemetry.flask",
                   "host.name": "web-1"},
    }
    assert list(event["labels"]) == ["http.route", "retries", "otel.scope.name", "host.name"]  # span's first
    doc = refine_span(event)
    assert (doc.timestamp, doc.environment, doc.parent_span_id) == ("2026-11-27T10:00:00.123Z", "production",
                                                                    PARENT.hex())


@pytest.mark.parametrize(("res", "service", "environment"), [
    ({"service.name": "cart", "deployment.environment.name": "prod", "deployment.environment": "old"}, "cart", "prod"),
    ({"service.name": "cart", "deployment.environment": "staging"}, "cart", "staging"),
    ({"service.name": "cart", "deployment.environment.name": " ", "deployment.environment": "dev"}, "cart", "dev"),
    ({"service.name": "cart"}, "cart", "fallback"),
    ({"service.name": ""}, "unknown_service", "fallback"),
    ({"service.name": 7, "deployment.environment": 3}, "unknown_service", "fallback"),
    ({}, "unknown_service", "fallback"),
], ids=["new-env-wins", "old-env", "blank-new-env", "no-env", "empty-service", "not-strings", "no-attributes"])
def test_service_and_environment_come_from_the_resource(res: dict[str, Any], service: str, environment: str) -> None:
    event = one_span(span(), res=res)
    assert (event["service_name"], event["environment"]) == (service, environment)
    assert "labels" not in event  # service.name and deployment.environment* are never labels
    refine_span(event)


@pytest.mark.parametrize(("kind", "expected"), [
    (Span.SPAN_KIND_UNSPECIFIED, "INTERNAL"), (Span.SPAN_KIND_INTERNAL, "INTERNAL"), (Span.SPAN_KIND_SERVER, "SERVER"),
    (Span.SPAN_KIND_CLIENT, "CLIENT"), (Span.SPAN_KIND_PRODUCER, "PRODUCER"), (Span.SPAN_KIND_CONSUMER, "CONSUMER"),
    (9, "INTERNAL"),
], ids=["unspecified", "internal", "server", "client", "producer", "consumer", "unknown-number"])
def test_span_kind(kind: int, expected: str) -> None:
    assert one_span(span(kind=kind))["kind"] == expected


@pytest.mark.parametrize(("code", "expected"), [
    (Status.STATUS_CODE_UNSET, "OK"), (Status.STATUS_CODE_OK, "OK"), (Status.STATUS_CODE_ERROR, "ERROR")])
def test_span_status(code: int, expected: str) -> None:
    event = one_span(span(status=Status(code=code, message="boom" if code else "")))
    assert event["status"] == expected
    assert event.get("labels", {}).get("otel.status_description") == ("boom" if code else None)


@pytest.mark.parametrize(("attributes", "fields", "labels"), [
    ({"http.request.method": "GET", "url.path": "/a", "http.response.status_code": 200},
     {"http_method": "GET", "http_path": "/a", "http_status_code": 200}, {}),
    ({"http.method": "POST", "http.target": "/b?q=1&r=2", "http.status_code": 404},
     {"http_method": "POST", "http_path": "/b", "http_status_code": 404}, {}),
    ({"http.method": "POST", "http.request.method": "PUT", "http.target": "/old", "url.path": "/new",
      "http.status_code": 500, "http.response.status_code": 503},
     {"http_method": "PUT", "http_path": "/new", "http_status_code": 503}, {}),
    ({"http.response.status_code": 503, "http.status_code": 500, "url.path": "/new", "http.target": "/old"},
     {"http_path": "/new", "http_status_code": 503}, {}),
    ({"http.status_code": "201"}, {"http_status_code": 201}, {}),
    ({"http.status_code": 1000, "http.method": "", "http.target": "?only=query", "http.request.method": 5},
     {}, {"http.status_code": 1000, "http.method": "", "http.target": "?only=query", "http.request.method": 5}),
    ({"http.response.status_code": "abc", "http.status_code": 302}, {"http_status_code": 302},
     {"http.response.status_code": "abc"}),
], ids=["new-names", "old-names-and-query", "new-wins", "new-wins-either-order", "numeric-string",
        "unfit-stay-labels", "unfit-new-old-used"])
def test_http_fields(attributes: dict[str, Any], fields: dict[str, Any], labels: dict[str, Any]) -> None:
    event = one_span(span(attributes=attributes), res={"service.name": "cart"})
    assert {k: event[k] for k in ("http_method", "http_path", "http_status_code") if k in event} == fields
    assert event.get("labels", {}) == labels
    refine_span(event)


def test_label_values() -> None:
    raw = {"s": "x" * 300, "i": -(2**63), "d": 2.5, "b": True, "nan": float("nan"), "inf": float("-inf"),
           "arr": ["a", 1, True, [2.5]], "kv": {"k": "v", "n": {"m": 1}}, "bytes": b"\x00\xff", "unset": AnyValue(),
           "long_arr": ["y" * 300]}
    labels = one_span(span(attributes=raw), res={"service.name": "cart"})["labels"]
    assert labels == {"s": "x" * 256, "i": -(2**63), "d": 2.5, "b": True, "nan": "nan", "inf": "-inf",
                      "arr": '["a",1,true,[2.5]]', "kv": '{"k":"v","n":{"m":1}}', "bytes": "00ff",
                      "long_arr": ('["' + "y" * 300)[:256]}


def test_span_attributes_win_over_resource_ones_and_at_most_64_labels_are_kept_span_ones_first() -> None:
    res = {"service.name": "cart", "host.name": "resource", **{f"r{i}": i for i in range(10)}}
    labels = one_span(span(attributes={"host.name": "span"}), res=res, scope="lib")["labels"]
    assert labels["host.name"] == "span" and len(labels) == 12 and list(labels)[:2] == ["host.name", "otel.scope.name"]

    labels = one_span(span(attributes={f"s{i}": i for i in range(60)}), res=res, scope="lib")["labels"]
    assert list(labels) == [f"s{i}" for i in range(60)] + ["otel.scope.name", "host.name", "r0", "r1"]

    labels = one_span(span(attributes={f"s{i}": i for i in range(70)}), res=res, scope="lib")["labels"]
    assert list(labels) == [f"s{i}" for i in range(64)]


def test_the_scope_name_wins_over_a_resource_attribute_of_that_name() -> None:
    labels = one_span(span(), res={"service.name": "c", "otel.scope.name": "res"}, scope="lib")["labels"]
    assert labels == {"otel.scope.name": "lib"}


def test_times_and_ids() -> None:
    event = one_span(span(start_time_unix_nano=START, end_time_unix_nano=START, parent_span_id=b""))
    assert event["duration_ms"] == 0.0 and isinstance(event["duration_ms"], float)
    assert "parent_span_id" not in event  # a root
    event = one_span(span(start_time_unix_nano=1_000_999_999, end_time_unix_nano=1_002_000_000))
    assert (event["timestamp"], event["duration_ms"]) == (1000, 1.000001)
    assert isinstance(event["timestamp"], int)


@pytest.mark.parametrize(("fields", "why"), [
    ({"trace_id": bytes(16)}, "trace_id is missing or all zeros"),
    ({"trace_id": b""}, "trace_id is missing or all zeros"),
    ({"trace_id": b"\x01" * 8}, "trace_id is not 16 bytes of hex"),
    ({"span_id": bytes(8)}, "span_id is missing or all zeros"),
    ({"span_id": b""}, "span_id is missing or all zeros"),
    ({"span_id": b"\x01" * 16}, "span_id is not 8 bytes of hex"),
    ({"parent_span_id": b"\x01\x02"}, "parent_span_id is not 8 bytes of hex"),
    ({"name": ""}, "name is empty"),
    ({"name": "  "}, "name is empty"),
    ({"start_time_unix_nano": 0}, "start_time_unix_nano is missing"),
    ({"end_time_unix_nano": START - 2_000_000}, "end_time_unix_nano is before start_time_unix_nano (by 2 ms)"),
], ids=["zero-trace", "no-trace", "short-trace", "zero-span", "no-span", "long-span", "short-parent", "no-name",
        "blank-name", "no-start", "end-before-start"])
def test_unconvertible_spans_are_rejected_with_a_reason_and_their_siblings_kept(fields: dict[str, Any],
                                                                                 why: str) -> None:
    bad = span(**fields, events=[Span.Event(name="exception", time_unix_nano=START)])
    out = all_encodings(traces(span(), bad, span(span_id=PARENT)))
    assert [s["span_id"] for s in out.spans] == [SPAN.hex(), PARENT.hex()]
    assert out.logs == []  # a rejected span's exception events go with it
    assert (out.rejected, out.reasons) == (1, [f"resourceSpans[0].scopeSpans[0].spans[1]: {why}"])


def test_at_most_20_reasons_are_kept() -> None:
    out = all_encodings(traces(*[span(trace_id=bytes(16)) for _ in range(25)], span()))
    assert (len(out.spans), out.rejected, len(out.reasons)) == (1, 25, 20)
    assert out.reasons[-1].startswith("resourceSpans[0].scopeSpans[0].spans[19]: ")


# ---------------------------------------------------------------- exception events

def test_exception_events_become_error_logs_of_their_span() -> None:
    stack = "Traceback (most recent call last):\n" + "  frame\n" * 100
    events = [
        Span.Event(name="exception", time_unix_nano=START + 7_654_321, attributes=attrs(
            {"exception.type": "KeyError", "exception.message": "'sku'", "exception.stacktrace": stack})),
        Span.Event(name="exception", time_unix_nano=START, attributes=attrs({"exception.message": "only a message"})),
        Span.Event(name="exception", time_unix_nano=START, attributes=attrs({"exception.type": "ValueError"})),
        Span.Event(name="exception", attributes=attrs({"exception.type": " ", "exception.escaped": True})),
        Span.Event(name="log", time_unix_nano=START, attributes=attrs({"exception.type": "NotAnException"})),
    ]
    out = all_encodings(traces(span(events=events, status=Status(code=Status.STATUS_CODE_ERROR),
                                    attributes={"http.method": "GET", "http.target": "/cart?id=1",
                                                "http.status_code": 500}),
                               res={"service.name": "cart", "deployment.environment": "prod", "pod": "p-1"}))
    assert out.rejected == 0 and len(out.spans) == 1
    first, only_message, only_type, neither = out.logs
    assert first == {
        "timestamp": 1_795_773_600_131,
        "service_name": "cart",
        "environment": "prod",
        "level": "ERROR",
        "message": "KeyError: 'sku'",
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "http_method": "GET",
        "http_path": "/cart",
        "http_status_code": 500,
        "labels": {"exception.type": "KeyError", "exception.message": "'sku'", "exception.stacktrace": stack[:256],
                   "pod": "p-1"},
    }
    assert [only_message["message"], only_type["message"], neither["message"]] == [
        "only a message", "ValueError", "exception"]
    assert neither["timestamp"] == out.spans[0]["timestamp"]  # no event time: the span's start
    for log in out.logs:
        assert refine_log(log).level == "ERROR"


# ---------------------------------------------------------------- log records

def test_a_log_record_maps_to_a_contract_log_event() -> None:
    event = one_log(record(trace_id=TRACE, span_id=SPAN, severity_number=13, severity_text="Warning",
                           attributes={"http.request.method": "GET", "url.path": "/x", "logger": "app"}),
                    scope="app.logger")
    assert event == {
        "timestamp": 1_795_773_600_123,
        "service_name": "cart",
        "environment": "prod",
        "level": "WARN",
        "message": "hello",
        "trace_id": TRACE.hex(),
        "span_id": SPAN.hex(),
        "http_method": "GET",
        "http_path": "/x",
        "labels": {"logger": "app", "otel.scope.name": "app.logger"},
    }
    refine_log(event)


def test_log_times_and_ids() -> None:
    observed = one_log(record(time_unix_nano=0, observed_time_unix_nano=START + 5_000_000))
    assert observed["timestamp"] == 1_795_773_600_128
    untimed = one_log(record(time_unix_nano=0, trace_id=bytes(16), span_id=b"\x01\x02"))
    assert "timestamp" not in untimed and "trace_id" not in untimed and "span_id" not in untimed
    assert refine_log(untimed).timestamp_defaulted  # the engine stamps the ingest time


LEVEL_OF_NUMBER = [(n, level) for level, first in (("TRACE", 1), ("DEBUG", 5), ("INFO", 9), ("WARN", 13),
                                                   ("ERROR", 17), ("FATAL", 21)) for n in range(first, first + 4)]


@pytest.mark.parametrize(("number", "text", "level"), [
    *[(n, "", level) for n, level in LEVEL_OF_NUMBER],
    (17, "info", "ERROR"),  # the number wins
    (0, "trace", "TRACE"), (0, "Debug", "DEBUG"), (0, "INFO", "INFO"), (0, "warn", "WARN"), (0, "WARNING", "WARN"),
    (0, "error", "ERROR"), (0, "fatal", "FATAL"), (0, "critical", "FATAL"), (0, " Error ", "ERROR"),
    (0, "notice", "INFO"), (0, "", "INFO"), (25, "", "INFO"), (25, "error", "ERROR"),
])
def test_severity(number: int, text: str, level: str) -> None:
    event = one_log(record(severity_number=number, severity_text=text))
    assert event["level"] == level and refine_log(event).level == level


@pytest.mark.parametrize(("body", "message"), [
    ("plain text", "plain text"),
    ({"event": "login", "user": {"id": 7}}, '{"event":"login","user":{"id":7}}'),
    (["a", 1, False], '["a",1,false]'),
    (42, "42"),
    (2.5, "2.5"),
    (True, "true"),
    (b"\x01\xab", "01ab"),
    ("x" * 5000, "x" * 5000),  # a message is not a label: kept whole
], ids=["string", "kvlist", "array", "int", "double", "bool", "bytes", "long"])
def test_structured_bodies(body: Any, message: str) -> None:
    assert one_log(record(body=value(body)))["message"] == message


@pytest.mark.parametrize("body", [AnyValue(), AnyValue(string_value=""), AnyValue(string_value=" \n")],
                         ids=["unset", "empty", "blank"])
def test_an_empty_body_is_rejected(body: AnyValue) -> None:
    out = all_encodings(logs(record(), record(body=body)))
    assert len(out.logs) == 1 and out.rejected == 1
    assert out.reasons == ["resourceLogs[0].scopeLogs[0].logRecords[1]: body is empty"]
    no_body = LogRecord(time_unix_nano=START)
    assert convert(logs(no_body)).reasons == ["resourceLogs[0].scopeLogs[0].logRecords[0]: body is empty"]


# ---------------------------------------------------------------- OTLP/JSON as other producers write it

HAND_WRITTEN = b"""{
  "resourceSpans": [{
    "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "web"}},
                                {"key": "process.pid", "value": {"intValue": 4321}}],
                 "droppedAttributesCount": 0},
    "scopeSpans": [{
      "scope": {"name": "manual", "version": "1.0"},
      "schemaUrl": "https://opentelemetry.io/schemas/1.24.0",
      "spans": [{
        "traceId": "5B8EFFF798038103D269B633813FC60C",
        "spanId": "EEE19B7EC3C1B174",
        "parentSpanId": "",
        "name": "I'm a server span",
        "kind": "SPAN_KIND_CLIENT",
        "startTimeUnixNano": 1544712660000000000,
        "endTimeUnixNano": "1544712661000000000",
        "traceState": "",
        "flags": 1,
        "attributes": [{"key": "http.status_code", "value": {"intValue": "404"}},
                       {"key": "ratio", "value": {"doubleValue": "NaN"}},
                       {"key": "ok", "value": {"boolValue": false}},
                       {"key": "raw", "value": {"bytesValue": "AQI="}},
                       {"key": "nothing"}],
        "links": [],
        "status": {"code": "STATUS_CODE_ERROR", "message": "not found"},
        "someFutureField": {"nested": [1, 2, 3]}
      }]
    }]
  }]
}"""


def test_hand_written_otlp_json() -> None:
    assert otlp.sniff(HAND_WRITTEN) == "json"
    out = otlp.convert_traces(HAND_WRITTEN, "json", "fallback")
    assert out.rejected == 0
    assert out.spans == [{
        "timestamp": 1_544_712_660_000, "service_name": "web", "environment": "fallback",
        "trace_id": "5b8efff798038103d269b633813fc60c", "span_id": "eee19b7ec3c1b174", "name": "I'm a server span",
        "kind": "CLIENT", "duration_ms": 1000.0, "status": "ERROR", "http_status_code": 404,
        "labels": {"ratio": "nan", "ok": False, "raw": "0102", "otel.status_description": "not found",
                   "otel.scope.name": "manual", "process.pid": 4321},
    }]
    assert_refinable(out)


def test_base64_ids_are_taken_too() -> None:
    request = traces(span(parent_span_id=PARENT))
    protobuf_mapping = msgspec.json.encode(MessageToDict(request))  # ids in base64, not as OTLP/JSON has them
    assert otlp.convert_traces(protobuf_mapping, "json", "fallback") == convert(request)


def test_snake_case_names_in_a_camel_case_document() -> None:
    body = to_json(traces(span(attributes={"k": "v"}))).replace(b'"startTimeUnixNano"', b'"start_time_unix_nano"')
    assert otlp.convert_traces(body, "json", "fallback") != convert(traces(span(attributes={"k": "v"})))  # ignored
    snake = to_json(traces(span(attributes={"k": "v"})), snake=True)
    assert b'"resource_spans"' in snake and b'"string_value"' in snake
    assert otlp.convert_traces(snake, "json", "fallback") == convert(traces(span(attributes={"k": "v"})))


def test_a_string_value_that_looks_like_a_snake_case_key_is_kept() -> None:
    tricky = 'a "span_id": b, "trace_id":'
    request = traces(span(attributes={"note": tricky, "snake_key": "x"}))
    assert one_span(*request.resource_spans[0].scope_spans[0].spans)["labels"] == {"note": tricky, "snake_key": "x"}


# ---------------------------------------------------------------- undecodable bodies and sniffing

@pytest.mark.parametrize(("body", "encoding", "says"), [
    (b"\x0a\x05garbage", "proto", "not an ExportTraceServiceRequest (protobuf): "),
    (b"\xff\xff\xff", "proto", "(protobuf)"),
    (b'{"resourceSpans": 7}', "json", "Expected `array`, got `int` - at `$.resourceSpans`"),
    (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"name": 5}]}]}]}', "json",
     "at `$.resourceSpans[0].scopeSpans[0].spans[0].name`"),
    (b"[]", "json", "Expected `object`, got `array`"),
    (b"{not json", "json", "(OTLP/JSON): JSON is malformed"),
    (b'{"resourceSpans": [}\n', "json", "(OTLP/JSON)"),
], ids=["proto-garbage", "proto-truncated", "json-wrong-type", "json-wrong-field", "json-array", "json-malformed",
        "json-newline"])
def test_undecodable_bodies(body: bytes, encoding: otlp.Encoding, says: str) -> None:
    with pytest.raises(otlp.Undecodable) as raised:
        otlp.convert_traces(body, encoding, "fallback")
    assert says in str(raised.value) and "\n" not in str(raised.value)
    assert isinstance(raised.value, ValueError)


def test_an_empty_request_holds_nothing() -> None:
    for fn in (otlp.convert_traces, otlp.convert_logs):
        assert fn(b"", "proto", "x") == otlp.Converted([], []) == fn(b"{}", "json", "x")


def nested(depth: int) -> AnyValue:
    inner = AnyValue(string_value="bottom")
    for _ in range(depth):
        inner = AnyValue(array_value=ArrayValue(values=[inner]))
    return inner


def test_values_nested_too_deeply_are_undecodable() -> None:
    depth = 400  # past the JSON decoder's bound
    body = (b'{"resourceLogs":[{"scopeLogs":[{"logRecords":[{"body":' + b'{"arrayValue":{"values":[' * depth
            + b"]}}" * depth + b"}]}]}]}")
    with pytest.raises(otlp.Undecodable, match="recursion depth"):
        otlp.convert_logs(body, "json", "x")
    body = logs(record(body=nested(40))).SerializeToString()  # protobuf's bound: 100 messages, two a level
    assert convert(logs(record(body=nested(40)))).logs[0]["message"] == "[" * 40 + '"bottom"' + "]" * 40
    if not str(otlp.__file__).endswith(".py"):
        return  # compiled (mypyc), the walk recurses in C: Python's recursion limit does not bound it (below)
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(len(inspect.stack()) + 60)  # a caller deep in its stack: converting needs ~120 frames
    try:
        with pytest.raises(otlp.Undecodable, match="nested too deeply"):
            otlp.convert_logs(body, "proto", "x")
    finally:
        sys.setrecursionlimit(limit)


@pytest.mark.parametrize(("body", "encoding"), [
    (b'{"resourceSpans":[]}', "json"), (b' \n\t{ "resourceSpans": []}', "json"), (b"{}", "json"),
    (b"", "proto"), (b"\x0a\x00", "proto"), (b"[{}]", "proto"), (b"\x0a{\x0a\x00", "proto"),
    (b'\x0a{\x0a"\x0a\x0c', "proto"),
], ids=["json", "json-whitespace", "json-empty", "empty", "proto", "not-an-object", "proto-length-123",
        "proto-length-123-then-34"])
def test_sniff(body: bytes, encoding: str) -> None:
    assert otlp.sniff(body) == encoding


def test_a_protobuf_request_that_starts_like_json_is_sniffed_as_protobuf() -> None:
    """0x0a (`\\n`) then a length of 123 (`{`), then a Resource of 34 bytes (`\\n"`): JSON's first bytes."""
    for pad in range(200):
        res = Resource(attributes=attrs({"service.name": "s" * pad}))
        if res.ByteSize() == 34:
            break
    for name_size in range(200):
        resource_spans = ResourceSpans(resource=res, scope_spans=[ScopeSpans(spans=[span(name="n" * name_size)])])
        if resource_spans.ByteSize() == 123:
            break
    body = ExportTraceServiceRequest(resource_spans=[resource_spans]).SerializeToString()
    assert body.startswith(b'\n{\n"')
    assert otlp.sniff(body) == "proto"
    assert len(otlp.convert_traces(body, otlp.sniff(body), "x").spans) == 1
