"""The decode step: any bytes become documents or rejects, never an exception; the samples behave."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from common.indices import IndexNames
from engine.batch import LOG, SPAN
from engine.decode import RecordDecoder, log_doc_id, span_doc_id

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
NOW = 1_795_773_601_000


def decoder(max_bytes: int = 1_048_576) -> RecordDecoder:
    return RecordDecoder(IndexNames("p-"), "apm.logs", "apm.spans", max_bytes)


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


@given(st.one_of(events, st.lists(events, max_size=3)), st.sampled_from(["apm.logs", "apm.spans"]))
@settings(max_examples=500)
def test_the_typed_fast_path_equals_the_general_path(value: object, topic: str) -> None:
    d = decoder()
    raw = msgspec.json.encode(value)
    fast = d.decode(topic, 0, 7, raw, NOW, NOW)
    general = d._general(d.kind_of(topic), topic, 0, 7, raw, NOW, NOW)
    assert [(e.action, e.doc) for e in fast.entries] == [(e.action, e.doc) for e in general.entries]
    assert [(r.reason, r.detail, r.array_index) for r in fast.rejects] == \
        [(r.reason, r.detail, r.array_index) for r in general.rejects]
    assert fast.size == general.size
