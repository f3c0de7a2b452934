"""Reads RED numbers (requests, errors, latency percentiles) from the rollups, never with ``percentiles``.

Where the numbers come from (``plan_read``):

- sub-minute intervals on short ranges: raw SERVER spans, bucketed on the server by ``date_histogram`` and
  one ``histogram`` per latency octave of the observed min..max band (``common.histogram``'s grid, exactly);
- otherwise 1-minute rollup documents; a window counts when its start lies in ``[from, to)``;
- when the interval is a whole number of hours, or the range is longer than a day (the interval is then
  widened to whole hours: ``Series.interval_ms`` says what was used), or for totals over a range holding a
  whole hour: 1-hour documents for the hours the compactor has marked done, 1-minute documents elsewhere.

Reads page with ``search_after`` on ``(@timestamp, rollup_id)``, sum every partition and delta document of
a window, and count their search requests and documents in ``ReadStats``. Every request has a bounded
timeout, and a read as a whole a deadline.

Where the windows come from is a ``WindowSource``: ``StoredWindows`` (the default) reads them from the
cluster on every read; the query API plugs in a cache of its own (``api.window_cache``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, Literal, Protocol, cast

import msgspec

from panopticon.common.indices import TRACES, IndexNames
from panopticon.common.rollup import (
    SCOPE_ENDPOINT,
    SCOPE_HOUR_MARKER,
    SCOPE_SERVICE,
    TIER_1H,
    TIER_1M,
    TIER_KIND,
    CellKey,
    RollupCell,
    cell_key,
)
from panopticon.common.schema import RollupDoc
from panopticon.common.span_histograms import SpanBuckets, span_histogram_aggs

MINUTE_MS, HOUR_MS, DAY_MS = 60_000, 3_600_000, 86_400_000
PAGE_SIZE = 5_000
DOC_FIELDS = ["@timestamp", "service_name", "environment", "endpoint", "scope", "request_count", "error_count",
               "duration_sum", "duration_min", "duration_max", "hist_index", "hist_count"]
Source = Literal["raw", "rollup"]


class ReadTimeout(TimeoutError):
    """The read as a whole ran past its deadline."""


class RollupQuery(msgspec.Struct, frozen=True, kw_only=True):
    """Which cells to read: ``None`` means all. ``environment`` must already be normalized."""

    scope: Literal["service", "endpoint", "edge"] = "service"
    service: str | None = None
    environment: str | None = None
    endpoint: str | None = None


class RedTotals(msgspec.Struct, frozen=True, kw_only=True):
    request_count: int = 0
    error_count: int = 0
    error_rate: float = 0.0
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    avg_ms: float = 0.0

    @classmethod
    def of(cls, cell: RollupCell) -> RedTotals:
        p50, p90, p95, p99 = cell.percentiles((50, 90, 95, 99))
        return cls(request_count=cell.request_count, error_count=cell.error_count, error_rate=cell.error_rate,
                   p50_ms=p50, p90_ms=p90, p95_ms=p95, p99_ms=p99, avg_ms=cell.avg_ms)


class RedPoint(msgspec.Struct, frozen=True, kw_only=True):
    start_ms: int
    totals: RedTotals


class GroupTotals(msgspec.Struct, frozen=True, kw_only=True):
    service_name: str
    environment: str | None  # None: summed over every environment
    endpoint: str | None  # None: a per-service row
    totals: RedTotals


class ReadStats(msgspec.Struct, kw_only=True):
    """What one read cost: search requests, documents read, aggregation buckets read, wall time."""

    requests: int = 0
    documents: int = 0
    agg_buckets: int = 0
    took_ms: int = 0
    elapsed_ms: float = 0.0
    tiers: list[str] = msgspec.field(default_factory=list)


class Series(msgspec.Struct, kw_only=True):
    from_ms: int
    to_ms: int
    interval_ms: int
    points: list[RedPoint]
    totals: RedTotals
    stats: ReadStats


class Totals(msgspec.Struct, kw_only=True):
    from_ms: int
    to_ms: int
    totals: RedTotals
    stats: ReadStats


class Grouped(msgspec.Struct, kw_only=True):
    from_ms: int
    to_ms: int
    groups: list[GroupTotals]  # most requests first
    stats: ReadStats


class RangeCells(msgspec.Struct, kw_only=True):
    from_ms: int
    to_ms: int
    cells: dict[CellKey, RollupCell]  # summed over the range, per (scope, service, environment, endpoint)
    stats: ReadStats


class ReadPlan(msgspec.Struct, frozen=True, kw_only=True):
    source: Source
    interval_ms: int
    hourly: bool


def ceil_to(value: int, step: int) -> int:
    """``value`` rounded up to a multiple of ``step``."""
    return -(-value // step) * step


def plan_read(from_ms: int, to_ms: int, interval_ms: int, *, raw_max_range_ms: int = HOUR_MS,
              raw_max_buckets: int = 400, long_range_ms: int = DAY_MS) -> ReadPlan:
    """Choose raw spans, the 1-minute tier, or the 1-hour tier (with 1-minute fallback) for a series."""
    span = to_ms - from_ms
    if interval_ms % MINUTE_MS and span <= raw_max_range_ms and span <= raw_max_buckets * interval_ms:
        return ReadPlan(source="raw", interval_ms=interval_ms, hourly=False)
    interval = ceil_to(max(interval_ms, MINUTE_MS), MINUTE_MS)
    if span > long_range_ms or interval % HOUR_MS == 0:
        return ReadPlan(source="rollup", interval_ms=ceil_to(interval, HOUR_MS), hourly=True)
    return ReadPlan(source="rollup", interval_ms=interval, hourly=False)


def full_hours(from_ms: int, to_ms: int) -> tuple[int, int]:
    """``[first, end)``: the whole hours inside ``[from_ms, to_ms)`` (empty when first >= end)."""
    return ceil_to(from_ms, HOUR_MS), to_ms - to_ms % HOUR_MS


def complement(from_ms: int, to_ms: int, hours: list[int]) -> list[tuple[int, int]]:
    """``[from, to)`` minus the given (sorted) whole hours, as ``[start, end)`` pieces."""
    pieces, cursor = [], from_ms
    for hour in hours:
        if hour > cursor:
            pieces.append((cursor, hour))
        cursor = max(cursor, hour + HOUR_MS)
    if cursor < to_ms:
        pieces.append((cursor, to_ms))
    return pieces


class SearchSession:
    """One read (or one compaction): bounded requests against a deadline, counted in ``stats``."""

    def __init__(self, client: Any, timeout_s: float, request_timeout_s: float,
                 clock: Callable[[], float]) -> None:
        self.client = client
        self.clock = clock
        self.started = clock()
        self.deadline = self.started + timeout_s
        self.request_timeout_s = request_timeout_s
        self.stats = ReadStats()

    def search(self, indices: list[str], body: dict[str, Any], filter_path: str | None = None) -> Any:
        remaining = self.deadline - self.clock()
        if remaining <= 0:
            raise ReadTimeout(f"rollup read ran past its deadline after {self.stats.requests} requests")
        params: dict[str, Any] = {"ignore_unavailable": "true", "allow_no_indices": "true"}
        if filter_path:
            params["filter_path"] = filter_path
        answer = self.client.search(index=",".join(indices), body=body, params=params,
                                    request_timeout=min(remaining, self.request_timeout_s))
        if answer.get("timed_out"):
            raise ReadTimeout("the search server timed out on a rollup read")
        self.stats.requests += 1
        self.stats.took_ms += int(answer.get("took", 0))
        return answer

    def scan(self, indices: list[str], query: dict[str, Any],
             page_size: int = PAGE_SIZE) -> Iterator[tuple[int, RollupDoc]]:
        """Every matching rollup document as ``(window start ms, doc)``, paged with ``search_after``."""
        body: dict[str, Any] = {"size": page_size, "query": query, "_source": DOC_FIELDS,
                                "sort": [{"@timestamp": "asc"}, {"rollup_id": "asc"}], "track_total_hits": False}
        while True:
            hits = self.search(indices, body, "took,timed_out,hits.hits._source,hits.hits.sort")
            page = hits.get("hits", {}).get("hits", [])
            self.stats.documents += len(page)
            for hit in page:
                yield int(hit["sort"][0]), msgspec.convert(hit["_source"], RollupDoc)
            if len(page) < page_size:
                return
            body["search_after"] = page[-1]["sort"]

    def finish(self) -> ReadStats:
        self.stats.elapsed_ms = round((self.clock() - self.started) * 1000, 3)
        return self.stats


def _terms(query: RollupQuery) -> list[dict[str, Any]]:
    clauses: list[dict[str, Any]] = [{"term": {"scope": query.scope}}]
    for field, value in (("service_name", query.service), ("environment", query.environment),
                         ("endpoint", query.endpoint)):
        if value is not None:
            clauses.append({"term": {field: value}})
    return clauses


def time_range(start: int, end: int) -> dict[str, Any]:
    return {"range": {"@timestamp": {"gte": start, "lt": end, "format": "epoch_millis"}}}


def pieces_query(query: RollupQuery, pieces: list[tuple[int, int]]) -> dict[str, Any]:
    ranges = [time_range(start, end) for start, end in pieces]
    return {"bool": {"filter": _terms(query), "should": ranges, "minimum_should_match": 1}}


WindowCells = tuple[int, Mapping[CellKey, RollupCell]]  # a window's (or a whole day's) start and its cells
Placer = Callable[[int, CellKey], Hashable]


class WindowSource(Protocol):
    """Where a read gets its rollup windows. The cells it gives are never modified by the reader."""

    def hours(self, session: SearchSession, query: RollupQuery, first: int, end: int,
              whole_days: bool) -> tuple[list[WindowCells], list[int]]:
        """The 1-hour cells of the hours in ``[first, end)`` the compactor marked done, and those hours.
        With ``whole_days``, a UTC day whose 24 hours are all marked may come as one entry (its start)."""
        ...

    def minutes(self, session: SearchSession, query: RollupQuery,
                pieces: list[tuple[int, int]]) -> Iterable[WindowCells]:
        """The 1-minute cells of the windows that start inside the pieces."""
        ...


class StoredWindows:
    """``WindowSource`` that reads the cluster on every call."""

    def __init__(self, names: IndexNames, page_size: int = PAGE_SIZE) -> None:
        self._names = names
        self._page_size = page_size

    def hours(self, session: SearchSession, query: RollupQuery, first: int, end: int,
              whole_days: bool) -> tuple[list[WindowCells], list[int]]:
        data = {"bool": {"filter": _terms(query)}}
        marker = {"term": {"scope": SCOPE_HOUR_MARKER}}
        search = {"bool": {"filter": [time_range(first, end)], "should": [data, marker],
                           "minimum_should_match": 1}}
        marked: set[int] = set()
        pending: list[tuple[int, RollupDoc]] = []
        for start, doc in session.scan(self.indices(TIER_1H, [(first, end)]), search, self._page_size):
            if doc.scope == SCOPE_HOUR_MARKER:
                marked.add(start)
            else:
                pending.append((start, doc))
        # an unmarked hour may be half written: the 1-minute tier answers it
        windows: list[WindowCells] = [(start, {cell_key(doc): RollupCell.from_doc(doc)})
                                      for start, doc in pending if start in marked]
        return windows, sorted(marked)

    def minutes(self, session: SearchSession, query: RollupQuery,
                pieces: list[tuple[int, int]]) -> Iterable[WindowCells]:
        for start, doc in session.scan(self.indices(TIER_1M, pieces), pieces_query(query, pieces), self._page_size):
            yield start, {cell_key(doc): RollupCell.from_doc(doc)}

    def indices(self, tier: str, pieces: list[tuple[int, int]]) -> list[str]:
        kind = TIER_KIND[tier]
        names: dict[str, None] = {}
        for start, end in pieces:
            names.update(dict.fromkeys(self._names.days(kind, start, end)))
        return list(names)


class RollupReader:
    """Answers RED questions from rollup documents (and raw spans for sub-minute series)."""

    def __init__(self, client: Any, names: IndexNames, *, timeout_s: float = 10.0,
                 request_timeout_s: float = 5.0, page_size: int = PAGE_SIZE,
                 clock: Callable[[], float] = time.monotonic, windows: WindowSource | None = None) -> None:
        self._client = client
        self._names = names
        self._timeout_s = timeout_s
        self._request_timeout_s = request_timeout_s
        self._page_size = page_size
        self._clock = clock
        self._windows = windows or StoredWindows(names, page_size)

    # ------------------------------------------------------------------ public questions

    def series(self, query: RollupQuery, from_ms: int, to_ms: int, interval_ms: int) -> Series:
        """One point per interval bucket (epoch-aligned) across ``[from_ms, to_ms)``, empty ones included."""
        plan = plan_read(from_ms, to_ms, interval_ms)
        session = self._session()
        interval = plan.interval_ms
        if plan.source == "raw":
            cells = self._raw_cells(session, query, from_ms, to_ms, interval)
        else:
            cells = self._read_cells(session, query, from_ms, to_ms, plan.hourly,
                                     lambda start, _key: start - start % interval, interval % DAY_MS == 0)
        first = from_ms - from_ms % interval
        points = [RedPoint(start_ms=start, totals=_totals(cells.get(start)))
                  for start in range(first, to_ms, interval)]
        total = _merged(cells.values())
        return Series(from_ms=from_ms, to_ms=to_ms, interval_ms=interval, points=points,
                      totals=RedTotals.of(total), stats=session.finish())

    def totals(self, query: RollupQuery, from_ms: int, to_ms: int) -> Totals:
        session = self._session()
        cells = self._read_cells(session, query, from_ms, to_ms, True, lambda _start, _key: None, True)
        return Totals(from_ms=from_ms, to_ms=to_ms, totals=_totals(cells.get(None)), stats=session.finish())

    def grouped(self, query: RollupQuery, from_ms: int, to_ms: int) -> Grouped:
        """Totals per service x environment (scope ``service``) or per endpoint (scope ``endpoint``;
        per environment too when ``query.environment`` is given, else summed over environments)."""
        session = self._session()
        by_env = query.scope == SCOPE_SERVICE or query.environment is not None

        def group(_start: int, key: CellKey) -> Hashable:
            _scope, service, environment, endpoint = key
            return service, environment if by_env else None, endpoint if query.scope == SCOPE_ENDPOINT else None

        cells = self._read_cells(session, query, from_ms, to_ms, True, group, True)
        groups = [GroupTotals(service_name=key[0], environment=key[1], endpoint=key[2], totals=RedTotals.of(cell))
                  for key, cell in cells.items() if isinstance(key, tuple)]
        groups.sort(key=lambda g: (-g.totals.request_count, g.service_name, g.environment or "", g.endpoint or ""))
        return Grouped(from_ms=from_ms, to_ms=to_ms, groups=groups, stats=session.finish())

    def cells(self, query: RollupQuery, from_ms: int, to_ms: int) -> RangeCells:
        """The cells of the range summed per key, for callers that merge them their own way (the service map
        sums edges over environments, and a node over its edges). Read like ``grouped``."""
        session = self._session()
        cells = self._read_cells(session, query, from_ms, to_ms, True, lambda _start, key: key, True)
        return RangeCells(from_ms=from_ms, to_ms=to_ms, cells=cast(dict[CellKey, RollupCell], cells),
                          stats=session.finish())

    # ------------------------------------------------------------------ rollup documents

    def _session(self) -> SearchSession:
        return SearchSession(self._client, self._timeout_s, self._request_timeout_s, self._clock)

    def _read_cells(self, session: SearchSession, query: RollupQuery, from_ms: int, to_ms: int, hourly: bool,
                    place: Placer, whole_days: bool) -> dict[Hashable, RollupCell]:
        """Merge the windows of ``[from, to)`` into cells keyed by ``place(window start, key)``; ``whole_days``:
        the placing does not split a UTC day, so a day may come as one entry."""
        cells: dict[Hashable, RollupCell] = {}
        hours: list[int] = []
        first_hour, end_hour = full_hours(from_ms, to_ms)
        if hourly and first_hour < end_hour:
            session.stats.tiers.append(TIER_1H)
            hourly_windows, hours = self._windows.hours(session, query, first_hour, end_hour, whole_days)
            _place(cells, place, hourly_windows)
        pieces = complement(from_ms, to_ms, hours)
        if pieces:
            session.stats.tiers.append(TIER_1M)
            _place(cells, place, self._windows.minutes(session, query, pieces))
        return cells

    # ------------------------------------------------------------------ raw spans

    def _raw_cells(self, session: SearchSession, query: RollupQuery, from_ms: int, to_ms: int,
                   interval_ms: int) -> dict[Hashable, RollupCell]:
        session.stats.tiers.append("raw")
        indices = self._names.days(TRACES, from_ms, to_ms)
        filters = _span_filters(query, from_ms, to_ms)
        band = session.search(indices, {"size": 0, "query": {"bool": {"filter": filters}}, "aggs": {
            "min": {"min": {"field": "duration_ms"}}, "max": {"max": {"field": "duration_ms"}}}})
        low, high = band["aggregations"]["min"]["value"], band["aggregations"]["max"]["value"]
        if low is None or high is None:
            return {}
        aggs = span_histogram_aggs(low, high, interval_ms)
        answer = session.search(indices, {"size": 0, "query": {"bool": {"filter": filters}}, "aggs": aggs})
        buckets = SpanBuckets.read(answer["aggregations"])
        session.stats.agg_buckets += buckets.bucket_count
        return {start: cell for start, cell in buckets.cells.items()}


def _span_filters(query: RollupQuery, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
    filters: list[dict[str, Any]] = [{"term": {"kind": "SERVER"}}, time_range(from_ms, to_ms)]
    for field, value in (("service_name", query.service), ("environment", query.environment),
                         ("name", query.endpoint)):
        if value is not None:
            filters.append({"term": {field: value}})
    return filters


def add_cell(cells: dict[Any, RollupCell], key: Hashable, cell: RollupCell) -> None:
    """Sum ``cell`` into ``cells[key]``; a new total is a copy, so ``cell`` stays untouched."""
    total = cells.get(key)
    if total is None:
        cells[key] = cell.copy()
    else:
        total.merge(cell)


def _place(cells: dict[Hashable, RollupCell], place: Placer, windows: Iterable[WindowCells]) -> None:
    """Sum every window's cells into ``cells``, each under ``place(window start, key)``."""
    for start, window in windows:
        for key, cell in window.items():
            add_cell(cells, place(start, key), cell)


def _merged(cells: Iterable[RollupCell]) -> RollupCell:
    total: RollupCell | None = None
    for cell in cells:
        if total is None:
            total = cell.copy()
        else:
            total.merge(cell)
    return total or RollupCell()


def _totals(cell: RollupCell | None) -> RedTotals:
    return RedTotals.of(cell) if cell is not None else RedTotals()

