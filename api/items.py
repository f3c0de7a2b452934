"""The JSON shapes the API answers (msgspec Structs: the media handler encodes them directly).

They are also the response schemas of ``/openapi.json``. Spans and logs are the readers' shapes of
``common.schema``; a hit becomes an item by msgspec alone: its ``_source`` is converted into the stored
document, and that, by attribute, into the item.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeVar

import msgspec

from panopticon.common.schema import Labels, Log, LogDoc, Span, SpanDoc

Item = TypeVar("Item", bound=msgspec.Struct)


class SpanItem(Span, kw_only=True):
    """A span; `parent_span_id` and `labels` are always answered."""

    parent_span_id: str | None
    labels: Labels


class LogItem(Log, kw_only=True):
    """A log; `trace_id`, `span_id` and `labels` are always answered."""

    trace_id: str | None
    span_id: str | None
    labels: Labels


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


class MapNode(msgspec.Struct, kw_only=True):
    """A node of the service map. A service with RED data in the range answers its RED numbers (its SERVER
    spans); any other node is virtual and answers the sum of its incoming calls (of its outgoing ones when it
    has none, e.g. `user`). A node's numbers do not depend on the `service` neighbourhood asked for."""

    service_name: str
    request_count: int
    error_rate: float
    latency_p95_ms: float
    virtual: Annotated[bool, msgspec.Meta(
        description="No service RED data in the range: a database, an outside host, `user` (the caller of root "
                    "spans), or a service that only calls.")]
    unpaired_count: Annotated[int, msgspec.Meta(
        description="Calls this node made whose callee is unknown (client spans with no server span and no "
                    "`peer.service`, `db.system` or host); they are no edge.")]


class MapEdge(msgspec.Struct, kw_only=True):
    """Calls from `source` to `target` over the range (client side: count, errors, latency)."""

    source: str
    target: str
    request_count: int
    error_rate: float
    latency_p95_ms: float


class ServiceMapAnswer(msgspec.Struct, kw_only=True):
    nodes: list[MapNode]
    edges: list[MapEdge]


class DependenciesAnswer(msgspec.Struct, kw_only=True):
    service_name: str
    callers: list[MapEdge]
    callees: list[MapEdge]


class ProblemTrace(msgspec.Struct, kw_only=True, rename="camel"):
    """A span of an endpoint's problem traces (camelCase keys)."""

    trace_id: str
    span_id: str
    timestamp: str
    duration_ms: float
    status: str
    service_name: str
    environment: str


class RootTrace(msgspec.Struct, kw_only=True, rename={"name": "root_span_name", "timestamp": "start_time"}):
    """A root span of a service's traces: its name and time under the contract's names."""

    trace_id: str
    name: str
    status: str
    duration_ms: float
    timestamp: str
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

def _from_source(source: dict[str, Any], stored: type[LogDoc] | type[SpanDoc], item: type[Item]) -> Item:
    """A hit's ``_source`` as an item: converted into its stored document, then by attribute into the item."""
    return msgspec.convert(msgspec.convert(source, stored), item, from_attributes=True)


def span_item(source: dict[str, Any]) -> SpanItem:
    return _from_source(source, SpanDoc, SpanItem)


def log_item(source: dict[str, Any]) -> LogItem:
    return _from_source(source, LogDoc, LogItem)


def root_trace(source: dict[str, Any]) -> RootTrace:
    return _from_source(source, SpanDoc, RootTrace)


def problem_trace(source: dict[str, Any]) -> ProblemTrace:
    return _from_source(source, SpanDoc, ProblemTrace)
