"""OTLP export requests for the tests, built with the opentelemetry-proto classes (as an instrumented service's SDK
or the Collector would), and their OTLP/JSON form."""

from __future__ import annotations

import base64
import time
from typing import Any

import msgspec
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

NOW_NS = (time.time_ns() // 1_000_000 - 120_000) * 1_000_000  # two minutes ago, whole milliseconds


def attributes(**values: Any) -> list[KeyValue]:
    out = []
    for key, value in values.items():
        key = key.replace("__", ".")
        any_value = AnyValue(int_value=value) if isinstance(value, int) else AnyValue(string_value=value)
        out.append(KeyValue(key=key, value=any_value))
    return out


def resource(service: str) -> Resource:
    return Resource(attributes=attributes(service__name=service, deployment__environment__name="prod"))


def traces(first: int, count: int) -> ExportTraceServiceRequest:
    """``count`` traces: a SERVER span of `frontend` calling a SERVER span of `cart` through a CLIENT span; every
    third trace fails in `cart` with an exception event."""
    front, cart = [], []
    for n in range(first, first + count):
        trace_id = (n + 1).to_bytes(16, "big")
        start = NOW_NS + n * 1_000_000
        failed = n % 3 == 0
        root = Span(trace_id=trace_id, span_id=(n * 3 + 1).to_bytes(8, "big"), name="GET /checkout",
                    kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=start, end_time_unix_nano=start + 30_000_000,
                    attributes=attributes(http__request__method="GET", url__path="/checkout",
                                          http__response__status_code=500 if failed else 200))
        client = Span(trace_id=trace_id, span_id=(n * 3 + 2).to_bytes(8, "big"), parent_span_id=root.span_id,
                      name="POST /cart", kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start + 1_000_000,
                      end_time_unix_nano=start + 21_000_000)
        server = Span(trace_id=trace_id, span_id=(n * 3 + 3).to_bytes(8, "big"), parent_span_id=client.span_id,
                      name="POST /cart", kind=Span.SPAN_KIND_SERVER, start_time_unix_nano=start + 2_000_000,
                      end_time_unix_nano=start + 20_000_000,
                      status=Status(code=Status.STATUS_CODE_ERROR if failed else Status.STATUS_CODE_OK))
        if failed:
            server.events.add(time_unix_nano=start + 19_000_000, name="exception",
                              attributes=attributes(exception__type="KeyError", exception__message="cart 42"))
        front += [root, client]
        cart.append(server)
    return ExportTraceServiceRequest(resource_spans=[
        ResourceSpans(resource=resource("frontend"), scope_spans=[ScopeSpans(spans=front)]),
        ResourceSpans(resource=resource("cart"), scope_spans=[ScopeSpans(spans=cart)])])


def logs(first: int, count: int) -> ExportLogsServiceRequest:
    records = [LogRecord(time_unix_nano=NOW_NS + n * 1_000_000, severity_number=17 if n % 2 else 9,
                         body=AnyValue(string_value=f"log {n}"), trace_id=(n + 1).to_bytes(16, "big"))
               for n in range(first, first + count)]
    return ExportLogsServiceRequest(resource_logs=[
        ResourceLogs(resource=resource("cart"), scope_logs=[ScopeLogs(log_records=records)])])


def otlp_json(request: ExportTraceServiceRequest | ExportLogsServiceRequest) -> bytes:
    """OTLP/JSON: the protobuf JSON mapping, but ids as hex (not base64), as the OTLP specification requires."""
    def hex_ids(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: base64.b64decode(v).hex() if k in ("traceId", "spanId", "parentSpanId") else hex_ids(v)
                    for k, v in value.items()}
        if isinstance(value, list):
            return [hex_ids(v) for v in value]
        return value
    return msgspec.json.encode(hex_ids(MessageToDict(request)))
