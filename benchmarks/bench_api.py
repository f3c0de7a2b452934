"""The query API under load: requests/s and p50/p95/p99 latency per route at 16 concurrent clients.

``python -m benchmarks.bench_api [--quick] [--spans N --logs N] [--duration S] [--clients N] [--only PHASE]``

1. Starts its own local stack (real Kafka and OpenSearch, one node) on free ports.
2. Loads a dataset built from loadgen with a fixed seed: every record goes through the engine's own decode
   (``engine.decode.EventDecoder``: the stored documents, daily index and ids exactly as the engine writes
   them) and is sent as NDJSON straight to ``_bulk`` (8 MiB bodies, sent by a thread of their own while the
   next body is built), into daily indices made by ``IndexCreator``. While loading, every index has
   ``refresh_interval: -1`` and no replica; both are restored afterwards (the engine's 1 s and OpenSearch's
   default of one replica) and the indices refreshed. The raw data covers the last two hours.
3. Rollups for 14 days: 1-minute documents of the loaded SERVER spans, one per source partition (the
   engine's keys), then ``engine.compactor.compact_hours`` derives the 1-hour documents of the closed hours;
   each older hour gets 1-hour documents (and its marker) summed from 60 minutes drawn from the loaded ones
   with ``RollupCell.merge``, as the compactor sums minute documents.
4. Starts ``panopticon api`` (gunicorn, its default 2 workers x 4 threads) on a free port and drives each
   route for ``--duration`` seconds with ``--clients`` threads, each with its own keep-alive HTTP connection.
   Ranges are explicit and end more than 10 s in the past, so the API's response cache (sliding questions
   only) is not involved, except in the ``*_sliding`` phases, which ask what the frontend asks (14 days up to now).
   The search requests and documents each route reads come from the API's own Prometheus counters
   (``panopticon_api_search_requests_total`` / ``_documents_total``), per answered request.

Scales: ``--quick`` (smoke: 30k spans + 20k logs, 5 s per route), and by default the full scale: >= 1,000,000
spans and >= 1,000,000 logs, 30 s per route. Targets (p95): trace detail under 100 ms, 14-day
``/query/services`` and ``.../metrics`` under 300 ms; every raw route's p95 is reported.
"""

from __future__ import annotations

import argparse
import http.client
import queue
import random
import re
import tempfile
import threading
import time
import zlib
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import msgspec

from benchmarks.report import Report, Target
from benchmarks.rig import Group, local_stack, start_server
from panopticon.common.clients import opensearch_client
from panopticon.common.clock import format_timestamp
from panopticon.common.indices import LOGS, METRICS_1H, METRICS_1M, TRACES, IndexCreator, IndexNames, index_settings
from panopticon.common.rollup import (
    SCOPE_ENDPOINT,
    SCOPE_SERVICE,
    TIER_1H,
    TIER_1M,
    RollupCell,
    RollupKey,
    hour_marker_key,
)
from panopticon.common.rollup_reader import DAY_MS, HOUR_MS, MINUTE_MS
from panopticon.common.schema import SpanDoc
from panopticon.common.settings import load_settings
from panopticon.common.wire import StoredSpan
from panopticon.devtools.stack import LocalStack
from panopticon.devtools.traffic import generate
from panopticon.engine.compactor import compact_hours
from panopticon.engine.decode import EventDecoder

SEED = 20_240_601
PREFIX = "benchapi-"
LOG_TOPIC, SPAN_TOPIC = "apm.logs", "apm.spans"
RAW_WINDOW_MS = 2 * HOUR_MS
BULK_BYTES = 8 << 20  # as the engine's BULK_BATCH_BYTES_MB
SCALES = {"quick": (30_000, 20_000), "full": (1_000_000, 1_000_000)}
REFRESH_INTERVAL = index_settings()["refresh_interval"]  # what the engine's indices have
REPLICAS = 1  # OpenSearch's default: index_settings() sets none
TARGETS = {"services_14d": 300.0, "metrics_14d": 300.0, "trace": 100.0}
Cells = dict[RollupKey, RollupCell]


