"""Prometheus metrics of the receiver: requests, latency and body sizes per route, spans and logs accepted and
rejected, produce failures by cause.

Under gunicorn the launcher sets ``PROMETHEUS_MULTIPROC_DIR`` before Python starts (``ingest.main``, as for the
query API); each worker writes its own mmap files and ``/metrics`` merges them. Without it (one process) the
receiver's own registry is exposed.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram

from panopticon.common.serving import exposition

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
_BYTES_BUCKETS = tuple(float(1 << shift) for shift in range(10, 26, 2))  # 1 KiB ... 16 MiB


class IngestMetrics:
    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("panopticon_ingest_requests", "HTTP requests answered.", ["route", "status"],
                                registry=self.registry)
        self.latency = Histogram("panopticon_ingest_request_duration_seconds",
                                 "Time to answer a request, Kafka's acknowledgements included.", ["route", "status"],
                                 buckets=_LATENCY_BUCKETS, registry=self.registry)
        self.body_bytes = Histogram("panopticon_ingest_request_body_bytes",
                                    "Request bodies as received (before gzip is undone).", ["route"],
                                    buckets=_BYTES_BUCKETS, registry=self.registry)
        self.spans_accepted = Counter("panopticon_ingest_spans_accepted", "Spans produced to Kafka and acknowledged.",
                                      registry=self.registry)
        self.spans_rejected = Counter("panopticon_ingest_spans_rejected",
                                      "Spans refused as invalid (reported in partial_success).",
                                      registry=self.registry)
        self.logs_accepted = Counter("panopticon_ingest_logs_accepted",
                                     "Logs (log records, span exception events) produced to Kafka and acknowledged.",
                                     registry=self.registry)
        self.logs_rejected = Counter("panopticon_ingest_logs_rejected",
                                     "Logs refused as invalid (reported in partial_success when log records).",
                                     registry=self.registry)
        self.produce_failures = Counter("panopticon_ingest_produce_failures",
                                        "Requests answered 429/503 because Kafka did not take their records.",
                                        ["reason"], registry=self.registry)

    def observe(self, route: str, status: str, seconds: float) -> None:
        self.requests.labels(route, status).inc()
        self.latency.labels(route, status).observe(seconds)

    def exposition(self) -> bytes:
        return exposition(self.registry)
