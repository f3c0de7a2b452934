"""The inverse of the contract's OpenTelemetry mapping: contract events (the generator's records) -> OTLP requests.

The one place that knows how a span or log of the ingest contract looks in OTLP, as an application's SDK (or the
OpenTelemetry Collector) would send it:

- resource: ``service.name`` and ``deployment.environment.name`` (a legacy producer, one that writes epoch-ms
  timestamps, uses the older key ``deployment.environment``), spelled as the producer spells the environment;
- span kind and status as the enums (``OK`` as ``STATUS_CODE_UNSET``, what instrumentations leave);
  start/end as unix nanoseconds from ``timestamp`` + ``duration_ms``;
- ids as 16/8 bytes (an id that is not hex of the right length becomes a stable hash of it);
- ``http_method`` / ``http_path`` / ``http_status_code`` as ``http.request.method`` / ``url.path`` /
  ``http.response.status_code``; labels (a call's ``peer.service``, ``db.system``, ``server.address``, ... too),
  and any other scalar top-level key, as attributes;
- log level as ``severity_number`` (and ``severity_text`` as the producer spells it), message as the body;
- an ERROR log "what: why" tied to a span of the same batch is, for one span in ``EXCEPTION_SHARE``, sent instead
  as an ``exception`` event on that span (``exception.type`` "what", ``exception.message`` "why", and the log's
  attributes), as SDKs record exceptions; the receiving side turns such an event back into the same ERROR log
  (``type: message``), which then also carries ``exception.type`` / ``exception.message`` as labels.

Pure (no I/O) and deterministic: the same records give the same requests.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

from panopticon.common.clock import parse_timestamp
from panopticon.devtools.traffic.record import Record

SCOPE = InstrumentationScope(name="panopticon.loadgen", version="1")
SPAN_KINDS = {
    "INTERNAL": Span.SPAN_KIND_INTERNAL,
    "SERVER": Span.SPAN_KIND_SERVER,
    "CLIENT": Span.SPAN_KIND_CLIENT,
    "PRODUCER": Span.SPAN_KIND_PRODUCER,
    "CONSUMER": Span.SPAN_KIND_CONSUMER,
}
STATUSES = {"OK": Status.STATUS_CODE_UNSET, "ERROR": Status.STATUS_CODE_ERROR}
SEVERITIES = {"TRACE": 1, "DEBUG": 5, "INFO": 9, "WARN": 13, "ERROR": 17, "FATAL": 21}
LEVEL_ALIASES = {"WARNING": "WARN", "CRITICAL": "FATAL"}
HTTP_ATTRIBUTES = {
    "http_method": "http.request.method",
    "http_path": "url.path",
    "http_status_code": "http.response.status_code",
}
_HTTP_KEYS = frozenset(HTTP_ATTRIBUTES.values())
SERVICE_NAME = "service.name"
ENVIRONMENT = "deployment.environment.name"
LEGACY_ENVIRONMENT = "deployment.environment"
EXCEPTION_SHARE = 2  # one ERROR log in this many (chosen by its span id) also becomes an exception event
# the contract's fields; any other top-level key is a producer's extra (client_ip, container_name, ...)
_CONTRACT_KEYS = frozenset({
    "type", "timestamp", "service_name", "environment", "trace_id", "span_id", "parent_span_id", "name",
    "kind", "duration_ms", "status", "level", "message", "labels", *HTTP_ATTRIBUTES,
})
_HEX = {16: re.compile(r"[0-9a-fA-F]{32}"), 8: re.compile(r"[0-9a-fA-F]{16}")}
_decode = msgspec.json.Decoder().decode

ResourceKey = tuple[str, str, str]  # service name, environment attribute key, environment as spelled
Event = dict[str, Any]


def otlp_id(text: str, size: int) -> bytes:
    """A hex id as ``size`` bytes; anything else as a stable hash of its text (the same input, the same id)."""
    if _HEX[size].fullmatch(text):
        return bytes.fromhex(text)
    return hashlib.blake2b(text.encode(), digest_size=size).digest()


def any_value(value: str | bool | int | float) -> AnyValue:
    if isinstance(value, bool):
        return AnyValue(bool_value=value)
    if isinstance(value, int):
        return AnyValue(int_value=value)
    if isinstance(value, float):
        return AnyValue(double_value=value)
    return AnyValue(string_value=str(value))


def attributes(event: Event) -> list[KeyValue]:
    """The http fields under their semantic-convention names, then the labels, then the producer's extras."""
    pairs = [(HTTP_ATTRIBUTES[k], event[k]) for k in HTTP_ATTRIBUTES if event.get(k) is not None]
    labels = event.get("labels")
    if isinstance(labels, dict):
        pairs += [(k, v) for k, v in labels.items() if v is not None]
    pairs += [(k, v) for k, v in event.items() if k not in _CONTRACT_KEYS and isinstance(v, (str, int, float))]
    return [KeyValue(key=k, value=any_value(v)) for k, v in pairs]


def resource_key(event: Event) -> ResourceKey:
    legacy = isinstance(event.get("timestamp"), int)  # a legacy producer: the older semantic conventions
    return (event["service_name"], LEGACY_ENVIRONMENT if legacy else ENVIRONMENT, event["environment"])


def resource(key: ResourceKey) -> Resource:
    service, environment_key, environment = key
    return Resource(attributes=[KeyValue(key=SERVICE_NAME, value=AnyValue(string_value=service)),
                                KeyValue(key=environment_key, value=AnyValue(string_value=environment))])


def unix_nanos(event: Event) -> int:
    ms = parse_timestamp(event.get("timestamp"))
    if ms is None:
        raise ValueError(f"no usable timestamp: {event.get('timestamp')!r}")
    return ms * 1_000_000


