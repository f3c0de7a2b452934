"""Typed documents that cross module and process boundaries: the one declaration of what is stored.

A log and a span are declared once, as readers see them (``Log``, ``Span``: the error stream sends a ``Log``,
the query API's items extend them). Their stored documents (``LogDoc``, ``SpanDoc``) add the engine's own
fields and name the event time ``@timestamp``; ``RollupDoc`` is a stored rollup. ``common.indices`` maps every
field of these documents (``tests/test_indices.py`` holds the two together).

The field types carry the ingest contract's bounds (non-empty names, at most 64 labels, label strings of at
most 256 characters, status codes 0-999, durations >= 0). Constructing a Struct checks nothing; msgspec checks
them whenever it decodes or converts into one, which is how the engine validates clean events in C
(``common.normalize.StoredLog``). Other wire events arrive as arbitrary JSON and are validated field by field
in ``common.normalize`` (producers send unknown keys that must be kept under ``labels``, which a closed Struct
would drop).
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
KINDS = ("SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER")
STATUSES = ("OK", "ERROR")
ERROR_LEVELS = frozenset({"ERROR", "FATAL"})
MAX_LABELS = 64
MAX_LABEL_VALUE = 256

LabelValue = str | int | float | bool
Text = Annotated[str, Meta(min_length=1)]
Labels = Annotated[dict[str, Annotated[str, Meta(max_length=MAX_LABEL_VALUE)] | int | float | bool],
                   Meta(max_length=MAX_LABELS)]
StatusCode = Annotated[int, Meta(ge=0, le=999)]


class Event(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What logs and spans share, as readers see them."""

    timestamp: str
    service_name: Text
    environment: Text
    http_method: Text | None = None
    http_path: Text | None = None
    http_status_code: StatusCode | None = None
    labels: Labels = msgspec.field(default_factory=dict)


class Log(Event, kw_only=True):
    """A log as readers see it: so the bridge sends an error to browsers (``docs/error-stream``)."""

    level: str
    message: Text
    trace_id: Text | None = None
    span_id: Text | None = None


class Span(Event, kw_only=True):
    """A span as readers see it."""

    trace_id: Text
    span_id: Text
    parent_span_id: str | None = None
    name: Text
    kind: str
    duration_ms: Annotated[float, Meta(ge=0)]
    status: str


class LogDoc(Log, kw_only=True, tag_field="type", tag="log"):
    """A stored log document (``logs-apm-YYYY.MM.DD``): the log with the engine's fields; ``type`` (the tag)
    is always written."""

    timestamp: str = msgspec.field(name="@timestamp")
    ingested_at: str
    timestamp_defaulted: bool = False


class SpanDoc(Span, kw_only=True, tag_field="type", tag="span"):
    """A stored span document (``traces-apm-YYYY.MM.DD``), as ``LogDoc``."""

    timestamp: str = msgspec.field(name="@timestamp")
    ingested_at: str
    timestamp_defaulted: bool = False


class RollupDoc(msgspec.Struct, kw_only=True):
    """A stored rollup document (``metrics-apm-1m-*`` / ``metrics-apm-1h-*``; see ``common.rollup``)."""

    timestamp: str = msgspec.field(name="@timestamp")
    written_at: str = ""
    service_name: str
    environment: str
    endpoint: str
    scope: str
    partition: str = ""
    rollup_id: str = ""
    request_count: int
    error_count: int
    duration_sum: float
    duration_min: float
    duration_max: float
    hist_index: list[int]
    hist_count: list[int]


ErrorEvent = Log  # one error as the bridge sends it to browsers


class ErrorTopicRecord(Log, kw_only=True):
    """A record of the error topic as the bridge reads it: a stored log document, of which it keeps the log."""

    timestamp: str = msgspec.field(name="@timestamp")

    def to_event(self) -> ErrorEvent:
        return msgspec.convert(self, ErrorEvent, from_attributes=True)


class DeadLetter(msgspec.Struct, kw_only=True, omit_defaults=True):
    """What the engine writes to the dead-letter topic for a record it could not store."""

    source_topic: str
    partition: int
    offset: int
    key: str | None
    reason: str
    detail: str
    value: str
    value_encoding: Literal["utf-8", "base64"] = "utf-8"
    array_index: int | None = None
    failed_at: str
