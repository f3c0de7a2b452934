"""The service map's two costs: edge building in the engine, per CPU-second, and the routes over 14 days.

``python -m benchmarks.bench_service_map [--quick] [--only engine|routes] [--records N] [--rate EVENTS_PER_S]
[--rounds N] [--requests N] [--days N] [--partitions N]``

1. **engine** (no servers): loadgen records (seeded, ``devtools.traffic.generate``) spread over the span
   topic's partitions by their key, with the timestamps of live traffic at ``--rate`` events per second, go
   through what a worker's building step does with them: ``EventDecoder.decode`` (decode + normalize + encode,
   each document's line appended to a reused buffer, as ``bench_core`` measures it), then, for each span entry,
   ``rollups.get(tp).add(offset, entry.event, entry.epoch_ms, kafka_ms)``. On the worker's schedules, read on the
   traffic's clock (the Kafka timestamp: a worker that keeps up with live traffic), every
   ``ROLLUP_FLUSH_INTERVAL_MS`` the stage's ``writes(now)`` (lines appended, final windows given the batch's
   sequence and released as if that batch were stored at once) and every ``COMMIT_INTERVAL_MS`` the commit
   ``position`` of each partition, which is what lets sealed windows go. Three pipelines, alternating, same
   records, medians of the rounds, ``time.process_time``: ``core`` (no rollup stage, for reference), ``red``
   (``RollupStage(calls=False)``: ``SERVICE_MAP=false``) and ``edges`` (``calls=True``, the default). The cost is
   edges against red, paired within each round. Halves of calls wait ``SERVICE_MAP_WAIT_MS`` of event time for
   their other half, so the default run covers more event time than that (the store reaches its steady state).
2. **routes** (own local stack): 14 days of rollups, RED and edges. Spans of the last two hours go through a
   ``RollupStage(calls=True)`` (3 source partitions); its 1-minute windows, keyed as the engine keys them, are
   the 1-minute documents, and ``bench_api.load_rollups`` writes them, runs the real compactor over the closed
   hours and writes 1-hour documents for the 14 days before, summed from 60 of those minutes each. Then
   ``panopticon api`` (gunicorn, its defaults) and, one request at a time on a keep-alive connection,
   ``--requests`` answers per question after 4 on new connections (both workers warm): p50/p95/max, and the
   first answer, which for ``map_14d``, the first question, is a fresh API's (nothing kept); the later
   questions' first answers find the shapes the map read already kept. The n-th request of a question asks
   a range ending 10 s + n minutes before the data's end, so neither the response cache (sliding questions
   only) nor the rollup source's 2-s answer cache (keyed by the minutes read) answers it: each is read
   through the worker's window cache, as a new question would be; ``map_14d_sliding`` asks with ``to`` = now,
   as the frontend does (response cache, 10 s steps). 2.5 s pass between questions.
"""

from __future__ import annotations

import argparse
import gc
import http.client
import inspect
import statistics
import sys
import tempfile
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import msgspec

from benchmarks.bench_api import (
    PREFIX,
    Loaded,
    LoadingCreator,
    load_rollups,
    quantile,
    route_costs,
    route_counters,
    start_api,
)
from benchmarks.report import Report, Target, machine
from benchmarks.rig import local_stack
from panopticon.api.red import ANSWER_TTL_S
from panopticon.common.clients import opensearch_client
from panopticon.common.clock import format_timestamp
from panopticon.common.indices import METRICS_1H, METRICS_1M, IndexNames
from panopticon.common.rollup import SCOPE_EDGE, SCOPE_SERVICE, TIER_1M, RollupKey
from panopticon.common.rollup_reader import DAY_MS, HOUR_MS, MINUTE_MS
from panopticon.common.settings import Settings, load_settings
from panopticon.devtools.traffic import generate
from panopticon.engine.batch import SPAN
from panopticon.engine.committing import COMMIT_INTERVAL_MS
from panopticon.engine.decode import EventDecoder
from panopticon.engine.rollups import Half, RollupStage

