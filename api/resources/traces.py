"""Trace routes: problem traces of an endpoint, root traces of a service, one trace with its logs."""

from __future__ import annotations

import falcon

from panopticon.api import params as p
from panopticon.api import queries as q
from panopticon.api.errors import BadParam, NotFound
from panopticon.api.items import ProblemTrace, TraceDetail, TracesPage, log_item, problem_trace, root_trace, span_item
from panopticon.api.params import TimeRange
from panopticon.api.resources.base import Resource
from panopticon.api.resources.red_routes import ENVIRONMENT
from panopticon.api.threshold import duration_percentile
from panopticon.common.indices import LOGS, TRACES

MAX_TRACE_SPANS = 10_000
MAX_TRACE_LOGS = 1_000
NEWEST_FIRST = [{"@timestamp": {"order": "desc"}}, {"span_id": {"order": "asc"}}]
TIME_ORDER = [{"@timestamp": {"order": "asc"}}]


def check_window(page: int, size: int) -> None:
    if page * size > q.MAX_WINDOW:
        raise BadParam(f"'page' x 'size' must not go beyond the first {q.MAX_WINDOW} results.", "page")


class EndpointTracesResource(Resource):
    SUMMARY = "Problem traces of one endpoint: its ERROR spans, or its SLOW ones (at or above a percentile)."
    RESPONSE = list[ProblemTrace]
    TIMES = p.Times(window_ms=60 * 60_000)
    STATUS = p.Choice("status", "ERROR: failed requests; SLOW: at or above `slow_percentile`.",
                      required=True, choices=("ERROR", "SLOW"))
    LIMIT = p.Int("limit", "Most traces answered (newest first).", default=20, minimum=1, maximum=200)
    SLOW_PERCENTILE = p.Float("slow_percentile", "Percentile of the endpoint's durations over the range that "
                              "makes a request SLOW.", default=95.0, minimum=50.0, maximum=99.9)
    PARAMS = (STATUS, TIMES, ENVIRONMENT, LIMIT, SLOW_PERCENTILE)

    def on_get(self, req: falcon.Request, resp: falcon.Response, service: str, endpoint: str) -> None:
        window = self.TIMES.parse(req, self.deps.now_ms())
        status, env, limit = self.STATUS.parse(req) or "ERROR", ENVIRONMENT.parse(req), self.LIMIT.parse(req)
        percentile = self.SLOW_PERCENTILE.parse(req) or 95.0
        resp.media = self.cached(
            req, window, lambda: self.answer(service, endpoint, window, env, status, limit, percentile)
        )

    def answer(self, service: str, endpoint: str, window: TimeRange, env: str | None, status: str, limit: int,
               percentile: float) -> list[ProblemTrace]:
        selected = q.filtered(window, service_name=service, name=endpoint, kind="SERVER", environment=env)
        if status == "ERROR":
            query = q.filtered(window, service_name=service, name=endpoint, kind="SERVER", environment=env,
                               status="ERROR")
        else:
            threshold = duration_percentile(self.deps.search, window, selected, percentile)
            if threshold is None:
                return []
            query = q.filtered(window, q.duration_range(threshold, None), service_name=service, name=endpoint,
                               kind="SERVER", environment=env)
        body = {"query": query, "sort": NEWEST_FIRST, "size": limit}
        return [problem_trace(hit) for hit in q.hits(self.deps.search.search(TRACES, window, body))]


class ServiceTracesResource(Resource):
    SUMMARY = "Root traces of a service: SERVER spans without a parent, filtered, sorted and paged."
    RESPONSE = TracesPage
    TIMES = p.Times(window_ms=60 * 60_000)
    STATUS = p.Choice("status", "Only roots of this status.", choices=("OK", "ERROR"))
    MIN_DURATION = p.Float("min_duration_ms", "Only roots at least this long (ms).")
    MAX_DURATION = p.Float("max_duration_ms", "Only roots at most this long (ms).")
    PAGE = p.Int("page", "Page number, from 1.", default=1, minimum=1, maximum=10_000)
    SIZE = p.Int("size", "Roots per page.", default=20, minimum=1, maximum=200)
    SORT = p.Choice("sort", "Order of the roots.", choices=tuple(q.SPAN_SORTS), default="duration_desc")
    PARAMS = (STATUS, MIN_DURATION, MAX_DURATION, TIMES, ENVIRONMENT, PAGE, SIZE, SORT)

    def on_get(self, req: falcon.Request, resp: falcon.Response, service: str) -> None:
        window = self.TIMES.parse(req, self.deps.now_ms())
        status, env = self.STATUS.parse(req), ENVIRONMENT.parse(req)
        durations = q.duration_range(self.MIN_DURATION.parse(req), self.MAX_DURATION.parse(req))
        page, size, sort = self.PAGE.parse(req), self.SIZE.parse(req), self.SORT.parse(req) or "duration_desc"
        check_window(page, size)
        query = q.filtered(window, durations, must_not=q.not_child(), service_name=service, kind="SERVER",
                           environment=env, status=status)
        body = q.page_body(query, q.SPAN_SORTS[sort], page, size)
        resp.media = self.cached(req, window, lambda: self.answer(window, body, page, size))

    def answer(self, window: TimeRange, body: q.Query, page: int, size: int) -> TracesPage:
        answer = self.deps.search.search(TRACES, window, body)
        return TracesPage(total=q.total(answer), page=page, size=size,
                          traces=[root_trace(hit) for hit in q.hits(answer)])


class TraceResource(Resource):
    SUMMARY = "One trace: its spans and logs in time order (at most 10,000 spans and 1,000 logs)."
    RESPONSE = TraceDetail
    SERVICE = p.Text("service", "Only spans and logs of this service.", max_length=256)
    PARAMS = (ENVIRONMENT, SERVICE)

    def on_get(self, req: falcon.Request, resp: falcon.Response, trace_id: str) -> None:
        env, service = ENVIRONMENT.parse(req), self.SERVICE.parse(req)
        query = q.filtered(None, trace_id=trace_id, environment=env, service_name=service)
        resp.media = self.answer(trace_id, query)

    def answer(self, trace_id: str, query: q.Query) -> TraceDetail:
        search = self.deps.search
        spans = search.search(TRACES, None, {"query": query, "sort": TIME_ORDER + [{"span_id": {"order": "asc"}}],
                                             "size": MAX_TRACE_SPANS, "track_total_hits": True})
        logs = search.search(LOGS, None, {"query": query, "sort": TIME_ORDER, "size": MAX_TRACE_LOGS,
                                          "track_total_hits": True})
        span_total, log_total = q.total(spans), q.total(logs)
        if span_total == 0 and log_total == 0:
            raise NotFound(f"No trace with id '{trace_id}'.", "trace_id")
        return TraceDetail(
            trace_id=trace_id,
            spans=[span_item(hit) for hit in q.hits(spans)],
            logs=[log_item(hit) for hit in q.hits(logs)],
            truncated=span_total > MAX_TRACE_SPANS or log_total > MAX_TRACE_LOGS,
        )
