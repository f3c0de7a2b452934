"""Derives 1-hour rollups from closed 1-minute rollups, idempotently.

An hour is closed ``grace_ms`` after its end. Compacting it reads all its 1-minute documents (every
partition and delta segment), sums them per (service, environment, scope, endpoint) and overwrites the
1-hour documents whose ids come from the hourly key; then it writes the hour's marker document
(``SCOPE_HOUR_MARKER``), which tells readers the hour is whole and remembers what it was computed from:
``written_at`` = the newest 1-minute ``written_at`` and ``request_count`` = the hour's total requests.

An hour is (re)computed when it has no marker, when one of its 1-minute documents was written after the
marker's ``written_at`` (late data), or when its request total differs from the marker's (a late document
that carries an older ``written_at``, e.g. a bulk retried through an outage). One aggregation over the
lookback window answers all three for every hour. Running it twice changes nothing.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import msgspec
from opensearchpy.exceptions import OpenSearchException

from panopticon.common.clock import parse_timestamp
from panopticon.common.indices import METRICS_1H, METRICS_1M, IndexCreator, IndexNames
from panopticon.common.rollup import (
    SCOPE_HOUR_MARKER,
    SCOPE_SERVICE,
    TIER_1H,
    CellKey,
    RollupCell,
    RollupKey,
    cell_key,
    hour_marker_key,
)
from panopticon.common.rollup_reader import HOUR_MS, ReadTimeout, SearchSession, time_range
from panopticon.common.schema import RollupDoc

log = logging.getLogger(__name__)


class HourSource(msgspec.Struct, frozen=True):
    """What an hour's 1-minute documents (or its marker) say: newest ``written_at`` and request total."""

    written_ms: int
    request_count: int


class CompactionReport(msgspec.Struct, kw_only=True):
    hours_checked: int = 0
    hours_compacted: list[int] = msgspec.field(default_factory=list)
    documents_read: int = 0
    documents_written: int = 0
    requests: int = 0


def compact_hours(client: Any, names: IndexNames, now_ms: int, grace_ms: int, *, lookback_hours: int = 48,
                  creator: IndexCreator | None = None, timeout_s: float = 120.0,
                  request_timeout_s: float = 30.0) -> CompactionReport:
    """Compute the 1-hour documents of every closed hour in the lookback window that needs it."""
    end = (now_ms - grace_ms) - (now_ms - grace_ms) % HOUR_MS
    start = end - lookback_hours * HOUR_MS
    session = SearchSession(client, timeout_s, request_timeout_s, time.monotonic)
    report = CompactionReport()
    sources = _minute_sources(session, names, start, end)
    markers = _markers(session, names, start, end)
    report.hours_checked = len(sources)
    writer = _HourWriter(client, names, creator or IndexCreator(client, names), request_timeout_s)
    for hour, source in sorted(sources.items()):
        if _covered(markers.get(hour), source):
            continue
        cells = _read_hour(session, names, hour)
        report.documents_written += writer.write(hour, cells, source, now_ms)
        report.hours_compacted.append(hour)
    report.documents_read = session.stats.documents
    report.requests = session.stats.requests + writer.requests
    return report


def _covered(marker: HourSource | None, source: HourSource) -> bool:
    """The marker covers every 1-minute document: none written after it, same request total."""
    return (marker is not None and source.written_ms <= marker.written_ms
            and source.request_count == marker.request_count)


def _minute_sources(session: SearchSession, names: IndexNames, start: int, end: int) -> dict[int, HourSource]:
    """Per hour with 1-minute documents: newest ``written_at`` and the service-scope request total."""
    body = {"size": 0, "query": time_range(start, end), "aggs": {"hour": {
        "date_histogram": {"field": "@timestamp", "fixed_interval": "1h", "min_doc_count": 1},
        "aggs": {"scope": {"terms": {"field": "scope", "size": 10}, "aggs": {
            "written": {"max": {"field": "written_at"}}, "requests": {"sum": {"field": "request_count"}}}}}}}}
    answer = session.search(names.days(METRICS_1M, start, end), body)
    sources = {}
    for bucket in answer.get("aggregations", {}).get("hour", {}).get("buckets", []):
        scopes = bucket["scope"]["buckets"]
        written = max(int(s["written"]["value"] or 0) for s in scopes)
        requests = sum(int(s["requests"]["value"] or 0) for s in scopes if s["key"] == SCOPE_SERVICE)
        sources[int(bucket["key"])] = HourSource(written, requests)
    return sources


