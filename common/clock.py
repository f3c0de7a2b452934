"""The wall clock, in epoch milliseconds: one definition, injected where a test wants its own."""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], int]


def now_ms() -> int:
    return time.time_ns() // 1_000_000
