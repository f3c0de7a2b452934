"""Prometheus metrics of the API: requests and latency per route, method and status.

Under gunicorn the launcher sets ``PROMETHEUS_MULTIPROC_DIR`` before Python starts (``api.main``); each worker
then writes its own mmap files and the exposition merges them at scrape time. Without it (tests, a single
process) the app's own registry is exposed.
"""

from __future__ import annotations

import os

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ApiMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("panopticon_api_requests", "HTTP requests answered.",
                                ["route", "method", "status"], registry=self.registry)
        self.latency = Histogram("panopticon_api_request_duration_seconds", "Time to answer a request.",
                                 ["route", "method", "status"], buckets=_BUCKETS, registry=self.registry)

    def observe(self, route: str, method: str, status: str, seconds: float) -> None:
        self.requests.labels(route, method, status).inc()
        self.latency.labels(route, method, status).observe(seconds)

    def exposition(self) -> bytes:
        if os.environ.get(MULTIPROC_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)