SEED = 7
LOG_TOPIC, SPAN_TOPIC = "apm.logs", "apm.spans"
FLUSH_AT = 8 * 1024 * 1024  # a bulk block's worth, as bench_core
EVENTS_PER_TRACE_MS = 16_200  # loadgen: events per second of event time at trace_interval_ms=1
MODES = ("core", "red", "edges")
RAW_WINDOW_MS = 2 * HOUR_MS

Records = list[tuple[str, int, int, bytes, int]]  # (topic, partition, offset, value, Kafka timestamp)


# ---------------------------------------------------------------- 1. engine: edge building per CPU-second

def traffic(count: int, rate: float, partitions: int) -> tuple[Records, int]:
    """``count`` loadgen records at ``rate`` events/s of event time, ending an hour ago; offsets per partition."""
    base = int(time.time() * 1000) - 3_600_000 - int(count / rate * 1000)
    out: Records = []
    offsets = [0] * partitions
    events = 0
    for r in generate(seed=SEED, count=count, base_time_ms=base, trace_interval_ms=EVENTS_PER_TRACE_MS / rate):
        partition = zlib.crc32(r.key) % partitions
        out.append((SPAN_TOPIC if r.kind == "span" else LOG_TOPIC, partition, offsets[partition], r.value,
                    r.timestamp_ms))
        offsets[partition] += 1
        events += r.n_events
    return out, events


@dataclass
class Pass:
    events: int = 0
    cpu_s: float = 0.0
    periodic_cpu_s: float = 0.0  # of cpu_s: the rollup writes and commit positions
    rollup_docs: int = 0  # rollup documents written (a window's cells are all written again when it changed)
    rollup_ids: set[bytes] = field(default_factory=set)  # distinct documents among them
    waiting_peak: int = 0
    stage: RollupStage | None = None


class Building:
    """A worker's building step without Kafka: decode into a buffer, spans into the rollup stage, and the
    stage's writes and commit positions on the worker's intervals of the traffic's clock."""

    def __init__(self, settings: Settings, stage: RollupStage | None) -> None:
        self.decode = EventDecoder(IndexNames(""), LOG_TOPIC, SPAN_TOPIC, 1_048_576).decode
        self.stage = stage
        self.flush_every_ms = settings.rollup_flush_interval_ms
        self.buf = bytearray()
        self.last: dict[tuple[str, int], int] = {}  # the last offset of each span partition
        self.seq = 0
        self.out = Pass(stage=stage)

    def run(self, batch: Records) -> Pass:
        decode, stage, out, buf, last = self.decode, self.stage, self.out, self.buf, self.last
        now = int(time.time() * 1000)
        next_flush = next_commit = 0
        started = time.process_time()
        for topic, partition, offset, value, kafka_ms in batch:
            entries = decode(topic, partition, offset, value, kafka_ms, now).entries
            for entry in entries:
                buf += entry.line
            out.events += len(entries)
            if len(buf) > FLUSH_AT:
                buf.clear()
            if stage is None:
                continue
            if topic == SPAN_TOPIC:
                tp = (topic, partition)
                rollups = stage.get(tp)
                for entry in entries:
                    if entry.kind == SPAN:
                        rollups.add(offset, entry.event, entry.epoch_ms, kafka_ms)  # type: ignore[arg-type]
                last[tp] = offset
            if kafka_ms >= next_flush:
                next_flush = kafka_ms + self.flush_every_ms
                self.write_rollups(kafka_ms)
            if kafka_ms >= next_commit:
                next_commit = kafka_ms + COMMIT_INTERVAL_MS
                self.commit_positions()
        out.cpu_s = time.process_time() - started
        return out

    def write_rollups(self, now_ms: int) -> None:
        """``Builder.write_rollups``, with the batch stored at once (``Committing.advance`` releases it)."""
        assert self.stage is not None
        started = time.process_time()
        self.seq += 1
        writes = self.stage.writes(now_ms)
        for write in writes:
            self.buf += write.line
            if write.final:
                write.window.release_seq = self.seq
        self.stage.release(self.seq)
        self.out.rollup_docs += len(writes)
        self.out.waiting_peak = max(self.out.waiting_peak, self.stage.waiting())
        self.out.periodic_cpu_s += time.process_time() - started
        self.out.rollup_ids.update(write.action.split(b',"version"')[0] for write in writes)  # not the engine's

    def commit_positions(self) -> None:
        """``CommitTracker.due``: where each partition's commit may go (this prunes stored sealed windows)."""
        assert self.stage is not None
        started = time.process_time()
        for tp, offset in self.last.items():
            self.stage.position(tp, offset + 1, None)
        self.out.periodic_cpu_s += time.process_time() - started


