"""``panopticon loadgen``: produce realistic logs and spans to the input topics.

The content comes from ``common.traffic.generate`` (pure, seeded); this module only paces, produces,
reports progress and summarizes. ``produce(settings, records)`` is what tests and benchmarks call.
With ``--otlp http|kafka`` the same records go out as OpenTelemetry export requests (``loadgen_otlp``).
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any, TextIO

import msgspec
from confluent_kafka import KafkaError, Message, Producer

from panopticon.common.clients import producer_config
from panopticon.common.clock import parse_timestamp
from panopticon.common.settings import Settings, load_settings
from panopticon.devtools.traffic import SERVICES, Record, generate

__all__ = ["Record", "Summary", "generate", "produce"]

Clock = Callable[[], float]


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    produced: int  # records (Kafka messages) handed to the producer
    events: int  # events in them (a batch holds several)
    invalid: int  # malformed records among them
    delivered: int  # acknowledged by the broker
    delivery_errors: int  # failed, or still queued when the final flush timed out
    elapsed_s: float
    interrupted: bool = False
    rejected: int = 0  # OTLP/HTTP: events the receiver refused (partial_success)
    mode: str = ""  # "" (contract JSON records), or "OTLP/HTTP" / "OTLP/Kafka" (export requests)

    @property
    def rate(self) -> float:
        return self.produced / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        stopped = " (interrupted)" if self.interrupted else ""
        if self.mode:
            return (f"loadgen: sent {self.produced:,} {self.mode} requests ({self.events:,} spans and logs) in "
                    f"{self.elapsed_s:.1f}s = {self.rate:,.0f} requests/s; delivered {self.delivered:,}, "
                    f"delivery errors {self.delivery_errors:,}, rejected spans and logs {self.rejected:,}{stopped}")
        return (f"loadgen: produced {self.produced:,} records ({self.events:,} events, {self.invalid:,} "
                f"malformed) in {self.elapsed_s:.1f}s = {self.rate:,.0f} records/s; delivered "
                f"{self.delivered:,}, delivery errors {self.delivery_errors:,}{stopped}")


class Deliveries:
    """Counts the broker's delivery reports for one run."""

    __slots__ = ("delivered", "errors", "last_error")

    def __init__(self) -> None:
        self.delivered = 0
        self.errors = 0
        self.last_error = ""

    def report(self, error: KafkaError | None, _message: Message) -> None:
        if error is None:
            self.delivered += 1
        else:
            self.errors += 1
            self.last_error = str(error)


class Progress:
    """The live stderr line, rewritten at most once per ``interval_s``."""

    def __init__(self, out: TextIO | None, clock: Clock = time.monotonic, interval_s: float = 1.0) -> None:
        self._out = out
        self._clock = clock
        self._interval_s = interval_s
        self._start = clock()
        self._next = self._start + interval_s
        self._last = (self._start, 0)

    def update(self, produced: int, deliveries: Deliveries) -> None:
        now = self._clock()
        if self._out is None or now < self._next:
            return
        recent = (produced - self._last[1]) / max(now - self._last[0], 1e-9)
        self._last = (now, produced)
        self._next = now + self._interval_s
        error = f" (last: {deliveries.last_error})" if deliveries.last_error else ""
        self._out.write(f"\rproduced {produced:,} | {recent:,.0f}/s | delivered {deliveries.delivered:,} | "
                        f"delivery errors {deliveries.errors:,}{error}   ")
        self._out.flush()

    def close(self) -> None:
        if self._out is not None and self._clock() >= self._start + self._interval_s:
            self._out.write("\n")
            self._out.flush()


class Pacer:
    """Spreads records evenly: record n is due ``n / rate`` seconds after the start."""

    def __init__(self, rate: float | None, clock: Clock = time.monotonic) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._clock = clock
        self._start = clock()

    def delay(self, produced: int) -> float:
        """How long to wait before the next record (0 when it is due)."""
        if not self._interval:
            return 0.0
        return max(0.0, self._start + produced * self._interval - self._clock())


def _send(producer: Producer, topic: str, record: Record, deliveries: Deliveries) -> None:
    while True:
        try:
            producer.produce(topic, record.value, record.key, on_delivery=deliveries.report)
            return
        except BufferError:  # the local queue is full: serve delivery reports, then retry
            producer.poll(0.05)


def _wait(producer: Producer, seconds: float, clock: Clock) -> None:
    """Sleeps while serving delivery reports."""
    deadline = clock() + seconds
    while (left := deadline - clock()) > 0:
        producer.poll(min(left, 0.1))


