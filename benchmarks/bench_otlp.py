"""OpenTelemetry input: what a span costs on each input path, and the OTLP/HTTP receiver under load.

    python -m benchmarks.bench_otlp            # 20k spans x 5 rounds; receiver 20 s at 16 clients
    python -m benchmarks.bench_otlp --quick    # 5k spans x 3 rounds; receiver 5 s
    python -m benchmarks.bench_otlp --part core   # no servers

Core (no servers, this one process, CPU time by ``time.process_time``): the same seeded loadgen spans in three
encodings, each decoded into bulk entries by the engine's own ``EventDecoder.decode`` (decode + normalize +
encode, what a worker does per record):

- the contract's JSON records, one span per record, as ``apm.spans`` carries them (the generator's bytes);
- OTLP protobuf ``ExportTraceServiceRequest`` s of 100 spans (``devtools.traffic.otlp``, as an SDK or the
  Collector's batch processor sends them; on the engine's OTLP span topic);
- the same requests as OTLP/JSON (lowerCamelCase, hex ids, integer enums, int64 as strings).

Rounds alternate the paths; the figure is the median of spans per CPU-second. For the protobuf path the
mapping alone (``common.otlp.convert_traces``: parse + map to contract dicts) and the protobuf parse alone
(``ExportTraceServiceRequest.FromString``) are timed over the same requests, in the same rounds: their share
of the whole decode is the mapping's; the rest is the engine's refine + encode of the mapped events.

Receiver (real servers): the local stack (its OpenSearch is stopped once up: the receiver only produces to
Kafka), topics with names of their own, ``python -m panopticon ingest`` with its default workers and threads
(``INGEST_WORKERS`` 2, ``INGEST_THREADS`` 8), then 16 client threads in this process, each POSTing protobuf
100-span requests to ``/v1/traces`` over its own keep-alive connection (``http.client``), back to back, for
``--duration`` seconds after a warm-up. Accepted spans count 200 answers (less any ``partial_success``
rejections); latency is from the request's first byte sent to the answer read. CPU-seconds per 100k accepted
spans: the receiver's process tree (gunicorn arbiter and worker, librdkafka's threads), the Kafka JVM, and the
clients (this process), since all of them share the machine's cores.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import math
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from benchmarks.report import Report
from benchmarks.rig import Group, GroupCpu, cpu_of, local_stack, scrape, shielded, start_server, topics_env
from panopticon.common import otlp
from panopticon.common.indices import IndexNames
from panopticon.common.settings import load_settings
from panopticon.common.topics import create_topics
from panopticon.devtools.traffic import Record, generate
from panopticon.devtools.traffic.otlp import OtlpBatch
from panopticon.engine.decode import EventDecoder

LOG_TOPIC, SPAN_TOPIC, OTLP_SPAN_TOPIC, OTLP_LOG_TOPIC = "apm.logs", "apm.spans", "otlp_spans", "otlp_logs"
SPANS_PER_REQUEST = 100
MAX_BYTES = 1_048_576
FLUSH_AT = 8 * 1024 * 1024  # a bulk block's worth: the buffer is emptied as a sealed batch would be
ENVIRONMENT = "unknown"
CLIENTS = 16
PARTITIONS = 4
PROTOBUF = {"Content-Type": "application/x-protobuf"}
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


# ---------------------------------------------------------------- the workload: one set of spans, three encodings

@dataclass(frozen=True)
class Workload:
    spans: int
    contract: list[bytes]  # one span per record
    proto: list[bytes]  # ExportTraceServiceRequests of SPANS_PER_REQUEST spans (the last may have fewer)
    json: list[bytes]  # the same requests as OTLP/JSON

    def bytes_per_span(self, values: list[bytes]) -> float:
        return sum(len(v) for v in values) / self.spans


def span_records(count: int, seed: int) -> list[Record]:
    """The first ``count`` span records of seeded loadgen traffic (timestamps of the last hour)."""
    out = []
    for record in generate(seed=seed, base_time_ms=int(time.time() * 1000) - 3_600_000):
        if record.kind == "span":
            out.append(record)
            if len(out) == count:
                break
    return out


def trace_requests(records: list[Record]) -> list[ExportTraceServiceRequest]:
    """The spans as requests of SPANS_PER_REQUEST spans, grouped by resource as the Collector batches them."""
    batch = OtlpBatch()
    out = []
    for i, record in enumerate(records, 1):
        batch.add(record)
        if batch.spans == SPANS_PER_REQUEST or (i == len(records) and batch.spans):
            traces, _logs = batch.take()
            assert traces is not None
            out.append(traces)
    return out


def otlp_json(request: ExportTraceServiceRequest) -> bytes:
    """OTLP/JSON as exporters write it: the protobuf JSON mapping with integer enums, but ids as hex."""
    def hex_ids(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: base64.b64decode(v).hex() if k in _ID_KEYS else hex_ids(v) for k, v in value.items()}
        if isinstance(value, list):
            return [hex_ids(v) for v in value]
        return value
    return msgspec.json.encode(hex_ids(MessageToDict(request, use_integers_for_enums=True)))


def workload(spans: int, seed: int) -> Workload:
    records = span_records(spans, seed)
    requests = trace_requests(records)
    return Workload(len(records), [r.value for r in records], [r.SerializeToString() for r in requests],
                    [otlp_json(r) for r in requests])


# ---------------------------------------------------------------- core: timed passes

def new_decoder() -> EventDecoder:
    return EventDecoder(IndexNames(""), LOG_TOPIC, SPAN_TOPIC, MAX_BYTES, otlp_span_topic=OTLP_SPAN_TOPIC,
                        otlp_log_topic=OTLP_LOG_TOPIC, default_environment=ENVIRONMENT)


@dataclass
class Tally:
    spans: int = 0
    rejects: int = 0


def decode_pass(topic: str, values: list[bytes]) -> Tally:
    """The engine's decode of every record, each entry's lines appended to a reused buffer."""
    decode = new_decoder().decode
    now = int(time.time() * 1000)
    buf = bytearray()
    tally = Tally()
    for offset, value in enumerate(values):
        decoded = decode(topic, 0, offset, value, now, now)
        for entry in decoded.entries:
            buf += entry.line
        tally.spans += len(decoded.entries)
        tally.rejects += len(decoded.rejects)
        if len(buf) > FLUSH_AT:
            buf.clear()
    return tally


def convert_pass(values: list[bytes]) -> Tally:
    """``common.otlp.convert_traces`` alone: protobuf parse + mapping to contract dicts, no refine, no encode."""
    tally = Tally()
    for value in values:
        converted = otlp.convert_traces(value, "proto", ENVIRONMENT)
        tally.spans += len(converted.spans)
        tally.rejects += converted.rejected
    return tally


def parse_pass(values: list[bytes]) -> Tally:
    """The protobuf parse alone (upb), every span touched once so a lazy parse would still be paid for."""
    tally = Tally()
    for value in values:
        request = ExportTraceServiceRequest.FromString(value)
        tally.spans += sum(len(scope.spans) for group in request.resource_spans for scope in group.scope_spans)
    return tally


@dataclass(frozen=True)
class Pass:
    name: str
    run: Callable[[], Tally]
    rates: list[float] = field(default_factory=list)  # spans per CPU-second, one per round
    seconds: list[float] = field(default_factory=list)  # CPU-seconds, one per round

    def timed(self) -> Tally:
        started = time.process_time()
        tally = self.run()
        cpu = time.process_time() - started
        self.seconds.append(cpu)
        self.rates.append(tally.spans / cpu)
        return tally

    @property
    def rate(self) -> float:
        return statistics.median(self.rates)

    @property
    def cpu(self) -> float:
        return statistics.median(self.seconds)


def run_core(work: Workload, rounds: int) -> Report:
    passes = [Pass("json_contract", lambda: decode_pass(SPAN_TOPIC, work.contract)),
              Pass("otlp_proto", lambda: decode_pass(OTLP_SPAN_TOPIC, work.proto)),
              Pass("otlp_json", lambda: decode_pass(OTLP_SPAN_TOPIC, work.json)),
              Pass("proto_convert", lambda: convert_pass(work.proto)),
              Pass("proto_parse", lambda: parse_pass(work.proto))]
    for p in passes:  # untimed: warms imports and caches, and checks every path yields every span
        tally = p.run()
        if tally.spans != work.spans or tally.rejects:
            raise RuntimeError(f"{p.name}: {tally.spans} of {work.spans} spans, {tally.rejects} rejects")
    for _ in range(rounds):
        for p in passes:
            p.timed()
    contract, proto, json_, convert, parse = passes
    report = Report("otlp_core", {"spans": work.spans, "spans_per_request": SPANS_PER_REQUEST, "rounds": rounds,
                                  "clock": "process CPU time"})
    report.add("json_contract_spans_per_cpu_s", contract.rate, "spans/s")
    report.add("otlp_proto_spans_per_cpu_s", proto.rate, "spans/s")
    report.add("otlp_json_spans_per_cpu_s", json_.rate, "spans/s")
    report.add("otlp_proto_vs_json_contract", proto.rate / contract.rate, "x")
    report.add("otlp_json_vs_json_contract", json_.rate / contract.rate, "x")
    for p in (contract, proto, json_):
        report.add(f"{p.name}_us_per_span", 1e6 / p.rate, "us")
    report.add("otlp_proto_convert_spans_per_cpu_s", convert.rate, "spans/s")
    # shares of the proto path's decode: medians of same-round ratios (rounds alternate, so a slow stretch of
    # the shared machine hits both sides of a ratio alike)
    convert_share = statistics.median(c / p for c, p in zip(convert.seconds, proto.seconds, strict=True))
    parse_share = statistics.median(c / p for c, p in zip(parse.seconds, proto.seconds, strict=True))
    report.add("otlp_proto_share_convert", convert_share, "of decode")
    report.add("otlp_proto_share_parse", parse_share, "of decode")
    report.add("otlp_proto_share_refine_encode", 1 - convert_share, "of decode")
    report.add("json_contract_bytes_per_span", work.bytes_per_span(work.contract), "B")
    report.add("otlp_proto_bytes_per_span", work.bytes_per_span(work.proto), "B")
    report.add("otlp_json_bytes_per_span", work.bytes_per_span(work.json), "B")
    for p in passes:
        report.note(f"{p.name} rounds (spans per CPU-s): {', '.join(f'{r:,.0f}' for r in p.rates)}")
    report.note("convert = common.otlp.convert_traces (protobuf parse + mapping to contract dicts); parse = "
                "ExportTraceServiceRequest.FromString alone; refine + encode = the rest of EventDecoder.decode")
    return report


# ---------------------------------------------------------------- receiver: real server, 16 clients

@dataclass(frozen=True)
class Answer:
    done: float  # time.monotonic() when the answer was read
    latency_s: float
    status: int  # 0: the connection failed
    accepted: int  # spans


class Client(threading.Thread):
    """POSTs its share of the bodies round-robin over one keep-alive connection until ``stop_at``."""

    def __init__(self, port: int, bodies: Sequence[tuple[bytes, int]], first: int, stop_at: float) -> None:
        super().__init__(name=f"client-{first}", daemon=True)
        self._port = port
        self._bodies = bodies
        self._next = first
        self._stop_at = stop_at
        self.answers: list[Answer] = []

    def _connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self._port, timeout=30)

    def run(self) -> None:
        connection = self._connect()
        try:
            while time.monotonic() < self._stop_at:
                body, spans = self._bodies[self._next % len(self._bodies)]
                self._next += 1
                started = time.monotonic()
                try:
                    connection.request("POST", "/v1/traces", body, PROTOBUF)
                    answer = connection.getresponse()
                    status, data = answer.status, answer.read()
                except (OSError, http.client.HTTPException):
                    status, data = 0, b""
                    connection.close()
                    connection = self._connect()
                done = time.monotonic()
                self.answers.append(Answer(done, done - started, status, accepted(status, data, spans)))
        finally:
            connection.close()


def accepted(status: int, data: bytes, spans: int) -> int:
    if status != 200:
        return 0
    if not data:
        return spans
    rejected: int = ExportTraceServiceResponse.FromString(data).partial_success.rejected_spans
    return spans - rejected


def start_ingest(env: dict[str, str], log_dir: Path) -> tuple[Group, int]:
    return start_server("ingest", env, log_dir)


def percentile(values: list[float], q: float) -> float:
    """Nearest rank."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


