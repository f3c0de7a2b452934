"""Prometheus metrics of the API: requests and latency per route, method and status.

Under gunicorn the launcher sets ``PROMETHEUS_MULTIPROC_DIR`` before Python starts (``common.serving``); each worker
then writes its own mmap files and the exposition merges them at scrape time. Without it (tests, a single
process) the app's own registry is exposed.

What each request asked of the search cluster (search requests, documents read: hits returned and rollup
documents scanned by the reader) is tallied per request (``SearchTally``, set by ``api.middleware.Telemetry``
for the request's thread) and counted per route, so a route's cost is visible without a profiler.
"""

from __future__ import annotations

from contextvars import ContextVar, Token

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram

from panopticon.common.serving import exposition

_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class SearchTally:
    """Search requests and documents read while answering one request."""

    __slots__ = ("requests", "documents")

    def __init__(self) -> None:
        self.requests = 0
        self.documents = 0


_current_tally: ContextVar[SearchTally | None] = ContextVar("panopticon_search_tally", default=None)


def start_tally() -> tuple[SearchTally, Token[SearchTally | None]]:
    tally = SearchTally()
    return tally, _current_tally.set(tally)


def end_tally(token: Token[SearchTally | None]) -> None:
    _current_tally.reset(token)


def count_search(requests: int, documents: int) -> None:
    """Adds to the current request's tally (no-op outside a request)."""
    tally = _current_tally.get()
    if tally is not None:
        tally.requests += requests
        tally.documents += documents


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("panopticon_api_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("panopticon_api_request_duration_seconds", "Time to answer a request.",
                                 ["route", "method", "status"], buckets=_BUCKETS, registry=self.registry)
        self.search_requests = Counter("panopticon_api_search_requests", "Search requests sent to the cluster.",
                                       ["route"], registry=self.registry)
        self.search_documents = Counter("panopticon_api_search_documents",
                                        "Documents read from the cluster (hits and rollup documents).",
                                        ["route"], registry=self.registry)

    def observe(self, route: str, method: str, status: str, seconds: float) -> None:
        self.requests.labels(route, method, status).inc()
        self.latency.labels(route, method, status).observe(seconds)

    def observe_search(self, route: str, tally: SearchTally) -> None:
        if tally.requests:
            self.search_requests.labels(route).inc(tally.requests)
            self.search_documents.labels(route).inc(tally.documents)

    def exposition(self) -> bytes:
        return exposition(self.registry)
