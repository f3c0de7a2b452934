"""OTLP/JSON export requests, decoded by msgspec into Structs named after the proto's fields.

``common.otlp`` walks these and the protobuf messages with one mapper: the attribute names are the same. Declared
apart from the mapping because msgspec reads its class options (``rename``) from Python itself, and
``common.otlp`` may be compiled (``setup.py``).
"""

from __future__ import annotations

import msgspec


class Wire(msgspec.Struct, rename="camel"):
    """OTLP/JSON: lowerCamelCase names; unknown fields are ignored."""


class AnyValue(Wire):
    string_value: str | None = None
    bool_value: bool | None = None
    int_value: int | None = None  # int64: a decimal string or a number (the decoder is lax)
    double_value: float | None = None  # also "NaN", "Infinity"
    array_value: ArrayValue | None = None
    kvlist_value: KeyValueList | None = None
    bytes_value: bytes | None = None  # base64, as the protobuf JSON mapping has it


class KeyValue(Wire):
    key: str = ""
    value: AnyValue | None = None


class ArrayValue(Wire):
    values: list[AnyValue] = []


class KeyValueList(Wire):
    values: list[KeyValue] = []


class Resource(Wire):
    attributes: list[KeyValue] = []


class Scope(Wire):
    name: str = ""


class Status(Wire):
    message: str = ""
    code: int | str = 0  # an integer, or the enum's name


class Event(Wire):
    time_unix_nano: int = 0
    name: str = ""
    attributes: list[KeyValue] = []


class Span(Wire):
    trace_id: str | None = ""  # hex
    span_id: str | None = ""
    parent_span_id: str | None = ""
    name: str = ""
    kind: int | str = 0
    start_time_unix_nano: int = 0
    end_time_unix_nano: int = 0
    attributes: list[KeyValue] = []
    events: list[Event] = []
    status: Status = msgspec.field(default_factory=Status)


class ScopeSpans(Wire):
    scope: Scope = msgspec.field(default_factory=Scope)
    spans: list[Span] = []


class ResourceSpans(Wire):
    resource: Resource = msgspec.field(default_factory=Resource)
    scope_spans: list[ScopeSpans] = []


class TracesRequest(Wire):
    resource_spans: list[ResourceSpans] = []


class LogRecord(Wire):
    time_unix_nano: int = 0
    observed_time_unix_nano: int = 0
    severity_number: int | str = 0
    severity_text: str = ""
    body: AnyValue | None = None
    attributes: list[KeyValue] = []
    trace_id: str | None = ""
    span_id: str | None = ""


class ScopeLogs(Wire):
    scope: Scope = msgspec.field(default_factory=Scope)
    log_records: list[LogRecord] = []


class ResourceLogs(Wire):
    resource: Resource = msgspec.field(default_factory=Resource)
    scope_logs: list[ScopeLogs] = []


class LogsRequest(Wire):
    resource_logs: list[ResourceLogs] = []