# ---------------------------------------------------------------- loading

@dataclass(slots=True)
class EndpointSpans:
    """The SERVER spans loaded for one endpoint."""

    requests: int = 0
    errors: int = 0


@dataclass
class Loaded:
    """What was stored, and what the load phase measured."""

    records: int = 0
    spans: int = 0
    logs: int = 0
    rollup_1m: int = 0
    rollup_1h: int = 0
    load_s: float = 0.0  # wall time of the raw load: generate + decode + bulk, overlapped
    bulk_s: float = 0.0  # time the bulk requests of the raw load took, summed
    waited_s: float = 0.0  # time the generating thread waited for the sender
    end_ms: int = 0
    traces: list[str] = field(default_factory=list)
    endpoints: defaultdict[tuple[str, str], EndpointSpans] = field(  # by (service, name)
        default_factory=lambda: defaultdict(EndpointSpans))
    minute_cells: dict[int, Cells] = field(default_factory=dict)

    @property
    def docs(self) -> int:
        return self.spans + self.logs

    def services(self) -> list[str]:
        counts: dict[str, int] = {}
        for (service, _), spans in self.endpoints.items():
            counts[service] = counts.get(service, 0) + spans.requests
        return sorted(counts, key=lambda s: -counts[s])


class LoadingCreator(IndexCreator):
    """``IndexCreator`` that turns refresh off and drops the replica of each index it creates, for the load;
    ``restore`` gives every index of the prefix the engine's refresh interval and the default replica back."""

    def __init__(self, client: Any, names: IndexNames) -> None:
        super().__init__(client, names)
        self._client = client
        self.created: set[str] = set()

    def ensure(self, kind: str, index: str) -> None:
        if index in self.created:
            return
        super().ensure(kind, index)
        self._client.indices.put_settings(index=index, body={"index": {"refresh_interval": "-1",
                                                                       "number_of_replicas": 0}})
        self.created.add(index)

    def restore(self) -> None:
        self._client.indices.put_settings(index=f"{PREFIX}*", body={"index": {
            "refresh_interval": REFRESH_INTERVAL, "number_of_replicas": REPLICAS}})
        self._client.indices.refresh(index=f"{PREFIX}*")


class BulkLoader:
    """NDJSON bodies straight to ``_bulk``, sent by a thread of their own (at most two bodies wait), so the
    next body is generated while one is indexed; the request time is summed into ``loaded.bulk_s``."""

    def __init__(self, client: Any, loaded: Loaded) -> None:
        self._client = client
        self._loaded = loaded
        self._body = bytearray()
        self._docs = 0
        self._queue: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        self._error: BaseException | None = None
        self._sender = threading.Thread(target=self._send_all, name="bulk-sender", daemon=True)
        self._sender.start()
        self.stored = 0

    def add(self, action: bytes, doc: bytes) -> None:
        self._body += action
        self._body += doc
        self._body += b"\n"
        self._docs += 1
        if len(self._body) >= BULK_BYTES:
            self._submit()

    def _submit(self) -> None:
        if self._error is not None:
            raise RuntimeError(f"bulk: {self._error}") from self._error
        if not self._docs:
            return
        waiting = time.monotonic()
        self._queue.put(bytes(self._body))
        self._loaded.waited_s += time.monotonic() - waiting
        self.stored += self._docs
        self._body.clear()
        self._docs = 0

    def _send_all(self) -> None:
        while (body := self._queue.get()) is not None:
            if self._error is not None:
                continue  # drain: the generating side raises at its next submit
            started = time.monotonic()
            try:
                answer = self._client.bulk(body=body, request_timeout=600)
                if answer.get("errors"):
                    failed = [i for i in answer["items"] if next(iter(i.values())).get("status", 500) >= 300]
                    raise RuntimeError(f"{len(failed)} failed, first {failed[:1]}")
            except BaseException as exc:  # noqa: BLE001 - handed to the generating thread
                self._error = exc
            self._loaded.bulk_s += time.monotonic() - started

    def close(self) -> None:
        """Send what is left and wait for every request; raises the first failure."""
        try:
            self._submit()
        finally:
            self._queue.put(None)
            self._sender.join()
        if self._error is not None:
            raise RuntimeError(f"bulk: {self._error}") from self._error


