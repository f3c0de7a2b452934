"""Normalization ("refine"): a decoded wire event -> a stored document, or Invalid with a reason.

The rules are the ingest contract's; the same ``normalize_environment`` serves the query API.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from common.schema import KINDS, LabelValue, LogDoc, SpanDoc

MAX_LABELS = 64
MAX_LABEL_VALUE = 256
MAX_LABEL_KEY = 128
_MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

ENVIRONMENT_ALIASES = {"prod": "production", "dev": "development", "stage": "staging"}
LEVEL_ALIASES = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_LEVELS = frozenset({"TRACE", "DEBUG", "INFO", "WARN", "ERROR", "FATAL"})
_KINDS = frozenset(KINDS)
_LABEL_KEY_BAD = re.compile(r"[^A-Za-z0-9_.-]")

LOG_FIELDS = frozenset(
    {"type", "timestamp", "service_name", "environment", "level", "message", "trace_id", "span_id",
     "http_method", "http_path", "http_status_code", "labels"}
)
SPAN_FIELDS = frozenset(
    {"type", "timestamp", "service_name", "environment", "trace_id", "span_id", "parent_span_id", "name",
     "kind", "duration_ms", "status", "http_method", "http_path", "http_status_code", "labels"}
)

_json_encode = msgspec.json.Encoder().encode


class Invalid(Exception):
    """The event breaks the contract; ``path`` and the message say where and how."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{message} - at `$.{path}`")
        self.path = path


class Refined(msgspec.Struct):
    doc: LogDoc | SpanDoc
    epoch_ms: int
    dropped_keys: int


# ---------------------------------------------------------------- scalars

def normalize_environment(value: str) -> str:
    env = value.strip().lower()
    return ENVIRONMENT_ALIASES.get(env, env)


def normalize_level(value: str) -> str | None:
    level = value.strip().upper()
    level = LEVEL_ALIASES.get(level, level)
    return level if level in _LEVELS else None


def parse_timestamp(value: object) -> int | None:
    """Epoch milliseconds of an ISO-8601 string or an epoch-ms number; None when unusable."""
    if isinstance(value, str):
        text = value.strip()
        if not text:
            return None
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            try:
                return parse_timestamp(float(text))
            except ValueError:
                return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        ms = (moment - _EPOCH) // _MS
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        ms = int(value)
    else:
        return None
    return ms if 0 <= ms <= _MAX_EPOCH_MS else None


class TimeFormatter:
    """RFC 3339 UTC with milliseconds; remembers the last second, since events cluster in time."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second = -1
        self._prefix = ""

    def format(self, epoch_ms: int) -> str:
        second, millis = divmod(epoch_ms, 1000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{millis:03d}Z"


def format_timestamp(epoch_ms: int) -> str:
    return TimeFormatter().format(epoch_ms)


def _text(event: Mapping[str, Any], key: str, required: bool) -> str | None:
    value = event.get(key)
    if value is None:
        if required:
            raise Invalid(key, "required field is missing")
        return None
    if not isinstance(value, str):
        raise Invalid(key, f"expected a string, got {type(value).__name__}")
    if required and not value.strip():
        raise Invalid(key, "must not be empty")
    return value


def _status_code(event: Mapping[str, Any]) -> int | None:
    value = event.get("http_status_code")
    if value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 999:
        raise Invalid("http_status_code", f"expected an HTTP status code (integer), got {value!r:.40}")
    return value


def _duration(event: Mapping[str, Any]) -> float:
    value = event.get("duration_ms")
    if value is None:
        raise Invalid("duration_ms", "required field is missing")
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise Invalid("duration_ms", f"expected a number, got {value!r:.40}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise Invalid("duration_ms", f"expected a number, got {type(value).__name__}")
    if not math.isfinite(value) or value < 0:
        raise Invalid("duration_ms", f"must be a finite number >= 0, got {value!r}")
    return float(value)


# ---------------------------------------------------------------- labels

def _label_key(key: str) -> str:
    key = key[:MAX_LABEL_KEY]
    return _LABEL_KEY_BAD.sub("_", key) if _LABEL_KEY_BAD.search(key) else key


def _label_value(value: object) -> LabelValue | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value[:MAX_LABEL_VALUE]
    if isinstance(value, (bool, int)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return _json_encode(value).decode()[:MAX_LABEL_VALUE]


def refine_labels(
    labels: object, event: Mapping[str, Any], known: frozenset[str]
) -> tuple[dict[str, LabelValue], int]:
    """Labels with the contract's bounds, plus scalar unknown top-level keys; returns (labels, dropped)."""
    if labels is not None and not isinstance(labels, dict):
        raise Invalid("labels", f"expected an object, got {type(labels).__name__}")
    out: dict[str, LabelValue] = {}
    if labels:
        for key, value in labels.items():
            if len(out) >= MAX_LABELS:
                break
            clean = _label_value(value)
            if clean is not None:
                out.setdefault(_label_key(key), clean)
    dropped = 0
    if len(event) > len(known) or any(k not in known for k in event):
        for key, value in event.items():
            if key in known:
                continue
            if isinstance(value, (str, int, float, bool)) and len(out) < MAX_LABELS:
                out.setdefault(_label_key(key), _label_value(value))  # type: ignore[arg-type]
            elif value is not None:
                dropped += 1
    return out, dropped


