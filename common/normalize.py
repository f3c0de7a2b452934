"""Normalization ("refine"): a decoded wire event -> a stored document, or Invalid with a reason.

The rules are the ingest contract's; the same ``normalize_environment`` serves the query API.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec
from msgspec import UNSET

from panopticon.common.clock import MAX_EPOCH_MS, TimeFormatter, parse_timestamp
from panopticon.common.schema import (
    KINDS,
    LEVELS,
    MAX_LABEL_VALUE,
    MAX_LABELS,
    STATUSES,
    LabelValue,
    LogDoc,
    SpanDoc,
)
from panopticon.common.wire import LOG_FIELDS, SPAN_FIELDS, LogEvent, SpanEvent, StoredLog, StoredSpan

MAX_LABEL_KEY = 128
MAX_CLEAN_KEYS = 4096  # label keys a refiner remembers as clean

ENVIRONMENT_ALIASES = {"prod": "production", "dev": "development", "stage": "staging"}
LEVEL_ALIASES = {"WARNING": "WARN", "CRITICAL": "FATAL"}
_LEVELS = frozenset(LEVELS)
_KINDS = frozenset(KINDS)
_STATUSES = frozenset(STATUSES)
_LABEL_KEY_BAD = re.compile(r"[^A-Za-z0-9_.-]")

_json_encode = msgspec.json.Encoder().encode


class Invalid(Exception):
    """The event breaks the contract; ``path`` and the message say where and how."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{message} - at `$.{path}`")
        self.path = path


@dataclass(slots=True)
class Refined:
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


def _required(value: str | None, path: str) -> str:
    if value is None:
        raise Invalid(path, "required field is missing")
    if not value.strip():
        raise Invalid(path, "must not be empty")
    return value


def _status_code(value: object) -> int | None:
    if value is None or type(value) is int and 0 <= value <= 999:  # the common case first
        return value
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 999:
        raise Invalid("http_status_code", f"expected an HTTP status code (integer), got {value!r:.40}")
    return value


def _duration(value: object) -> float:
    if type(value) is float and 0.0 <= value < math.inf:  # the common case first
        return value
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

@functools.lru_cache(maxsize=4096)
def _label_key(key: str) -> str:
    key = key[:MAX_LABEL_KEY]
    return _LABEL_KEY_BAD.sub("_", key) if _LABEL_KEY_BAD.search(key) else key


def _label_value(value: object) -> LabelValue | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value[:MAX_LABEL_VALUE]
    if isinstance(value, bool):  # apart from int: compiled (mypyc), an `int` would turn True into 1
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return _json_encode(value).decode()[:MAX_LABEL_VALUE]


def refine_labels(labels: object, extra: Mapping[str, Any] | None = None) -> tuple[dict[str, LabelValue], int]:
    """Labels with the contract's bounds, plus the scalar ones of the unknown top-level keys (``extra``);
    returns (labels, how many non-scalar unknown keys were dropped). A function of its arguments alone."""
    if labels is not None and not isinstance(labels, dict):
        raise Invalid("labels", f"expected an object, got {type(labels).__name__}")
    out: dict[str, LabelValue] = {}
    if labels:
        for key, value in labels.items():
            if len(out) >= MAX_LABELS:
                break
            if type(value) is str and len(value) <= MAX_LABEL_VALUE:  # the common case, cheaply
                clean: LabelValue | None = value
            else:
                clean = _label_value(value)
            if clean is not None:
                out.setdefault(_label_key(key), clean)
    dropped = 0
    if not extra:
        return out, dropped
    for key, value in extra.items():
        if isinstance(value, (str, int, float, bool)) and len(out) < MAX_LABELS:
            out.setdefault(_label_key(key), _label_value(value))  # type: ignore[arg-type]
        elif value is not None:
            dropped += 1
    return out, dropped


def invalid_from(error: msgspec.ValidationError) -> Invalid:
    """``Expected `str | null`, got `int` - at `$.service_name``` -> Invalid("service_name", ...)."""
    message, _, where = str(error).partition(" - at `$")
    return Invalid(where.rstrip("`").lstrip("."), message)


def partition_keys(event: Mapping[str, Any], fields: frozenset[str]) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """An event's contract keys, and its unknown top-level keys (bound for labels) or None."""
    known: dict[str, Any] = {}
    extra: dict[str, Any] | None = None
    for key, value in event.items():
        if key in fields:
            known[key] = value
        else:
            if extra is None:
                extra = {}
            extra[key] = value
    return known, extra


