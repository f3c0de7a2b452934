"""The JSON shapes the API answers (msgspec Structs: the media handler encodes them directly).

They are also the response schemas of ``/openapi.json``.
"""

from __future__ import annotations

from typing import Any

import msgspec

Labels = dict[str, str | int | float | bool]


class SpanItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    timestamp: str
    trace_id: str
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str
    duration_ms: float
    status: str
    service_name: str
    environment: str
    labels: Labels
    http_method: str | None = None
    http_path: str | None = None
    http_status_code: int | None = None


class LogItem(msgspec.Struct, kw_only=True, omit_defaults=True):
    timestamp: str
    level: str
    message: str
    service_name: str
    environment: str
    trace_id: str | None
    span_id: str | None
    labels: Labels
    http_method: str | None = None
    http_path: str | None = None
    http_status_code: int | None = None


class ServiceRow(msgspec.Struct, kw_only=True):
    service_name: str
    environment: str
    request_count: int
    latency_p95_ms: float
    error_rate: float


class ServicesAnswer(msgspec.Struct, kw_only=True):
    from_: str = msgspec.field(name="from")
    to: str
    environment: str | None
    services: list[ServiceRow]


class Point(msgspec.Struct, kw_only=True):
    timestamp: str
    value: float


class Series(msgspec.Struct, kw_only=True):
    metric_name: str
    service_name: str
    environment: str
    points: list[Point]


class EndpointRow(msgspec.Struct, kw_only=True):
    endpoint_name: str
    service_name: str
    environment: str
    request_count: int
    latency_p95_ms: float
    error_rate: float


class EndpointsAnswer(msgspec.Struct, kw_only=True):
    service_name: str
    environment: str | None
    from_: str = msgspec.field(name="from")
    to: str
    endpoints: list[EndpointRow]


class ProblemTrace(msgspec.Struct, kw_only=True, rename="camel"):
    trace_id: str
    span_id: str
    timestamp: str
    duration_ms: float
    status: str
    service_name: str
    environment: str


class RootTrace(msgspec.Struct, kw_only=True):
    trace_id: str
    root_span_name: str
    status: str
    duration_ms: float
    start_time: str
    service_name: str
    environment: str
    labels: Labels


class TracesPage(msgspec.Struct, kw_only=True):
    total: int
    page: int
    size: int
    traces: list[RootTrace]


class TraceDetail(msgspec.Struct, kw_only=True):
    trace_id: str
    spans: list[SpanItem]
    logs: list[LogItem]
    truncated: bool


class LogsPage(msgspec.Struct, kw_only=True):
    total: int
    page: int
    size: int
    items: list[LogItem]


class SpansPage(msgspec.Struct, kw_only=True):
    total: int
    page: int
    size: int
    items: list[SpanItem]


class ErrorGroup(msgspec.Struct, kw_only=True):
    fingerprint: str
    sample_message: str
    count: int
    first_seen: str
    last_seen: str
    last_trace_id: str | None


class ErrorGroups(msgspec.Struct, kw_only=True):
    service_name: str
    environment: str | None
    from_: str = msgspec.field(name="from")
    to: str
    scanned: int
    truncated: bool
    groups: list[ErrorGroup]


class Health(msgspec.Struct, kw_only=True):
    status: str
    search: str
    cluster_name: str | None = None
    version: str | None = None


# ---------------------------------------------------------------- stored documents -> items

def _labels(source: dict[str, Any]) -> Labels:
    labels = source.get("labels")
    return labels if isinstance(labels, dict) else {}


def span_item(source: dict[str, Any]) -> SpanItem:
    return SpanItem(
        timestamp=source.get("@timestamp", ""),
        trace_id=source.get("trace_id", ""),
        span_id=source.get("span_id", ""),
        parent_span_id=source.get("parent_span_id") or None,
        name=source.get("name", ""),
        kind=source.get("kind", ""),
        duration_ms=float(source.get("duration_ms") or 0.0),
        status=source.get("status", ""),
        service_name=source.get("service_name", ""),
        environment=source.get("environment", ""),
        labels=_labels(source),
        http_method=source.get("http_method"),
        http_path=source.get("http_path"),
        http_status_code=source.get("http_status_code"),
    )


def log_item(source: dict[str, Any]) -> LogItem:
    return LogItem(
        timestamp=source.get("@timestamp", ""),
        level=source.get("level", ""),
        message=source.get("message", ""),
        service_name=source.get("service_name", ""),
        environment=source.get("environment", ""),
        trace_id=source.get("trace_id"),
        span_id=source.get("span_id"),
        labels=_labels(source),
        http_method=source.get("http_method"),
        http_path=source.get("http_path"),
        http_status_code=source.get("http_status_code"),
    )


def root_trace(source: dict[str, Any]) -> RootTrace:
    return RootTrace(
        trace_id=source.get("trace_id", ""),
        root_span_name=source.get("name", ""),
        status=source.get("status", ""),
        duration_ms=float(source.get("duration_ms") or 0.0),
        start_time=source.get("@timestamp", ""),
        service_name=source.get("service_name", ""),
        environment=source.get("environment", ""),
        labels=_labels(source),
    )


def problem_trace(source: dict[str, Any]) -> ProblemTrace:
    return ProblemTrace(
        trace_id=source.get("trace_id", ""),
        span_id=source.get("span_id", ""),
        timestamp=source.get("@timestamp", ""),
        duration_ms=float(source.get("duration_ms") or 0.0),
        status=source.get("status", ""),
        service_name=source.get("service_name", ""),
        environment=source.get("environment", ""),
    )