def load_raw(client: Any, names: IndexNames, creator: IndexCreator, now_ms: int, spans: int, logs: int,
             partitions: int) -> Loaded:
    """Loadgen records through the engine's decode into ``_bulk``; SERVER spans into 1-minute cells."""
    loaded = Loaded()
    decoder = EventDecoder(names, LOG_TOPIC, SPAN_TOPIC, 16 << 20)
    bulk, offsets = BulkLoader(client, loaded), [0] * partitions
    interval_ms = RAW_WINDOW_MS / (max(spans, logs * 1.5) / 9.6 * 1.1)  # ~9.6 spans, ~6.4 logs per trace
    sampler, last_trace = random.Random(SEED), ""
    started = time.monotonic()
    for record in generate(seed=SEED, base_time_ms=now_ms - RAW_WINDOW_MS, trace_interval_ms=interval_ms,
                           error_ratio=0.03):
        if record.trace_id != last_trace:
            if (loaded.spans >= spans and loaded.logs >= logs) or record.timestamp_ms > now_ms - 30_000:
                break
            last_trace = record.trace_id
            if sampler.random() < 0.2:
                loaded.traces.append(record.trace_id)
        partition = zlib.crc32(record.key) % partitions
        offset, offsets[partition] = offsets[partition], offsets[partition] + 1
        topic = SPAN_TOPIC if record.kind == "span" else LOG_TOPIC
        decoded = decoder.decode(topic, partition, offset, record.value, record.timestamp_ms, now_ms)
        loaded.records += 1
        for entry in decoded.entries:
            creator.ensure(entry.index_kind, entry.index)
            bulk.add(entry.action, entry.doc)
            doc = entry.event
            if isinstance(doc, SpanDoc | StoredSpan):
                loaded.spans += 1
                loaded.end_ms = max(loaded.end_ms, entry.epoch_ms)
                if doc.kind == "SERVER":
                    add_server_span(loaded, doc, entry.epoch_ms, f"{SPAN_TOPIC}:{partition}")
            else:
                loaded.logs += 1
    bulk.close()
    loaded.load_s = time.monotonic() - started
    return loaded


def add_server_span(loaded: Loaded, doc: SpanDoc | StoredSpan, epoch_ms: int, partition: str) -> None:
    minute = epoch_ms - epoch_ms % MINUTE_MS
    cells = loaded.minute_cells.setdefault(minute, {})
    error = doc.status == "ERROR"
    for scope, endpoint in ((SCOPE_SERVICE, ""), (SCOPE_ENDPOINT, doc.name)):
        key = RollupKey(TIER_1M, minute, doc.service_name, doc.environment, scope, endpoint, partition)
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = RollupCell()
        cell.add(doc.duration_ms, error)
    spans = loaded.endpoints[(doc.service_name, doc.name)]
    spans.requests += 1
    spans.errors += error


def rollup_actions(names: IndexNames, creator: IndexCreator, kind: str, cells: Cells,
                   written_ms: int) -> Iterator[tuple[bytes, bytes]]:
    encode = msgspec.json.Encoder().encode
    for key, cell in cells.items():
        index = key.index_name(names)
        creator.ensure(kind, index)
        yield b'{"index":{"_index":"%s","_id":"%s"}}\n' % (index.encode(), key.doc_id().encode()), \
            encode(cell.to_doc(key, written_ms))


