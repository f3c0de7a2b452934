"""The decode step: any bytes become documents or rejects, never an exception; the samples behave."""

from __future__ import annotations

import copy
import json
import uuid
from pathlib import Path

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from panopticon.common import normalize as common_normalize
from panopticon.common.indices import LOGS, IndexNames
from panopticon.common.schema import LogDoc, SpanDoc
from panopticon.common.wire import StoredLog, StoredSpan
from panopticon.engine import decode as engine_decode
from panopticon.engine.batch import LOG, SPAN
from panopticon.engine.decode import Decoded, EventDecoder, log_doc_id, span_doc_id
from tests import otlp_requests
from tests.test_otlp import attrs, keys, log_requests, raw_values, trace_requests

SAMPLES = Path(__file__).resolve().parent / "samples"  # the ingest contract's samples, kept in the repo
NOW = 1_795_773_601_000


def decoder(max_bytes: int = 1_048_576, stored_path: bool = True) -> EventDecoder:
    return EventDecoder(IndexNames("p-"), "apm.logs", "apm.spans", max_bytes, stored_path=stored_path)


def lines(name: str) -> list[bytes]:
    return [line for line in (SAMPLES / name).read_bytes().splitlines() if line.strip()]


@given(st.binary(max_size=512), st.sampled_from(["apm.logs", "apm.spans"]))
@example(b'"\x80"', "apm.logs")  # a JSON string of invalid UTF-8: msgspec raises UnicodeDecodeError
@example(b'{"service_name": "\x80"}', "apm.spans")
@settings(max_examples=400)
def test_arbitrary_bytes_never_escape(value: bytes, topic: str) -> None:
    out = decoder().decode(topic, 0, 7, value, NOW, NOW)
    assert out.entries or out.rejects
    for reject in out.rejects:
        assert reject.reason and reject.detail


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=15), inner, max_size=6),
    max_leaves=20,
)


@given(json_values, st.sampled_from(["apm.logs", "apm.spans"]))
@settings(max_examples=400)
def test_arbitrary_json_never_escapes(value: object, topic: str) -> None:
    out = decoder().decode(topic, 0, 7, msgspec.json.encode(value), NOW, NOW)
    elements = len(value) if isinstance(value, list) else 1
    assert len(out.entries) + len(out.rejects) == elements


@pytest.mark.parametrize(("name", "topic", "kind"),
                         [("logs.jsonl", "apm.logs", LOG), ("spans.jsonl", "apm.spans", SPAN)])
def test_valid_samples_are_stored(name: str, topic: str, kind: int) -> None:
    d = decoder()
    for offset, value in enumerate(lines(name)):
        out = d.decode(topic, 3, offset, value, NOW, NOW)
        assert out.rejects == [], value
        parsed = msgspec.json.decode(value)
        assert len(out.entries) == (len(parsed) if isinstance(parsed, list) else 1)
        for entry in out.entries:
            assert entry.kind == kind
            doc = msgspec.json.decode(entry.doc)
            assert doc["type"] == ("span" if kind == SPAN else "log")
            assert doc["@timestamp"].endswith("Z") and len(doc["@timestamp"]) == 24
            assert entry.index.startswith("p-traces-apm-" if kind == SPAN else "p-logs-apm-")


def test_sample_normalizations() -> None:
    d = decoder()
    docs = [msgspec.json.decode(e.doc) for i, v in enumerate(lines("logs.jsonl"))
            for e in d.decode("apm.logs", 0, i, v, NOW, NOW).entries]
    payment = docs[1]
    assert payment["environment"] == "production" and payment["level"] == "ERROR"
    assert payment["http_status_code"] == 402
    inventory = docs[2]
    assert inventory["service_name"] == "inventory-service" and inventory["environment"] == "development"
    assert inventory["level"] == "WARN" and inventory["@timestamp"] == "2026-11-27T10:00:01.000Z"
    assert inventory["labels"] == {"sku": "A-1", "nested": '{"a":1}', "container_name": "inv-7d9f"}
    assert [doc["message"] for doc in docs[3:]] == ["cache hit", "login ok"]