def build_pass(settings: Settings, batch: Records, mode: str) -> Pass:
    stage = None if mode == "core" else RollupStage(
        IndexNames(""), settings.rollup_grace_ms, msgspec.json.Encoder().encode, settings.service_map_wait_ms,
        settings.service_map_waiting_max, calls=mode == "edges")
    gc.collect()  # the previous pass's garbage is not this one's
    return Building(settings, stage).run(batch)


def waiting_bytes(stage: RollupStage) -> int:
    """Bytes the waiting halves hold: their keys, the Half objects and what only they keep alive (strings,
    numbers), and the stores themselves (shared objects counted once)."""
    seen: set[int] = set()
    total = 0

    def size(obj: object) -> int:
        if id(obj) in seen:
            return 0
        seen.add(id(obj))
        return sys.getsizeof(obj)

    for state in stage.partitions.values():
        for store in (state.clients, state.servers):
            total += size(store)
            for key, half in store.items():
                total += size(key) + size(half)
                total += sum(size(getattr(half, name)) for name in HALF_FIELDS)
    return total


HALF_FIELDS = tuple(inspect.signature(Half).parameters)  # its attributes (compiled, it has no __slots__ to read)


def measure_engine(report: Report, settings: Settings, records: int, rate: float, rounds: int,
                   partitions: int) -> None:
    batch, events = traffic(records, rate, partitions)
    gc.collect()
    gc.freeze()  # the records are no garbage collector's work, in any pass
    event_s = (batch[-1][4] - batch[0][4]) / 1000
    spans = sum(1 for r in batch if r[0] == SPAN_TOPIC)  # one span per span record in loadgen's traffic
    print(f"engine: {records:,} records ({events:,} events, {event_s:.0f} s of event time at ~{rate:,.0f} "
          f"events/s, {partitions} partitions), {rounds} alternating rounds of {', '.join(MODES)}", flush=True)
    passes: dict[str, list[Pass]] = {mode: [] for mode in MODES}
    for n in range(rounds):
        for mode in MODES if n % 2 == 0 else tuple(reversed(MODES)):
            passes[mode].append(build_pass(settings, batch, mode))
    rate_of = {mode: [p.events / p.cpu_s for p in ps] for mode, ps in passes.items()}
    cost = [(r / e - 1) * 100 for r, e in zip(rate_of["red"], rate_of["edges"], strict=True)]
    stage_cost = [(c / r - 1) * 100 for c, r in zip(rate_of["core"], rate_of["red"], strict=True)]
    edges_pass, red_pass = passes["edges"][-1], passes["red"][-1]
    assert edges_pass.stage is not None
    conditions: dict[str, Any] = {
        "records": records, "events": events, "span_records": spans, "event_s": round(event_s, 1),
        "rate_events_per_s": rate, "partitions": partitions, "rounds": rounds, "clock": "process CPU time",
        "schedule": "rollup writes / commit positions on the traffic's clock"}

    def add(name: str, value: float, unit: str, target: Target | None = None) -> None:
        report.add(f"engine.{name}", value, unit, target, **conditions)

    for mode in MODES:
        add(f"{mode}_events_per_cpu_s", statistics.median(rate_of[mode]), "events/s")
    add("edge_cost_pct", statistics.median(cost), "%", Target("<=", 10))
    per_event_s = [1 / e - 1 / r for r, e in zip(rate_of["red"], rate_of["edges"], strict=True)]
    add("edge_us_per_span", statistics.median(per_event_s) * events / spans * 1e6, "us")
    add("red_stage_cost_pct", statistics.median(stage_cost), "%")
    for mode, p in (("red", red_pass), ("edges", edges_pass)):
        add(f"{mode}_periodic_share_pct", 100 * p.periodic_cpu_s / p.cpu_s, "%")
        add(f"{mode}_rollup_docs", p.rollup_docs, "docs")
        add(f"{mode}_rollup_writes_per_doc", p.rollup_docs / len(p.rollup_ids) if p.rollup_ids else float("nan"),
            "writes")
    held = waiting_bytes(edges_pass.stage)
    waiting = edges_pass.stage.waiting()
    edges_pass.waiting_peak = max(edges_pass.waiting_peak, waiting)
    add("edges_waiting_peak", edges_pass.waiting_peak, "halves")
    add("edges_waiting_bytes_per_half", held / waiting if waiting else float("nan"), "B")
    add("edges_waiting_per_rate", edges_pass.waiting_peak / rate, "halves/(ev/s)")
    tally = edges_pass.stage.tally
    add("edges_unpaired", tally.unpaired, "calls")
    add("edges_evicted", tally.evicted, "halves")
    report.note("events per CPU-s by round: " + "; ".join(
        f"{mode} {', '.join(f'{r:,.0f}' for r in rate_of[mode])}" for mode in MODES))
    report.note(f"edge cost by round (%): {', '.join(f'{c:.1f}' for c in cost)}; ratio of the medians: "
                f"{(statistics.median(rate_of['red']) / statistics.median(rate_of['edges']) - 1) * 100:.1f} %")
    report.note(f"waiting halves at the end: {waiting:,} holding {held / 2**20:.1f} MiB; "
                "edges_waiting_per_rate = peak / rate: at R events/s of traffic, about R times that many halves wait")
    gc.unfreeze()