def split(event: Mapping[str, Any], cls: type[LogEvent] | type[SpanEvent]) -> tuple[Any, dict[str, Any] | None]:
    """An event with unknown top-level keys: its typed part, and the unknown keys (bound for labels)."""
    known, extra = partition_keys(event, LOG_FIELDS if cls is LogEvent else SPAN_FIELDS)
    try:
        return msgspec.convert(known, cls), extra
    except msgspec.ValidationError as exc:
        raise invalid_from(exc) from None


class Refiner:
    """Turns decoded events into documents. One per worker: it caches formatting state.

    The engine decodes straight into LogEvent/SpanEvent (the common case: no unknown keys) and calls
    ``log_event``/``span_event``; ``log``/``span`` take any mapping (unknown keys go to labels).
    """

    def __init__(self) -> None:
        self._event_clock = TimeFormatter()
        self._ingest_clock = TimeFormatter()  # its own: the two times alternate, each keeps its cache
        self._envs: dict[str, str] = {}
        self._canonical_prefix = ""  # the last canonical timestamp's second ("YYYY-MM-DDTHH:MM:SS") ...
        self._canonical_second = 0  # ... and its epoch second
        self._now_ms: int | None = None
        self._now_text = ""
        self._clean_keys: set[str] = set()  # label keys known to need no cleaning: this refiner's, bounded

    def _environment(self, raw: str | None) -> str:
        env = self._envs.get(raw) if raw is not None else None
        if env is None:
            env = normalize_environment(_required(raw, "environment"))
            if not env:
                raise Invalid("environment", "must not be empty")
            if len(self._envs) < 10_000:
                self._envs[raw] = env  # type: ignore[index]
        return env

    def _time(self, raw: object, default_ms: int) -> tuple[int, str, bool]:
        """(epoch ms, stored timestamp text, defaulted). Most producers already send the stored form,
        ``2026-11-28T00:51:01.175Z``: while its second repeats, it is read without parsing and kept as is."""
        prefix = self._canonical_prefix
        if type(raw) is str and len(raw) == 24 and prefix and raw.startswith(prefix) and raw.endswith("Z"):
            millis = raw[20:23]
            if raw[19] == "." and millis.isascii() and millis.isdigit():
                return self._canonical_second * 1000 + int(millis), raw, False
        if type(raw) is int and 0 <= raw <= MAX_EPOCH_MS:  # epoch milliseconds, the other common form
            return raw, self._event_clock.format(raw), False
        epoch_ms = parse_timestamp(raw) if raw is not None else None
        if epoch_ms is None:
            return default_ms, self._event_clock.format(default_ms), True
        text = self._event_clock.format(epoch_ms)
        if text == raw:  # sent in the stored form: its second is worth remembering
            self._canonical_prefix, self._canonical_second = text[:19], epoch_ms // 1000
        return epoch_ms, text, False

    def _ingested_at(self, now_ms: int) -> str:
        if now_ms != self._now_ms:
            self._now_ms, self._now_text = now_ms, self._ingest_clock.format(now_ms)
        return self._now_text

    def _complete(self, ev: StoredLog | StoredSpan, kind: str, default_ms: int, now_ms: int) -> int | None:
        """What logs and spans share: service, environment, times, labels. None: take the general path."""
        service = ev.service_name
        env = self._envs.get(ev.environment)
        if env is None or service.strip() is not service:  # an unseen environment, or a name to trim
            return None
        labels = ev.labels
        if labels and not self._clean_keys.issuperset(labels):
            ev.labels = self._with_clean_keys(labels)
        ev.environment = env
        epoch_ms, ev.timestamp, defaulted = self._time(ev.timestamp, default_ms)
        if defaulted:
            ev.timestamp_defaulted = True  # type: ignore[assignment]
        ev.ingested_at = self._ingested_at(now_ms)  # type: ignore[assignment]
        ev.type = kind
        return epoch_ms

    def _with_clean_keys(self, labels: dict[str, Any]) -> dict[str, LabelValue]:
        """The labels of a clean event with their keys cleaned (msgspec checked the values). Remembers the keys
        that needed nothing, so the next event with them keeps its labels as they are: the same document."""
        if len(self._clean_keys) < MAX_CLEAN_KEYS:
            self._clean_keys.update(key for key in labels if _label_key(key) == key)
        return refine_labels(labels)[0]

    def complete_log(self, ev: StoredLog, default_ms: int, now_ms: int) -> int | None:
        """Completes a clean log event into its stored document; returns its epoch ms, or None when the event
        needs the general path (it then yields the same document, or the reason it is invalid)."""
        if ev.message.isspace():
            return None
        if ev.level not in _LEVELS:  # "info", "warning": the spellings the general path accepts
            level = normalize_level(ev.level)
            if level is None:
                return None
            ev.level = level
        return self._complete(ev, "log", default_ms, now_ms)

    def complete_span(self, ev: StoredSpan, default_ms: int, now_ms: int) -> int | None:
        """As ``complete_log``, for a clean span event."""
        if ev.trace_id.isspace() or ev.span_id.isspace() or ev.name.isspace():
            return None
        if ev.kind is UNSET:
            ev.kind = "INTERNAL"
        if ev.status is UNSET:
            ev.status = "OK"
        if ev.parent_span_id == "":
            ev.parent_span_id = None
        return self._complete(ev, "span", default_ms, now_ms)

    def log(self, event: Mapping[str, Any], default_ms: int, now_ms: int) -> Refined:
        typed, extra = split(event, LogEvent)
        return self.log_event(typed, extra, default_ms, now_ms)

    def span(self, event: Mapping[str, Any], default_ms: int, now_ms: int) -> Refined:
        typed, extra = split(event, SpanEvent)
        return self.span_event(typed, extra, default_ms, now_ms)

    def log_event(self, ev: LogEvent, extra: dict[str, Any] | None, default_ms: int, now_ms: int) -> Refined:
        service = _required(ev.service_name, "service_name")
        environment = self._environment(ev.environment)
        level = _level(ev.level)
        message = _required(ev.message, "message")
        code = _status_code(ev.http_status_code)
        epoch_ms, timestamp, defaulted = self._time(ev.timestamp, default_ms)
        labels, dropped = refine_labels(ev.labels, extra)
        doc = LogDoc(
            timestamp=timestamp,
            ingested_at=self._ingested_at(now_ms),
            timestamp_defaulted=defaulted,
            service_name=service.strip(),
            environment=environment,
            level=level,
            message=message,
            trace_id=ev.trace_id or None,
            span_id=ev.span_id or None,
            http_method=ev.http_method or None,
            http_path=ev.http_path or None,
            http_status_code=code,
            labels=labels,
        )
        return Refined(doc, epoch_ms, dropped)

    def span_event(self, ev: SpanEvent, extra: dict[str, Any] | None, default_ms: int, now_ms: int) -> Refined:
        service = _required(ev.service_name, "service_name")
        environment = self._environment(ev.environment)
        trace_id = _required(ev.trace_id, "trace_id")
        span_id = _required(ev.span_id, "span_id")
        name = _required(ev.name, "name")
        kind = _kind(ev.kind)
        status = _status(ev.status)
        duration = _duration(ev.duration_ms)
        code = _status_code(ev.http_status_code)
        epoch_ms, timestamp, defaulted = self._time(ev.timestamp, default_ms)
        labels, dropped = refine_labels(ev.labels, extra)
        doc = SpanDoc(
            timestamp=timestamp,
            ingested_at=self._ingested_at(now_ms),
            timestamp_defaulted=defaulted,
            service_name=service.strip(),
            environment=environment,
            trace_id=trace_id,
            span_id=span_id,
            parent_span_id=ev.parent_span_id or None,
            name=name,
            kind=kind,
            duration_ms=duration,
            status=status,
            http_method=ev.http_method or None,
            http_path=ev.http_path or None,
            http_status_code=code,
            labels=labels,
        )
        return Refined(doc, epoch_ms, dropped)


def _level(raw: str | None) -> str:
    if raw in _LEVELS:
        return raw
    level = normalize_level(_required(raw, "level"))
    if level is None:
        raise Invalid("level", f"unknown level {raw!r:.40}")
    return level


def _kind(raw: str | None) -> str:
    if raw in _KINDS:
        return raw
    kind = raw.strip().upper() if raw else "INTERNAL"
    if kind.startswith("SPAN_KIND_"):
        kind = kind[10:]
    if kind in ("UNSPECIFIED", ""):
        kind = "INTERNAL"
    if kind not in _KINDS:
        raise Invalid("kind", f"unknown span kind {raw!r:.40}")
    return kind


def _status(raw: str | None) -> str:
    if raw in _STATUSES:
        return raw
    status = raw.strip().upper() if raw else "OK"
    if status in ("UNSET", ""):
        status = "OK"
    if status not in _STATUSES:
        raise Invalid("status", f"unknown status {raw!r:.40}")
    return status
