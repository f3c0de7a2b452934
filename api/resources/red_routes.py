"""The RED routes: service overview, a service's time series, its endpoint ranking (from ``RedSource``)."""

from __future__ import annotations

import falcon

from panopticon.api import params as p
from panopticon.api.items import EndpointRow, EndpointsAnswer, Point, Series, ServiceRow, ServicesAnswer
from panopticon.api.params import TimeRange
from panopticon.api.red import bucket_starts
from panopticon.api.resources.base import Resource
from panopticon.common.clock import format_timestamp
from panopticon.common.rollup_reader import RedTotals

SORT_KEYS = ("request_count", "latency_p95_ms", "error_rate")
METRICS = ("http_requests_total", "latency_p95_ms", "latency_p90_ms", "latency_p50_ms", "error_rate")
ON_REQUEST = ("latency_p99_ms",)  # answered only when asked for by `metric` (the default list stays as it was)

ENVIRONMENT = p.Environment("environment", "Environment; normalized like ingest (`prod` = `production`).")
NAME_FILTER = p.Text("name_filter", "Case-insensitive substring of the name.", max_length=256)


def sort_value(totals: RedTotals, sort_by: str) -> float:
    if sort_by == "latency_p95_ms":
        return totals.p95_ms
    if sort_by == "error_rate":
        return totals.error_rate
    return float(totals.request_count)


def metric_value(totals: RedTotals, metric: str) -> float:
    values = {
        "http_requests_total": float(totals.request_count),
        "latency_p95_ms": totals.p95_ms,
        "latency_p90_ms": totals.p90_ms,
        "latency_p50_ms": totals.p50_ms,
        "latency_p99_ms": totals.p99_ms,
        "error_rate": totals.error_rate,
    }
    return values[metric]


def _ms(value: float) -> float:
    return round(value, 3)


class ServicesResource(Resource):
    SUMMARY = "Service overview: requests, p95 latency and error rate per service and environment."
    RESPONSE = ServicesAnswer
    TIMES = p.Times(window_ms=60 * 60_000)
    SORT_BY = p.Choice("sort_by", "Descending order by this number.", choices=SORT_KEYS, default="request_count")
    LIMIT = p.Int("limit", "Most rows answered.", default=50, minimum=1, maximum=1000)
    PARAMS = (TIMES, ENVIRONMENT, NAME_FILTER, SORT_BY, LIMIT)

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        window = self.TIMES.parse(req, self.deps.now_ms())
        env, needle = ENVIRONMENT.parse(req), NAME_FILTER.parse(req)
        sort_by, limit = self.SORT_BY.parse(req) or "request_count", self.LIMIT.parse(req)
        resp.media = self.cached(req, window, lambda: self.answer(window, env, needle, sort_by, limit))

    def answer(self, window: TimeRange, env: str | None, needle: str | None, sort_by: str,
               limit: int) -> ServicesAnswer:
        rows = self.deps.red.services(window, env)
        if needle:
            rows = [row for row in rows if needle.casefold() in row.service_name.casefold()]
        rows.sort(key=lambda r: (-sort_value(r.totals, sort_by), r.service_name, r.environment))
        services = [
            ServiceRow(service_name=r.service_name, environment=r.environment,
                       request_count=r.totals.request_count, latency_p95_ms=_ms(r.totals.p95_ms),
                       error_rate=r.totals.error_rate)
            for r in rows[:limit]
        ]
        return ServicesAnswer(from_=window.from_iso, to=window.to_iso, environment=env, services=services)


class MetricsResource(Resource):
    SUMMARY = "RED time series of a service, one point per interval across the range (empty buckets are 0)."
    RESPONSE = list[Series]
    TIMES = p.Times(window_ms=15 * 60_000)
    METRIC = p.Choice("metric", "Only this series (default: all but `latency_p99_ms`, in this order).",
                      choices=METRICS + ON_REQUEST)
    INTERVAL = p.Interval("interval", "Bucket width such as `30s`, `5m`, `1h`; otherwise automatic by range.")
    PARAMS = (METRIC, TIMES, ENVIRONMENT, INTERVAL)

    def on_get(self, req: falcon.Request, resp: falcon.Response, service: str) -> None:
        window = self.TIMES.parse(req, self.deps.now_ms())
        metric, env = self.METRIC.parse(req), ENVIRONMENT.parse(req)
        interval_ms = self.INTERVAL.parse(req, window)
        metrics = (metric,) if metric else METRICS
        resp.media = self.cached(req, window, lambda: self.answer(service, window, env, interval_ms, metrics))

    def answer(self, service: str, window: TimeRange, env: str | None, interval_ms: int,
               metrics: tuple[str, ...]) -> list[Series]:
        series = self.deps.red.series(service, window, env, interval_ms)
        found, empty = {b.start_ms: b.totals for b in series.buckets}, RedTotals()
        buckets = [(start, found.get(start, empty)) for start in bucket_starts(window, series.interval_ms)]
        return [
            Series(metric_name=metric, service_name=service, environment=env or "all",
                   points=[Point(timestamp=format_timestamp(start), value=metric_value(totals, metric))
                           for start, totals in buckets])
            for metric in metrics
        ]


class EndpointsResource(Resource):
    SUMMARY = "Endpoint ranking of a service (an endpoint is the name of a SERVER span)."
    RESPONSE = EndpointsAnswer
    TIMES = p.Times(window_ms=60 * 60_000)
    SORT_BY = p.Choice("sort_by", "Descending order by this number (default `request_count`).", choices=SORT_KEYS)
    METRIC = p.Choice("metric", "Alias of `sort_by` (the original frontend's name).", choices=SORT_KEYS)
    LIMIT = p.Int("limit", "Most endpoints answered.", default=10, minimum=1, maximum=1000)
    PARAMS = (TIMES, ENVIRONMENT, NAME_FILTER, SORT_BY, METRIC, LIMIT)

    def on_get(self, req: falcon.Request, resp: falcon.Response, service: str) -> None:
        window = self.TIMES.parse(req, self.deps.now_ms())
        env, needle = ENVIRONMENT.parse(req), NAME_FILTER.parse(req)
        chosen, alias = self.SORT_BY.parse(req), self.METRIC.parse(req)
        sort_by, limit = chosen or alias or "request_count", self.LIMIT.parse(req)
        resp.media = self.cached(req, window, lambda: self.answer(service, window, env, needle, sort_by, limit))

    def answer(self, service: str, window: TimeRange, env: str | None, needle: str | None, sort_by: str,
               limit: int) -> EndpointsAnswer:
        rows = self.deps.red.endpoints(service, window, env)
        if needle:
            rows = [row for row in rows if needle.casefold() in row.endpoint.casefold()]
        rows.sort(key=lambda r: (-sort_value(r.totals, sort_by), r.endpoint))
        endpoints = [
            EndpointRow(endpoint_name=r.endpoint, service_name=service, environment=env or "all",
                        request_count=r.totals.request_count, latency_p95_ms=_ms(r.totals.p95_ms),
                        error_rate=r.totals.error_rate)
            for r in rows[:limit]
        ]
        return EndpointsAnswer(service_name=service, environment=env, from_=window.from_iso, to=window.to_iso,
                               endpoints=endpoints)