@pytest.mark.parametrize("topic", ["apm.logs", "apm.spans"])
def test_invalid_samples_are_rejected_with_a_reason(topic: str) -> None:
    d = decoder()
    for offset, value in enumerate(lines("invalid.jsonl")):
        out = d.decode(topic, 0, offset, value, NOW, NOW)
        assert out.entries == [], value
        assert len(out.rejects) == 1 and out.rejects[0].reason and out.rejects[0].detail


def test_an_invalid_array_element_is_rejected_alone() -> None:
    value = b'[{"service_name":"a","environment":"dev","level":"INFO","message":"ok"},' \
            b'{"service_name":"a","environment":"dev","level":"LOUD","message":"bad"}, 7]'
    out = decoder().decode("apm.logs", 1, 9, value, NOW, NOW)
    assert len(out.entries) == 1
    assert [(r.array_index, r.reason) for r in out.rejects] == [(1, "validation"), (2, "not_an_object")]
    assert "$[1].level" in out.rejects[0].detail
    assert b"LOUD" in (out.rejects[0].element or b"")


def test_oversized_and_empty_values_are_rejected() -> None:
    out = decoder(max_bytes=10).decode("apm.logs", 0, 0, b'{"a": "long enough"}', NOW, NOW)
    assert out.rejects[0].reason == "too_large"
    assert decoder().decode("apm.logs", 0, 0, None, NOW, NOW).rejects[0].reason == "empty_value"


def test_ids_are_deterministic() -> None:
    assert span_doc_id("t", "s") == span_doc_id("t", "s") != span_doc_id("t", "s2")
    assert log_doc_id("apm.logs", 2, 10, None) == "apm.logs-2-10"
    assert log_doc_id("apm.logs", 2, 10, 3) == "apm.logs-2-10-3"
    span = lines("spans.jsonl")[0]
    a = decoder().decode("apm.spans", 0, 1, span, NOW, NOW).entries[0]
    b = decoder().decode("apm.spans", 3, 99, span, NOW + 1000, NOW + 1000).entries[0]
    assert a.action == b.action  # a replay or a producer's retry lands on the same document


field_values = st.one_of(st.none(), st.booleans(), st.integers(-5, 700), st.floats(allow_nan=True), st.text(max_size=6),
                         st.sampled_from(["INFO", "error", "SERVER", "client", "OK", "ERROR", "unset", "prod", "12.5",
                                          "200", "2026-11-27T10:00:00Z"]),
                         st.dictionaries(st.text(max_size=4), st.integers(), max_size=2))
events = st.dictionaries(st.sampled_from(["type", "timestamp", "service_name", "environment", "level", "message",
                                          "trace_id", "span_id", "parent_span_id", "name", "kind", "duration_ms",
                                          "status", "http_method", "http_path", "http_status_code", "labels",
                                          "client_ip"]), field_values, max_size=18)

