"""OpenTelemetry OTLP export requests -> the ingest contract's span and log events. Pure: no I/O.

The one mapping of OTLP to the contract, shared by the OTLP/HTTP receiver (``ingest/``) and the engine (the
Collector kafka exporter's ``otlp_spans`` / ``otlp_logs`` topics). Both encodings decode into objects with the same
attribute names: the protobuf messages themselves, or msgspec Structs named after the proto fields (lowerCamelCase
on the wire, as OTLP/JSON has them). One mapper walks either; only leaves differ in type (an id is ``bytes`` in
protobuf and hex text in JSON, an enum an ``int`` or its name, an ``AnyValue`` a oneof or a Struct of optional
fields), and ``_hex_id`` / ``_value`` / the enum tables take both.

An item (span, log record) that cannot be converted is counted in ``Converted.rejected`` with a one-line reason and
its siblings are kept: the receiver answers it as ``partial_success``, the engine dead-letters it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import math
import re
from collections.abc import Callable
from itertools import islice
from typing import Any, Literal, NamedTuple

import msgspec
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.logs.v1.logs_pb2 import SeverityNumber
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from panopticon.common.otlp_json import AnyValue, LogsRequest, TracesRequest
from panopticon.common.schema import LEVELS, MAX_LABEL_VALUE, MAX_LABELS

Encoding = Literal["proto", "json"]
UNKNOWN_SERVICE = "unknown_service"  # the OpenTelemetry SDKs' default service.name
MAX_REASONS = 20


@dataclasses.dataclass
class Converted:
    spans: list[dict[str, Any]]  # contract span events (JSON-ready dicts)
    logs: list[dict[str, Any]]  # contract log events: the log records, then one ERROR log per "exception" span event
    rejected: int = 0  # spans / log records that could not be converted
    reasons: list[str] = dataclasses.field(default_factory=list)  # why, one line per rejected item, MAX_REASONS kept


class Undecodable(ValueError):
    """The body is not an OTLP export request of that kind; the message says why (one line)."""


_json_traces = msgspec.json.Decoder(TracesRequest, strict=False).decode
_json_logs = msgspec.json.Decoder(LogsRequest, strict=False).decode
_json_encode = msgspec.json.Encoder().encode

# A key in snake_case (the proto's own names, which protobuf JSON parsers also accept). In valid JSON a quote after
# `{`, `,` or whitespace opens a string, and a string followed by `:` is a key: OTLP/JSON has no map fields, so every
# key is a field name. Rewritten to lowerCamelCase only in a body that uses them at the top.
_SNAKE_KEY = re.compile(rb'(?<=[{,\s])"([a-z][a-z0-9]*(?:_[a-z0-9]+)+)"(?=\s*:)')
_SNAKE_TOP = (b'"resource_spans"', b'"resource_logs"')
# JSON starts with `{` then `"` or `}`, and a key has no control characters. Protobuf starts with 0x0a (`\n`, field 1)
# and a length that may be 0x7b (`{`): what follows is a tag byte, a control character.
_JSON_START = re.compile(rb'\s*\{\s*(?:\}|"[^"\x00-\x1f]*")')


def _camel(match: re.Match[bytes]) -> bytes:
    first, *rest = match.group(1).split(b"_")
    return b'"' + first + b"".join(part.capitalize() for part in rest) + b'"'


def sniff(body: bytes) -> Encoding:
    """A Kafka record's encoding: JSON when it starts (after whitespace) as a JSON object does, else protobuf."""
    return "json" if _JSON_START.match(body) else "proto"


def _decode(body: bytes, encoding: Encoding, proto: Any, json: Any, what: str) -> Any:
    try:
        if encoding == "proto":
            return proto(body)
        if any(top in body for top in _SNAKE_TOP):
            body = _SNAKE_KEY.sub(_camel, body)
        return json(body)
    except (DecodeError, msgspec.DecodeError, msgspec.ValidationError, UnicodeDecodeError, RecursionError) as exc:
        raise _undecodable(what, encoding, " ".join(str(exc).split()) or type(exc).__name__) from None


def _undecodable(what: str, encoding: Encoding, why: str) -> Undecodable:
    return Undecodable(f"not an {what} ({'protobuf' if encoding == 'proto' else 'OTLP/JSON'}): {why}")


def _too_deep(what: str, encoding: Encoding) -> Undecodable:
    """Values nested deeper than the stack allows (the decoders bound nesting; this is the margin)."""
    return _undecodable(what, encoding, "an AnyValue is nested too deeply")


# ---------------------------------------------------------------- enums: integers, their text, their names

def _enum(pairs: list[tuple[str, int]], label: Any) -> dict[object, str]:
    table: dict[object, str] = {}
    for name, number in pairs:
        value = label(name, number)
        if value is not None:
            table[number] = table[str(number)] = table[name] = value
    return table


