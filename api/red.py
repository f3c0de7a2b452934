"""RED numbers (rate, errors, duration) behind a small interface, answered from the rollups.

The routes that need latency percentiles (``/query/services``, ``.../endpoints``, ``.../metrics``) ask a
``RedSource``; the real one reads the pre-aggregated rollups (``common.rollup_reader``), whose mergeable
histograms give p50/p90/p95/p99 without the ``percentiles`` aggregation (short series with sub-minute
buckets come from raw spans on the same histogram grid: the reader decides). Tests may inject another source.
"""

from __future__ import annotations

from typing import Protocol

import msgspec

from panopticon.api.cache import ResponseCache
from panopticon.api.metrics import count_search
from panopticon.api.params import TimeRange
from panopticon.api.search import Search
from panopticon.api.window_cache import CachedWindows
from panopticon.common.indices import TRACES
from panopticon.common.rollup_reader import (
    MINUTE_MS,
    ReadStats,
    RedTotals,
    RollupQuery,
    RollupReader,
    WindowSource,
    ceil_to,
    plan_read,
)

ANSWER_TTL_S = 2.0


class ServiceTotals(msgspec.Struct, frozen=True, kw_only=True):
    service_name: str
    environment: str
    totals: RedTotals


class EndpointTotals(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: str
    totals: RedTotals


class Bucket(msgspec.Struct, frozen=True, kw_only=True):
    start_ms: int
    totals: RedTotals


class RedSeries(msgspec.Struct, frozen=True, kw_only=True):
    """Buckets of ``interval_ms`` (the source may widen the asked interval: minute or hour tiers)."""

    interval_ms: int
    buckets: list[Bucket]


class RedSource(Protocol):
    def services(self, window: TimeRange, environment: str | None) -> list[ServiceTotals]:
        """One row per service x environment with SERVER spans in the range."""
        ...

    def endpoints(self, service: str, window: TimeRange, environment: str | None) -> list[EndpointTotals]:
        """One row per endpoint (SERVER span name) of the service, across environments unless one is given."""
        ...

    def series(self, service: str, window: TimeRange, environment: str | None, interval_ms: int) -> RedSeries:
        """Buckets across the range (missing ones count as empty), at the interval actually used."""
        ...


def bucket_starts(window: TimeRange, interval_ms: int) -> list[int]:
    """Bucket starts aligned to the interval (epoch-based, like ``date_histogram``) covering the range."""
    first = window.from_ms - window.from_ms % interval_ms
    return list(range(first, window.to_ms, interval_ms))


def counted(stats: ReadStats) -> None:
    count_search(stats.requests, stats.documents)


def read_minutes(window: TimeRange) -> tuple[int, int]:
    """What a rollup read of ``window`` depends on: a minute window starting at ``m`` (a whole minute) is read
    iff ``from <= m < to``, i.e. iff ``ceil(from) <= m < ceil(to)`` at minute resolution."""
    return ceil_to(window.from_ms, MINUTE_MS), ceil_to(window.to_ms, MINUTE_MS)


class RollupRed:
    """``RedSource`` over ``common.rollup_reader.RollupReader``; its failures pass through ``Search.call``
    (unreachable, timed out or past the read deadline: 503).

    Answers read from rollups are kept ``ANSWER_TTL_S`` per question, keyed by what the read depends on
    (``read_minutes``): a dashboard pinned to an explicit range, or many asking the same one, costs one merge per
    worker every few seconds instead of one per request. Series read from raw spans are not kept."""

    def __init__(self, reader: RollupReader, search: Search, answers: ResponseCache | None = None) -> None:
        self._reader = reader
        self._search = search
        self._answers = answers if answers is not None else ResponseCache(ttl_s=ANSWER_TTL_S)

    def services(self, window: TimeRange, environment: str | None) -> list[ServiceTotals]:
        return self._answers.through(("services", environment, *read_minutes(window)),
                                     lambda: self._services(window, environment))

    def endpoints(self, service: str, window: TimeRange, environment: str | None) -> list[EndpointTotals]:
        return self._answers.through(("endpoints", service, environment, *read_minutes(window)),
                                     lambda: self._endpoints(service, window, environment))

    def series(self, service: str, window: TimeRange, environment: str | None, interval_ms: int) -> RedSeries:
        plan = plan_read(window.from_ms, window.to_ms, interval_ms)
        key = None
        if plan.source == "rollup":  # buckets start at multiples of the plan's interval: whole minutes
            first = window.from_ms - window.from_ms % plan.interval_ms
            key = ("series", service, environment, interval_ms, first, *read_minutes(window))
        return self._answers.through(key, lambda: self._series(service, window, environment, interval_ms))

    def _services(self, window: TimeRange, environment: str | None) -> list[ServiceTotals]:
        query = RollupQuery(scope="service", environment=environment)
        grouped = self._search.call(self._reader.grouped, query, window.from_ms, window.to_ms)
        counted(grouped.stats)
        return [ServiceTotals(service_name=g.service_name, environment=g.environment or "",
                              totals=g.totals) for g in grouped.groups]

    def _endpoints(self, service: str, window: TimeRange, environment: str | None) -> list[EndpointTotals]:
        query = RollupQuery(scope="endpoint", service=service, environment=environment)
        grouped = self._search.call(self._reader.grouped, query, window.from_ms, window.to_ms)
        counted(grouped.stats)
        return [EndpointTotals(endpoint=g.endpoint or "", totals=g.totals) for g in grouped.groups]

    def _series(self, service: str, window: TimeRange, environment: str | None, interval_ms: int) -> RedSeries:
        query = RollupQuery(scope="service", service=service, environment=environment)
        try:
            series = self._search.call(self._reader.series, query, window.from_ms, window.to_ms, interval_ms)
        except KeyError:
            # The reader's raw-span path expects "aggregations", which a search over no existing index
            # omits: only then is the series simply empty.
            if self._search.count(TRACES, window, {"match_all": {}}):
                raise
            return RedSeries(interval_ms=interval_ms, buckets=[])
        counted(series.stats)
        return RedSeries(interval_ms=series.interval_ms,
                         buckets=[Bucket(start_ms=p.start_ms, totals=p.totals) for p in series.points])


def rollup_reader(search: Search, timeout_s: float, windows: WindowSource | None = None) -> RollupReader:
    """The worker's rollup reader (after the fork), bounded by the API's timeout, over the worker's window cache
    (``api.window_cache``) unless another source is given. The RED routes and the service map share it."""
    return RollupReader(search.client, search.names, timeout_s=timeout_s, request_timeout_s=min(timeout_s, 5.0),
                        windows=windows or CachedWindows(search.names))
