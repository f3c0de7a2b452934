"""Traces -> wire events -> Records: logs tied to spans, array batches, malformed records mixed in.

Everything comes from one ``random.Random(seed)``; the clock only sets timestamps (and is not read at
all with a fixed ``base_time_ms``), so the same seed gives the same content and, with a fixed base
time, the same bytes.
"""

from __future__ import annotations

import itertools
import random
import time
from collections.abc import Callable, Iterator

import msgspec

from panopticon.devtools.traffic.catalog import select_services
from panopticon.devtools.traffic.defects import corrupt
from panopticon.devtools.traffic.record import Record
from panopticon.devtools.traffic.traces import Span, TraceBuilder
from panopticon.devtools.traffic.wire import ENVIRONMENTS, HOSTS, SPELLINGS, Producer, check_plain, make_producer

Clock = Callable[[], float]
LogItem = tuple[str, str, int]  # a log event's JSON text, its normalized level, its epoch milliseconds

STAGING_P = 0.15
CLIENT_IP_P = 0.15  # SERVER spans carrying the unknown top-level key "client_ip"
CONTAINER_P = 0.05  # logs carrying the unknown top-level key "container_name"
HANDLED_ERROR_P = 0.03  # handlers that log a handled ERROR although the request succeeds
HANDLER_WARN_P = 0.06
HANDLED_ERRORS = (
    "failed to publish audit event: broker transport failure (will retry)",
    "cache write failed: ECONNRESET",
    "metrics exporter failed: request timed out after 5000 ms",
)
WARNINGS = (
    "deprecated header X-Api-Version used",
    "request body larger than 64 KiB",
    "feature flag service slow, using defaults",
)
FAILURES = {
    "postgresql": "database error: connection terminated unexpectedly",
    "redis": "redis error: ETIMEDOUT",
    "stripe": "payment provider error: 503 Service Unavailable",
    "smtp": "smtp error: 421 4.7.0 try again later",
    "kafka": "producer error: Local: Message timed out",
    "fcm": "push provider error: UNAVAILABLE",
    "": "unhandled exception: RangeError: Maximum call stack size exceeded",
}
_MILLIS = tuple(f'.{ms:03d}Z"' for ms in range(1000))
UNHANDLED = "TypeError: Cannot read properties of undefined (reading 'id')"


