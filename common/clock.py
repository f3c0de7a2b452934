"""Time: the wall clock in epoch milliseconds (injected where a test wants its own), and its text form."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

Clock = Callable[[], int]

MAX_EPOCH_MS = 253_402_300_799_999  # 9999-12-31T23:59:59.999Z
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


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
    return ms if 0 <= ms <= MAX_EPOCH_MS else None


class TimeFormatter:
    """RFC 3339 UTC with milliseconds; remembers the last second, since events cluster in time."""

    __slots__ = ("_second", "_prefix")

    def __init__(self) -> None:
        self._second: int | None = None
        self._prefix = ""

    def format(self, epoch_ms: int) -> str:
        second, millis = divmod(epoch_ms, 1000)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = second
        return f"{self._prefix}.{millis:03d}Z"


def format_timestamp(epoch_ms: int) -> str:
    return TimeFormatter().format(epoch_ms)
