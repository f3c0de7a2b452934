"""Search routes: logs (full-text on the message) and spans, filtered, sorted and paged with exact totals."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import falcon

from panopticon.api import params as p
from panopticon.api import queries as q
from panopticon.api.items import LogsPage, SpansPage, log_item, span_item
from panopticon.api.params import TimeRange
from panopticon.api.resources.base import Resource
from panopticon.api.resources.red_routes import ENVIRONMENT
from panopticon.api.resources.traces import check_window
from panopticon.common.indices import LOGS, TRACES
from panopticon.common.schema import KINDS, LEVELS, STATUSES

SERVICE_NAME = p.Text("service_name", "Exact service name.", max_length=256)
TRACE_ID = p.Text("trace_id", "Exact trace id.", max_length=256)
TIMES = p.Times(window_ms=15 * 60_000)
PAGE = p.Int("page", "Page number, from 1.", default=1, minimum=1, maximum=10_000)


class SearchResource(Resource, ABC):
    """A search route: the filters of ``query``, then one page of hits in the asked order, with the exact total."""

    INDEX: ClassVar[str]
    ITEM: ClassVar[staticmethod[[dict[str, Any]], Any]]
    SORTS: ClassVar[dict[str, list[q.Query]]]
    DEFAULT_SORT: ClassVar[str]
    SIZE: ClassVar[p.Int]
    SORT: ClassVar[p.Choice]

    @abstractmethod
    def query(self, req: falcon.Request, window: TimeRange) -> q.Query:
        """The route's filters."""

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        window = TIMES.parse(req, self.deps.now_ms())
        query = self.query(req, window)
        page, size, sort = PAGE.parse(req), self.SIZE.parse(req), self.SORT.parse(req) or self.DEFAULT_SORT
        check_window(page, size)
        body = q.page_body(query, self.SORTS[sort], page, size)
        resp.media = self.cached(req, window, lambda: self.answer(window, body, page, size))

    def answer(self, window: TimeRange, body: q.Query, page: int, size: int) -> Any:
        answer = self.deps.search.search(self.INDEX, window, body)
        return self.RESPONSE(total=q.total(answer), page=page, size=size, items=[self.ITEM(h) for h in q.hits(answer)])


class LogsResource(SearchResource):
    SUMMARY = "Log search: filters, full-text message search (every word must match), time order, paging."
    RESPONSE = LogsPage
    INDEX = LOGS
    ITEM = staticmethod(log_item)
    SORTS = q.LOG_SORTS
    DEFAULT_SORT = "desc"
    LEVEL = p.Choice("level", "Log level (case-insensitive; WARNING = WARN, CRITICAL = FATAL).", choices=LEVELS,
                     aliases=(("WARNING", "WARN"), ("CRITICAL", "FATAL")))
    SPAN_ID = p.Text("span_id", "Exact span id.", max_length=256)
    MESSAGE = p.Text("message", "Full-text search in the message: all words must match.")
    SIZE = p.Int("size", "Logs per page.", default=50, minimum=1, maximum=10_000)
    SORT = p.Choice("sort", "Time order.", choices=tuple(SORTS), default=DEFAULT_SORT)
    PARAMS = (SERVICE_NAME, ENVIRONMENT, LEVEL, TRACE_ID, SPAN_ID, MESSAGE, TIMES, PAGE, SIZE, SORT)

    def query(self, req: falcon.Request, window: TimeRange) -> q.Query:
        return q.filtered(window, q.full_text("message", self.MESSAGE.parse(req)),
                          service_name=SERVICE_NAME.parse(req), environment=ENVIRONMENT.parse(req),
                          level=self.LEVEL.parse(req), trace_id=TRACE_ID.parse(req), span_id=self.SPAN_ID.parse(req))


class SpansResource(SearchResource):
    SUMMARY = "Span search: filters, duration bounds, sort and paging."
    RESPONSE = SpansPage
    INDEX = TRACES
    ITEM = staticmethod(span_item)
    SORTS = q.SPAN_SORTS
    DEFAULT_SORT = "start_time_desc"
    NAME = p.Text("name", "Exact span name.", max_length=512)
    KIND = p.Choice("kind", "Span kind (case-insensitive).", choices=KINDS)
    STATUS = p.Choice("status", "Span status (case-insensitive).", choices=STATUSES)
    MIN_DURATION = p.Float("min_duration_ms", "Only spans at least this long (ms).")
    MAX_DURATION = p.Float("max_duration_ms", "Only spans at most this long (ms).")
    PARENT = p.Text("parent_span_id", "Exact parent span id.", max_length=256)
    SIZE = p.Int("size", "Spans per page.", default=50, minimum=1, maximum=1000)
    SORT = p.Choice("sort", "Order of the spans.", choices=tuple(SORTS), default=DEFAULT_SORT)
    PARAMS = (SERVICE_NAME, ENVIRONMENT, NAME, KIND, STATUS, MIN_DURATION, MAX_DURATION, TRACE_ID, PARENT, TIMES,
              PAGE, SIZE, SORT)

    def query(self, req: falcon.Request, window: TimeRange) -> q.Query:
        durations = q.duration_range(self.MIN_DURATION.parse(req), self.MAX_DURATION.parse(req))
        return q.filtered(window, durations, service_name=SERVICE_NAME.parse(req),
                          environment=ENVIRONMENT.parse(req), name=self.NAME.parse(req), kind=self.KIND.parse(req),
                          status=self.STATUS.parse(req), trace_id=TRACE_ID.parse(req),
                          parent_span_id=self.PARENT.parse(req))