@dataclass
class Cpu:
    """CPU-seconds readers of the processes that share the machine during the load."""

    readers: dict[str, Callable[[], float]]

    def read(self) -> dict[str, float]:
        return {name: read() for name, read in self.readers.items()}


def drive(port: int, bodies: list[tuple[bytes, int]], warmup_s: float, duration_s: float,
          cpu: Cpu) -> tuple[list[Answer], dict[str, float], float]:
    """16 clients for warm-up + duration; the answers of the measured window, its CPU by process, its length."""
    started = time.monotonic()
    window_from, window_to = started + warmup_s, started + warmup_s + duration_s
    clients = [Client(port, bodies, i * len(bodies) // CLIENTS, window_to) for i in range(CLIENTS)]
    for client in clients:
        client.start()
    time.sleep(max(0.0, window_from - time.monotonic()))
    before, t0 = cpu.read(), time.monotonic()
    time.sleep(max(0.0, window_to - time.monotonic()))
    after, t1 = cpu.read(), time.monotonic()
    for client in clients:
        client.join(60)
    answers = [a for c in clients for a in c.answers if t0 <= a.done <= t1]
    return answers, {name: after[name] - before[name] for name in after}, t1 - t0


def run_receiver(work: Workload, warmup_s: float, duration_s: float) -> Report:
    bodies = [(body, SPANS_PER_REQUEST) for body in work.proto[: work.spans // SPANS_PER_REQUEST]]
    with local_stack() as stack, tempfile.TemporaryDirectory(prefix="panopticon-bench-otlp-") as tmp:
        with shielded():
            stack.stop_search()  # the receiver only produces to Kafka: OpenSearch would only take CPU
        env = topics_env(stack, f"bench-otlp-{os.getpid()}-{time.time_ns()}")
        settings = load_settings(env)
        create_topics(settings, PARTITIONS)
        ingest, port = start_ingest(env, Path(tmp))
        try:
            cpu = Cpu({"receiver": lambda: cpu_of(ingest.process.pid), "broker": GroupCpu(stack.kafka_pid),
                       "clients": time.process_time})
            print(f"receiver :{port} up; {CLIENTS} clients x {SPANS_PER_REQUEST}-span protobuf requests, "
                  f"{warmup_s:g} s warm-up + {duration_s:g} s", flush=True)
            answers, used, seconds = drive(port, bodies, warmup_s, duration_s, cpu)
            total_accepted = scrape(port).get("panopticon_ingest_spans_accepted_total", math.nan)
            worker_rss = max((p.memory_info().rss for p in ingest.processes()[1:]), default=0) / 2**20
        finally:
            ingest.stop(timeout_s=20)
    spans = sum(a.accepted for a in answers)
    ok = [a.latency_s * 1000 for a in answers if a.status == 200]
    settings_text = f"INGEST_WORKERS={settings.ingest_workers} INGEST_THREADS={settings.ingest_threads}"
    report = Report("otlp_receiver", {"clients": CLIENTS, "spans_per_request": SPANS_PER_REQUEST,
                                      "duration_s": round(seconds, 1), "warmup_s": warmup_s,
                                      "receiver": settings_text, "partitions": PARTITIONS})
    report.add("accepted_spans_per_s", spans / seconds, "spans/s")
    report.add("requests_per_s", len(ok) / seconds, "req/s")
    report.add("latency_p50_ms", percentile(ok, 0.50), "ms")
    report.add("latency_p99_ms", percentile(ok, 0.99), "ms")
    report.add("non_200", len(answers) - len(ok), "answers")
    for name in ("receiver", "broker", "clients"):
        report.add(f"{name}_cpu_s_per_100k_spans", used[name] / spans * 100_000 if spans else math.nan, "CPU-s")
        report.add(f"{name}_cores", used[name] / seconds, "cores")
    report.add("receiver_worker_rss_mb", worker_rss, "MB")
    statuses = sorted({a.status for a in answers})
    report.note(f"{len(answers):,} answers in the window, statuses {statuses}; {spans:,} spans accepted; "
                f"the receiver counted {total_accepted:,.0f} accepted over the whole run (warm-up included)")
    report.note(f"{settings_text} (defaults), gthread; {len(bodies)} distinct request bodies "
                f"({work.bytes_per_span(work.proto) * SPANS_PER_REQUEST / 1024:.1f} KiB each on average)")
    return report


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_otlp", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5k spans, 3 rounds; receiver 5 s")
    parser.add_argument("--part", choices=["core", "receiver"], action="append",
                        help="run only this part (repeatable; default both)")
    parser.add_argument("--spans", type=int, help="spans in the workload (default 20,000; --quick 5,000)")
    parser.add_argument("--rounds", type=int, help="timed rounds per core path (default 5; --quick 3)")
    parser.add_argument("--duration", type=float, help="receiver: measured seconds (default 20; --quick 5)")
    args = parser.parse_args(argv)
    parts = args.part or ["core", "receiver"]
    spans = args.spans or (5_000 if args.quick else 20_000)
    rounds = args.rounds or (3 if args.quick else 5)
    duration_s = args.duration or (5.0 if args.quick else 20.0)
    warmup_s = 1.0 if args.quick else 3.0
    work = workload(spans, seed=7)
    print(f"otlp: {work.spans:,} loadgen spans; {len(work.contract):,} contract records "
          f"({work.bytes_per_span(work.contract):.0f} B/span), {len(work.proto)} requests of up to "
          f"{SPANS_PER_REQUEST} spans (protobuf {work.bytes_per_span(work.proto):.0f} B/span, OTLP/JSON "
          f"{work.bytes_per_span(work.json):.0f} B/span)", flush=True)
    if "core" in parts:
        run_core(work, rounds).publish()
    if "receiver" in parts:
        run_receiver(work, warmup_s, duration_s).publish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