def span_of(event: Event) -> Span:
    """A span event of the contract as an OTLP span."""
    start = unix_nanos(event)
    parent = event.get("parent_span_id")
    return Span(
        trace_id=otlp_id(event["trace_id"], 16),
        span_id=otlp_id(event["span_id"], 8),
        parent_span_id=otlp_id(parent, 8) if parent else b"",
        name=event["name"],
        kind=SPAN_KINDS[str(event.get("kind") or "INTERNAL").upper()],
        start_time_unix_nano=start,
        end_time_unix_nano=start + round(float(event["duration_ms"]) * 1_000_000),
        attributes=attributes(event),
        status=Status(code=STATUSES[str(event.get("status") or "OK").upper()]),
    )


def log_of(event: Event) -> LogRecord:
    """A log event of the contract as an OTLP log record."""
    at = unix_nanos(event)
    spelled = str(event["level"])
    level = spelled.upper()
    return LogRecord(
        time_unix_nano=at,
        observed_time_unix_nano=at,
        severity_number=SEVERITIES[LEVEL_ALIASES.get(level, level)],  # type: ignore[arg-type]
        severity_text=spelled,
        body=AnyValue(string_value=event["message"]),
        attributes=attributes(event),
        trace_id=otlp_id(event["trace_id"], 16) if event.get("trace_id") else b"",
        span_id=otlp_id(event["span_id"], 8) if event.get("span_id") else b"",
    )


def exception_event(log: LogRecord, span: Span) -> None:
    """Record the ERROR log on its span as an ``exception`` event: the text before the first ": " as the type, the
    rest as the message (the receiving side writes ``type: message``, the log's own text), with the log's attributes
    but its http ones: those are the span's (a failed HTTP call's log has them), and the receiving side copies them
    from the span."""
    kind, _, message = log.body.string_value.partition(": ")
    span.events.add(time_unix_nano=log.time_unix_nano, name="exception", attributes=[
        KeyValue(key="exception.type", value=AnyValue(string_value=kind)),
        KeyValue(key="exception.message", value=AnyValue(string_value=message)),
        *(kv for kv in log.attributes if kv.key not in _HTTP_KEYS),
    ])


def wants_exception_event(log: LogRecord) -> bool:
    """One ERROR log in EXCEPTION_SHARE (by its span id) whose text reads "what: why"."""
    return (log.severity_number == SEVERITIES["ERROR"] and log.span_id[-1] % EXCEPTION_SHARE == 0
            and ": " in log.body.string_value)


class OtlpBatch:
    """The spans and logs of some records, grouped by resource (service), as the Collector's batch processor does.

    ``add`` records (invalid ones are skipped and counted), then ``take()`` the two export requests (None when
    empty); the batch is then empty again.
    """

    def __init__(self) -> None:
        self.trace_id = ""  # of the last record added: batches are best closed between traces
        self.skipped = 0
        self._reset()

    def _reset(self) -> None:
        self.spans = 0
        self.logs = 0
        self.exceptions = 0
        self._resource_spans: dict[ResourceKey, ScopeSpans] = {}
        self._resource_logs: dict[ResourceKey, ScopeLogs] = {}
        self._open_spans: dict[bytes, Span] = {}  # span id -> its message, for exception events
        self._traces = ExportTraceServiceRequest()
        self._logs = ExportLogsServiceRequest()

    @property
    def events(self) -> int:
        """Spans and logs (exception events included: each becomes a log)."""
        return self.spans + self.logs + self.exceptions

    def add(self, record: Record) -> None:
        if not record.is_valid:
            self.skipped += 1
            return
        self.trace_id = record.trace_id
        value = _decode(record.value)
        for event in value if isinstance(value, list) else [value]:
            if record.kind == "span":
                self._add_span(event)
            else:
                self._add_log(event)

    def _add_span(self, event: Event) -> None:
        scope = self._scope_spans(resource_key(event))
        span = scope.spans.add()
        span.CopyFrom(span_of(event))
        self._open_spans[span.span_id] = span
        self.spans += 1

    def _add_log(self, event: Event) -> None:
        log = log_of(event)
        span = self._open_spans.get(log.span_id)
        if span is not None and wants_exception_event(log):
            exception_event(log, span)  # instead of the log record: the receiver makes it the same ERROR log
            self.exceptions += 1
            return
        self._scope_logs(resource_key(event)).log_records.append(log)
        self.logs += 1

    def _scope_spans(self, key: ResourceKey) -> ScopeSpans:
        scope = self._resource_spans.get(key)
        if scope is None:
            group: ResourceSpans = self._traces.resource_spans.add(resource=resource(key))
            scope = self._resource_spans[key] = group.scope_spans.add(scope=SCOPE)
        return scope

    def _scope_logs(self, key: ResourceKey) -> ScopeLogs:
        scope = self._resource_logs.get(key)
        if scope is None:
            group: ResourceLogs = self._logs.resource_logs.add(resource=resource(key))
            scope = self._resource_logs[key] = group.scope_logs.add(scope=SCOPE)
        return scope

    def take(self) -> tuple[ExportTraceServiceRequest | None, ExportLogsServiceRequest | None]:
        traces = self._traces if self.spans else None
        logs = self._logs if self.logs else None
        self._reset()
        return traces, logs


def batches(records: Iterable[Record], max_events: int = 200
            ) -> Iterator[tuple[ExportTraceServiceRequest | None, ExportLogsServiceRequest | None]]:
    """The records as export requests of about ``max_events`` spans and logs, each closed between two traces."""
    batch = OtlpBatch()
    for record in records:
        if batch.events >= max_events and record.trace_id != batch.trace_id:
            yield batch.take()
        batch.add(record)
    if batch.events:
        yield batch.take()
