"""Query DSL builders. User text only ever appears as the value of ``term``/``terms``/``match``/``range``.

Plain OpenSearch 2.x query DSL: bool/term/terms/range/match/exists, sort, from/size, ``track_total_hits`` and
the min/max aggregations.
"""

from __future__ import annotations

from typing import Any

from panopticon.api.params import TimeRange

Query = dict[str, Any]

MAX_WINDOW = 10_000  # from + size never goes beyond the default max_result_window

SPAN_SORTS: dict[str, list[Query]] = {
    "start_time_desc": [{"@timestamp": {"order": "desc"}}, {"span_id": {"order": "asc"}}],
    "start_time_asc": [{"@timestamp": {"order": "asc"}}, {"span_id": {"order": "asc"}}],
    "duration_desc": [{"duration_ms": {"order": "desc"}}, {"@timestamp": {"order": "desc"}}],
    "duration_asc": [{"duration_ms": {"order": "asc"}}, {"@timestamp": {"order": "desc"}}],
}
LOG_SORTS: dict[str, list[Query]] = {
    "desc": [{"@timestamp": {"order": "desc"}}],
    "asc": [{"@timestamp": {"order": "asc"}}],
}


def time_range(window: TimeRange) -> Query:
    return {"range": {"@timestamp": {"gte": window.from_ms, "lt": window.to_ms, "format": "epoch_millis"}}}


def duration_range(minimum: float | None, maximum: float | None) -> Query | None:
    bounds: dict[str, float] = {}
    if minimum is not None:
        bounds["gte"] = minimum
    if maximum is not None:
        bounds["lte"] = maximum
    return {"range": {"duration_ms": bounds}} if bounds else None


def filtered(window: TimeRange | None, *extra: Query | None, must_not: list[Query] | None = None,
             **terms: str | None) -> Query:
    """A bool filter: the time range, each non-None term, and each extra clause."""
    clauses: list[Query] = [time_range(window)] if window is not None else []
    clauses += [{"term": {field: value}} for field, value in terms.items() if value is not None]
    clauses += [clause for clause in extra if clause is not None]
    query: Query = {"filter": clauses}
    if must_not:
        query["must_not"] = must_not
    return {"bool": query}


def not_child() -> list[Query]:
    """A root has no parent: the field is absent (ingest never stores an empty parent)."""
    return [{"exists": {"field": "parent_span_id"}}]


def full_text(field: str, text: str | None) -> Query | None:
    return {"match": {field: {"query": text, "operator": "and"}}} if text else None


def page_body(query: Query, sort: list[Query], page: int, size: int, source: list[str] | None = None) -> Query:
    body: Query = {"query": query, "sort": sort, "from": (page - 1) * size, "size": size,
                   "track_total_hits": True}
    if source is not None:
        body["_source"] = source
    return body


def min_max(field: str, query: Query) -> Query:
    return {"query": query, "size": 0, "aggs": {"lo": {"min": {"field": field}}, "hi": {"max": {"field": field}}}}


def hits(answer: dict[str, Any]) -> list[dict[str, Any]]:
    return [hit.get("_source", {}) for hit in answer.get("hits", {}).get("hits", [])]


def total(answer: dict[str, Any]) -> int:
    value = answer.get("hits", {}).get("total", 0)
    return int(value.get("value", 0) if isinstance(value, dict) else value)
