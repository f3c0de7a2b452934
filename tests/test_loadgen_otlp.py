"""loadgen's OpenTelemetry mode: the inverse mapping (contract events -> OTLP requests), its round trip through
``common.otlp``, the OTLP/HTTP exporter against a real socket, ``make run``'s OTLP lines, and the Kafka mode on the
real local stack."""

from __future__ import annotations

import argparse
import http.server
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import msgspec
import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
    ExportLogsPartialSuccess,
    ExportLogsServiceRequest,
    ExportLogsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTracePartialSuccess,
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from panopticon.common.clock import parse_timestamp
from panopticon.common.normalize import Refiner, normalize_environment
from panopticon.common.otlp import convert_logs, convert_traces
from panopticon.common.settings import Settings, load_settings
from panopticon.common.topics import create_topics
from panopticon.devtools import loadgen, loadgen_otlp, run
from panopticon.devtools.loadgen_otlp import HttpExporter, KafkaExporter, export, retry_after
from panopticon.devtools.stack import free_port
from panopticon.devtools.traffic import Record, generate
from panopticon.devtools.traffic.otlp import OtlpBatch, batches, otlp_id
from tests.harness import consume

BASE_MS = 1_795_773_600_000  # 2026-11-27T06:40:00Z
_decode = msgspec.json.Decoder().decode
Requests = list[tuple[ExportTraceServiceRequest | None, ExportLogsServiceRequest | None]]


def records(count: int = 6000, seed: int = 7, **options: Any) -> list[Record]:
    # failing traces are 10 times as common as by default, for many ERROR logs and exception events
    options.setdefault("error_ratio", 0.2)
    return list(generate(seed=seed, count=count, base_time_ms=BASE_MS, **options))


@pytest.fixture(scope="module")
def recs() -> list[Record]:
    return records()


@pytest.fixture(scope="module")
def requests(recs: list[Record]) -> Requests:
    return list(batches(recs, max_events=150))


def attrs(pairs: Any) -> dict[str, Any]:
    """OTLP attributes as a dict of Python values."""
    out = {}
    for kv in pairs:
        kind = kv.value.WhichOneof("value")
        out[kv.key] = getattr(kv.value, kind) if kind else None
    return out


def otlp_spans(reqs: Requests) -> list[tuple[dict[str, Any], Span]]:
    return [(attrs(group.resource.attributes), span) for traces, _ in reqs if traces is not None
            for group in traces.resource_spans for scope in group.scope_spans for span in scope.spans]


def otlp_logs(reqs: Requests) -> list[tuple[dict[str, Any], LogRecord]]:
    return [(attrs(group.resource.attributes), log) for _, logs in reqs if logs is not None
            for group in logs.resource_logs for scope in group.scope_logs for log in scope.log_records]


def events(recs: list[Record], kind: str) -> list[dict[str, Any]]:
    out = []
    for r in recs:
        if r.kind == kind:
            value = _decode(r.value)
            out += value if isinstance(value, list) else [value]
    return out


def exception_events(reqs: Requests) -> list[tuple[Span, Any]]:
    return [(span, event) for _, span in otlp_spans(reqs) for event in span.events if event.name == "exception"]


# ---------------------------------------------------------------- the inverse mapping


def test_every_event_is_one_span_log_record_or_exception_event(recs: list[Record], requests: Requests) -> None:
    spans, logs, exceptions = otlp_spans(requests), otlp_logs(requests), exception_events(requests)
    assert len(spans) == sum(r.kind == "span" for r in recs)
    assert len(logs) + len(exceptions) == sum(r.n_events for r in recs if r.kind == "log")
    error_logs = [log for _, log in logs if log.severity_number == 17]
    assert len(exceptions) > 20 and len(error_logs) > 20  # both ways of sending an ERROR log are used
    assert all(event.name == "exception" for _, event in exceptions)