# ---------------------------------------------------------------- 2. routes: the service map over 14 days

@dataclass
class Question:
    name: str
    route: str  # the route template, as the API's metrics label it
    path: Callable[[int], str]  # the n-th request's path


@dataclass
class Answers:
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    body: bytes = b""  # the last 200 answer

    def sizes(self) -> dict[str, int]:
        """The lengths of the last answer's lists (nodes, edges; callers, callees)."""
        doc = msgspec.json.decode(self.body) if self.body else {}
        return {key: len(value) for key, value in doc.items() if isinstance(value, list)}


def stage_minutes(now_ms: int, records: int, partitions: int) -> tuple[Loaded, list[str]]:
    """The last two hours of loadgen spans through a ``RollupStage(calls=True)``: its windows' cells as the
    1-minute cells ``bench_api.load_rollups`` writes (keys as ``RollupStage._documents`` makes them), and the
    services with SERVER spans, most calls in or out first."""
    settings = load_settings({})
    stage = RollupStage(IndexNames(PREFIX), settings.rollup_grace_ms, msgspec.json.Encoder().encode,
                        settings.service_map_wait_ms, settings.service_map_waiting_max, calls=True)
    decoder = EventDecoder(IndexNames(PREFIX), LOG_TOPIC, SPAN_TOPIC, 16 << 20)
    offsets = [0] * partitions
    interval_ms = RAW_WINDOW_MS / (records / (EVENTS_PER_TRACE_MS / 1000))  # ~16 records (and events) a trace
    for r in generate(seed=SEED, base_time_ms=now_ms - RAW_WINDOW_MS, trace_interval_ms=interval_ms):
        if r.timestamp_ms > now_ms - 30_000:
            break
        partition = zlib.crc32(r.key) % partitions
        offset, offsets[partition] = offsets[partition], offsets[partition] + 1
        if r.kind != "span":
            continue
        rollups = stage.get((SPAN_TOPIC, partition))
        for entry in decoder.decode(SPAN_TOPIC, partition, offset, r.value, r.timestamp_ms, now_ms).entries:
            if entry.kind == SPAN:
                rollups.add(offset, entry.event, entry.epoch_ms, r.timestamp_ms)  # type: ignore[arg-type]
    loaded = Loaded(end_ms=now_ms - 30_000)
    calls: dict[str, int] = {}
    real: set[str] = set()  # services with SERVER spans: the map's real nodes
    for state in stage.partitions.values():
        for window in state.windows():
            cells = loaded.minute_cells.setdefault(window.minute_ms, {})
            for (scope, service, environment, endpoint), cell in window.cells.items():
                cells[RollupKey(TIER_1M, window.minute_ms, service, environment, scope, endpoint, state.name,
                                str(window.first_offset))] = cell
                if scope == SCOPE_EDGE:
                    for name in (service, endpoint):
                        calls[name] = calls.get(name, 0) + cell.request_count
                elif scope == SCOPE_SERVICE:
                    real.add(service)
    return loaded, sorted(real, key=lambda name: -calls.get(name, 0))