def _markers(session: SearchSession, names: IndexNames, start: int, end: int) -> dict[int, HourSource]:
    size = (end - start) // HOUR_MS + 1
    body = {"size": size, "query": {"bool": {"filter": [{"term": {"scope": SCOPE_HOUR_MARKER}},
                                                         time_range(start, end)]}},
            "_source": ["@timestamp", "written_at", "request_count"], "sort": [{"@timestamp": "asc"}]}
    answer = session.search(names.days(METRICS_1H, start, end), body)
    markers = {}
    for hit in answer.get("hits", {}).get("hits", []):
        source = hit["_source"]
        hour, written = parse_timestamp(source["@timestamp"]), parse_timestamp(source["written_at"])
        if hour is not None and written is not None:
            markers[hour] = HourSource(written, int(source["request_count"]))
    return markers


def _read_hour(session: SearchSession, names: IndexNames, hour: int) -> dict[CellKey, RollupCell]:
    """Every 1-minute document of the hour (all partitions, all segments), summed per key."""
    query = {"bool": {"filter": [time_range(hour, hour + HOUR_MS)]}}
    cells: dict[CellKey, RollupCell] = {}
    for _start, doc in session.scan(names.days(METRICS_1M, hour, hour + HOUR_MS), query):
        key = cell_key(doc)
        cell = cells.get(key)
        if cell is None:
            cells[key] = RollupCell.from_doc(doc)
        else:
            cell.merge(RollupCell.from_doc(doc))
    return cells


class _HourWriter:
    """Overwrites an hour's documents with one bulk request, then writes its marker."""

    def __init__(self, client: Any, names: IndexNames, creator: IndexCreator, request_timeout_s: float) -> None:
        self._client = client
        self._names = names
        self._creator = creator
        self._timeout = request_timeout_s
        self._encoder = msgspec.json.Encoder()
        self.requests = 0

    def write(self, hour: int, cells: dict[CellKey, RollupCell], source: HourSource, now_ms: int) -> int:
        index = self._names.daily(METRICS_1H, hour)
        self._creator.ensure(METRICS_1H, index)
        docs = [cell.to_doc(RollupKey(TIER_1H, hour, service, environment, scope, endpoint), now_ms)
                for (scope, service, environment, endpoint), cell in cells.items()]
        if docs:
            self._bulk(index, docs)
        marker = RollupCell().to_doc(hour_marker_key(hour), source.written_ms)
        marker.request_count = source.request_count
        self._bulk(index, [marker])
        return len(docs) + 1

    def _bulk(self, index: str, docs: list[RollupDoc]) -> None:
        body = bytearray()
        for doc in docs:
            self._encoder.encode_into({"index": {"_index": index, "_id": doc.rollup_id}}, body, -1)
            body += b"\n"
            self._encoder.encode_into(doc, body, -1)
            body += b"\n"
        answer = self._client.bulk(body=bytes(body), request_timeout=self._timeout)
        self.requests += 1
        if answer.get("errors"):
            failed = [item for item in answer["items"] if item.get("index", {}).get("status", 500) >= 300]
            raise CompactionError(f"{len(failed)} of {len(docs)} hourly rollup writes failed: {failed[:1]}")


class CompactionError(RuntimeError):
    """Some 1-hour documents could not be written; the hour keeps no new marker and is retried."""


class HourlyCompactor:
    """Runs ``compact_hours`` every ``every_ms`` from ``poll(now_ms)`` (the supervisor's loop calls it)."""

    def __init__(self, client: Any, names: IndexNames, *, every_ms: int = 300_000, grace_ms: int = 300_000,
                 lookback_hours: int = 48) -> None:
        self._client = client
        self._names = names
        self._every_ms = every_ms
        self._grace_ms = grace_ms
        self._lookback_hours = lookback_hours
        self._creator = IndexCreator(client, names)
        self._due_ms = 0

    def poll(self, now_ms: int) -> CompactionReport | None:
        """Compact when due; a failure is logged and retried at the next due time, never raised."""
        if now_ms < self._due_ms:
            return None
        self._due_ms = now_ms + self._every_ms
        try:
            report = compact_hours(self._client, self._names, now_ms, self._grace_ms,
                                   lookback_hours=self._lookback_hours, creator=self._creator)
        except (OpenSearchException, ReadTimeout, CompactionError) as exc:
            log.warning("hourly rollup compaction failed, retrying in %d s: %s", self._every_ms // 1000, exc)
            return None
        if report.hours_compacted:
            log.info("hourly rollups: compacted %d hours (%d documents read, %d written)",
                     len(report.hours_compacted), report.documents_read, report.documents_written)
        return report