# Events that are mostly clean, each field now and then odd: they take the stored path, or leave it for the
# general one at every place the two could part.
texts = st.sampled_from(["order-service", " padded ", "   ", "", "a", "\u3000", "ünï"])
clean = {
    "type": st.sampled_from(["log", "span", 7, None]),
    "timestamp": st.sampled_from(["2026-11-27T10:00:00.123Z", "2026-11-27T10:00:00.999Z", "2026-11-27T10:00:01Z",
                                  "2026-11-27T12:00:00+02:00", 1_795_773_600_123, 1.5e12, "junk", None, -1]),
    "service_name": texts, "environment": st.sampled_from(["production", "prod", " Staging ", "", "dev"]),
    "level": st.sampled_from(["INFO", "ERROR", "FATAL", "info", "WARNING", "LOUD"]), "message": texts,
    "trace_id": texts, "span_id": texts, "parent_span_id": st.sampled_from(["p1", "", None, "  "]), "name": texts,
    "kind": st.sampled_from(["SERVER", "CLIENT", "PRODUCER", "server", "SPAN_KIND_CLIENT", "UNSPECIFIED", "X"]),
    "status": st.sampled_from(["OK", "ERROR", "UNSET", "error", "FAILED"]),
    "duration_ms": st.sampled_from([0, 12, 84.2, -1, "12.5", 1e300, True]),
    "http_method": st.sampled_from(["GET", "", None]), "http_path": st.sampled_from(["/x", "", None]),
    "http_status_code": st.sampled_from([200, 0, 999, 1000, "404", 500.0, None, -1]),
    "labels": st.one_of(st.dictionaries(st.sampled_from(["host", "bad key", "k" * 130, "ok.key-1"]),
                                        st.one_of(st.sampled_from(["v", "x" * 300, ""]), st.integers(), st.floats(),
                                                  st.none()),
                                        max_size=3),
                        st.sampled_from([{}, None, "flat"])),
    "ingested_at": st.just("2026-01-01T00:00:00.000Z"), "client_ip": st.just("10.0.0.1"),
}
BASE = {
    "apm.logs": {"timestamp": "2026-11-27T10:00:00.123Z", "service_name": "order-service", "environment": "production",
                 "level": "INFO", "message": "ok", "trace_id": "t1", "labels": {"host": "a"}},
    "apm.spans": {"timestamp": "2026-11-27T10:00:00.123Z", "service_name": "order-service",
                  "environment": "production", "trace_id": "t1", "span_id": "s1", "name": "GET /", "duration_ms": 1.5,
                  "labels": {"host": "a"}},
}
ODD = {
    "apm.logs": sorted(set(clean) - {"parent_span_id", "name", "kind", "status", "duration_ms"}),
    "apm.spans": sorted(set(clean) - {"level", "message"}),
}


@st.composite
def mostly_clean(draw: st.DrawFn, topic: str) -> object:
    def one() -> dict[str, object]:
        event = dict(BASE[topic])
        for key in draw(st.lists(st.sampled_from(ODD[topic]), max_size=2, unique=True)):
            event[key] = draw(clean[key])
        for key in draw(st.lists(st.sampled_from(sorted(event)), max_size=1)):
            del event[key]
        return event

    return [one() for _ in range(draw(st.integers(1, 3)))] if draw(st.booleans()) else one()


def as_sent(out: Decoded) -> tuple[object, ...]:
    """What is sent for each entry; a document as JSON text with sorted keys (so `true` and `1` differ)."""
    docs = [(e.action, json.dumps(json.loads(e.doc), sort_keys=True), e.index_key, e.array_index, e.error_log,
             e.epoch_ms) for e in out.entries]
    return docs, [(r.reason, r.detail, r.array_index, r.element) for r in out.rejects], out.dropped_keys


@given(st.sampled_from(["apm.logs", "apm.spans"]).flatmap(
    lambda topic: st.tuples(st.just(topic), st.one_of(mostly_clean(topic), events, st.lists(events, max_size=3)))))