def load_rollups(client: Any, names: IndexNames, creator: IndexCreator, loaded: Loaded, now_ms: int,
                 days: int) -> float:
    """1-minute documents of the loaded spans, the compactor over them, then 1-hour documents further back."""
    started = time.monotonic()
    bulk = BulkLoader(client, Loaded())
    for minute, cells in sorted(loaded.minute_cells.items()):
        for action, doc in rollup_actions(names, creator, METRICS_1M, cells, minute + MINUTE_MS + 5_000):
            bulk.add(action, doc)
            loaded.rollup_1m += 1
    bulk.close()
    client.indices.refresh(index=f"{PREFIX}*")
    bulk = BulkLoader(client, Loaded())
    report = compact_hours(client, names, now_ms, 300_000, lookback_hours=RAW_WINDOW_MS // HOUR_MS + 2,
                           creator=creator)
    loaded.rollup_1h += report.documents_written
    rng, minutes = random.Random(SEED), sorted(loaded.minute_cells)
    first_raw_hour = min(minutes) - min(minutes) % HOUR_MS
    for hour in range(first_raw_hour - days * DAY_MS, first_raw_hour, HOUR_MS):
        cells: Cells = {}
        total = 0
        for minute in (minutes[int(rng.random() * len(minutes))] for _ in range(60)):
            for key, cell in loaded.minute_cells[minute].items():
                hourly = RollupKey(TIER_1H, hour, key.service, key.environment, key.scope, key.endpoint)
                cells.setdefault(hourly, RollupCell()).merge(cell)
                total += cell.request_count if key.scope == SCOPE_SERVICE else 0
        written = hour + HOUR_MS + 360_000
        for action, doc in rollup_actions(names, creator, METRICS_1H, cells, written):
            bulk.add(action, doc)
        marker = RollupCell().to_doc(hour_marker_key(hour), written)
        marker.request_count = total
        index = names.daily(METRICS_1H, hour)
        bulk.add(b'{"index":{"_index":"%s","_id":"%s"}}\n' % (index.encode(), marker.rollup_id.encode()),
                 msgspec.json.encode(marker))
        loaded.rollup_1h += len(cells) + 1
    bulk.close()
    return time.monotonic() - started


# ---------------------------------------------------------------- driving the routes

@dataclass
class Phase:
    name: str
    route: str  # the route template, as the API's metrics label it
    request: Callable[[random.Random], str]  # a path with its query string


@dataclass
class Outcome:
    latencies_ms: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0


def explicit(anchor_ms: int, span_ms: int, rng: random.Random) -> dict[str, str]:
    """An explicit range ending 10-70 s before the anchor (never a sliding, cached question)."""
    end = anchor_ms - 10_000 - int(rng.random() * 60_000)
    return {"from": format_timestamp(end - span_ms), "to": format_timestamp(end)}