def questions(services: list[str], anchor_ms: int) -> list[Question]:
    """Explicit ranges: the n-th ends ``10 s + n minutes`` before the anchor, so no two requests read the same
    minutes and neither the response cache (sliding questions only) nor the 2-s answer cache of the rollup
    source (keyed by the minutes read) answers them: each is read through the worker's window cache."""

    def service(n: int) -> str:
        return services[n % len(services)]

    def ranged(n: int, span_ms: int, **params: str) -> str:
        end = anchor_ms - 10_000 - n * MINUTE_MS
        return urlencode({"from": format_timestamp(end - span_ms), "to": format_timestamp(end), **params})

    def sliding(_n: int) -> str:  # as the frontend asks: to = now
        now = int(time.time() * 1000)
        return urlencode({"from": format_timestamp(now - 14 * DAY_MS), "to": format_timestamp(now)})

    smap, deps = "/query/service-map", "/query/services/{service}/dependencies"
    return [
        Question("map_14d", smap, lambda n: f"{smap}?{ranged(n, 14 * DAY_MS)}"),  # first: the cold answer
        Question("map_14d_sliding", smap, lambda n: f"{smap}?{sliding(n)}"),
        Question("neighbourhood_14d", smap, lambda n: f"{smap}?{ranged(n, 14 * DAY_MS, service=service(n))}"),
        Question("dependencies_14d", deps,
                 lambda n: f"/query/services/{quote(service(n), safe='')}/dependencies?{ranged(n, 14 * DAY_MS)}"),
        Question("map_1h", smap, lambda n: f"{smap}?{ranged(n, HOUR_MS)}"),
    ]


def ask(port: int, paths: list[str], keep_alive: bool = True) -> Answers:
    """The paths one after the other, on one keep-alive connection (or a new one each)."""
    out = Answers()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    for path in paths:
        started = time.perf_counter()
        try:
            connection.request("GET", path)
            answer = connection.getresponse()
            body = answer.read()
            status = str(answer.status)
            if status == "200":
                out.body = body
        except (OSError, http.client.HTTPException) as exc:
            status = type(exc).__name__
        out.latencies_ms.append((time.perf_counter() - started) * 1000)
        if status != "200":
            out.errors[status] = out.errors.get(status, 0) + 1
        if status != "200" or not keep_alive:
            connection.close()
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    connection.close()
    return out


def measure_routes(report: Report, records: int, days: int, partitions: int, requests: int) -> None:
    work = Path(tempfile.mkdtemp(prefix="panopticon-bench-service-map-"))
    with local_stack() as stack:
        env = {**stack.env(), "OPENSEARCH_INDEX_PREFIX": PREFIX}
        client = opensearch_client(load_settings(env), timeout_s=600)
        names = IndexNames(PREFIX)
        creator = LoadingCreator(client, names)
        now_ms = int(time.time() * 1000)
        started = time.monotonic()
        loaded, services = stage_minutes(now_ms, records, partitions)
        staged_s = time.monotonic() - started
        rollup_s = load_rollups(client, names, creator, loaded, now_ms, days)
        creator.restore()
        stored = {kind: int(client.count(index=names.pattern(kind))["count"]) for kind in (METRICS_1M, METRICS_1H)}
        edges = {kind: int(client.count(index=names.pattern(kind), body={"query": {"term": {"scope": SCOPE_EDGE}}})
                           ["count"]) for kind in (METRICS_1M, METRICS_1H)}
        print(f"routes: {days} days of rollups: {stored[METRICS_1M]:,} 1-minute documents ({edges[METRICS_1M]:,} "
              f"edges), {stored[METRICS_1H]:,} 1-hour ({edges[METRICS_1H]:,} edges); staged in {staged_s:.0f} s, "
              f"written and compacted in {rollup_s:.0f} s", flush=True)
        conditions: dict[str, Any] = {
            "rollup_days": days, "partitions": partitions, "requests": requests, "rollup_docs": stored,
            "edge_docs": edges, "services": len(services), "api": "gunicorn 2 workers x 4 threads (defaults), "
            "one request at a time", "search": "OpenSearch 2.19.1 (local stack, 1 node)"}
        report.conditions.update({**machine(), **conditions})  # every figure after this one: the load now
        report.add("routes.load_s", rollup_s, "s")
        api, port = start_api(env, work)
        try:
            for question in questions(services, loaded.end_ms + 1_000):
                time.sleep(ANSWER_TTL_S + 0.5)  # nothing the last question read is answered from the answer cache
                before = route_counters(port)
                first = ask(port, [question.path(0)], keep_alive=False)  # a new connection: a fresh worker
                first_costs = route_costs(port, question.route, before)
                ask(port, [question.path(n) for n in range(1, 5)], keep_alive=False)  # both workers warm
                before = route_counters(port)
                answers = ask(port, [question.path(n) for n in range(5, 5 + requests)])
                publish_question(report, question, first, first_costs, answers, route_costs(port, question.route,
                                                                                            before))
        finally:
            api.stop()