_KINDS = _enum(list(Span.SpanKind.items()),
               lambda name, _: "INTERNAL" if name == "SPAN_KIND_UNSPECIFIED" else name.removeprefix("SPAN_KIND_"))
_ERROR_STATUS = frozenset({Status.STATUS_CODE_ERROR, str(Status.STATUS_CODE_ERROR), "STATUS_CODE_ERROR"})
_SEVERITIES = _enum(list(SeverityNumber.items()), lambda _, number: LEVELS[(number - 1) // 4] if number else None)
_SEVERITY_TEXTS = {level: level for level in LEVELS} | {"WARNING": "WARN", "CRITICAL": "FATAL"}


def _level(number: object, text: str) -> str:
    level = _SEVERITIES.get(number)
    if level is None and text:
        level = _SEVERITY_TEXTS.get(text.strip().upper())
    return level or "INFO"


# ---------------------------------------------------------------- leaves: ids and values

_HEX = re.compile(r"[0-9a-f]+")


def _hex_id(raw: bytes | str | None, size: int) -> str | None:
    """A trace (16 bytes) or span (8 bytes) id as lower-case hex; "" when absent or all zeros; None when malformed.
    OTLP/JSON sends hex; a base64 id (protobuf's own JSON mapping, which some exporters send) is taken too."""
    if type(raw) is bytes:
        if len(raw) == size:
            return "" if raw.count(0) == size else raw.hex()
        return "" if not raw else None
    if not raw:
        return ""
    assert isinstance(raw, str)
    text = raw.lower()
    if len(text) != 2 * size or not _HEX.fullmatch(text):
        try:
            decoded = base64.b64decode(raw, validate=True) if len(raw) == (size + 2) // 3 * 4 else b""
        except (binascii.Error, ValueError):
            return None
        return _hex_id(decoded, size) if len(decoded) == size else None
    return "" if text.count("0") == 2 * size else text


def _value(value: Any) -> Any:
    """An AnyValue (protobuf or JSON) as a Python value: str, bool, int, float, list, dict; bytes as hex;
    None when unset."""
    if value is None:
        return None
    if type(value) is AnyValue:
        return _json_value(value)
    which = value.WhichOneof("value")
    if which == "string_value":
        return value.string_value
    if which is None:
        return None
    if which == "int_value":
        return value.int_value
    if which == "bool_value":
        return value.bool_value
    if which == "double_value":
        return value.double_value
    if which == "array_value":
        return [_value(item) for item in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if which == "bytes_value":
        return value.bytes_value.hex()
    return None  # string_value_strindex: a reference into a profiles dictionary, not a value here


def _json_value(value: AnyValue) -> Any:
    if value.string_value is not None:
        return value.string_value
    if value.int_value is not None:
        return value.int_value
    if value.bool_value is not None:
        return value.bool_value
    if value.double_value is not None:
        return value.double_value
    if value.array_value is not None:
        return [_value(item) for item in value.array_value.values]
    if value.kvlist_value is not None:
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    if value.bytes_value is not None:
        return value.bytes_value.hex()
    return None


def _label(value: Any) -> Any:
    """A label value within the contract's bounds: scalars as they are, arrays and kvlists as JSON text."""
    kind = type(value)
    if kind is str:
        return value[:MAX_LABEL_VALUE]
    if kind is float:
        return value if math.isfinite(value) else str(value)
    if kind is list or kind is dict:
        return _json_encode(value).decode()[:MAX_LABEL_VALUE]
    return value


def _text(value: Any) -> str:
    """A value as message text: a string as it is, anything else as JSON text."""
    if type(value) is str:
        return value
    if type(value) is float and not math.isfinite(value):
        return str(value)
    return _json_encode(value).decode()


# ---------------------------------------------------------------- attributes and labels

def _method(value: Any) -> str | None:
    return value if type(value) is str and value and not value.isspace() else None


def _path(value: Any) -> str | None:
    return _method(value.partition("?")[0]) if type(value) is str else None


def _status_code(value: Any) -> int | None:
    if type(value) is str and len(value) < 16 and value.strip().isdecimal():
        value = int(value)
    elif type(value) is float and value.is_integer():
        value = int(value)
    return value if type(value) is int and 0 <= value <= 999 else None


# attribute -> (event field, its cleaning, whether it is the current semantic-conventions name that wins)
_HTTP: dict[str, tuple[str, Any, bool]] = {
    "http.request.method": ("http_method", _method, True),
    "http.method": ("http_method", _method, False),
    "url.path": ("http_path", _path, True),
    "http.target": ("http_path", _path, False),  # may carry a query string: cut off
    "http.response.status_code": ("http_status_code", _status_code, True),
    "http.status_code": ("http_status_code", _status_code, False),
}
_HTTP_FIELDS = ("http_method", "http_path", "http_status_code")


def _attributes(attributes: Any, event: dict[str, Any]) -> dict[str, Any]:
    """Span or log record attributes -> labels; the HTTP ones become fields of ``event`` instead (a value unfit for
    its field stays a label)."""
    labels: dict[str, Any] = {}
    for kv in attributes:
        any_value = kv.value
        text = any_value.string_value if any_value is not None else None  # a non-empty string: the common case
        value = text if text else _value(any_value)
        if value is None:
            continue
        key = kv.key
        http = _HTTP.get(key)
        if http is not None:
            field, clean, current = http
            cleaned = clean(value)
            if cleaned is not None:
                if current or field not in event:
                    event[field] = cleaned
                continue
        labels[key] = value[:MAX_LABEL_VALUE] if type(value) is str else _label(value)
    return labels


def _merge(own: dict[str, Any], inherited: dict[str, Any]) -> dict[str, Any]:
    """An item's labels, then the inherited ones (scope, resource) it lacks: at most MAX_LABELS, its own first."""
    if len(own) + len(inherited) <= MAX_LABELS:
        # a repeated key keeps its first place and takes its last value: own keys first, own values win
        return {**own, **inherited, **own} if own and inherited else own or dict(inherited)
    merged = dict(islice(own.items(), MAX_LABELS))
    for key, value in inherited.items():
        if len(merged) >= MAX_LABELS:
            break
        merged.setdefault(key, value)
    return merged


class _Origin(NamedTuple):
    """What the items of one scope share: from the resource and the instrumentation scope."""

    service_name: str
    environment: str
    labels: dict[str, Any]  # the scope's name, then the resource's other attributes


_RESOURCE_FIELDS = frozenset({"service.name", "deployment.environment.name", "deployment.environment"})


def _resource(resource: Any, default_environment: str) -> tuple[str, str, dict[str, Any]]:
    """(service_name, environment, labels) of a resource."""
    found: dict[str, str] = {}
    labels: dict[str, Any] = {}
    for kv in resource.attributes:
        value = _value(kv.value)
        if value is None:
            continue
        key = kv.key
        if key in _RESOURCE_FIELDS:
            if type(value) is str and value.strip():
                found[key] = value
        else:
            labels[key] = _label(value)
    environment = found.get("deployment.environment.name") or found.get("deployment.environment")
    return found.get("service.name", UNKNOWN_SERVICE), environment or default_environment, labels


def _origin(resource: tuple[str, str, dict[str, Any]], scope: Any) -> _Origin:
    service_name, environment, labels = resource
    if scope.name:  # first among the inherited labels, and it wins over a resource attribute of that name
        labels = {"otel.scope.name": "", **labels}
        labels["otel.scope.name"] = scope.name[:MAX_LABEL_VALUE]
    return _Origin(service_name, environment, labels)


def _reject(out: Converted, where: str, why: str) -> None:
    out.rejected += 1
    if len(out.reasons) < MAX_REASONS:
        out.reasons.append(f"{where}: {why}")


# ---------------------------------------------------------------- traces

def convert_traces(body: bytes, encoding: Encoding, default_environment: str) -> Converted:
    """An ExportTraceServiceRequest (or the Collector's TracesData, the same message) -> span events, and an ERROR
    log event per span event named ``exception``."""
    what = "ExportTraceServiceRequest"
    request = _decode(body, encoding, ExportTraceServiceRequest.FromString, _json_traces, what)
    try:
        return _walk(request.resource_spans, "scope_spans", "spans", ("resourceSpans", "scopeSpans", "spans"), _span,
                     default_environment)
    except RecursionError:
        raise _too_deep(what, encoding) from None


def _walk(groups: Any, scopes: str, items: str, path: tuple[str, str, str],
          convert: Callable[[Any, _Origin, Converted], str | None], default_environment: str) -> Converted:
    """Every item (span, log record) of every scope of every resource, converted into one ``Converted``; an item
    that cannot be is rejected with its path in the request (named as in OTLP/JSON)."""
    out = Converted([], [])
    for i, group in enumerate(groups):
        resource = _resource(group.resource, default_environment)
        for j, scope_group in enumerate(getattr(group, scopes)):
            origin = _origin(resource, scope_group.scope)
            for k, item in enumerate(getattr(scope_group, items)):
                why = convert(item, origin, out)
                if why is not None:
                    _reject(out, f"{path[0]}[{i}].{path[1]}[{j}].{path[2]}[{k}]", why)
    return out


def _span(span: Any, origin: _Origin, out: Converted) -> str | None:
    """Appends the span's event (and its exception logs) to ``out``; or returns why it cannot be converted."""
    trace_id = _hex_id(span.trace_id, 16)
    if not trace_id:
        return "trace_id is missing or all zeros" if trace_id == "" else "trace_id is not 16 bytes of hex"
    span_id = _hex_id(span.span_id, 8)
    if not span_id:
        return "span_id is missing or all zeros" if span_id == "" else "span_id is not 8 bytes of hex"
    parent_span_id = _hex_id(span.parent_span_id, 8)
    if parent_span_id is None:
        return "parent_span_id is not 8 bytes of hex"
    name = span.name
    if not name or name.isspace():
        return "name is empty"
    start, end = span.start_time_unix_nano, span.end_time_unix_nano
    if start <= 0:
        return "start_time_unix_nano is missing"
    if end < start:
        return f"end_time_unix_nano is before start_time_unix_nano (by {(start - end) / 1e6:g} ms)"
    event: dict[str, Any] = {
        "timestamp": start // 1_000_000,
        "service_name": origin.service_name,
        "environment": origin.environment,
        "trace_id": trace_id,
        "span_id": span_id,
        "name": name,
        "kind": _KINDS.get(span.kind, "INTERNAL"),
        "duration_ms": (end - start) / 1e6,
        "status": "ERROR" if span.status.code in _ERROR_STATUS else "OK",
    }
    if parent_span_id:
        event["parent_span_id"] = parent_span_id
    labels = _attributes(span.attributes, event)
    if span.status.message:
        labels.setdefault("otel.status_description", span.status.message[:MAX_LABEL_VALUE])
    labels = _merge(labels, origin.labels)
    if labels:
        event["labels"] = labels
    out.spans.append(event)
    for span_event in span.events:
        if span_event.name == "exception":
            out.logs.append(_exception_log(span_event, event, origin))
    return None


def _exception_log(span_event: Any, span: dict[str, Any], origin: _Origin) -> dict[str, Any]:
    """An ``exception`` span event -> an ERROR log of the span: ``exception.type: exception.message``."""
    labels: dict[str, Any] = {}
    found: dict[str, str] = {}
    for kv in span_event.attributes:
        value = _value(kv.value)
        if value is None:
            continue
        key = kv.key
        if key in ("exception.type", "exception.message"):
            text = _text(value).strip()
            if text:
                found[key] = text
        labels[key] = _label(value)
    message = ": ".join(found[key] for key in ("exception.type", "exception.message") if key in found)
    time_ns = span_event.time_unix_nano
    log: dict[str, Any] = {
        "timestamp": time_ns // 1_000_000 if time_ns > 0 else span["timestamp"],
        "service_name": origin.service_name,
        "environment": origin.environment,
        "level": "ERROR",
        "message": message or "exception",
        "trace_id": span["trace_id"],
        "span_id": span["span_id"],
    }
    for field in _HTTP_FIELDS:
        if field in span:
            log[field] = span[field]
    labels = _merge(labels, origin.labels)
    if labels:
        log["labels"] = labels
    return log


# ---------------------------------------------------------------- logs

def convert_logs(body: bytes, encoding: Encoding, default_environment: str) -> Converted:
    """An ExportLogsServiceRequest (or the Collector's LogsData, the same message) -> log events."""
    what = "ExportLogsServiceRequest"
    request = _decode(body, encoding, ExportLogsServiceRequest.FromString, _json_logs, what)
    try:
        return _walk(request.resource_logs, "scope_logs", "log_records", ("resourceLogs", "scopeLogs", "logRecords"),
                     _log, default_environment)
    except RecursionError:
        raise _too_deep(what, encoding) from None


def _log(record: Any, origin: _Origin, out: Converted) -> str | None:
    """Appends the log record's event to ``out``; or returns why it cannot be converted."""
    body = _value(record.body)
    if body is None:
        return "body is empty"
    message = _text(body)
    if not message or message.isspace():
        return "body is empty"
    event: dict[str, Any] = {}
    time_ns = record.time_unix_nano or record.observed_time_unix_nano
    if time_ns > 0:
        event["timestamp"] = time_ns // 1_000_000  # else the engine stamps the ingest time
    event["service_name"] = origin.service_name
    event["environment"] = origin.environment
    event["level"] = _level(record.severity_number, record.severity_text)
    event["message"] = message
    trace_id = _hex_id(record.trace_id, 16)
    if trace_id:
        event["trace_id"] = trace_id
    span_id = _hex_id(record.span_id, 8)
    if span_id:
        event["span_id"] = span_id
    labels = _merge(_attributes(record.attributes, event), origin.labels)
    if labels:
        event["labels"] = labels
    out.logs.append(event)
    return None