def test_spans_carry_the_contract_fields(recs: list[Record], requests: Requests) -> None:
    by_id = {span.span_id.hex(): (resource, span) for resource, span in otlp_spans(requests)}
    kinds = {v: k.removeprefix("SPAN_KIND_") for k, v in Span.SpanKind.items()}
    for event in events(recs, "span"):
        resource, span = by_id[event["span_id"]]
        environment = resource.get("deployment.environment.name", resource.get("deployment.environment"))
        assert (resource["service.name"], environment) == (event["service_name"], event["environment"])
        assert span.trace_id.hex() == event["trace_id"] and span.name == event["name"]
        assert span.parent_span_id.hex() == (event["parent_span_id"] or "")
        assert kinds[span.kind] == event["kind"]
        status = Status.STATUS_CODE_ERROR if event["status"] == "ERROR" else Status.STATUS_CODE_UNSET
        assert span.status.code == status
        assert span.start_time_unix_nano == parse_timestamp(event["timestamp"]) * 1_000_000
        assert abs((span.end_time_unix_nano - span.start_time_unix_nano) / 1e6 - event["duration_ms"]) < 1e-3
        attributes = attrs(span.attributes)
        http = {k: attributes.get(k) for k in ("http.request.method", "url.path", "http.response.status_code")}
        assert http == {"http.request.method": event.get("http_method"), "url.path": event.get("http_path"),
                        "http.response.status_code": event.get("http_status_code")}
        assert event["labels"].items() <= attributes.items()
        if "client_ip" in event:
            assert attributes["client_ip"] == event["client_ip"]


def test_logs_carry_the_contract_fields(recs: list[Record], requests: Requests) -> None:
    sent: Counter[tuple[Any, ...]] = Counter()
    for resource, log in otlp_logs(requests):
        attributes = attrs(log.attributes)
        sent[(resource["service.name"], log.trace_id.hex(), log.span_id.hex(), log.severity_number,
              log.severity_text, log.body.string_value, log.time_unix_nano, attributes.get("http.request.method"),
              attributes.get("http.response.status_code"), attributes["host"])] += 1
    for span, event in exception_events(requests):
        attributes = attrs(event.attributes)
        text = f"{attributes['exception.type']}: {attributes['exception.message']}"
        sent[("exception", span.span_id.hex(), text)] += 1
    expected: Counter[tuple[Any, ...]] = Counter()
    severity = {"DEBUG": 5, "INFO": 9, "WARN": 13, "WARNING": 13, "ERROR": 17}
    for event in events(recs, "log"):
        key: tuple[Any, ...] = ("exception", event["span_id"], event["message"])
        if sent[key] <= expected[key]:  # not sent as an exception event on its span: a log record
            key = (event["service_name"], event["trace_id"], event["span_id"], severity[event["level"].upper()],
                   event["level"], event["message"], parse_timestamp(event["timestamp"]) * 1_000_000,
                   event.get("http_method"), event.get("http_status_code"), event["labels"]["host"])
        expected[key] += 1
    assert sent == expected


def test_exception_events_split_the_error_log(recs: list[Record], requests: Requests) -> None:
    errors = {(e["span_id"], e["message"]): e for e in events(recs, "log") if e["level"].upper() == "ERROR"}
    found = exception_events(requests)
    assert found
    for span, event in found:
        attributes = attrs(event.attributes)
        log = errors[(span.span_id.hex(), f"{attributes['exception.type']}: {attributes['exception.message']}")]
        assert event.time_unix_nano == parse_timestamp(log["timestamp"]) * 1_000_000
        assert log["labels"].items() <= attributes.items()
    assert {"unhandled exception", "cache write failed"} & {
        attrs(e.attributes)["exception.type"].split(" in ")[0] for _, e in found}


# ---------------------------------------------------------------- the round trip through common.otlp


def stored(kind: str, event: dict[str, Any]) -> dict[str, Any]:
    """The document the engine would store for a contract event (``common.normalize``'s refine)."""
    refiner = Refiner()
    refined = (refiner.log if kind == "log" else refiner.span)(event, BASE_MS, BASE_MS)
    return msgspec.structs.asdict(refined.doc)