def publish_question(report: Report, question: Question, first: Answers, first_costs: tuple[float, ...],
                     answers: Answers, costs: tuple[float, ...]) -> None:
    latencies, name = answers.latencies_ms, f"routes.{question.name}"
    first_ms, p50, p95 = first.latencies_ms[0], quantile(latencies, 0.50), quantile(latencies, 0.95)
    errors = sum(first.errors.values()) + sum(answers.errors.values())
    answered, searches, documents = costs
    per = answered or float("nan")
    report.add(f"{name}.first_answer_ms", first_ms, "ms", search_requests=first_costs[1], documents=first_costs[2])
    report.add(f"{name}.p50_ms", p50, "ms")
    report.add(f"{name}.p95_ms", p95, "ms", answer=answers.sizes())
    report.add(f"{name}.max_ms", max(latencies), "ms")
    report.add(f"{name}.errors", errors, "requests", kinds={**first.errors, **answers.errors})
    report.add(f"{name}.search_requests_per_req", searches / per, "requests")
    report.add(f"{name}.documents_per_req", documents / per, "docs")
    print(f"  {question.name:<18} first {first_ms:8.1f} ms ({first_costs[1]:.0f} searches, {first_costs[2]:,.0f} "
          f"docs)  p50 {p50:7.1f} ms  p95 {p95:7.1f} ms  max {max(latencies):7.1f} ms  errors {errors}  "
          f"search {searches / per:5.2f} req {documents / per:8.1f} docs per request; answer {answers.sizes()}",
          flush=True)


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_service_map", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="engine: 120k records, 2 rounds; routes: 40k records, 20 requests")
    parser.add_argument("--only", choices=("engine", "routes"), help="one half only")
    parser.add_argument("--records", type=int, help="engine: loadgen records (default 400k)")
    parser.add_argument("--rate", type=float, default=4_000.0, help="engine: events per second of event time")
    parser.add_argument("--rounds", type=int, help="engine: rounds per pipeline (default 3)")
    parser.add_argument("--partitions", type=int, default=4, help="engine: span topic partitions of the worker")
    parser.add_argument("--route-records", type=int, help="routes: loadgen records over the last 2 hours "
                        "(default 100k)")
    parser.add_argument("--days", type=int, default=14, help="routes: days of rollups")
    parser.add_argument("--requests", type=int, help="routes: warm requests per question (default 50)")
    args = parser.parse_args(argv)
    quick = args.quick
    report = Report("service_map", {"quick": quick})
    try:
        if args.only in (None, "engine"):
            measure_engine(report, load_settings({}), args.records or (120_000 if quick else 400_000), args.rate,
                           args.rounds or (2 if quick else 3), args.partitions)
        if args.only in (None, "routes"):
            measure_routes(report, args.route_records or (40_000 if quick else 100_000),
                           args.days, 3, args.requests or (20 if quick else 50))
    finally:
        if report.figures:
            report.publish()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