def phases(loaded: Loaded, anchor_ms: int) -> list[Phase]:
    services = loaded.services()
    busy = [k for k, _ in sorted(loaded.endpoints.items(), key=lambda kv: -kv[1].requests)][:12]
    failing = [k for k, spans in loaded.endpoints.items() if spans.errors] or busy
    traces = loaded.traces

    def pick(rng: random.Random, items: list[Any]) -> Any:
        return items[int(rng.random() * len(items))]

    def path(base: str, rng: random.Random, span_ms: int | None, **params: Any) -> str:
        query = {**(explicit(anchor_ms, span_ms, rng) if span_ms else {}), **params}
        return f"{base}?{urlencode(query)}" if query else base

    def service_path(rng: random.Random, tail: str) -> str:
        return f"/query/services/{quote(pick(rng, services), safe='')}/{tail}"

    def endpoint_path(rng: random.Random, pairs: list[tuple[str, str]]) -> str:
        service, endpoint = pick(rng, pairs)
        return f"/query/services/{quote(service, safe='')}/endpoints/{quote(endpoint, safe='')}/traces"

    svc, met = "/query/services", "/query/services/{service}/metrics"
    sliding_14d = urlencode({"from": format_timestamp(anchor_ms - 14 * DAY_MS)})  # `to` is now, as the frontend asks
    return [  # cheapest first: long RED reads leave work queued in the search server after a phase
        Phase("endpoint_traces_error", "/query/services/{service}/endpoints/{endpoint}/traces",
              lambda r: path(endpoint_path(r, failing), r, HOUR_MS, status="ERROR")),
        Phase("endpoint_traces_slow", "/query/services/{service}/endpoints/{endpoint}/traces",
              lambda r: path(endpoint_path(r, busy), r, HOUR_MS, status="SLOW")),
        Phase("service_traces", "/query/services/{service}/traces",
              lambda r: path(service_path(r, "traces"), r, HOUR_MS, sort=pick(r, ["duration_desc",
                                                                                  "start_time_desc"]))),
        Phase("errors", "/query/services/{service}/errors", lambda r: path(service_path(r, "errors"), r, HOUR_MS)),
        Phase("trace", "/query/traces/{trace_id}", lambda r: f"/query/traces/{pick(r, traces)}"),
        Phase("logs", "/query/logs", lambda r: path("/query/logs", r, 15 * MINUTE_MS,
                                                    service_name=pick(r, services))),
        Phase("logs_search", "/query/logs", lambda r: path("/query/logs", r, 15 * MINUTE_MS,
                                                           message=pick(r, ["failed", "order created",
                                                                            "timed out"]))),
        Phase("spans", "/query/spans", lambda r: path("/query/spans", r, 15 * MINUTE_MS,
                                                      service_name=pick(r, services), kind="SERVER")),

        Phase("metrics_15m", met, lambda r: path(service_path(r, "metrics"), r, 15 * MINUTE_MS)),
        Phase("endpoints_60m", "/query/services/{service}/endpoints",
              lambda r: path(service_path(r, "endpoints"), r, HOUR_MS)),
        Phase("services_60m", svc, lambda r: path(svc, r, HOUR_MS)),
        Phase("metrics_24h", met, lambda r: path(service_path(r, "metrics"), r, DAY_MS)),
        Phase("services_14d_sliding", svc, lambda r: f"{svc}?{sliding_14d}"),
        Phase("metrics_14d_sliding", met, lambda r: f"{service_path(r, 'metrics')}?{sliding_14d}"),
        Phase("services_14d", svc, lambda r: path(svc, r, 14 * DAY_MS)),
        Phase("metrics_14d", met, lambda r: path(service_path(r, "metrics"), r, 14 * DAY_MS)),
    ]


def drive(port: int, phase: Phase, clients: int, duration_s: float) -> Outcome:
    """``clients`` threads, each with one keep-alive connection, asking until the deadline."""
    outcome, lock = Outcome(), threading.Lock()
    deadline = time.monotonic() + duration_s

    def client(number: int) -> None:
        rng = random.Random(f"{phase.name}-{number}")
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        latencies, errors = [], {}
        while time.monotonic() < deadline:
            target = phase.request(rng)
            started = time.perf_counter()
            try:
                connection.request("GET", target)
                answer = connection.getresponse()
                answer.read()
                status = str(answer.status)
            except (OSError, http.client.HTTPException) as exc:
                status = type(exc).__name__
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
            latencies.append((time.perf_counter() - started) * 1000)
            if status != "200":
                errors[status] = errors.get(status, 0) + 1
        connection.close()
        with lock:
            outcome.latencies_ms += latencies
            for key, n in errors.items():
                outcome.errors[key] = outcome.errors.get(key, 0) + n

    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(n,), daemon=True) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outcome.seconds = time.monotonic() - started
    return outcome


def first_answer_ms(port: int, phase: Phase) -> float:
    """One request alone before the phase: for the long RED reads, what a worker with nothing kept pays."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    started = time.perf_counter()
    try:
        connection.request("GET", phase.request(random.Random(f"{phase.name}-first")))
        connection.getresponse().read()
    except (OSError, http.client.HTTPException):
        return float("nan")
    finally:
        connection.close()
    return (time.perf_counter() - started) * 1000


def quantile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, int(q * len(ordered) + 0.999999) - 1))]


_SAMPLE = re.compile(r'^(\w+)\{(.*)\}\s+(\S+)$', re.M)
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
COUNTERS = ("panopticon_api_requests_total", "panopticon_api_search_requests_total",
            "panopticon_api_search_documents_total")


def route_counters(port: int) -> dict[tuple[str, str], float]:
    """(counter, route) -> value, summed over the other labels (route templates hold braces)."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("GET", "/metrics")
    text = connection.getresponse().read().decode()
    connection.close()
    out: dict[tuple[str, str], float] = {}
    for name, labels, value in _SAMPLE.findall(text):
        if name in COUNTERS:
            route = dict(_LABEL.findall(labels)).get("route", "")
            out[(name, route)] = out.get((name, route), 0.0) + float(value)
    return out