def converted(reqs: Requests) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    spans: list[dict[str, Any]] = []
    logs: list[dict[str, Any]] = []
    for traces, log_request in reqs:
        for request, convert in ((traces, convert_traces), (log_request, convert_logs)):
            if request is not None:
                out = convert(request.SerializeToString(), "proto", "unknown")
                assert (out.rejected, out.reasons) == (0, [])
                spans += out.spans
                logs += out.logs
    return spans, logs


SCOPE_LABEL = {"otel.scope.name": "panopticon.loadgen"}


def test_spans_round_trip_to_the_same_documents(recs: list[Record], requests: Requests) -> None:
    back = {e["span_id"]: e for e in converted(requests)[0]}
    originals = events(recs, "span")
    assert len(back) == len(originals)
    for original in originals:
        event = back[original["span_id"]]
        assert (event["service_name"], event["environment"], event["trace_id"], event.get("parent_span_id"),
                event["name"], event["kind"], event["status"]) == (
            original["service_name"], original["environment"], original["trace_id"], original["parent_span_id"],
            original["name"], original["kind"], original["status"])
        assert abs(event["duration_ms"] - original["duration_ms"]) <= 0.001  # within 1 µs
        expected, found = stored("span", original), stored("span", event)
        assert found.pop("labels") == {**expected.pop("labels"), **SCOPE_LABEL}
        assert found.pop("duration_ms") == pytest.approx(expected.pop("duration_ms"), abs=0.001)
        assert found == expected  # ids, names, kind, status, http fields, time, normalized environment


def test_logs_round_trip_to_the_same_documents(recs: list[Record], requests: Requests) -> None:
    def key(doc: dict[str, Any]) -> tuple[Any, ...]:
        return doc["trace_id"], doc["span_id"], doc["timestamp"], doc["message"]

    back: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for event in converted(requests)[1]:
        doc = stored("log", event)
        back.setdefault(key(doc), []).append(doc)
    originals = events(recs, "log")
    assert sum(map(len, back.values())) == len(originals)
    from_exceptions = 0
    for original in originals:
        expected = stored("log", original)
        found = back[key(expected)].pop(0)
        labels = found.pop("labels")
        if "exception.type" in labels:  # sent as an exception event: its split text comes back as labels
            from_exceptions += 1
            kind, _, message = original["message"].partition(": ")
            assert (labels.pop("exception.type"), labels.pop("exception.message")) == (kind, message)
        assert labels == {**expected.pop("labels"), **SCOPE_LABEL}
        assert found == expected  # level, message, ids, time, service, environment, http fields
    assert from_exceptions > 20


CALL_LABELS = ("peer.service", "server.address", "db.system", "db.name", "db.operation", "db.statement")


def test_call_labels_travel_as_attributes_and_come_back(recs: list[Record], requests: Requests) -> None:
    sent = {span.span_id.hex(): attrs(span.attributes) for _, span in otlp_spans(requests)}
    back = {e["span_id"]: stored("span", e)["labels"] for e in converted(requests)[0]}
    seen: Counter[str] = Counter()
    for event in events(recs, "span"):
        own = {k: v for k, v in event["labels"].items() if k in CALL_LABELS}
        seen.update(own.keys())
        assert own.items() <= sent[event["span_id"]].items()
        assert own.items() <= back[event["span_id"]].items()
    assert set(seen) == set(CALL_LABELS)


def test_client_server_pairs_survive_the_mapping(requests: Requests) -> None:
    spans = otlp_spans(requests)
    by_id = {span.span_id: (resource, span) for resource, span in spans}
    pairs = 0
    for resource, server in spans:
        if server.kind != Span.SPAN_KIND_SERVER or not server.parent_span_id:
            continue
        _, client = by_id[server.parent_span_id]
        assert client.kind == Span.SPAN_KIND_CLIENT and client.trace_id == server.trace_id
        assert attrs(client.attributes)["peer.service"] == resource["service.name"]
        assert client.start_time_unix_nano <= server.start_time_unix_nano
        assert client.end_time_unix_nano + 1_000_000 >= server.end_time_unix_nano  # starts are cut to ms
        pairs += 1
    assert pairs > 100


