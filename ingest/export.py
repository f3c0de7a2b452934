"""``POST /v1/traces`` and ``POST /v1/logs``: body → contract events (``common.otlp``) → Kafka → OTLP answer.

One record per event, the contract's JSON, keyed by trace id: spans to KAFKA_APM_SPAN_TOPIC, logs (log records,
and the ERROR log of each span event named ``exception``) to KAFKA_APM_LOG_TOPIC. An event larger than
ENGINE_MAX_MESSAGE_BYTES, which the engine would dead-letter, is rejected here instead and reported in
``partial_success``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import falcon
import msgspec

from panopticon.common.otlp import Converted, Undecodable, convert_logs, convert_traces
from panopticon.common.settings import Settings
from panopticon.ingest.body import decode_content, read_body, request_encoding
from panopticon.ingest.errors import BadBody, IngestError
from panopticon.ingest.metrics import IngestMetrics
from panopticon.ingest.sink import KafkaSink, Record
from panopticon.ingest.wire import MEDIA_TYPES, Encoding, FieldViolation, Signal, export_response

Converter = Callable[[bytes, Encoding, str], Converted]
CONVERTERS: dict[Signal, Converter] = {"traces": convert_traces, "logs": convert_logs}
MAX_REASONS = 5
MAX_ERROR_MESSAGE = 1000


class Outgoing(msgspec.Struct, kw_only=True):
    """What one request sends to Kafka, and what it refuses (counted in the signal's own unit)."""

    records: list[Record]
    spans: int = 0
    logs: int = 0
    rejected: int = 0
    reasons: list[str] = msgspec.field(default_factory=list)


class Events:
    """Contract events as Kafka records, within the engine's message size."""

    def __init__(self, settings: Settings) -> None:
        self._span_topic = settings.kafka_apm_span_topic
        self._log_topic = settings.kafka_apm_log_topic
        self._max_bytes = settings.engine_max_message_bytes
        self._encode = msgspec.json.Encoder().encode

    def outgoing(self, signal: Signal, converted: Converted) -> Outgoing:
        out = Outgoing(records=[], rejected=converted.rejected, reasons=list(converted.reasons))
        for span in converted.spans:
            if self._add(out, self._span_topic, span, "span"):
                out.spans += 1
            else:
                out.rejected += 1  # a span of /v1/traces
        for entry in converted.logs:
            if self._add(out, self._log_topic, entry, "log"):
                out.logs += 1
            elif signal == "logs":
                out.rejected += 1  # an exception log of /v1/traces is not a span: named in the message only
        return out

    def _add(self, out: Outgoing, topic: str, event: dict[str, Any], kind: str) -> bool:
        value = self._encode(event)
        if len(value) > self._max_bytes:
            out.reasons.append(f"a {kind} event of {len(value)} bytes exceeds ENGINE_MAX_MESSAGE_BYTES "
                               f"({self._max_bytes})")
            return False
        trace_id = event.get("trace_id")
        out.records.append((topic, trace_id.encode() if isinstance(trace_id, str) and trace_id else None, value))
        return True


def error_message(reasons: list[str]) -> str:
    """The distinct reasons, the first few of them, on one line."""
    distinct = list(dict.fromkeys(reasons))
    text = "; ".join(distinct[:MAX_REASONS])
    if len(distinct) > MAX_REASONS:
        text += f"; and {len(distinct) - MAX_REASONS} more distinct reasons"
    return text[:MAX_ERROR_MESSAGE]


class ExportResource:
    def __init__(self, signal: Signal, settings: Settings, sink: KafkaSink, metrics: IngestMetrics,
                 converter: Converter | None = None) -> None:
        self._signal = signal
        self._convert = converter or CONVERTERS[signal]
        self._environment = settings.otlp_default_environment
        self._limit = settings.ingest_max_body_bytes
        self._events = Events(settings)
        self._sink = sink
        self._metrics = metrics

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        encoding = req.context.encoding = request_encoding(req.content_type)
        raw = read_body(req.stream, req.content_length, self._limit)
        self._metrics.body_bytes.labels(req.uri_template).observe(len(raw))
        converted = self._decode(decode_content(raw, req.get_header("Content-Encoding"), self._limit), encoding)
        out = self._events.outgoing(self._signal, converted)
        self._send(out)
        resp.content_type = MEDIA_TYPES[encoding]
        resp.data = export_response(self._signal, encoding, out.rejected, error_message(out.reasons))

    def _decode(self, body: bytes, encoding: Encoding) -> Converted:
        if not body:
            return Converted(spans=[], logs=[])  # an empty request is a success (OTLP)
        try:
            return self._convert(body, encoding, self._environment)
        except Undecodable as exc:  # its message names the expected message and the encoding
            raise BadBody(str(exc), violations=(FieldViolation("body", str(exc)),)) from None

    def _send(self, out: Outgoing) -> None:
        try:
            self._sink.send(out.records)
        except IngestError as exc:
            self._metrics.produce_failures.labels(exc.reason or type(exc).__name__).inc()
            raise
        self._metrics.spans_accepted.inc(out.spans)
        self._metrics.logs_accepted.inc(out.logs)
        rejected = self._metrics.spans_rejected if self._signal == "traces" else self._metrics.logs_rejected
        rejected.inc(out.rejected)