@example(("apm.spans", {**BASE["apm.spans"], "parent_span_id": ""}))  # each place the stored path completes ...
@example(("apm.spans", {**BASE["apm.spans"], "timestamp": "junk"}))
@example(("apm.spans", {**BASE["apm.spans"], "kind": "SERVER", "status": "ERROR", "http_status_code": 500}))
@example(("apm.spans", [BASE["apm.spans"], {**BASE["apm.spans"], "name": " "}]))  # ... or leaves it
@example(("apm.logs", {**BASE["apm.logs"], "message": "\u3000"}))
@example(("apm.logs", {**BASE["apm.logs"], "service_name": "a "}))
@example(("apm.logs", {**BASE["apm.logs"], "labels": {"bad key": "v", "n": 1, "f": 0.5, "b": False}}))
@example(("apm.logs", {**BASE["apm.logs"], "level": " warning", "client_ip": "10.0.0.1", "tags": [1], "b": True}))
@example(("apm.spans", [{**BASE["apm.spans"], "client_ip": "10.0.0.1", "labels": "flat"}, BASE["apm.spans"]]))
@settings(max_examples=1500)
def test_the_stored_path_equals_the_general_path(case: tuple[str, object]) -> None:
    topic, value = case
    d, g = decoder(), decoder(stored_path=False)
    raw = msgspec.json.encode(value)
    for _ in range(2):  # the second time, the refiner's caches are warm (environments, label keys, the second)
        fast = d.decode(topic, 0, 7, raw, NOW, NOW)
        general = g.decode(topic, 0, 7, raw, NOW, NOW)
        assert as_sent(fast) == as_sent(general)
        assert fast.size == general.size


def test_clean_events_take_the_stored_path() -> None:
    d = decoder()
    log = {"timestamp": "2026-11-27T10:00:00.123Z", "service_name": "a", "environment": "production",
           "level": "ERROR", "message": "m", "labels": {"host": "h", "retry": 2, "sampled": True}}
    span = {"timestamp": 1_795_773_600_123, "service_name": "a", "environment": "production", "trace_id": "t",
            "span_id": "s", "parent_span_id": "", "name": "GET /", "duration_ms": 3}

    def stored(topic: str, value: object) -> bool:
        raw = msgspec.json.encode(value)
        d.decode(topic, 0, 1, raw, NOW, NOW)  # the first sight of an environment goes general
        kind = d.kind_of(topic)
        try:
            return d._complete(kind, topic, 0, 1, d._stored[kind](raw), NOW, NOW) is not None
        except msgspec.ValidationError:
            return False

    assert stored("apm.logs", log) and stored("apm.logs", [log, log]) and stored("apm.spans", span)
    assert stored("apm.logs", {**log, "level": "error"})  # a level's aliases are read in the stored shape
    assert not stored("apm.spans", {**span, "client_ip": "10.0.0.1"})  # unknown keys and lax values are not ...
    assert not stored("apm.spans", {**span, "kind": "server"})
    assert not stored("apm.spans", {**span, "service_name": " a "})
    # ... but an event with unknown keys is completed in the stored shape once they are under its labels
    out = d.decode("apm.spans", 0, 2, msgspec.json.encode({**span, "client_ip": "10.0.0.1", "tags": [1]}), NOW, NOW)
    assert isinstance(out.entries[0].event, StoredSpan) and out.dropped_keys == 1
    assert out.entries[0].event.labels == {"client_ip": "10.0.0.1"}


def module_state(module: object) -> dict[str, object]:
    return {name: copy.deepcopy(value) for name, value in vars(module).items()
            if not name.startswith("__") and isinstance(value, (dict, set, list, bytearray))}


def test_decoding_writes_no_module_level_state() -> None:
    """What a process decoded before must not change how it decodes: the refiner's caches belong to one
    decoder (one per worker), never to a module that every decoder, test and thread shares."""

    before = [module_state(common_normalize), module_state(engine_decode)]
    d = decoder()
    for i in range(20):
        labels = {f"key-{uuid.uuid4().hex}": "v", "bad key": "x", "n": i}
        for _ in range(2):
            log = {**BASE["apm.logs"], "labels": labels}
            d.decode("apm.logs", 0, i, msgspec.json.encode(log), NOW, NOW)
            d.decode("apm.logs", 0, i, msgspec.json.encode({**log, "client_ip": "10.0.0.1"}), NOW, NOW)
    for topic, name in (("apm.logs", "logs.jsonl"), ("apm.spans", "spans.jsonl")):
        for offset, value in enumerate(lines(name)):
            d.decode(topic, 0, offset, value, NOW, NOW)
    assert [module_state(common_normalize), module_state(engine_decode)] == before