def test_resources_group_by_service_and_environment(requests: Requests) -> None:
    for traces, logs in requests:
        groups = [*(traces.resource_spans if traces else ()), *(logs.resource_logs if logs else ())]
        keys = [tuple(sorted(attrs(g.resource.attributes).items())) for g in groups]
        assert len(set(keys[:len(traces.resource_spans) if traces else 0])) == (
            len(traces.resource_spans) if traces else 0)
        for key in keys:
            names = dict(key)
            assert set(names) in ({"service.name", "deployment.environment.name"},
                                  {"service.name", "deployment.environment"})  # the legacy (epoch-ms) producer
    legacy = {r["service.name"] for r, _ in otlp_spans(requests) if "deployment.environment" in r}
    assert legacy == {"board-service"}


@pytest.mark.parametrize(
    ("text", "size", "expected"),
    [("0af7651916cd43dd8448eb211c80319c", 16, bytes.fromhex("0af7651916cd43dd8448eb211c80319c")),
     ("B7AD6B7169203331", 8, bytes.fromhex("b7ad6b7169203331")),
     ("abc", 8, None), ("req-42", 16, None), ("0af7651916cd43dd8448eb211c80319", 16, None),
     ("zzf7651916cd43dd", 8, None)],
    ids=["trace-hex", "span-upper-hex", "short", "not-hex", "one-short", "bad-digit"],
)
def test_ids_are_bytes_of_their_hex_or_a_stable_hash(text: str, size: int, expected: bytes | None) -> None:
    found = otlp_id(text, size)
    assert len(found) == size and found == otlp_id(text, size)
    if expected is not None:
        assert found == expected
    else:
        assert found != otlp_id(text + "x", size) and found != bytes(size)


def test_batches_close_between_traces_and_are_deterministic(recs: list[Record], requests: Requests) -> None:
    def serialized(reqs: Requests) -> list[bytes]:
        return [r.SerializeToString(deterministic=True) for pair in reqs for r in pair if r is not None]

    assert serialized(requests) == serialized(list(batches(recs, max_events=150)))
    assert serialized(requests) != serialized(list(batches(records(seed=8), max_events=150)))
    seen: dict[str, int] = {}
    for n, (traces, logs) in enumerate(requests):
        ids = {s.trace_id for _, s in otlp_spans([(traces, None)])} | {
            log.trace_id for _, log in otlp_logs([(None, logs)])}
        for trace_id in ids:
            assert seen.setdefault(trace_id.hex(), n) == n, "a trace was split over two batches"
    assert len(requests) > 10


def test_invalid_records_are_skipped_and_counted() -> None:
    batch = OtlpBatch()
    mixed = records(2000, seed=4, invalid_ratio=0.1)
    for r in mixed:
        batch.add(r)
    assert batch.skipped == sum(not r.is_valid for r in mixed) > 0
    assert batch.spans == sum(r.kind == "span" and r.is_valid for r in mixed)


# ---------------------------------------------------------------- OTLP/HTTP exporter


class Receiver:
    """A scripted OTLP/HTTP receiver on a real socket: answers come from ``script`` (then 200), requests are kept."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str], bytes]] = []
        self.received: list[tuple[str, str, bytes]] = []
        owner = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.received.append((self.path, self.headers["Content-Type"], body))
                status, headers, answer = owner.script.pop(0) if owner.script else (200, {}, b"")
                self.send_response(status)
                for name, value in {"Content-Type": "application/x-protobuf", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *_: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def decoded(self) -> Requests:
        out: Requests = []
        for path, _, body in self.received:
            if path == "/v1/traces":
                out.append((ExportTraceServiceRequest.FromString(body), None))
            else:
                out.append((None, ExportLogsServiceRequest.FromString(body)))
        return out


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    fake = Receiver()
    fake.thread.start()
    try:
        yield fake
    finally:
        fake.server.shutdown()
        fake.server.server_close()


class FakeTime:
    """A clock that only sleeping advances."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds

    def clock(self) -> float:
        return self.now


