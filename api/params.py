"""Typed query parameters: each parameter is declared once and both parses requests and documents itself.

A resource lists its parameters (``PARAMS``); ``api.openapi`` turns the same objects into the OpenAPI
document, so the contract and the parsing cannot drift apart. Every parse error is a ``BadParam`` naming the
parameter; an empty value counts as absent.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import falcon
import msgspec

from panopticon.api.errors import BadParam
from panopticon.common.clock import format_timestamp
from panopticon.common.normalize import normalize_environment

MAX_RANGE_MS = 31 * 86_400_000
SLIDING_SLACK_MS = 10_000  # a `to` this close to now is "now": the question slides with time
QUANTUM_MS = 10_000
MAX_TEXT = 1024
_MAX_EPOCH_MS = 253_402_300_799_999
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)
NO_ENVIRONMENT = frozenset({"all", "*"})


class TimeRange(msgspec.Struct, frozen=True):
    """The half-open range ``[from_ms, to_ms)``; ``sliding`` when it ends "now" (cacheable, quantized)."""

    from_ms: int
    to_ms: int
    sliding: bool

    @property
    def from_iso(self) -> str:
        return format_timestamp(self.from_ms)

    @property
    def to_iso(self) -> str:
        return format_timestamp(self.to_ms)

    @property
    def span_ms(self) -> int:
        return self.to_ms - self.from_ms


def parse_time(text: str, field: str) -> int:
    """Epoch milliseconds of an ISO-8601 time (no zone means UTC); all digits are taken as epoch ms."""
    if text.isdigit() and len(text) <= 15:
        ms = int(text)
    else:
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            raise BadParam(f"'{field}' must be an ISO-8601 time such as 2026-01-31T12:00:00Z.", field) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            ms = (moment - _EPOCH) // _MS
        except OverflowError:
            ms = -1
    if not 0 <= ms <= _MAX_EPOCH_MS:
        raise BadParam(f"'{field}' is outside the years 1970 to 9999.", field)
    return ms


def _raw(req: falcon.Request, name: str) -> str | None:
    value = req.get_param(name)
    if value is None:
        return None
    value = value.strip()
    return value or None


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    required: bool = False

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def openapi(self) -> list[dict[str, Any]]:
        return [
            {"name": self.name, "in": "query", "required": self.required, "description": self.description,
             "schema": self.schema()}
        ]

    def raw(self, req: falcon.Request) -> str | None:
        value = _raw(req, self.name)
        if value is None and self.required:
            raise BadParam(f"'{self.name}' is required.", self.name)
        return value


@dataclass(frozen=True)
class Text(Param):
    max_length: int = MAX_TEXT

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": self.max_length}

    def parse(self, req: falcon.Request) -> str | None:
        value = self.raw(req)
        if value is not None and len(value) > self.max_length:
            raise BadParam(f"'{self.name}' is longer than {self.max_length} characters.", self.name)
        return value


@dataclass(frozen=True)
class Int(Param):
    default: int = 0
    minimum: int = 0
    maximum: int = 1_000_000

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum, "default": self.default}

    def parse(self, req: falcon.Request) -> int:
        value = self.raw(req)
        if value is None:
            return self.default
        if not re.fullmatch(r"[+-]?\d{1,12}", value):
            raise BadParam(f"'{self.name}' must be an integer.", self.name)
        number = int(value)
        if not self.minimum <= number <= self.maximum:
            raise BadParam(f"'{self.name}' must be between {self.minimum} and {self.maximum}.", self.name)
        return number


@dataclass(frozen=True)
class Float(Param):
    default: float | None = None
    minimum: float = 0.0
    maximum: float = 1e12

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "number", "minimum": self.minimum, "maximum": self.maximum}
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def parse(self, req: falcon.Request) -> float | None:
        value = self.raw(req)
        if value is None:
            return self.default
        try:
            number = float(value)
        except ValueError:
            raise BadParam(f"'{self.name}' must be a number.", self.name) from None
        if not math.isfinite(number) or not self.minimum <= number <= self.maximum:
            raise BadParam(f"'{self.name}' must be between {self.minimum:g} and {self.maximum:g}.", self.name)
        return number


@dataclass(frozen=True)
class Choice(Param):
    """One of a few values, case-insensitive; answers the canonical spelling."""

    choices: tuple[str, ...] = ()
    default: str | None = None
    aliases: tuple[tuple[str, str], ...] = ()

    def schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"type": "string", "enum": list(self.choices)}
        if self.default is not None:
            schema["default"] = self.default
        return schema

    def parse(self, req: falcon.Request) -> str | None:
        value = self.raw(req)
        if value is None:
            return self.default
        folded = value.casefold()
        for alias, target in self.aliases:
            if folded == alias.casefold():
                return target
        for choice in self.choices:
            if folded == choice.casefold():
                return choice
        raise BadParam(f"'{self.name}' must be one of: {', '.join(self.choices)}.", self.name)


@dataclass(frozen=True)
class Environment(Param):
    """Normalized exactly as ingest normalizes it; empty, ``all`` and ``*`` mean every environment."""

    def schema(self) -> dict[str, Any]:
        return {"type": "string", "maxLength": 256}

    def parse(self, req: falcon.Request) -> str | None:
        value = self.raw(req)
        if value is None:
            return None
        if len(value) > 256:
            raise BadParam("'environment' is longer than 256 characters.", self.name)
        env = normalize_environment(value)
        return None if env in NO_ENVIRONMENT else env


@dataclass(frozen=True)
class Times:
    """``from``/``to``: ISO-8601, half-open, at most 31 days; ``to`` defaults to now, ``from`` to ``to`` - window.

    A range ending now (``to`` absent or within the last 10 s) is sliding: its end is rounded up to the next
    10 s so that repeated questions share a cache entry.
    """

    window_ms: int
    name: str = "from/to"

    def openapi(self) -> list[dict[str, Any]]:
        minutes = self.window_ms // 60_000
        time_schema = {"type": "string", "format": "date-time"}
        return [
            {"name": "from", "in": "query", "required": False, "schema": time_schema,
             "description": f"Start (ISO-8601, inclusive). Default: `to` minus {minutes} minutes."},
            {"name": "to", "in": "query", "required": False, "schema": time_schema,
             "description": "End (ISO-8601, exclusive). Default: now. The range may span at most 31 days."},
        ]

    def parse(self, req: falcon.Request, now_ms: int) -> TimeRange:
        raw_from, raw_to = _raw(req, "from"), _raw(req, "to")
        to_ms = now_ms if raw_to is None else parse_time(raw_to, "to")
        sliding = now_ms - SLIDING_SLACK_MS <= to_ms <= now_ms + SLIDING_SLACK_MS
        if sliding:
            to_ms = -(-to_ms // QUANTUM_MS) * QUANTUM_MS
        from_ms = to_ms - self.window_ms if raw_from is None else parse_time(raw_from, "from")
        if from_ms >= to_ms:
            raise BadParam("'from' must be earlier than 'to'.", "from")
        if to_ms - from_ms > MAX_RANGE_MS:
            raise BadParam("The range from 'from' to 'to' must not exceed 31 days.", "from")
        return TimeRange(max(from_ms, 0), to_ms, sliding)


INTERVAL = re.compile(r"^(\d{1,9})(s|m|h|d)$")
_UNIT_MS = {"s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_AUTO = ((15 * 60_000, 10_000), (30 * 60_000, 30_000), (2 * 3_600_000, 60_000), (6 * 3_600_000, 300_000),
         (24 * 3_600_000, 600_000))
MAX_POINTS = 10_000


def auto_interval_ms(range_ms: int) -> int:
    for limit, interval in _AUTO:
        if range_ms <= limit:
            return interval
    return 1_800_000


@dataclass(frozen=True)
class Interval(Param):
    """``^\\d+(s|m|h|d)$``; absent or any other value means automatic (by the length of the range)."""

    def schema(self) -> dict[str, Any]:
        return {"type": "string"}

    def parse(self, req: falcon.Request, window: TimeRange) -> int:
        value = self.raw(req)
        match = INTERVAL.match(value.lower()) if value else None
        interval = int(match.group(1)) * _UNIT_MS[match.group(2)] if match else 0
        if interval <= 0:
            return auto_interval_ms(window.span_ms)
        if window.span_ms / interval > MAX_POINTS:
            raise BadParam(f"'{self.name}' gives more than {MAX_POINTS} points over the range.", self.name)
        return interval