def produce(settings: Settings, records: Iterable[Record], rate: float | None = None,
            progress: bool = True, *, duration_s: float | None = None, flush_timeout_s: float = 30.0,
            client_id: str = "panopticon-loadgen", out: TextIO | None = None,
            clock: Clock = time.monotonic, **kafka_conf: Any) -> Summary:
    """Produce every record (until ``duration_s``, or Ctrl-C) at ``rate`` records/s (None: at once).

    Each goes to the log or span topic by its kind, keyed by its trace_id; returns after the flush.
    """
    topics = {"log": settings.kafka_apm_log_topic, "span": settings.kafka_apm_span_topic}
    producer = Producer(producer_config(settings, client_id, **kafka_conf))
    deliveries = Deliveries()
    meter = Progress((out or sys.stderr) if progress else None, clock)
    pacer = Pacer(rate, clock)
    deadline = clock() + duration_s if duration_s is not None else None
    start = clock()
    produced = events = invalid = 0
    interrupted = False
    try:
        for record in records:
            if deadline is not None and clock() >= deadline:
                break
            if (delay := pacer.delay(produced)) > 0:
                _wait(producer, delay, clock)
            _send(producer, topics[record.kind], record, deliveries)
            produced += 1
            events += record.n_events
            invalid += not record.is_valid
            if produced % 1000 == 0 or rate:
                producer.poll(0)
                meter.update(produced, deliveries)
    except KeyboardInterrupt:
        interrupted = True
    unsent = producer.flush(flush_timeout_s)
    meter.update(produced, deliveries)
    meter.close()
    return Summary(produced=produced, events=events, invalid=invalid, delivered=deliveries.delivered,
                   delivery_errors=deliveries.errors + unsent, elapsed_s=clock() - start,
                   interrupted=interrupted)


# ---------------------------------------------------------------- command line

def _services(text: str) -> int | str:
    return int(text) if text.strip().isdigit() else text


def _base_time(text: str) -> int:
    parsed = parse_timestamp(text)
    if parsed is None:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time or epoch milliseconds: {text!r}")
    return parsed


def _ratio(text: str) -> float:
    value = float(text)
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text}")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    names = ",".join(s.short for s in SERVICES)
    parser.add_argument("--rate", type=float, default=200.0,
                        help="records per second (default 200; 0: as fast as possible)")
    stop = parser.add_mutually_exclusive_group()
    stop.add_argument("--duration", type=float, help="stop after this many seconds")
    stop.add_argument("--count", type=int, help="stop after this many records (default: until Ctrl-C)")
    parser.add_argument("--seed", type=int, help="same seed, same content (default: random, printed)")
    parser.add_argument("--base-time", type=_base_time, metavar="TIME",
                        help="fixed time (ISO-8601 or epoch ms) instead of now: byte-identical output per seed")
    parser.add_argument("--services", type=_services, metavar="N|LIST",
                        help=f"the first N services or a comma list (default all: {names})")
    parser.add_argument("--invalid-ratio", type=_ratio, default=0.0, help="share of malformed records")
    parser.add_argument("--batch-ratio", type=_ratio, default=0.1,
                        help="share of log records sent as a JSON array of 2-5 logs (default 0.1)")
    parser.add_argument("--error-ratio", type=_ratio, default=0.02, help="share of failing traces (0.02)")
    parser.add_argument("--stdout", action="store_true",
                        help="print 'kind<TAB>key<TAB>value' lines instead of producing to Kafka")
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    otlp = parser.add_argument_group("OpenTelemetry", "the same traffic as OTLP export requests (protobuf) "
                                     "instead of the contract's JSON records")
    otlp.add_argument("--otlp", choices=["http", "kafka"],
                      help="http: POST to the receiver's /v1/traces and /v1/logs (--otlp-endpoint); kafka: one "
                           "request per record to KAFKA_OTLP_SPAN_TOPIC / KAFKA_OTLP_LOG_TOPIC, as the "
                           "Collector's kafka exporter writes them (encoding otlp_proto)")
    otlp.add_argument("--otlp-endpoint", metavar="URL",
                      help="OTLP/HTTP base URL (default http://127.0.0.1:$INGEST_PORT, i.e. panopticon ingest)")
    otlp.add_argument("--otlp-batch", type=_positive, default=200, metavar="N",
                      help="spans and logs per request (default 200; a batch closes between traces, or after 1 s)")


def run(args: argparse.Namespace) -> int:
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    if args.otlp and (args.stdout or args.invalid_ratio):
        print("panopticon loadgen: --stdout and --invalid-ratio apply to contract JSON only, not to --otlp",
              file=sys.stderr)
        return 2
    try:
        records = generate(seed=seed, count=args.count, base_time_ms=args.base_time, services=args.services,
                           invalid_ratio=args.invalid_ratio, batch_ratio=args.batch_ratio,
                           error_ratio=args.error_ratio)
    except ValueError as exc:
        print(f"panopticon loadgen: {exc}", file=sys.stderr)
        return 2
    if args.stdout:
        return _print(records, args.duration)
    settings = load_settings()
    if args.otlp:
        from panopticon.devtools import loadgen_otlp  # imports this module: loaded only when used

        return loadgen_otlp.run(args, settings, seed, records)
    print(f"loadgen: seed {seed} -> {settings.kafka_apm_log_topic}, {settings.kafka_apm_span_topic} "
          f"at {settings.kafka_brokers}", file=sys.stderr)
    summary = produce(settings, records, rate=args.rate or None, progress=not args.quiet,
                      duration_s=args.duration)
    print(summary.line())
    return 0 if summary.delivery_errors == 0 else 1


def _print(records: Iterable[Record], duration_s: float | None) -> int:
    deadline = time.monotonic() + duration_s if duration_s is not None else None
    write = sys.stdout.buffer.write
    for record in records:
        if deadline is not None and time.monotonic() >= deadline:
            break
        write(b"%s\t%s\t%s\n" % (record.kind.encode(), record.key, record.value))
    return 0