def test_http_export_retries_honours_retry_after_and_counts_rejects(receiver: Receiver) -> None:
    partial = ExportTraceServiceResponse(partial_success=ExportTracePartialSuccess(rejected_spans=3))
    partial_logs = ExportLogsServiceResponse(partial_success=ExportLogsPartialSuccess(rejected_log_records=2))
    receiver.script = [(503, {"Retry-After": "7"}, b""), (429, {}, b"slow down"),
                       (200, {}, partial.SerializeToString()), (200, {}, partial_logs.SerializeToString())]
    fake = FakeTime()
    exporter = HttpExporter(receiver.url + "/", sleep=fake.sleep, clock=fake.clock)
    recs = records(1500, seed=9)
    summary = export(exporter, recs, progress=False, batch_events=100, mode="OTLP/HTTP")

    assert fake.slept[0] == 7.0 and 0 < fake.slept[1] < 1 and exporter.retries == 2
    assert (summary.rejected, summary.delivery_errors, summary.invalid) == (5, 0, 0)
    assert summary.delivered == summary.produced == len(receiver.received) - 2
    assert {(path, kind) for path, kind, _ in receiver.received} == {
        ("/v1/traces", "application/x-protobuf"), ("/v1/logs", "application/x-protobuf")}
    sent = receiver.decoded()[2:]  # the first two posts were answered 503 and 429, then sent again
    exceptions = len(exception_events(sent))
    assert len(otlp_spans(sent)) == sum(r.kind == "span" for r in recs)
    assert len(otlp_logs(sent)) + exceptions == sum(r.n_events for r in recs if r.kind == "log")
    assert summary.events == sum(r.n_events for r in recs)
    assert "rejected spans and logs 5" in summary.line()


def test_http_export_does_not_retry_a_bad_request(receiver: Receiver) -> None:
    receiver.script = [(400, {"Content-Type": "text/plain"}, b"no such field")]
    fake = FakeTime()
    exporter = HttpExporter(receiver.url, sleep=fake.sleep, clock=fake.clock)
    exporter.send("logs", ExportLogsServiceRequest().SerializeToString())
    assert (exporter.deliveries.errors, exporter.deliveries.delivered, fake.slept) == (1, 0, [])
    assert "HTTP 400" in exporter.deliveries.last_error and "no such field" in exporter.deliveries.last_error


def test_http_export_gives_up_when_nothing_listens() -> None:
    fake = FakeTime()
    exporter = HttpExporter(f"http://127.0.0.1:{free_port()}", retry_budget_s=20, sleep=fake.sleep,
                            clock=fake.clock)
    exporter.send("traces", ExportTraceServiceRequest().SerializeToString())
    assert exporter.deliveries.errors == 1 and "gave up" in exporter.deliveries.last_error
    assert 5 < len(fake.slept) < 30 and max(fake.slept) <= loadgen_otlp.MAX_BACKOFF_S * 1.5
    assert sum(fake.slept) <= 20


@pytest.mark.parametrize(
    ("header", "expected"),
    [(None, None), ("", None), ("12", 12.0), ("Thu, 01 Jan 1970 00:01:40 GMT", 40.0),
     ("Thu, 01 Jan 1970 00:00:10 GMT", 0.0), ("soon", None)],
    ids=["absent", "empty", "seconds", "date", "past-date", "garbage"],
)
def test_retry_after(header: str | None, expected: float | None) -> None:
    assert retry_after(header, now=60.0) == expected


# ---------------------------------------------------------------- the command line and make run


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    loadgen.add_arguments(parser)
    return parser.parse_args(argv)