def otlp_decoder(stored_path: bool = True) -> EventDecoder:
    return EventDecoder(IndexNames("p-"), "apm.logs", "apm.spans", 1 << 20, otlp_span_topic="otlp_spans",
                        otlp_log_topic="otlp_logs", default_environment="unknown", stored_path=stored_path)


@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_an_otlp_request_is_many_spans_and_the_exception_logs_of_its_spans(encoding: str) -> None:
    request = otlp_requests.traces(0, 3)  # 3 traces of 3 spans; trace 0 fails with an exception event
    value = request.SerializeToString() if encoding == "proto" else otlp_requests.otlp_json(request)
    d = otlp_decoder()
    assert d.kind_of("otlp_spans") == SPAN and d.kind_of("otlp_logs") == LOG
    out = d.decode("otlp_spans", 2, 7, value, NOW, NOW)
    assert not out.rejects
    spans = [e for e in out.entries if e.kind == SPAN]
    (exception,) = [e for e in out.entries if e.kind == LOG]
    assert len(spans) == 9 and exception.error_log and exception.array_index == 9
    assert exception.index_kind == LOGS and b'"message":"KeyError: cart 42"' in exception.doc
    assert {s.event.service_name for s in spans} == {"frontend", "cart"}
    assert {s.event.environment for s in spans} == {"production"}
    again = otlp_decoder().decode("otlp_spans", 2, 7, value, NOW, NOW)
    assert [e.line for e in again.entries] == [e.line for e in out.entries]  # ids and documents are deterministic


def test_otlp_logs_and_undecodable_requests() -> None:
    d = otlp_decoder()
    out = d.decode("otlp_logs", 0, 1, otlp_requests.logs(0, 4).SerializeToString(), NOW, NOW)
    assert [e.kind for e in out.entries] == [LOG] * 4 and [e.error_log for e in out.entries] == [0, 1, 0, 1]
    assert [e.array_index for e in out.entries] == [0, 1, 2, 3]
    (reject,) = d.decode("otlp_spans", 0, 2, b"\x0a\x05garbage", NOW, NOW).rejects
    assert reject.reason == "not_otlp" and reject.detail
    (reject,) = d.decode("otlp_logs", 0, 3, b'{"resourceLogs": 7}', NOW, NOW).rejects
    assert reject.reason == "not_otlp"


@given(st.binary(max_size=512), st.sampled_from(["otlp_spans", "otlp_logs"]))
@settings(max_examples=300)
def test_arbitrary_bytes_on_the_otlp_topics_never_escape(value: bytes, topic: str) -> None:
    out = otlp_decoder().decode(topic, 0, 7, value, NOW, NOW)  # an empty request is valid and holds nothing
    for reject in out.rejects:
        assert reject.reason and reject.detail


# Converted OTLP events take the stored path (msgspec.convert into StoredSpan / StoredLog, completed in place) and
# leave it for the general one when they do not fit: either way, the documents are the general path's.
otlp_label_keys = keys | st.sampled_from(["bad key", "bad_key", "k" * 130, "ünï", "host", "deployment.environment"])
otlp_attributes = st.one_of(
    st.dictionaries(otlp_label_keys, raw_values | st.just(AnyValue()), max_size=8),
    st.just({f"k{i}": i for i in range(70)}),  # more than 64 labels
    st.dictionaries(st.sampled_from(["service.name", "deployment.environment.name"]),
                    st.sampled_from(["cart", " cart ", "prod", "Production", " Staging ", "qa", "\u3000x"]),
                    max_size=2),
)