class Config(msgspec.Struct, frozen=True, kw_only=True):
    seed: int = 0
    count: int | None = None  # records (Kafka messages); None: endless
    base_time_ms: int | None = None  # None: timestamps from the clock (traces end "now")
    services: int | str | tuple[str, ...] | None = None  # first N, or names; None: all seven
    invalid_ratio: float = 0.0  # share of records that are malformed
    batch_ratio: float = 0.1  # share of log records that are JSON arrays of 2-5 logs
    error_ratio: float = 0.02  # share of traces that fail
    trace_interval_ms: float = 1.0  # mean gap between traces with a fixed base time

    def __post_init__(self) -> None:
        for name in ("invalid_ratio", "batch_ratio", "error_ratio"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.count is not None and self.count < 0:
            raise ValueError(f"count must be >= 0, got {self.count}")


class Trace(msgspec.Struct, frozen=True, gc=False):
    trace_id: str
    key: bytes
    env: int  # index into ENVIRONMENTS
    base_us: int  # absolute start, microseconds since the epoch
    failed: bool
    tail: int  # index into Producer.tails: environment and host
    spelling: int  # index into Producer.heads[env]: how the environment is spelled

    @property
    def environment(self) -> str:
        return ENVIRONMENTS[self.env]


class Generator:
    """Yields Records; owns the random stream, the clock and the formatting caches. One per run."""

    def __init__(self, config: Config, clock: Clock = time.time) -> None:
        services = select_services(config.services)
        check_plain(services)
        self._config = config
        self._clock = clock
        self._rng = random.Random(config.seed)
        self._builder = TraceBuilder(services, self._rng)
        self._producers = {s.name: make_producer(s, i) for i, s in enumerate(services)}
        self._second: int | None = None  # the last second formatted, and its ISO prefix
        self._prefix = ""
        self._virtual_us = (config.base_time_ms or 0) * 1000

    def records(self) -> Iterator[Record]:
        """``count`` records, or without end when it is None."""
        return itertools.islice(self._endless(), self._config.count)

    def _endless(self) -> Iterator[Record]:
        invalid_ratio = self._config.invalid_ratio
        rng = self._rng
        while True:
            for record in self._trace():
                while invalid_ratio and rng.random() < invalid_ratio:
                    yield self._malformed(record)
                yield record

    # ------------------------------------------------------------ one trace

    def _trace(self) -> list[Record]:
        failed = self._rng.random() < self._config.error_ratio
        spans = self._builder.build(failed)
        trace = self._context(spans, failed)
        out = [self._span(trace, span) for span in spans]
        groups: dict[str, list[LogItem]] = {}
        for span in spans:
            self._logs(trace, span, groups.setdefault(span.service, []))
        for service, group in groups.items():
            out.extend(self._log_records(trace, service, group))
        return out

    def _context(self, spans: list[Span], failed: bool) -> Trace:
        """Ids (one draw: 32 hex digits of trace id, then 16 per span), environment, host and time."""
        rng = self._rng
        ids = f"{rng.getrandbits(64 * (len(spans) + 2)):0{16 * (len(spans) + 2)}x}"
        for i, span in enumerate(spans, 2):
            span.span_id = ids[16 * i: 16 * i + 16]
        env = 1 if rng.random() < STAGING_P else 0
        self._virtual_us += int(rng.expovariate(1.0) * self._config.trace_interval_ms * 1000)
        end_us = self._virtual_us if self._config.base_time_ms is not None else int(self._clock() * 1e6)
        return Trace(ids[:32], ids[:32].encode(), env, end_us - spans[0].dur_us, failed,
                     env * HOSTS + int(rng.random() * HOSTS), int(rng.random() * SPELLINGS))

    def _stamp(self, producer: Producer, ms: int) -> str:
        """The timestamp's JSON: epoch milliseconds, or RFC 3339 UTC with milliseconds."""
        if producer.epoch_timestamps:
            return str(ms)
        second = ms // 1000
        if second != self._second:
            self._second = second
            self._prefix = time.strftime('"%Y-%m-%dT%H:%M:%S', time.gmtime(second))
        return self._prefix + _MILLIS[ms % 1000]

    # ------------------------------------------------------------ spans

    def _span(self, trace: Trace, span: Span) -> Record:
        producer = self._producers[span.service]
        ms = (trace.base_us + span.start_us) // 1000
        duration_ms = span.dur_us / 1000.0
        status = "ERROR" if span.error else "OK"
        parent = span.parent.span_id if span.parent is not None else None
        parent_json = "null" if parent is None else f'"{parent}"'
        http, code = self._span_http(span)
        extra = ""
        if span.role == "server" and self._rng.random() < CLIENT_IP_P:
            extra = f',"client_ip":"203.0.113.{1 + int(self._rng.random() * 254)}"'
        value = (
            f'{{"type":"span","timestamp":{self._stamp(producer, ms)},{producer.heads[trace.env][trace.spelling]},'
            f'"trace_id":"{trace.trace_id}","span_id":"{span.span_id}",'
            f'"parent_span_id":{parent_json},"name":"{span.name}",'
            f'"kind":"{span.kind}","duration_ms":{duration_ms!r},"status":"{status}"'
            f'{http}{extra}{self._span_tail(trace, producer, span)}'
        )
        return Record(
            kind="span", key=trace.key, value=value.encode(), trace_id=trace.trace_id,
            service=producer.name, environment=trace.environment, timestamp_ms=ms,
            trace_failed=trace.failed, span_id=span.span_id, parent_span_id=parent, name=span.name,
            span_kind=span.kind, status=status, duration_ms=duration_ms, http_status_code=code,
        )

    @staticmethod
    def _span_tail(trace: Trace, producer: Producer, span: Span) -> str:
        """The labels: a call's own (``peer.service``, ``db.system``, ...) before the producer's."""
        if span.hop is None or not span.hop.labels:
            return producer.tails[trace.tail]
        return f',"labels":{{{span.hop.labels},{producer.label_tails[trace.tail]}'

    def _span_http(self, span: Span) -> tuple[str, int | None]:
        """The http_* fields of a SERVER span, of a CLIENT span answered by a service, of an external API call."""
        if not span.method:
            return "", None
        return (f',"http_method":"{span.method}","http_path":"{span.path}",'
                f'"http_status_code":{span.http_status}'), span.http_status

    # ------------------------------------------------------------ logs

    def _logs(self, trace: Trace, span: Span, out: list[LogItem]) -> None:
        if span.role == "server":
            self._access_log(trace, span, out)
        elif span.role == "handler":
            self._handler_logs(trace, span, out)
        else:
            self._call_logs(trace, span, out)

    def _access_log(self, trace: Trace, span: Span, out: list[LogItem]) -> None:
        code = span.http_status or 200
        level = "ERROR" if code >= 500 else "WARN" if code >= 400 else "INFO"
        http, _ = self._span_http(span)
        message = f"{span.method} {span.path} {code} - {span.dur_us / 1000.0:.1f} ms"
        self._log(trace, span, level, message, span.end_us, out, http)

    def _handler_logs(self, trace: Trace, span: Span, out: list[LogItem]) -> None:
        rng = self._rng
        if rng.random() < 0.3:
            self._log(trace, span, "DEBUG", f"{span.name} invoked", span.start_us, out)
        if span.origin:
            self._log(trace, span, "ERROR", f"unhandled exception in {span.name}: {UNHANDLED}", span.end_us,
                      out)
        elif not span.error and span.route is not None and rng.random() < 0.85:
            self._log(trace, span, "INFO", span.route.message, span.end_us, out)
        roll = rng.random()
        if roll < HANDLED_ERROR_P:
            self._log(trace, span, "ERROR", HANDLED_ERRORS[int(roll * 1e6) % 3], span.end_us, out)
        elif roll < HANDLED_ERROR_P + HANDLER_WARN_P:
            self._log(trace, span, "WARN", WARNINGS[int(roll * 1e6) % 3], span.start_us, out)

    def _call_logs(self, trace: Trace, span: Span, out: list[LogItem]) -> None:
        hop = span.hop
        assert hop is not None
        ms = span.dur_us / 1000.0
        if span.origin:  # a failed external HTTP call's log carries its http fields (as the receiver's logs do)
            failure = FAILURES.get(hop.peer, FAILURES[""])
            self._log(trace, span, "ERROR", f"{span.name} failed: {failure}", span.end_us, out,
                      self._span_http(span)[0])
        elif hop.callee is not None:
            if span.error:
                self._log(trace, span, "WARN", f"{hop.peer} {span.name} answered {span.http_status}", span.end_us,
                          out)
            elif self._rng.random() < 0.1:
                self._log(trace, span, "DEBUG", f"calling {hop.peer} {span.name}", span.start_us, out)
        elif ms > hop.median_ms * 4:
            self._log(trace, span, "WARN", f"slow call {span.name}: {ms:.1f} ms", span.end_us, out)
        elif self._rng.random() < 0.25:
            self._log(trace, span, "DEBUG", f"{span.name} done in {ms:.2f} ms", span.end_us, out)

    def _log(self, trace: Trace, span: Span, level: str, message: str, at_us: int, out: list[LogItem],
             http: str = "") -> None:
        producer = self._producers[span.service]
        ms = (trace.base_us + at_us) // 1000
        extra = producer.containers[trace.tail] if self._rng.random() < CONTAINER_P else ""
        out.append((
            f'{{"type":"log","timestamp":{self._stamp(producer, ms)},{producer.heads[trace.env][trace.spelling]},'
            f'{producer.levels[level]},"message":"{message}","trace_id":"{trace.trace_id}",'
            f'"span_id":"{span.span_id}"{http}{extra}{producer.tails[trace.tail]}',
            level, ms,
        ))

    def _log_records(self, trace: Trace, service: str, group: list[LogItem]) -> Iterator[Record]:
        """One record per log, or with probability batch_ratio a JSON array of 2-5 of them."""
        rng = self._rng
        batch_ratio = self._config.batch_ratio
        i = 0
        while i < len(group):
            size = 1
            if batch_ratio and len(group) - i > 1 and rng.random() < batch_ratio:
                size = 2 + int(rng.random() * 4)
            chunk = group[i: i + size]
            i += len(chunk)
            yield self._log_record(trace, service, chunk)

    def _log_record(self, trace: Trace, service: str, chunk: list[LogItem]) -> Record:
        text, _, ms = chunk[0]
        value = text if len(chunk) == 1 else f"[{','.join(item[0] for item in chunk)}]"
        return Record(
            kind="log", key=trace.key, value=value.encode(), trace_id=trace.trace_id, service=service,
            environment=trace.environment, timestamp_ms=ms, trace_failed=trace.failed,
            n_events=len(chunk), n_valid=len(chunk), levels=tuple(item[1] for item in chunk),
        )

    # ------------------------------------------------------------ malformed

    def _malformed(self, template: Record) -> Record:
        event = msgspec.json.decode(template.value)
        event = event[0] if isinstance(event, list) else event
        level = template.levels[0] if template.levels else "INFO"
        flaw = corrupt(template.kind, event, level, self._rng, msgspec.json.encode)
        return Record(
            kind=template.kind, key=template.key, value=flaw.value, trace_id=template.trace_id,
            service=template.service, environment=template.environment, timestamp_ms=template.timestamp_ms,
            is_valid=False, defect=flaw.defect, n_events=flaw.n_events, n_valid=len(flaw.levels),
            trace_failed=template.trace_failed, levels=flaw.levels,
        )


def generate(seed: int = 0, count: int | None = None, base_time_ms: int | None = None,
             services: int | str | tuple[str, ...] | None = None, invalid_ratio: float = 0.0,
             batch_ratio: float = 0.1, error_ratio: float = 0.02, trace_interval_ms: float = 1.0,
             clock: Clock = time.time) -> Iterator[Record]:
    """Records of realistic traffic; ``count`` records (Kafka messages), or endless when None."""
    config = Config(seed=seed, count=count, base_time_ms=base_time_ms, services=services,
                    invalid_ratio=invalid_ratio, batch_ratio=batch_ratio, error_ratio=error_ratio,
                    trace_interval_ms=trace_interval_ms)
    return Generator(config, clock).records()