@pytest.mark.parametrize("extra", [["--stdout"], ["--invalid-ratio", "0.1"]], ids=["stdout", "invalid-ratio"])
def test_otlp_refuses_the_json_only_options(extra: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert loadgen.run(parse(["--otlp", "http", "--count", "1", *extra])) == 2
    assert "contract JSON only" in capsys.readouterr().err


def test_cli_http_mode_posts_to_the_endpoint(receiver: Receiver, capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--otlp", "http", "--otlp-endpoint", receiver.url, "--count", "400", "--rate", "0",
                  "--seed", "5", "--quiet", "--otlp-batch", "50"])
    assert loadgen.run(args) == 0
    out = capsys.readouterr()
    assert f"seed 5 -> OTLP/HTTP {receiver.url}/v1/traces" in out.err
    assert "OTLP/HTTP requests" in out.out and "delivery errors 0, rejected spans and logs 0" in out.out
    assert len(otlp_spans(receiver.decoded())) == sum(r.kind == "span" for r in generate(seed=5, count=400))


def test_kafka_mode_needs_both_otlp_topics() -> None:
    with pytest.raises(ValueError, match="KAFKA_OTLP_LOG_TOPIC"):
        KafkaExporter(load_settings({"KAFKA_OTLP_LOG_TOPIC": ""}))


def test_make_run_prints_how_to_send_otlp() -> None:
    settings = load_settings({"INGEST_PORT": "4999", "KAFKA_OTLP_SPAN_TOPIC": "s1", "KAFKA_OTLP_LOG_TOPIC": "l1"})
    text = run.otlp_lines(settings, "127.0.0.1:9092,127.0.0.1:9093", "20")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4999 OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in text
    assert "20 records/s" in text and "--otlp http" in text
    assert "brokers: [127.0.0.1:9092, 127.0.0.1:9093]" in text
    assert "traces: {topic: s1, encoding: otlp_proto}" in text and "logs: {topic: l1, encoding: otlp_proto}" in text
    assert "records/s" not in run.otlp_lines(settings, "b:1", "0")




# ---------------------------------------------------------------- Kafka mode on the real local stack


@pytest.mark.integration
def test_kafka_mode_writes_one_request_per_record(settings_env: dict[str, str], settings: Settings,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str], unique: str) -> None:
    for name, value in settings_env.items():
        monkeypatch.setenv(name, value)
    create_topics(settings, 4)
    assert loadgen.run(parse(["--otlp", "kafka", "--count", "2000", "--rate", "0", "--seed", "12", "--quiet",
                              "--otlp-batch", "100"])) == 0
    out = capsys.readouterr()
    assert f"seed 12 -> OTLP/Kafka {settings.kafka_otlp_span_topic}, {settings.kafka_otlp_log_topic}" in out.err
    sent = int(out.out.split("sent ")[1].split(" ")[0].replace(",", ""))
    assert "delivery errors 0" in out.out and sent > 20

    messages = consume(settings, [settings.kafka_otlp_span_topic, settings.kafka_otlp_log_topic],
                       f"{unique}-otlp-check", sent)
    assert len(messages) == sent and all(m.key() is None for m in messages)
    decoded: Requests = [(ExportTraceServiceRequest.FromString(m.value()), None)
                         if m.topic() == settings.kafka_otlp_span_topic
                         else (None, ExportLogsServiceRequest.FromString(m.value())) for m in messages]
    recs = list(generate(seed=12, count=2000))
    assert len(otlp_spans(decoded)) == sum(r.kind == "span" for r in recs)
    assert len(otlp_logs(decoded)) + len(exception_events(decoded)) == sum(
        r.n_events for r in recs if r.kind == "log")
    services = {r["service.name"] for r, _ in otlp_spans(decoded)}
    assert services == {r.service for r in recs}
    assert {normalize_environment(r.get("deployment.environment.name", r.get("deployment.environment", "")))
            for r, _ in otlp_spans(decoded)} == {"production", "staging"}