# ---------------------------------------------------------------- events

class Refiner:
    """Turns decoded events into documents. One per worker: it caches formatting state."""

    def __init__(self) -> None:
        self._clock = TimeFormatter()
        self._envs: dict[str, str] = {}

    def _environment(self, event: Mapping[str, Any]) -> str:
        raw = _text(event, "environment", True)
        assert raw is not None
        env = self._envs.get(raw)
        if env is None:
            env = normalize_environment(raw)
            if len(self._envs) < 10_000:
                self._envs[raw] = env
        return env

    def _time(self, event: Mapping[str, Any], default_ms: int) -> tuple[int, bool]:
        raw = event.get("timestamp")
        epoch_ms = parse_timestamp(raw) if raw is not None else None
        if epoch_ms is None:
            return default_ms, True
        return epoch_ms, False

    def log(self, event: Mapping[str, Any], default_ms: int, now_ms: int) -> Refined:
        service = _text(event, "service_name", True)
        assert service is not None
        environment = self._environment(event)
        raw_level = _text(event, "level", True)
        assert raw_level is not None
        level = normalize_level(raw_level)
        if level is None:
            raise Invalid("level", f"unknown level {raw_level!r:.40}")
        message = _text(event, "message", True)
        assert message is not None
        epoch_ms, defaulted = self._time(event, default_ms)
        labels, dropped = refine_labels(event.get("labels"), event, LOG_FIELDS)
        doc = LogDoc(
            timestamp=self._clock.format(epoch_ms),
            ingested_at=self._clock.format(now_ms),
            timestamp_defaulted=defaulted,
            service_name=service.strip(),
            environment=environment,
            level=level,
            message=message,
            trace_id=_text(event, "trace_id", False) or None,
            span_id=_text(event, "span_id", False) or None,
            http_method=_text(event, "http_method", False) or None,
            http_path=_text(event, "http_path", False) or None,
            http_status_code=_status_code(event),
            labels=labels,
        )
        return Refined(doc, epoch_ms, dropped)

    def span(self, event: Mapping[str, Any], default_ms: int, now_ms: int) -> Refined:
        service = _text(event, "service_name", True)
        assert service is not None
        environment = self._environment(event)
        trace_id = _text(event, "trace_id", True)
        span_id = _text(event, "span_id", True)
        name = _text(event, "name", True)
        assert trace_id is not None and span_id is not None and name is not None
        kind_raw = _text(event, "kind", False)
        kind = kind_raw.strip().upper() if kind_raw else "INTERNAL"
        if kind == "UNSPECIFIED" or kind == "":
            kind = "INTERNAL"
        if kind.startswith("SPAN_KIND_"):
            kind = kind[10:]
        if kind not in _KINDS:
            raise Invalid("kind", f"unknown span kind {kind_raw!r:.40}")
        status_raw = _text(event, "status", False)
        status = status_raw.strip().upper() if status_raw else "OK"
        if status in ("UNSET", ""):
            status = "OK"
        if status not in ("OK", "ERROR"):
            raise Invalid("status", f"unknown status {status_raw!r:.40}")
        duration = _duration(event)
        epoch_ms, defaulted = self._time(event, default_ms)
        labels, dropped = refine_labels(event.get("labels"), event, SPAN_FIELDS)
        doc = SpanDoc(
            timestamp=self._clock.format(epoch_ms),
            ingested_at=self._clock.format(now_ms),
            timestamp_defaulted=defaulted,
            service_name=service.strip(),
            environment=environment,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=_text(event, "parent_span_id", False) or None,
            name=name,
            kind=kind,
            duration_ms=duration,
            status=status,
            http_method=_text(event, "http_method", False) or None,
            http_path=_text(event, "http_path", False) or None,
            http_status_code=_status_code(event),
            labels=labels,
        )
        return Refined(doc, epoch_ms, dropped)