@st.composite
def varied_otlp_requests(draw: st.DrawFn) -> tuple[str, ExportTraceServiceRequest | ExportLogsServiceRequest]:
    """The builders' requests, their resources, scopes, spans, exception events and log records given drawn
    attributes."""
    def more(attributes: object) -> None:
        attributes.extend(attrs(draw(otlp_attributes)))  # type: ignore[attr-defined]

    def scope(group: object) -> None:
        group.scope.name = draw(st.sampled_from(["", "lib", "x" * 300]))  # type: ignore[attr-defined]

    first, count = draw(st.integers(0, 5)), draw(st.integers(1, 3))
    if draw(st.booleans()):
        traces = otlp_requests.traces(first, count)
        for resource_spans in traces.resource_spans:
            more(resource_spans.resource.attributes)
            for scope_spans in resource_spans.scope_spans:
                scope(scope_spans)
                for span in scope_spans.spans:
                    more(span.attributes)
                    for event in span.events:
                        more(event.attributes)
        return "otlp_spans", traces
    logs = otlp_requests.logs(first, count)
    for resource_logs in logs.resource_logs:
        more(resource_logs.resource.attributes)
        for scope_logs in resource_logs.scope_logs:
            scope(scope_logs)
            for record in scope_logs.log_records:
                more(record.attributes)
    return "otlp_logs", logs


any_otlp_requests = st.one_of(varied_otlp_requests(), st.tuples(st.just("otlp_spans"), trace_requests),
                              st.tuples(st.just("otlp_logs"), log_requests))


@given(any_otlp_requests, st.sampled_from(["proto", "json"]))
@settings(max_examples=300, deadline=None)
def test_the_otlp_stored_path_equals_the_general_path(
        case: tuple[str, ExportTraceServiceRequest | ExportLogsServiceRequest], encoding: str) -> None:
    topic, request = case
    value = request.SerializeToString() if encoding == "proto" else otlp_requests.otlp_json(request)
    fast_decoder, general_decoder = otlp_decoder(), otlp_decoder(stored_path=False)
    for _ in range(2):  # the second time, the refiner's caches are warm (environments, label keys)
        fast = fast_decoder.decode(topic, 1, 7, value, NOW, NOW)
        general = general_decoder.decode(topic, 1, 7, value, NOW, NOW)
        assert as_sent(fast) == as_sent(general)
        assert [e.kind for e in fast.entries] == [e.kind for e in general.entries]
        assert fast.size == general.size
    assert all(isinstance(e.event, SpanDoc | LogDoc) for e in general.entries)


@pytest.mark.parametrize(("resource", "stored"), [
    ({}, True),
    ({"host.name": "web-1", "bad key": "v", "bad_key": "w"}, True),  # label keys to clean: cleaned in place
    ({"service.name": " cart "}, False),  # a name to trim: the general path trims it
], ids=["clean", "label-keys", "padded-service"])
@pytest.mark.parametrize("topic", ["otlp_spans", "otlp_logs"])
@pytest.mark.parametrize("encoding", ["proto", "json"])
def test_otlp_events_take_the_stored_path_once_their_environment_is_known(
        resource: dict[str, str], stored: bool, topic: str, encoding: str) -> None:
    request = otlp_requests.traces(0, 3) if topic == "otlp_spans" else otlp_requests.logs(0, 4)
    groups = request.resource_spans if isinstance(request, ExportTraceServiceRequest) else request.resource_logs
    for group in groups:
        group.resource.attributes.extend(attrs(resource))
    value = request.SerializeToString() if encoding == "proto" else otlp_requests.otlp_json(request)
    d = otlp_decoder()
    first = d.decode(topic, 0, 1, value, NOW, NOW).entries
    assert isinstance(first[0].event, SpanDoc | LogDoc)  # the first sight of "prod" goes general
    out = d.decode(topic, 0, 2, value, NOW, NOW)
    assert not out.rejects and len(out.entries) == len(first) == (10 if topic == "otlp_spans" else 4)
    expected = (StoredSpan, StoredLog) if stored else (SpanDoc, LogDoc)
    assert all(isinstance(e.event, expected) for e in out.entries), [type(e.event) for e in out.entries]
    assert [e.error_log for e in out.entries] == [e.error_log for e in first]
