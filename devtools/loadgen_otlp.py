"""``panopticon loadgen --otlp http|kafka``: the generator's traffic as OpenTelemetry export requests.

The requests come from ``traffic.otlp`` (the inverse of the contract mapping); this module batches, paces and
sends them, through one of two exporters with the same small lifecycle (``send``, ``wait``, ``close``):

- ``HttpExporter`` posts ``application/x-protobuf`` to ``/v1/traces`` and ``/v1/logs`` (``panopticon ingest``, or any
  OTLP/HTTP receiver), retries 429/502/503/504 and connection failures (honouring ``Retry-After``) within a time
  budget, and counts the events a ``partial_success`` rejected;
- ``KafkaExporter`` writes one request per record to the OTLP topics, unkeyed, as the Collector's kafka exporter
  does with its default encoding ``otlp_proto``.
"""

from __future__ import annotations

import argparse
import email.utils
import http.client
import random
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any, Literal, Protocol, TextIO

from confluent_kafka import Producer
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceResponse

from panopticon.common.clients import producer_config
from panopticon.common.settings import Settings
from panopticon.devtools.loadgen import Clock, Deliveries, Pacer, Progress, Summary
from panopticon.devtools.traffic.otlp import OtlpBatch
from panopticon.devtools.traffic.record import Record

Signal = Literal["traces", "logs"]
SIGNALS: tuple[Signal, Signal] = ("traces", "logs")
Opener = Callable[..., Any]  # urllib.request.urlopen's shape
PROTOBUF = "application/x-protobuf"
RETRYABLE = frozenset({429, 502, 503, 504})
MAX_BACKOFF_S = 5.0
MAX_RETRY_AFTER_S = 30.0


class Exporter(Protocol):
    deliveries: Deliveries
    rejected: int  # events a receiver refused (partial_success)

    def send(self, signal: Signal, body: bytes) -> None: ...

    def wait(self, seconds: float) -> None: ...

    def close(self, timeout_s: float) -> int: ...  # returns the requests still unsent


# ---------------------------------------------------------------- OTLP/HTTP


def retry_after(value: str | None, now: float) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        moment = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


def rejected_events(signal: Signal, body: bytes) -> int:
    """The ``partial_success`` count of an export response (0 for an empty or undecodable body)."""
    if not body:
        return 0
    try:
        if signal == "traces":
            traces = ExportTraceServiceResponse()
            traces.ParseFromString(body)
            return traces.partial_success.rejected_spans
        logs = ExportLogsServiceResponse()
        logs.ParseFromString(body)
        return logs.partial_success.rejected_log_records
    except DecodeError:
        return 0


class HttpExporter:
    """Posts each request until it is answered (2xx, or a status not worth retrying) or the budget is spent."""

    def __init__(self, endpoint: str, timeout_s: float = 10.0, retry_budget_s: float = 60.0,
                 opener: Opener = urllib.request.urlopen, sleep: Callable[[float], None] = time.sleep,
                 clock: Clock = time.monotonic, wall: Clock = time.time) -> None:
        self._base = endpoint.rstrip("/")
        self._timeout_s = timeout_s
        self._budget_s = retry_budget_s
        self._open = opener
        self._sleep = sleep
        self._clock = clock
        self._wall = wall
        self._jitter = random.Random()  # timing only: the content stays seeded
        self.deliveries = Deliveries()
        self.rejected = 0
        self.retries = 0

    def send(self, signal: Signal, body: bytes) -> None:
        request = urllib.request.Request(f"{self._base}/v1/{signal}", data=body, method="POST",
                                         headers={"Content-Type": PROTOBUF, "Accept": PROTOBUF})
        deadline = self._clock() + self._budget_s
        backoff = 0.1
        while True:
            pause, error = self._attempt(signal, request)
            if pause is None:
                return self._failed(error) if error else self._delivered()
            wait = pause or backoff * (0.5 + self._jitter.random())  # Retry-After, else backoff with jitter
            if self._clock() + wait > deadline:
                return self._failed(f"{error} (gave up after {self._budget_s:.0f} s of retries)")
            self.retries += 1
            self._sleep(wait)
            backoff = min(backoff * 2, MAX_BACKOFF_S)

    def _attempt(self, signal: Signal, request: urllib.request.Request) -> tuple[float | None, str]:
        """(pause before a retry: None when done, 0 for a backoff; error text, "" for a success)."""
        try:
            with self._open(request, timeout=self._timeout_s) as response:
                self.rejected += rejected_events(signal, response.read())
                return None, ""
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:200].decode(errors="replace")
            error = f"HTTP {exc.code} from {request.full_url}: {detail}".rstrip(": ")
            if exc.code not in RETRYABLE:
                return None, error
            wait = retry_after(exc.headers.get("Retry-After"), self._wall())
            return (min(wait, MAX_RETRY_AFTER_S) if wait is not None else 0.0), error
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
            reason = getattr(exc, "reason", exc)
            return 0.0, f"{request.full_url}: {reason}"

    def _delivered(self) -> None:
        self.deliveries.delivered += 1

    def _failed(self, error: str) -> None:
        self.deliveries.errors += 1
        self.deliveries.last_error = error

    def wait(self, seconds: float) -> None:
        self._sleep(seconds)

    def close(self, timeout_s: float) -> int:
        return 0  # every post is answered before send returns


