"""Typed documents that cross module and process boundaries.

Wire events arrive as arbitrary JSON and are validated field by field in ``common.normalize``
(producers send unknown keys that must be kept under ``labels``, which a closed Struct would drop).
What we store, republish and dead-letter is typed here.
"""

from __future__ import annotations

from typing import Literal

import msgspec

LEVELS = ("TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL")
KINDS = ("SERVER", "CLIENT", "INTERNAL", "PRODUCER", "CONSUMER")
STATUSES = ("OK", "ERROR")
ERROR_LEVELS = frozenset({"ERROR", "FATAL"})

LabelValue = str | int | float | bool


class StoredDoc(msgspec.Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    """What every stored document carries; ``type`` (the tag) is always written."""

    timestamp: str = msgspec.field(name="@timestamp")
    ingested_at: str
    timestamp_defaulted: bool = False
    service_name: str
    environment: str
    http_method: str | None = None
    http_path: str | None = None
    http_status_code: int | None = None
    labels: dict[str, LabelValue] = msgspec.field(default_factory=dict)


class LogDoc(StoredDoc, kw_only=True, tag="log"):
    """A stored log document (``logs-apm-YYYY.MM.DD``)."""

    level: str
    message: str
    trace_id: str | None = None
    span_id: str | None = None


class SpanDoc(StoredDoc, kw_only=True, tag="span"):
    """A stored span document (``traces-apm-YYYY.MM.DD``)."""

    trace_id: str
    span_id: str
    parent_span_id: str | None = None
    name: str
    kind: str
    duration_ms: float
    status: str


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


class ErrorEvent(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One error as the bridge sends it to browsers (``docs/error-stream``)."""

    timestamp: str
    service_name: str
    environment: str
    level: str
    message: str
    trace_id: str | None = None
    span_id: str | None = None
    labels: dict[str, LabelValue] = msgspec.field(default_factory=dict)
    http_method: str | None = None
    http_path: str | None = None
    http_status_code: int | None = None


class ErrorTopicRecord(msgspec.Struct, kw_only=True):
    """A record of the error topic as the bridge reads it: the stored log document."""

    timestamp: str = msgspec.field(name="@timestamp")
    service_name: str
    environment: str
    level: str
    message: str
    trace_id: str | None = None
    span_id: str | None = None
    labels: dict[str, LabelValue] = msgspec.field(default_factory=dict)
    http_method: str | None = None
    http_path: str | None = None
    http_status_code: int | None = None

    def to_event(self) -> ErrorEvent:
        return ErrorEvent(
            timestamp=self.timestamp,
            service_name=self.service_name,
            environment=self.environment,
            level=self.level,
            message=self.message,
            trace_id=self.trace_id,
            span_id=self.span_id,
            labels=self.labels,
            http_method=self.http_method,
            http_path=self.http_path,
            http_status_code=self.http_status_code,
        )