def route_costs(port: int, route: str, before: dict[tuple[str, str], float]) -> tuple[float, ...]:
    """Answered requests, search requests and documents of the route since ``before``."""
    after = route_counters(port)
    return tuple(after.get((name, route), 0.0) - before.get((name, route), 0.0) for name in COUNTERS)


def drain(client: Any, limit_s: float = 180.0) -> float:
    """Wait until OpenSearch's search thread pool is idle (nothing active, nothing queued): searches the API
    gave up on (503) keep running there, and would otherwise slow down the next phase."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        try:
            nodes = client.nodes.stats(metric="thread_pool", request_timeout=10)["nodes"].values()
        except Exception:  # noqa: BLE001 - too busy to answer: ask again
            time.sleep(0.5)
            continue
        busy = sum(node["thread_pool"]["search"]["active"] + node["thread_pool"]["search"]["queue"]
                   for node in nodes)
        if not busy:
            break
        time.sleep(0.5)
    return time.monotonic() - started


def start_api(env: dict[str, str], log_dir: Path) -> tuple[Group, int]:
    return start_server("api", env, log_dir)


# ---------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_api", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="smoke run: 30k spans + 20k logs, 5 s per route")
    parser.add_argument("--spans", type=int, help="at least this many spans (overrides the scale)")
    parser.add_argument("--logs", type=int, help="at least this many logs (overrides the scale)")
    parser.add_argument("--days", type=int, default=14, help="days of rollups")
    parser.add_argument("--duration", type=float, help="seconds per route (default 30; --quick 5)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--partitions", type=int, default=3, help="source partitions of the span topic")
    parser.add_argument("--only", action="append", metavar="PHASE", help="drive only this phase (repeatable)")
    args = parser.parse_args(argv)
    scale_name = "quick" if args.quick else "full"
    spans, logs = SCALES[scale_name]
    spans, logs = args.spans or spans, args.logs or logs
    duration = args.duration or (5.0 if args.quick else 30.0)
    work = Path(tempfile.mkdtemp(prefix="panopticon-bench-api-"))
    with local_stack() as stack:
        return run(args, stack, work, scale_name, spans, logs, duration)


def run(args: argparse.Namespace, stack: LocalStack, work: Path, scale_name: str, spans: int, logs: int,
        duration: float) -> int:
    env = {**stack.env(), "OPENSEARCH_INDEX_PREFIX": PREFIX}
    client = opensearch_client(load_settings(env), timeout_s=600)
    names = IndexNames(PREFIX)
    creator = LoadingCreator(client, names)
    now_ms = int(time.time() * 1000)
    print(f"api: loading >= {spans:,} spans and >= {logs:,} logs (seed {SEED}) ...", flush=True)
    loaded = load_raw(client, names, creator, now_ms, spans, logs, args.partitions)
    print(f"api: {loaded.docs:,} documents ({loaded.spans:,} spans, {loaded.logs:,} logs) from "
          f"{loaded.records:,} records in {loaded.load_s:.0f} s ({loaded.docs / loaded.load_s:,.0f} docs/s; "
          f"bulk requests {loaded.bulk_s:.0f} s, generating side waited {loaded.waited_s:.0f} s for them)",
          flush=True)
    rollup_s = load_rollups(client, names, creator, loaded, now_ms, args.days)
    print(f"api: rollups: {loaded.rollup_1m:,} 1-minute and {loaded.rollup_1h:,} 1-hour documents in "
          f"{rollup_s:.0f} s", flush=True)
    restoring = time.monotonic()
    creator.restore()
    restore_s = time.monotonic() - restoring
    stored = {kind: int(client.count(index=names.pattern(kind))["count"])
              for kind in (TRACES, LOGS, METRICS_1M, METRICS_1H)}
    conditions = {"scale": scale_name, "seed": SEED, "spans": loaded.spans, "logs": loaded.logs,
                  "records": loaded.records, "rollup_days": args.days, "rollup_1m_docs": loaded.rollup_1m,
                  "rollup_1h_docs": loaded.rollup_1h, "stored": stored, "clients": args.clients,
                  "duration_s": duration, "api": "gunicorn 2 workers x 4 threads (defaults)",
                  "search": "OpenSearch 2.19.1 (local stack, 1 node)", "raw_window_h": RAW_WINDOW_MS // HOUR_MS,
                  "bulk_body_mb": BULK_BYTES >> 20}
    report = Report("api", conditions)
    rate = loaded.docs / loaded.load_s
    report.add("load.docs_per_s", rate, "docs/s", seconds=round(loaded.load_s, 1))
    report.add("load.bulk_docs_per_s", loaded.docs / loaded.bulk_s, "docs/s", seconds=round(loaded.bulk_s, 1))
    report.add("load.rollups_s", rollup_s, "s")
    report.add("load.restore_refresh_s", restore_s, "s")
    report.add("load.extrapolated_full_min", 2_000_000 / rate / 60, "min", docs=2_000_000)
    report.note(f"load: {loaded.docs:,} raw documents in {loaded.load_s:.0f} s (generate + decode + bulk, "
                f"overlapped; {loaded.bulk_s:.0f} s in bulk requests) -> 1M spans + 1M logs at this rate: "
                f"~{2_000_000 / rate / 60:.0f} min")
    api, port = start_api(env, work)
    try:
        anchor = loaded.end_ms + 1_000
        chosen = [p for p in phases(loaded, anchor) if not args.only or p.name in args.only]
        for phase in chosen:
            cold_ms = first_answer_ms(port, phase)
            drive(port, phase, 2, min(3.0, duration / 5))  # warm the workers' connections and readers
            drain(client)
            before = route_counters(port)
            outcome = drive(port, phase, args.clients, duration)
            answered, requests, documents = route_costs(port, phase.route, before)
            publish_phase(report, phase, outcome, answered, requests, documents)
            report.add(f"{phase.name}.first_answer_ms", cold_ms, "ms")
            drained = drain(client)
            if drained > 2:
                report.note(f"{phase.name}: OpenSearch needed {drained:.0f} s to work off searches the API "
                            "had given up on")
    finally:
        api.stop()
    report.publish()
    return 0


def publish_phase(report: Report, phase: Phase, outcome: Outcome, answered: float, requests: float,
                  documents: float) -> None:
    latencies, n = outcome.latencies_ms, len(outcome.latencies_ms)
    name = phase.name
    target = TARGETS.get(phase.name)
    errors = sum(outcome.errors.values())
    report.add(f"{name}.req_per_s", n / outcome.seconds if outcome.seconds else 0.0, "req/s",
               requests=n, errors=outcome.errors)
    report.add(f"{name}.p50_ms", quantile(latencies, 0.50), "ms")
    report.add(f"{name}.p95_ms", quantile(latencies, 0.95), "ms",
               Target("<=", target) if target is not None else None)
    report.add(f"{name}.p99_ms", quantile(latencies, 0.99), "ms")
    report.add(f"{name}.errors", errors, "requests", kinds=outcome.errors)
    per = answered or float("nan")
    report.add(f"{name}.search_requests_per_req", requests / per, "requests")
    report.add(f"{name}.documents_per_req", documents / per, "docs")
    print(f"  {phase.name:<22} {n / outcome.seconds:8.1f} req/s  p50 {quantile(latencies, 0.5):8.1f} ms  "
          f"p95 {quantile(latencies, 0.95):8.1f} ms  p99 {quantile(latencies, 0.99):8.1f} ms  errors {errors:<4} "
          f"search {requests / per:6.1f} req  {documents / per:9.1f} docs", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
