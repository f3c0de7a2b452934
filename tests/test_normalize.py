"""Normalization ("refine"): table-driven cases of the contract, and properties."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from panopticon.common.clock import format_timestamp, parse_timestamp
from panopticon.common.normalize import Invalid, Refiner, normalize_environment
from panopticon.common.schema import MAX_LABEL_VALUE, MAX_LABELS, LogDoc, SpanDoc
from panopticon.common.wire import LOG_FIELDS

NOW = 1_795_773_601_000  # 2026-11-27T...
DEFAULT = NOW - 5


def log(**fields: Any) -> dict[str, Any]:
    return {"service_name": "svc", "environment": "production", "level": "INFO", "message": "hi", **fields}


def span(**fields: Any) -> dict[str, Any]:
    return {"service_name": "svc", "environment": "production", "trace_id": "t1", "span_id": "s1", "name": "GET /",
            "kind": "SERVER", "duration_ms": 1.5, "status": "OK", **fields}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [("production", "production"), (" Prod ", "production"), ("DEV", "development"), ("stage", "staging"),
     ("Staging", "staging"), ("qa", "qa")],
)
def test_environment(raw: str, expected: str) -> None:
    assert normalize_environment(raw) == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2026-11-27T10:00:00.123Z", "2026-11-27T10:00:00.123Z"),
        ("2026-11-27T10:00:00Z", "2026-11-27T10:00:00.000Z"),
        ("2026-11-27T10:00:00", "2026-11-27T10:00:00.000Z"),  # no zone means UTC
        ("2026-11-27T12:00:00+02:00", "2026-11-27T10:00:00.000Z"),
        ("2026-11-27T10:00:00.123456Z", "2026-11-27T10:00:00.123Z"),
        (1795773601000, "2026-11-27T10:00:01.000Z"),
        (1795773601000.0, "2026-11-27T10:00:01.000Z"),
    ],
)
def test_timestamps(raw: object, expected: str) -> None:
    epoch_ms = parse_timestamp(raw)
    assert epoch_ms is not None
    assert format_timestamp(epoch_ms) == expected
    refiner = Refiner()  # fresh, then remembering the second: the stored form is read without parsing
    for _ in range(2):
        refined = refiner.log(log(timestamp=raw), DEFAULT, NOW)
        assert (refined.epoch_ms, refined.doc.timestamp) == (epoch_ms, expected)


@pytest.mark.parametrize("raw", ["yesterday", "", True, None, float("nan"), -1, 10**20, {"a": 1}])
def test_unusable_timestamps_default_to_the_ingest_time(raw: object) -> None:
    refined = Refiner().log(log(timestamp=raw), DEFAULT, NOW)
    assert refined.epoch_ms == DEFAULT
    assert isinstance(refined.doc, LogDoc) and refined.doc.timestamp_defaulted is True


@given(st.text(max_size=30) | st.builds("2026-11-27T10:00:0{}.{}Z".format, st.sampled_from("019"),
                                        st.text(alphabet="0159 +-.\u0661\u0663\uff15", min_size=3, max_size=3)))
def test_a_refiner_that_remembers_canonical_seconds_answers_as_a_fresh_one(raw: str) -> None:
    """The shortcut for timestamps already in the stored form (the last second remembered) changes nothing."""
    warm = Refiner()
    warm.log(log(timestamp="2026-11-27T10:00:01.000Z"), DEFAULT, NOW)
    first, second = warm.log(log(timestamp=raw), DEFAULT, NOW), Refiner().log(log(timestamp=raw), DEFAULT, NOW)
    assert (first.epoch_ms, first.doc.timestamp) == (second.epoch_ms, second.doc.timestamp)


def test_missing_timestamp_defaults() -> None:
    refined = Refiner().log(log(), DEFAULT, NOW)
    assert refined.doc.timestamp == format_timestamp(DEFAULT) and refined.doc.timestamp_defaulted


@pytest.mark.parametrize(
    ("raw", "level"),
    [("info", "INFO"), ("Warning", "WARN"), ("WARN", "WARN"), ("critical", "FATAL"), ("error", "ERROR"),
     ("trace", "TRACE"), ("debug", "DEBUG"), ("FATAL", "FATAL")],
)
def test_levels(raw: str, level: str) -> None:
    doc = Refiner().log(log(level=raw), DEFAULT, NOW).doc
    assert isinstance(doc, LogDoc) and doc.level == level


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"message": None}, "message"),
        ({"message": ""}, "message"),
        ({"service_name": "  "}, "service_name"),
        ({"environment": ""}, "environment"),
        ({"level": "LOUD"}, "level"),
        ({"level": 3}, "level"),
        ({"http_status_code": "abc"}, "http_status_code"),
        ({"http_status_code": 200.5}, "http_status_code"),
        ({"http_status_code": True}, "http_status_code"),
        ({"labels": "a=b"}, "labels"),
        ({"trace_id": 12}, "trace_id"),
    ],
    ids=lambda v: str(v),
)
def test_invalid_logs(fields: dict[str, Any], path: str) -> None:
    event = log(**fields)
    if fields.get("message", "x") is None:
        del event["message"]
    with pytest.raises(Invalid) as caught:
        Refiner().log(event, DEFAULT, NOW)
    assert caught.value.path == path and f"$.{path}" in str(caught.value)


@pytest.mark.parametrize(
    ("fields", "path"),
    [
        ({"duration_ms": -5}, "duration_ms"),
        ({"duration_ms": "fast"}, "duration_ms"),
        ({"duration_ms": "NaN"}, "duration_ms"),
        ({"duration_ms": True}, "duration_ms"),
        ({"kind": "REQUEST"}, "kind"),
        ({"status": "FAILED"}, "status"),
        ({"trace_id": ""}, "trace_id"),
        ({"name": None}, "name"),
    ],
    ids=lambda v: str(v),
)
def test_invalid_spans(fields: dict[str, Any], path: str) -> None:
    with pytest.raises(Invalid) as caught:
        Refiner().span(span(**fields), DEFAULT, NOW)
    assert caught.value.path == path


def test_span_rules() -> None:
    refiner = Refiner()
    doc = refiner.span(span(kind="consumer", status="unset", duration_ms="41.0", parent_span_id="",
                            http_status_code="402", environment="Prod"), DEFAULT, NOW).doc
    assert isinstance(doc, SpanDoc)
    assert (doc.kind, doc.status, doc.duration_ms, doc.parent_span_id) == ("CONSUMER", "OK", 41.0, None)
    assert doc.http_status_code == 402 and doc.environment == "production"
    for raw, kind in ((None, "INTERNAL"), ("UNSPECIFIED", "INTERNAL"), ("producer", "PRODUCER")):
        event = span(kind=raw) if raw else {k: v for k, v in span().items() if k != "kind"}
        assert refiner.span(event, DEFAULT, NOW).doc.kind == kind  # type: ignore[union-attr]


def test_labels_bounds_and_unknown_keys() -> None:
    labels = {f"k{i}": i for i in range(100)}
    labels.update({"nested": {"a": 1}, "gone": None, "long": "x" * 1000, "bad key!": "v"})
    refined = Refiner().log(log(labels={"sku": "A-1", "nested": {"a": 1}, "gone": None, "long": "x" * 1000,
                                        "bad key/é": "v", "retry": 0, "ok": True},
                                container_name="inv-7d9f", duration_ms=12, sku="kept-not", extra={"x": 1}),
                            DEFAULT, NOW)
    doc = refined.doc
    assert doc.labels["sku"] == "A-1"  # an unknown key never overwrites a label
    assert doc.labels["nested"] == '{"a":1}' and "gone" not in doc.labels
    assert len(str(doc.labels["long"])) == MAX_LABEL_VALUE
    assert doc.labels["bad_key__"] == "v"
    assert doc.labels["container_name"] == "inv-7d9f" and doc.labels["duration_ms"] == 12
    assert doc.labels["retry"] == 0 and doc.labels["ok"] is True
    assert refined.dropped_keys == 1  # "extra" is not a scalar
    many = Refiner().log(log(labels=labels), DEFAULT, NOW).doc.labels
    assert len(many) == MAX_LABELS


def test_service_name_is_trimmed_case_kept() -> None:
    assert Refiner().log(log(service_name=" Inventory-Service "), DEFAULT, NOW).doc.service_name == "Inventory-Service"


# ---------------------------------------------------------------- properties

json_scalars = st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=3)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)


def as_event(doc: LogDoc | SpanDoc) -> dict[str, Any]:
    """A stored document said again as a wire event."""
    event = msgspec.to_builtins(doc)
    event["timestamp"] = event.pop("@timestamp")
    for key in ("ingested_at", "timestamp_defaulted", "type"):
        event.pop(key, None)
    return event


@given(
    env=st.text(min_size=1).filter(lambda s: s.strip()),
    level=st.sampled_from(["info", "WARNING", "Error", "critical", "debug", "TRACE"]),
    labels=st.dictionaries(st.text(max_size=200), json_values, max_size=80),
    extra=st.dictionaries(st.text(max_size=20).filter(lambda k: k not in LOG_FIELDS), json_scalars,
                          max_size=5),
    ts=st.one_of(st.integers(0, 4_000_000_000_000), st.text(max_size=30)),
)
def test_refining_is_idempotent(env: str, level: str, labels: dict[str, Any], extra: dict[str, Any], ts: Any) -> None:
    event = {**extra, **log(environment=env, level=level, labels=labels, timestamp=ts)}
    refiner = Refiner()
    first = refiner.log(event, DEFAULT, NOW).doc
    second = refiner.log(as_event(first), DEFAULT, NOW).doc
    first.timestamp_defaulted = second.timestamp_defaulted = False
    assert second == first
    assert normalize_environment(first.environment) == first.environment


@given(st.dictionaries(st.text(max_size=12), json_values, max_size=12))
def test_arbitrary_objects_refine_or_raise_invalid(event: dict[str, Any]) -> None:
    refiner = Refiner()
    for refine in (refiner.log, refiner.span):
        try:
            refine(event, DEFAULT, NOW)
        except Invalid:
            pass