# ---------------------------------------------------------------- Kafka (the Collector's kafka exporter)


class KafkaExporter:
    """One ``otlp_proto`` record per request on the OTLP span or log topic, without a key."""

    def __init__(self, settings: Settings, client_id: str = "panopticon-loadgen-otlp", **kafka_conf: Any) -> None:
        missing = [name for name, topic in (("KAFKA_OTLP_SPAN_TOPIC", settings.kafka_otlp_span_topic),
                                            ("KAFKA_OTLP_LOG_TOPIC", settings.kafka_otlp_log_topic)) if not topic]
        if missing:
            raise ValueError(f"--otlp kafka needs {' and '.join(missing)} (empty turns the OTLP topics off)")
        self._topics: dict[Signal, str] = {"traces": settings.kafka_otlp_span_topic,
                                           "logs": settings.kafka_otlp_log_topic}
        self._producer = Producer(producer_config(settings, client_id, **kafka_conf))
        self.deliveries = Deliveries()
        self.rejected = 0

    def send(self, signal: Signal, body: bytes) -> None:
        while True:
            try:
                self._producer.produce(self._topics[signal], body, None, on_delivery=self.deliveries.report)
                self._producer.poll(0)
                return
            except BufferError:  # the local queue is full: serve delivery reports, then retry
                self._producer.poll(0.05)

    def wait(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self._producer.poll(min(left, 0.1))

    def close(self, timeout_s: float) -> int:
        return self._producer.flush(timeout_s)


# ---------------------------------------------------------------- the loop


def export(exporter: Exporter, records: Iterable[Record], rate: float | None = None, progress: bool = True, *,
           duration_s: float | None = None, batch_events: int = 200, batch_timeout_s: float = 1.0,
           flush_timeout_s: float = 30.0, mode: str = "OTLP", out: TextIO | None = None,
           clock: Clock = time.monotonic) -> Summary:
    """Send the records (until ``duration_s``, or Ctrl-C), paced at ``rate`` records/s, as export requests.

    A batch closes between two traces once it holds ``batch_events`` spans and logs, or ``batch_timeout_s``
    after its first record, whichever comes first; its spans and its logs are one request each.
    """
    meter = Progress((out or sys.stderr) if progress else None, clock)
    pacer = Pacer(rate, clock)
    batch = OtlpBatch()
    deadline = clock() + duration_s if duration_s is not None else None
    start = clock()
    opened = start
    fed = sent = events = 0
    interrupted = False

    def ship() -> None:
        nonlocal sent, events
        counts = (batch.spans + batch.exceptions, batch.logs)  # each exception event becomes a log
        for signal, request, count in zip(SIGNALS, batch.take(), counts, strict=True):
            if request is not None:
                exporter.send(signal, request.SerializeToString())
                sent += 1
                events += count

    try:
        for record in records:
            now = clock()
            if deadline is not None and now >= deadline:
                break
            if batch.events and (now - opened >= batch_timeout_s
                                 or (batch.events >= batch_events and record.trace_id != batch.trace_id)):
                ship()
                meter.update(sent, exporter.deliveries)
            if (delay := pacer.delay(fed)) > 0:
                exporter.wait(delay)
            if not batch.events:
                opened = clock()
            batch.add(record)
            fed += 1
        if batch.events:
            ship()
    except KeyboardInterrupt:
        interrupted = True
    unsent = exporter.close(flush_timeout_s)
    meter.update(sent, exporter.deliveries)
    meter.close()
    return Summary(produced=sent, events=events, invalid=batch.skipped, delivered=exporter.deliveries.delivered,
                   delivery_errors=exporter.deliveries.errors + unsent, elapsed_s=clock() - start,
                   interrupted=interrupted, rejected=exporter.rejected, mode=mode)


def run(args: argparse.Namespace, settings: Settings, seed: int, records: Iterable[Record]) -> int:
    """``panopticon loadgen --otlp http|kafka ...`` once the records are generated."""
    exporter: Exporter
    if args.otlp == "http":
        endpoint = args.otlp_endpoint or f"http://127.0.0.1:{settings.ingest_port}"
        exporter, mode, target = HttpExporter(endpoint), "OTLP/HTTP", f"{endpoint}/v1/traces, /v1/logs"
    else:
        try:
            exporter = KafkaExporter(settings)
        except ValueError as exc:
            print(f"panopticon loadgen: {exc}", file=sys.stderr)
            return 2
        mode = "OTLP/Kafka"
        target = f"{settings.kafka_otlp_span_topic}, {settings.kafka_otlp_log_topic} at {settings.kafka_brokers}"
    print(f"loadgen: seed {seed} -> {mode} {target}", file=sys.stderr)
    summary = export(exporter, records, rate=args.rate or None, progress=not args.quiet, duration_s=args.duration,
                     batch_events=args.otlp_batch, mode=mode)
    print(summary.line())
    return 0 if summary.delivery_errors == 0 and summary.rejected == 0 else 1
