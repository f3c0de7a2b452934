"""Malformed records: a valid event turned into one that breaks the ingest contract.

Each defect is certain to be rejected: the value is not JSON, not an object, or fails validation
(``common.normalize.Refiner`` raises ``Invalid``). A mixed batch holds valid siblings that are stored.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, NamedTuple

from panopticon.devtools.traffic.record import Topic

Event = dict[str, Any]
Encode = Callable[[Any], bytes]
Rng = random.Random
FieldDefect = Callable[[Topic, Event, Rng], Event]

_REQUIRED = {
    "log": ("service_name", "environment", "level", "message"),
    "span": ("service_name", "environment", "trace_id", "span_id", "name", "duration_ms"),
}
_WRONG_TYPES: dict[str, tuple[object, ...]] = {
    "service_name": (42, ["order-service"]),
    "environment": ({"name": "prod"}, 1),
    "labels": ("host=node-1,region=eu-west-1", [["host", "node-1"]]),
    "message": ({"text": "order created"}, 404),
    "trace_id": (1234567890, ["4bf92f3577b34da6"]),
    "span_id": (7, True),
    "duration_ms": (True, [12.5]),
}
_EMPTY = {"log": ("service_name", "environment", "message"), "span": ("service_name", "environment", "name")}
_BAD_CODES: tuple[object, ...] = ("abc", "2xx", 1000, -1, 200.5, True, "OK")
_BAD_LEVELS = ("LOUD", "VERBOSE", "notice", "ERR", "5")
_BAD_DURATIONS = ("fast", "NaN", "12ms", "", "Infinity")
_BAD_KINDS = ("REQUEST", "backend", "db")
_BAD_STATUSES = ("FAILED", "200", "ERR")
_SCALARS = (b"42", b'"order created"', b"null", b"true", b"-1.5")


class Defective(NamedTuple):
    value: bytes
    defect: str
    n_events: int
    levels: tuple[str, ...]  # normalized levels of the valid elements (mixed batches only)


def _pick(rng: Rng, options: tuple[Any, ...]) -> Any:
    return options[int(rng.random() * len(options))]


# ---------------------------------------------------------------- field-level defects (event -> event)

def missing_field(kind: Topic, event: Event, rng: Rng) -> Event:
    key = _pick(rng, _REQUIRED[kind])
    if rng.random() < 0.5:
        del event[key]
    else:
        event[key] = None
    return event


def wrong_type(kind: Topic, event: Event, rng: Rng) -> Event:
    keys = tuple(k for k in _WRONG_TYPES if k in event)
    key = _pick(rng, keys)
    event[key] = _pick(rng, _WRONG_TYPES[key])
    return event


def empty_field(kind: Topic, event: Event, rng: Rng) -> Event:
    event[_pick(rng, _EMPTY[kind])] = _pick(rng, ("", "   "))
    return event


def _bad_value(name: str, field: str, values: tuple[object, ...]) -> FieldDefect:
    """The defect ``name``: ``field`` set to one of ``values`` (each one invalid)."""

    def defect(kind: Topic, event: Event, rng: Rng) -> Event:
        event[field] = _pick(rng, values)
        return event

    defect.__name__ = name
    return defect


bad_http_status_code = _bad_value("bad_http_status_code", "http_status_code", _BAD_CODES)
bad_level = _bad_value("bad_level", "level", _BAD_LEVELS)
bad_duration = _bad_value("bad_duration", "duration_ms", _BAD_DURATIONS)
bad_kind = _bad_value("bad_kind", "kind", _BAD_KINDS)
bad_status = _bad_value("bad_status", "status", _BAD_STATUSES)


def negative_duration(kind: Topic, event: Event, rng: Rng) -> Event:
    event["duration_ms"] = -round(abs(float(event["duration_ms"])) + 0.5 + rng.random(), 3)
    return event


_FIELD_DEFECTS: dict[Topic, tuple[FieldDefect, ...]] = {
    "log": (missing_field, wrong_type, empty_field, bad_http_status_code, bad_level),
    "span": (missing_field, wrong_type, empty_field, bad_http_status_code, negative_duration, bad_duration,
             bad_kind, bad_status),
}


# ---------------------------------------------------------------- message-level defects (-> bytes)

def not_json(kind: Topic, event: Event, rng: Rng) -> bytes:
    """A plain-text line, as from a producer whose JSON formatter is misconfigured."""
    if kind == "log":
        text = f"{str(event['level']).upper()} {event['service_name']}: {event['message']}"
    else:
        text = f"span {event['service_name']} {event['name']} {event['duration_ms']}ms"
    raw = text.encode()
    return b"\xff\xfe" + raw if rng.random() < 0.2 else raw


def truncated(encoded: bytes, rng: Rng) -> bytes:
    """A strict prefix of a JSON object, which is never valid JSON."""
    return encoded[: max(1, int(len(encoded) * (0.2 + 0.6 * rng.random())))]


def corrupt(kind: Topic, event: Event, level: str, rng: Rng, encode: Encode) -> Defective:
    """A malformed record derived from ``event`` (a valid one; it is copied, not changed)."""
    roll = rng.random()
    if roll < 0.10:
        return Defective(not_json(kind, event, rng), "not_json", 1, ())
    if roll < 0.20:
        return Defective(truncated(encode(event), rng), "truncated", 1, ())
    if roll < 0.25:
        return Defective(_pick(rng, _SCALARS), "not_object", 1, ())
    if roll < 0.35 and kind == "log":
        return mixed_batch(event, level, rng, encode)
    defect = _pick(rng, _FIELD_DEFECTS[kind])
    return Defective(encode(defect(kind, dict(event), rng)), defect.__name__, 1, ())


def mixed_batch(event: Event, level: str, rng: Rng, encode: Encode) -> Defective:
    """A log batch of 2-5 events where exactly one is invalid; its siblings are stored."""
    size = 2 + int(rng.random() * 4)
    bad_at = int(rng.random() * size)
    defect = _pick(rng, _FIELD_DEFECTS["log"])
    batch = [defect("log", dict(event), rng) if i == bad_at else event for i in range(size)]
    return Defective(encode(batch), f"mixed_batch:{defect.__name__}", size, (level,) * (size - 1))
